"""The shared scan validator: what reaches the application, what is refused, and what is logged."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.errors import ProtocolError
from device.scanner.camera import decode_image, decode_zbar
from device.scanner.events import (
    ScanEvent,
    ScanRejectedError,
    make_event,
    repair_mojibake,
    validate_payload,
    validate_text,
)
from tests.scanner.helpers import qr_image

CREDENTIAL = "LQ1:6BFOXN*TS0BI$ZD4N9:9S6RCVN5+O30K3/XIV0W23NTDEXWK G2EP4J0B"


@pytest.mark.parametrize(
    "payload", [CREDENTIAL, "居住证明 张三", "https://linli.example.cn/l/x?a=1"]
)
@pytest.mark.parametrize("ending", [b"", b"\r", b"\r\n", b"\n"])
def test_valid_payloads_pass_with_framing_stripped(payload: str, ending: bytes) -> None:
    assert validate_payload(payload.encode() + ending, max_length=1024) == payload


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "empty"),
        (b"\r\n", "empty"),
        ("居住证明".encode("gbk"), "not_utf8"),
        (b"\xff\xfe", "not_utf8"),
        (b"LQ1:AB\x1bCD", "control_character"),
        (b"A\x00B", "control_character"),
        (b"tab\there", "control_character"),
        (b"mid\rline", "control_character"),
        ("C1\u0085control".encode(), "control_character"),
        (b"A" * 65, "too_long"),
    ],
)
def test_bad_payloads_are_rejected_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(ScanRejectedError) as info:
        validate_payload(payload, max_length=64)
    assert info.value.reason == reason
    assert isinstance(info.value, ProtocolError)
    assert isinstance(info.value, ValueError)


def test_max_length_counts_utf8_bytes() -> None:
    text = "邻" * 6  # 18 bytes in UTF-8
    assert validate_text(text, max_length=18) == text
    with pytest.raises(ScanRejectedError, match="too_long"):
        validate_text(text, max_length=17)


def test_rejection_log_has_reason_and_length_but_never_the_payload(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = b"110105194912310021\x07"
    with caplog.at_level(logging.WARNING), pytest.raises(ScanRejectedError):
        make_event(secret, "serial:test", 0.0, max_length=64)
    assert "control_character" in caplog.text
    assert "19 bytes" in caplog.text
    assert "1101051949" not in caplog.text


def test_event_repr_does_not_show_the_text() -> None:
    event = ScanEvent(text=CREDENTIAL, source="camera:0", at=1.0)
    assert CREDENTIAL not in repr(event)
    assert event.text == CREDENTIAL


@given(st.binary(max_size=300))
@settings(max_examples=300)
def test_any_bytes_give_text_or_a_typed_rejection(payload: bytes) -> None:
    try:
        text = validate_payload(payload, max_length=128)
    except ScanRejectedError as err:
        assert err.reason in {"empty", "not_utf8", "control_character", "too_long"}
        return
    assert text and len(text.encode()) <= 128
    assert all(not (ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F) for c in text)


@given(st.text(st.characters(blacklist_categories=["Cc", "Cs"]), min_size=1, max_size=100))
@settings(max_examples=200)
def test_printable_text_round_trips(text: str) -> None:
    assert validate_payload(text.encode() + b"\r", max_length=400) == text


# -- zbar and Chinese text -----------------------------------------------------------------------
@pytest.mark.parametrize("text", ["居住证明 张三", "社区服务中心：高龄补贴认证", "邻里 LQ1:ABC"])
def test_utf8_chinese_qr_from_segno_decodes_to_the_right_text(text: str) -> None:
    assert decode_image(qr_image(text)) == [text]


def test_mojibake_from_a_shift_jis_guess_is_repaired() -> None:
    # What zbar returns when it takes the UTF-8 bytes of 住李 for Shift-JIS and converts to UTF-8.
    mojibake = "住李".encode().decode("shift_jis")
    assert mojibake != "住李"
    assert repair_mojibake(mojibake) == "住李"


def test_mojibake_from_a_latin1_guess_is_repaired() -> None:
    assert repair_mojibake("居住证明".encode().decode("latin-1")) == "居住证明"


@pytest.mark.parametrize("text", ["hello", "居住证明", "こんにちは", "Ünïcödé", CREDENTIAL])
def test_correct_text_is_left_alone(text: str) -> None:
    assert repair_mojibake(text) == text


def test_zbar_payloads_are_utf8_bytes() -> None:
    assert decode_zbar(qr_image("邻里")) == ["邻里".encode()]
