"""Signed credentials in QR codes (DESIGN.md "Credentials"): CWT claims, COSE_Sign1/Ed25519, base45.

A credential is ``"LQ1:" + base45(COSE_Sign1(CWT claims))``. The COSE layer is python-cwt's; this
module fixes the profile (EdDSA only, key id in the protected header), maps the claims to a typed
:class:`CredentialClaims` and turns every way a scanned text can be wrong into one
:class:`CredentialError` subclass, so a locker can show and audit the refusal. Time is passed in
(``now``), never read here. docs/credentials.md describes the format for the server side.
"""

from __future__ import annotations

import binascii
import io
import os
import secrets
from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Final

import base45
import cbor2
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cwt import COSE, COSEKey
from cwt.cose_key_interface import COSEKeyInterface

from device.errors import LinliError

PREFIX: Final = "LQ1:"
"""Version prefix of every Linli credential text."""

KINDS: Final = ("collect", "worker-open", "deposit", "certificate")
"""What a credential allows: resident pickup, worker opening, deposit of a result, a certificate."""

# COSE / CWT labels (RFC 9052 section 3.1, RFC 8392 section 3.1).
_ALG, _KID = 1, 4
_EDDSA = -8
_SIGN1_TAG = 18
_ISS, _SUB, _AUD, _EXP, _NBF, _IAT, _CTI = 1, 2, 3, 4, 5, 6, 7
# Private claims: keys below -65536 are the CWT registry's private-use range (RFC 8392 section 9.1),
# so they can never collide with a registered claim. Each costs 5 bytes on the wire.
CLAIM_KIND: Final = -65537
CLAIM_COMPARTMENT: Final = -65538
CLAIM_DIGEST: Final = -65539
CLAIM_TEMPLATE: Final = -65540

# A QR version 40 holds 4296 alphanumeric characters; anything longer is not a scanned credential.
MAX_TEXT_LENGTH: Final = 4296


class CredentialError(LinliError, ValueError):
    """A credential text was refused; ``reason`` is a stable code for audit events.

    ``claims`` is set when the refusal came after the signature verified (expired, revoked, wrong
    kind...): the credential is genuine, so a verifier may say which one it was.
    """

    reason = "invalid"

    def __init__(
        self, message: str, cti: str | None = None, claims: CredentialClaims | None = None
    ) -> None:
        super().__init__(message)
        self.cti = cti
        self.claims = claims


class MalformedCredentialError(CredentialError):
    """Not a Linli credential: bad prefix, base45, CBOR, COSE structure or claim types."""

    reason = "malformed"


class NotACredentialError(MalformedCredentialError):
    """Some other QR code (a URL, a product code): it does not start with the prefix."""

    reason = "not-a-credential"


class TruncatedCredentialError(MalformedCredentialError):
    """The text ends early: a partial scan or a cut-off copy."""

    reason = "truncated"


class OversizedCredentialError(MalformedCredentialError):
    """Longer than any credential this verifier accepts (``max_length``)."""

    reason = "oversized"


class UnknownKeyError(CredentialError):
    """Signed with a key id this device does not hold."""

    reason = "unknown-key"


class BadSignatureError(CredentialError):
    """The signature does not match the content: forged or altered."""

    reason = "bad-signature"


class WrongAudienceError(CredentialError):
    """Issued for another device."""

    reason = "wrong-audience"


class ExpiredCredentialError(CredentialError):
    """Past its ``exp`` (plus the clock-skew margin)."""

    reason = "expired"


class NotYetValidError(CredentialError):
    """Before its ``nbf`` (minus the clock-skew margin)."""

    reason = "not-yet-valid"


class RevokedCredentialError(CredentialError):
    """Its ``cti`` is on the revocation list."""

    reason = "revoked"


class AlreadyUsedError(CredentialError):
    """Its ``cti`` was already used on this device."""

    reason = "already-used"


class NotACertificateError(CredentialError):
    """A genuine credential of another kind (a locker code) where a certificate QR was expected."""

    reason = "not-a-certificate"


class CredentialKeyError(LinliError, ValueError):
    """A key file is missing, unreadable or not an Ed25519 key."""


# --- keys ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyKey:
    """An Ed25519 public key and the key id credentials name it by."""

    kid: str
    public: Ed25519PublicKey

    @cached_property
    def cose_key(self) -> COSEKeyInterface:
        """The key as python-cwt wants it (built once per key object)."""
        return COSEKey.from_pem(self.public_pem(), alg="EdDSA", kid=self.kid)

    def public_pem(self) -> bytes:
        """SubjectPublicKeyInfo PEM."""
        return self.public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


@dataclass(frozen=True, repr=False)
class SigningKey:
    """An Ed25519 private key and its key id (the device id by default, DESIGN.md)."""

    kid: str
    private: Ed25519PrivateKey

    @cached_property
    def cose_key(self) -> COSEKeyInterface:
        """The key as python-cwt wants it (built once per key object)."""
        return COSEKey.from_pem(self.private_pem(), alg="EdDSA", kid=self.kid)

    @property
    def verify_key(self) -> VerifyKey:
        """The matching public key, same key id."""
        return VerifyKey(self.kid, self.private.public_key())

    def private_pem(self) -> bytes:
        """Unencrypted PKCS#8 PEM (protect the file, see :func:`save_signing_key`)."""
        return self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def __repr__(self) -> str:
        return f"SigningKey(kid={self.kid!r})"


def generate_signing_key(kid: str) -> SigningKey:
    """A fresh Ed25519 key pair."""
    if not kid:
        raise CredentialKeyError("a signing key needs a non-empty key id")
    return SigningKey(kid, Ed25519PrivateKey.generate())


def save_signing_key(key: SigningKey, path: str | Path) -> None:
    """Write the private key as PEM, readable by its owner only (0600) from the first byte."""
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), 0o600)  # the file may have existed with wider rights
        fh.write(key.private_pem())


def save_verify_key(key: VerifyKey, path: str | Path) -> None:
    """Write the public key as PEM."""
    Path(path).write_bytes(key.public_pem())


def _read_pem(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise CredentialKeyError(f"{path}: cannot read the {what} ({err.strerror})") from err


def load_signing_key(path: str | Path, kid: str) -> SigningKey:
    """Read an Ed25519 private key (PKCS#8 PEM, unencrypted)."""
    path = Path(path)
    pem = _read_pem(path, "Ed25519 private key")
    try:
        private = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise CredentialKeyError(f"{path}: not an unencrypted PEM private key") from err
    if not isinstance(private, Ed25519PrivateKey):
        raise CredentialKeyError(f"{path}: the key is not Ed25519")
    return SigningKey(kid, private)


def load_verify_key(path: str | Path, kid: str) -> VerifyKey:
    """Read an Ed25519 public key (SubjectPublicKeyInfo PEM)."""
    path = Path(path)
    pem = _read_pem(path, "Ed25519 public key")
    try:
        public = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm) as err:
        raise CredentialKeyError(f"{path}: not a PEM public key") from err
    if not isinstance(public, Ed25519PublicKey):
        raise CredentialKeyError(f"{path}: the key is not Ed25519")
    return VerifyKey(kid, public)


# --- claims -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CredentialClaims:
    """What a credential says. Times are NumericDate (integer Unix seconds); ``cti`` is unique.

    ``compartment`` is for locker credentials; ``digest`` and ``template`` for certificates.
    """

    kind: str
    sub: str
    nbf: int
    exp: int
    cti: bytes = field(default_factory=lambda: secrets.token_bytes(8))
    iat: int | None = None
    iss: str | None = None
    aud: str | None = None
    compartment: int | None = None
    digest: bytes | None = None
    template: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown credential kind {self.kind!r}; expected one of {KINDS}")
        if self.exp <= self.nbf:
            raise ValueError("a credential's exp must be after its nbf")
        if not self.cti:
            raise ValueError("a credential needs a non-empty cti")

    @property
    def cti_hex(self) -> str:
        """The unique id as lower-case hex: how revocation lists and used-lists name it."""
        return self.cti.hex()

    def to_cbor_map(self) -> dict[int, Any]:
        """The CWT claims set (integer labels), optional claims left out."""
        claims: dict[int, Any] = {
            _SUB: self.sub,
            _NBF: self.nbf,
            _EXP: self.exp,
            _CTI: self.cti,
            CLAIM_KIND: self.kind,
        }
        optional: dict[int, Any] = {
            _ISS: self.iss,
            _AUD: self.aud,
            _IAT: self.iat,
            CLAIM_COMPARTMENT: self.compartment,
            CLAIM_DIGEST: self.digest,
            CLAIM_TEMPLATE: self.template,
        }
        claims.update({k: v for k, v in optional.items() if v is not None})
        return claims

    def to_json(self) -> dict[str, Any]:
        """JSON-able view (bytes as hex), e.g. for ``linli certificate verify``."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "sub": self.sub,
            "iss": self.iss,
            "aud": self.aud,
            "nbf": self.nbf,
            "exp": self.exp,
            "iat": self.iat,
            "cti": self.cti_hex,
            "compartment": self.compartment,
            "digest": None if self.digest is None else self.digest.hex(),
            "template": self.template,
        }
        return {k: v for k, v in out.items() if v is not None}


def _claim(claims: Mapping[Any, Any], label: int, name: str, kind: type, required: bool) -> Any:
    value = claims.get(label)
    if value is None:
        if required:
            raise MalformedCredentialError(f"credential has no {name} claim")
        return None
    # bool is an int in Python but never a valid NumericDate or compartment.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise MalformedCredentialError(f"credential claim {name} has the wrong type")
    return value


def claims_from_cbor_map(claims: Any) -> CredentialClaims:
    """Typed claims from a decoded claims set; :class:`MalformedCredentialError` if they are not."""
    if not isinstance(claims, dict):
        raise MalformedCredentialError("credential payload is not a CWT claims map")
    values = {
        "sub": _claim(claims, _SUB, "sub", str, True),
        "nbf": _claim(claims, _NBF, "nbf", int, True),
        "exp": _claim(claims, _EXP, "exp", int, True),
        "cti": _claim(claims, _CTI, "cti", bytes, True),
        "kind": _claim(claims, CLAIM_KIND, "kind", str, True),
        "iss": _claim(claims, _ISS, "iss", str, False),
        "aud": _claim(claims, _AUD, "aud", str, False),
        "iat": _claim(claims, _IAT, "iat", int, False),
        "compartment": _claim(claims, CLAIM_COMPARTMENT, "compartment", int, False),
        "digest": _claim(claims, CLAIM_DIGEST, "digest", bytes, False),
        "template": _claim(claims, CLAIM_TEMPLATE, "template", str, False),
    }
    try:
        return CredentialClaims(**values)
    except ValueError as err:
        raise MalformedCredentialError(f"credential claims are inconsistent: {err}") from err


# --- issue and verify ---------------------------------------------------------------------------

_COSE_SIGN = COSE.new(alg_auto_inclusion=False, kid_auto_inclusion=False)


def issue(claims: CredentialClaims, key: SigningKey) -> str:
    """Sign ``claims``: ``"LQ1:" + base45(COSE_Sign1)`` with the key id in the protected header."""
    payload = cbor2.dumps(claims.to_cbor_map(), canonical=True)
    protected = {_ALG: _EDDSA, _KID: key.kid.encode("utf-8")}
    signed = _COSE_SIGN.encode_and_sign(payload, key.cose_key, protected=protected)
    assert isinstance(signed, bytes)
    encoded: bytes = base45.b45encode(signed)
    return PREFIX + encoded.decode("ascii")


@dataclass(frozen=True)
class _Sign1:
    tagged: Any
    kid: str
    payload: bytes


def _cbor(raw: bytes, what: str) -> Any:
    """One CBOR item filling ``raw`` exactly (cbor2.loads alone ignores trailing bytes)."""
    stream = io.BytesIO(raw)
    try:
        item = cbor2.CBORDecoder(stream).decode()
    except cbor2.CBORDecodeEOF as err:
        raise TruncatedCredentialError(f"credential {what} ends early: scan it again") from err
    except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError) as err:
        raise MalformedCredentialError(f"credential {what} is not valid CBOR") from err
    if stream.tell() != len(raw):
        raise MalformedCredentialError(f"credential {what} has trailing bytes")
    return item


def _outer(text: str, max_length: int = MAX_TEXT_LENGTH) -> list[Any]:
    """Prefix, base45, CBOR and the COSE_Sign1 array, checked before any cryptography."""
    if not isinstance(text, str) or not text.startswith(PREFIX):
        raise NotACredentialError(f"not a Linli credential (the text must start with {PREFIX})")
    if len(text) > max_length:
        raise OversizedCredentialError(
            f"credential text is {len(text)} characters, more than the {max_length} accepted"
        )
    if len(text) == len(PREFIX):
        raise TruncatedCredentialError("credential is empty after its prefix")
    body = text[len(PREFIX) :]
    try:
        raw = base45.b45decode(body)
    except (ValueError, TypeError, binascii.Error) as err:
        if len(body) % 3 and base45_alphabet_only(body):
            # base45 packs 2 bytes in 3 characters (1 in a final 2): a text of valid characters
            # that fails to decode with a partial last group was cut inside that group.
            raise TruncatedCredentialError("credential text ends early: scan it again") from err
        raise MalformedCredentialError("credential is not valid base45") from err
    message = _cbor(raw, "body")
    if isinstance(message, cbor2.CBORTag):
        if message.tag != _SIGN1_TAG:
            raise MalformedCredentialError(f"credential has CBOR tag {message.tag}, not COSE_Sign1")
        message = message.value
    # RFC 9052 allows the untagged form when the context says what it is.
    if not (isinstance(message, list) and len(message) == 4):
        raise MalformedCredentialError("credential is not a COSE_Sign1 structure")
    return message


_BASE45_ALPHABET = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:")


def base45_alphabet_only(text: str) -> bool:
    """Whether every character of ``text`` is one base45 uses (QR alphanumeric mode)."""
    return _BASE45_ALPHABET.issuperset(text)


def _parse_sign1(text: str, max_length: int = MAX_TEXT_LENGTH) -> _Sign1:
    """Every malformed input gets one clear :class:`MalformedCredentialError`."""
    protected_raw, unprotected, payload, signature = _outer(text, max_length)
    if not (
        isinstance(protected_raw, bytes)
        and isinstance(unprotected, dict)
        and isinstance(payload, bytes)
        and isinstance(signature, bytes)
    ):
        raise MalformedCredentialError("credential COSE_Sign1 fields have the wrong types")
    if unprotected:
        # Nothing unsigned is accepted: every header of this profile is in the protected one.
        raise MalformedCredentialError("credential has an unprotected header; it must be empty")
    protected = _cbor(protected_raw, "protected header") if protected_raw else {}
    if not isinstance(protected, dict) or protected.get(_ALG) != _EDDSA:
        raise MalformedCredentialError("credential is not signed with EdDSA (alg -8)")
    kid = protected.get(_KID)
    if not isinstance(kid, bytes):
        raise MalformedCredentialError("credential has no key id in its protected header")
    try:
        kid_text = kid.decode("utf-8")
    except UnicodeDecodeError as err:
        raise MalformedCredentialError("credential key id is not UTF-8") from err
    tagged = cbor2.CBORTag(_SIGN1_TAG, [protected_raw, unprotected, payload, signature])
    return _Sign1(tagged, kid_text, payload)


def key_id_of(text: str) -> str:
    """The key id a credential names (unverified): lets a verifier pick or fetch the key."""
    return _parse_sign1(text.strip() if isinstance(text, str) else text).kid


_COSE_VERIFY = COSE.new(verify_kid=True)


def _check_signature(sign1: _Sign1, key: VerifyKey) -> None:
    try:
        _COSE_VERIFY.decode(sign1.tagged, key.cose_key)
    except Exception as err:  # python-cwt raises VerifyError, ValueError, ...
        raise BadSignatureError(
            f"credential signature does not verify with key {sign1.kid!r}: forged or altered"
        ) from err


def _signed_claims(text: str, keys: Mapping[str, VerifyKey], max_length: int) -> CredentialClaims:
    """Structure, key, signature, claim types: everything that does not depend on the use."""
    sign1 = _parse_sign1(text.strip() if isinstance(text, str) else text, max_length)
    key = keys.get(sign1.kid)
    if key is None:
        raise UnknownKeyError(
            f"credential is signed with unknown key id {sign1.kid!r}; provision the server's "
            "public key or refresh the key list"
        )
    if key.kid != sign1.kid:  # the mapping's key names the key; python-cwt compares kid too
        key = VerifyKey(sign1.kid, key.public)
    _check_signature(sign1, key)
    return claims_from_cbor_map(_cbor(sign1.payload, "payload"))


def _check_time(claims: CredentialClaims, now: float, skew_s: float) -> None:
    if now + skew_s < claims.nbf:
        raise NotYetValidError(
            f"credential is not valid before {claims.nbf} (now {int(now)}); check the clock",
            claims.cti_hex,
            claims,
        )
    if now - skew_s >= claims.exp:
        raise ExpiredCredentialError(
            f"credential expired at {claims.exp} (now {int(now)}); ask for a new one",
            claims.cti_hex,
            claims,
        )


def verify(
    text: str,
    keys: Mapping[str, VerifyKey],
    *,
    audience: str | None,
    now: float,
    skew_s: float = 60,
    revoked: Container[str] = (),
    seen: Container[str] = (),
    max_length: int = MAX_TEXT_LENGTH,
) -> CredentialClaims:
    """Check a scanned credential offline and return its claims, or raise why it is refused.

    ``audience`` is this device's id (None skips the check, e.g. on the server for certificates);
    ``revoked`` and ``seen`` hold ``cti`` values as lower-case hex; a text longer than
    ``max_length`` characters is refused before it is decoded.
    """
    claims = _signed_claims(text, keys, max_length)
    cti = claims.cti_hex
    if audience is not None and claims.aud != audience:
        raise WrongAudienceError(
            f"credential is for {claims.aud or 'no device'!s}, not for {audience}", cti, claims
        )
    _check_time(claims, now, skew_s)
    if cti in revoked:
        raise RevokedCredentialError(f"credential {cti} has been revoked", cti, claims)
    if cti in seen:
        raise AlreadyUsedError(f"credential {cti} was already used", cti, claims)
    return claims


# --- certificates -------------------------------------------------------------------------------


def verify_certificate(
    text: str,
    keys: Mapping[str, VerifyKey],
    *,
    now: float,
    revoked_serials: Container[str] = (),
    skew_s: float = 0,
    max_length: int = MAX_TEXT_LENGTH,
) -> CredentialClaims:
    """Check the verification QR of a printed certificate (docs/certificates.md).

    One check for every certificate verifier (the server's public page, ``linli certificate
    verify``): the text must be a credential of kind ``certificate`` with a ``template`` claim,
    signed by one of ``keys``, not revoked (``revoked_serials`` holds serials, i.e. ``sub``; any
    object with ``in`` will do, such as a database lookup, which is then asked only about genuine
    certificates) and inside ``nbf``..``exp``. The kind is checked first, so an old locker code
    is "not a certificate" rather than "expired"; revocation before the dates, so a withdrawn
    paper says so even when it has also run out. Refusals after the signature carry ``claims``.
    """
    claims = _signed_claims(text, keys, max_length)
    cti = claims.cti_hex
    if claims.kind != "certificate":
        raise NotACertificateError(
            f"credential is a {claims.kind!r} locker code, not a certificate", cti, claims
        )
    if not claims.template:
        raise MalformedCredentialError("certificate credential has no template claim", cti)
    if claims.sub in revoked_serials:
        raise RevokedCredentialError(f"certificate {claims.sub} has been revoked", cti, claims)
    _check_time(claims, now, skew_s)
    return claims


def verification_url(base_url: str, text: str) -> str:
    """A URL that opens the server's verification page for a certificate QR text.

    ``{base_url}/V/{text}`` with ``%``, space and ``/`` escaped (``%25``, ``%20``, ``%2F``): the
    other base45 characters are legal in a URL path, and escaping ``/`` keeps the text one path
    segment, so no browser can take a ``/../`` inside it for a dot segment and drop part of it.
    The escapes use QR alphanumeric characters only, so with an upper-case ``base_url``
    (``HTTPS://LINLI.EXAMPLE``; scheme and host are case-insensitive) the whole URL still fits
    the QR code's compact alphanumeric mode.
    """
    if not isinstance(text, str) or not text.startswith(PREFIX):
        raise NotACredentialError(f"not a Linli credential (the text must start with {PREFIX})")
    escaped = text.replace("%", "%25").replace(" ", "%20").replace("/", "%2F")
    return f"{base_url.rstrip('/')}/V/{escaped}"
