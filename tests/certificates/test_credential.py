"""The credential codec (device/credential.py): round trip, every refusal, size, key files."""

from __future__ import annotations

import stat
from pathlib import Path

import base45
import cbor2
import pytest
import segno

from device import credential as cred
from device.credential import (
    AlreadyUsedError,
    BadSignatureError,
    CredentialClaims,
    CredentialError,
    CredentialKeyError,
    ExpiredCredentialError,
    MalformedCredentialError,
    NotYetValidError,
    RevokedCredentialError,
    SigningKey,
    UnknownKeyError,
    WrongAudienceError,
    generate_signing_key,
    issue,
    key_id_of,
    load_signing_key,
    load_verify_key,
    save_signing_key,
    save_verify_key,
    verify,
)
from device.errors import LinliError

NOW = 1_790_000_000


def locker_claims(**overrides: object) -> CredentialClaims:
    """A typical pickup credential as DESIGN.md describes it."""
    values: dict[str, object] = {
        "kind": "collect",
        "sub": "C2026-000123",
        "aud": "locker-0001",
        "nbf": NOW,
        "exp": NOW + 7 * 86400,
        "compartment": 12,
    }
    values.update(overrides)
    return CredentialClaims(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def server_key() -> SigningKey:
    return generate_signing_key("srv-2026-01")


def keys_of(key: SigningKey) -> dict[str, cred.VerifyKey]:
    return {key.kid: key.verify_key}


def test_round_trip_gives_back_every_claim(server_key: SigningKey) -> None:
    claims = locker_claims(iss="linli-server", iat=NOW)
    text = issue(claims, server_key)
    assert text.startswith("LQ1:")
    assert verify(text, keys_of(server_key), audience="locker-0001", now=NOW + 10) == claims


def test_key_id_is_in_the_protected_header(server_key: SigningKey) -> None:
    text = issue(locker_claims(), server_key)
    message = cbor2.loads(base45.b45decode(text[4:]))
    assert message.tag == 18
    protected, unprotected, _, signature = message.value
    assert cbor2.loads(protected) == {1: -8, 4: b"srv-2026-01"}
    assert unprotected == {}
    assert len(signature) == 64
    assert key_id_of(text) == "srv-2026-01"


def test_private_claims_use_the_private_use_range(server_key: SigningKey) -> None:
    text = issue(locker_claims(), server_key)
    payload = cbor2.loads(cbor2.loads(base45.b45decode(text[4:])).value[2])
    assert payload[cred.CLAIM_KIND] == "collect"
    assert payload[cred.CLAIM_COMPARTMENT] == 12
    assert all(k > 0 or k < -65536 for k in payload)


def test_typical_locker_credential_fits_a_version_9_qr(server_key: SigningKey) -> None:
    text = issue(locker_claims(), server_key)
    code = segno.make(text, micro=False, error="m", boost_error=False)
    assert code.mode == "alphanumeric"
    assert code.version <= 9, (len(text), code.version)
    # Even with issuer and issue time it still fits version 9 at error level L.
    full = issue(locker_claims(iss="linli-server", iat=NOW), server_key)
    assert segno.make(full, micro=False, error="l", boost_error=False).version <= 9


def test_scanner_line_ending_is_tolerated(server_key: SigningKey) -> None:
    text = issue(locker_claims(), server_key)
    assert verify(text + "\r\n", keys_of(server_key), audience="locker-0001", now=NOW)


@pytest.mark.parametrize(
    ("kwargs", "error", "reason"),
    [
        ({"audience": "locker-0002", "now": NOW}, WrongAudienceError, "wrong-audience"),
        ({"audience": "locker-0001", "now": NOW - 61}, NotYetValidError, "not-yet-valid"),
        (
            {"audience": "locker-0001", "now": NOW + 7 * 86400 + 60},
            ExpiredCredentialError,
            "expired",
        ),
        (
            {"audience": "locker-0001", "now": NOW, "revoked": {"00112233aabbccdd"}},
            RevokedCredentialError,
            "revoked",
        ),
        (
            {"audience": "locker-0001", "now": NOW, "seen": {"00112233aabbccdd"}},
            AlreadyUsedError,
            "already-used",
        ),
    ],
)
def test_each_refusal_is_its_own_error(
    server_key: SigningKey, kwargs: dict, error: type[CredentialError], reason: str
) -> None:
    text = issue(locker_claims(cti=bytes.fromhex("00112233aabbccdd")), server_key)
    with pytest.raises(error) as info:
        verify(text, keys_of(server_key), **kwargs)
    assert info.value.reason == reason
    assert info.value.cti == "00112233aabbccdd"
    assert isinstance(info.value, LinliError) and isinstance(info.value, ValueError)


def test_clock_skew_margin_is_honoured(server_key: SigningKey) -> None:
    text = issue(locker_claims(), server_key)
    keys = keys_of(server_key)
    assert verify(text, keys, audience="locker-0001", now=NOW - 59)
    assert verify(text, keys, audience="locker-0001", now=NOW + 7 * 86400 + 59)
    with pytest.raises(NotYetValidError):
        verify(text, keys, audience="locker-0001", now=NOW - 5, skew_s=0)


def test_unknown_key_id_is_refused_before_the_signature(server_key: SigningKey) -> None:
    text = issue(locker_claims(), server_key)
    with pytest.raises(UnknownKeyError, match="srv-2026-01"):
        verify(text, {}, audience="locker-0001", now=NOW)


def test_signature_by_another_key_with_the_same_kid_is_refused(server_key: SigningKey) -> None:
    forger = generate_signing_key("srv-2026-01")
    text = issue(locker_claims(), forger)
    with pytest.raises(BadSignatureError, match="forged or altered"):
        verify(text, keys_of(server_key), audience="locker-0001", now=NOW)


def test_changed_claims_break_the_signature(server_key: SigningKey) -> None:
    text = issue(locker_claims(), server_key)
    message = cbor2.loads(base45.b45decode(text[4:]))
    claims = cbor2.loads(message.value[2])
    claims[cred.CLAIM_COMPARTMENT] = 13  # open someone else's compartment
    message.value[2] = cbor2.dumps(claims)
    forged = "LQ1:" + base45.b45encode(cbor2.dumps(message)).decode()
    with pytest.raises(BadSignatureError):
        verify(forged, keys_of(server_key), audience="locker-0001", now=NOW)


def test_every_single_byte_change_is_refused(server_key: SigningKey) -> None:
    raw = base45.b45decode(issue(locker_claims(), server_key)[4:])
    keys = keys_of(server_key)
    for i in range(len(raw)):
        for flip in (0x01, 0x80, 0xFF):
            mutated = bytearray(raw)
            mutated[i] ^= flip
            text = "LQ1:" + base45.b45encode(bytes(mutated)).decode()
            with pytest.raises(CredentialError):
                verify(text, keys, audience="locker-0001", now=NOW)


def test_trailing_bytes_and_unprotected_headers_are_refused(server_key: SigningKey) -> None:
    raw = base45.b45decode(issue(locker_claims(), server_key)[4:])
    keys = keys_of(server_key)
    with pytest.raises(MalformedCredentialError, match="trailing"):
        verify("LQ1:" + base45.b45encode(raw + b"\x00").decode(), keys, audience=None, now=NOW)
    message = cbor2.loads(raw)
    message.value[1] = {4: b"other"}
    text = "LQ1:" + base45.b45encode(cbor2.dumps(message)).decode()
    with pytest.raises(MalformedCredentialError, match="unprotected"):
        verify(text, keys, audience=None, now=NOW)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "must start with LQ1:"),
        ("HC1:NCFOXN", "must start with LQ1:"),
        ("LQ1:", "empty"),
        ("LQ1:abc", "base45"),
        ("LQ1:" + base45.b45encode(b"\x1c").decode(), "CBOR"),
        ("LQ1:" + base45.b45encode(cbor2.dumps([1, 2])).decode(), "COSE_Sign1"),
        (
            "LQ1:" + base45.b45encode(cbor2.dumps(cbor2.CBORTag(17, [b"", {}, b"", b""]))).decode(),
            "tag 17",
        ),
        (
            "LQ1:" + base45.b45encode(cbor2.dumps([cbor2.dumps({1: -7}), {}, b"", b""])).decode(),
            "EdDSA",
        ),
        (
            "LQ1:" + base45.b45encode(cbor2.dumps([cbor2.dumps({1: -8}), {}, b"", b""])).decode(),
            "key id",
        ),
    ],
)
def test_malformed_texts_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(MalformedCredentialError, match=message):
        verify(text, {}, audience=None, now=NOW)


def test_payload_with_wrong_claim_types_is_malformed(server_key: SigningKey) -> None:
    from cwt import COSE

    payload = cbor2.dumps({2: "case", 4: "tomorrow", 5: NOW, 7: b"1", cred.CLAIM_KIND: "collect"})
    signed = COSE.new(alg_auto_inclusion=False, kid_auto_inclusion=False).encode_and_sign(
        payload, server_key.cose_key, protected={1: -8, 4: b"srv-2026-01"}
    )
    text = "LQ1:" + base45.b45encode(signed).decode()
    with pytest.raises(MalformedCredentialError, match="exp has the wrong type"):
        verify(text, keys_of(server_key), audience=None, now=NOW)


def test_claims_refuse_nonsense_at_issue() -> None:
    with pytest.raises(ValueError, match="kind"):
        locker_claims(kind="open-everything")
    with pytest.raises(ValueError, match="exp must be after"):
        locker_claims(exp=NOW)


def test_key_files_round_trip_and_private_key_is_owner_only(
    server_key: SigningKey, tmp_path: Path
) -> None:
    private, public = tmp_path / "k.pem", tmp_path / "k.pub"
    private.write_text("old")
    private.chmod(0o644)
    save_signing_key(server_key, private)
    save_verify_key(server_key.verify_key, public)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    loaded = load_signing_key(private, "srv-2026-01")
    text = issue(locker_claims(), loaded)
    keys = {"srv-2026-01": load_verify_key(public, "srv-2026-01")}
    assert verify(text, keys, audience="locker-0001", now=NOW).sub == "C2026-000123"
    assert "BEGIN" not in repr(loaded)


def test_bad_key_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CredentialKeyError, match="cannot read"):
        load_signing_key(tmp_path / "missing.pem", "k")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key")
    with pytest.raises(CredentialKeyError, match="not an unencrypted PEM private key"):
        load_signing_key(garbage, "k")
    with pytest.raises(CredentialKeyError, match="not a PEM public key"):
        load_verify_key(garbage, "k")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    other = tmp_path / "ec.pem"
    other.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(CredentialKeyError, match="not Ed25519"):
        load_signing_key(other, "k")
