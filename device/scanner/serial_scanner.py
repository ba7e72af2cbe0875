"""Thin pyserial transport for GM65-family QR modules: reads lines, delivers validated scan events.

The scanner owns its port: it reopens it with backoff when it disappears (logging "unavailable" once
and "back" once), drops garbage and unterminated lines, and never lets a bad payload through. Scans
are pulled with :meth:`SerialScanner.read_event` or iterated with :meth:`SerialScanner.events`;
commands (trigger, settings) wait for the module's answer and time out with
:class:`DeviceTimeoutError`.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator
from types import TracebackType

import serial

from device.clock import SYSTEM_CLOCK, Clock
from device.config import ScannerSection
from device.errors import (
    DeviceClosedError,
    DeviceError,
    DeviceTimeoutError,
    DeviceUnavailableError,
    ProtocolError,
)
from device.scanner import gm65
from device.scanner.events import ScanEvent, ScanRejectedError, log_rejection, make_event

log = logging.getLogger(__name__)

READ_SLICE_S = 0.05  # how long one blocking read waits, so close() and deadlines are honoured
MAX_BACKOFF_FACTOR = 8
RETRY_SLICE_S = 0.1  # longest wait in one step while the port is away


class SerialScanner:
    """A GM65-family module on a serial port (context manager; ``close()`` is safe twice).

    ``line_gap_s``: a line left unterminated for that long is dropped as stalled, so a burst of
    noise cannot glue itself to the next scan. ``on_reject`` hears of every refused line (reason
    and length only; a locker audits them), called from the reading thread.
    """

    def __init__(
        self,
        config: ScannerSection,
        clock: Clock = SYSTEM_CLOCK,
        line_gap_s: float = 0.5,
        on_reject: Callable[[ScanRejectedError], None] | None = None,
    ) -> None:
        self.config = config
        self._on_reject = on_reject
        self.source = f"serial:{config.port}"
        self._clock = clock
        self._line_gap_s = line_gap_s
        self._lock = threading.RLock()
        self._port: serial.SerialBase | None = None
        self._stream = gm65.Gm65Stream(max_line=config.max_length)
        self._events: deque[ScanEvent] = deque()
        self._responses: deque[gm65.Response] = deque()
        self._last_byte_at = 0.0
        self._closed = False
        self._outage = False
        self._retry_at = 0.0
        self._backoff = config.reconnect_s
        self.rejections: Counter[str] = Counter()
        """Refused payloads by reason (never the payloads themselves)."""

    # -- lifecycle -------------------------------------------------------------------------------
    def open(self) -> SerialScanner:
        """Open the port now if it is there; if not, keep retrying in the background of reads."""
        self._check_open()
        with self._lock:
            self._try_connect()
        return self

    @property
    def available(self) -> bool:
        """True while the port is open."""
        return self._port is not None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._drop_port()

    def __enter__(self) -> SerialScanner:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- scans -----------------------------------------------------------------------------------
    def read_event(self, timeout: float) -> ScanEvent | None:
        """The next valid scan, or None after ``timeout`` seconds without one (port down or not)."""
        deadline = self._clock.monotonic() + timeout
        while True:
            # The lock is taken per step, so a command from another thread is not held up.
            with self._lock:
                self._check_open()
                if self._events:
                    return self._events.popleft()
                remaining = deadline - self._clock.monotonic()
                if remaining <= 0:
                    return None
                self._pump(remaining)

    def events(self, stop: threading.Event | None = None) -> Iterator[ScanEvent]:
        """Yield scans until the scanner is closed (from another thread) or ``stop`` is set."""
        while not self._closed and not (stop is not None and stop.is_set()):
            try:
                event = self.read_event(timeout=0.2)
            except DeviceClosedError:
                return
            if event is not None:
                yield event

    # -- commands --------------------------------------------------------------------------------
    def trigger(self, timeout: float = 1.0) -> None:
        """Start one scan (``7E 00 08 01 00 02 01 AB CD``) and wait for the ACK."""
        self.command(gm65.trigger_command(), timeout)

    def write_setting(self, address: int, data: bytes, timeout: float = 1.0) -> gm65.Response:
        return self.command(gm65.write_command(address, data), timeout)

    def read_setting(self, address: int, count: int = 1, timeout: float = 1.0) -> bytes:
        return self.command(gm65.read_command(address, count), timeout).data

    def save_settings(self, timeout: float = 1.0) -> None:
        self.command(gm65.save_command(), timeout)

    def command(self, frame: bytes, timeout: float = 1.0) -> gm65.Response:
        """Send a command frame and return the module's answer; scans arriving meanwhile are kept.

        Raises :class:`DeviceUnavailableError` when the port is gone and
        :class:`DeviceTimeoutError` when no answer comes within ``timeout`` seconds.
        """
        deadline = self._clock.monotonic() + timeout
        with self._lock:
            self._check_open()
            port = self._port or self._connect_now()
            self._responses.clear()
            try:
                port.write(frame)
                port.flush()
            except (serial.SerialException, OSError) as err:
                self._lost(err)
                raise DeviceUnavailableError(f"{self.config.port}: write failed: {err}") from err
            while not self._responses:
                remaining = deadline - self._clock.monotonic()
                if remaining <= 0:
                    raise DeviceTimeoutError(
                        f"{self.config.port}: no answer to command {frame[:4].hex(' ')} within "
                        f"{timeout} s; check the wiring and the baud rate ({self.config.baudrate})"
                    )
                self._pump(remaining)
                if self._port is None:
                    raise DeviceUnavailableError(
                        f"{self.config.port}: port lost awaiting an answer"
                    )
            response = self._responses.popleft()
        if not response.ok:
            raise DeviceError(
                f"{self.config.port}: module refused command (status {response.status})"
            )
        return response

    # -- internals -------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise DeviceClosedError(f"scanner on {self.config.port} used after close()")

    def _connect_now(self) -> serial.SerialBase:
        port = self._try_connect(force=True)
        if port is None:
            raise DeviceUnavailableError(f"{self.config.port}: scanner port is not available")
        return port

    def _try_connect(self, force: bool = False) -> serial.SerialBase | None:
        if self._port is not None or self._closed:
            return self._port
        now = self._clock.monotonic()
        if not force and now < self._retry_at:
            return None
        try:
            port = serial.serial_for_url(
                self.config.port,
                baudrate=self.config.baudrate,
                timeout=READ_SLICE_S,
                write_timeout=1.0,
            )
        except (serial.SerialException, OSError, ValueError) as err:
            self._retry_at = now + self._backoff
            self._backoff = min(self._backoff * 2, self.config.reconnect_s * MAX_BACKOFF_FACTOR)
            if not self._outage:
                self._outage = True
                log.warning("scanner %s unavailable (%s); retrying", self.config.port, err)
            return None
        self._port = port
        self._backoff = self.config.reconnect_s
        self._stream.flush()
        if self._outage:
            self._outage = False
            log.warning("scanner %s back", self.config.port)
        return port

    def _drop_port(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except (serial.SerialException, OSError) as err:
                log.debug("closing %s: %s", self.config.port, err)

    def _lost(self, err: BaseException) -> None:
        if not self._outage:
            self._outage = True
            log.warning("scanner %s unavailable (%s); reconnecting", self.config.port, err)
        self._drop_port()
        self._retry_at = self._clock.monotonic() + self._backoff

    def _pump(self, budget: float) -> None:
        """One step: (re)connect if due, read what is there, turn it into events and answers."""
        port = self._try_connect()
        if port is None:
            wait = min(budget, RETRY_SLICE_S, self._retry_at - self._clock.monotonic())
            self._clock.sleep(max(wait, 0.01))
            return
        try:
            data = port.read(max(1, port.in_waiting))  # type: ignore[attr-defined]
        except (serial.SerialException, OSError, TypeError) as err:
            # TypeError: pyserial reading a port closed under it by close() from another thread.
            if not self._closed:
                self._lost(err)
            return
        now = self._clock.monotonic()
        if data:
            self._last_byte_at = now
            for item in self._stream.feed(data):
                self._dispatch(item)
        elif self._stream.pending and now - self._last_byte_at >= self._line_gap_s:
            stalled = self._stream.flush()
            if stalled is not None:
                self._dispatch(stalled)

    def _dispatch(self, item: gm65.StreamItem) -> None:
        if isinstance(item, gm65.Response):
            self._responses.append(item)
        elif isinstance(item, gm65.Line):
            try:
                event = make_event(
                    item.data, self.source, self._clock.time(), self.config.max_length
                )
            except ScanRejectedError as err:
                self._rejected(err)
                return
            self._events.append(event)
        elif isinstance(item, ScanRejectedError):
            log_rejection(item, self.source)
            self._rejected(item)
        else:
            self._log_bad_frame(item)

    def _rejected(self, err: ScanRejectedError) -> None:
        self.rejections[err.reason] += 1
        if self._on_reject is not None:
            self._on_reject(err)

    def _log_bad_frame(self, err: ProtocolError) -> None:
        self.rejections["bad_frame"] += 1
        log.warning("%s: dropped a malformed answer frame: %s", self.source, err)
