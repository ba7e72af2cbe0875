"""The ID-card watcher: the one owner of the reader's I/O, polling for cards until told to stop.

It survives every reader failure: a port that vanishes is reopened with exponential backoff (logged
"unavailable" once and "back" once), a stalled or garbling reader is reopened after a few failed
polls, and a callback that raises is logged. Only ``stop()`` ends it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from device.clock import SYSTEM_CLOCK, Clock
from device.config import IdCardSection
from device.errors import DeviceError, DeviceUnavailableError, ProtocolError
from device.idcard.identity import Identity
from device.idcard.reader import CardFailed, CardLifted, CardPlaced, SamReader, idcard_settings

log = logging.getLogger(__name__)

ReaderFactory = Callable[[IdCardSection, Clock], SamReader]


def _open_reader(settings: IdCardSection, clock: Clock) -> SamReader:
    return SamReader(settings, clock=clock)


class IdCardWatcher:
    """Polls a SAM reader in a thread and calls ``on_card(identity)`` once per card placed.

    ``on_read_error(error)`` is called once per placement of a card that was found but could not be
    read (lifted mid-read, not an ID card, failed authentication, garbled reply): the kiosk tells
    the resident. ``on_lifted()`` is called when a card reported before leaves the reader, only if
    ``report_lift`` is set (``[idcard] report_lift``): most readers stop finding a card once it was
    read, and for them "lifted" would be reported at once. Reader faults are not card events: they
    show in :attr:`available`.

    ``failures_before_reopen`` consecutive failed polls (timeouts, garbage, failure statuses) make
    it close and reopen the reader, which resets the SAM. Waits between reopen attempts grow from
    ``backoff_s`` to ``max_backoff_s`` (real time: they are waits on the stop event).
    """

    def __init__(
        self,
        config: IdCardSection | None,
        on_card: Callable[[Identity], None],
        *,
        on_read_error: Callable[[Exception], None] | None = None,
        on_lifted: Callable[[], None] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
        failures_before_reopen: int = 3,
        reader_factory: ReaderFactory = _open_reader,
        **overrides: Any,
    ) -> None:
        self.settings = idcard_settings(config, **overrides)
        self._on_card = on_card
        self._on_read_error = on_read_error
        self._on_lifted = on_lifted
        self._clock = clock
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._failures_before_reopen = failures_before_reopen
        self._factory = reader_factory
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reader: SamReader | None = None
        self.available = False
        """Whether the reader is open and answering (the health a daemon reports)."""
        self._reported_unavailable = False
        self._failures = 0

    # -- thread ----------------------------------------------------------------------------------
    def start(self) -> IdCardWatcher:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self.run, name="idcard-watcher", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop and close the reader; safe to call twice."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._close_reader()

    close = stop

    def __enter__(self) -> IdCardWatcher:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- loop ------------------------------------------------------------------------------------
    def run(self, stop: threading.Event | None = None) -> None:
        """Poll until ``stop`` (or :meth:`stop`) is set; never returns because of the reader."""
        stop = stop if stop is not None else self._stop
        backoff = self._backoff_s
        try:
            while not stop.is_set() and not self._stop.is_set():
                if self._reader is None and not self._connect():
                    stop.wait(backoff)
                    backoff = min(backoff * 2, self._max_backoff_s)
                    continue
                backoff = self._backoff_s
                self._poll_once()
        finally:
            self._close_reader()

    def _connect(self) -> bool:
        try:
            self._reader = self._factory(self.settings, self._clock)
        except (DeviceError, ProtocolError) as err:
            self._mark_unavailable(err)
            return False
        self._failures = 0
        self.available = True
        if self._reported_unavailable:
            log.warning("ID-card reader on %s is back", self.settings.port)
            self._reported_unavailable = False
        return True

    def _mark_unavailable(self, err: Exception) -> None:
        self.available = False
        self._close_reader()
        if not self._reported_unavailable:
            log.warning("ID-card reader on %s unavailable: %s", self.settings.port, err)
            self._reported_unavailable = True
        else:
            log.debug("ID-card reader still unavailable: %s", err)

    def _poll_once(self) -> None:
        assert self._reader is not None
        try:
            event = self._reader.poll_event()
        except DeviceUnavailableError as err:
            self._mark_unavailable(err)
            return
        except (DeviceError, ProtocolError) as err:
            self._failures += 1
            level = logging.WARNING if self._failures == 1 else logging.DEBUG
            log.log(level, "ID-card poll failed (%d in a row): %s", self._failures, err)
            if self._failures >= self._failures_before_reopen:
                self._mark_unavailable(err)
            return
        self._failures = 0
        if isinstance(event, CardPlaced):
            log.info("ID card placed: %s", event.identity.masked())
            self._deliver(self._on_card, event.identity)
        elif isinstance(event, CardFailed):
            log.warning("ID card could not be read: %s", event.error)
            if self._on_read_error is not None:
                self._deliver(self._on_read_error, event.error)
        elif isinstance(event, CardLifted) and self.settings.report_lift:
            log.info("ID card lifted")
            if self._on_lifted is not None:
                self._deliver(self._on_lifted)

    @staticmethod
    def _deliver(callback: Callable[..., None], *args: object) -> None:
        try:
            callback(*args)
        except Exception:  # a consumer's bug must not stop the reader loop
            log.exception("ID-card callback failed")

    def _close_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
