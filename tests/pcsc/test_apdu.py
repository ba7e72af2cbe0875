"""APDU codec: golden C-APDUs, status words to typed errors, 61xx/6Cxx chaining, fuzzed R-APDUs."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.errors import DeviceError, ProtocolError
from device.pcsc.apdu import (
    MAX_EXCHANGE_STEPS,
    ResponseApdu,
    build_get_response,
    build_read_binary,
    build_select_aid,
    check_status,
    describe_sw,
    exchange,
    parse_response,
    status_error,
    with_le,
)
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
from device.pcsc.profile import DEFAULT_AID


def scripted(*answers: str) -> tuple[Callable[[bytes], bytes], list[str]]:
    """A card that answers from a script (hex), recording the commands it got."""
    queue = [bytes.fromhex(a) for a in answers]
    sent: list[str] = []

    def transmit(apdu: bytes) -> bytes:
        sent.append(apdu.hex(" ").upper())
        return queue.pop(0)

    return transmit, sent


def test_golden_command_apdus() -> None:
    assert (
        build_select_aid(DEFAULT_AID).hex(" ").upper() == "00 A4 04 00 07 F0 4C 49 4E 4C 49 01 00"
    )
    assert build_read_binary(0, 0x80).hex(" ").upper() == "00 B0 00 00 80"
    assert build_read_binary(0x1234, 256).hex(" ").upper() == "00 B0 12 34 00"
    assert build_get_response(0x0B).hex(" ").upper() == "00 C0 00 00 0B"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: build_select_aid(b"\xf0\x01"), "5..16 bytes"),
        (lambda: build_read_binary(0x8000, 1), "0..32767"),
        (lambda: build_read_binary(0, 0), "1..256"),
        (lambda: build_get_response(257), "1..256"),
    ],
)
def test_builders_reject_values_that_do_not_fit(call: Callable[[], bytes], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize(
    ("sw", "cls", "words"),
    [
        (0x6A82, CardFileNotFoundError, "file or application not found"),
        (0x6982, SecurityStatusError, "security status not satisfied"),
        (0x6B00, WrongOffsetError, "offset outside the file"),
        (0x6700, WrongLengthError, "wrong length"),
        (0x6D00, InstructionNotSupportedError, "instruction not supported"),
        (0x6E00, ClassNotSupportedError, "class not supported"),
        (0x6F00, UnexpectedStatusError, "no precise diagnosis"),
        (0x63C2, UnexpectedStatusError, "2 tries left"),
        (0x1234, UnexpectedStatusError, "unknown status word"),
    ],
)
def test_status_words_become_typed_errors_with_their_meaning(
    sw: int, cls: type[CardStatusError], words: str
) -> None:
    error = status_error(sw, "READ BINARY")
    assert type(error) is cls
    assert isinstance(error, DeviceError) and isinstance(error, OSError)
    assert error.sw == sw
    assert f"{sw:04X}" in str(error) and "READ BINARY" in str(error) and words in str(error)


def test_check_status_returns_data_on_success_and_raises_otherwise() -> None:
    assert check_status(ResponseApdu(b"\x01", 0x90, 0x00), "SELECT") == b"\x01"
    with pytest.raises(SecurityStatusError):
        check_status(ResponseApdu(b"", 0x69, 0x82), "READ BINARY")


def test_61xx_is_followed_by_get_response_and_data_is_joined() -> None:
    transmit, sent = scripted("6104", "AABB6102", "CCDD9000")
    response = exchange(transmit, build_select_aid(DEFAULT_AID))
    assert response == ResponseApdu(bytes.fromhex("AABBCCDD"), 0x90, 0x00)
    assert sent[1:] == ["00 C0 00 00 04", "00 C0 00 00 02"]


def test_6cxx_reissues_the_same_command_with_the_exact_le() -> None:
    transmit, sent = scripted("6C1F", "01" * 0x1F + "9000")
    response = exchange(transmit, build_read_binary(0, 0x80))
    assert sent == ["00 B0 00 00 80", "00 B0 00 00 1F"]
    assert len(response.data) == 0x1F and response.sw == 0x9000


def test_final_error_status_is_returned_for_the_caller_to_check() -> None:
    transmit, _ = scripted("6A82")
    assert exchange(transmit, build_select_aid(DEFAULT_AID)).sw == 0x6A82


def test_a_card_that_keeps_answering_61xx_is_a_protocol_error() -> None:
    transmit, sent = scripted(*["6101"] * (MAX_EXCHANGE_STEPS + 1))
    with pytest.raises(ProtocolError, match="kept answering"):
        exchange(transmit, build_read_binary(0, 1))
    assert len(sent) == MAX_EXCHANGE_STEPS


def test_6cxx_to_a_command_without_le_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="has no Le"):
        with_le(bytes.fromhex("00A4040002F001"), 0x10)


def test_short_response_is_a_protocol_error_naming_the_command() -> None:
    with pytest.raises(ProtocolError, match="R-APDU to READ BINARY has 1 byte"):
        parse_response(b"\x90", "READ BINARY")


def test_describe_sw_knows_the_transport_hints() -> None:
    assert describe_sw(0x610B) == "11 more response bytes available (GET RESPONSE)"
    assert describe_sw(0x6C00) == "wrong Le; exact length is 256"
    assert describe_sw(0x9000) == "success"


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_parse_response_never_crashes(raw: bytes) -> None:
    try:
        response = parse_response(raw)
    except ProtocolError:
        assert len(raw) < 2
    else:
        assert response.to_bytes() == raw


@settings(max_examples=200)
@given(st.lists(st.binary(max_size=40), min_size=MAX_EXCHANGE_STEPS, max_size=MAX_EXCHANGE_STEPS))
def test_exchange_over_a_random_card_ends_with_a_response_or_protocol_error(
    answers: list[bytes],
) -> None:
    queue = list(answers)
    sent: list[bytes] = []

    def transmit(apdu: bytes) -> bytes:
        sent.append(apdu)
        return queue.pop(0)

    try:
        response = exchange(transmit, build_read_binary(0, 0x20))
    except ProtocolError:
        pass
    else:
        assert response.sw1 not in (0x61, 0x6C)
    assert len(sent) <= MAX_EXCHANGE_STEPS
