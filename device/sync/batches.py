"""Turning queued outbox events into ``up/events`` payloads that the server will accept: pure.

The payload is assembled from the stored JSON of each event's data (no parse, no re-encode, no
model round trip): this is most of what a device spends per batch, and what the drain budget
is made of. Each event is checked against the wire rules of ``device.protocol.EventMessage``
(the server validates the whole batch with that model), so an event the server would refuse is
reported here, as :class:`SyncError`, instead of being sent again and again.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence

from device.protocol import (
    MAX_EVENTS_BATCH_BYTES,
    MAX_EVENTS_PER_BATCH,
    MAX_SEQ,
    valid_device_id,
)
from device.store.outbox import Event, Outbox, WireEvent, valid_event_type, wire_json
from device.sync.errors import SyncError

_ID = re.compile(r"[0-9a-f]{32}")
_CLOSE = b"]}"


def next_batch(
    outbox: Outbox,
    device_id: str,
    boot: int,
    *,
    limit: int,
    after: int,
    max_bytes: int = MAX_EVENTS_BATCH_BYTES,
) -> tuple[bytes, int, int] | None:
    """The next ``up/events`` payload after seq ``after`` and its first and last seq; None when
    nothing is queued. What the sync agent sends (and the benchmark's reference replays).

    The common case is one SQLite step (:meth:`Outbox.pending_joined`: the events' wire text
    kept from ``emit``); a run with sealed or older events, or one over ``max_bytes``, is read
    row by row and checked by :func:`build_batch`. Raises :class:`SyncError` or
    ``UnreadableEventError`` for an event that can never be sent.
    """
    limit = min(limit, MAX_EVENTS_PER_BATCH)
    joined = outbox.pending_joined(limit, after=after)
    if joined is not None:
        if joined.events == 0:
            return None
        head = b'{"device":"%s","boot":%d,"events":[' % (device_id.encode(), boot)
        fits = len(head) + len(joined.text) + len(_CLOSE) <= max_bytes
        if fits and valid_device_id(device_id) and 1 <= boot <= MAX_SEQ:
            return head + joined.text + _CLOSE, joined.first, joined.last
    events = outbox.pending_wire(limit, after=after)
    if not events:
        return None
    payload, count = build_batch(device_id, boot, events, max_bytes=max_bytes)
    return payload, events[0].seq, events[count - 1].seq


def build_batch(
    device_id: str,
    boot: int,
    events: Sequence[Event | WireEvent],
    *,
    max_bytes: int = MAX_EVENTS_BATCH_BYTES,
) -> tuple[bytes, int]:
    """The payload of the longest prefix of ``events`` that fits ``max_bytes``, and its length.

    Raises :class:`SyncError` when even the first event alone does not fit or is not a valid wire
    event: it can never be sent, and the caller must not skip it (the server acks contiguous seqs).
    A ``WireEvent``'s data is spliced in as stored: the outbox checked it is a JSON object when
    the event was queued (sealed data cannot change undetected; it is AES-GCM).
    """
    count = min(len(events), MAX_EVENTS_PER_BATCH)
    if count == 0:
        raise ValueError("build_batch needs at least one event")
    if not valid_device_id(device_id):
        raise SyncError(f"device id {device_id!r} cannot be sent: not a valid device id")
    if not 1 <= boot <= MAX_SEQ:
        raise SyncError(f"boot counter {boot} cannot be sent: it must be 1 to 2**63 - 1")
    head = b'{"device":"%s","boot":%d,"events":[' % (device_id.encode(), boot)
    parts: list[bytes] = []
    size = len(head) + len(_CLOSE) - 1  # no comma before the first event
    previous = 0
    for event in events[:count]:
        try:
            part = _event_json(event, previous)
        except SyncError:
            if not parts:
                raise
            break  # send what comes before it; the next batch starts at it and reports it
        seq = event.seq
        previous = seq
        size += len(part) + 1
        if size > max_bytes:
            if not parts:
                raise SyncError(
                    f"event seq {seq} ({event.type}) is {size} bytes on the wire, over "
                    f"the {max_bytes}-byte up/events limit; it cannot be sent"
                )
            break
        parts.append(part)
    return head + b",".join(parts) + _CLOSE, len(parts)


def _event_json(event: Event | WireEvent, previous: int) -> bytes:
    """``{"seq":..,"id":..,"type":..,"at":..,"data":{..}}`` or :class:`SyncError` naming why not."""
    seq, at = event.seq, event.at
    problem = None
    if type(seq) is not int or not 1 <= seq <= MAX_SEQ:
        problem = "seq: must be an integer from 1 to 2**63 - 1"
    elif seq <= previous:
        problem = "events must be in strictly increasing seq order"
    elif type(event.id) is not str or not _ID.fullmatch(event.id):
        problem = "id: must be 32 lower-case hex digits"
    elif type(event.type) is not str or not valid_event_type(event.type):
        problem = "type: must be a dotted lower-case name of at most 64 characters"
    elif type(at) not in (int, float) or not math.isfinite(at) or at < 0:
        problem = "at: must be a finite, non-negative number of seconds"
    if problem is None:
        data = event.data if isinstance(event, WireEvent) else _data_json(event)
        stripped = data.strip()
        if stripped[:1] == b"{" and stripped[-1:] == b"}":
            return wire_json(seq, event.id, event.type, at, stripped)
        problem = "data: must be a JSON object"
    raise SyncError(f"events from seq {seq} cannot be sent as up/events: {problem}")


def _data_json(event: Event) -> bytes:
    try:
        return json.dumps(
            dict(event.data), ensure_ascii=False, separators=(",", ":"), allow_nan=False
        ).encode()
    except (TypeError, ValueError) as err:
        raise SyncError(
            f"events from seq {event.seq} cannot be sent as up/events: data is not JSON ({err})"
        ) from err
