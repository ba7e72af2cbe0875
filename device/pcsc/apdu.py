"""ISO 7816-4 short APDUs, pure: build C-APDUs, split R-APDUs, name status words, chain 61xx/6Cxx.

Nothing here talks to a reader: :func:`exchange` takes the transport as a ``transmit`` callable
(bytes in, bytes out), so the same logic runs over pyscard, the simulator's applet or a test table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from device.errors import ProtocolError
from device.pcsc.errors import (
    CardFileNotFoundError,
    CardStatusError,
    ClassNotSupportedError,
    InstructionNotSupportedError,
    SecurityStatusError,
    UnexpectedStatusError,
    WrongLengthError,
    WrongOffsetError,
)

Transmit = Callable[[bytes], bytes]
"""A transport: sends one C-APDU and returns the raw R-APDU (data + SW1 SW2)."""

CLA_ISO = 0x00
INS_SELECT = 0xA4
INS_READ_BINARY = 0xB0
INS_GET_RESPONSE = 0xC0

SW_OK = 0x9000
SW_END_OF_FILE = 0x6282  # warning: end of file reached before Le bytes (data is still valid)

# A well-behaved card needs one 6Cxx re-issue and a few GET RESPONSEs; more means it is looping.
MAX_EXCHANGE_STEPS = 16

_INS_NAMES = {
    INS_SELECT: "SELECT",
    INS_READ_BINARY: "READ BINARY",
    INS_GET_RESPONSE: "GET RESPONSE",
    0xB2: "READ RECORD",
    0x20: "VERIFY",
    0x84: "GET CHALLENGE",
}

# ISO 7816-4 section 5.1.3 meanings, with what a technician can do about them.
_SW_MEANINGS: dict[int, tuple[str, str]] = {
    0x6281: ("part of returned data may be corrupted", ""),
    0x6282: ("end of file reached before reading Le bytes", ""),
    0x6700: ("wrong length", "the command's Lc/Le does not suit this card"),
    0x6881: ("logical channel not supported", ""),
    0x6882: ("secure messaging not supported", ""),
    0x6981: ("command incompatible with file structure", ""),
    0x6982: ("security status not satisfied", "the file needs authentication the kiosk cannot do"),
    0x6983: ("authentication method blocked", ""),
    0x6985: ("conditions of use not satisfied", ""),
    0x6986: ("command not allowed (no current EF)", ""),
    0x6A80: ("incorrect parameters in the data field", ""),
    0x6A81: ("function not supported", ""),
    0x6A82: ("file or application not found", "is this a Linli community/social-security card?"),
    0x6A86: ("incorrect parameters P1-P2", ""),
    0x6A88: ("referenced data not found", ""),
    0x6B00: ("wrong parameters: offset outside the file", ""),
    0x6D00: ("instruction not supported", "the card does not implement this command"),
    0x6E00: ("class not supported", "the card does not accept class byte 00"),
    0x6F00: ("no precise diagnosis", "the card failed internally; try another card"),
}

_SW_CLASSES: dict[int, type[CardStatusError]] = {
    0x6A82: CardFileNotFoundError,
    0x6982: SecurityStatusError,
    0x6B00: WrongOffsetError,
    0x6700: WrongLengthError,
    0x6D00: InstructionNotSupportedError,
    0x6E00: ClassNotSupportedError,
}


@dataclass(frozen=True)
class ResponseApdu:
    """An R-APDU split into its data and status word."""

    data: bytes
    sw1: int
    sw2: int

    @property
    def sw(self) -> int:
        return (self.sw1 << 8) | self.sw2

    def to_bytes(self) -> bytes:
        return self.data + bytes((self.sw1, self.sw2))


def _check_byte(name: str, value: int) -> None:
    if not 0 <= value <= 0xFF:
        raise ValueError(f"{name} must be a byte (0..255), got {value}")


def _encode_le(le: int) -> int:
    """Short Le: 1..256, where 256 is sent as 00."""
    if not 1 <= le <= 256:
        raise ValueError(f"Le must be 1..256 for a short APDU, got {le}")
    return le & 0xFF


def build_select_aid(aid: bytes) -> bytes:
    """SELECT by DF name, first occurrence, return FCI: ``00 A4 04 00 Lc AID 00``."""
    if not 5 <= len(aid) <= 16:
        raise ValueError(f"an AID is 5..16 bytes, got {len(aid)}")
    return bytes((CLA_ISO, INS_SELECT, 0x04, 0x00, len(aid))) + aid + b"\x00"


def build_read_binary(offset: int, le: int) -> bytes:
    """READ BINARY of the current EF: ``00 B0 P1 P2 Le`` with a 15-bit offset in P1-P2."""
    if not 0 <= offset <= 0x7FFF:
        raise ValueError(f"READ BINARY offset must be 0..32767, got {offset}")
    return bytes((CLA_ISO, INS_READ_BINARY, offset >> 8, offset & 0xFF, _encode_le(le)))


def build_get_response(le: int) -> bytes:
    """GET RESPONSE for the bytes a 61xx announced: ``00 C0 00 00 Le``."""
    return bytes((CLA_ISO, INS_GET_RESPONSE, 0x00, 0x00, _encode_le(le)))


def command_name(command: bytes) -> str:
    """A readable name for a C-APDU, for messages: ``SELECT``, ``READ BINARY``, ``INS 84``..."""
    if len(command) < 4:
        return "malformed command"
    return _INS_NAMES.get(command[1], f"INS {command[1]:02X}")


def with_le(command: bytes, le: int) -> bytes:
    """The same short C-APDU with its Le replaced (what a 6Cxx asks for)."""
    if len(command) < 5:
        raise ProtocolError(f"card asked for a new Le but {command_name(command)} has no Le")
    lc = command[4]
    if len(command) == 5 or len(command) == 6 + lc:
        return command[:-1] + bytes((le & 0xFF,))
    raise ProtocolError(f"card asked for a new Le but {command_name(command)} has no Le")


def parse_response(raw: bytes, command: str = "command") -> ResponseApdu:
    """Split an R-APDU; fewer than two bytes is a :class:`ProtocolError` (no status word)."""
    if len(raw) < 2:
        raise ProtocolError(
            f"R-APDU to {command} has {len(raw)} byte(s); at least SW1 SW2 (2 bytes) are required"
        )
    return ResponseApdu(bytes(raw[:-2]), raw[-2], raw[-1])


def describe_sw(sw: int) -> str:  # noqa: PLR0911 - one return per status-word family
    """ISO 7816-4 meaning of a status word, in words."""
    if sw == SW_OK:
        return "success"
    if sw in _SW_MEANINGS:
        return _SW_MEANINGS[sw][0]
    sw1, sw2 = sw >> 8, sw & 0xFF
    if sw1 == 0x61:
        return f"{sw2 or 256} more response bytes available (GET RESPONSE)"
    if sw1 == 0x6C:
        return f"wrong Le; exact length is {sw2 or 256}"
    if sw1 == 0x63 and sw2 & 0xF0 == 0xC0:
        return f"verification failed, {sw2 & 0x0F} tries left"
    if sw1 in (0x62, 0x63):
        return "warning: state of non-volatile memory may have changed"
    if sw1 in (0x64, 0x65, 0x66):
        return "execution error"
    return "unknown status word"


def status_error(sw: int, command: str) -> CardStatusError:
    """The typed error for a failing status word (:class:`UnexpectedStatusError` when unlisted)."""
    meaning, advice = _SW_MEANINGS.get(sw, (describe_sw(sw), ""))
    cls = _SW_CLASSES.get(sw, UnexpectedStatusError)
    return cls(sw, command, meaning, advice)


def check_status(response: ResponseApdu, command: str, accept: tuple[int, ...] = (SW_OK,)) -> bytes:
    """Return the data when the status word is accepted, else raise its typed error."""
    if response.sw not in accept:
        raise status_error(response.sw, command)
    return response.data


def exchange(transmit: Transmit, command: bytes) -> ResponseApdu:
    """Send ``command`` and follow the card's transport-level hints until a final status word.

    ``6Cxx`` (wrong Le, exact length xx) re-issues the same command with Le = xx; ``61xx`` (xx more
    bytes) sends GET RESPONSE and appends its data. A card that keeps asking beyond
    :data:`MAX_EXCHANGE_STEPS` exchanges is a :class:`ProtocolError`. The final status word is
    returned, not checked: use :func:`check_status`.
    """
    name = command_name(command)
    data = b""
    current = command
    for _ in range(MAX_EXCHANGE_STEPS):
        response = parse_response(transmit(current), command_name(current))
        if response.sw1 == 0x6C:
            current = with_le(current, response.sw2)
            continue
        data += response.data
        if response.sw1 == 0x61:
            current = build_get_response(response.sw2 or 256)
            continue
        return ResponseApdu(data, response.sw1, response.sw2)
    raise ProtocolError(
        f"card kept answering 61xx/6Cxx to {name} for {MAX_EXCHANGE_STEPS} exchanges; giving up"
    )
