"""Card profile codec: record golden bytes, field rules, fuzzed/mutated TLV, and the read flow.

The read flow runs against the simulator's pure applet (the same code the vpcd card answers with),
so no socket or pcscd is involved here.
"""

from __future__ import annotations

import contextlib
import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.errors import ProtocolError
from device.pcsc.errors import CardFileNotFoundError
from device.pcsc.profile import (
    DEFAULT_AID,
    CardKind,
    CardRecord,
    decode_record,
    encode_record,
    encode_tlv,
    luhn_check_digit,
    luhn_valid,
    mask_card_number,
    parse_aid,
    parse_tlv,
    read_card,
    read_record_bytes,
    record_length,
    select_application,
)
from hardware_sim.vpcd import CardApplet

NUMBER = "6210985200001234560"  # 18 digits + Luhn check digit 0
GOLDEN = (
    "70 1D 5A 0A 62 10 98 52 00 00 12 34 56 0F 80 01 02 81 06 33 31 30 31 31 35 82 04 20 30 12 31"
)


def sample(number: str = NUMBER) -> CardRecord:
    return CardRecord(number, CardKind.SOCIAL_SECURITY, "310115", dt.date(2030, 12, 31))


def hexed(data: bytes) -> str:
    return data.hex(" ").upper()


def test_luhn_known_vectors() -> None:
    assert luhn_valid("79927398713") and luhn_valid("4539578763621486")
    assert not luhn_valid("79927398710")
    assert luhn_check_digit("7992739871") == "3"
    assert luhn_valid(NUMBER)


def test_record_encodes_to_the_documented_golden_bytes() -> None:
    assert hexed(encode_record(sample())) == GOLDEN
    assert decode_record(bytes.fromhex(GOLDEN)) == sample()


def test_even_length_number_has_no_padding_nibble() -> None:
    number = "621098520000123" + luhn_check_digit("621098520000123")
    encoded = encode_record(sample(number))
    assert encoded[2:4] == b"\x5a\x08"
    assert decode_record(encoded).number == number


def test_card_number_is_masked_in_repr_str_and_default_dict() -> None:
    record = sample()
    for text in (repr(record), str(record), str(record.as_dict())):
        assert NUMBER not in text
        assert "4560" in text
    assert mask_card_number(NUMBER) == "*" * 15 + "4560"
    assert record.as_dict(mask=False)["number"] == NUMBER


def test_expiry_is_inclusive() -> None:
    record = sample()
    assert not record.is_expired(dt.date(2030, 12, 31))
    assert record.is_expired(dt.date(2031, 1, 1))
    assert record.as_dict(today=dt.date(2031, 1, 1))["expired"] is True


@pytest.mark.parametrize(
    ("number", "issuer", "message"),
    [
        ("6210985200001234561", "310115", "Luhn"),
        ("62109852000012", "310115", "14 digits"),
        ("62109852000012345x", "310115", "digits only"),
        (NUMBER, "sh", "issuer code"),
    ],
)
def test_invalid_records_cannot_be_built(number: str, issuer: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CardRecord(number, CardKind.COMMUNITY, issuer, dt.date(2030, 1, 1))


def _record_with(**fields: bytes) -> bytes:
    tags = {"number": 0x5A, "kind": 0x80, "issuer": 0x81, "expiry": 0x82, "extra": 0x9F}
    body = b"".join(encode_tlv(tags[name], value) for name, value in fields.items())
    return encode_tlv(0x70, body)


GOOD = {
    "number": bytes.fromhex("6210985200001234560F"),
    "kind": b"\x01",
    "issuer": b"310115",
    "expiry": bytes.fromhex("20301231"),
}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "one tag-70 template, found nothing"),
        (bytes.fromhex("6F00"), "found 6F"),
        (encode_record(sample()) + b"\x90\x00", "unexpected TLV"),
        (_record_with(**{**GOOD, "number": bytes.fromhex("6210985200001234561F")}), "Luhn"),
        (_record_with(**{**GOOD, "number": bytes.fromhex("62A0985200001234560F")}), "BCD"),
        (_record_with(**{**GOOD, "kind": b"\x07"}), "unknown card kind 07"),
        (_record_with(**{**GOOD, "kind": b"\x01\x01"}), "must be 1 byte"),
        (_record_with(**{**GOOD, "issuer": "上海".encode()}), "not ASCII"),
        (_record_with(**{**GOOD, "expiry": bytes.fromhex("20300231")}), "not a calendar date"),
        (_record_with(**{**GOOD, "expiry": bytes.fromhex("203012")}), "4 BCD bytes"),
        (_record_with(number=GOOD["number"], kind=b"\x01", issuer=b"310115"), "lacks required"),
        (bytes.fromhex("7005 5A03 1234"), "tag 70 says 5 bytes but only 4 remain"),
        (bytes.fromhex("7080"), "indefinite length"),
        (bytes.fromhex("7083000001"), "3-byte length"),
    ],
)
def test_bad_records_raise_protocol_errors_saying_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode_record(data)


def test_duplicate_tag_is_rejected() -> None:
    body = encode_record(sample())[2:] + encode_tlv(0x80, b"\x02")
    with pytest.raises(ProtocolError, match=r"tag 80 \(kind\) twice"):
        decode_record(encode_tlv(0x70, body))


def test_unknown_inner_tags_are_skipped_for_newer_cards() -> None:
    data = _record_with(**GOOD, extra=b"\x01\x02")
    assert decode_record(data).kind is CardKind.COMMUNITY


def test_record_length_needs_the_whole_header() -> None:
    assert record_length(b"") is None
    assert record_length(b"\x70") is None
    assert record_length(b"\x70\x81") is None
    assert record_length(b"\x70\x81\x90") == 3 + 0x90
    assert record_length(b"\x70\x1d") == 0x1F
    with pytest.raises(ProtocolError, match="start with tag 70"):
        record_length(b"\x6f\x00")
    with pytest.raises(ProtocolError, match="at most 1024"):
        record_length(b"\x70\x82\x10\x00")


def test_parse_aid() -> None:
    assert parse_aid("F04C494E4C4901") == DEFAULT_AID
    with pytest.raises(ValueError, match="not hex"):
        parse_aid("F0ZZ")


numbers = (
    st.integers(min_value=15, max_value=18)
    .flatmap(lambda n: st.text("0123456789", min_size=n, max_size=n))
    .map(lambda payload: payload + luhn_check_digit(payload))
)

records = st.builds(
    CardRecord,
    number=numbers,
    kind=st.sampled_from(CardKind),
    issuer=st.text("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=2, max_size=16),
    expiry=st.dates(min_value=dt.date(2000, 1, 1), max_value=dt.date(2099, 12, 31)),
)


@settings(max_examples=200)
@given(records)
def test_any_valid_record_round_trips(record: CardRecord) -> None:
    assert decode_record(encode_record(record)) == record


@settings(max_examples=300)
@given(st.binary(max_size=80))
def test_random_bytes_decode_or_raise_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_record(data)


@settings(max_examples=300)
@given(records, st.data())
def test_mutated_records_decode_or_raise_protocol_error(
    record: CardRecord, data: st.DataObject
) -> None:
    encoded = bytearray(encode_record(record))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(encoded) - 1))
        action = data.draw(st.sampled_from(["flip", "drop", "insert"]))
        if action == "flip":
            encoded[pos] ^= data.draw(st.integers(1, 255))
        elif action == "drop" and len(encoded) > 1:
            del encoded[pos]
        else:
            encoded.insert(pos, data.draw(st.integers(0, 255)))
    try:
        decoded = decode_record(bytes(encoded))
    except ProtocolError:
        return
    assert isinstance(decoded, CardRecord)


@settings(max_examples=200)
@given(st.binary(max_size=60))
def test_parse_tlv_never_crashes(data: bytes) -> None:
    try:
        items = parse_tlv(data)
    except ProtocolError:
        return
    assert sum(len(v) for _, v in items) <= len(data)


# -- the read flow over the simulator's applet ----------------------------------------------


def traced(applet: CardApplet) -> tuple[CardApplet, list[str]]:
    trace: list[str] = []
    original = applet.process

    def process(apdu: bytes) -> bytes:
        answer = original(apdu)
        trace.append(f"> {hexed(apdu)}")
        trace.append(f"< {hexed(answer)}")
        return answer

    applet.process = process  # type: ignore[method-assign]
    return applet, trace


def test_read_card_golden_trace_t0_style_strict_le() -> None:
    applet, trace = traced(CardApplet(record=sample()))
    assert read_card(applet.process) == sample()
    assert trace == [
        "> 00 A4 04 00 07 F0 4C 49 4E 4C 49 01 00",
        "< 61 0B",
        "> 00 C0 00 00 0B",
        "< 6F 09 84 07 F0 4C 49 4E 4C 49 01 90 00",
        "> 00 B0 00 00 80",
        "< 6C 1F",
        "> 00 B0 00 00 1F",
        f"< {GOLDEN} 90 00",
    ]


@settings(max_examples=100)
@given(
    record=records,
    chunk=st.integers(1, 256),
    t0_style=st.booleans(),
    strict_le=st.booleans(),
)
def test_read_card_works_for_every_chunk_size_and_card_style(
    record: CardRecord, chunk: int, t0_style: bool, strict_le: bool
) -> None:
    applet = CardApplet(record=record, t0_style=t0_style, strict_le=strict_le)
    assert read_card(applet.process, chunk=chunk) == record


def test_wrong_aid_is_file_not_found() -> None:
    applet = CardApplet(record=sample(), aid=bytes.fromhex("A000000003"))
    with pytest.raises(CardFileNotFoundError, match="6A82"):
        select_application(applet.process, DEFAULT_AID)


def test_record_longer_than_the_file_is_a_protocol_error() -> None:
    cut = encode_record(sample())[:-3]
    applet = CardApplet(file_bytes=cut)
    select_application(applet.process, DEFAULT_AID)
    with pytest.raises(ProtocolError, match="says 31 bytes but the card's file ends at offset 28"):
        read_record_bytes(applet.process, chunk=0x10)


def test_lenient_card_short_file_is_a_protocol_error() -> None:
    applet = CardApplet(file_bytes=encode_record(sample())[:-3], strict_le=False)
    select_application(applet.process, DEFAULT_AID)
    with pytest.raises(ProtocolError, match="inside the record"):
        read_record_bytes(applet.process)


def test_select_answering_another_application_is_a_protocol_error() -> None:
    def transmit(apdu: bytes) -> bytes:
        return encode_tlv(0x6F, encode_tlv(0x84, bytes.fromhex("A0000000031010"))) + b"\x90\x00"

    with pytest.raises(ProtocolError, match="selected application A0000000031010"):
        select_application(transmit, DEFAULT_AID)


@pytest.mark.parametrize(
    ("apdu", "sw"),
    [
        ("80A4040007F04C494E4C490100", "6E00"),
        ("00CA9F7F00", "6D00"),
        ("00B0000010", "6986"),
        ("00A4000002F001", "6A86"),
        ("00C0000010", "6985"),
        ("00A40400", "6700"),
    ],
)
def test_applet_answers_iso_status_words(apdu: str, sw: str) -> None:
    assert CardApplet(record=sample()).process(bytes.fromhex(apdu)).hex().upper() == sw


def test_applet_read_binary_offsets() -> None:
    applet = CardApplet(record=sample(), t0_style=False)
    assert applet.process(bytes.fromhex("00A4040007F04C494E4C490100"))[-2:] == b"\x90\x00"
    assert hexed(applet.process(bytes.fromhex("00B0001D02"))) == "12 31 90 00"
    assert hexed(applet.process(bytes.fromhex("00B0001F01"))) == "6B 00"
    assert hexed(applet.process(bytes.fromhex("00B0001E05"))) == "6C 01"
