"""The Linli card profile (docs/pcsc-card-profile.md), pure: the TLV record and the read flow.

A community or social-security card carries an application selected by AID; its current EF holds
one BER-TLV record (tag 70): card number (BCD, Luhn check digit), card kind, issuer code and expiry
date. :func:`read_card` runs SELECT + READ BINARY over any ``transmit`` callable.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from dataclasses import dataclass

from device.errors import ProtocolError
from device.pcsc.apdu import (
    SW_END_OF_FILE,
    SW_OK,
    Transmit,
    build_read_binary,
    build_select_aid,
    check_status,
    exchange,
)
from device.pcsc.errors import WrongOffsetError

DEFAULT_AID = bytes.fromhex("F04C494E4C4901")  # proprietary RID F0 + "LINLI" + application 01

TAG_RECORD = 0x70
TAG_NUMBER = 0x5A
TAG_KIND = 0x80
TAG_ISSUER = 0x81
TAG_EXPIRY = 0x82
TAG_FCI = 0x6F
TAG_DF_NAME = 0x84

NUMBER_DIGITS = (16, 19)
ISSUER_LENGTH = (2, 16)
MAX_RECORD_BYTES = 1024
# READ BINARY chunk when the record length is not known yet; cards answer 6Cxx/6282 when it is more.
DEFAULT_CHUNK = 0x80

_ISSUER = re.compile(r"^[0-9A-Z]+$")


class CardKind(enum.IntEnum):
    """Value of tag 80: which scheme issued the card."""

    COMMUNITY = 0x01
    SOCIAL_SECURITY = 0x02

    @property
    def slug(self) -> str:
        """Stable name for JSON and config: ``community`` / ``social_security``."""
        return self.name.lower()

    @property
    def label(self) -> str:
        return {1: "community card (社区卡)", 2: "social-security card (社保卡)"}[self.value]


def luhn_check_digit(payload: str) -> str:
    """The Luhn (ISO/IEC 7812-1) check digit to append to ``payload`` digits."""
    if not payload.isdigit() or not payload.isascii():
        raise ValueError("Luhn payload must be ASCII digits")
    total = 0
    for i, ch in enumerate(reversed(payload)):
        d = int(ch)
        if i % 2 == 0:  # doubled: these sit left of the check digit at odd distance
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str((10 - total % 10) % 10)


def luhn_valid(number: str) -> bool:
    """True when the last digit of ``number`` is the Luhn check digit of the others."""
    if len(number) < 2 or not number.isdigit() or not number.isascii():
        return False
    return luhn_check_digit(number[:-1]) == number[-1]


def mask_card_number(number: str) -> str:
    """Keep the last four digits only: ``6210985200001234567`` -> ``***************4567``."""
    if len(number) <= 4:
        return "*" * len(number)
    return "*" * (len(number) - 4) + number[-4:]


def number_problem(number: str) -> str | None:
    """Why ``number`` is not a valid card number, or None. Never echoes the number itself."""
    low, high = NUMBER_DIGITS
    if not number.isascii() or not number.isdigit():
        return "card number must be digits only"
    if not low <= len(number) <= high:
        return f"card number has {len(number)} digits; {low}..{high} expected"
    if not luhn_valid(number):
        return "card number fails its Luhn check digit"
    return None


def issuer_problem(issuer: str) -> str | None:
    """Why ``issuer`` is not a valid issuer code, or None."""
    low, high = ISSUER_LENGTH
    if not low <= len(issuer) <= high or not _ISSUER.fullmatch(issuer):
        return f"issuer code must be {low}..{high} characters 0-9/A-Z, got {issuer!r}"
    return None


@dataclass(frozen=True, repr=False)
class CardRecord:
    """What the card's record says. ``repr``/``str`` mask the card number (personal data)."""

    number: str
    kind: CardKind
    issuer: str
    expiry: dt.date

    def __post_init__(self) -> None:
        problem = number_problem(self.number) or issuer_problem(self.issuer)
        if problem:
            raise ValueError(problem)
        if not 2000 <= self.expiry.year <= 2099:
            raise ValueError(f"expiry year must be 2000..2099, got {self.expiry.year}")

    @property
    def masked_number(self) -> str:
        return mask_card_number(self.number)

    def is_expired(self, today: dt.date) -> bool:
        """A card is valid through its expiry date."""
        return today > self.expiry

    def as_dict(self, today: dt.date | None = None, mask: bool = True) -> dict[str, object]:
        """JSON-ready fields; the number is masked unless ``mask=False``."""
        out: dict[str, object] = {
            "number": self.masked_number if mask else self.number,
            "kind": self.kind.slug,
            "issuer": self.issuer,
            "expiry": self.expiry.isoformat(),
        }
        if today is not None:
            out["expired"] = self.is_expired(today)
        return out

    def __repr__(self) -> str:
        return (
            f"CardRecord(number={self.masked_number!r}, kind={self.kind.slug}, "
            f"issuer={self.issuer!r}, expiry={self.expiry.isoformat()})"
        )

    __str__ = __repr__


# -- BER-TLV (one level, short and 81/82 long-form lengths) ----------------------------------------


def _read_tag(data: bytes, pos: int) -> tuple[int, int]:
    first = data[pos]
    if first in (0x00, 0xFF):
        raise ProtocolError(f"TLV: invalid tag byte {first:02X} at offset {pos}")
    if first & 0x1F != 0x1F:
        return first, pos + 1
    if pos + 1 >= len(data):
        raise ProtocolError(f"TLV: two-byte tag {first:02X}.. cut off at offset {pos}")
    second = data[pos + 1]
    if second & 0x80:
        raise ProtocolError(f"TLV: tags longer than two bytes are not used (offset {pos})")
    return (first << 8) | second, pos + 2


def _read_length(data: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(data):
        raise ProtocolError(f"TLV: length missing at offset {pos}")
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    n = first & 0x7F
    if n == 0:
        raise ProtocolError(f"TLV: indefinite length (80) at offset {pos} is not allowed")
    if n > 2:
        raise ProtocolError(f"TLV: {n}-byte length at offset {pos}; at most 2 are allowed")
    if pos + 1 + n > len(data):
        raise ProtocolError(f"TLV: long-form length cut off at offset {pos}")
    return int.from_bytes(data[pos + 1 : pos + 1 + n], "big"), pos + 1 + n


def parse_tlv(data: bytes) -> list[tuple[int, bytes]]:
    """Split ``data`` into (tag, value) pairs, one level deep; faults raise ProtocolError."""
    items: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        tag, pos = _read_tag(data, pos)
        length, pos = _read_length(data, pos)
        if pos + length > len(data):
            raise ProtocolError(
                f"TLV: tag {tag:02X} says {length} bytes but only {len(data) - pos} remain"
            )
        items.append((tag, bytes(data[pos : pos + length])))
        pos += length
    return items


def encode_tlv(tag: int, value: bytes) -> bytes:
    """One TLV with the shortest length form."""
    head = tag.to_bytes(2 if tag > 0xFF else 1, "big")
    n = len(value)
    if n < 0x80:
        length = bytes((n,))
    elif n <= 0xFF:
        length = bytes((0x81, n))
    elif n <= 0xFFFF:
        length = b"\x82" + n.to_bytes(2, "big")
    else:
        raise ValueError(f"TLV value of {n} bytes is too long")
    return head + length + value


def record_length(prefix: bytes) -> int | None:
    """Total length of the tag-70 record from its first bytes; None while its header is cut."""
    if not prefix:
        return None
    if prefix[0] != TAG_RECORD:
        raise ProtocolError(f"record must start with tag 70, found {prefix[0]:02X}")
    if len(prefix) < 2:
        return None
    n = prefix[1] & 0x7F if prefix[1] & 0x80 else 0
    if len(prefix) < 2 + n:
        return None
    length, pos = _read_length(prefix, 1)
    total = pos + length
    if total > MAX_RECORD_BYTES:
        raise ProtocolError(f"record claims {total} bytes; at most {MAX_RECORD_BYTES} are allowed")
    return total


# -- field codecs --------------------------------------------------------------------------------


def _bcd_digits(value: bytes, what: str) -> str:
    digits = []
    for byte in value:
        digits += [byte >> 4, byte & 0x0F]
    if digits and digits[-1] == 0x0F:
        digits.pop()
    if any(d > 9 for d in digits):
        raise ProtocolError(f"{what}: not packed BCD ({value.hex().upper()})")
    return "".join(str(d) for d in digits)


def _to_bcd(digits: str) -> bytes:
    if len(digits) % 2:
        digits += "F"
    return bytes.fromhex(digits)


def _decode_number(value: bytes) -> str:
    number = _bcd_digits(value, "card number (tag 5A)")
    problem = number_problem(number)
    if problem:
        raise ProtocolError(f"tag 5A: {problem}")
    return number


def _decode_kind(value: bytes) -> CardKind:
    if len(value) != 1:
        raise ProtocolError(f"tag 80 (card kind) must be 1 byte, got {len(value)}")
    try:
        return CardKind(value[0])
    except ValueError:
        raise ProtocolError(
            f"tag 80: unknown card kind {value[0]:02X} (01 or 02 expected)"
        ) from None


def _decode_issuer(value: bytes) -> str:
    try:
        issuer = value.decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError("tag 81 (issuer code) is not ASCII") from None
    problem = issuer_problem(issuer)
    if problem:
        raise ProtocolError(f"tag 81: {problem}")
    return issuer


def _decode_expiry(value: bytes) -> dt.date:
    if len(value) != 4:
        raise ProtocolError(f"tag 82 (expiry) must be 4 BCD bytes YYYYMMDD, got {len(value)}")
    text = _bcd_digits(value, "expiry (tag 82)")
    if len(text) != 8:
        raise ProtocolError(f"tag 82: expiry must be 8 digits YYYYMMDD, got {value.hex().upper()}")
    try:
        date = dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        raise ProtocolError(f"tag 82: {text} is not a calendar date") from None
    if not 2000 <= date.year <= 2099:
        raise ProtocolError(f"tag 82: expiry year {date.year} outside 2000..2099")
    return date


_FIELDS = {TAG_NUMBER: "card number", TAG_KIND: "kind", TAG_ISSUER: "issuer", TAG_EXPIRY: "expiry"}


def encode_record(record: CardRecord) -> bytes:
    """The EF content for ``record``: ``70 L (5A..)(80..)(81..)(82..)``."""
    body = (
        encode_tlv(TAG_NUMBER, _to_bcd(record.number))
        + encode_tlv(TAG_KIND, bytes((record.kind.value,)))
        + encode_tlv(TAG_ISSUER, record.issuer.encode("ascii"))
        + encode_tlv(TAG_EXPIRY, bytes.fromhex(record.expiry.strftime("%Y%m%d")))
    )
    return encode_tlv(TAG_RECORD, body)


def decode_record(data: bytes) -> CardRecord:
    """Parse a tag-70 record; unknown inner tags are skipped (newer cards), other faults raise."""
    outer = parse_tlv(data)
    if not outer or outer[0][0] != TAG_RECORD:
        first = f"{outer[0][0]:02X}" if outer else "nothing"
        raise ProtocolError(f"record must be one tag-70 template, found {first}")
    if len(outer) > 1:
        raise ProtocolError(f"{len(outer) - 1} unexpected TLV(s) after the tag-70 record")
    fields: dict[int, bytes] = {}
    for tag, value in parse_tlv(outer[0][1]):
        if tag in fields:
            raise ProtocolError(f"record has tag {tag:02X} ({_FIELDS[tag]}) twice")
        if tag in _FIELDS:
            fields[tag] = value
    missing = [f"{tag:02X} ({name})" for tag, name in _FIELDS.items() if tag not in fields]
    if missing:
        raise ProtocolError(f"record lacks required tag(s) {', '.join(missing)}")
    return CardRecord(
        number=_decode_number(fields[TAG_NUMBER]),
        kind=_decode_kind(fields[TAG_KIND]),
        issuer=_decode_issuer(fields[TAG_ISSUER]),
        expiry=_decode_expiry(fields[TAG_EXPIRY]),
    )


def parse_aid(text: str) -> bytes:
    """An AID written in hex (config ``pcsc.aid``), 5..16 bytes."""
    try:
        aid = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"AID {text!r} is not hex") from None
    if not 5 <= len(aid) <= 16:
        raise ValueError(f"AID must be 5..16 bytes, got {len(aid)}")
    return aid


def fci_df_name(fci: bytes) -> bytes | None:
    """The DF name (tag 84) from a SELECT answer's FCI template (tag 6F), None when absent."""
    outer = parse_tlv(fci)
    if len(outer) != 1 or outer[0][0] != TAG_FCI:
        raise ProtocolError("SELECT answer is not one FCI template (tag 6F)")
    names = [value for tag, value in parse_tlv(outer[0][1]) if tag == TAG_DF_NAME]
    return names[0] if names else None


# -- the read flow over any transport --------------------------------------------------------------


def select_application(transmit: Transmit, aid: bytes) -> None:
    """SELECT the application; the FCI, when the card sends one, must name the selected AID."""
    fci = check_status(exchange(transmit, build_select_aid(aid)), "SELECT")
    if fci:
        name = fci_df_name(fci)
        if name is not None and not name.startswith(aid):
            raise ProtocolError(f"card selected application {name.hex().upper()}, not {aid.hex()}")


def read_record_bytes(transmit: Transmit, chunk: int = DEFAULT_CHUNK) -> bytes:
    """READ BINARY the tag-70 record of the current EF, chunk by chunk; return exactly its bytes."""
    if not 1 <= chunk <= 256:
        raise ValueError(f"chunk must be 1..256, got {chunk}")
    data = b""
    total: int | None = None
    while total is None or len(data) < total:
        want = chunk if total is None else min(chunk, total - len(data))
        response = exchange(transmit, build_read_binary(len(data), want))
        try:
            piece = check_status(response, "READ BINARY", accept=(SW_OK, SW_END_OF_FILE))
        except WrongOffsetError as err:
            raise ProtocolError(
                f"record says {total} bytes but the card's file ends at offset {len(data)}"
            ) from err
        if not piece:
            raise ProtocolError(f"READ BINARY at offset {len(data)} returned no data")
        data += piece
        total = record_length(data)
        if response.sw == SW_END_OF_FILE and (total is None or len(data) < total):
            raise ProtocolError(f"card's file ends at offset {len(data)}, inside the record")
        if len(data) > MAX_RECORD_BYTES:
            raise ProtocolError(f"record is longer than {MAX_RECORD_BYTES} bytes")
    return data[:total]


def read_card(
    transmit: Transmit, aid: bytes = DEFAULT_AID, chunk: int = DEFAULT_CHUNK
) -> CardRecord:
    """The whole profile: SELECT the application, read its record, decode it."""
    select_application(transmit, aid)
    return decode_record(read_record_bytes(transmit, chunk))
