"""QR scanners (HARDWARE.md section 5): GM65-family serial modules and cameras, one scan event type.

Both scanners deliver :class:`ScanEvent` objects that passed the same validator (UTF-8, no control
characters, bounded length); see docs/scanner.md.
"""

from __future__ import annotations

from device.scanner.events import ScanEvent, ScanRejectedError, validate_payload, validate_text

__all__ = ["ScanEvent", "ScanRejectedError", "validate_payload", "validate_text"]
