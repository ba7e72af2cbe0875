"""The compartment state machine of DESIGN.md, persisted in the device store.

``free -> reserved -> open_for_deposit -> holding -> open_for_pickup -> free``, plus ``fault``
(lock or door failure) and ``disabled`` (taken out of service). Every transition is checked
against :data:`TRANSITIONS`, written, and announced by a ``compartment.state`` event in the same
store transaction (docs/locker.md).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from device.store import Store, Transaction
from locker.errors import CompartmentStateError, UnknownCompartmentError


class State(enum.StrEnum):
    FREE = "free"
    RESERVED = "reserved"
    OPEN_FOR_DEPOSIT = "open_for_deposit"
    HOLDING = "holding"
    OPEN_FOR_PICKUP = "open_for_pickup"
    FAULT = "fault"
    DISABLED = "disabled"


S = State
TRANSITIONS: Final[frozenset[tuple[State, State]]] = frozenset(
    {
        (S.FREE, S.RESERVED),  # an open request for a deposit is journaled
        (S.RESERVED, S.OPEN_FOR_DEPOSIT),  # the lock was pulsed
        (S.RESERVED, S.FREE),  # the request was dropped before the pulse (restart, too late)
        (S.OPEN_FOR_DEPOSIT, S.HOLDING),  # the door closed on the documents
        (S.HOLDING, S.OPEN_FOR_PICKUP),  # an open request for a pickup is journaled
        (S.OPEN_FOR_PICKUP, S.HOLDING),  # the request was dropped before the pulse
        (S.OPEN_FOR_PICKUP, S.FREE),  # the door closed after the pickup
        # A lock that does not open, from any state with a request in progress:
        (S.RESERVED, S.FAULT),
        (S.OPEN_FOR_DEPOSIT, S.FAULT),
        (S.OPEN_FOR_PICKUP, S.FAULT),
        # A technician clears a fault back to where the compartment was (free or holding).
        (S.FAULT, S.FREE),
        (S.FAULT, S.HOLDING),
        # Out of service and back, only while nothing is in progress.
        (S.FREE, S.DISABLED),
        (S.HOLDING, S.DISABLED),
        (S.DISABLED, S.FREE),
        (S.DISABLED, S.HOLDING),
    }
)
IN_PROGRESS: Final = frozenset({S.RESERVED, S.OPEN_FOR_DEPOSIT, S.OPEN_FOR_PICKUP})
"""States with an open request under way: a restart resumes or drops it."""
SIZES: Final = ("S", "M", "L")
STATE_EVENT: Final = "compartment.state"


@dataclass(frozen=True)
class Compartment:
    """One compartment's row. ``case_id`` and ``content`` say what is inside or reserved for."""

    number: int
    size: str
    state: State
    case_id: str | None
    content: str | None
    since: float
    resume_state: State | None
    fault: str | None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Compartment:
        number, size, state, case_id, content, since, resume, fault = row
        return cls(
            int(number),
            str(size),
            State(state),
            case_id,
            content,
            float(since),
            None if resume is None else State(resume),
            fault,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "size": self.size,
            "state": str(self.state),
            "case": self.case_id,
            "content": self.content,
            "since": self.since,
            "fault": self.fault,
        }


class Compartments:
    """The compartments of one locker in ``store`` (created at first start from ``sizes``)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def ensure(self, sizes: Sequence[str], now: float) -> None:
        """Create compartments 1..len(sizes) that do not exist yet; refuse to shrink the locker
        while a compartment beyond the new count is in use."""
        with self._store.transaction() as tx:
            existing = {c.number: c for c in self._all(tx)}
            for number, size in enumerate(sizes, start=1):
                if number not in existing:
                    tx.execute(
                        "INSERT INTO compartments (number, size, state, since) "
                        "VALUES (?, ?, 'free', ?)",
                        (number, size, now),
                    )
                elif existing[number].size != size:
                    tx.execute("UPDATE compartments SET size = ? WHERE number = ?", (size, number))
            extra = [c for n, c in existing.items() if n > len(sizes)]
            # A compartment disabled while holding still has the case's documents inside.
            busy = [
                c.number
                for c in extra
                if c.state not in (S.FREE, S.DISABLED) or c.case_id is not None
            ]
            if busy:
                raise CompartmentStateError(
                    f"compartments {busy} are in use but the configuration has only "
                    f"{len(sizes)} locks; empty them first or restore the configuration"
                )
            for compartment in extra:
                # Only finished requests are left (one in progress would make it busy); their
                # journal rows reference the compartment and would block its removal.
                tx.execute(
                    "DELETE FROM locker_intents WHERE compartment = ?", (compartment.number,)
                )
                tx.execute("DELETE FROM compartments WHERE number = ?", (compartment.number,))

    def get(self, number: int, tx: Transaction | None = None) -> Compartment:
        if tx is not None:
            return self._get(tx.conn, number)
        with self._store.reading() as conn:
            return self._get(conn, number)

    def all(self) -> list[Compartment]:
        with self._store.reading() as conn:
            rows = conn.execute(
                "SELECT number, size, state, case_id, content, since, resume_state, fault "
                "FROM compartments ORDER BY number"
            )
            return [Compartment.from_row(r) for r in rows]

    def free_of_size(self, tx: Transaction, size: str) -> Compartment | None:
        """The smallest free compartment at least ``size`` (lowest number first), or None."""
        fitting = SIZES[SIZES.index(size) :]
        marks = ", ".join("?" for _ in fitting)
        row = tx.execute(
            "SELECT number, size, state, case_id, content, since, resume_state, fault "  # noqa: S608
            f"FROM compartments WHERE state = 'free' AND size IN ({marks}) "
            "ORDER BY CASE size WHEN 'S' THEN 0 WHEN 'M' THEN 1 ELSE 2 END, number LIMIT 1",
            fitting,
        ).fetchone()
        return None if row is None else Compartment.from_row(row)

    def move(
        self,
        tx: Transaction,
        number: int,
        to: State,
        *,
        reason: str,
        expect: State | None = None,
        **fields: Any,
    ) -> Compartment:
        """Move ``number`` to ``to`` (checked against :data:`TRANSITIONS`) and emit its event.

        ``expect``: the state it must be in now. ``fields`` sets ``case_id``, ``content``,
        ``resume_state`` or ``fault`` too (None clears); a move to ``free`` clears the case.
        """
        before = self._get(tx.conn, number)
        if expect is not None and before.state != expect:
            raise CompartmentStateError(
                f"compartment {number} is {before.state}, not {expect}", number=number
            )
        if (before.state, to) not in TRANSITIONS:
            raise CompartmentStateError(
                f"compartment {number} cannot go from {before.state} to {to}", number=number
            )
        unknown = set(fields) - {"case_id", "content", "resume_state", "fault"}
        if unknown:
            raise ValueError(f"not compartment fields: {sorted(unknown)}")
        if to is S.FREE:
            fields = {
                "case_id": None,
                "content": None,
                **fields,
            }  # a free compartment holds nothing
        now = self._store.clock.time()
        values = {"state": str(to), "since": now, **fields}
        assignments = ", ".join(f"{name} = ?" for name in values)
        tx.execute(
            f"UPDATE compartments SET {assignments} WHERE number = ?",  # noqa: S608 -- names are ours
            (*values.values(), number),
        )
        after = self._get(tx.conn, number)
        tx.emit(
            STATE_EVENT,
            {
                "compartment": number,
                "from": str(before.state),
                "to": str(to),
                "case": after.case_id if after.case_id is not None else before.case_id,
                "reason": reason,
            },
        )
        return after

    def _all(self, tx: Transaction) -> list[Compartment]:
        rows = tx.execute(
            "SELECT number, size, state, case_id, content, since, resume_state, fault "
            "FROM compartments ORDER BY number"
        )
        return [Compartment.from_row(r) for r in rows]

    @staticmethod
    def _get(conn: Any, number: int) -> Compartment:
        row = conn.execute(
            "SELECT number, size, state, case_id, content, since, resume_state, fault "
            "FROM compartments WHERE number = ?",
            (number,),
        ).fetchone()
        if row is None:
            raise UnknownCompartmentError(f"this locker has no compartment {number!r}", number)
        return Compartment.from_row(row)
