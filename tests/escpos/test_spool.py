"""The receipt spool at rest: sealed files, order, quarantine, sealing of older plaintext files."""

from __future__ import annotations

from pathlib import Path

import pytest

from device.atrest import AtRestError, DeviceKey
from device.clock import FakeClock
from device.escpos.spool import ReceiptSpool

TEXT = "姓名: 张三丰".encode("gb18030")


def test_round_trip_in_order_and_sealed(tmp_path: Path) -> None:
    spool = ReceiptSpool(tmp_path, FakeClock(), key=DeviceKey.generate())
    paths = [spool.put(TEXT + bytes([n])) for n in range(3)]
    assert spool.pending() == paths  # a standing clock still keeps the order
    assert [spool.read(p) for p in paths] == [TEXT + bytes([n]) for n in range(3)]
    assert all(TEXT not in p.read_bytes() for p in paths)


def test_renamed_or_foreign_files_do_not_open(tmp_path: Path) -> None:
    key = DeviceKey.generate()
    spool = ReceiptSpool(tmp_path, FakeClock(), key=key)
    one, two = spool.put(b"one"), spool.put(b"two")
    two.write_bytes(one.read_bytes())  # associated data = the file name
    with pytest.raises(AtRestError):
        spool.read(two)
    other = ReceiptSpool(tmp_path, FakeClock(), key=DeviceKey.generate())
    with pytest.raises(AtRestError):
        other.read(one)
    assert spool.pending() == []
    assert sorted(p.name for p in (tmp_path / "quarantine").iterdir()) == [one.name, two.name]


def test_plaintext_receipts_of_an_older_version_are_sealed(tmp_path: Path) -> None:
    old = tmp_path / "00000000000000000001-abcd1234.escpos"
    old.write_bytes(TEXT)
    spool = ReceiptSpool(tmp_path, FakeClock(), key=DeviceKey.generate())
    (kept,) = spool.pending()
    assert kept.name == old.name + ".sealed" and not old.exists()
    assert spool.read(kept) == TEXT and TEXT not in kept.read_bytes()
    assert spool.put(b"next") > kept  # new receipts still sort after the old one
