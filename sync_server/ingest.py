"""Durable, exactly-once storage of device events and device state (no MQTT here).

``store_batch`` stores an ``up/events`` batch and returns the seq for ``down/ack``: the highest seq
up to which every event of the device is stored. Redelivered events are ignored by the unique key
``(device_id, seq)``; batches of one device are serialised by a lock on its ``devices`` row
(PostgreSQL) or the database write lock (SQLite), so several server processes may store
overlapping batches at once. ``record_state`` applies ``up/state`` and Last Will messages in
``(boot, at)`` order, so a late Will of an old session never marks a newer one offline.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from sqlalchemy import Connection, Engine, Table, and_, or_, select, update
from sqlalchemy.sql.expression import ColumnElement

from device.protocol import EventBatch, valid_device_id
from sync_server.errors import DeviceMismatchError
from sync_server.models import Device, DeviceAck
from sync_server.wire import WireBatch, parse_events_fast, raw_text

__all__ = [
    "BatchResult",
    "Clock",
    "Projector",
    "acked_seq",
    "ingest_batch",
    "ingest_batches",
    "insert_event_rows",
    "record_state",
    "register_device",
    "store_batch",
    "store_events_payload",
]

log = logging.getLogger(__name__)

Clock = Callable[[], float]
"""Unix seconds now; tests pass their own."""

_devices = cast(Table, Device.__table__)
_acks = cast(Table, DeviceAck.__table__)
ACK_SCAN_PAGE = 1000


@dataclass(frozen=True)
class BatchResult:
    """What one batch did: ``ack`` for ``down/ack``, events newly ``stored``, ``duplicates``
    already there, ``conflicts`` (a duplicate seq carrying another event id: logged), and the
    ``effects`` the projector reported for the device (on its first batch of the group)."""

    device: str
    ack: int
    stored: int
    duplicates: int
    conflicts: int
    effects: tuple[Any, ...] = ()


class Projector(Protocol):
    """Turns newly stored events into domain changes in the SAME transaction as their storage.

    So a projection happens exactly once per event whatever the redeliveries, and never for an
    event whose storage rolled back. ``types`` are the event types it wants (the others cost one
    set lookup); ``project`` gets them decoded, in seq order, and returns effects for the caller
    to act on after the commit (notifications, waking the dispatcher).
    """

    types: frozenset[str]

    def project(
        self, conn: Connection, device: str, events: Sequence[tuple[int, str, Any]], now: float
    ) -> Sequence[Any]: ...


def _touch_device(conn: Connection, device_id: str, now: float) -> None:
    """Create the device row or move ``last_seen`` forward.

    On PostgreSQL the ``DO UPDATE`` locks the row until commit: this is what serialises two
    processes storing batches of the same device.
    """
    _run(conn, _SQL_TOUCH_DEVICE, (device_id, now, now, False))


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
    batch = parse_events_fast(payload)
    if batch.device != topic_device:
        raise DeviceMismatchError(
            f"up/events on the topic of device {topic_device!r} names another device; refused"
        )
    return ingest_batch(engine, batch, clock=clock)


def store_batch(engine: Engine, batch: EventBatch, *, clock: Clock = time.time) -> int:
    """Store ``batch`` exactly once; return the device's ack (highest contiguous stored seq)."""
    return ingest_batch(engine, batch, clock=clock).ack


def ingest_batch(
    engine: Engine,
    batch: EventBatch | WireBatch,
    *,
    clock: Clock = time.time,
    projector: Projector | None = None,
) -> BatchResult:
    """:func:`store_batch` with counts: everything in one transaction, committed before return."""
    return ingest_batches(engine, [batch], clock=clock, projector=projector)[0]


def ingest_batches(
    engine: Engine,
    batches: Sequence[EventBatch | WireBatch],
    *,
    clock: Clock = time.time,
    projector: Projector | None = None,
) -> list[BatchResult]:
    """Store several batches in ONE transaction (group commit); results in ``batches`` order.

    This is what lets the consumer keep up with the broker: a commit and the per-device statements
    are paid once per device per group instead of once per batch. Devices are handled in sorted
    order, so two processes storing overlapping groups lock device rows in the same order and
    cannot deadlock (PostgreSQL). Each result's ``ack`` is its device's ack after the whole group.
    """
    if not batches:
        return []
    now = clock()
    by_device: dict[str, list[int]] = {}
    for index, batch in enumerate(batches):
        by_device.setdefault(batch.device, []).append(index)
    results: list[BatchResult | None] = [None] * len(batches)
    wanted_types = projector.types if projector is not None else frozenset[str]()
    with engine.begin() as conn:
        for device in sorted(by_device):
            indexes = by_device[device]
            _touch_device(conn, device, now)
            # The device row is locked now (PostgreSQL: the upsert above; SQLite: BEGIN
            # IMMEDIATE), so what is stored for this device cannot change before the commit:
            # look its seqs up once, then insert only the new events in one executemany.
            sent: dict[int, str] = {}
            stored: dict[int, str] = {}
            for index in indexes:
                events = batches[index].events
                sent.update((event.seq, event.id) for event in events)
                # A batch is a run of seqs: one indexed range read finds what is stored.
                low, high = min(e.seq for e in events), max(e.seq for e in events)
                for seq, event_id in _run(conn, _SQL_STORED, (device, low, high)):
                    if seq in sent:
                        stored[int(seq)] = str(event_id)
            taken = set(stored)
            counts: list[tuple[int, int]] = []
            rows: list[tuple[Any, ...]] = []
            wanted: list[tuple[int, str, Any]] = []
            for index in indexes:
                batch = batches[index]
                fresh = 0
                for event in batch.events:
                    if event.seq in taken:
                        continue
                    taken.add(event.seq)
                    fresh += 1
                    if event.type in wanted_types:
                        wanted.append((event.seq, event.type, _decoded(event.data)))
                    rows.append(
                        (
                            device,
                            event.seq,
                            event.id,
                            event.type,
                            event.at,
                            _data_json(event.data),
                            batch.boot,
                            now,
                        )
                    )
                counts.append((fresh, len(batch.events) - fresh))
            if rows:
                insert_event_rows(conn, rows)
            effects = _project(conn, projector, device, wanted, now)
            conflicts = _conflicts(device, sent, stored)
            ack = _advance_ack(conn, device, now)
            for index, (fresh, duplicates) in zip(indexes, counts, strict=True):
                results[index] = BatchResult(device, ack, fresh, duplicates, conflicts, effects)
                conflicts, effects = 0, ()  # counted once, on the device's first batch
            log.debug(
                "device %s: %d batches, %d events stored, ack %d",
                device,
                len(indexes),
                len(rows),
                ack,
            )
    return [result for result in results if result is not None]


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_json = _ENCODER.encode
"""The ``data`` column's JSON text (``json.dumps`` with options builds an encoder per call)."""


def _data_json(data: Any) -> str:
    """The text received (a :class:`~sync_server.wire.WireEvent`) or the dict encoded."""
    text = raw_text(data)
    return _json(data) if text is None else text


def _project(
    conn: Connection,
    projector: Projector | None,
    device: str,
    wanted: list[tuple[int, str, Any]],
    now: float,
) -> tuple[Any, ...]:
    if not wanted or projector is None:
        return ()
    wanted.sort(key=lambda item: item[0])
    return tuple(projector.project(conn, device, wanted, now))


def _decoded(data: Any) -> Any:
    """An event's data as Python values (the fast path keeps the JSON text received)."""
    text = raw_text(data)
    return data if text is None else json.loads(text)


# The hot path of ingest speaks SQL to the DB-API driver directly (written with ``?`` and
# turned into psycopg's ``%s`` for PostgreSQL): measured, SQLAlchemy's statement building, cache
# keys and per-row bind processing (the JSON type) cost several times SQLite's own work.
_SQL_TOUCH_DEVICE = (
    "INSERT INTO devices (id, first_seen, last_seen, online) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET last_seen = CASE WHEN excluded.last_seen > devices.last_seen "
    "THEN excluded.last_seen ELSE devices.last_seen END"
)
_SQL_STORED = "SELECT seq, event_id FROM events WHERE device_id = ? AND seq BETWEEN ? AND ?"
_SQL_INSERT_EVENT = (
    "INSERT INTO events (device_id, seq, event_id, type, at, data, boot, received_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device_id, seq) DO NOTHING"
)
_SQL_ACK_ROW = (
    "INSERT INTO device_acks (device_id, seq, updated_at) VALUES (?, 0, ?) "
    "ON CONFLICT (device_id) DO NOTHING"
)
_SQL_ACK = "SELECT seq FROM device_acks WHERE device_id = ?"
_SQL_SPAN_AFTER = "SELECT count(*), max(seq) FROM events WHERE device_id = ? AND seq > ?"
_SQL_SEQS_AFTER = "SELECT seq FROM events WHERE device_id = ? AND seq > ? ORDER BY seq LIMIT ?"
_SQL_SET_ACK = "UPDATE device_acks SET seq = ?, updated_at = ? WHERE device_id = ?"


def insert_event_rows(conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """One executemany of ``events`` rows ``(device_id, seq, event_id, type, at, data JSON text,
    boot, received_at)``; a ``(device_id, seq)`` already stored is skipped."""
    conn.exec_driver_sql(_sql(conn, _SQL_INSERT_EVENT), rows)


def _sql(conn: Connection, statement: str) -> str:
    return statement if conn.dialect.paramstyle == "qmark" else statement.replace("?", "%s")


def _run(conn: Connection, statement: str, params: tuple[Any, ...]) -> list[Any]:
    result = conn.exec_driver_sql(_sql(conn, statement), params)
    return list(result.fetchall()) if result.returns_rows else []


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
    _run(conn, _SQL_ACK_ROW, (device, now))
    start = int(_run(conn, _SQL_ACK, (device,))[0][0])
    count, top = _run(conn, _SQL_SPAN_AFTER, (device, start))[0]
    if count and int(top) - start == int(count):
        # seqs are unique per device: as many rows as numbers in (start, top] means no gap,
        # found in one aggregate step instead of reading every seq into Python.
        _run(conn, _SQL_SET_ACK, (int(top), now, device))
        return int(top)
    ack = start
    while True:
        page = [int(row[0]) for row in _run(conn, _SQL_SEQS_AFTER, (device, ack, ACK_SCAN_PAGE))]
        for seq in page:
            if seq != ack + 1:
                break
            ack = seq
        if len(page) < ACK_SCAN_PAGE or ack != page[-1]:
            break
    if ack != start:
        _run(conn, _SQL_SET_ACK, (ack, now, device))
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
