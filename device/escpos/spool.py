"""A durable receipt spool: one sealed file per receipt, written atomically, removed once printed.

Receipts carry (masked) personal data, so each file is sealed with the device key (DESIGN.md
section 4; associated data = the file name). Files are named
``<wall-clock ns>-<random>.escpos.sealed`` so they sort in the order they were made; a crash leaves
at most a ``.tmp`` file, which is ignored (the receipt was never handed over). A file that does not
decrypt is moved to ``quarantine/``.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from device.atrest import AtRestError, DeviceKey
from device.clock import Clock

log = logging.getLogger(__name__)

SUFFIX = ".escpos.sealed"
_LEGACY_SUFFIX = ".escpos"  # plaintext receipts written before sealing existed


class ReceiptSpool:
    """The directory of receipts not printed yet (``data_dir/spool/receipt``)."""

    def __init__(self, directory: Path, clock: Clock, *, key: DeviceKey) -> None:
        self.directory = directory
        self._clock = clock
        self._key = key
        directory.mkdir(parents=True, exist_ok=True)
        self._seal_legacy()

    def put(self, data: bytes) -> Path:
        """Store one receipt durably (sealed; fsync of file and directory) and return its file."""
        # Strictly increasing even when the clock stands still or steps back (NTP, tests).
        stamp = max(int(self._clock.time() * 1e9), self._last_stamp() + 1)
        final = self._write(f"{stamp:020d}-{secrets.token_hex(4)}{SUFFIX}", data)
        self._sync_dir()
        return final

    def pending(self) -> list[Path]:
        """Receipts not printed yet, oldest first."""
        return sorted(self.directory.glob(f"*{SUFFIX}"))

    def read(self, path: Path) -> bytes:
        """The ESC/POS bytes of a spooled receipt.

        Raises :class:`~device.atrest.AtRestError` after moving a file that does not decrypt
        (damaged, another device key, renamed) to ``quarantine/``.
        """
        try:
            return self._key.open(path.read_bytes(), path.name.encode("utf-8"))
        except AtRestError as err:
            target = self.directory / "quarantine"
            target.mkdir(exist_ok=True)
            path.replace(target / path.name)
            self._sync_dir()
            log.warning("receipt spool: %s quarantined: %s", path.name, err)
            raise

    def done(self, path: Path) -> None:
        """Forget a receipt (it printed)."""
        path.unlink(missing_ok=True)
        self._sync_dir()

    def _write(self, name: str, data: bytes) -> Path:
        final = self.directory / name
        tmp = final.with_suffix(".tmp")
        with tmp.open("wb") as fh:
            fh.write(self._key.seal(data, name.encode("utf-8")))
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(final)
        return final

    def _last_stamp(self) -> int:
        names = [p.name for p in self.directory.glob(f"*{SUFFIX}")]
        stamps = [int(n.split("-", 1)[0]) for n in names if n.split("-", 1)[0].isdigit()]
        return max(stamps, default=0)

    def _seal_legacy(self) -> None:
        """Seal receipts kept in clear by an older version (same name and order, sealed)."""
        legacy = sorted(self.directory.glob(f"*{_LEGACY_SUFFIX}"))
        for path in legacy:
            self._write(path.name.removesuffix(_LEGACY_SUFFIX) + SUFFIX, path.read_bytes())
            path.unlink()
        if legacy:
            self._sync_dir()
            log.info("receipt spool: %d plaintext receipts sealed", len(legacy))

    def _sync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
