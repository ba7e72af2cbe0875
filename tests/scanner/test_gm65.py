"""GM65 codec: golden bytes from HARDWARE.md, the CRC, and the stream splitter under any split."""

from __future__ import annotations

import binascii

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.errors import ProtocolError
from device.scanner import gm65
from device.scanner.events import ScanRejectedError


def test_trigger_command_golden_bytes() -> None:
    assert gm65.trigger_command() == bytes.fromhex("7E 00 08 01 00 02 01 AB CD")


def test_save_command_golden_bytes() -> None:
    assert gm65.save_command() == bytes.fromhex("7E 00 09 01 00 00 00 DE C8")


def test_ack_golden_bytes_and_parse() -> None:
    assert bytes.fromhex("02 00 00 01 00 33 31") == gm65.ACK
    assert gm65.parse_response(gm65.ACK) == gm65.Response(status=0, data=b"\x00")


def test_write_and_read_commands_carry_a_crc_over_type_to_data() -> None:
    frame = gm65.write_command(0x000D, b"\x02")
    assert frame[:7] == bytes.fromhex("7E 00 08 01 00 0D 02")
    assert int.from_bytes(frame[7:], "big") == binascii.crc_hqx(frame[2:7], 0)
    assert gm65.read_command(0x0000, 2)[:7] == bytes.fromhex("7E 00 07 01 00 00 02")


def test_crc16_xmodem_check_value() -> None:
    # The catalogue check value of CRC-16/XMODEM: CRC of "123456789".
    assert gm65.crc16_xmodem(b"123456789") == 0x31C3


@pytest.mark.parametrize(
    "frame",
    [gm65.trigger_command(), gm65.save_command(), gm65.write_command(0x1234, b"\x01\x02\x03")],
)
def test_commands_parse_back(frame: bytes) -> None:
    parsed = gm65.parse_command(frame)
    assert gm65.build_command(parsed.kind, parsed.address, parsed.data, parsed.checked) == frame


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        bytes.fromhex("7E 00 08 01 00 02 01 AB"),  # short
        bytes.fromhex("7E 00 05 01 00 02 01 AB CD"),  # unknown type
        bytes.fromhex("7E 00 09 01 00 00 00 DE C9"),  # bad CRC
        bytes.fromhex("7E 00 08 02 00 02 01 AB CD"),  # length byte lies
    ],
)
def test_malformed_commands_raise_protocol_error(frame: bytes) -> None:
    with pytest.raises(ProtocolError):
        gm65.parse_command(frame)


def test_response_with_bad_crc_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="CRC"):
        gm65.parse_response(bytes.fromhex("02 00 00 01 00 33 32"))


@given(st.one_of(st.binary(max_size=40), st.binary(max_size=30).map(lambda b: b"\x7e\x00" + b)))
@settings(max_examples=300)
def test_any_bytes_parse_exactly_or_raise_protocol_error(data: bytes) -> None:
    try:
        command = gm65.parse_command(data)
    except ProtocolError:
        pass
    else:  # whatever parses is a frame the codec itself would build
        rebuilt = gm65.build_command(command.kind, command.address, command.data, command.checked)
        assert rebuilt == data
    try:
        response = gm65.parse_response(data)
    except ProtocolError:
        pass
    else:
        assert gm65.build_response(response.data, response.status) == data


def test_build_command_refuses_out_of_range_arguments() -> None:
    with pytest.raises(ValueError, match="address"):
        gm65.build_command(gm65.CommandType.WRITE, 0x10000, b"\x00")
    with pytest.raises(ValueError, match="data"):
        gm65.build_command(gm65.CommandType.WRITE, 0, b"")


# -- stream splitter -----------------------------------------------------------------------------
def lines(items: list[gm65.StreamItem]) -> list[bytes]:
    return [i.data for i in items if isinstance(i, gm65.Line)]


def test_ack_followed_by_a_scanned_line() -> None:
    stream = gm65.Gm65Stream(max_line=64)
    items = stream.feed(gm65.ACK + b"LQ1:ABC\r")
    assert items == [gm65.Response(0, b"\x00"), gm65.Line(b"LQ1:ABC")]


@pytest.mark.parametrize("ending", [b"\r", b"\r\n", b"\n"])
def test_line_endings(ending: bytes) -> None:
    stream = gm65.Gm65Stream(max_line=64)
    assert lines(stream.feed(b"one" + ending + b"two" + ending)) == [b"one", b"two"]


def test_crlf_split_between_chunks_counts_once() -> None:
    stream = gm65.Gm65Stream(max_line=64)
    assert lines(stream.feed(b"one\r")) == [b"one"]
    assert lines(stream.feed(b"\ntwo\r")) == [b"two"]


def test_overlong_line_is_rejected_once_and_the_next_line_survives() -> None:
    stream = gm65.Gm65Stream(max_line=16)
    items = stream.feed(b"X" * 100)
    assert stream.pending <= 100 and len(items) == 1
    assert isinstance(items[0], ScanRejectedError) and items[0].reason == "too_long"
    items = stream.feed(b"X" * 100 + b"\rnext\r")
    assert items == [gm65.Line(b"next")]


def test_buffer_never_grows_past_the_limit() -> None:
    stream = gm65.Gm65Stream(max_line=32)
    for _ in range(1000):
        stream.feed(b"Y" * 1000)
        assert len(stream._buf) <= 32


def test_flush_reports_a_stalled_line() -> None:
    stream = gm65.Gm65Stream(max_line=32)
    stream.feed(b"partial")
    stalled = stream.flush()
    assert isinstance(stalled, ScanRejectedError) and stalled.reason == "stalled"
    assert stream.flush() is None
    assert lines(stream.feed(b"whole\r")) == [b"whole"]


def test_bad_answer_frame_is_an_item_not_an_exception() -> None:
    stream = gm65.Gm65Stream(max_line=32)
    items = stream.feed(bytes.fromhex("02 00 00 01 00 33 32") + b"ok\r")
    assert isinstance(items[0], ProtocolError)
    assert items[1:] == [gm65.Line(b"ok")]


def _feed_in_chunks(data: bytes, cuts: list[int], max_line: int) -> list[object]:
    stream = gm65.Gm65Stream(max_line=max_line)
    items: list[object] = []
    points = sorted({c % (len(data) + 1) for c in cuts})
    start = 0
    for point in [*points, len(data)]:
        items.extend(stream.feed(data[start:point]))
        start = point
    return [repr(i) if isinstance(i, Exception) else i for i in items]


stream_bytes = st.lists(
    st.one_of(
        st.binary(max_size=30),
        st.sampled_from([b"\r", b"\n", b"\r\n", gm65.ACK, b"\x02", b"\x02\x00", b"LQ1:ABC\r"]),
    ),
    max_size=20,
).map(b"".join)


@given(stream_bytes, st.lists(st.integers(min_value=0, max_value=1000), max_size=10))
@settings(max_examples=400)
def test_any_split_gives_the_same_items(data: bytes, cuts: list[int]) -> None:
    whole = _feed_in_chunks(data, [], max_line=24)
    assert _feed_in_chunks(data, cuts, max_line=24) == whole
    assert _feed_in_chunks(data, list(range(len(data) + 1)), max_line=24) == whole


@given(stream_bytes)
@settings(max_examples=300)
def test_garbage_gives_bounded_lines_and_typed_errors(data: bytes) -> None:
    stream = gm65.Gm65Stream(max_line=24)
    for item in stream.feed(data):
        assert isinstance(item, gm65.Line | gm65.Response | ProtocolError)
        if isinstance(item, gm65.Line):
            assert 0 < len(item.data) <= 24 and b"\r" not in item.data and b"\n" not in item.data
    assert stream.pending <= len(data)


@given(st.lists(st.text(min_size=1, max_size=20).map(str.encode), max_size=10), st.data())
@settings(max_examples=200)
def test_lines_without_terminators_inside_come_back_intact(
    payloads: list[bytes], data: st.DataObject
) -> None:
    payloads = [p for p in payloads if b"\r" not in p and b"\n" not in p and p[:1] != b"\x02"]
    endings = [data.draw(st.sampled_from([b"\r", b"\r\n", b"\n"])) for _ in payloads]
    wire = b"".join(p + e for p, e in zip(payloads, endings, strict=True))
    assert lines(gm65.Gm65Stream(max_line=100).feed(wire)) == payloads


@given(
    st.lists(st.tuples(st.integers(min_value=0, max_value=10_000), st.integers(0, 255)), max_size=8)
)
@settings(max_examples=300)
def test_mutated_module_output_gives_typed_items(mutations: list[tuple[int, int]]) -> None:
    wire = bytearray(gm65.ACK + b"LQ1:ABC\r" + gm65.build_response(b"\x02") + "邻里\r\n".encode())
    for position, byte in mutations:
        wire[position % len(wire)] = byte
    stream = gm65.Gm65Stream(max_line=16)
    items = stream.feed(bytes(wire))
    assert all(isinstance(i, gm65.Line | gm65.Response | ProtocolError) for i in items)
    if not mutations:
        assert items == [
            gm65.Response(0, b"\x00"),
            gm65.Line(b"LQ1:ABC"),
            gm65.Response(0, b"\x02"),
            gm65.Line("邻里".encode()),
        ]
