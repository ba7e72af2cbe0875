"""Message schemas shared by devices and the sync server (DESIGN.md section 3): pure, no I/O.

Every ``parse_*`` function takes the raw MQTT payload and returns a validated model, or raises a
:class:`MessageError` subclass: :class:`OversizeError` (over the topic's documented maximum),
:class:`NotJSONError` (not UTF-8 JSON) or :class:`SchemaError` (JSON of the wrong shape). Error
messages name the field and the problem but never echo payload values (they may be personal data).
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import json
import re
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from device.errors import ProtocolError

TOPIC_ROOT = "linli/v1/dev"
DEVICE_ID_PATTERN = r"^[A-Za-z0-9_.-]+$"
"""Same rule as ``[device] id`` in device/config.py; it also keeps MQTT wildcards out of topics."""
MAX_DEVICE_ID_LENGTH = 64
TOPICS = (
    "up/events",
    "up/cmd-result",
    "up/state",
    "up/sync-req",
    "up/rpc",
    "down/ack",
    "down/cmd",
    "down/sync",
    "down/rpc",
)

MAX_EVENTS_BATCH_BYTES = 256 * 1024
"""An ``up/events`` payload is at most 256 KiB (the agent sizes batches below it)."""
MAX_EVENTS_PER_BATCH = 1000
MAX_ACK_BYTES = 1024
MAX_SYNC_REQUEST_BYTES = 1024
MAX_SYNC_BYTES = 16 * 1024 * 1024
"""A ``down/sync`` payload (a residents snapshot can be large) is at most 16 MiB."""
MAX_SEQ = 2**63 - 1

DOCUMENT_NAMES = ("residents", "catalogue", "notices", "revocations", "config")

_DEVICE_ID = re.compile(DEVICE_ID_PATTERN)


class MessageError(ProtocolError):
    """A payload on a Linli topic was refused."""


class OversizeError(MessageError):
    """The payload is larger than the topic allows."""


class NotJSONError(MessageError):
    """The payload is not UTF-8 JSON."""


class SchemaError(MessageError):
    """The payload is JSON but not the message the topic carries."""


def valid_device_id(device_id: str) -> bool:
    return (
        isinstance(device_id, str)
        and 0 < len(device_id) <= MAX_DEVICE_ID_LENGTH
        and _DEVICE_ID.fullmatch(device_id) is not None
    )


def topic(device_id: str, suffix: str) -> str:
    """``topic("kiosk-01", "up/events")`` -> ``linli/v1/dev/kiosk-01/up/events``."""
    if not valid_device_id(device_id):
        raise MessageError(
            f"device id {device_id!r} is invalid: 1 to {MAX_DEVICE_ID_LENGTH} characters of "
            "A-Z a-z 0-9 _ . -"
        )
    if suffix not in TOPICS:
        raise MessageError(f"unknown topic {suffix!r}; known: {', '.join(TOPICS)}")
    return f"{TOPIC_ROOT}/{device_id}/{suffix}"


DeviceId = Annotated[
    str, Field(min_length=1, max_length=MAX_DEVICE_ID_LENGTH, pattern=DEVICE_ID_PATTERN)
]
Seq = Annotated[int, Field(ge=1, le=MAX_SEQ)]
Version = Annotated[int, Field(ge=0, le=MAX_SEQ)]
DocName = Literal["residents", "catalogue", "notices", "revocations", "config"]
ItemKey = Annotated[str, Field(min_length=1, max_length=256)]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class EventMessage(_Message):
    seq: Seq
    id: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
    type: Annotated[str, Field(max_length=64, pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")]
    at: Annotated[float, Field(ge=0)]
    data: dict[str, Any]


class EventBatch(_Message):
    """``up/events``: ``{device, boot, events: [{seq, id, type, at, data}]}``, seqs increasing."""

    device: DeviceId
    boot: Annotated[int, Field(ge=1, le=MAX_SEQ)]
    events: Annotated[list[EventMessage], Field(min_length=1, max_length=MAX_EVENTS_PER_BATCH)]

    @model_validator(mode="after")
    def _seqs_increase(self) -> EventBatch:
        seqs = [event.seq for event in self.events]
        if any(b <= a for a, b in itertools.pairwise(seqs)):
            raise ValueError("events must be in strictly increasing seq order")
        return self


class Ack(_Message):
    """``down/ack``: the highest contiguous seq the server stores durably."""

    seq: Annotated[int, Field(ge=0, le=MAX_SEQ)]


class SyncRequest(_Message):
    """``up/sync-req``: the device has ``version`` of ``doc`` and asks for what is newer."""

    doc: DocName
    version: Version


class DocumentDelta(_Message):
    """``down/sync`` delta: from exactly ``from_version`` to ``version``."""

    kind: Literal["delta"]
    doc: DocName
    from_version: Version
    version: Version
    upserts: dict[ItemKey, Any] = Field(default_factory=dict)
    deletes: list[ItemKey] = Field(default_factory=list)

    @model_validator(mode="after")
    def _forward(self) -> DocumentDelta:
        if self.version <= self.from_version:
            raise ValueError("a delta's version must be greater than its from_version")
        if set(self.deletes) & set(self.upserts):
            raise ValueError("a key cannot be both upserted and deleted in one delta")
        return self


class DocumentSnapshot(_Message):
    """``down/sync`` snapshot: the whole document at ``version``."""

    kind: Literal["snapshot"]
    doc: DocName
    version: Annotated[int, Field(ge=1, le=MAX_SEQ)]
    items: dict[ItemKey, Any]


SyncMessage = Annotated[DocumentDelta | DocumentSnapshot, Field(discriminator="kind")]
_SYNC = TypeAdapter[DocumentDelta | DocumentSnapshot](SyncMessage)

M = TypeVar("M", bound=BaseModel)


def encode(message: BaseModel) -> bytes:
    """Compact UTF-8 JSON of a message."""
    return message.model_dump_json().encode()


def parse_events(payload: bytes) -> EventBatch:
    return _parse(payload, "up/events", MAX_EVENTS_BATCH_BYTES, EventBatch)


def parse_ack(payload: bytes) -> Ack:
    return _parse(payload, "down/ack", MAX_ACK_BYTES, Ack)


def parse_sync_request(payload: bytes) -> SyncRequest:
    return _parse(payload, "up/sync-req", MAX_SYNC_REQUEST_BYTES, SyncRequest)


def parse_sync(payload: bytes) -> DocumentDelta | DocumentSnapshot:
    value = _load(payload, "down/sync", MAX_SYNC_BYTES)
    try:
        return _SYNC.validate_python(value)
    except ValidationError as err:
        raise SchemaError(f"down/sync payload has the wrong shape: {_problems(err)}") from err


def _parse(payload: bytes, name: str, limit: int, model: type[M]) -> M:
    value = _load(payload, name, limit)
    try:
        return model.model_validate(value)
    except ValidationError as err:
        raise SchemaError(f"{name} payload has the wrong shape: {_problems(err)}") from err


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _load(payload: bytes, name: str, limit: int) -> Any:
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise NotJSONError(f"{name} payload must be bytes, got {type(payload).__name__}")
    if len(payload) > limit:
        raise OversizeError(f"{name} payload is {len(payload)} bytes; at most {limit} allowed")
    try:
        text = bytes(payload).decode("utf-8")
        return json.loads(text, parse_constant=_reject_constant)
    except UnicodeDecodeError as err:
        raise NotJSONError(f"{name} payload is not UTF-8 (byte {err.start})") from err
    except RecursionError as err:
        raise NotJSONError(f"{name} payload nests too deeply") from err
    except ValueError as err:  # JSONDecodeError, NaN/Infinity, over-long integers
        raise NotJSONError(f"{name} payload is not JSON: {_short(err)}") from err


def _short(err: ValueError) -> str:
    if isinstance(err, json.JSONDecodeError):
        return f"{err.msg} at character {err.pos}"
    return str(err).split(":")[0][:120]


@functools.cache
def _field_names() -> frozenset[str]:
    """Every field name of the protocol's messages (and pydantic's union tags)."""
    names: set[str] = {"delta", "snapshot", "function-after", "list", "dict"}
    pending: list[type[BaseModel]] = [_Message]
    while pending:
        model = pending.pop()
        names.update(model.model_fields)
        pending.extend(model.__subclasses__())
    return frozenset(names)


def _problems(err: ValidationError) -> str:
    parts = []
    names = _field_names()
    for problem in err.errors(include_url=False, include_input=False, include_context=False)[:5]:
        # A location part that is not a field name is payload text (a dict key, an unexpected
        # field's name) and may be personal data: error messages end up in logs.
        where = ".".join(
            str(p) if isinstance(p, int) or p in names else "<key>" for p in problem["loc"]
        )
        where = where or "(message)"
        parts.append(f"{where}: {problem['msg']}")
    more = err.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


# ------------------------------------------------------------------ request/response (docs/rpc.md)

MAX_RPC_BYTES = 64 * 1024
"""An ``up/rpc`` request or a ``down/rpc`` answer is at most 64 KiB: lookups, not transfers."""
MAX_RPC_METHOD_LENGTH = 64
MAX_RPC_ERROR_MESSAGE_LENGTH = 512
RPC_METHOD_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"
"""``area.name`` (``sys.ping``, ``residents.lookup``): lower case, at least two dotted parts."""
RPC_ERROR_CODE_PATTERN = r"^[a-z][a-z0-9-]*$"
"""``bad-request``, ``unknown-method``, ``internal``... (the server's codes are in docs/rpc.md)."""

RpcMethodName = Annotated[
    str, Field(min_length=3, max_length=MAX_RPC_METHOD_LENGTH, pattern=RPC_METHOD_PATTERN)
]


class RpcRequest(_Message):
    """``up/rpc``: call ``method`` with ``params``. The answer goes to the MQTT v5 response topic
    (always the device's own ``down/rpc``) with the request's correlation data."""

    method: RpcMethodName
    params: dict[str, Any] = Field(default_factory=dict)


class RpcErrorInfo(_Message):
    """Why a call failed: a stable ``code`` for programs, a ``message`` for the technician's log."""

    code: Annotated[str, Field(min_length=1, max_length=64, pattern=RPC_ERROR_CODE_PATTERN)]
    message: Annotated[str, Field(max_length=MAX_RPC_ERROR_MESSAGE_LENGTH)]


class RpcResponse(_Message):
    """``down/rpc``: ``{ok: true, result}`` or ``{ok: false, error: {code, message}}``."""

    ok: bool
    result: Any = None
    error: RpcErrorInfo | None = None

    @model_validator(mode="after")
    def _one_outcome(self) -> RpcResponse:
        if self.ok and self.error is not None:
            raise ValueError("an ok answer carries no error")
        if not self.ok and self.error is None:
            raise ValueError("a failed answer needs error {code, message}")
        if not self.ok and self.result is not None:
            raise ValueError("a failed answer carries no result")
        return self


def parse_rpc_request(payload: bytes) -> RpcRequest:
    return _parse(payload, "up/rpc", MAX_RPC_BYTES, RpcRequest)


def parse_rpc_response(payload: bytes) -> RpcResponse:
    return _parse(payload, "down/rpc", MAX_RPC_BYTES, RpcResponse)


# ------------------------------------------------------------- ID numbers (residents item keys)
# GB 11643 / ISO 7064 MOD 11-2. They define the key format of the ``residents`` document (18
# characters, upper-case ``X``), so the server validates imported records with the same rules the
# kiosk applies to a card it reads.

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"
_DIGITS = frozenset("0123456789")


def id_check_digit(first17: str) -> str:
    """The check character of an ID number from its first 17 digits (ISO 7064 MOD 11-2)."""
    if len(first17) != 17 or not set(first17) <= _DIGITS:
        raise ValueError("an ID number check digit needs exactly 17 ASCII digits")
    total = sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=True))
    return _CHECK_CHARS[total % 11]


def parse_yyyymmdd(text: str) -> dt.date | None:
    """``19491231`` -> date; None when ``text`` is not 8 ASCII digits forming a real date."""
    if len(text) != 8 or not set(text) <= _DIGITS:
        return None
    try:
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def id_number_problems(
    id_number: str, birth: dt.date | None = None, gender: str | None = None
) -> list[str]:
    """What is wrong with ``id_number``, alone and against the card's birth date and gender.

    An empty list means valid. The messages never repeat the number itself (they may be logged).
    ``gender`` is the name on the card (男/女); other values are not compared.
    """
    if len(id_number) != 18:
        return [f"ID number has {len(id_number)} characters, expected 18"]
    body, check = id_number[:17], id_number[17]
    if not set(body) <= _DIGITS or check not in _DIGITS | {"X"}:
        return ["ID number must be 17 digits followed by a digit or X"]
    problems: list[str] = []
    expected = id_check_digit(body)
    if check != expected:
        problems.append(f"check digit is {check}, expected {expected}")
    embedded = parse_yyyymmdd(body[6:14])
    if embedded is None:
        problems.append("digits 7-14 are not a valid date")
    elif birth is not None and embedded != birth:
        problems.append("digits 7-14 do not match the birth date on the card")
    odd = int(body[16]) % 2 == 1
    if (gender == "男" and not odd) or (gender == "女" and odd):
        problems.append(f"17th digit is {'odd' if odd else 'even'} but the card says {gender}")
    return problems
