"""The transactional outbox: events queued in the same transaction as the change that causes them.

``seq`` comes from the ``last_seq`` counter in ``meta``, bumped in the event's own transaction, so
it never repeats, even after acked rows are deleted or the process is killed. The sync agent sends
:meth:`Outbox.pending` in seq order and calls :meth:`Outbox.acked` with the server's ``down/ack``.

Personal data rule: an event emitted with ``personal=True`` has its ``data`` JSON sealed with the
device key (AES-256-GCM, associated data = ``b"outbox:" + event id``); :meth:`Outbox.pending` opens
it for sending (the MQTT link is TLS). Events without personal data are stored as plain JSON.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from device.atrest import AtRestError
from device.store.errors import StoreError, UnreadableEventError

if TYPE_CHECKING:
    from device.store.db import Store, Transaction

log = logging.getLogger(__name__)

MAX_SEQ = 2**63 - 1
EVENT_TYPE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*")
MAX_EVENT_TYPE_LENGTH = 64
_checked_types: set[str] = set()
"""Event types already found valid: a device emits a handful of types, over and over."""


def valid_event_type(name: str) -> bool:
    """A dotted lower-case name of at most 64 characters (``compartment.opened``)."""
    if name in _checked_types:
        return True
    if len(name) > MAX_EVENT_TYPE_LENGTH or not EVENT_TYPE.fullmatch(name):
        return False
    if len(_checked_types) < 1024:
        _checked_types.add(name)
    return True


def wire_json(seq: int, event_id: str, type: str, at: float, data: bytes) -> bytes:
    """An event's ``up/events`` JSON object, with ``data`` (a JSON object's text) as it is.

    ``event_id`` and ``type`` must already be valid (ASCII); ``repr(float)`` is what
    ``json.dumps`` writes for ``at``.
    """
    head = f'{{"seq":{seq},"id":"{event_id}","type":"{type}","at":{float(at)!r},"data":'
    return head.encode() + data + b"}"


@dataclass(frozen=True)
class Event:
    """One queued event, as it goes on the wire (``boot`` and ``personal`` stay on the device)."""

    seq: int
    id: str
    type: str
    at: float
    data: Mapping[str, Any] = field(repr=False)
    boot: int = 0
    personal: bool = False

    def __repr__(self) -> str:
        data = "<sealed>" if self.personal else json.dumps(self.data, ensure_ascii=False)[:80]
        return f"Event(seq={self.seq}, type={self.type!r}, id={self.id}, data={data})"

    def wire(self) -> dict[str, Any]:
        """The ``{seq, id, type, at, data}`` object of an ``up/events`` batch."""
        return {"seq": self.seq, "id": self.id, "type": self.type, "at": self.at, "data": self.data}


class WireEvent(NamedTuple):
    """A queued event as the sync agent sends it: ``data`` is its JSON text, never parsed.

    What :meth:`Outbox.pending_wire` returns; the sync agent splices ``data`` into the
    ``up/events`` payload as it is (it was checked to be a JSON object when it was queued).
    """

    seq: int
    id: str
    type: str
    at: float
    data: bytes


class JoinedEvents(NamedTuple):
    """A run of queued events as one string: ``text`` is their wire JSON objects joined by
    commas, ``first``..``last`` their seqs, ``events`` how many (0: nothing is queued)."""

    first: int
    last: int
    events: int
    text: bytes


def _aad(event_id: str) -> bytes:
    return b"outbox:" + event_id.encode("ascii")


def _encode(data: Mapping[str, Any]) -> bytes:
    try:
        return json.dumps(
            dict(data), ensure_ascii=False, separators=(",", ":"), allow_nan=False
        ).encode()
    except (TypeError, ValueError) as err:
        raise StoreError(f"event data must be JSON (no NaN, no custom objects): {err}") from err


def record_event(
    tx: Transaction, type: str, data: Mapping[str, Any], *, personal: bool = False
) -> Event:
    """Queue one event inside ``tx`` (what :meth:`Transaction.emit` calls)."""
    if not valid_event_type(type):
        raise StoreError(
            f"event type {type!r} is not a dotted lower-case name like 'compartment.opened' "
            f"(at most {MAX_EVENT_TYPE_LENGTH} characters)"
        )
    if not isinstance(data, Mapping):
        raise StoreError(f"event data must be a mapping, got {builtins_name(data)}")
    store = tx.store
    body = _encode(data)
    event_id = uuid.uuid4().hex
    at = store.clock.time()
    if not math.isfinite(at):
        raise StoreError(f"the clock returned {at} as the time")
    stored = store.key.seal(body, _aad(event_id)) if personal else body
    conn = tx.conn
    seq = int(conn.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()[0]) + 1
    if seq > MAX_SEQ:
        raise StoreError("the outbox seq counter is exhausted (2**63 - 1 events)")
    conn.execute("UPDATE meta SET value = ? WHERE key = 'last_seq'", (seq,))
    # The event as it goes on the wire (the agent sends runs of these joined, as stored). Not
    # for sealed events: personal data is never stored in clear.
    wire = None if personal or at < 0 else wire_json(seq, event_id, type, at, body).decode()
    conn.execute(
        "INSERT INTO outbox (seq, id, type, at, boot, sealed, data, wire) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (seq, event_id, type, at, store.boot, int(personal), stored, wire),
    )
    return Event(seq, event_id, type, at, json.loads(body), store.boot, personal)


def builtins_name(value: object) -> str:
    return type(value).__name__


class Outbox:
    """Reading and acknowledging the queued events of a :class:`~device.store.db.Store`."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def record_event(
        self,
        type: str,
        data: Mapping[str, Any],
        *,
        tx: Transaction,
        personal: bool = False,
    ) -> Event:
        """Queue an event inside ``tx``; the same as ``tx.emit(type, data, personal=...)``."""
        with self._store.writing(tx) as joined:
            return record_event(joined, type, data, personal=personal)

    def pending(self, limit: int = 100, *, after: int = 0) -> list[Event]:
        """Up to ``limit`` unacked events with ``seq > after``, in seq order."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        with self._store.reading() as conn:
            rows = conn.execute(
                "SELECT seq, id, type, at, boot, sealed, data FROM outbox WHERE seq > ? "
                "ORDER BY seq LIMIT ?",
                (after, limit),
            ).fetchall()
        return [self._event(row) for row in rows]

    def pending_joined(self, limit: int = 100, *, after: int = 0) -> JoinedEvents | None:
        """Up to ``limit`` events after ``after`` as their wire JSON joined by commas, read in ONE
        SQLite step; None when the run cannot be joined (a sealed event, or one queued before
        wire text was kept): use :meth:`pending_wire` then.

        One step matters: Python's sqlite3 releases the GIL for every row it steps, and a
        process with other busy threads pays for each reacquisition.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        with self._store.reading() as conn:
            count, unjoinable, seqs, text = conn.execute(
                "SELECT count(*), total(wire IS NULL), group_concat(seq), group_concat(wire, ',') "
                "FROM "
                "(SELECT seq, wire FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?)",
                (after, limit),
            ).fetchone()
        if count == 0:
            return JoinedEvents(0, 0, 0, b"")
        if unjoinable:
            return None
        numbers = [int(seq) for seq in seqs.split(",")]
        # Both aggregates see the rows in one order; SQLite 3.40 does not promise it is the
        # subquery's, so check it (3.44's group_concat(... ORDER BY ...) would say so).
        if len(numbers) != count or any(b <= a for a, b in itertools.pairwise(numbers)):
            return None
        return JoinedEvents(numbers[0], numbers[-1], count, text.encode())

    def pending_wire(self, limit: int = 100, *, after: int = 0) -> list[WireEvent]:
        """:meth:`pending` without parsing ``data``: what the sync agent sends, cheaply.

        Sealed events are opened (the MQTT link is TLS); their JSON is not decoded, since the
        agent only copies it into the batch.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        with self._store.reading() as conn:
            rows = conn.execute(
                "SELECT seq, id, type, at, sealed, data FROM outbox WHERE seq > ? "
                "ORDER BY seq LIMIT ?",
                (after, limit),
            ).fetchall()
        key, out = self._store.key, []
        for seq, event_id, type_, at, sealed, stored in rows:
            data = bytes(stored)
            if sealed:
                try:
                    data = key.open(data, _aad(event_id))
                except AtRestError as err:
                    raise UnreadableEventError(
                        f"outbox event seq {seq} does not open with this device key: {err}", seq
                    ) from err
            out.append(WireEvent(seq, event_id, type_, at, data))
        return out

    def _event(self, row: tuple[Any, ...]) -> Event:
        seq, event_id, type_, at, boot, sealed, data = row
        body = self._store.key.open(bytes(data), _aad(event_id)) if sealed else bytes(data)
        return Event(seq, event_id, type_, at, json.loads(body), boot, bool(sealed))

    def count(self) -> int:
        with self._store.reading() as conn:
            return int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])

    @property
    def last_seq(self) -> int:
        """The highest seq ever issued (0 before the first event)."""
        return self._store.meta("last_seq")

    @property
    def acked_seq(self) -> int:
        """The highest seq the server acknowledged."""
        return self._store.meta("acked_seq")

    def acked(self, up_to_seq: int) -> int:
        """Drop every event with ``seq <= up_to_seq``; returns how many were removed.

        An ack is "the server stores every seq up to here durably". An ack beyond the last seq
        issued cannot be true (forged, misrouted, or from another device's store): it is ignored
        with a warning, so it never deletes events that were not sent.
        """
        with self._store.transaction() as tx:
            last = int(tx.execute("SELECT value FROM meta WHERE key='last_seq'").fetchone()[0])
            if up_to_seq > last:
                log.warning(
                    "ignoring ack for seq %d: this device issued only up to %d", up_to_seq, last
                )
                return 0
            done = int(tx.execute("SELECT value FROM meta WHERE key='acked_seq'").fetchone()[0])
            if up_to_seq <= done:
                return 0
            removed = int(tx.execute("DELETE FROM outbox WHERE seq <= ?", (up_to_seq,)).rowcount)
            tx.execute("UPDATE meta SET value = ? WHERE key = 'acked_seq'", (up_to_seq,))
        log.debug("ack up to seq %d removed %d events", up_to_seq, removed)
        return removed
