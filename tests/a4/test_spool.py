"""The A4 spool: metadata parser, sealing, quarantine (corrupt files are reported, never crash)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device.a4 import Spool, SpoolEntry, parse_metadata
from device.atrest import AtRestError, DeviceKey
from device.errors import ProtocolError

NAME = "张三丰"
PDF = f"%PDF-1.4 居住证明 {NAME} 110105194912310021".encode()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=10,
)


@given(st.text())
def test_parser_never_crashes_on_text(text: str) -> None:
    try:
        entry = parse_metadata(text)
    except ProtocolError:
        return
    assert isinstance(entry, SpoolEntry)


@given(st.dictionaries(st.sampled_from(["key", "title", "created", "attempts"]), json_values))
def test_parser_on_json_objects(raw: dict[str, object]) -> None:
    try:
        entry = parse_metadata(json.dumps(raw))
    except ProtocolError:
        return
    assert entry.key == raw["key"] and entry.attempts >= 0


@given(st.text(max_size=40), st.integers(min_value=0, max_value=99))
def test_round_trip(title: str, attempts: int) -> None:
    entry = SpoolEntry("abc123", title, 1.5, attempts, "PaperOutError: x", 7)
    assert parse_metadata(json.dumps(asdict(entry))) == entry


def test_corrupt_file_is_quarantined(tmp_path: Path) -> None:
    spool = Spool(tmp_path, key=DeviceKey.generate())
    good = spool.add(b"%PDF-1.4", "居住证明", 1.0)
    bad = spool.add(b"%PDF-1.4", "x", 2.0)
    (tmp_path / f"{bad.key}.json.sealed").write_bytes(b"{not json\xff")
    assert [e.key for e in spool.entries()] == [good.key]
    assert (tmp_path / "quarantine" / f"{bad.key}.json.sealed").exists()
    assert (tmp_path / "quarantine" / f"{bad.key}.pdf.sealed").exists()


def test_nothing_personal_in_clear(tmp_path: Path) -> None:
    spool = Spool(tmp_path, key=DeviceKey.generate())
    entry = spool.add(PDF, f"居住证明 {NAME}", 1.0)
    assert spool.read_pdf(entry.key) == PDF
    assert spool.load(entry.key).title == f"居住证明 {NAME}"
    for path in tmp_path.rglob("*"):
        data = path.read_bytes() if path.is_file() else b""
        for secret in (NAME.encode("utf-8"), NAME.encode("utf-16-be"), b"%PDF", b"110105"):
            assert secret not in data, (path.name, secret)


def test_another_device_key_quarantines_every_job(tmp_path: Path) -> None:
    Spool(tmp_path, key=DeviceKey.generate()).add(PDF, "t", 1.0)
    assert Spool(tmp_path, key=DeviceKey.generate()).entries() == []
    assert len(list((tmp_path / "quarantine").glob("*.sealed"))) == 2


def test_undecryptable_pdf_is_quarantined_and_reported(tmp_path: Path) -> None:
    spool = Spool(tmp_path, key=DeviceKey.generate())
    good = spool.add(PDF, "good", 1.0)
    bad = spool.add(PDF, "bad", 2.0)
    pdf = tmp_path / f"{bad.key}.pdf.sealed"
    pdf.write_bytes(pdf.read_bytes()[:-1] + b"\x00")
    with pytest.raises(AtRestError, match="does not authenticate"):
        spool.read_pdf(bad.key)
    assert (tmp_path / "quarantine" / pdf.name).exists()
    assert [e.key for e in spool.entries()] == [good.key]


def test_swapped_files_do_not_open(tmp_path: Path) -> None:
    """A sealed PDF copied onto another job's name is refused (associated data = the job key)."""
    spool = Spool(tmp_path, key=DeviceKey.generate())
    one, two = spool.add(b"%PDF one", "1", 1.0), spool.add(b"%PDF two", "2", 2.0)
    (tmp_path / f"{two.key}.pdf.sealed").write_bytes(
        (tmp_path / f"{one.key}.pdf.sealed").read_bytes()
    )
    with pytest.raises(AtRestError):
        spool.read_pdf(two.key)
    assert spool.read_pdf(one.key) == b"%PDF one"


def test_plaintext_jobs_of_an_older_version_are_sealed(tmp_path: Path) -> None:
    legacy = SpoolEntry("abc123", f"居住证明 {NAME}", 1.5, 2, "PaperOutError: x", 7)
    (tmp_path / "abc123.json").write_text(json.dumps(asdict(legacy)), encoding="utf-8")
    (tmp_path / "abc123.pdf").write_bytes(PDF)
    (tmp_path / "broken.json").write_text("{", encoding="utf-8")
    spool = Spool(tmp_path, key=DeviceKey.generate())
    assert spool.entries() == [legacy]
    assert spool.read_pdf("abc123") == PDF
    assert sorted(p.name for p in tmp_path.glob("*") if p.is_file()) == [
        "abc123.json.sealed",
        "abc123.pdf.sealed",
    ]
    assert (tmp_path / "quarantine" / "broken.json").exists()
