"""Pure codec of the "8A" family of RS485 lock-control boards (HARDWARE.md section 6): bytes in,
typed frames out, and back. No I/O: ``device/locks/rs485.py`` and the emulator
``hardware_sim/lockboard.py`` both speak through this module.

The line is 9600 8N1; every frame ends with the XOR of all its preceding bytes. Board addresses are
1..254 (the board's address switches), locks (channels) 1..24; lock 0 in a request means "all".

The variant implemented (reply formats vary by firmware; this is the one we support and emulate):

==========  ==========================  ==============================================
request     host sends                  board answers
==========  ==========================  ==============================================
open one    ``8A bb ll 11 cs``          the same 5 bytes (accepted), then pulses lock ll
open all    ``8A bb 00 11 cs``          the same 5 bytes, then pulses every lock
query one   ``80 bb ll 33 cs``          ``80 bb ll ss cs``: ss ``11`` locked (door closed),
                                        ``00`` open
query all   ``80 bb 00 33 cs``          ``80 bb m1 m2 m3 33 cs``: a bit set = door open;
                                        m3 bit0 = lock 1 .. bit7 = lock 8, m2 = locks 9-16,
                                        m1 = locks 17-24
(none)      --                          ``82 bb ll ss cs`` unsolicited, when a door changes
==========  ==========================  ==============================================

Golden examples from HARDWARE.md: open lock 1 on board 1 ``8A 01 01 11 9B``; open all
``8A 01 00 11 9A``; query lock 1 ``80 01 01 33 B3``; query all ``80 01 00 33 B2``.

Both query replies start with ``80`` and differ only in length, which the host knows from what it
asked: :class:`FrameReader` is told which one to expect (``query="all"``, the one the controller
uses, by default). The readers check every field as bytes arrive, so a damaged frame is rejected
as soon as it cannot be a frame any more, and they resynchronise on the next start byte: a glitch
costs the damaged bytes, not the frame after them. One known limit, inherent to an XOR checksum
without other framing: on a board whose address equals a start byte (128, 130, 138), a frame whose
start byte is damaged can take the next frame of the same kind with it (see the tests).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from device.errors import ProtocolError

START_OPEN = 0x8A
START_QUERY = 0x80
START_REPORT = 0x82
OPEN_COMMAND = 0x11
QUERY_COMMAND = 0x33
STATUS_LOCKED = 0x11
STATUS_OPEN = 0x00
MAX_BOARD = 254
MAX_LOCKS = 24
ALL = 0
"""Lock number meaning "every lock of the board" in open and query requests."""

QueryKind = Literal["one", "all"]


# -- frames ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OpenRequest:
    """Host -> board: open ``lock`` (0 = all locks) of ``board``."""

    board: int
    lock: int


@dataclass(frozen=True)
class QueryRequest:
    """Host -> board: report ``lock``'s door (0 = every door, as a bit mask)."""

    board: int
    lock: int


@dataclass(frozen=True)
class OpenReply:
    """Board -> host: the echo of an open request; the board accepted it and pulses the lock."""

    board: int
    lock: int

    @property
    def all_locks(self) -> bool:
        return self.lock == ALL


@dataclass(frozen=True)
class DoorStatus:
    """Board -> host: the answer to a query-one request."""

    board: int
    lock: int
    door_open: bool


@dataclass(frozen=True)
class AllDoors:
    """Board -> host: the answer to a query-all request; bit ``n-1`` of ``open_mask`` set = door
    ``n`` open."""

    board: int
    open_mask: int

    def is_open(self, lock: int) -> bool:
        _check_lock(lock)
        return bool(self.open_mask >> (lock - 1) & 1)

    @property
    def open_locks(self) -> frozenset[int]:
        return frozenset(n for n in range(1, MAX_LOCKS + 1) if self.open_mask >> (n - 1) & 1)


@dataclass(frozen=True)
class Report:
    """Board -> host, unsolicited: ``lock``'s door has just opened or closed."""

    board: int
    lock: int
    door_open: bool


Request = OpenRequest | QueryRequest
Reply = OpenReply | DoorStatus | AllDoors | Report
Frame = Request | Reply


class FrameError(ProtocolError):
    """Bytes on the bus that form no valid frame (noise, a collision, a cut-off frame).

    ``data`` holds the bytes dropped, so a caller can log or count them.
    """

    def __init__(self, data: bytes, reason: str = "form no valid 8A frame") -> None:
        shown = data[:16].hex(" ").upper() + (" ..." if len(data) > 16 else "")
        super().__init__(f"8A bus: {len(data)} byte(s) [{shown}] {reason}")
        self.data = bytes(data)


# -- checks and builders ---------------------------------------------------------------------------
def checksum(data: bytes) -> int:
    """XOR of every byte: what ends each frame."""
    return functools.reduce(operator.xor, data, 0)


def _check_board(board: int) -> None:
    if not isinstance(board, int) or isinstance(board, bool) or not 1 <= board <= MAX_BOARD:
        raise ValueError(f"8A board address must be 1..{MAX_BOARD}, got {board!r}")


def _check_lock(lock: int, *, allow_all: bool = False) -> None:
    low = ALL if allow_all else 1
    if not isinstance(lock, int) or isinstance(lock, bool) or not low <= lock <= MAX_LOCKS:
        raise ValueError(f"8A lock number must be {low}..{MAX_LOCKS}, got {lock!r}")


def _frame(*body: int) -> bytes:
    return bytes(body) + bytes([checksum(bytes(body))])


def open_lock(board: int, lock: int) -> bytes:
    """``8A bb ll 11 cs``: pulse one lock."""
    _check_board(board)
    _check_lock(lock)
    return _frame(START_OPEN, board, lock, OPEN_COMMAND)


def open_all(board: int) -> bytes:
    """``8A bb 00 11 cs``: pulse every lock of the board."""
    _check_board(board)
    return _frame(START_OPEN, board, ALL, OPEN_COMMAND)


def query_lock(board: int, lock: int) -> bytes:
    """``80 bb ll 33 cs``: ask for one door."""
    _check_board(board)
    _check_lock(lock)
    return _frame(START_QUERY, board, lock, QUERY_COMMAND)


def query_all(board: int) -> bytes:
    """``80 bb 00 33 cs``: ask for every door as a bit mask."""
    _check_board(board)
    return _frame(START_QUERY, board, ALL, QUERY_COMMAND)


def open_reply(board: int, lock: int) -> bytes:
    """The board's echo of an open request (lock 0 = open all)."""
    _check_board(board)
    _check_lock(lock, allow_all=True)
    return _frame(START_OPEN, board, lock, OPEN_COMMAND)


def _status(door_open: bool) -> int:
    return STATUS_OPEN if door_open else STATUS_LOCKED


def door_status(board: int, lock: int, door_open: bool) -> bytes:
    """``80 bb ll ss cs``: the answer to a query-one request."""
    _check_board(board)
    _check_lock(lock)
    return _frame(START_QUERY, board, lock, _status(door_open))


def all_doors(board: int, open_locks: Iterable[int]) -> bytes:
    """``80 bb m1 m2 m3 33 cs``: the answer to a query-all request."""
    mask = 0
    for lock in open_locks:
        _check_lock(lock)
        mask |= 1 << (lock - 1)
    return all_doors_mask(board, mask)


def all_doors_mask(board: int, open_mask: int) -> bytes:
    """:func:`all_doors` from a 24-bit mask (bit 0 = lock 1)."""
    _check_board(board)
    if not 0 <= open_mask < 1 << MAX_LOCKS:
        raise ValueError(f"8A door mask must fit in {MAX_LOCKS} bits, got {open_mask:#x}")
    m1, m2, m3 = open_mask.to_bytes(3, "big")
    return _frame(START_QUERY, board, m1, m2, m3, QUERY_COMMAND)


def report(board: int, lock: int, door_open: bool) -> bytes:
    """``82 bb ll ss cs``: a board telling the host, unasked, that a door changed."""
    _check_board(board)
    _check_lock(lock)
    return _frame(START_REPORT, board, lock, _status(door_open))


def encode(frame: Frame) -> bytes:
    """The bytes of any frame object (the inverse of the readers)."""
    match frame:
        case OpenRequest(board, lock):
            return open_all(board) if lock == ALL else open_lock(board, lock)
        case QueryRequest(board, lock):
            return query_all(board) if lock == ALL else query_lock(board, lock)
        case OpenReply(board, lock):
            return open_reply(board, lock)
        case DoorStatus(board, lock, door_open):
            return door_status(board, lock, door_open)
        case AllDoors(board, mask):
            return all_doors_mask(board, mask)
        case Report(board, lock, door_open):
            return report(board, lock, door_open)
    raise TypeError(f"not an 8A frame: {frame!r}")


# -- stream splitting ------------------------------------------------------------------------------
def _is_board(b: int) -> bool:
    return 1 <= b <= MAX_BOARD


def _is_lock(b: int) -> bool:
    return 1 <= b <= MAX_LOCKS


def _is_lock_or_all(b: int) -> bool:
    return b <= MAX_LOCKS


def _is_status(b: int) -> bool:
    return b in (STATUS_LOCKED, STATUS_OPEN)


def _any(_: int) -> bool:
    return True


def _equals(value: int) -> Callable[[int], bool]:
    return functools.partial(operator.eq, value)


_T = TypeVar("_T")


@dataclass(frozen=True)
class _Spec(Generic[_T]):
    """One frame shape: a check for each byte between the start byte and the checksum."""

    fields: tuple[Callable[[int], bool], ...]
    decode: Callable[[bytes], _T]

    @property
    def length(self) -> int:
        return len(self.fields) + 2


def _decode_open_request(f: bytes) -> OpenRequest:
    return OpenRequest(f[1], f[2])


def _decode_query_request(f: bytes) -> QueryRequest:
    return QueryRequest(f[1], f[2])


def _decode_open_reply(f: bytes) -> OpenReply:
    return OpenReply(f[1], f[2])


def _decode_door_status(f: bytes) -> DoorStatus:
    return DoorStatus(f[1], f[2], f[3] == STATUS_OPEN)


def _decode_all_doors(f: bytes) -> AllDoors:
    return AllDoors(f[1], f[2] << 16 | f[3] << 8 | f[4])


def _decode_report(f: bytes) -> Report:
    return Report(f[1], f[2], f[3] == STATUS_OPEN)


_OPEN_FIELDS = (_is_board, _is_lock_or_all, _equals(OPEN_COMMAND))
_REQUEST_SPECS: Mapping[int, _Spec[Request]] = {
    START_OPEN: _Spec(_OPEN_FIELDS, _decode_open_request),
    START_QUERY: _Spec((_is_board, _is_lock_or_all, _equals(QUERY_COMMAND)), _decode_query_request),
}
_OPEN_REPLY: _Spec[Reply] = _Spec(_OPEN_FIELDS, _decode_open_reply)
_REPORT: _Spec[Reply] = _Spec((_is_board, _is_lock, _is_status), _decode_report)
_DOOR_STATUS: _Spec[Reply] = _Spec((_is_board, _is_lock, _is_status), _decode_door_status)
_ALL_DOORS: _Spec[Reply] = _Spec(
    (_is_board, _any, _any, _any, _equals(QUERY_COMMAND)), _decode_all_doors
)


def _reply_specs(query: QueryKind) -> Mapping[int, _Spec[Reply]]:
    if query not in ("one", "all"):
        raise ValueError(f"query must be 'one' or 'all', got {query!r}")
    status = _ALL_DOORS if query == "all" else _DOOR_STATUS
    return {START_OPEN: _OPEN_REPLY, START_QUERY: status, START_REPORT: _REPORT}


class _Splitter(Generic[_T]):
    """Cuts a byte stream into frames of the given shapes; whatever fits none is a FrameError.

    A candidate frame is judged as its bytes arrive: it is dropped (one byte, then a search for the
    next start byte) as soon as one field is impossible or the checksum is wrong, so the result
    does not depend on how the stream was chunked and the buffer never exceeds one frame.
    """

    def __init__(self, specs: Mapping[int, _Spec[_T]]) -> None:
        self._specs = specs
        self._buf = bytearray()
        self._dropped = bytearray()

    @property
    def pending(self) -> int:
        """Bytes of an unfinished frame held back until more arrive."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[_T | FrameError]:
        """Add ``data``; return the frames completed and, in order, an error per garbage run."""
        self._buf.extend(data)
        items: list[_T | FrameError] = []
        while self._buf:
            spec = self._specs.get(self._buf[0])
            if spec is None:
                self._drop(1)
                continue
            verdict = self._judge(spec)
            if verdict is None:
                break
            if not verdict:
                self._drop(1)
                continue
            frame = bytes(self._buf[: spec.length])
            del self._buf[: spec.length]
            self._emit_dropped(items)
            items.append(spec.decode(frame))
        self._emit_dropped(items)
        return items

    def flush(self) -> FrameError | None:
        """Give up on an unfinished frame (the line went quiet): the bytes held become an error."""
        self._dropped.extend(self._buf)
        self._buf.clear()
        error = FrameError(bytes(self._dropped)) if self._dropped else None
        self._dropped.clear()
        return error

    def _judge(self, spec: _Spec[_T]) -> bool | None:
        """True: a whole valid frame is at the front; False: it cannot be one; None: wait."""
        buf = self._buf
        for index in range(1, min(len(buf), spec.length - 1)):
            if not spec.fields[index - 1](buf[index]):
                return False
        if len(buf) < spec.length:
            return None
        return checksum(bytes(buf[: spec.length - 1])) == buf[spec.length - 1]

    def _drop(self, n: int) -> None:
        self._dropped.extend(self._buf[:n])
        del self._buf[:n]
        # Bytes that start no frame can be dropped at once, up to the next start byte.
        skip = next((i for i, b in enumerate(self._buf) if b in self._specs), len(self._buf))
        self._dropped.extend(self._buf[:skip])
        del self._buf[:skip]

    def _emit_dropped(self, items: list[_T | FrameError]) -> None:
        if self._dropped:
            items.append(FrameError(bytes(self._dropped)))
            self._dropped.clear()


class FrameReader(_Splitter[Reply]):
    """What the host reads: :class:`OpenReply`, :class:`DoorStatus` or :class:`AllDoors`, and
    :class:`Report`, from chunks of any size.

    ``query`` says which answer to a ``80`` query is expected ("all": 7-byte :class:`AllDoors`,
    "one": 5-byte :class:`DoorStatus`); set :attr:`query` before asking the other kind.
    Garbage comes back as :class:`FrameError` items rather than raised: the stream keeps going.
    """

    def __init__(self, query: QueryKind = "all") -> None:
        super().__init__(_reply_specs(query))
        self._query: QueryKind = query

    @property
    def query(self) -> QueryKind:
        return self._query

    @query.setter
    def query(self, value: QueryKind) -> None:
        self._specs = _reply_specs(value)
        self._query = value


class RequestReader(_Splitter[Request]):
    """What a board reads: :class:`OpenRequest` and :class:`QueryRequest`, from any chunks."""

    def __init__(self) -> None:
        super().__init__(_REQUEST_SPECS)


def _parse_one(splitter: _Splitter[_T], frame: bytes) -> _T:
    items = splitter.feed(frame)
    if len(items) == 1 and not isinstance(items[0], FrameError) and not splitter.pending:
        return items[0]
    raise FrameError(frame, "are not exactly one valid 8A frame")


def parse_reply(frame: bytes, query: QueryKind = "all") -> Reply:
    """Decode exactly one board -> host frame; raise :class:`FrameError` otherwise."""
    return _parse_one(FrameReader(query), frame)


def parse_request(frame: bytes) -> Request:
    """Decode exactly one host -> board frame; raise :class:`FrameError` otherwise."""
    return _parse_one(RequestReader(), frame)
