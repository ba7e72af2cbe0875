"""Pure codec of the GM65-family serial QR modules (HARDWARE.md section 5): bytes in, objects out.

Host -> module command frames are ``7E 00 <type> <len> <addrH addrL> <data> <CRC-16/XMODEM>``, the
CRC covering type..data; ``AB CD`` in place of the CRC tells the module to skip the check. The
module answers ``02 00 <status> <len> <data> <CRC>`` and sends every decoded code as a text line
ended by CR (or CRLF). :class:`Gm65Stream` splits the incoming byte stream into lines and response
frames, whatever the chunking.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass
from enum import IntEnum

from device.errors import ProtocolError
from device.scanner.events import ScanRejectedError

COMMAND_HEAD = b"\x7e\x00"
RESPONSE_HEAD = b"\x02\x00"
NO_CRC = b"\xab\xcd"
CR, LF = 0x0D, 0x0A
# Zone-bit address of the scan trigger ("command mode" register) and the value that starts a scan.
TRIGGER_ADDRESS = 0x0002
TRIGGER_VALUE = 0x01


class CommandType(IntEnum):
    READ = 0x07
    WRITE = 0x08
    SAVE = 0x09


def crc16_xmodem(data: bytes) -> int:
    """CRC-16/XMODEM (poly 0x1021, init 0): what binascii's ``crc_hqx(data, 0)`` computes."""
    return binascii.crc_hqx(data, 0)


def build_command(kind: CommandType, address: int, data: bytes, use_crc: bool = True) -> bytes:
    """A command frame; ``use_crc=False`` puts the module's ``AB CD`` "no check" marker instead."""
    if not 0 <= address <= 0xFFFF:
        raise ValueError(f"GM65 address {address:#x} out of range 0..0xFFFF")
    if not 1 <= len(data) <= 0xFF:
        raise ValueError(f"GM65 command data must be 1..255 bytes, got {len(data)}")
    body = bytes([kind, len(data)]) + address.to_bytes(2, "big") + data
    check = crc16_xmodem(body).to_bytes(2, "big") if use_crc else NO_CRC
    return COMMAND_HEAD + body + check


def trigger_command() -> bytes:
    """``7E 00 08 01 00 02 01 AB CD``: start one scan (command-triggered mode)."""
    return build_command(CommandType.WRITE, TRIGGER_ADDRESS, bytes([TRIGGER_VALUE]), use_crc=False)


def write_command(address: int, data: bytes) -> bytes:
    """Write setting bytes at ``address`` (volatile until :func:`save_command`)."""
    return build_command(CommandType.WRITE, address, data)


def read_command(address: int, count: int = 1) -> bytes:
    """Read ``count`` setting bytes from ``address``."""
    return build_command(CommandType.READ, address, bytes([count]))


def save_command() -> bytes:
    """``7E 00 09 01 00 00 00 DE C8``: save the settings to the module's flash."""
    return build_command(CommandType.SAVE, 0x0000, b"\x00")


@dataclass(frozen=True)
class CommandFrame:
    """A decoded host -> module command (what the emulator receives)."""

    kind: CommandType
    address: int
    data: bytes
    checked: bool


def parse_command(frame: bytes) -> CommandFrame:
    """Decode one complete command frame; raise :class:`ProtocolError` on anything malformed."""
    if len(frame) < 9 or frame[:2] != COMMAND_HEAD:
        raise ProtocolError(
            f"GM65 command: expected 7E 00 and >= 9 bytes, got {frame[:9].hex(' ')}"
        )
    try:
        kind = CommandType(frame[2])
    except ValueError as err:
        raise ProtocolError(f"GM65 command: unknown type {frame[2]:#04x}") from err
    length = frame[3]
    if len(frame) != 8 + length or length == 0:
        raise ProtocolError(f"GM65 command: length byte {length} but frame has {len(frame)} bytes")
    body, check = frame[2:-2], frame[-2:]
    checked = check != NO_CRC
    if checked and int.from_bytes(check, "big") != crc16_xmodem(body):
        raise ProtocolError(f"GM65 command: bad CRC {check.hex()} (want {crc16_xmodem(body):04x})")
    return CommandFrame(kind, int.from_bytes(frame[4:6], "big"), bytes(frame[6:-2]), checked)


def command_length(prefix: bytes) -> int | None:
    """Total length of the command frame starting ``prefix`` (>= 4 bytes known), else None."""
    return 8 + prefix[3] if len(prefix) >= 4 else None


@dataclass(frozen=True)
class Response:
    """A module -> host answer: ``status`` 0 is success; ``data`` is the value read or written."""

    status: int
    data: bytes

    @property
    def ok(self) -> bool:
        return self.status == 0


def build_response(data: bytes = b"\x00", status: int = 0) -> bytes:
    """An answer frame; the default is the write ACK ``02 00 00 01 00 33 31``."""
    body = bytes([status, len(data)]) + data
    return RESPONSE_HEAD + body + crc16_xmodem(body).to_bytes(2, "big")


ACK = build_response()


def parse_response(frame: bytes) -> Response:
    """Decode one complete answer frame; raise :class:`ProtocolError` on anything malformed."""
    if len(frame) < 6 or frame[:2] != RESPONSE_HEAD:
        raise ProtocolError(f"GM65 answer: expected 02 00 and >= 6 bytes, got {frame[:6].hex(' ')}")
    length = frame[3]
    if len(frame) != 6 + length:
        raise ProtocolError(f"GM65 answer: length byte {length} but frame has {len(frame)} bytes")
    body, check = frame[2:-2], frame[-2:]
    if int.from_bytes(check, "big") != crc16_xmodem(body):
        raise ProtocolError(f"GM65 answer: bad CRC {check.hex()} (want {crc16_xmodem(body):04x})")
    return Response(status=frame[2], data=bytes(frame[4:-2]))


@dataclass(frozen=True)
class Line:
    """One scanned line as sent by the module, framing removed (not yet validated)."""

    data: bytes


StreamItem = Line | Response | ProtocolError


class Gm65Stream:
    """Incremental splitter of the module's output into lines, answers and errors.

    Lines end with CR, LF or CRLF (a CRLF split across two chunks counts once). An answer frame is
    recognised where a line would start (``02`` is STX, never part of a valid scan). A line longer
    than ``max_line`` bytes is reported once as a ``too_long`` :class:`ScanRejectedError` and
    discarded up to its terminator, so the buffer never grows past ``max_line``. Errors are returned
    as items, not raised: a stream keeps going after garbage.
    """

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        self._after_cr = False
        self._discarding = 0  # bytes dropped so far of an over-long line, 0 when not discarding

    @property
    def pending(self) -> int:
        """Bytes of an unfinished line or frame held back (for stall detection)."""
        return len(self._buf) + self._discarding

    def feed(self, data: bytes) -> list[StreamItem]:
        items: list[StreamItem] = []
        for byte in data:
            item = self._push(byte)
            if item is not None:
                items.append(item)
        return items

    def flush(self) -> ProtocolError | None:
        """Drop an unfinished line (the module went quiet mid-line); say what was dropped."""
        dropped = self.pending
        self._buf.clear()
        self._discarding = 0
        self._after_cr = False
        return ScanRejectedError("stalled", dropped, "line not terminated") if dropped else None

    def _push(self, byte: int) -> StreamItem | None:
        after_cr, self._after_cr = self._after_cr, False
        if self._discarding:
            if byte in (CR, LF):
                self._discarding = 0
                self._after_cr = byte == CR
            else:
                self._discarding += 1
            return None
        if self._frame_continues(byte):
            return self._push_frame(byte)
        if byte in (CR, LF):
            if byte == LF and after_cr:
                return None  # the LF of a CRLF
            self._after_cr = byte == CR
            line = bytes(self._buf)
            self._buf.clear()
            return Line(line) if line else None
        self._buf.append(byte)
        if len(self._buf) > self.max_line:
            self._discarding = len(self._buf)
            self._buf.clear()
            return ScanRejectedError("too_long", self.max_line + 1, "line not terminated in time")
        return None

    def _frame_continues(self, byte: int) -> bool:
        buf = self._buf
        if not buf or buf[0] != RESPONSE_HEAD[0]:
            return False
        # STX followed by anything but 00 is an ordinary (invalid) line after all.
        return byte == RESPONSE_HEAD[1] if len(buf) == 1 else buf[1] == RESPONSE_HEAD[1]

    def _push_frame(self, byte: int) -> StreamItem | None:
        buf = self._buf
        buf.append(byte)
        if len(buf) < 4 or len(buf) < 6 + buf[3]:
            return None
        frame = bytes(buf)
        buf.clear()
        try:
            return parse_response(frame)
        except ProtocolError as err:
            return err
