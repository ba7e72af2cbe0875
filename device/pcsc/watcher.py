"""Watch the card reader for a daemon: report inserts (with the card read) and removals.

The loop never stops on a reader error: pcscd gone, reader unplugged or a card pulled mid-read are
reported as events, "unavailable" is logged once and "back" once (CONVENTIONS: Home Assistant).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from device.clock import SYSTEM_CLOCK, Clock
from device.config import PcscSection
from device.errors import DeviceError, LinliError
from device.pcsc.profile import CardRecord, read_card
from device.pcsc.reader import PcscReader

log = logging.getLogger(__name__)

EventKind = Literal["inserted", "removed", "unavailable", "available"]


@dataclass(frozen=True)
class CardEvent:
    """What happened at the reader. ``record`` or ``error`` is set on ``inserted`` when reading."""

    kind: EventKind
    reader: str
    at: float
    record: CardRecord | None = None
    error: str | None = None


class CardWatcher:
    """A thread that owns a :class:`PcscReader` and calls ``on_event`` for every change.

    ``retry_s`` is the pause after an error before looking again; ``slice_s`` bounds each wait on
    pcscd so :meth:`stop` is honoured quickly.
    """

    def __init__(
        self,
        config: PcscSection | None,
        on_event: Callable[[CardEvent], None],
        *,
        clock: Clock = SYSTEM_CLOCK,
        read_on_insert: bool = True,
        retry_s: float = 0.5,
        slice_s: float = 0.25,
    ) -> None:
        self.config = config or PcscSection()
        self.on_event = on_event
        self.clock = clock
        self.read_on_insert = read_on_insert
        self.retry_s = retry_s
        self.slice_s = slice_s
        self._reader = PcscReader(self.config, clock=clock, slice_s=slice_s)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._available: bool | None = None
        self._present = False
        self._name = self.config.reader or "(first reader)"

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> CardWatcher:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="pcsc-watcher", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop the loop and release the reader; safe twice."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, 4 * self.slice_s))
            self._thread = None
        self._reader.close()

    stop = close

    def __enter__(self) -> CardWatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def available(self) -> bool | None:
        """None until the first look, then whether the reader answered last time."""
        return self._available

    # -- loop ------------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self.step()

    def step(self) -> None:
        """One look at the reader (waits at most ``slice_s``, or ``retry_s`` after an error)."""
        try:
            name = self._reader.find_reader()
            self._name = name
            present = self._reader.wait_for_change(name, self.slice_s)
            self._set_available(True)
            if present != self._present:
                self._present = present
                if present:
                    self._emit(self._inserted(name))
                else:
                    self._emit(CardEvent("removed", name, self.clock.time()))
        except DeviceError as err:
            if self._present:  # whatever went wrong, the card can no longer be talked to
                self._present = False
                self._emit(CardEvent("removed", self._name, self.clock.time()))
            self._set_available(False, err)
            self._stop.wait(self.retry_s)

    def _inserted(self, name: str) -> CardEvent:
        if not self.read_on_insert:
            return CardEvent("inserted", name, self.clock.time())
        try:
            with self._reader.session(name) as card:
                record = read_card(card.transmit, self._reader.aid, self._reader.chunk)
        except LinliError as err:
            # A bad or half-read card is an event for the daemon, never the end of the loop.
            log.warning("card on %s could not be read: %s", name, err)
            return CardEvent("inserted", name, self.clock.time(), error=str(err))
        log.info("card %s (%s) on %s", record.masked_number, record.kind.slug, name)
        return CardEvent("inserted", name, self.clock.time(), record=record)

    def _set_available(self, available: bool, err: Exception | None = None) -> None:
        previous, self._available = self._available, available
        if previous is available:
            return
        if not available:
            log.warning("card reader unavailable: %s", err)
            self._emit(CardEvent("unavailable", self._name, self.clock.time(), error=str(err)))
        elif previous is False:
            log.warning("card reader back: %s", self._name)
            self._emit(CardEvent("available", self._name, self.clock.time()))
        else:
            log.info("watching card reader %s", self._name)

    def _emit(self, event: CardEvent) -> None:
        try:
            self.on_event(event)
        except Exception:
            # The daemon's handler failing must not stop the reader loop; the traceback is logged.
            log.exception("card event handler failed on %s event", event.kind)
