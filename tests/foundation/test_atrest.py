"""The device key and sealed blobs: round trip, every way a blob can fail, the key file's rules."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device.atrest import (
    HEADER_BYTES,
    KEY_BYTES,
    TAG_BYTES,
    AtRestError,
    DeviceKey,
    KeyFileError,
)
from device.errors import LinliError, ProtocolError

KEY = DeviceKey.generate()
AAD = b"0123abcd"
SECRET = "张三丰 110105194912310021".encode()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@given(st.binary(max_size=4096), st.binary(max_size=64))
def test_round_trip(plaintext: bytes, aad: bytes) -> None:
    blob = KEY.seal(plaintext, aad)
    assert len(blob) == HEADER_BYTES + len(plaintext) + TAG_BYTES
    assert KEY.open(blob, aad) == plaintext


def test_sealing_twice_differs_and_hides_the_plaintext() -> None:
    one, two = KEY.seal(SECRET, AAD), KEY.seal(SECRET, AAD)
    assert one != two  # a fresh nonce each time
    assert SECRET not in one and "张三丰".encode("utf-16-be") not in one


@given(st.integers(min_value=0), st.integers(min_value=1, max_value=255))
def test_any_flipped_bit_is_refused(position: int, flip: int) -> None:
    blob = bytearray(KEY.seal(SECRET, AAD))
    blob[position % len(blob)] ^= flip
    with pytest.raises(AtRestError):
        KEY.open(bytes(blob), AAD)


@pytest.mark.parametrize("length", [0, 1, HEADER_BYTES, HEADER_BYTES + TAG_BYTES - 1])
def test_truncated(length: int) -> None:
    with pytest.raises(AtRestError, match="truncated"):
        KEY.open(KEY.seal(SECRET, AAD)[:length], AAD)


def test_truncated_tail_does_not_authenticate() -> None:
    with pytest.raises(AtRestError, match="does not authenticate"):
        KEY.open(KEY.seal(SECRET, AAD)[:-1], AAD)


def test_unknown_version() -> None:
    blob = KEY.seal(SECRET, AAD)
    with pytest.raises(AtRestError, match="unknown format version 2"):
        KEY.open(b"\x02" + blob[1:], AAD)


def test_wrong_key_and_wrong_aad() -> None:
    blob = KEY.seal(SECRET, AAD)
    with pytest.raises(AtRestError, match="another device key"):
        DeviceKey.generate().open(blob, AAD)
    with pytest.raises(AtRestError, match="another record"):
        KEY.open(blob, b"0123abce")


def test_error_family() -> None:
    assert issubclass(AtRestError, ProtocolError)
    assert issubclass(KeyFileError, AtRestError)
    assert issubclass(AtRestError, LinliError) and issubclass(AtRestError, ValueError)


def test_raw_key_must_be_32_bytes() -> None:
    with pytest.raises(AtRestError, match="32 bytes"):
        DeviceKey(b"short")


def test_key_file_created_0600_in_a_0700_directory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    previous = os.umask(0o022)
    try:
        key = DeviceKey.for_data_dir(tmp_path)
    finally:
        os.umask(previous)
    path = tmp_path / "keys" / "device.key"
    assert path.stat().st_size == KEY_BYTES
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["device.key"]  # no temporary left
    raw = path.read_bytes()
    assert raw.hex() not in caplog.text and raw.hex() not in repr(key)
    again = DeviceKey.load_or_create(path)
    assert again.open(key.seal(SECRET, AAD), AAD) == SECRET  # the same key, not a new one
    assert path.read_bytes() == raw


def test_group_readable_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "device.key"
    DeviceKey.load_or_create(path)
    path.chmod(0o640)
    with pytest.raises(KeyFileError, match="group or others") as caught:
        DeviceKey.load_or_create(path)
    assert str(path) in str(caught.value) and caught.value.path == path


def test_wrong_length_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "device.key"
    for length in (0, 16, KEY_BYTES + 1):
        path.write_bytes(b"k" * length)
        path.chmod(0o600)
        with pytest.raises(KeyFileError, match=f"wrong length \\({length} bytes") as caught:
            DeviceKey.load_or_create(path)
        assert str(path) in str(caught.value)


def test_symlinked_key_file_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real.key"
    DeviceKey.load_or_create(real)
    link = tmp_path / "device.key"
    link.symlink_to(real)
    with pytest.raises(KeyFileError, match=str(link)):
        DeviceKey.load_or_create(link)
