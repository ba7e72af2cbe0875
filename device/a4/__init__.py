"""The A4 printer: PDFs through a CUPS queue, followed to completion, failures kept in a spool."""

from device.a4.cups_printer import (
    A4Printer,
    A4PrinterError,
    CupsUnavailableError,
    JobFailedError,
    JobTimeoutError,
    PaperOutError,
    QueueNotFoundError,
    QueueStoppedError,
)
from device.a4.spool import Spool, SpoolEntry, parse_metadata

__all__ = [
    "A4Printer",
    "A4PrinterError",
    "CupsUnavailableError",
    "JobFailedError",
    "JobTimeoutError",
    "PaperOutError",
    "QueueNotFoundError",
    "QueueStoppedError",
    "Spool",
    "SpoolEntry",
    "parse_metadata",
]
