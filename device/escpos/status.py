"""Real-time status of an ESC/POS printer (``DLE EOT n``, HARDWARE.md section 3): pure codec.

A status byte always has bits 1 and 4 set and bit 7 clear; anything else is not a status reply
(line noise, a stale byte of another command) and raises :class:`ProtocolError`. Bit 0 is "fixed
off" in the Epson reference but some clones set it, so it is tolerated.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from device.errors import ProtocolError
from device.escpos.errors import (
    CoverOpenError,
    PaperNearEndWarning,
    PaperOutError,
    PrinterError,
    PrinterOfflineError,
)

DLE_EOT = b"\x10\x04"
FIXED_ON = 0x12  # bits 1 and 4
FIXED_OFF = 0x80  # bit 7


class StatusKind(IntEnum):
    """The ``n`` of ``DLE EOT n``."""

    PRINTER = 1
    OFFLINE_CAUSE = 2
    ERROR_CAUSE = 3
    PAPER = 4


def query(kind: StatusKind | int) -> bytes:
    """The bytes asking for one status byte: ``10 04 n``."""
    n = int(kind)
    if n not in (1, 2, 3, 4):
        raise ValueError(f"DLE EOT n: n must be 1..4, got {n}")
    return DLE_EOT + bytes((n,))


def _check(byte: int, kind: StatusKind) -> None:
    if not 0 <= byte <= 0xFF:
        raise ProtocolError(f"status byte out of range: {byte!r}")
    if byte & FIXED_ON != FIXED_ON or byte & FIXED_OFF:
        raise ProtocolError(
            f"DLE EOT {int(kind)}: 0x{byte:02X} is not a status byte "
            "(bits 1 and 4 must be set, bit 7 clear)"
        )


def _bit(byte: int, n: int) -> bool:
    return bool(byte >> n & 1)


@dataclass(frozen=True)
class PrinterStatus:
    """``DLE EOT 1``."""

    drawer_pin3_high: bool
    offline: bool
    waiting_recovery: bool
    feed_button_pressed: bool

    @classmethod
    def parse(cls, byte: int) -> PrinterStatus:
        _check(byte, StatusKind.PRINTER)
        return cls(_bit(byte, 2), _bit(byte, 3), _bit(byte, 5), _bit(byte, 6))


@dataclass(frozen=True)
class OfflineCause:
    """``DLE EOT 2``: why the printer is offline."""

    cover_open: bool
    feed_button: bool
    paper_end_stop: bool
    error: bool

    @classmethod
    def parse(cls, byte: int) -> OfflineCause:
        _check(byte, StatusKind.OFFLINE_CAUSE)
        return cls(_bit(byte, 2), _bit(byte, 3), _bit(byte, 5), _bit(byte, 6))


@dataclass(frozen=True)
class ErrorCause:
    """``DLE EOT 3``: which error (bit 2 is vendor-specific: black-mark error on some models)."""

    mark_error: bool
    autocutter: bool
    unrecoverable: bool
    auto_recoverable: bool

    @classmethod
    def parse(cls, byte: int) -> ErrorCause:
        _check(byte, StatusKind.ERROR_CAUSE)
        return cls(_bit(byte, 2), _bit(byte, 3), _bit(byte, 5), _bit(byte, 6))


@dataclass(frozen=True)
class PaperStatus:
    """``DLE EOT 4``: near-end (bits 2-3, mask 0x0C) and end (bits 5-6, mask 0x60) sensors.

    Printers with one sensor set both bits of a pair; with two sensors either bit counts.
    """

    near_end: bool
    out: bool

    @classmethod
    def parse(cls, byte: int) -> PaperStatus:
        _check(byte, StatusKind.PAPER)
        return cls(near_end=bool(byte & 0x0C), out=bool(byte & 0x60))


PARSERS = {
    StatusKind.PRINTER: PrinterStatus.parse,
    StatusKind.OFFLINE_CAUSE: OfflineCause.parse,
    StatusKind.ERROR_CAUSE: ErrorCause.parse,
    StatusKind.PAPER: PaperStatus.parse,
}


@dataclass(frozen=True)
class StatusReport:
    """What the driver asks before each receipt: printer, offline cause, paper (+ error cause)."""

    printer: PrinterStatus
    offline: OfflineCause
    paper: PaperStatus
    error: ErrorCause | None = None

    @property
    def ready(self) -> bool:
        return problem(self) is None

    def to_dict(self) -> dict[str, object]:
        """A JSON-friendly view for ``linli escpos status``."""
        issue = problem(self)
        return {
            "ready": issue is None,
            "problem": type(issue).__name__ if issue else None,
            "message": str(issue) if issue else None,
            "offline": self.printer.offline,
            "cover_open": self.offline.cover_open,
            "paper_out": self.paper.out or self.offline.paper_end_stop,
            "paper_near_end": self.paper.near_end,
            "error": self.offline.error,
            "error_cause": None if self.error is None else vars(self.error),
        }


def problem(report: StatusReport) -> PrinterError | None:
    """The error a receipt would hit now, most actionable first; ``None`` when it can print.

    Paper and cover come before "offline" because they are what makes a printer go offline and
    what staff can fix.
    """
    if report.paper.out or report.offline.paper_end_stop:
        return PaperOutError()
    if report.offline.cover_open:
        return CoverOpenError()
    if report.offline.error:
        return PrinterOfflineError(_describe_error(report.error))
    if report.printer.offline:
        return PrinterOfflineError()
    return None


def warnings_of(report: StatusReport) -> list[PaperNearEndWarning]:
    """Conditions worth reporting that do not stop printing."""
    return [PaperNearEndWarning()] if report.paper.near_end and not report.paper.out else []


def _describe_error(error: ErrorCause | None) -> str:
    if error is None:
        return "error"
    causes = [
        name
        for name, on in (
            ("autocutter error", error.autocutter),
            ("unrecoverable error", error.unrecoverable),
            ("auto-recoverable error (head too hot?)", error.auto_recoverable),
            ("black-mark error", error.mark_error),
        )
        if on
    ]
    return ", ".join(causes) or "error"
