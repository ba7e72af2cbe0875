"""The transcript every emulator keeps of what crossed its wire, usable as a golden file.

``rx`` is host -> device (a request, a C-APDU), ``tx`` device -> host (a reply, an R-APDU). The
text form is one chunk per line: ``> HEX`` for rx, ``< HEX`` for tx.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Literal

Direction = Literal["rx", "tx"]


@dataclass(frozen=True)
class TranscriptEntry:
    """One chunk on the wire, ``at`` seconds after the transcript started."""

    at: float
    direction: Direction
    data: bytes


class Transcript:
    """A thread-safe record of traffic.

    With ``coalesce``, consecutive chunks in the same direction are joined: a pty splits writes
    arbitrarily, and a golden file should not depend on how.
    """

    def __init__(self, coalesce: bool = False) -> None:
        self._coalesce = coalesce
        self._entries: list[TranscriptEntry] = []
        self._lock = threading.Lock()
        self._t0 = time.monotonic()

    def record(self, direction: Direction, data: bytes) -> None:
        with self._lock:
            last = self._entries[-1] if self._entries else None
            if self._coalesce and last is not None and last.direction == direction:
                self._entries[-1] = TranscriptEntry(last.at, direction, last.data + data)
            else:
                self._entries.append(TranscriptEntry(time.monotonic() - self._t0, direction, data))

    @property
    def entries(self) -> list[TranscriptEntry]:
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def text(self) -> str:
        """The golden-file form: ``> HEX`` host to device, ``< HEX`` device to host."""
        return "".join(
            f"{'>' if e.direction == 'rx' else '<'} {e.data.hex(' ').upper()}\n"
            for e in self.entries
        )
