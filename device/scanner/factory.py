"""The scanner a device's ``[scanner]`` section names, behind one small interface (the locker and
kiosk daemons both read scans this way)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

from device.clock import Clock
from device.config import ScannerSection
from device.errors import LinliError
from device.scanner.events import ScanEvent, ScanRejectedError

log = logging.getLogger(__name__)


class Scanner(Protocol):
    """What a daemon needs of a QR scanner (SerialScanner and CameraScanner both are)."""

    def open(self) -> object: ...

    def read_event(self, timeout: float) -> ScanEvent | None: ...

    def close(self) -> None: ...


def open_scanner(
    section: ScannerSection,
    clock: Clock,
    on_reject: Callable[[ScanRejectedError], None] | None = None,
) -> Scanner | None:
    """The configured scanner (not yet opened), or None for ``backend = "none"``."""
    if section.backend == "serial":
        from device.scanner.serial_scanner import SerialScanner

        return SerialScanner(section, clock, on_reject=on_reject)
    if section.backend == "camera":
        from device.scanner.camera import CameraScanner

        return CameraScanner(section, clock=clock, on_reject=on_reject)
    return None


def read_scans(
    scanner: Scanner, stop: threading.Event, handle: Callable[[str], object], *, wait_s: float = 0.2
) -> None:
    """Hand every scanned text to ``handle`` until ``stop``; an error of the scanner or of
    ``handle`` is logged and reading goes on (a daemon's scanner thread)."""
    while not stop.is_set():
        try:
            event = scanner.read_event(wait_s)
            if event is not None:
                handle(event.text)
        except LinliError as err:
            if stop.is_set():
                return
            log.error("scan not handled (%s); the scanner keeps reading", err)
            stop.wait(0.5)
