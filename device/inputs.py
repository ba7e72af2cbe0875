"""The input side of a device: one owner for the configured ID-card reader,
QR scanner and PC/SC card reader.

:class:`InputWatch` opens what the configuration names (CONVENTIONS: backends by config, never by
platform) and funnels everything the peripherals report into one callback, each peripheral on its
own thread. A peripheral that sends garbage, disappears or stalls is reopened by its own driver
loop; it never stops the others or the daemon that owns this watch. Later issues' kiosk and locker
daemons build on it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

from device.clock import SYSTEM_CLOCK, Clock
from device.config import DeviceConfig
from device.idcard.identity import Identity
from device.idcard.watcher import IdCardWatcher
from device.pcsc.watcher import CardEvent, CardWatcher
from device.scanner.camera import CameraScanner, FrameSource
from device.scanner.events import ScanEvent
from device.scanner.serial_scanner import SerialScanner

log = logging.getLogger(__name__)

InputKind = Literal["idcard", "scan", "card"]


@dataclass(frozen=True)
class InputEvent:
    """Something a resident did at an input peripheral."""

    kind: InputKind
    at: float
    idcard: Identity | None = None
    scan: ScanEvent | None = None
    card: CardEvent | None = None


Listener = Callable[[InputEvent], None]


class InputWatch:
    """Runs every configured input peripheral and calls ``on_event`` for each card and scan.

    ``open_camera`` supplies frames when the scanner backend is ``camera`` (default: OpenCV on
    ``scanner.camera_source``); the simulator passes its emulated camera here.
    """

    def __init__(
        self,
        config: DeviceConfig,
        on_event: Listener,
        *,
        clock: Clock = SYSTEM_CLOCK,
        open_camera: Callable[[], FrameSource] | None = None,
    ) -> None:
        self.config = config
        self._on_event = on_event
        self._clock = clock
        self._open_camera = open_camera
        self._stop = threading.Event()
        self._idcard: IdCardWatcher | None = None
        self._scanner: SerialScanner | CameraScanner | None = None
        self._cards: CardWatcher | None = None
        self._threads: list[threading.Thread] = []
        self._started = False

    def start(self) -> InputWatch:
        if self._started:
            return self
        self._started = True
        if self.config.idcard.backend == "serial":
            self._idcard = IdCardWatcher(self.config.idcard, self._card_read, clock=self._clock)
            self._idcard.start()
        scanner_cfg = self.config.scanner
        if scanner_cfg.backend == "serial":
            self._scanner = SerialScanner(scanner_cfg, clock=self._clock)
        elif scanner_cfg.backend == "camera":
            self._scanner = CameraScanner(scanner_cfg, self._open_camera, clock=self._clock)
        if self.config.pcsc.backend == "pcsc":
            self._cards = CardWatcher(self.config.pcsc, self._card_event, clock=self._clock)
            self._cards.start()
        if self._scanner is not None:
            thread = threading.Thread(target=self._scan_loop, name="scanner", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def health(self) -> dict[str, bool]:
        """Which configured peripherals are open and answering right now."""
        state: dict[str, bool] = {}
        if self._idcard is not None:
            state["idcard"] = self._idcard.available
        if self._scanner is not None:
            state["scanner"] = self._scanner.available
        if self._cards is not None:
            state["pcsc"] = bool(self._cards.available)
        return state

    def stop(self) -> None:
        """Stop every peripheral loop and close the devices; safe to call twice."""
        self._stop.set()
        if self._idcard is not None:
            self._idcard.stop()
        if self._scanner is not None:
            self._scanner.close()
        if self._cards is not None:
            self._cards.close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()

    close = stop

    def __enter__(self) -> InputWatch:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _emit(self, event: InputEvent) -> None:
        try:
            self._on_event(event)
        except Exception:  # a listener bug must not stop the peripherals
            log.exception("input listener failed on a %s event", event.kind)

    def _card_read(self, identity: Identity) -> None:
        self._emit(InputEvent("idcard", time.time(), idcard=identity))

    def _card_event(self, event: CardEvent) -> None:
        self._emit(InputEvent("card", time.time(), card=event))

    def _scan_loop(self) -> None:
        assert self._scanner is not None
        # A closed scanner ends the iterator; a vanished one is reopened inside it.
        for scan in self._scanner.events(self._stop):
            self._emit(InputEvent("scan", time.time(), scan=scan))
