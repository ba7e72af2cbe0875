"""Cases and their state machine (DESIGN.md section 3), with an audit entry for every change.

A case is opened ``draft`` when a resident chooses a service on a locker's page, and moves along
``FLOW``: ``deposited`` (the locker reported the documents in a compartment), ``assigned`` (a worker
was offered the pickup), ``collected``, ``processing``, ``result_stored`` (the result is in a
compartment), ``completed`` (the resident took it). ``overdue`` and ``escalated`` are states a case
enters when its deadline passes or nobody can take it; the flow state underneath is kept in
``resumes``, and the flow goes on from there whoever acts (:func:`effective_state`).

What a locker reports is the truth about documents: :func:`apply_locker_event` moves a case
*forward* to the state an event implies and never back, so events that arrive late or twice (two
server processes, redelivery) change nothing. Every function here takes a
:class:`~sqlalchemy.Connection` inside the caller's transaction, so a case change, its audit entry
and whatever caused it commit together.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, cast

from sqlalchemy import Connection, Row, Table, insert, select, update

from sync_server.domain_models import (
    OPEN_ASSIGNMENT_STATUSES,
    Assignment,
    AuditEntry,
    Case,
    Compartment,
    Service,
    ServicePoint,
)
from sync_server.errors import ServerError

__all__ = [
    "CASE_ID_ALPHABET",
    "FLOW",
    "LOCKER_EVENT_TYPES",
    "CaseError",
    "CaseNotFoundError",
    "CaseRecord",
    "CaseStateError",
    "LockerEffect",
    "LockerEvent",
    "apply_locker_event",
    "audit",
    "check_access",
    "effective_state",
    "get_case",
    "hash_token",
    "move",
    "new_case_id",
    "open_case",
    "set_overlay",
]

log = logging.getLogger(__name__)

FLOW: Final = (
    "draft",
    "deposited",
    "assigned",
    "collected",
    "processing",
    "result_stored",
    "completed",
)
"""The flow states in order; ``overdue``/``escalated`` sit on top of one, ``cancelled`` ends it."""
_RANK: Final = {state: rank for rank, state in enumerate(FLOW)}
OVERLAY_STATES: Final = ("overdue", "escalated")
FINAL_STATES: Final = ("completed", "cancelled")
CASE_ID_ALPHABET: Final = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
"""Case ids are read aloud and typed from a phone: no 0/O, 1/I."""
ACCESS_TOKEN_BYTES: Final = 24

_cases = cast(Table, Case.__table__)
_audit = cast(Table, AuditEntry.__table__)
_services = cast(Table, Service.__table__)
_points = cast(Table, ServicePoint.__table__)
_compartments = cast(Table, Compartment.__table__)
_assignments = cast(Table, Assignment.__table__)

# What may follow each flow state when someone acts (events may skip ahead, see module docstring).
_NEXT: Final[Mapping[str, frozenset[str]]] = {
    "draft": frozenset({"deposited", "cancelled"}),
    "deposited": frozenset({"assigned", "collected", "cancelled"}),
    "assigned": frozenset({"deposited", "collected"}),
    "collected": frozenset({"processing", "result_stored"}),
    "processing": frozenset({"result_stored"}),
    "result_stored": frozenset({"completed"}),
    "completed": frozenset(),
    "cancelled": frozenset(),
}


_CLOSES: Final = {"collected": "pickup", "result_stored": "return", "cancelled": "pickup"}
"""Reaching the key state finishes the open assignment of that kind."""


class CaseError(ServerError):
    """A case operation the rules do not allow."""


class CaseNotFoundError(CaseError, LookupError):
    """No such case (or, for a resident, a wrong access token: the two look the same)."""


class CaseStateError(CaseError, ValueError):
    """The case is not in a state where this may happen."""


@dataclass(frozen=True)
class CaseRecord:
    """A case as stored. ``repr`` leaves the resident's contact details out (logs)."""

    id: str
    service_id: str
    device_id: str
    grid_id: str
    compartment: int | None
    result_compartment: int | None
    state: str
    resumes: str | None
    level: str
    worker_id: int | None
    created: float
    updated: float
    due_at: float | None
    deposited_at: float | None
    collected_at: float | None
    result_ready_at: float | None
    result_at: float | None
    completed_at: float | None
    version: int
    phone: str | None = None
    wechat_openid: str | None = None

    @property
    def effective(self) -> str:
        """The flow state underneath ``overdue``/``escalated``."""
        return effective_state(self.state, self.resumes)

    def __repr__(self) -> str:
        return (
            f"CaseRecord(id={self.id!r}, service={self.service_id!r}, device={self.device_id!r}, "
            f"state={self.state!r}, level={self.level!r}, version={self.version})"
        )

    @classmethod
    def from_row(cls, row: Row[Any] | Mapping[str, Any]) -> CaseRecord:
        m = row._mapping if isinstance(row, Row) else row
        return cls(**{name: m[name] for name in cls.__dataclass_fields__})


def effective_state(state: str, resumes: str | None) -> str:
    """The flow state a case is really in: ``resumes`` when ``state`` is an overlay."""
    if state in OVERLAY_STATES:
        return resumes or "deposited"
    return state


def new_case_id() -> str:
    """``C`` and 9 characters of :data:`CASE_ID_ALPHABET` (45 bits): unguessable enough that
    knowing one case id tells nothing about another, short enough to read over the phone."""
    return "C" + "".join(secrets.choice(CASE_ID_ALPHABET) for _ in range(9))


def hash_token(token: str) -> str:
    """What the database keeps of a resident's access token (SHA-256 hex)."""
    return hashlib.sha256(token.encode()).hexdigest()


def audit(
    conn: Connection,
    now: float,
    actor: str,
    action: str,
    *,
    case_id: str | None = None,
    device_id: str | None = None,
    **detail: Any,
) -> None:
    """Append an audit entry. ``detail`` must hold no personal data (callers pass ids, states)."""
    conn.execute(
        insert(_audit).values(
            at=now, actor=actor, action=action, case_id=case_id, device_id=device_id, detail=detail
        )
    )


def open_case(
    conn: Connection,
    now: float,
    *,
    service_id: str,
    device_id: str,
    phone: str | None = None,
    wechat_openid: str | None = None,
) -> tuple[CaseRecord, str]:
    """A new ``draft`` case at a locker; returns it and the resident's access token.

    The token goes into the link the resident keeps (it is the resident's only key to the case);
    the database holds its SHA-256 only.
    """
    service = conn.execute(select(_services).where(_services.c.id == service_id)).first()
    if service is None or not service.active:
        raise CaseError(f"service {service_id!r} is not offered")
    point = conn.execute(select(_points).where(_points.c.device_id == device_id)).first()
    if point is None or point.kind != "locker" or point.revoked_at is not None:
        raise CaseError(f"{device_id!r} is not an active locker")
    token = secrets.token_urlsafe(ACCESS_TOKEN_BYTES)
    case_id = new_case_id()
    conn.execute(
        insert(_cases).values(
            id=case_id,
            service_id=service_id,
            device_id=device_id,
            grid_id=point.area_id,
            state="draft",
            level="grid",
            access_hash=hash_token(token),
            phone=phone,
            wechat_openid=wechat_openid,
            created=now,
            updated=now,
            version=1,
        )
    )
    audit(
        conn,
        now,
        "resident",
        "case.opened",
        case_id=case_id,
        device_id=device_id,
        service=service_id,
    )
    return get_case(conn, case_id), token


def get_case(conn: Connection, case_id: str, *, for_update: bool = False) -> CaseRecord:
    """The case, or :class:`CaseNotFoundError`; ``for_update`` locks its row (PostgreSQL)."""
    query = select(_cases).where(_cases.c.id == case_id)
    if for_update:
        query = query.with_for_update()
    row = conn.execute(query).first()
    if row is None:
        raise CaseNotFoundError(f"no case {case_id!r}")
    return CaseRecord.from_row(row)


def check_access(conn: Connection, case_id: str, token: str) -> CaseRecord:
    """The case if ``token`` is its resident's access token; otherwise :class:`CaseNotFoundError`.

    A wrong token and a missing case raise the same error, so a guessed URL learns nothing.
    """
    row = conn.execute(select(_cases).where(_cases.c.id == case_id)).first()
    digest = hash_token(token)
    if row is None or not (
        hmac.compare_digest(row.access_hash, digest)
        or (row.link_hash is not None and hmac.compare_digest(row.link_hash, digest))
    ):
        raise CaseNotFoundError(f"no case {case_id!r}")
    return CaseRecord.from_row(row)


def _service_hours(conn: Connection, service_id: str) -> tuple[float, float]:
    row = conn.execute(
        select(_services.c.pickup_hours, _services.c.process_hours).where(
            _services.c.id == service_id
        )
    ).one()
    return float(row.pickup_hours), float(row.process_hours)


def move(
    conn: Connection,
    case: CaseRecord,
    to: str,
    now: float,
    *,
    actor: str,
    reason: str,
    force: bool = False,
    **fields: Any,
) -> CaseRecord:
    """Move ``case`` to the flow state ``to`` (from itself or from the state under an overlay).

    ``force`` allows any forward move (a locker event that skipped steps). Sets the timestamps
    and the deadline that go with the new state, bumps ``version`` (a concurrent change of the
    same version makes this raise), and writes the audit entry.
    """
    current = case.effective
    if case.state in FINAL_STATES:
        raise CaseStateError(f"case {case.id} is {case.state}")
    allowed = to in _NEXT[current] or (
        force and to in _RANK and current in _RANK and _RANK[to] > _RANK[current]
    )
    if not allowed:
        raise CaseStateError(f"case {case.id} cannot go from {current} to {to}")
    values: dict[str, Any] = {"state": to, "resumes": None, "updated": now, **fields}
    pickup_h, process_h = _service_hours(conn, case.service_id)
    if to == "deposited":
        values.setdefault("deposited_at", case.deposited_at or now)
        values.setdefault("due_at", values["deposited_at"] + pickup_h * 3600)
    elif to == "collected":
        values.setdefault("collected_at", now)
        values.setdefault("due_at", now + process_h * 3600)
        values.setdefault("level", "grid")
    elif to == "result_stored":
        values.setdefault("result_at", now)
        values["due_at"] = None
    elif to in ("completed", "cancelled"):
        values["completed_at"] = now
        values["due_at"] = None
    if to == "deposited" and current == "assigned":
        values["worker_id"] = None  # the offer lapsed: back in the pool
    result = conn.execute(
        update(_cases)
        .where(_cases.c.id == case.id, _cases.c.version == case.version)
        .values(version=case.version + 1, **values)
    )
    if result.rowcount != 1:
        raise CaseStateError(f"case {case.id} changed meanwhile; try again")
    if to in _CLOSES:
        # The work an open assignment was about is done (or no longer wanted).
        conn.execute(
            update(_assignments)
            .where(
                _assignments.c.case_id == case.id,
                _assignments.c.status.in_(OPEN_ASSIGNMENT_STATUSES),
                _assignments.c.kind == _CLOSES[to],
            )
            .values(status="cancelled" if to == "cancelled" else "done", finished_at=now)
        )
    audit(
        conn,
        now,
        actor,
        f"case.{to}",
        case_id=case.id,
        device_id=case.device_id,
        **{"from": case.state, "reason": reason},
    )
    return get_case(conn, case.id)


def set_overlay(
    conn: Connection, case: CaseRecord, overlay: str, now: float, *, actor: str, **fields: Any
) -> CaseRecord:
    """Put ``case`` into ``overdue`` or ``escalated``, keeping its flow state in ``resumes``."""
    if overlay not in OVERLAY_STATES:
        raise ValueError(f"{overlay!r} is not an overlay state")
    if case.state in FINAL_STATES:
        raise CaseStateError(f"case {case.id} is {case.state}")
    conn.execute(
        update(_cases)
        .where(_cases.c.id == case.id, _cases.c.version == case.version)
        .values(
            state=overlay, resumes=case.effective, updated=now, version=case.version + 1, **fields
        )
    )
    audit(
        conn,
        now,
        actor,
        f"case.{overlay}",
        case_id=case.id,
        device_id=case.device_id,
        **{"from": case.state, "level": fields.get("level", case.level)},
    )
    return get_case(conn, case.id)


# -- the locker's reports ------------------------------------------------------------------------

LOCKER_EVENT_TYPES: Final = frozenset(
    {
        "compartment.state",
        "compartment.deposited",
        "compartment.emptied",
        "compartment.fault",
        "compartment.alarm",
        "compartment.alarm_cleared",
        "compartment.open_dropped",
        "credential.refused",
        "scanner.lockout",
    }
)
"""The event types the domain projects; everything else is stored and left alone."""


@dataclass(frozen=True)
class LockerEffect:
    """What a locker event did to the domain, for the caller to act on after the commit
    (notify a resident, wake the dispatcher, alert the grid's workers)."""

    kind: str
    device_id: str
    case_id: str | None = None
    compartment: int | None = None


def _upsert_compartment(
    conn: Connection, device_id: str, seq: int, now: float, number: int, **values: Any
) -> None:
    row = conn.execute(
        select(_compartments.c.seq).where(
            _compartments.c.device_id == device_id, _compartments.c.number == number
        )
    ).first()
    if row is None:
        conn.execute(
            insert(_compartments).values(
                device_id=device_id,
                number=number,
                seq=seq,
                updated_at=now,
                state=values.pop("state", "free"),
                **values,
            )
        )
    elif row.seq < seq:
        conn.execute(
            update(_compartments)
            .where(_compartments.c.device_id == device_id, _compartments.c.number == number)
            .values(seq=seq, updated_at=now, **values)
        )


@dataclass(frozen=True)
class LockerEvent:
    """A stored event of a locker, as the projection sees it."""

    device_id: str
    seq: int
    type: str
    data: Mapping[str, Any]

    @property
    def compartment(self) -> int | None:
        value = self.data.get("compartment")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def text(self, key: str) -> str | None:
        value = self.data.get(key)
        return value if isinstance(value, str) and value else None


_AUDITED: Final = frozenset(
    {
        "compartment.alarm",
        "compartment.alarm_cleared",
        "compartment.fault",
        "compartment.open_dropped",
        "credential.refused",
        "scanner.lockout",
    }
)
_ALERTS: Final = frozenset({"compartment.alarm", "compartment.fault", "compartment.open_dropped"})
_TARGETS: Final = {
    ("compartment.deposited", False): "deposited",
    ("compartment.emptied", False): "collected",
    ("compartment.deposited", True): "result_stored",
    ("compartment.emptied", True): "completed",
}


def apply_locker_event(conn: Connection, event: LockerEvent, now: float) -> list[LockerEffect]:
    """Project one stored locker event onto compartments and cases (idempotent, order-tolerant).

    Events are what the locker saw, so they are never refused here: an event about a case this
    server does not know (another server's database, a case id typed into a command by hand) is
    audited and otherwise ignored.
    """
    number = event.compartment
    case_id = event.text("case")
    device_id = event.device_id
    if event.type == "compartment.state":
        state = event.text("to")
        if number is not None and state is not None:
            _upsert_compartment(
                conn, device_id, event.seq, now, number, state=state, case_id=case_id
            )
        return []
    if event.type in _AUDITED:
        reason = event.text("reason") or event.text("alarm")
        audit(
            conn,
            now,
            f"device:{device_id}",
            event.type,
            case_id=case_id,
            device_id=device_id,
            compartment=number,
            reason=reason,
        )
        alert = event.type in _ALERTS
        return [LockerEffect(event.type, device_id, case_id, number)] if alert else []
    target = _TARGETS.get((event.type, event.text("content") == "result"))
    if target is None or case_id is None:
        return []
    return _advance_case(conn, event, case_id, target, now)


def _advance_case(
    conn: Connection, event: LockerEvent, case_id: str, target: str, now: float
) -> list[LockerEffect]:
    actor = f"device:{event.device_id}"
    row = conn.execute(select(_cases).where(_cases.c.id == case_id).with_for_update()).first()
    if row is None or row.device_id != event.device_id:
        audit(
            conn,
            now,
            actor,
            "locker.unknown_case",
            device_id=event.device_id,
            event=event.type,
            compartment=event.compartment,
        )
        log.warning(
            "locker %s reported %s for a case this server does not know",
            event.device_id,
            event.type,
        )
        return []
    case = CaseRecord.from_row(row)
    if case.state in FINAL_STATES or _RANK[case.effective] >= _RANK[target]:
        return []  # a late or repeated report: the case is already there
    fields: dict[str, Any] = {}
    if target == "deposited":
        fields["compartment"] = event.compartment
    elif target == "result_stored":
        fields["result_compartment"] = event.compartment
    move(conn, case, target, now, actor=actor, reason=event.type, force=True, **fields)
    return [LockerEffect(f"case.{target}", event.device_id, case_id, event.compartment)]
