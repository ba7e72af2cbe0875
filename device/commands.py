"""Signed commands on ``down/cmd`` and their results on ``up/cmd-result`` (docs/commands.md): pure.

A command is a COSE_Sign1 (EdDSA/Ed25519, the server key id in the protected header, as
credentials are, device/credential.py) around a CBOR map of CWT-style claims: id (``cti``), the
device it is for (``aud``), ``iat``, ``exp`` and private claims for the command type and its
arguments. A broker that is compromised can drop or repeat commands but cannot make one up or send
one to another device. :func:`verify_command` turns every way the bytes can be wrong into one
:class:`CommandError` subclass with a stable ``reason`` code for the audit event. Time is passed in.
This module is a shared message schema: the server imports it to sign and to read results.
"""

from __future__ import annotations

import io
import json
import math
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Final, Literal

import cbor2
from cwt import COSE
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from device.credential import SigningKey, VerifyKey
from device.errors import LinliError
from device.protocol import NotJSONError, OversizeError, SchemaError, valid_device_id

__all__ = [
    "COMMAND_TYPE",
    "CONTENT_TYPE",
    "ID_BYTES",
    "MAX_COMMAND_BYTES",
    "MAX_RESULT_BYTES",
    "MAX_TTL_S",
    "REASONS",
    "Command",
    "CommandError",
    "CommandResult",
    "ExpiredCommandError",
    "ForgedCommandError",
    "MalformedCommandError",
    "NotYetValidCommandError",
    "OversizeCommandError",
    "ResultStatus",
    "UnknownCommandKeyError",
    "WrongDeviceCommandError",
    "check_args",
    "encode_result",
    "new_command_id",
    "parse_result",
    "sign_command",
    "verify_command",
]

MAX_COMMAND_BYTES: Final = 16 * 1024
"""A ``down/cmd`` payload is at most 16 KiB; anything longer is refused before it is parsed."""
MAX_RESULT_BYTES: Final = 16 * 1024
"""An ``up/cmd-result`` payload is at most 16 KiB."""
MAX_TTL_S: Final = 7 * 24 * 3600
"""The longest a command may stay valid (``exp - iat``): a command is for now, not next month."""
MAX_ARGS_DEPTH: Final = 16
ID_BYTES: Final = 16
"""A command id is 16 random bytes: 32 hex characters, the server's ``commands.id``."""

CONTENT_TYPE: Final = "application/vnd.linli.cmd+cbor"
"""COSE content type (protected header label 3). A credential signed with the same server key has
none, so it can never pass as a command, nor a command as a credential (different claims)."""

COMMAND_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
"""A dotted lower-case name with at least two parts, like ``locker.open``."""
MAX_TYPE_LENGTH: Final = 64

REASONS: Final = (
    "malformed",
    "oversize",
    "unknown-key",
    "forged",
    "wrong-device",
    "not-yet-valid",
    "expired",
    "replayed",
    "unknown-type",
    "failed",
)
"""Every ``reason`` code a refused or failed command can carry (audit events and results)."""

# COSE / CWT labels (RFC 9052 section 3.1, RFC 8392 section 3.1).
_ALG, _CONTENT_TYPE, _KID = 1, 3, 4
_EDDSA = -8
_SIGN1_TAG = 18
_AUD, _EXP, _IAT, _CTI = 3, 4, 6, 7
# Private-use claim labels (below -65536), after the credentials' -65537..-65540.
CLAIM_TYPE: Final = -65601
CLAIM_ARGS: Final = -65602


class CommandError(LinliError, ValueError):
    """A ``down/cmd`` payload was refused; ``reason`` is a stable code for the audit event.

    ``command_id`` and ``command_type`` are set only once the signature is verified: an unsigned
    claim to be command X must never be able to mark the real command X refused.
    """

    reason = "malformed"

    def __init__(
        self, message: str, command_id: str | None = None, command_type: str | None = None
    ) -> None:
        super().__init__(message)
        self.command_id = command_id
        self.command_type = command_type


class MalformedCommandError(CommandError):
    """Not a Linli command: bad CBOR, not COSE_Sign1, wrong headers, claims missing or mistyped."""

    reason = "malformed"


class OversizeCommandError(MalformedCommandError):
    """Larger than :data:`MAX_COMMAND_BYTES`: refused before any parsing."""

    reason = "oversize"


class UnknownCommandKeyError(CommandError):
    """Signed with a key id this device does not hold."""

    reason = "unknown-key"


class ForgedCommandError(CommandError):
    """The signature does not verify with the named key: forged or altered."""

    reason = "forged"


class WrongDeviceCommandError(CommandError):
    """Validly signed, but for another device (``aud``)."""

    reason = "wrong-device"


class NotYetValidCommandError(CommandError):
    """Issued in the future (``iat`` beyond now plus the clock-skew margin): check the clock."""

    reason = "not-yet-valid"


class ExpiredCommandError(CommandError):
    """Past its ``exp`` (plus the clock-skew margin)."""

    reason = "expired"


@dataclass(frozen=True)
class Command:
    """A verified command. ``id`` is lower-case hex; times are integer Unix seconds."""

    id: str
    device: str
    type: str
    args: Mapping[str, Any] = field(repr=False)
    iat: int
    exp: int
    kid: str = ""


# --- arguments -----------------------------------------------------------------------------------


def _check_value(value: Any, depth: int) -> None:
    if depth > MAX_ARGS_DEPTH:
        raise ValueError(f"nested deeper than {MAX_ARGS_DEPTH} levels")
    if value is None or isinstance(value, str | bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("holds NaN or infinity")
        return
    if isinstance(value, list):
        for item in value:
            _check_value(item, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError("has a map key that is not text")
            _check_value(item, depth + 1)
        return
    raise ValueError(f"holds a {type(value).__name__}, which JSON cannot carry")


def check_args(args: Any, what: str = "command args") -> dict[str, Any]:
    """``args`` as a plain dict if it is a text-keyed map of JSON values, else ``ValueError``.

    Arguments travel as JSON on the server and as CBOR on the wire, so only values both carry
    the same way are allowed (no bytes, tags, NaN; integers within 64 bits).
    """
    if not isinstance(args, Mapping):
        raise ValueError(f"{what} must be a map, got {type(args).__name__}")
    plain = dict(args)
    try:
        _check_value(plain, 0)
        json.dumps(plain, allow_nan=False)
    except (ValueError, TypeError, RecursionError) as err:
        raise ValueError(f"{what} {err}") from err
    if any(isinstance(v, int) and not -(2**63) <= v < 2**64 for v in _ints(plain)):
        raise ValueError(f"{what} holds an integer outside 64 bits")
    return plain


def _ints(value: Any) -> list[int]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        return [i for item in value for i in _ints(item)]
    if isinstance(value, dict):
        return [i for item in value.values() for i in _ints(item)]
    return []


# --- sign ----------------------------------------------------------------------------------------

_COSE_SIGN = COSE.new(alg_auto_inclusion=False, kid_auto_inclusion=False)
_COSE_VERIFY = COSE.new(verify_kid=True)


def new_command_id() -> str:
    """A fresh random command id (32 lower-case hex characters)."""
    return secrets.token_hex(ID_BYTES)


def sign_command(
    key: SigningKey,
    *,
    device_id: str,
    type: str,
    args: Mapping[str, Any],
    now: float,
    ttl_s: float,
    command_id: str | None = None,
) -> bytes:
    """The ``down/cmd`` payload: COSE_Sign1 bytes of a command for ``device_id``, valid from
    ``now`` for ``ttl_s`` seconds. ``ValueError`` (naming the field) on an argument that cannot be
    signed; the result always fits :data:`MAX_COMMAND_BYTES` or this raises."""
    if not valid_device_id(device_id):
        raise ValueError(f"device id {device_id!r} is invalid: 1 to 64 of A-Z a-z 0-9 _ . -")
    if not isinstance(type, str) or len(type) > MAX_TYPE_LENGTH or not COMMAND_TYPE.fullmatch(type):
        raise ValueError(
            f"command type {type!r} must be a dotted lower-case name like 'locker.open' "
            f"(at most {MAX_TYPE_LENGTH} characters)"
        )
    if not math.isfinite(now) or not math.isfinite(ttl_s) or not 1 <= ttl_s <= MAX_TTL_S:
        raise ValueError(f"ttl_s must be between 1 and {MAX_TTL_S} seconds, got {ttl_s}")
    command_id = new_command_id() if command_id is None else command_id
    try:
        cti = bytes.fromhex(command_id)
    except (ValueError, TypeError) as err:
        raise ValueError("command_id must be hex") from err
    if len(cti) != ID_BYTES or command_id != cti.hex():
        raise ValueError(f"command_id must be {2 * ID_BYTES} lower-case hex characters")
    iat = math.floor(now)
    claims = {
        _AUD: device_id,
        _IAT: iat,
        _EXP: iat + math.ceil(ttl_s),
        _CTI: cti,
        CLAIM_TYPE: type,
        CLAIM_ARGS: check_args(args),
    }
    payload = cbor2.dumps(claims, canonical=True)
    protected = {_ALG: _EDDSA, _CONTENT_TYPE: CONTENT_TYPE, _KID: key.kid.encode("utf-8")}
    signed = _COSE_SIGN.encode_and_sign(payload, key.cose_key, protected=protected)
    assert isinstance(signed, bytes)
    if len(signed) > MAX_COMMAND_BYTES:
        raise ValueError(
            f"the signed command is {len(signed)} bytes; at most {MAX_COMMAND_BYTES} fit down/cmd "
            "(send large data as a document instead)"
        )
    return signed


# --- verify --------------------------------------------------------------------------------------


def _cbor(raw: bytes, what: str) -> Any:
    """One CBOR item filling ``raw`` exactly (cbor2.loads alone ignores trailing bytes)."""
    stream = io.BytesIO(raw)
    try:
        item = cbor2.CBORDecoder(stream).decode()
    except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError, OverflowError) as err:
        raise MalformedCommandError(f"command {what} is not valid CBOR") from err
    if stream.tell() != len(raw):
        raise MalformedCommandError(f"command {what} has trailing bytes")
    return item


@dataclass(frozen=True)
class _Sign1:
    tagged: cbor2.CBORTag
    kid: str
    payload: bytes


def _parse_sign1(raw: bytes) -> _Sign1:
    """Size, CBOR, COSE_Sign1 structure and protected header, all before any cryptography."""
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise MalformedCommandError(f"a command is bytes, got {type(raw).__name__}")
    raw = bytes(raw)
    if len(raw) > MAX_COMMAND_BYTES:
        raise OversizeCommandError(
            f"command is {len(raw)} bytes; at most {MAX_COMMAND_BYTES} allowed"
        )
    if not raw:
        raise MalformedCommandError("command is empty")
    message = _cbor(raw, "body")
    if isinstance(message, cbor2.CBORTag):
        if message.tag != _SIGN1_TAG:
            raise MalformedCommandError(f"command has CBOR tag {message.tag}, not COSE_Sign1")
        message = message.value
    if not (isinstance(message, list) and len(message) == 4):
        raise MalformedCommandError("command is not a COSE_Sign1 structure")
    protected_raw, unprotected, payload, signature = message
    if not (
        isinstance(protected_raw, bytes)
        and isinstance(unprotected, dict)
        and isinstance(payload, bytes)
        and isinstance(signature, bytes)
    ):
        raise MalformedCommandError("command COSE_Sign1 fields have the wrong types")
    if unprotected:
        raise MalformedCommandError("command has an unprotected header; it must be empty")
    protected = _cbor(protected_raw, "protected header") if protected_raw else {}
    if not isinstance(protected, dict) or protected.get(_ALG) != _EDDSA:
        raise MalformedCommandError("command is not signed with EdDSA (alg -8)")
    if protected.get(_CONTENT_TYPE) != CONTENT_TYPE:
        raise MalformedCommandError(f"command content type is not {CONTENT_TYPE}")
    kid = protected.get(_KID)
    if not isinstance(kid, bytes) or not kid:
        raise MalformedCommandError("command has no key id in its protected header")
    try:
        kid_text = kid.decode("utf-8")
    except UnicodeDecodeError as err:
        raise MalformedCommandError("command key id is not UTF-8") from err
    tagged = cbor2.CBORTag(_SIGN1_TAG, [protected_raw, unprotected, payload, signature])
    return _Sign1(tagged, kid_text, payload)


_SAFE_KID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def _printable(kid: str) -> str:
    """A key id for an error message: it comes from unverified bytes, so only a plain one is
    quoted (log lines must not carry arbitrary payload content)."""
    return repr(kid) if _SAFE_KID.fullmatch(kid) else "(not a plain key id)"


def _check_signature(sign1: _Sign1, key: VerifyKey) -> None:
    try:
        _COSE_VERIFY.decode(sign1.tagged, key.cose_key)
    except Exception as err:  # python-cwt raises VerifyError, DecodeError, ValueError...
        raise ForgedCommandError(
            f"command signature does not verify with key {_printable(sign1.kid)}: forged or altered"
        ) from err


def _claim(claims: Mapping[Any, Any], label: int, name: str, kind: type) -> Any:
    value = claims.get(label)
    # bool is an int in Python but never a valid NumericDate.
    if value is None or not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise MalformedCommandError(f"command claim {name} is missing or has the wrong type")
    return value


def _command(sign1: _Sign1) -> Command:
    claims = _cbor(sign1.payload, "payload")
    if not isinstance(claims, dict):
        raise MalformedCommandError("command payload is not a claims map")
    cti = _claim(claims, _CTI, "cti", bytes)
    if len(cti) != ID_BYTES:
        raise MalformedCommandError(f"command id is not {ID_BYTES} bytes")
    device = _claim(claims, _AUD, "aud", str)
    type_ = _claim(claims, CLAIM_TYPE, "type", str)
    iat = _claim(claims, _IAT, "iat", int)
    exp = _claim(claims, _EXP, "exp", int)
    if len(type_) > MAX_TYPE_LENGTH or not COMMAND_TYPE.fullmatch(type_):
        raise MalformedCommandError("command type is not a dotted lower-case name")
    if not 0 < exp - iat <= MAX_TTL_S:
        raise MalformedCommandError(f"command lifetime (exp - iat) is not 1 to {MAX_TTL_S} s")
    try:
        args = check_args(claims.get(CLAIM_ARGS))
    except ValueError as err:
        raise MalformedCommandError(f"command args are not usable: {err}") from err
    return Command(cti.hex(), device, type_, args, iat, exp, sign1.kid)


def verify_command(
    raw: bytes,
    keys: Mapping[str, VerifyKey],
    *,
    device_id: str,
    now: float,
    skew_s: float = 60.0,
) -> Command:
    """Check a ``down/cmd`` payload and return the command, or raise why it is refused.

    Order: size, structure, key id, signature, claims, device, not-yet-valid, expiry. Replay
    (a command id already run) is the caller's check, against the store's inbox. Only
    :class:`CommandError` subclasses leave this function, whatever the bytes.
    """
    sign1 = _parse_sign1(raw)
    key = keys.get(sign1.kid)
    if key is None:
        raise UnknownCommandKeyError(
            f"command is signed with unknown key id {_printable(sign1.kid)}; provision the "
            "server's public key on this device"
        )
    if key.kid != sign1.kid:  # the mapping's key names the key; python-cwt compares kid too
        key = VerifyKey(sign1.kid, key.public)
    _check_signature(sign1, key)
    command = _command(sign1)
    if command.device != device_id:
        raise WrongDeviceCommandError(
            f"command {command.id} is for device {command.device}, not {device_id}",
            command.id,
            command.type,
        )
    if now + skew_s < command.iat:
        raise NotYetValidCommandError(
            f"command {command.id} is issued at {command.iat}, after now ({int(now)}) plus "
            f"{skew_s:g} s; check this device's clock",
            command.id,
            command.type,
        )
    if now - skew_s >= command.exp:
        raise ExpiredCommandError(
            f"command {command.id} expired at {command.exp} (now {int(now)}); the server must "
            "issue it again",
            command.id,
            command.type,
        )
    return command


# --- results (up/cmd-result) ---------------------------------------------------------------------

CommandId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
Reason = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[a-z][a-z-]*$")]
ResultStatus = Literal["succeeded", "failed", "refused"]


class CommandResult(BaseModel):
    """``up/cmd-result``: ``{id, status, reason?, result?}``.

    ``id`` is null only for a refusal of something whose signature did not verify (there is no
    command to name). ``reason`` is set for ``failed`` and ``refused``; ``result`` is the
    executor's map for ``succeeded`` (``{"error": ExceptionClass}`` for ``failed``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    id: CommandId | None
    status: ResultStatus
    reason: Reason | None = None
    result: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> CommandResult:
        if self.status != "refused" and self.id is None:
            raise ValueError(f"a {self.status} result needs the command id")
        if self.status == "succeeded" and self.reason is not None:
            raise ValueError("a succeeded result has no reason")
        if self.status != "succeeded" and self.reason is None:
            raise ValueError(f"a {self.status} result needs a reason")
        return self


def encode_result(result: CommandResult) -> bytes:
    """Compact UTF-8 JSON of a result, null fields left out (``id`` is always there)."""
    body = {"id": result.id, **result.model_dump(exclude_none=True)}
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_result(payload: bytes) -> CommandResult:
    """Validate an ``up/cmd-result`` payload; ``device.protocol`` ``MessageError`` subclasses
    (oversize, not JSON, wrong shape) that never echo payload values."""
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise NotJSONError(f"up/cmd-result payload must be bytes, got {type(payload).__name__}")
    if len(payload) > MAX_RESULT_BYTES:
        raise OversizeError(
            f"up/cmd-result payload is {len(payload)} bytes; at most {MAX_RESULT_BYTES} allowed"
        )
    try:
        value = json.loads(bytes(payload).decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as err:
        raise NotJSONError(f"up/cmd-result payload is not UTF-8 (byte {err.start})") from err
    except RecursionError as err:
        raise NotJSONError("up/cmd-result payload nests too deeply") from err
    except ValueError as err:
        raise NotJSONError("up/cmd-result payload is not JSON") from err
    try:
        return CommandResult.model_validate(value)
    except ValidationError as err:
        problems = "; ".join(
            ".".join(str(p) for p in problem["loc"]) + ": " + problem["msg"]
            for problem in err.errors(
                include_url=False, include_input=False, include_context=False
            )[:5]
        )
        raise SchemaError(f"up/cmd-result payload has the wrong shape: {problems}") from err
