"""RS485 lock-control boards of the "8A" family behind :class:`LockController` (HARDWARE.md 6).

``locks.backend = "rs485"``: one serial port (``locks.port``) is one bus with the boards listed in
``locks.boards``; lock N is channel ``(N-1) % locks_per_board + 1`` of board
``boards[(N-1) // locks_per_board]``. Every byte goes through ``codec_8a``; this module owns the
port, the request/answer timing and the door states.

Two clocks, on purpose: the wait for an answer (``locks.timeout_s``) and the quiet window after it
are wire time, measured by pyserial's timeouts and ``time.monotonic``, because the bytes arrive in
real time; the polling schedule and every :class:`DoorChange` time use the injected clock, so tests
move a FakeClock to make the controller poll.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import serial

from device.clock import SYSTEM_CLOCK, Clock
from device.config import LocksSection
from device.locks import codec_8a
from device.locks.base import (
    DoorChange,
    DoorState,
    DuplicateAddressError,
    LockBusError,
    LockClosedError,
    LockController,
    LockPortUnavailableError,
    LockTimeoutError,
)

log = logging.getLogger(__name__)

READ_SLICE_S = 0.01
"""Longest single blocking read: deadlines and quiet windows are honoured to about this."""
QUIET_MIN_S = 0.02
QUIET_BYTES = 4
QUIET_MAX_S = 0.25
"""A line that keeps chattering after an answer is judged after this long at most."""
BITS_PER_BYTE_8N1 = 10


@dataclass
class _Exchange:
    """What came back for one request."""

    replies: list[codec_8a.Reply] = field(default_factory=list)
    garbled: bool = False
    """Garbage arrived where the answer was expected (before it, or instead of it)."""
    trailing: bool = False
    """A second answer, or garbage, followed the first: another board answers on the address."""

    def unexpected(self) -> None:
        """Something other than the one answer arrived: garbage before it, extra after it."""
        if self.replies:
            self.trailing = True
        else:
            self.garbled = True


@dataclass(frozen=True)
class _Silent:
    """Observation: ``board`` gave no usable answer to a query (``garbled``: only garbage)."""

    board: int
    garbled: bool = False


_Observation = codec_8a.AllDoors | codec_8a.Report | _Silent


class Rs485LockController(LockController):
    """Locks on "8A" RS485 boards, all on one serial port.

    At start every board is asked for its doors: a board that does not answer starts with its
    doors UNKNOWN (a warning, not an error: the other boards' locks must still open), and two
    boards answering on one address raise :class:`DuplicateAddressError`. The readings of that
    first query come out of the first :meth:`poll` as changes from UNKNOWN, as the GPIO backend
    delivers its first debounced readings. During operation a duplicate address is logged once
    and listed by :meth:`faults`.
    """

    def __init__(self, section: LocksSection, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._section = section
        self._clock = clock
        self._boards = list(section.boards)
        self._per_board = section.locks_per_board
        self._timeout_s = section.timeout_s
        self._interval_s = section.poll_interval_ms / 1000
        byte_s = BITS_PER_BYTE_8N1 / section.baudrate
        self._quiet_s = max(QUIET_MIN_S, QUIET_BYTES * byte_s)
        self._reader = codec_8a.FrameReader(query="all")
        self._states = dict.fromkeys(range(1, self.lock_count + 1), DoorState.UNKNOWN)
        self._observations: list[tuple[_Observation, float]] = []
        self._offline: dict[int, str] = {}  # board -> why its doors are UNKNOWN
        self._duplicates: dict[int, str] = {}
        self._noise_bytes = 0
        self._lock = threading.RLock()
        self._closed = False
        self._port = self._open_port()
        try:
            self._probe()
        except BaseException:
            self._closed = True
            self._port.close()
            raise
        self._next_query_at = clock.monotonic() + self._interval_s

    # -- LockController --------------------------------------------------------------------------
    @property
    def lock_count(self) -> int:
        return len(self._boards) * self._per_board

    def pulse(self, lock: int) -> None:
        """Send "open" to the lock's board and return once the board has echoed it.

        The board times the pulse itself. One retry on silence or garbage; then
        :class:`LockTimeoutError` (no answer) or :class:`LockBusError` (garbled answers).
        """
        with self._lock:
            self._check_open()
            self._check_lock(lock)
            board, channel = self.address_of(lock)
            request = codec_8a.open_lock(board, channel)

            def wanted(frame: codec_8a.Reply) -> bool:
                return frame == codec_8a.OpenReply(board, channel)

            garbled = False
            for attempt in (1, 2):
                exchange = self._exchange(request, wanted)
                if exchange.replies:
                    if exchange.trailing:
                        self._note_duplicate(board)
                    log.info("lock %d (board %d channel %d) pulsed", lock, board, channel)
                    return
                garbled = garbled or exchange.garbled
                if attempt == 1:
                    log.info("board %d: no clean echo for lock %d, sending again", board, lock)
            where = f"board {board} (address switches), lock {lock} (channel {channel})"
            if garbled:
                raise LockBusError(
                    f"{where}: the open command got only garbled answers, twice; check the "
                    f"RS485 wiring (A/B not swapped, 120 ohm termination at both ends) and that no "
                    f"second board is set to address {board}"
                )
            raise LockTimeoutError(
                f"{where}: no echo to the open command within {self._timeout_s} s, twice; check "
                f"the board's power, that its address switches are set to {board}, and the RS485 "
                f"cable to {self._section.port}"
            )

    def poll(self) -> list[DoorChange]:
        """Read pending ``82`` reports; every ``poll_interval_ms`` also ask each board for all
        its doors. Returns the changes in the order they were observed."""
        with self._lock:
            self._check_open()
            self._drain()
            now = self._clock.monotonic()
            if now >= self._next_query_at:
                self._next_query_at = now + self._interval_s
                for board in self._boards:
                    self._refresh(board)
            return self._apply_observations()

    def door(self, lock: int) -> DoorState:
        with self._lock:
            self._check_open()
            self._check_lock(lock)
            return self._states[lock]

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._port.close()
        log.info("RS485 lock bus on %s closed", self._section.port)

    # -- health ----------------------------------------------------------------------------------
    def faults(self) -> dict[int, str]:
        """Current problems by board address: not answering, or two boards on one address."""
        with self._lock:
            found = dict(sorted(self._offline.items()))
            found.update(self._duplicates)
            return found

    @property
    def noise_bytes(self) -> int:
        """Bytes of line noise dropped since start: a count that keeps rising points at the
        wiring (termination, A/B, a cable run next to mains) rather than at one board."""
        return self._noise_bytes

    def address_of(self, lock: int) -> tuple[int, int]:
        """(board address, channel on that board) of ``lock``."""
        self._check_lock(lock)
        index, channel = divmod(lock - 1, self._per_board)
        return self._boards[index], channel + 1

    # -- start -----------------------------------------------------------------------------------
    def _open_port(self) -> serial.Serial:
        port = self._section.port
        try:
            return serial.Serial(
                port, baudrate=self._section.baudrate, timeout=READ_SLICE_S, write_timeout=1.0
            )
        except (serial.SerialException, OSError, ValueError) as err:
            raise LockPortUnavailableError(
                f"cannot open the lock bus port {port} (config key locks.port): {err}; check "
                "that the USB-RS485 adapter is plugged in and the path (or udev link) is right"
            ) from err

    def _probe(self) -> None:
        for board in self._boards:
            exchanges = self._query(board, attempts=2)
            answered = any(e.replies for e in exchanges)
            # Two boards answering at the same instant garble each other on every attempt.
            collided = not answered and all(e.garbled for e in exchanges)
            if collided or any(e.trailing for e in exchanges):
                raise DuplicateAddressError(self._duplicate_message(board))
            if not answered:
                self._offline[board] = self._offline_message(board)
                log.warning("%s; its doors are UNKNOWN", self._offline[board])
        log.info(
            "RS485 lock bus on %s: boards %s, %d locks each, %d answering",
            self._section.port,
            self._boards,
            self._per_board,
            len(self._boards) - len(self._offline),
        )

    # -- polling ---------------------------------------------------------------------------------
    def _refresh(self, board: int) -> None:
        # A board known to be down gets one try per interval: retries would stall the poll loop.
        exchanges = self._query(board, attempts=1 if board in self._offline else 2)
        if any(e.trailing for e in exchanges):
            self._note_duplicate(board)
        if not any(e.replies for e in exchanges):
            garbled = all(e.garbled for e in exchanges)
            self._observations.append((_Silent(board, garbled), self._clock.monotonic()))

    def _query(self, board: int, attempts: int) -> list[_Exchange]:
        """Ask ``board`` for all its doors; the first answer is queued as an observation."""
        request = codec_8a.query_all(board)

        def wanted(frame: codec_8a.Reply) -> bool:
            return isinstance(frame, codec_8a.AllDoors) and frame.board == board

        exchanges: list[_Exchange] = []
        for _ in range(attempts):
            exchange = self._exchange(request, wanted)
            exchanges.append(exchange)
            if exchange.replies:
                break
        return exchanges

    def _apply_observations(self) -> list[DoorChange]:
        changes: list[DoorChange] = []
        observations, self._observations = self._observations, []
        for observation, at in observations:
            if isinstance(observation, codec_8a.Report):
                lock = self._lock_number(observation.board, observation.lock)
                if lock is not None:
                    state = DoorState.OPEN if observation.door_open else DoorState.CLOSED
                    self._set_state(lock, state, at, changes)
            elif isinstance(observation, codec_8a.AllDoors):
                self._board_back(observation.board)
                for lock, channel in self._locks_of(observation.board):
                    state = DoorState.OPEN if observation.is_open(channel) else DoorState.CLOSED
                    self._set_state(lock, state, at, changes)
            else:
                self._board_lost(observation.board, observation.garbled)
                for lock, _ in self._locks_of(observation.board):
                    self._set_state(lock, DoorState.UNKNOWN, at, changes)
        return changes

    def _set_state(self, lock: int, state: DoorState, at: float, out: list[DoorChange]) -> None:
        if self._states[lock] is state:
            return
        previous, self._states[lock] = self._states[lock], state
        out.append(DoorChange(lock, state, at))
        # Readings after start or after an outage would be a line per door: debug only.
        level = logging.DEBUG if DoorState.UNKNOWN in (previous, state) else logging.INFO
        log.log(level, "door %d is %s", lock, state)

    def _board_lost(self, board: int, garbled: bool) -> None:
        if board not in self._offline:
            self._offline[board] = self._offline_message(board, garbled)
            log.warning("%s; its doors are UNKNOWN until it answers", self._offline[board])

    def _board_back(self, board: int) -> None:
        if board in self._offline:
            del self._offline[board]
            log.info("lock board %d on %s answers again", board, self._section.port)

    # -- the wire --------------------------------------------------------------------------------
    def _exchange(self, request: bytes, wanted: Callable[[codec_8a.Reply], bool]) -> _Exchange:
        """Send ``request``; collect the answer, then keep listening for a quiet window so a second
        board answering on the same address shows up."""
        self._drain()
        self._write(request)
        exchange = _Exchange()
        deadline = time.monotonic() + self._timeout_s
        while not exchange.replies and time.monotonic() < deadline:
            self._collect(exchange, wanted, self._read())
        if exchange.replies:
            self._listen_after(exchange, wanted)
        leftover = self._reader.flush()
        if leftover is not None:
            self._noise(leftover)
            exchange.unexpected()
        return exchange

    def _listen_after(self, exchange: _Exchange, wanted: Callable[[codec_8a.Reply], bool]) -> None:
        quiet_until = time.monotonic() + self._quiet_s
        give_up = time.monotonic() + QUIET_MAX_S
        while (now := time.monotonic()) < quiet_until and now < give_up:
            data = self._read()
            if data:
                quiet_until = time.monotonic() + self._quiet_s
                self._collect(exchange, wanted, data)

    def _collect(
        self, exchange: _Exchange, wanted: Callable[[codec_8a.Reply], bool], data: bytes
    ) -> None:
        for item in self._reader.feed(data):
            if isinstance(item, codec_8a.FrameError):
                self._noise(item)
                exchange.unexpected()
            elif isinstance(item, codec_8a.Report):
                self._observations.append((item, self._clock.monotonic()))
            elif wanted(item):
                if exchange.replies:
                    exchange.unexpected()
                else:
                    exchange.replies.append(item)
                    if isinstance(item, codec_8a.AllDoors):
                        self._observations.append((item, self._clock.monotonic()))
            else:
                # A late answer to an earlier request that timed out: not this one's business.
                log.debug("lock bus: ignored a stray frame %s", item)

    def _drain(self) -> None:
        """Take in what arrived between requests (reports, noise) so it cannot be mistaken for
        the next answer; a frame half-received is given a few byte-times to complete."""
        exchange = _Exchange()
        data = self._read(block=False)
        if data or self._reader.pending:
            self._collect(exchange, _nothing_wanted, data)
            self._listen_after(exchange, _nothing_wanted)
        leftover = self._reader.flush()
        if leftover is not None:
            self._noise(leftover)

    def _read(self, block: bool = True) -> bytes:
        try:
            waiting = self._port.in_waiting
            if not waiting and not block:
                return b""
            return bytes(self._port.read(waiting or 1))
        except (serial.SerialException, OSError) as err:
            raise self._port_lost(err) from err

    def _write(self, request: bytes) -> None:
        try:
            self._port.write(request)
            self._port.flush()
        except (serial.SerialException, OSError) as err:
            raise self._port_lost(err) from err

    def _port_lost(self, err: Exception) -> LockPortUnavailableError:
        return LockPortUnavailableError(
            f"the lock bus port {self._section.port} (config key locks.port) failed: {err}; "
            "check the USB-RS485 adapter, then restart the locker daemon"
        )

    def _noise(self, error: codec_8a.FrameError) -> None:
        self._noise_bytes += len(error.data)
        log.debug("lock bus noise: %s", error)

    # -- helpers ---------------------------------------------------------------------------------
    def _note_duplicate(self, board: int) -> None:
        if board not in self._duplicates:
            self._duplicates[board] = self._duplicate_message(board)
            log.error("%s", self._duplicates[board])

    def _duplicate_message(self, board: int) -> str:
        return (
            f"two lock boards answer on RS485 address {board} (port {self._section.port}): a "
            f"second reply or a collision followed the request; set the boards' address switches "
            f"apart (each board a different address, listed in locks.boards), then restart"
        )

    def _offline_message(self, board: int, garbled: bool = False) -> str:
        if garbled:
            return (
                f"lock board {board} on {self._section.port} answers only with garbled bytes: "
                f"two boards set to address {board} collide, or the RS485 wiring is faulty "
                f"(A/B swapped, missing 120 ohm termination)"
            )
        return (
            f"lock board {board} on {self._section.port} does not answer: check its power, its "
            f"address switches (set to {board}) and the RS485 cable"
        )

    def _first_lock(self, board: int) -> int:
        """The lock number of ``board``'s channel 1 (the inverse of :meth:`address_of`)."""
        return self._boards.index(board) * self._per_board + 1

    def _locks_of(self, board: int) -> list[tuple[int, int]]:
        first = self._first_lock(board)
        return [(first + i, i + 1) for i in range(self._per_board)]

    def _lock_number(self, board: int, channel: int) -> int | None:
        if board not in self._boards or channel > self._per_board:
            log.warning(
                "lock bus: report for board %d channel %d, which locks.boards / "
                "locks.locks_per_board do not describe; ignored",
                board,
                channel,
            )
            return None
        return self._first_lock(board) + channel - 1

    def _check_open(self) -> None:
        if self._closed:
            raise LockClosedError(
                f"the RS485 lock controller on {self._section.port} is closed; build a new one"
            )


def _nothing_wanted(frame: codec_8a.Reply) -> bool:
    return False
