"""Turning queued outbox events into ``up/events`` payloads that the server will accept: pure."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError

from device.protocol import MAX_EVENTS_BATCH_BYTES, MAX_EVENTS_PER_BATCH, EventBatch, encode
from device.store.outbox import Event
from device.sync.errors import SyncError


def build_batch(
    device_id: str,
    boot: int,
    events: Sequence[Event],
    *,
    max_bytes: int = MAX_EVENTS_BATCH_BYTES,
) -> tuple[bytes, int]:
    """The payload of the longest prefix of ``events`` that fits ``max_bytes``, and its length.

    Raises :class:`SyncError` when even the first event alone does not fit or is not a valid wire
    event: it can never be sent, and the caller must not skip it (the server acks contiguous seqs).
    """
    count = min(len(events), MAX_EVENTS_PER_BATCH)
    if count == 0:
        raise ValueError("build_batch needs at least one event")
    while True:
        try:
            batch = EventBatch.model_validate(
                {"device": device_id, "boot": boot, "events": [e.wire() for e in events[:count]]}
            )
        except ValidationError as err:
            problems = "; ".join(
                ".".join(str(p) for p in problem["loc"]) + ": " + problem["msg"]
                for problem in err.errors(include_input=False, include_url=False)[:3]
            )
            raise SyncError(
                f"events from seq {events[0].seq} cannot be sent as up/events: {problems}"
            ) from err
        payload = encode(batch)
        if len(payload) <= max_bytes:
            return payload, count
        if count == 1:
            raise SyncError(
                f"event seq {events[0].seq} ({events[0].type}) is {len(payload)} bytes on the "
                f"wire, over the {max_bytes}-byte up/events limit; it cannot be sent"
            )
        count //= 2
