"""The journal of open requests ("intents"): written before a relay is pulsed, so a restart knows
what was asked, what was done and what is left (docs/locker.md, "Crash safety").

An intent goes ``pending`` (journaled, not yet pulsed) -> ``pulsed`` (the pulse is recorded and
reported) -> ``opened`` (the door was seen open) -> ``done`` (the door closed again); or to
``failed`` (the door never opened after the retry) or ``abandoned`` (too old to carry out at a
restart). At most one intent per compartment is in progress (a partial unique index).
"""

from __future__ import annotations

import enum
import sqlite3
from dataclasses import dataclass
from typing import Any, Final

from device.store import Store, StoreError, Transaction
from locker.errors import CompartmentBusyError


class Flow(enum.StrEnum):
    """Why a compartment is opened."""

    DEPOSIT = "deposit"  # a resident puts documents in (server command)
    RESULT = "result"  # a worker puts the result in (command or deposit credential)
    COLLECT = "collect"  # a resident takes the result (collect credential)
    WORKER_OPEN = "worker-open"  # a worker takes the documents (command or credential)

    @property
    def deposits(self) -> bool:
        return self in (Flow.DEPOSIT, Flow.RESULT)


class Status(enum.StrEnum):
    PENDING = "pending"
    PULSED = "pulsed"
    OPENED = "opened"
    DONE = "done"
    FAILED = "failed"
    ABANDONED = "abandoned"


ACTIVE: Final = (Status.PENDING, Status.PULSED, Status.OPENED)


@dataclass(frozen=True)
class Intent:
    id: int
    compartment: int
    flow: Flow
    source: str
    """``cmd:<command id>`` or ``cti:<credential id>``: what authorised it."""
    created_at: float
    status: Status
    attempts: int
    pulsed_at: float | None

    @classmethod
    def from_row(cls, row: Any) -> Intent:
        id_, compartment, flow, source, created, status, attempts, pulsed = row
        return cls(
            int(id_),
            int(compartment),
            Flow(flow),
            str(source),
            float(created),
            Status(status),
            int(attempts),
            None if pulsed is None else float(pulsed),
        )


class Intents:
    """The intents of ``store``."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def add(self, tx: Transaction, compartment: int, flow: Flow, source: str) -> Intent:
        try:
            cursor = tx.execute(
                "INSERT INTO locker_intents (compartment, flow, source, created_at, status) "
                "VALUES (?, ?, ?, ?, 'pending')",
                (compartment, str(flow), source, self._store.clock.time()),
            )
        except StoreError as err:
            if isinstance(err.__cause__, sqlite3.IntegrityError):
                raise CompartmentBusyError(
                    f"compartment {compartment} already has an open request in progress"
                ) from err
            raise
        return self.get(tx, int(cursor.lastrowid))

    def get(self, tx: Transaction, intent_id: int) -> Intent:
        row = tx.execute(
            "SELECT id, compartment, flow, source, created_at, status, attempts, pulsed_at "
            "FROM locker_intents WHERE id = ?",
            (intent_id,),
        ).fetchone()
        if row is None:
            raise StoreError(f"locker intent {intent_id} is missing from the journal")
        return Intent.from_row(row)

    def active(self) -> list[Intent]:
        """Intents in progress, oldest first."""
        with self._store.reading() as conn:
            rows = conn.execute(
                "SELECT id, compartment, flow, source, created_at, status, attempts, pulsed_at "
                "FROM locker_intents "
                "WHERE status IN ('pending', 'pulsed', 'opened') ORDER BY id"
            )
            return [Intent.from_row(r) for r in rows]

    def active_for(self, tx: Transaction, compartment: int) -> Intent | None:
        row = tx.execute(
            "SELECT id, compartment, flow, source, created_at, status, attempts, pulsed_at "
            "FROM locker_intents WHERE compartment = ? "
            "AND status IN ('pending', 'pulsed', 'opened')",
            (compartment,),
        ).fetchone()
        return None if row is None else Intent.from_row(row)

    def update(self, tx: Transaction, intent: Intent, status: Status, **fields: Any) -> Intent:
        """Move ``intent`` to ``status`` if it is still what the caller read (else StoreError)."""
        values = {"status": str(status), **fields}
        assignments = ", ".join(f"{name} = ?" for name in values)
        cursor = tx.execute(
            f"UPDATE locker_intents SET {assignments} WHERE id = ? AND status = ?",  # noqa: S608
            (*values.values(), intent.id, str(intent.status)),
        )
        if cursor.rowcount != 1:
            raise StoreError(f"locker intent {intent.id} changed under its caller")
        return self.get(tx, intent.id)
