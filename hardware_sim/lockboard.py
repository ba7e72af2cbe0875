"""An RS485 bus of "8A" lock-control boards on a pty, for the real pyserial driver to talk to.

One :class:`LockBoardBus` is one serial port with one or more boards on it, each with its own
address and locks. The boards speak the variant described in ``device/locks/codec_8a.py``, time
their own pulses, and each lock has a latch and a kicker spring: a pulse of at least ``release_s``
unlatches it and the spring pops the door open when the pulse ends (unless the lock is jammed); a
door latches again when it is pushed shut. Locks are numbered 1..N across the boards in the order
they were added, ``locks_per_board`` each by default, as the controller numbers them.

The world face shared with the GPIO simulator (``door_is_open``, ``open_door``, ``force_open``,
``close_door``, ``jam``, ``pulses``) lets one contract suite drive both. Bus faults: a mute board,
a second board on the same address (both answer, one after the other or colliding), noise, and
unsolicited reports switched off.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from device.locks import codec_8a
from hardware_sim.lock_physics import LatchedError
from hardware_sim.serial_pty import SerialEmulator

if TYPE_CHECKING:
    from device.config import LocksSection

log = logging.getLogger(__name__)

PULSE_S = 0.2
"""How long a board energises a coil (the boards time it themselves; Open-Locker uses 200 ms)."""
RELEASE_S = 0.05
"""The shortest pulse that pulls a latch back (solenoids need 50-100 ms, HARDWARE.md 6)."""


@dataclass
class _SimLock:
    latched: bool = True
    door_open: bool = False
    jammed: bool = False
    pulses: list[tuple[float, float]] = field(default_factory=list)


@dataclass(eq=False)
class _Board:
    address: int
    first: int
    """The global number of its lock 1."""
    locks: list[_SimLock]
    muted: bool = False
    twin: bool = False
    """A second board set to the same address answers every request too."""
    garbled: bool = False
    """The twin's answer collides with this board's instead of following it."""

    def open_mask(self) -> int:
        return sum(1 << i for i, lock in enumerate(self.locks) if lock.door_open)


class LockBoardBus(SerialEmulator):
    """Emulated "8A" boards behind one pty; ``path`` is what the controller opens.

    ``boards``: addresses added at construction, ``locks_per_board`` locks each. ``pulse_s``: the
    boards' pulse length; ``release_s``: the pulse a latch needs; ``reports``: whether boards send
    ``82`` reports when a door opens or closes.
    """

    def __init__(
        self,
        boards: Iterable[int] = (),
        locks_per_board: int = 24,
        *,
        baudrate: int = 9600,
        link: str | Path | None = None,
        pace: bool = True,
        pulse_s: float = PULSE_S,
        release_s: float = RELEASE_S,
        reports: bool = True,
    ) -> None:
        super().__init__(baudrate, link=link, pace=pace)
        self.locks_per_board = locks_per_board
        self.pulse_s = pulse_s
        self.release_s = release_s
        self.requests: list[codec_8a.Request] = []
        """Every valid request seen on the bus, in order (for any address)."""
        self._reports = reports
        self._boards: dict[int, _Board] = {}
        self._numbering: list[tuple[_Board, int]] = []  # global lock N -> (board, channel)
        self._reader = codec_8a.RequestReader()
        # Held while a request is answered and while a report is sent: a board never reports in
        # the middle of an answer. Re-entrant: a report may follow a world call that holds it.
        self._bus = threading.RLock()
        self._timers: set[threading.Timer] = set()
        self._noise_before_reply = b""
        for address in boards:
            self.add_board(address)

    @classmethod
    def for_section(
        cls,
        section: LocksSection,
        *,
        link: str | Path | None = None,
        pulse_s: float = PULSE_S,
        reports: bool = True,
    ) -> LockBoardBus:
        """A bus with the boards, locks and baud rate a ``[locks]`` section describes."""
        return cls(
            section.boards,
            section.locks_per_board,
            baudrate=section.baudrate,
            link=link,
            pulse_s=pulse_s,
            reports=reports,
        )

    def add_board(self, address: int, locks: int | None = None) -> range:
        """Put a board on the bus; return the global lock numbers it got."""
        count = self.locks_per_board if locks is None else locks
        if not 1 <= address <= codec_8a.MAX_BOARD:
            raise ValueError(f"board address must be 1..{codec_8a.MAX_BOARD}, got {address}")
        if not 1 <= count <= codec_8a.MAX_LOCKS:
            raise ValueError(f"a board has 1..{codec_8a.MAX_LOCKS} locks, got {count}")
        if address in self._boards:
            raise ValueError(f"board {address} is already on the bus; use duplicate() for a twin")
        first = len(self._numbering) + 1
        board = _Board(address, first, [_SimLock() for _ in range(count)])
        with self._bus:
            self._boards[address] = board
            self._numbering.extend((board, channel) for channel in range(1, count + 1))
        return range(first, first + count)

    @property
    def lock_count(self) -> int:
        return len(self._numbering)

    def close(self) -> None:
        with self._bus:
            timers, self._timers = self._timers, set()
        for timer in timers:
            timer.cancel()
        super().close()

    # -- world face (common to the lock simulators) ----------------------------------------------
    def door_is_open(self, lock: int) -> bool:
        """The physical door of ``lock``."""
        with self._bus:
            return self._lock(lock).door_open

    def is_latched(self, lock: int) -> bool:
        with self._bus:
            return self._lock(lock).latched

    def open_door(self, lock: int) -> None:
        """A person pulls the door: raises :class:`LatchedError` while the lock holds it."""
        with self._bus:
            state = self._lock(lock)
            if state.door_open:
                return
            if state.latched:
                raise LatchedError(f"door {lock} is latched: pulse its lock first")
            self._set_door(lock, door_open=True)

    def force_open(self, lock: int) -> None:
        """The door is pried open although latched (vandalism): the sensor sees it open."""
        with self._bus:
            self._set_door(lock, door_open=True)

    def close_door(self, lock: int) -> None:
        """A person pushes the door shut: it latches again."""
        with self._bus:
            self._set_door(lock, door_open=False)

    def jam(self, lock: int, jammed: bool = True) -> None:
        """The lock no longer releases on a pulse (burnt coil, bent bolt)."""
        with self._bus:
            self._lock(lock).jammed = jammed

    def pulses(self, lock: int) -> list[tuple[float, float]]:
        """(energised at, de-energised at) per finished pulse, time.monotonic() seconds."""
        with self._bus:
            return list(self._lock(lock).pulses)

    # -- faults ----------------------------------------------------------------------------------
    def mute(self, address: int, muted: bool = True) -> None:
        """Nothing answers at ``address`` any more (unpowered board, cut cable), nor reports."""
        with self._bus:
            self._board(address).muted = muted

    def duplicate(self, address: int, present: bool = True, *, garbled: bool = False) -> None:
        """A second board left at ``address``: it answers every request to that address too.

        Its answer follows the first one (the host sees two frames) or, with ``garbled``,
        collides with it on the wire (the host sees one mangled frame). The twin's own doors are
        all closed; it pulses its own (unseen) locks.
        """
        with self._bus:
            board = self._board(address)
            board.twin, board.garbled = present, garbled

    def enable_reports(self, enabled: bool = True) -> None:
        """Boards send (or stop sending) ``82`` reports when a door changes."""
        with self._bus:
            self._reports = enabled

    def send_garbage(self, n: int = 16, seed: int = 0, *, before_next_reply: bool = False) -> bytes:
        """Line noise: ``n`` random bytes, now or glued in front of the next answer."""
        data = random.Random(seed).randbytes(n)  # noqa: S311  # noise, not a secret
        with self._bus:
            if before_next_reply:
                self._noise_before_reply += data
            else:
                self.send(data)
        return data

    # -- protocol --------------------------------------------------------------------------------
    def on_bytes(self, data: bytes) -> None:
        for item in self._reader.feed(data):
            if isinstance(item, codec_8a.FrameError):
                log.debug("lock boards ignored noise from the host: %s", item)
                continue  # a real board stays quiet on a frame it cannot check
            self.requests.append(item)
            with self._bus:
                self._answer(item)

    def _answer(self, request: codec_8a.Request) -> None:
        board = self._boards.get(request.board)
        if board is None or board.muted:
            return
        if request.lock > len(board.locks):
            log.debug("board %d has no lock %d: no answer", board.address, request.lock)
            return
        reply, twin_reply = self._replies(board, request)
        if board.twin:
            reply = _collide(reply, twin_reply) if board.garbled else reply + twin_reply
        noise, self._noise_before_reply = self._noise_before_reply, b""
        self.send(noise + reply)
        if isinstance(request, codec_8a.OpenRequest):
            channels = range(1, len(board.locks) + 1) if request.lock == 0 else [request.lock]
            for channel in channels:
                self._start_pulse(board, channel)

    @staticmethod
    def _replies(board: _Board, request: codec_8a.Request) -> tuple[bytes, bytes]:
        """This board's answer and the one a twin (all doors closed) would give."""
        address, channel = board.address, request.lock
        if isinstance(request, codec_8a.OpenRequest):
            echo = codec_8a.open_reply(address, channel)
            return echo, echo
        if channel == codec_8a.ALL:
            mine = codec_8a.all_doors_mask(address, board.open_mask())
            return mine, codec_8a.all_doors_mask(address, 0)
        door_open = board.locks[channel - 1].door_open
        return (
            codec_8a.door_status(address, channel, door_open),
            codec_8a.door_status(address, channel, door_open=False),
        )

    def _start_pulse(self, board: _Board, channel: int) -> None:
        start = time.monotonic()
        timer = threading.Timer(self.pulse_s, self._end_pulse, (board, channel, start))
        timer.daemon = True
        self._timers.add(timer)
        timer.start()

    def _end_pulse(self, board: _Board, channel: int, start: float) -> None:
        end = time.monotonic()
        with self._bus:
            self._timers = {t for t in self._timers if not t.finished.is_set()}
            state = board.locks[channel - 1]
            state.pulses.append((start, end))
            if end - start < self.release_s or state.jammed:
                return
            state.latched = False
            if not state.door_open:
                self._set_door(board.first + channel - 1, door_open=True)

    # -- helpers ---------------------------------------------------------------------------------
    def _set_door(self, lock: int, *, door_open: bool) -> None:
        board, channel = self._where(lock)
        state = board.locks[channel - 1]
        # An open door has nothing to latch into; shutting it lets the latch snap in again.
        state.latched = not door_open
        if state.door_open == door_open:
            return
        state.door_open = door_open
        if self._reports and not board.muted:
            self.send(codec_8a.report(board.address, channel, door_open))

    def _where(self, lock: int) -> tuple[_Board, int]:
        if not isinstance(lock, int) or not 1 <= lock <= len(self._numbering):
            raise ValueError(f"no lock {lock!r} on this bus: locks are 1..{len(self._numbering)}")
        return self._numbering[lock - 1]

    def _lock(self, lock: int) -> _SimLock:
        board, channel = self._where(lock)
        return board.locks[channel - 1]

    def _board(self, address: int) -> _Board:
        try:
            return self._boards[address]
        except KeyError:
            raise ValueError(f"no board {address} on this bus: {sorted(self._boards)}") from None


def _collide(first: bytes, second: bytes) -> bytes:
    """Two boards driving the line at once, the second one byte-time late: with the idle line at
    1s, what the host receives behaves like a bitwise AND of the two (a mangled frame)."""
    a = first + b"\xff" * (len(second) + 1 - len(first))
    b = b"\xff" + second
    return bytes(x & y for x, y in zip(a, b, strict=False))
