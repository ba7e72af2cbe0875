"""Encryption of resident data at rest with the device key (DESIGN.md section 4): AES-256-GCM.

A sealed blob is ``version (1 byte) || nonce (12 bytes) || ciphertext || tag (16 bytes)``. The
caller's associated data (a job key, a file name) binds a blob to the record it belongs to, so a
blob copied onto another record does not open.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from device.errors import ProtocolError

log = logging.getLogger(__name__)

VERSION = 1
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
HEADER_BYTES = 1 + NONCE_BYTES
KEY_FILE = Path("keys") / "device.key"


class AtRestError(ProtocolError):
    """Sealed data does not open: truncated, unknown format version, tampered, or another key."""


class KeyFileError(AtRestError):
    """The device key file is unusable (wrong length, readable by others, not a file)."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


class DeviceKey:
    """The device's AES-256-GCM key; seals and opens blobs. Its bytes never appear in a repr."""

    __slots__ = ("_aead", "_key", "source")

    def __init__(self, key: bytes, source: Path | None = None) -> None:
        if len(key) != KEY_BYTES:
            raise AtRestError(f"a device key is {KEY_BYTES} bytes (AES-256), got {len(key)}")
        self._aead = AESGCM(key)
        self._key = bytes(key)
        self.source = source

    def __repr__(self) -> str:
        return f"DeviceKey(source={str(self.source) if self.source else 'generated'})"

    @classmethod
    def generate(cls) -> DeviceKey:
        """A fresh random key held only in memory (throwaway spools, tests)."""
        return cls(AESGCM.generate_key(bit_length=KEY_BYTES * 8))

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> DeviceKey:
        """The device key of ``data_dir`` (``data_dir/keys/device.key``), created on first use."""
        return cls.load_or_create(Path(data_dir) / KEY_FILE)

    @classmethod
    def load_or_create(cls, path: Path) -> DeviceKey:
        """Read the key file, or create it (0600, parent 0700) if it does not exist yet.

        Raises :class:`KeyFileError` naming the file when it has the wrong length, is not a
        regular file, or can be read or written by group or others.
        """
        if not path.exists() and not path.is_symlink():
            _create_key_file(path)
        return cls(_read_key_file(path), source=path)

    def derive(self, info: bytes, length: int = KEY_BYTES) -> bytes:
        """A subkey for another purpose (HKDF-SHA256, ``info`` names the purpose).

        Subkeys for different ``info`` are independent, and none reveals the device key.
        """
        return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(
            self._key
        )

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """Encrypt and authenticate ``plaintext``; ``aad`` must be given again to open it."""
        header = bytes([VERSION]) + secrets.token_bytes(NONCE_BYTES)
        return header + self._aead.encrypt(header[1:], plaintext, header[:1] + aad)

    def open(self, blob: bytes, aad: bytes) -> bytes:
        """The plaintext of a :meth:`seal` result; :class:`AtRestError` if it does not open."""
        if len(blob) < HEADER_BYTES + TAG_BYTES:
            raise AtRestError(
                f"sealed data is truncated ({len(blob)} bytes, at least "
                f"{HEADER_BYTES + TAG_BYTES} expected)"
            )
        if blob[0] != VERSION:
            raise AtRestError(
                f"sealed data has unknown format version {blob[0]} (this build reads {VERSION})"
            )
        try:
            return self._aead.decrypt(blob[1:HEADER_BYTES], blob[HEADER_BYTES:], blob[:1] + aad)
        except InvalidTag as err:
            raise AtRestError(
                "sealed data does not authenticate: tampered or damaged, sealed with another "
                "device key, or belongs to another record"
            ) from err


def _read_key_file(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as err:
        raise KeyFileError(f"device key {path} cannot be opened: {err.strerror}", path) from err
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"device key {path} is not a regular file", path)
        if info.st_mode & 0o077:
            raise KeyFileError(
                f"device key {path} is accessible by group or others "
                f"(mode {stat.S_IMODE(info.st_mode):04o}); chmod 600 it, and replace the key if "
                "anyone else may have read it",
                path,
            )
        data = handle.read(KEY_BYTES + 1)
    if len(data) != KEY_BYTES:
        raise KeyFileError(
            f"device key {path} has the wrong length ({len(data)} bytes, {KEY_BYTES} expected); "
            "restore it from the device backup: a new key cannot open data sealed with the old one",
            path,
        )
    return data


def _create_key_file(path: Path) -> None:
    """Write a new random key under a temporary name, then link it in (never replaces a key)."""
    parent = path.parent
    if not parent.is_dir():
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        parent.chmod(0o700)  # mkdir's mode is filtered by the umask
    tmp = parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(AESGCM.generate_key(bit_length=KEY_BYTES * 8))
            handle.flush()
            os.fsync(handle.fileno())
        # link() fails if another process created the key meanwhile: then that key is used.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
            log.info("created device key %s", path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
