"""The ``up/events`` hot path: msgspec decoding, each event's ``data`` kept as its JSON text.

``device.protocol.parse_events`` (pydantic) is the definition of a valid batch and the source of
every error message; :func:`parse_events_fast` accepts exactly what it accepts, about four times
faster, and without building the ``data`` dicts that ingest would only turn back into JSON text.
Anything msgspec or the checks here do not accept is handed to ``parse_events``, which raises
the documented error (or, should the two ever disagree, returns its own :class:`EventBatch`,
which ingest stores the same way). ``tests/server/test_wire.py`` holds the two to one another.
"""

from __future__ import annotations

import math
import re

import msgspec

from device.protocol import (
    MAX_EVENTS_BATCH_BYTES,
    MAX_EVENTS_PER_BATCH,
    MAX_SEQ,
    EventBatch,
    parse_events,
    valid_device_id,
)
from device.store.outbox import valid_event_type

__all__ = ["WireBatch", "WireEvent", "parse_events_fast", "raw_text"]


class WireEvent(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    seq: int
    id: str
    type: str
    at: float
    data: msgspec.Raw


class WireBatch(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    device: str
    boot: int
    events: list[WireEvent]


_DECODER = msgspec.json.Decoder(WireBatch)
_IDS = re.compile(r"(?:[0-9a-f]{32})+")


def parse_events_fast(payload: bytes) -> WireBatch | EventBatch:
    """What ``parse_events(payload)`` accepts, as a :class:`WireBatch`; its errors otherwise."""
    if not isinstance(payload, bytes) or len(payload) > MAX_EVENTS_BATCH_BYTES:
        return parse_events(payload)
    try:
        payload.decode("utf-8")  # msgspec does not check the bytes inside strings it skips
        batch = _DECODER.decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return parse_events(payload)
    if not _valid(batch):
        return parse_events(payload)
    return batch


def _valid(batch: WireBatch) -> bool:
    """The field rules of ``EventBatch`` and ``EventMessage`` that msgspec did not check."""
    events = batch.events
    if not (
        valid_device_id(batch.device)
        and 1 <= batch.boot <= MAX_SEQ
        and 1 <= len(events) <= MAX_EVENTS_PER_BATCH
    ):
        return False
    previous = 0
    for event in events:
        seq, at = event.seq, event.at
        if not (
            previous < seq <= MAX_SEQ
            and 0.0 <= at < math.inf
            and len(event.id) == 32
            and bytes(event.data)[:1] == b"{"
        ):
            return False
        previous = seq
    # One regex over all ids (each is 32 characters, checked above) and each distinct type once.
    if _IDS.fullmatch("".join(event.id for event in events)) is None:
        return False
    return all(valid_event_type(name) for name in {event.type for event in events})


def raw_text(data: object) -> str | None:
    """The JSON text of a :class:`WireEvent`'s ``data`` as received; None for a parsed dict."""
    if isinstance(data, msgspec.Raw):
        return bytes(data).decode("utf-8")
    return None
