"""The command envelope (device/commands.py), pure: what verifies, what is refused and why, and that
no input whatever makes the verifier raise anything but a typed CommandError."""

from __future__ import annotations

from typing import Any

import base45
import cbor2
import pytest
from cwt import COSE
from hypothesis import given
from hypothesis import strategies as st

from device.commands import (
    CLAIM_ARGS,
    CLAIM_TYPE,
    CONTENT_TYPE,
    MAX_COMMAND_BYTES,
    MAX_RESULT_BYTES,
    MAX_TTL_S,
    REASONS,
    CommandError,
    CommandResult,
    ExpiredCommandError,
    ForgedCommandError,
    MalformedCommandError,
    NotYetValidCommandError,
    OversizeCommandError,
    UnknownCommandKeyError,
    WrongDeviceCommandError,
    encode_result,
    parse_result,
    sign_command,
    verify_command,
)
from device.credential import CredentialClaims, SigningKey, VerifyKey, generate_signing_key, issue
from device.protocol import MessageError, NotJSONError, OversizeError, SchemaError

from .conftest import KID, args

NOW = 1_790_000_000.0
TTL = 120.0


def signed(key: SigningKey, **overrides: Any) -> bytes:
    values: dict[str, Any] = {
        "device_id": "dev-a",
        "type": "locker.open",
        "args": args(),
        "now": NOW,
        "ttl_s": TTL,
    }
    values.update(overrides)
    return sign_command(key, **values)


def verify(raw: bytes, keys: dict[str, VerifyKey], **overrides: Any) -> Any:
    values: dict[str, Any] = {"device_id": "dev-a", "now": NOW + 1, "skew_s": 60}
    values.update(overrides)
    return verify_command(raw, keys, **values)


def sign_claims(key: SigningKey, claims: Any, protected: dict[int, Any] | None = None) -> bytes:
    """A validly signed COSE_Sign1 around any CBOR payload: checks after the signature."""
    header = protected or {1: -8, 3: CONTENT_TYPE, 4: key.kid.encode()}
    cose = COSE.new(alg_auto_inclusion=False, kid_auto_inclusion=False)
    out = cose.encode_and_sign(cbor2.dumps(claims), key.cose_key, protected=header)
    assert isinstance(out, bytes)
    return out


def good_claims(**changes: Any) -> dict[int, Any]:
    claims: dict[int, Any] = {
        3: "dev-a",
        6: int(NOW),
        4: int(NOW + TTL),
        7: bytes(16),
        CLAIM_TYPE: "locker.open",
        CLAIM_ARGS: {"compartment": 3},
    }
    for label, value in changes.items():
        number = {"aud": 3, "iat": 6, "exp": 4, "cti": 7, "type": CLAIM_TYPE, "args": CLAIM_ARGS}
        if value is None:
            claims.pop(number[label])
        else:
            claims[number[label]] = value
    return claims


# --- what verifies -------------------------------------------------------------------------------


def test_a_signed_command_verifies_with_every_field(
    server_key: SigningKey, keys: dict[str, VerifyKey]
) -> None:
    raw = signed(server_key, command_id="0123456789abcdef0123456789abcdef")
    command = verify(raw, keys)
    assert command.id == "0123456789abcdef0123456789abcdef"
    assert (command.device, command.type, command.kid) == ("dev-a", "locker.open", KID)
    assert dict(command.args) == args()
    assert (command.iat, command.exp) == (int(NOW), int(NOW + TTL))
    assert len(raw) < 400  # small: a command is an instruction, not data


def test_each_command_gets_a_fresh_random_id(
    server_key: SigningKey, keys: dict[str, VerifyKey]
) -> None:
    ids = {verify(signed(server_key), keys).id for _ in range(20)}
    assert len(ids) == 20 and all(len(i) == 32 for i in ids)


def test_the_skew_margin_applies_at_both_ends(
    server_key: SigningKey, keys: dict[str, VerifyKey]
) -> None:
    raw = signed(server_key)
    verify(raw, keys, now=NOW - 60)  # device clock 60 s behind: still valid
    verify(raw, keys, now=NOW + TTL + 59)  # just within the margin after exp
    with pytest.raises(NotYetValidCommandError):
        verify(raw, keys, now=NOW - 61)
    with pytest.raises(ExpiredCommandError):
        verify(raw, keys, now=NOW + TTL + 60)


# --- refusals, each with its reason ---------------------------------------------------------------


def test_a_command_signed_by_another_key_is_forged(keys: dict[str, VerifyKey]) -> None:
    impostor = generate_signing_key(KID)  # same key id, other key: what an attacker can make
    with pytest.raises(ForgedCommandError) as caught:
        verify(signed(impostor), keys)
    assert caught.value.reason == "forged"
    assert caught.value.command_id is None  # an unverified id is never reported as the id


def test_an_altered_command_is_forged(server_key: SigningKey, keys: dict[str, VerifyKey]) -> None:
    raw = signed(server_key, device_id="dev-b")
    tampered = raw.replace(b"dev-b", b"dev-a")  # move it to another device by editing the bytes
    assert tampered != raw
    with pytest.raises(ForgedCommandError):
        verify(tampered, keys)


def test_an_unknown_key_id_is_refused(keys: dict[str, VerifyKey]) -> None:
    with pytest.raises(UnknownCommandKeyError) as caught:
        verify(signed(generate_signing_key("srv-2099-01")), keys)
    assert caught.value.reason == "unknown-key"
    assert "srv-2099-01" in str(caught.value)  # the technician sees which key is missing


def test_wrong_device_expired_and_future_commands_carry_the_verified_id(
    server_key: SigningKey, keys: dict[str, VerifyKey]
) -> None:
    raw = signed(server_key, device_id="dev-b", command_id="ab" * 16)
    with pytest.raises(WrongDeviceCommandError) as wrong:
        verify(raw, keys)
    assert (wrong.value.reason, wrong.value.command_id) == ("wrong-device", "ab" * 16)
    assert wrong.value.command_type == "locker.open"
    with pytest.raises(ExpiredCommandError) as expired:
        verify(signed(server_key, now=NOW - 3600), keys)
    assert expired.value.reason == "expired" and expired.value.command_id is not None
    with pytest.raises(NotYetValidCommandError) as future:
        verify(signed(server_key, now=NOW + 3600), keys)
    assert future.value.reason == "not-yet-valid"


def test_a_credential_signed_with_the_same_key_is_not_a_command(
    server_key: SigningKey, keys: dict[str, VerifyKey]
) -> None:
    text = issue(CredentialClaims(kind="worker-open", sub="case-1", nbf=1, exp=2**31), server_key)
    with pytest.raises(MalformedCommandError, match="content type"):
        verify(base45.b45decode(text[4:]), keys)


def test_oversize_is_refused_before_parsing(keys: dict[str, VerifyKey]) -> None:
    with pytest.raises(OversizeCommandError) as caught:
        verify(b"\xa0" * (MAX_COMMAND_BYTES + 1), keys)
    assert caught.value.reason == "oversize"


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"", "empty"),
        (b'{"type": "locker.open"}', "CBOR"),
        (cbor2.dumps([b"", {}, b"", b""]) + b"\x00", "trailing"),
        (cbor2.dumps(cbor2.CBORTag(98, [])), "tag 98"),
        (cbor2.dumps([b"", {}, b""]), "COSE_Sign1"),
        (cbor2.dumps([b"", {}, "payload", b""]), "wrong types"),
        (cbor2.dumps([b"", {4: b"k"}, b"", b""]), "unprotected"),
        (cbor2.dumps([cbor2.dumps({1: -7}), {}, b"", b""]), "EdDSA"),
        (cbor2.dumps([cbor2.dumps({1: -8, 3: CONTENT_TYPE}), {}, b"", b""]), "key id"),
    ],
)
def test_malformed_structures_are_refused_with_the_problem(
    raw: bytes, problem: str, keys: dict[str, VerifyKey]
) -> None:
    with pytest.raises(MalformedCommandError, match=problem):
        verify(raw, keys)


@pytest.mark.parametrize(
    ("claims", "problem"),
    [
        ("not a map", "claims map"),
        (good_claims(cti=None), "cti"),
        (good_claims(cti=bytes(4)), "16 bytes"),
        (good_claims(aud=7), "aud"),
        (good_claims(iat=True), "iat"),
        (good_claims(exp=2.5), "exp"),
        (good_claims(type="Open Door"), "dotted"),
        (good_claims(exp=int(NOW) - 1), "lifetime"),
        (good_claims(exp=int(NOW) + MAX_TTL_S + 1), "lifetime"),
        (good_claims(args=None), "map"),
        (good_claims(args=[1, 2]), "map"),
        (good_claims(args={"blob": b"\x00"}), "bytes"),
        (good_claims(args={1: "x"}), "not text"),
        (good_claims(args={"n": float("nan")}), "NaN"),
    ],
)
def test_signed_but_wrong_claims_are_malformed(
    claims: Any, problem: str, server_key: SigningKey, keys: dict[str, VerifyKey]
) -> None:
    with pytest.raises(MalformedCommandError, match=problem) as caught:
        verify(sign_claims(server_key, claims), keys)
    assert caught.value.command_id is None


def test_every_reason_code_is_listed() -> None:
    errors = (
        MalformedCommandError,
        OversizeCommandError,
        UnknownCommandKeyError,
        ForgedCommandError,
        WrongDeviceCommandError,
        NotYetValidCommandError,
        ExpiredCommandError,
    )
    assert {error.reason for error in errors} <= set(REASONS)
    assert all(issubclass(error, ValueError) for error in errors)  # house rule 2


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"device_id": "dev a"}, "device id"),
        ({"type": "open"}, "dotted"),
        ({"ttl_s": 0}, "ttl_s"),
        ({"ttl_s": MAX_TTL_S + 1}, "ttl_s"),
        ({"args": {"blob": b"x"}}, "bytes"),
        ({"args": {"text": "x" * MAX_COMMAND_BYTES}}, "at most"),
        ({"command_id": "XYZ"}, "hex"),
        ({"command_id": "ab" * 8}, "32"),
    ],
)
def test_sign_command_refuses_what_no_device_would_accept(
    change: dict[str, Any], problem: str, server_key: SigningKey
) -> None:
    with pytest.raises(ValueError, match=problem):
        signed(server_key, **change)


# --- fuzzing: nothing but CommandError, whatever the bytes ----------------------------------------

_FIXED_KEY = generate_signing_key(KID)
_FIXED_KEYS = {KID: _FIXED_KEY.verify_key}
_VALID = signed(_FIXED_KEY)

cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.integers(-70000, 10) | st.text(max_size=5), inner, max_size=6)
    ),
    max_leaves=25,
)


@given(st.binary(max_size=600))
def test_random_bytes_only_raise_command_errors(raw: bytes) -> None:
    with pytest.raises(CommandError):
        verify_command(raw, _FIXED_KEYS, device_id="dev-a", now=NOW)


@given(cbor_values)
def test_random_cbor_only_raises_command_errors(value: Any) -> None:
    for raw in (cbor2.dumps(value), cbor2.dumps(cbor2.CBORTag(18, value))):
        with pytest.raises(CommandError):
            verify_command(raw, _FIXED_KEYS, device_id="dev-a", now=NOW)


@given(st.integers(0, len(_VALID) - 1), st.integers(1, 255))
def test_any_flipped_byte_is_refused(index: int, flip: int) -> None:
    raw = bytearray(_VALID)
    raw[index] ^= flip
    with pytest.raises(CommandError):
        verify_command(bytes(raw), _FIXED_KEYS, device_id="dev-a", now=NOW)


@given(st.dictionaries(st.sampled_from([3, 4, 6, 7, CLAIM_TYPE, CLAIM_ARGS, 99]), cbor_values))
def test_signed_random_claims_verify_or_raise_command_errors(claims: dict[int, Any]) -> None:
    raw = sign_claims(_FIXED_KEY, claims)
    try:
        command = verify_command(raw, _FIXED_KEYS, device_id="dev-a", now=NOW)
    except CommandError:
        return
    assert command.device == "dev-a"  # only a complete, valid claims set gets through


# --- up/cmd-result -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "result",
    [
        CommandResult(id="ab" * 16, status="succeeded", result={"door": "open", "n": 1.5}),
        CommandResult(id="ab" * 16, status="failed", reason="failed", result={"error": "OSError"}),
        CommandResult(id="ab" * 16, status="refused", reason="expired"),
        CommandResult(id=None, status="refused", reason="forged"),
    ],
)
def test_results_round_trip(result: CommandResult) -> None:
    wire = encode_result(result)
    assert wire.startswith(b'{"id":')
    assert parse_result(wire) == result


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"\xff\xfe", NotJSONError),
        (b"{not json", NotJSONError),
        (b'{"id": null, "status": "refused", "reason": NaN}', NotJSONError),
        (b"[]", SchemaError),
        (b'{"id": "' + b"ab" * 16 + b'", "status": "done"}', SchemaError),
        (b'{"id": null, "status": "succeeded", "result": {}}', SchemaError),
        (b'{"id": "' + b"ab" * 16 + b'", "status": "refused"}', SchemaError),
        (b'{"id": "../x", "status": "refused", "reason": "forged"}', SchemaError),
        (b'{"id": null, "status": "refused", "reason": "forged", "extra": 1}', SchemaError),
        (
            b'{"id": null, "status": "refused", "reason": "forged"}' + b" " * MAX_RESULT_BYTES,
            OversizeError,
        ),
    ],
)
def test_bad_results_are_refused_with_a_message_error(
    payload: bytes, error: type[MessageError]
) -> None:
    with pytest.raises(error):
        parse_result(payload)


@given(st.binary(max_size=300))
def test_random_result_bytes_only_raise_message_errors(raw: bytes) -> None:
    try:
        parse_result(raw)
    except MessageError:
        return
