"""Durable, exactly-once storage of device events and device state (no MQTT here).

``store_batch`` stores an ``up/events`` batch and returns the seq for ``down/ack``: the highest seq
up to which every event of the device is stored. Redelivered events are ignored by the unique key
``(device_id, seq)``; batches of one device are serialised by a lock on its ``devices`` row
(PostgreSQL) or the database write lock (SQLite), so several server processes may store
overlapping batches at once. ``record_state`` applies ``up/state`` and Last Will messages in
``(boot, at)`` order, so a late Will of an old session never marks a newer one offline.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, Engine, Table, and_, bindparam, case, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.expression import ColumnElement

from device.protocol import EventBatch, parse_events, valid_device_id
from sync_server.errors import DeviceMismatchError
from sync_server.models import Device, DeviceAck, Event

__all__ = [
    "BatchResult",
    "Clock",
    "acked_seq",
    "ingest_batch",
    "record_state",
    "register_device",
    "store_batch",
    "store_events_payload",
]

log = logging.getLogger(__name__)

Clock = Callable[[], float]
"""Unix seconds now; tests pass their own."""

_devices = cast(Table, Device.__table__)
_events = cast(Table, Event.__table__)
_acks = cast(Table, DeviceAck.__table__)
ACK_SCAN_PAGE = 1000
_STORED_IDS = select(_events.c.seq, _events.c.event_id).where(
    _events.c.device_id == bindparam("device"),
    _events.c.seq.in_(bindparam("seqs", expanding=True)),
)
"""Seq -> event id already stored for some of a device's seqs (one cached statement)."""


@dataclass(frozen=True)
class BatchResult:
    """What one batch did: ``ack`` for ``down/ack``, events newly ``stored``, ``duplicates``
    already there, and ``conflicts`` (a duplicate seq carrying another event id: logged)."""

    device: str
    ack: int
    stored: int
    duplicates: int
    conflicts: int


def _insert(conn: Connection, table: Any) -> sqlite.Insert | postgresql.Insert:
    """The dialect's INSERT, which has ON CONFLICT (both SQLite and PostgreSQL)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


_INSERT_EVENTS: dict[str, Any] = {}


def _insert_events(conn: Connection) -> Any:
    """INSERT of one event row, ON CONFLICT DO NOTHING (a belt to the lookup's braces); built
    once per dialect so SQLAlchemy compiles it once and runs it as executemany."""
    name = conn.dialect.name
    if name not in _INSERT_EVENTS:
        _INSERT_EVENTS[name] = _insert(conn, _events).on_conflict_do_nothing(
            index_elements=[_events.c.device_id, _events.c.seq]
        )
    return _INSERT_EVENTS[name]


def _touch_device(conn: Connection, device_id: str, now: float) -> None:
    """Create the device row or move ``last_seen`` forward.

    On PostgreSQL the ``DO UPDATE`` locks the row until commit: this is what serialises two
    processes storing batches of the same device.
    """
    stmt = _insert(conn, _devices).values(id=device_id, first_seen=now, last_seen=now, online=False)
    stmt = stmt.on_conflict_do_update(
        index_elements=[_devices.c.id],
        set_={
            "last_seen": case(
                (stmt.excluded.last_seen > _devices.c.last_seen, stmt.excluded.last_seen),
                else_=_devices.c.last_seen,
            )
        },
    )
    conn.execute(stmt)


def register_device(engine: Engine, device_id: str, kind: str, *, clock: Clock = time.time) -> None:
    """Record a provisioned device and its kind (``kiosk``, ``locker``)."""
    _check_device_id(device_id)
    with engine.begin() as conn:
        _touch_device(conn, device_id, clock())
        conn.execute(update(_devices).where(_devices.c.id == device_id).values(kind=kind))


def _check_device_id(device_id: str) -> None:
    if not valid_device_id(device_id):
        raise DeviceMismatchError("device id is invalid: 1 to 64 characters of A-Z a-z 0-9 _ . -")


def store_events_payload(
    engine: Engine, topic_device: str, payload: bytes, *, clock: Clock = time.time
) -> BatchResult:
    """Parse an ``up/events`` payload that arrived on ``topic_device``'s topic and store it.

    Raises ``device.protocol.MessageError`` (oversize, not JSON, wrong schema) or
    :class:`DeviceMismatchError` before anything is written.
    """
    batch = parse_events(payload)
    if batch.device != topic_device:
        raise DeviceMismatchError(
            f"up/events on the topic of device {topic_device!r} names another device; refused"
        )
    return ingest_batch(engine, batch, clock=clock)


def store_batch(engine: Engine, batch: EventBatch, *, clock: Clock = time.time) -> int:
    """Store ``batch`` exactly once; return the device's ack (highest contiguous stored seq)."""
    return ingest_batch(engine, batch, clock=clock).ack


def ingest_batch(engine: Engine, batch: EventBatch, *, clock: Clock = time.time) -> BatchResult:
    """:func:`store_batch` with counts: everything in one transaction, committed before return."""
    now = clock()
    device = batch.device
    with engine.begin() as conn:
        _touch_device(conn, device, now)
        # The device row is locked now (PostgreSQL: the upsert above; SQLite: BEGIN IMMEDIATE),
        # so what is stored for this device cannot change before the commit: look it up once,
        # then insert only the new events with one cached statement (executemany). Building a
        # multi-VALUES insert per batch cost more than the rest of the transaction together.
        sent = {event.seq: event.id for event in batch.events}
        found = conn.execute(_STORED_IDS, {"device": device, "seqs": list(sent)}).all()
        stored: dict[int, str] = {int(seq): str(event_id) for seq, event_id in found}
        rows = [
            {
                "device_id": device,
                "seq": event.seq,
                "event_id": event.id,
                "type": event.type,
                "at": event.at,
                "data": event.data,
                "boot": batch.boot,
                "received_at": now,
            }
            for event in batch.events
            if event.seq not in stored
        ]
        if rows:
            conn.execute(_insert_events(conn), rows)
        inserted = len(rows)
        duplicates = len(batch.events) - inserted
        conflicts = _conflicts(device, sent, stored)
        ack = _advance_ack(conn, device, now)
    log.debug(
        "device %s: %d events stored, %d duplicates, ack %d", device, inserted, duplicates, ack
    )
    return BatchResult(device, ack, inserted, duplicates, conflicts)


def _conflicts(device: str, sent: Mapping[int, str], stored: Mapping[int, str]) -> int:
    """Count duplicates whose stored event id differs: the device reused a seq (store reset?)."""
    clashes = sorted(seq for seq, event_id in stored.items() if sent[seq] != event_id)
    if clashes:
        # Kept, not refused: refusing would block the device's queue forever. The first
        # event stored under a seq wins; the operator must look at the device's store.
        log.error(
            "device %s reused %d seqs with other event ids (first %d); the new events were "
            "NOT stored -- check whether its store was reset",
            device,
            len(clashes),
            clashes[0],
        )
    return len(clashes)


def _advance_ack(conn: Connection, device: str, now: float) -> int:
    """Move the ack over every stored seq that follows it without a gap (from what is stored)."""
    conn.execute(
        _insert(conn, _acks)
        .values(device_id=device, seq=0, updated_at=now)
        .on_conflict_do_nothing(index_elements=[_acks.c.device_id])
    )
    start = int(conn.execute(select(_acks.c.seq).where(_acks.c.device_id == device)).scalar_one())
    ack = start
    while True:
        page = (
            conn.execute(
                select(_events.c.seq)
                .where(_events.c.device_id == device, _events.c.seq > ack)
                .order_by(_events.c.seq)
                .limit(ACK_SCAN_PAGE)
            )
            .scalars()
            .all()
        )
        for seq in page:
            if seq != ack + 1:
                break
            ack = seq
        if len(page) < ACK_SCAN_PAGE or ack != page[-1]:
            break
    if ack != start:
        conn.execute(
            update(_acks).where(_acks.c.device_id == device).values(seq=ack, updated_at=now)
        )
    return ack


def acked_seq(engine: Engine, device_id: str) -> int:
    """The device's current ack (0: nothing stored from seq 1 on)."""
    with engine.connect() as conn:
        found = conn.execute(select(_acks.c.seq).where(_acks.c.device_id == device_id)).scalar()
    return int(found or 0)


def _is_newer(boot: int, at: float, online: bool) -> ColumnElement[bool]:
    """SQL: does a state message ``(boot, at)`` supersede the stored one?

    A later boot always wins, an earlier one never. Within one boot the later ``at`` wins; on a
    tie offline wins, because a Last Will is registered with the ``at`` of the connection it
    ends, so it can carry the same ``at`` as that connection's ``online`` message.
    """
    same_boot_later = _devices.c.state_at <= at if not online else _devices.c.state_at < at
    return or_(
        _devices.c.boot.is_(None),
        _devices.c.boot < boot,
        and_(_devices.c.boot == boot, or_(_devices.c.state_at.is_(None), same_boot_later)),
    )


def record_state(
    engine: Engine,
    device_id: str,
    *,
    online: bool,
    boot: int,
    at: float,
    payload: Mapping[str, Any],
    clock: Clock = time.time,
) -> bool:
    """Apply an ``up/state`` message or Last Will; False when a newer state is already stored.

    One conditional UPDATE, so concurrent processes applying states of one device in any order
    end with the newest by ``(boot, at)``.
    """
    _check_device_id(device_id)
    with engine.begin() as conn:
        _touch_device(conn, device_id, clock())
        result = conn.execute(
            update(_devices)
            .where(_devices.c.id == device_id, _is_newer(boot, at, online))
            .values(online=online, boot=boot, state_at=at, last_state=dict(payload))
        )
        applied = result.rowcount == 1
    if applied:
        log.info("device %s is %s (boot %d)", device_id, "online" if online else "offline", boot)
    else:
        log.debug("device %s: stale state (boot %d) ignored", device_id, boot)
    return applied
