"""Codec unit tests: golden bytes (HARDWARE.md), framing errors, SW3 table, text block, ID rules."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from device.errors import DeviceError, ProtocolError
from device.idcard import codec
from device.idcard.codec import (
    Command,
    build_read_reply,
    build_reply,
    build_request,
    check_reply,
    decode_text_block,
    encode_text_block,
    parse_frame,
    parse_read_reply,
    parse_reply,
    scan_frame,
)
from device.idcard.errors import (
    FAILURE_CODES,
    SW3_MEANINGS,
    CardAuthenticationError,
    CardReadError,
    CardTypeError,
    CommandRejectedError,
    FrameError,
    NoCardError,
    SamFailureError,
    SamStatusError,
    SelectFailedError,
    UnknownStatusError,
    status_error,
)
from device.idcard.identity import Identity, id_check_digit, id_number_problems
from device.idcard.nations import GENDERS, NATIONS
from hardware_sim.idcards import sample_card


def h(text: str) -> bytes:
    return bytes.fromhex(text)


PRE = "AA AA AA 96 69 "

# -- golden request and reply bytes (HARDWARE.md section 1 table) --------------------------------


@pytest.mark.parametrize(
    ("command", "golden"),
    [
        (Command.RESET_SAM, PRE + "00 03 10 FF EC"),
        (Command.SAM_STATUS, PRE + "00 03 11 FF ED"),
        (Command.SAM_ID, PRE + "00 03 12 FF EE"),
        (Command.FIND_CARD, PRE + "00 03 20 01 22"),
        (Command.SELECT_CARD, PRE + "00 03 20 02 21"),
        (Command.READ_TEXT_PHOTO, PRE + "00 03 30 01 32"),
        (Command.READ_TEXT_PHOTO_FINGERPRINT, PRE + "00 03 30 10 23"),
    ],
)
def test_request_frames_are_the_golden_bytes(command: Command, golden: str) -> None:
    assert build_request(command) == h(golden)


@pytest.mark.parametrize(
    ("golden", "sw3", "data"),
    [
        (PRE + "00 04 00 00 90 94", 0x90, b""),
        (PRE + "00 08 00 00 9F 00 00 00 00 97", 0x9F, bytes(4)),
        (PRE + "00 04 00 00 80 84", 0x80, b""),
        (PRE + "00 0C 00 00 90" + " 00" * 8 + " 9C", 0x90, bytes(8)),
        (PRE + "00 04 00 00 81 85", 0x81, b""),
        (PRE + "00 04 00 00 41 45", 0x41, b""),
    ],
)
def test_reply_frames_build_and_parse_to_the_golden_bytes(
    golden: str, sw3: int, data: bytes
) -> None:
    assert build_reply(sw3, data) == h(golden)
    reply = parse_reply(h(golden))
    assert (reply.sw1, reply.sw2, reply.sw3, reply.data) == (0, 0, sw3, data)


def test_read_reply_has_the_documented_size_and_header() -> None:
    frame = build_read_reply(sample_card(0))
    assert len(frame) == 1295
    assert frame[:14] == h(PRE + "05 08 00 00 90 01 00 04 00")


@pytest.mark.parametrize(("fp_size", "total"), [(1024, 2321), (512, 1809), (0, 1297)])
def test_read_reply_with_fingerprint_sizes(fp_size: int, total: int) -> None:
    card = dataclasses.replace(sample_card(1), fingerprint=bytes(range(256)) * (fp_size // 256))
    frame = build_read_reply(card, with_fingerprint=True)
    assert len(frame) == total
    assert frame[10:16] == h("01 00 04 00") + fp_size.to_bytes(2, "big")
    parsed = parse_read_reply(frame)
    assert parsed.fingerprint == card.fingerprint
    assert parsed.photo == card.photo


# -- framing errors ------------------------------------------------------------------------------
GOOD = h(PRE + "00 04 00 00 90 94")


def test_bad_checksum_says_expected_and_got() -> None:
    with pytest.raises(FrameError, match=r"bad checksum: expected 94, got 95") as info:
        parse_frame(GOOD[:-1] + b"\x95")
    assert info.value.kind == "checksum"
    assert isinstance(info.value, ProtocolError)
    assert isinstance(info.value, ValueError)


def test_bad_preamble() -> None:
    with pytest.raises(FrameError, match="bad preamble: AA AA AB 96 69") as info:
        parse_frame(h("AA AA AB 96 69 00 04 00 00 90 94"))
    assert info.value.kind == "preamble"


@pytest.mark.parametrize("cut", [3, 6, 8, 10])
def test_truncated_frame(cut: int) -> None:
    with pytest.raises(FrameError, match="truncated") as info:
        parse_frame(GOOD[:cut])
    assert info.value.kind == "truncated"


def test_extra_bytes_are_a_length_mismatch() -> None:
    with pytest.raises(FrameError, match="length mismatch: length field says 11 bytes, got 12"):
        parse_frame(GOOD + b"\x00")


@pytest.mark.parametrize("length", ["00 00", "00 01", "FF FF", "10 01"])
def test_impossible_length_field(length: str) -> None:
    with pytest.raises(FrameError, match="frame length field") as info:
        parse_frame(h(PRE + length + " 00 00 90 94"))
    assert info.value.kind == "length"


def test_reply_body_shorter_than_the_status_words() -> None:
    with pytest.raises(FrameError, match="at least 3"):
        parse_reply(codec.build_frame(b"\x00\x00"))


# -- finding frames in a stream ------------------------------------------------------------------
def test_scan_skips_garbage_and_reports_how_much() -> None:
    garbage = h("00 FF 13 AA AA 96 0D 0A 55")
    scan = scan_frame(garbage + GOOD + b"\x01\x02")
    assert scan.status == "frame"
    assert scan.skipped == len(garbage)
    assert scan.end == len(garbage) + len(GOOD)
    assert scan.body == h("00 00 90")


def test_scan_tells_incomplete_from_corrupt() -> None:
    incomplete = scan_frame(b"\x55" + GOOD[:9])
    assert incomplete.status == "incomplete"
    assert incomplete.needed == 2
    assert incomplete.skipped == 1
    corrupt = scan_frame(b"\x55" + GOOD[:-1] + b"\x00")
    assert corrupt.status == "corrupt"
    assert corrupt.error is not None and corrupt.error.kind == "checksum"
    assert corrupt.end == 2  # resume just after the damaged frame's first byte


def test_scan_keeps_a_partial_preamble_at_the_end() -> None:
    scan = scan_frame(h("01 02 AA AA"))
    assert scan.status == "incomplete"
    assert scan.skipped == 2
    assert scan.needed == 5


def test_scan_resynchronises_after_a_corrupt_frame() -> None:
    stream = GOOD[:-1] + b"\x00" + GOOD
    first = scan_frame(stream)
    assert first.status == "corrupt"
    second = scan_frame(stream[first.end :])
    assert second.status == "frame"
    assert first.end + second.skipped == len(GOOD)


# -- SW3 status codes ----------------------------------------------------------------------------
EXPECTED_CLASS = {
    0x10: CommandRejectedError,
    0x11: CommandRejectedError,
    0x21: CommandRejectedError,
    0x23: CommandRejectedError,
    0x24: CommandRejectedError,
    0x31: CardAuthenticationError,
    0x32: CardAuthenticationError,
    0x33: CardAuthenticationError,
    0x34: NoCardError,
    0x40: CardTypeError,
    0x41: CardReadError,
    0x47: CardAuthenticationError,
    0x60: SamFailureError,
    0x61: SamFailureError,
    0x66: SamFailureError,
    0x80: NoCardError,
    0x81: SelectFailedError,
    0x91: CardReadError,
}


def test_every_documented_failure_code_is_mapped() -> None:
    assert set(FAILURE_CODES) == set(EXPECTED_CLASS)
    assert set(SW3_MEANINGS) == set(EXPECTED_CLASS) | {0x90, 0x9F}


@pytest.mark.parametrize("sw3", sorted(EXPECTED_CLASS))
def test_failure_status_raises_its_typed_error(sw3: int) -> None:
    reply = parse_reply(build_reply(sw3))
    with pytest.raises(EXPECTED_CLASS[sw3]) as info:
        check_reply(reply, Command.READ_TEXT_PHOTO)
    err = info.value
    assert err.sw3 == sw3
    assert err.meaning == SW3_MEANINGS[sw3]
    assert f"SW3 {sw3:02X}" in str(err) and err.meaning in str(err)
    assert "read_text_photo" in str(err)
    assert isinstance(err, DeviceError) and isinstance(err, OSError)


def test_unknown_status_is_its_own_error() -> None:
    err = status_error(0x55, "find_card")
    assert type(err) is UnknownStatusError
    assert isinstance(err, SamStatusError)
    assert err.meaning == "unknown status code"


def test_find_accepts_9f_and_other_commands_only_90() -> None:
    found = parse_reply(build_reply(0x9F, bytes(4)))
    assert check_reply(found, Command.FIND_CARD) is found
    with pytest.raises(UnknownStatusError):
        check_reply(found, Command.SELECT_CARD)
    meanings = {0x90: "success", 0x9F: "card found", 0x80: "find card failed"}
    for sw3, meaning in meanings.items():
        assert SW3_MEANINGS[sw3].startswith(meaning)


# -- the text block ------------------------------------------------------------------------------
def field(text: str, size: int) -> bytes:
    raw = text.encode("utf-16-le")
    return raw + b" \x00" * ((size - len(raw)) // 2)


def hand_made_block(valid_to: str = "20350101", gender: str = "2", nation: str = "01") -> bytes:
    """A text block laid out from the HARDWARE.md offsets table, independently of the codec."""
    block = (
        field("张三丰", 30)
        + field(gender, 2)
        + field(nation, 4)
        + field("19491231", 16)
        + field("北京市朝阳区幸福路1号", 70)
        + field("11010519491231002X", 36)
        + field("北京市公安局朝阳分局", 30)
        + field("20150101", 16)
        + field(valid_to, 16)
        + field("", 36)
    )
    assert len(block) == 256
    return block


def test_decode_hand_made_text_block() -> None:
    identity = decode_text_block(hand_made_block(), photo=b"WLfx" + bytes(1020))
    assert identity.name == "张三丰"
    assert identity.gender == "女"
    assert identity.nation == "汉"
    assert identity.birth == dt.date(1949, 12, 31)
    assert identity.address == "北京市朝阳区幸福路1号"
    assert identity.id_number == "11010519491231002X"
    assert identity.issuer == "北京市公安局朝阳分局"
    assert identity.valid_from == dt.date(2015, 1, 1)
    assert identity.valid_to == dt.date(2035, 1, 1)
    assert identity.photo == b"WLfx" + bytes(1020)
    assert identity.id_number_valid


def test_encode_matches_the_offsets_table() -> None:
    identity = decode_text_block(hand_made_block())
    assert encode_text_block(identity) == hand_made_block()


def test_long_term_card() -> None:
    identity = decode_text_block(hand_made_block(valid_to="长期"))
    assert identity.valid_to is None
    assert identity.long_term
    assert identity.to_json()["valid_to"] == "长期"
    assert encode_text_block(identity) == hand_made_block(valid_to="长期")


@pytest.mark.parametrize(("code", "name"), list(GENDERS.items()))
def test_gender_table(code: str, name: str) -> None:
    assert decode_text_block(hand_made_block(gender=code)).gender == name


def test_nation_table_follows_gb3304() -> None:
    assert len(NATIONS) == 58
    assert (NATIONS["01"], NATIONS["02"], NATIONS["03"], NATIONS["04"]) == (
        "汉",
        "蒙古",
        "回",
        "藏",
    )
    assert (NATIONS["44"], NATIONS["55"], NATIONS["56"]) == ("俄罗斯", "珞巴", "基诺")
    assert NATIONS["97"] == "其他"
    assert NATIONS["98"] == "外国血统中国籍人士"
    assert decode_text_block(hand_made_block(nation="56")).nation == "基诺"


def test_unknown_codes_are_kept_raw_and_round_trip() -> None:
    identity = decode_text_block(hand_made_block(gender="7", nation="77"))
    assert (identity.gender, identity.nation) == ("7", "77")
    assert encode_text_block(identity) == hand_made_block(gender="7", nation="77")


@pytest.mark.parametrize("bad", ["2015013A", "20150230", "        ", "١٩٤٩١٢٣١"])
def test_bad_dates_are_protocol_errors(bad: str) -> None:
    block = bytearray(hand_made_block())
    block[188:204] = field(bad, 16)
    with pytest.raises(ProtocolError, match="valid_from is not a YYYYMMDD date"):
        decode_text_block(bytes(block))


def test_read_data_with_inconsistent_lengths() -> None:
    frame = build_reply(0x90, h("01 00 04 01") + hand_made_block() + bytes(1024))
    with pytest.raises(ProtocolError, match="length fields"):
        parse_read_reply(frame)


def test_read_reply_failure_status_raises() -> None:
    with pytest.raises(CardReadError):
        parse_read_reply(build_reply(0x41))


# -- ID number rules -----------------------------------------------------------------------------
def test_reference_id_numbers() -> None:
    assert id_check_digit("11010519491231002") == "X"
    assert id_number_problems("11010519491231002X") == []
    assert id_number_problems("110101197608056896") == ["check digit is 6, expected 7"]


def test_identity_reports_mismatches_without_raising() -> None:
    good = decode_text_block(hand_made_block())
    wrong = dataclasses.replace(good, birth=dt.date(1950, 1, 1), gender="男")
    assert not wrong.id_number_valid
    assert wrong.id_number_problems == (
        "digits 7-14 do not match the birth date on the card",
        "17th digit is even but the card says 男",
    )
    bad = dataclasses.replace(
        good, id_number="110101197608056896", birth=dt.date(1976, 8, 5), gender="男"
    )
    assert bad.to_json()["id_number_valid"] is False
    assert bad.to_json()["id_number_problems"] == ["check digit is 6, expected 7"]


@pytest.mark.parametrize(
    ("number", "problem"),
    [
        ("1101051949123100", "16 characters"),
        ("11010519491231002x", "17 digits followed by a digit or X"),
        ("1101051949133100XX", "17 digits followed by a digit or X"),
        ("110105194913310021", "not a valid date"),
    ],
)
def test_malformed_id_numbers(number: str, problem: str) -> None:
    assert any(problem in p for p in id_number_problems(number))


def test_problems_never_repeat_the_number() -> None:
    for number in ("110101197608056896", "110105194913310021"):
        assert all(number not in p for p in id_number_problems(number, dt.date(2000, 1, 1), "女"))


# -- the Identity object -------------------------------------------------------------------------
JSON_KEYS = {
    "name",
    "gender",
    "nation",
    "birth",
    "address",
    "id_number",
    "issuer",
    "valid_from",
    "valid_to",
    "photo_bytes",
    "id_number_valid",
    "id_number_problems",
}


def test_to_json_has_exactly_the_documented_keys() -> None:
    data = sample_card(2).to_json()
    assert set(data) == JSON_KEYS
    assert data["photo_bytes"] == 1024
    assert isinstance(data["birth"], str)


def test_repr_masks_personal_data() -> None:
    identity: Identity = decode_text_block(hand_made_block())
    for text in (repr(identity), str(identity), f"{identity}", repr([identity])):
        assert "张三丰" not in text and "三丰" not in text
        assert "11010519491231002X" not in text
        assert "幸福路" not in text
        assert "110105********002X" in text
