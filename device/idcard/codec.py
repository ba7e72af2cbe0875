"""Pure codec of the SAM serial protocol (HARDWARE.md section 1): bytes in, objects out, and back.

Frame: ``AA AA AA 96 69 | LEN_H LEN_L | body | CHK``; LEN (big-endian) counts body + CHK, so a
frame is LEN + 7 bytes; CHK is the XOR of LEN_H .. last body byte. Requests carry
``CMD PARA [data]``, replies ``SW1 SW2 SW3 [data]``. :func:`scan_frame` finds a frame in a byte
stream after garbage and tells "need more bytes" apart from "corrupt"; :func:`parse_read_reply`
turns a read reply into an :class:`~device.idcard.identity.Identity`, :func:`build_read_reply`
does the inverse.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import Literal

from device.errors import ProtocolError
from device.idcard.errors import SW3_FIND_OK, SW3_OK, FrameError, status_error
from device.idcard.identity import LONG_TERM, Identity, parse_yyyymmdd
from device.idcard.nations import gender_code, gender_name, nation_code, nation_name

PREAMBLE = bytes.fromhex("AAAAAA9669")
HEADER_SIZE = len(PREAMBLE) + 2
MIN_LEN = 2
"""Smallest LEN: one body byte plus CHK."""
MAX_LEN = 4096
"""Largest LEN accepted (the biggest real reply, text+photo+fingerprint, has LEN 0x090A = 2314);
a larger value is corruption, and refusing it keeps a decoder from waiting for 64 kB of nothing."""

TEXT_SIZE = 256
PHOTO_SIZE = 1024
FINGERPRINT_SIZE = 1024


class Command(enum.Enum):
    """The requests Linli sends: value is ``(CMD, PARA)``."""

    RESET_SAM = (0x10, 0xFF)
    SAM_STATUS = (0x11, 0xFF)
    SAM_ID = (0x12, 0xFF)
    FIND_CARD = (0x20, 0x01)
    SELECT_CARD = (0x20, 0x02)
    READ_TEXT_PHOTO = (0x30, 0x01)
    READ_TEXT_PHOTO_FINGERPRINT = (0x30, 0x10)

    @property
    def label(self) -> str:
        """``find_card`` style name used in messages and logs."""
        return self.name.lower()

    @property
    def ok_status(self) -> frozenset[int]:
        """SW3 values that mean success for this command (find answers 9F)."""
        if self is Command.FIND_CARD:
            return frozenset({SW3_FIND_OK, SW3_OK})
        return frozenset({SW3_OK})

    @classmethod
    def from_body(cls, body: bytes) -> Command | None:
        """The command a request body carries, None when unknown."""
        if len(body) < 2:
            return None
        for command in cls:
            if command.value == (body[0], body[1]):
                return command
        return None


def checksum(data: bytes) -> int:
    """XOR of every byte (LEN_H .. last body byte)."""
    result = 0
    for byte in data:
        result ^= byte
    return result


def build_frame(body: bytes) -> bytes:
    """Wrap a body in preamble, length and checksum."""
    if not 1 <= len(body) <= MAX_LEN - 1:
        raise ValueError(f"frame body must be 1..{MAX_LEN - 1} bytes, got {len(body)}")
    length = (len(body) + 1).to_bytes(2, "big")
    return PREAMBLE + length + body + bytes([checksum(length + body)])


def build_request(command: Command, data: bytes = b"") -> bytes:
    """The request frame of ``command``, e.g. find card -> ``AA AA AA 96 69 00 03 20 01 22``."""
    cmd, para = command.value
    return build_frame(bytes([cmd, para]) + data)


def build_reply(sw3: int, data: bytes = b"", sw1: int = 0, sw2: int = 0) -> bytes:
    """A reply frame with status ``sw3`` (what the SAM sends; the simulator uses it)."""
    return build_frame(bytes([sw1, sw2, sw3]) + data)


@dataclass(frozen=True)
class Reply:
    """A reply body split into its status words and data."""

    sw1: int
    sw2: int
    sw3: int
    data: bytes


@dataclass(frozen=True)
class FrameScan:
    """What :func:`scan_frame` found in a buffer.

    ``status``: ``frame`` (``body`` is valid, the frame spans ``start:end``); ``incomplete`` (more
    bytes are needed, at least ``needed``; bytes before ``start`` are garbage); ``corrupt`` (a frame
    starting at ``start`` is damaged, ``error`` says how; resume scanning at ``end``). ``skipped``
    counts the garbage bytes before ``start``.
    """

    status: Literal["frame", "incomplete", "corrupt"]
    start: int
    end: int
    needed: int = 0
    body: bytes = b""
    error: FrameError | None = None

    @property
    def skipped(self) -> int:
        return self.start


def _partial_preamble_at_end(buf: bytes) -> int:
    """Length of the longest suffix of ``buf`` that is a proper prefix of the preamble."""
    for size in range(min(len(PREAMBLE) - 1, len(buf)), 0, -1):
        if buf.endswith(PREAMBLE[:size]):
            return size
    return 0


def scan_frame(buf: bytes) -> FrameScan:
    """Find the first frame in ``buf``, skipping garbage before it (never raises)."""
    start = buf.find(PREAMBLE)
    if start < 0:
        keep = _partial_preamble_at_end(buf)
        start = len(buf) - keep
        return FrameScan("incomplete", start, len(buf), needed=HEADER_SIZE - keep)
    if len(buf) - start < HEADER_SIZE:
        return FrameScan("incomplete", start, len(buf), needed=start + HEADER_SIZE - len(buf))
    length = int.from_bytes(buf[start + 5 : start + 7], "big")
    if not MIN_LEN <= length <= MAX_LEN:
        error = FrameError(
            "length", f"frame length field is {length}, outside the valid {MIN_LEN}..{MAX_LEN}"
        )
        return FrameScan("corrupt", start, start + 1, error=error)
    end = start + HEADER_SIZE + length
    if len(buf) < end:
        return FrameScan("incomplete", start, len(buf), needed=end - len(buf))
    covered = buf[start + 5 : end - 1]
    expected, got = checksum(covered), buf[end - 1]
    if expected != got:
        error = FrameError("checksum", f"bad checksum: expected {expected:02X}, got {got:02X}")
        return FrameScan("corrupt", start, start + 1, error=error)
    return FrameScan("frame", start, end, body=bytes(buf[start + HEADER_SIZE : end - 1]))


def parse_frame(data: bytes) -> bytes:
    """The body of ``data``, which must be exactly one valid frame; raise :class:`FrameError`."""
    if len(data) < HEADER_SIZE and PREAMBLE.startswith(data[: len(PREAMBLE)]):
        raise FrameError("truncated", f"truncated frame: {len(data)} bytes, no complete header")
    if not data.startswith(PREAMBLE):
        head = data[: len(PREAMBLE)].hex(" ").upper()
        raise FrameError("preamble", f"bad preamble: {head or '(empty)'}, expected AA AA AA 96 69")
    scan = scan_frame(data)
    if scan.status == "corrupt":
        assert scan.error is not None
        raise scan.error
    length = int.from_bytes(data[5:7], "big")
    if scan.status == "incomplete":
        raise FrameError(
            "truncated",
            f"truncated frame: length field says {length + HEADER_SIZE} bytes, got {len(data)}",
        )
    if scan.end != len(data):
        raise FrameError(
            "length",
            f"length mismatch: length field says {scan.end} bytes, got {len(data)}",
        )
    return scan.body


def parse_reply_body(body: bytes) -> Reply:
    """Split a reply body into SW1 SW2 SW3 and data."""
    if len(body) < 3:
        raise FrameError("length", f"reply body has {len(body)} bytes, expected at least 3 (SW1-3)")
    return Reply(body[0], body[1], body[2], bytes(body[3:]))


def parse_reply(data: bytes) -> Reply:
    """Parse exactly one reply frame."""
    return parse_reply_body(parse_frame(data))


def check_reply(reply: Reply, command: Command) -> Reply:
    """Return ``reply`` if its status means success for ``command``; else raise the typed error."""
    if reply.sw3 not in command.ok_status:
        raise status_error(reply.sw3, command.label)
    return reply


# -- the read reply --------------------------------------------------------------------------------
# (name, byte offset, byte size) in the 256-byte UCS-2 LE text block.
TEXT_FIELDS: tuple[tuple[str, int, int], ...] = (
    ("name", 0, 30),
    ("gender", 30, 2),
    ("nation", 32, 4),
    ("birth", 36, 16),
    ("address", 52, 70),
    ("id_number", 122, 36),
    ("issuer", 158, 30),
    ("valid_from", 188, 16),
    ("valid_to", 204, 16),
    ("reserved", 220, 36),
)


def _decode_field(block: bytes, name: str, offset: int, size: int) -> str:
    try:
        text = block[offset : offset + size].decode("utf-16-le")
    except UnicodeDecodeError as err:
        raise ProtocolError(f"text block: field {name} is not valid UCS-2 ({err.reason})") from err
    return text.rstrip(" \x00")


def _date(fields: dict[str, str], name: str) -> dt.date:
    parsed = parse_yyyymmdd(fields[name])
    if parsed is None:
        size = len(fields[name])
        raise ProtocolError(f"text block: {name} is not a YYYYMMDD date ({size} characters)")
    return parsed


def decode_text_block(
    block: bytes, photo: bytes = b"", fingerprint: bytes | None = None
) -> Identity:
    """Decode the 256-byte text block (fields trimmed of their space padding) into an Identity."""
    if len(block) != TEXT_SIZE:
        raise ProtocolError(f"text block has {len(block)} bytes, expected {TEXT_SIZE}")
    fields = {name: _decode_field(block, name, off, size) for name, off, size in TEXT_FIELDS}
    valid_to = None if fields["valid_to"] == LONG_TERM else _date(fields, "valid_to")
    return Identity(
        name=fields["name"],
        gender=gender_name(fields["gender"]),
        nation=nation_name(fields["nation"]),
        birth=_date(fields, "birth"),
        address=fields["address"],
        id_number=fields["id_number"],
        issuer=fields["issuer"],
        valid_from=_date(fields, "valid_from"),
        valid_to=valid_to,
        photo=photo,
        fingerprint=fingerprint,
    )


def _encode_field(name: str, value: str, size: int) -> bytes:
    raw = value.encode("utf-16-le")
    if len(raw) > size:
        chars = len(raw) // 2
        raise ValueError(f"{name} is {chars} characters, the card holds at most {size // 2}")
    return raw + " ".encode("utf-16-le") * ((size - len(raw)) // 2)


def encode_text_block(identity: Identity) -> bytes:
    """The 256-byte UCS-2 LE text block of ``identity``, each field padded with spaces."""
    values = {
        "name": identity.name,
        "gender": gender_code(identity.gender),
        "nation": nation_code(identity.nation),
        "birth": identity.birth.strftime("%Y%m%d"),
        "address": identity.address,
        "id_number": identity.id_number,
        "issuer": identity.issuer,
        "valid_from": identity.valid_from.strftime("%Y%m%d"),
        "valid_to": LONG_TERM
        if identity.valid_to is None
        else identity.valid_to.strftime("%Y%m%d"),
        "reserved": "",
    }
    block = b"".join(_encode_field(name, values[name], size) for name, _, size in TEXT_FIELDS)
    assert len(block) == TEXT_SIZE
    return block


def _u16(value: int) -> bytes:
    return value.to_bytes(2, "big")


def encode_read_data(identity: Identity, with_fingerprint: bool = False) -> bytes:
    """The data of a read reply (after SW3): lengths, text block, photo [, fingerprint]."""
    text = encode_text_block(identity)
    if with_fingerprint:
        fingerprint = identity.fingerprint or b""
        header = _u16(len(text)) + _u16(len(identity.photo)) + _u16(len(fingerprint))
        return header + text + identity.photo + fingerprint
    return _u16(len(text)) + _u16(len(identity.photo)) + text + identity.photo


def build_read_reply(identity: Identity, with_fingerprint: bool = False) -> bytes:
    """The full success frame answering read text+photo (or +fingerprint) for ``identity``."""
    return build_reply(SW3_OK, encode_read_data(identity, with_fingerprint))


def read_layout(data: bytes) -> tuple[int, ...] | None:
    """Section lengths (text, photo [, fingerprint]) if ``data`` is shaped like read-reply data."""
    if len(data) >= 4:
        text, photo = int.from_bytes(data[0:2], "big"), int.from_bytes(data[2:4], "big")
        if text == TEXT_SIZE and 4 + text + photo == len(data):
            return (text, photo)
    if len(data) >= 6:
        text, photo = int.from_bytes(data[0:2], "big"), int.from_bytes(data[2:4], "big")
        finger = int.from_bytes(data[4:6], "big")
        if text == TEXT_SIZE and 6 + text + photo + finger == len(data):
            return (text, photo, finger)
    return None


def parse_read_data(data: bytes) -> Identity:
    """Decode read-reply data (the bytes after SW3) into an Identity."""
    layout = read_layout(data)
    if layout is None:
        head = data[:6].hex(" ").upper()
        raise ProtocolError(
            f"read reply: length fields ({head}) do not describe a {TEXT_SIZE}-byte text block "
            f"plus photo [and fingerprint] adding up to the {len(data)} data bytes"
        )
    offset = 2 * len(layout)
    text = data[offset : offset + layout[0]]
    offset += layout[0]
    photo = data[offset : offset + layout[1]]
    fingerprint = None
    if len(layout) == 3:
        offset += layout[1]
        fingerprint = data[offset : offset + layout[2]]
    return decode_text_block(text, photo, fingerprint)


def parse_read_reply(frame: bytes) -> Identity:
    """Parse a complete read reply frame; a failure status raises its typed SAM error."""
    reply = parse_reply(frame)
    if reply.sw3 != SW3_OK:
        raise status_error(reply.sw3, Command.READ_TEXT_PHOTO.label)
    return parse_read_data(reply.data)
