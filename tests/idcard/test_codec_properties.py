"""Property tests of the SAM codec: any bytes parse or raise a typed error; encoding round-trips."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from device.errors import ProtocolError
from device.idcard.codec import (
    PREAMBLE,
    build_frame,
    build_read_reply,
    parse_frame,
    parse_read_reply,
    parse_reply,
    scan_frame,
)
from device.idcard.errors import SamStatusError
from device.idcard.identity import Identity, id_check_digit, id_number_problems
from device.idcard.nations import GENDERS, NATIONS
from hardware_sim.idcards import sample_card

pytestmark = pytest.mark.timeout(60)

VALID_READ = build_read_reply(sample_card(0))
SMALL = [build_frame(b"\x00\x00\x90"), build_frame(b"\x00\x00\x9f" + bytes(4)), VALID_READ]


@st.composite
def mutated_frames(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SMALL)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "extend"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[pos] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete" and data:
            del data[pos]
        elif kind == "truncate":
            del data[pos:]
        elif kind == "extend":
            data += draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


def parse_all_ways(data: bytes) -> None:
    """Every public parser on ``data``: a result or a typed error, nothing else."""
    with contextlib.suppress(ProtocolError):
        parse_reply(data)
    try:
        identity = parse_read_reply(data)
        assert isinstance(identity, Identity)
    except (ProtocolError, SamStatusError):
        pass
    scan = scan_frame(data)
    assert scan.status in ("frame", "incomplete", "corrupt")
    assert 0 <= scan.start <= scan.end <= len(data)


@settings(max_examples=300)
@given(st.binary(max_size=64))
def test_random_bytes_parse_or_raise_typed_errors(data: bytes) -> None:
    parse_all_ways(data)
    parse_all_ways(PREAMBLE + data)


@settings(max_examples=300)
@given(mutated_frames())
def test_mutated_frames_parse_or_raise_typed_errors(data: bytes) -> None:
    parse_all_ways(data)


@settings(max_examples=200)
@given(mutated_frames())
def test_scan_of_a_frame_is_consistent(data: bytes) -> None:
    scan = scan_frame(data)
    if scan.status == "frame":
        assert data[scan.start : scan.end] == build_frame(scan.body)
    elif scan.status == "incomplete":
        assert scan.needed > 0
    else:
        assert scan.error is not None
        assert scan.end == scan.start + 1  # progress is guaranteed: no endless rescans


@settings(max_examples=200)
@given(
    garbage=st.binary(max_size=40).filter(lambda b: 0xAA not in b),
    body=st.binary(min_size=1, max_size=300),
    cut=st.integers(0, 400),
)
def test_stream_with_garbage_finds_the_frame_once_complete(
    garbage: bytes, body: bytes, cut: int
) -> None:
    frame = build_frame(body)
    stream = garbage + frame
    partial = scan_frame(stream[: len(garbage) + min(cut, len(frame) - 1)])
    assert partial.status == "incomplete"
    assert partial.skipped <= len(garbage)
    full = scan_frame(stream + b"\x00\x01")
    assert full.status == "frame"
    assert full.skipped == len(garbage)
    assert full.body == body
    assert parse_frame(frame) == body


# -- identities ----------------------------------------------------------------------------------
CJK = st.characters(min_codepoint=0x4E00, max_codepoint=0x9FA5)
dates = st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2099, 12, 31))


@st.composite
def identities(draw: st.DrawFn) -> Identity:
    birth = draw(dates)
    region = draw(st.text("0123456789", min_size=6, max_size=6))
    seq = draw(st.text("0123456789", min_size=3, max_size=3))
    first17 = f"{region}{birth:%Y%m%d}{seq}"
    id_number = first17 + id_check_digit(first17)
    return Identity(
        name=draw(st.text(CJK, min_size=1, max_size=15)),
        gender=draw(st.sampled_from(sorted(GENDERS.values()))),
        nation=draw(st.sampled_from(sorted(NATIONS.values()))),
        birth=birth,
        address=draw(st.text(CJK | st.sampled_from("0123456789号-"), min_size=1, max_size=35)),
        id_number=id_number,
        issuer=draw(st.text(CJK, min_size=1, max_size=15)),
        valid_from=draw(dates),
        valid_to=draw(st.none() | dates),
        photo=draw(st.binary(max_size=1024)),
        fingerprint=draw(st.none() | st.binary(max_size=1024)),
    )


@settings(max_examples=150)
@given(identities(), st.booleans())
def test_identity_round_trips_through_a_read_reply(identity: Identity, with_fp: bool) -> None:
    parsed = parse_read_reply(build_read_reply(identity, with_fingerprint=with_fp))
    # Without the fingerprint command none comes back; with it, "no fingerprint" is 0 bytes.
    fingerprint = (identity.fingerprint or b"") if with_fp else None
    expected = dataclasses.replace(identity, fingerprint=fingerprint)
    assert parsed == expected
    assert parsed.id_number_problems == expected.id_number_problems


@settings(max_examples=300)
@given(st.text("0123456789", min_size=17, max_size=17), st.sampled_from("0123456789X"))
def test_check_digit(first17: str, check: str) -> None:
    problems = id_number_problems(first17 + check)
    check_problems = [p for p in problems if p.startswith("check digit")]
    assert (check == id_check_digit(first17)) == (not check_problems)


@settings(max_examples=100)
@given(st.dates(min_value=dt.date(1900, 1, 1)), st.integers(0, 999))
def test_gender_digit_and_birth_are_checked(birth: dt.date, seq: int) -> None:
    first17 = f"110105{birth:%Y%m%d}{seq:03d}"
    number = first17 + id_check_digit(first17)
    right = "男" if seq % 2 else "女"
    wrong = "女" if seq % 2 else "男"
    assert id_number_problems(number, birth, right) == []
    assert len(id_number_problems(number, birth, wrong)) == 1
    assume(birth != dt.date(1900, 1, 1))
    assert id_number_problems(number, dt.date(1900, 1, 1), right) == [
        "digits 7-14 do not match the birth date on the card"
    ]
