"""A durable receipt spool: one file per receipt, written atomically, removed only once printed.

Files are named ``<wall-clock ns>-<random>.escpos`` so they sort in the order they were made; a
crash leaves at most a ``.tmp`` file, which is ignored (the receipt was never handed over).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from device.clock import Clock

SUFFIX = ".escpos"


class ReceiptSpool:
    def __init__(self, directory: Path, clock: Clock) -> None:
        self.directory = directory
        self._clock = clock
        directory.mkdir(parents=True, exist_ok=True)

    def put(self, data: bytes) -> Path:
        """Store one receipt durably (fsync of file and directory) and return its file."""
        # Strictly increasing even when the clock stands still or steps back (NTP, tests).
        stamp = max(int(self._clock.time() * 1e9), self._last_stamp() + 1)
        name = f"{stamp:020d}-{secrets.token_hex(4)}{SUFFIX}"
        final = self.directory / name
        tmp = final.with_suffix(".tmp")
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(final)
        self._sync_dir()
        return final

    def pending(self) -> list[Path]:
        """Receipts not printed yet, oldest first."""
        return sorted(self.directory.glob(f"*{SUFFIX}"))

    def _last_stamp(self) -> int:
        names = [p.name for p in self.directory.glob(f"*{SUFFIX}")]
        stamps = [int(n.split("-", 1)[0]) for n in names if n.split("-", 1)[0].isdigit()]
        return max(stamps, default=0)

    def done(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self._sync_dir()

    def _sync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
