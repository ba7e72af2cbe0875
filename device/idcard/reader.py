"""Serial transport of the SAM ID-card reader: find/select/read cycles, polling, resynchronisation.

The protocol lives in :mod:`device.idcard.codec`; this module moves bytes over pyserial, waits with
a real deadline, skips garbage before a reply, retries damaged or missing replies, and translates
pyserial's exceptions into ``DeviceUnavailableError`` / ``DeviceTimeoutError``. Log lines carry only
masked identities.
"""

from __future__ import annotations

import logging
import termios
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import serial
from pydantic import ValidationError

from device.clock import SYSTEM_CLOCK, Clock
from device.config import IdCardSection
from device.errors import (
    ConfigError,
    DeviceClosedError,
    DeviceError,
    DeviceTimeoutError,
    DeviceUnavailableError,
    ProtocolError,
)
from device.idcard.codec import (
    HEADER_SIZE,
    Command,
    Reply,
    build_request,
    check_reply,
    parse_read_data,
    parse_reply_body,
    scan_frame,
)
from device.idcard.errors import FrameError, NoCardError, SamFailureError, SelectFailedError
from device.idcard.identity import Identity

log = logging.getLogger(__name__)

# What pyserial lets through when a port vanishes: its own error, OSError (EIO) from read, write
# and ioctl, and termios.error (not an OSError) from the flush before a request.
_PORT_ERRORS = (serial.SerialException, OSError, termios.error)

READ_SLICE_S = 0.05
"""pyserial read timeout: how often a wait checks its deadline."""


@dataclass(frozen=True)
class CardPlaced:
    """A card was put on the reader and read."""

    identity: Identity


@dataclass(frozen=True)
class CardFailed:
    """A card was found but reading it failed (lifted mid-read, not an ID card, authentication
    failed, garbled reply): a fault of this card, not of the reader. Reported once per placement."""

    error: DeviceError | ProtocolError


@dataclass(frozen=True)
class CardLifted:
    """The card reported (or failed) before is no longer found. Only meaningful with readers
    that keep finding a card already read (``[idcard] report_lift``): the others stop finding
    it at once."""


CardEvent = CardPlaced | CardFailed | CardLifted


def idcard_settings(config: IdCardSection | None = None, **overrides: Any) -> IdCardSection:
    """``config`` with keyword ``overrides`` (port, baudrate, ...), validated like the TOML file."""
    base = (config or IdCardSection()).model_dump()
    base.update({key: value for key, value in overrides.items() if value is not None})
    try:
        return IdCardSection.model_validate(base)
    except ValidationError as err:
        problems = "; ".join(
            f"idcard.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
        )
        raise ConfigError(f"invalid ID-card reader settings: {problems}") from err


class SamReader:
    """A SAM ID-card reader on a serial port; a context manager.

    Opening resets the SAM and checks its status. :meth:`read_card` runs one find/select/read cycle;
    :meth:`poll` paces cycles at ``poll_interval_ms`` (on the injected clock) and reports each card
    once until it leaves the reader.
    """

    def __init__(
        self,
        config: IdCardSection | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        **overrides: Any,
    ) -> None:
        self.settings = idcard_settings(config, **overrides)
        self._clock = clock
        self._port: serial.Serial | None = None
        self._closed = False
        self._last_poll: float | None = None
        self._present = False
        self._port = self._open()
        try:
            self.exchange(Command.RESET_SAM)
            self.exchange(Command.SAM_STATUS)
        except BaseException:
            self.close()
            raise
        log.info("ID-card reader ready on %s", self.settings.port)

    def _open(self) -> serial.Serial:
        s = self.settings
        try:
            timeout = min(READ_SLICE_S, s.timeout_s)
            return serial.Serial(s.port, s.baudrate, timeout=timeout, write_timeout=s.timeout_s)
        except _PORT_ERRORS as err:
            raise DeviceUnavailableError(
                f"ID-card reader: cannot open {s.port}: {err}; check the cable and the port setting"
            ) from err

    # -- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the port; safe to call twice."""
        self._closed = True
        port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except _PORT_ERRORS as err:
                log.debug("closing %s: %s", self.settings.port, err)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> SamReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _require_port(self) -> serial.Serial:
        if self._closed or self._port is None:
            raise DeviceClosedError(f"ID-card reader on {self.settings.port} is closed")
        return self._port

    # -- exchanges -------------------------------------------------------------------------------
    def exchange(self, command: Command) -> Reply:
        """Send ``command`` and return its successful reply.

        A damaged, truncated or missing reply is retried ``retries`` times (input flushed first);
        a failure status raises its :class:`~device.idcard.errors.SamStatusError` at once.
        """
        attempts = self.settings.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                reply = self._transact(command)
            except (FrameError, DeviceTimeoutError) as err:
                if attempt == attempts:
                    raise
                log.debug("%s attempt %d/%d: %s", command.label, attempt, attempts, err)
                continue
            return check_reply(reply, command)
        raise AssertionError("unreachable")  # pragma: no cover

    def _transact(self, command: Command) -> Reply:
        port = self._require_port()
        request = build_request(command)
        try:
            port.reset_input_buffer()
            port.write(request)
            port.flush()
        except serial.SerialTimeoutException as err:
            raise DeviceTimeoutError(
                f"ID-card reader: writing {command.label} to {self.settings.port} timed out"
            ) from err
        except _PORT_ERRORS as err:
            raise self._unavailable(err) from err
        return parse_reply_body(self._read_frame(port, command))

    def _unavailable(self, err: Exception) -> DeviceUnavailableError:
        return DeviceUnavailableError(
            f"ID-card reader on {self.settings.port} is gone ({err}); check the cable"
        )

    def _read_frame(self, port: serial.Serial, command: Command) -> bytes:
        """Wait (real time, ``timeout_s``) for one valid frame, skipping garbage before it."""
        deadline = time.monotonic() + self.settings.timeout_s
        buf = b""
        dropped = 0
        while True:
            scan = scan_frame(buf)
            if scan.status == "frame":
                if scan.skipped or dropped:
                    log.debug("skipped %d garbage bytes before a frame", scan.skipped + dropped)
                return scan.body
            if scan.status == "corrupt":
                assert scan.error is not None
                raise scan.error
            # Garbage before the (possible) start of a frame is never needed again.
            dropped += scan.start
            buf = buf[scan.start :]
            if time.monotonic() >= deadline:
                raise self._waited_too_long(command, buf, dropped)
            try:
                chunk = port.read(max(scan.needed, port.in_waiting, 1))
            except _PORT_ERRORS as err:
                raise self._unavailable(err) from err
            buf += chunk

    def _waited_too_long(self, command: Command, buf: bytes, dropped: int) -> Exception:
        timeout = self.settings.timeout_s
        if len(buf) >= HEADER_SIZE:
            expected = int.from_bytes(buf[5:7], "big") + HEADER_SIZE
            return FrameError(
                "truncated",
                f"truncated reply to {command.label}: got {len(buf)} of {expected} bytes "
                f"in {timeout} s",
            )
        if buf or dropped:
            return FrameError(
                "garbage",
                f"no valid reply to {command.label} in {timeout} s "
                f"({dropped + len(buf)} bytes of garbage)",
            )
        return DeviceTimeoutError(
            f"ID-card reader on {self.settings.port} did not answer {command.label} "
            f"within {timeout} s"
        )

    # -- cards -----------------------------------------------------------------------------------
    def sam_id(self) -> bytes:
        """The SAM module's 16-byte identifier."""
        return self.exchange(Command.SAM_ID).data

    def card_present(self) -> bool:
        """Whether ``find card`` succeeds now (readers often fail it for a card already read)."""
        try:
            self.exchange(Command.FIND_CARD)
        except NoCardError:
            return False
        return True

    def read_card(self) -> Identity | None:
        """One find/select/read cycle: the identity, or None when no card is on the reader."""
        if not self.card_present():
            return None
        return self._read_found()

    def _read_found(self) -> Identity | None:
        """Select and read a card ``find card`` just found (None: it left before select)."""
        try:
            self.exchange(Command.SELECT_CARD)
        except SelectFailedError:
            log.debug("card left the reader before select")
            return None
        command = (
            Command.READ_TEXT_PHOTO_FINGERPRINT
            if self.settings.read_fingerprint
            else Command.READ_TEXT_PHOTO
        )
        identity = parse_read_data(self.exchange(command).data)
        log.debug("card read: %s", identity.masked())
        if not identity.id_number_valid:
            problems = "; ".join(identity.id_number_problems)
            log.warning("card read with a doubtful ID number: %s", problems)
        return identity

    @property
    def present(self) -> bool:
        """Whether a card reported (or failed) by :meth:`poll_event` is still taken to be there."""
        return self._present

    def poll(self) -> Identity | None:
        """Wait for the poll interval, then look for a card; report each card once until lifted.

        Once a card was reported, only ``find card`` runs until it fails (card lifted, or a reader
        that will not find a card it already read), so the same card is not read twice in a row.
        A failed read raises its error (see :meth:`poll_event` for the typed outcome).
        """
        event = self.poll_event()
        if isinstance(event, CardFailed):
            raise event.error
        return event.identity if isinstance(event, CardPlaced) else None

    def poll_event(self) -> CardEvent | None:
        """One paced poll: what changed on the reader, or None (nothing new).

        A card found is read once: :class:`CardPlaced`, or :class:`CardFailed` when reading it
        failed (the card is then left alone until it is lifted and put back, so a forged card on the
        reader is refused once, not every poll). :class:`CardLifted` when a card reported before is
        no longer found. Errors of the reader itself (timeouts or garbage answering ``find card``,
        the SAM failing, the port vanishing) raise.
        """
        interval = self.settings.poll_interval_ms / 1000
        if self._last_poll is not None:
            self._clock.sleep(self._last_poll + interval - self._clock.monotonic())
        self._last_poll = self._clock.monotonic()
        if self._present:
            if self.card_present():
                return None
            self._present = False
            return CardLifted()
        if not self.card_present():
            return None
        try:
            identity = self._read_found()
        except (SamFailureError, DeviceUnavailableError):
            raise
        except (DeviceError, ProtocolError) as err:
            self._present = True
            return CardFailed(err)
        self._present = identity is not None
        return CardPlaced(identity) if identity is not None else None
