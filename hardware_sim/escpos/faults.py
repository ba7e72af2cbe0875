"""The emulated printer's fault state and the ``DLE EOT`` bytes it answers (HARDWARE.md section 3).

Built from the bit table directly, not from device.escpos.status, so a bug in the driver's codec is
not mirrored here.
"""

from __future__ import annotations

from dataclasses import dataclass

IDLE = 0x12  # bits 1 and 4 always set


@dataclass
class Faults:
    paper_out: bool = False
    near_end: bool = False
    cover_open: bool = False
    error: bool = False  # offline with an error (head too hot: auto-recoverable)
    garbled_status: bool = False  # answer 0xFF (bit 7 set): a broken printer / line noise

    @property
    def offline(self) -> bool:
        return self.paper_out or self.cover_open or self.error

    def status_byte(self, n: int) -> int:
        """The reply to ``DLE EOT n``."""
        if self.garbled_status:
            return 0xFF
        byte = IDLE
        if n == 1 and self.offline:
            byte |= 0x08
        elif n == 2:
            byte |= (0x04 if self.cover_open else 0) | (0x20 if self.paper_out else 0)
            byte |= 0x40 if self.error else 0
        elif n == 3 and self.error:
            byte |= 0x40
        elif n == 4:
            byte |= (0x0C if self.near_end or self.paper_out else 0) | (
                0x60 if self.paper_out else 0
            )
        return byte
