"""The dispatcher: assigns pickups to grid workers in batches, expires unacknowledged offers, and
runs the SLA (overdue, escalation grid -> community -> street) on the database.

One batch (:meth:`Dispatcher.run_once`) is one transaction under a lock (PostgreSQL advisory
lock; SQLite's write lock), so several server processes may run dispatchers and only one batch
runs at a time; the partial unique index on open assignments is the last guard. It runs every
``interval_s`` and when :meth:`Dispatcher.wake` is called (a new deposit).

Per batch:
1. offers past their ``ack_due`` become ``timed_out``; the case goes back to the pool and that
   worker is not offered it again;
2. every deposited case without an open assignment is a pickup with the case's deadline, and
   every processed case whose result is ready (``result_ready_at``) a ``return``; the
   workers are those active, on shift, with free capacity (``capacity`` minus open assignments
   and cases they hold); :func:`sync_server.dispatch.solve` assigns them exactly;
3. a pickup the plan escalates (no worker can reach it in time) is escalated only when its
   deadline is within ``escalate_margin_s`` (at night nobody is on shift, and that alone is no
   reason to wake the community office);
4. the SLA: a case past its deadline becomes ``overdue`` (staff are told); ``escalate_after_s``
   later it is ``escalated`` to the community, and again later to the street.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, cast

from sqlalchemy import Connection, Engine, Table, and_, insert, or_, select, text, update

from sync_server import dispatch
from sync_server.areas import ancestors
from sync_server.cases import CaseRecord, audit, get_case, move, set_overlay
from sync_server.domain_models import (
    ESCALATION_LEVELS,
    OPEN_ASSIGNMENT_STATUSES,
    Assignment,
    AuditEntry,
    Case,
    ServicePoint,
    Shift,
    Worker,
    WorkerGrid,
)

__all__ = ["BatchReport", "DispatchSettings", "Dispatcher", "Notice", "worker_load"]

log = logging.getLogger(__name__)

_cases = cast(Table, Case.__table__)
_assignments = cast(Table, Assignment.__table__)
_workers = cast(Table, Worker.__table__)
_grids = cast(Table, WorkerGrid.__table__)
_shifts = cast(Table, Shift.__table__)
_points = cast(Table, ServicePoint.__table__)
_audit = cast(Table, AuditEntry.__table__)

_LOCK_KEY: Final = 0x4C494E4C49_4450  # "LINLI" "DP": the PostgreSQL advisory lock of a batch
KM_PER_DEGREE: Final = 111.32


@dataclass(frozen=True)
class DispatchSettings:
    """``[dispatch]`` of the server config."""

    interval_s: float = 5.0
    ack_timeout_s: float = 300.0
    escalate_margin_s: float = 1800.0
    escalate_after_s: float = 4 * 3600.0
    remind_before_s: float = 3600.0
    collect_remind_after_s: float = 3 * 86400.0
    weights: dispatch.Weights = field(default_factory=dispatch.Weights)


@dataclass(frozen=True)
class Notice:
    """Someone to tell after the batch committed: ``template`` of the notification catalogue."""

    template: str
    case_id: str
    worker_id: int | None = None
    area_id: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    to_resident: bool = False


@dataclass
class BatchReport:
    """What one batch did (counts, and what to notify)."""

    timed_out: int = 0
    pickups: int = 0
    workers: int = 0
    assigned: int = 0
    escalated: int = 0
    overdue: int = 0
    solve_s: float = 0.0
    notices: list[Notice] = field(default_factory=list)


def _lock(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
    # SQLite: the engine begins every transaction IMMEDIATE, which already is the write lock.


class Dispatcher:
    """Runs batches on ``engine``; ``notify`` gets each batch's notices after its commit."""

    def __init__(
        self,
        engine: Engine,
        settings: DispatchSettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
        notify: Callable[[Sequence[Notice]], None] | None = None,
    ) -> None:
        self._engine = engine
        self.settings = settings or DispatchSettings()
        self._clock = clock
        self._notify = notify
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- one batch --------------------------------------------------------------------------------
    def run_once(self, now: float | None = None) -> BatchReport:
        """Run one batch now (in one transaction) and hand its notices to ``notify``."""
        now = self._clock() if now is None else now
        report = BatchReport()
        with self._engine.begin() as conn:
            _lock(conn)
            self._expire_offers(conn, now, report)
            self._assign(conn, now, report)
            self._sla(conn, now, report)
        if report.notices and self._notify is not None:
            try:
                self._notify(report.notices)
            except Exception:  # notifications must not stop dispatching
                log.exception("sending %d dispatch notices failed", len(report.notices))
        if report.assigned or report.timed_out or report.escalated or report.overdue:
            log.info(
                "dispatch: %d pickups, %d workers -> %d assigned, %d escalated, %d offers timed "
                "out, %d overdue (solve %.1f ms)",
                report.pickups,
                report.workers,
                report.assigned,
                report.escalated,
                report.timed_out,
                report.overdue,
                report.solve_s * 1000,
            )
        return report

    def _expire_offers(self, conn: Connection, now: float, report: BatchReport) -> None:
        late = conn.execute(
            select(_assignments).where(
                _assignments.c.status == "offered", _assignments.c.ack_due < now
            )
        ).all()
        for offer in late:
            conn.execute(
                update(_assignments)
                .where(_assignments.c.id == offer.id)
                .values(status="timed_out", finished_at=now)
            )
            case = get_case(conn, offer.case_id)
            if (
                offer.kind == "pickup"
                and case.effective == "assigned"
                and case.worker_id == offer.worker_id
            ):
                move(conn, case, "deposited", now, actor="system", reason="offer timed out")
            audit(
                conn,
                now,
                "system",
                "assignment.timed_out",
                case_id=offer.case_id,
                worker=offer.worker_id,
            )
            report.timed_out += 1

    def _assign(self, conn: Connection, now: float, report: BatchReport) -> None:
        pickups, origin, refused = self._pickups(conn, now)
        workers = self._workers(conn, now, origin, refused)
        report.pickups, report.workers = len(pickups), len(workers)
        if not pickups:
            return
        plan = dispatch.solve(pickups, workers, now, self.settings.weights)
        report.solve_s = plan.solve_s
        kinds = {pickup.id: pickup.kind for pickup in pickups}
        for choice in plan.assignments:
            case = get_case(conn, choice.pickup_id, for_update=True)
            worker_id = int(choice.worker_id)
            kind = kinds[case.id]
            conn.execute(
                insert(_assignments).values(
                    case_id=case.id,
                    worker_id=worker_id,
                    kind=kind,
                    status="offered",
                    created=now,
                    ack_due=now + self.settings.ack_timeout_s,
                    eta=choice.eta,
                    cost=choice.cost,
                )
            )
            if kind == "pickup":
                move(
                    conn,
                    case,
                    "assigned",
                    now,
                    actor="system",
                    reason="dispatch",
                    worker_id=worker_id,
                )
            else:  # a result to bring back: the case stays processing, with its new carrier
                conn.execute(
                    update(_cases)
                    .where(_cases.c.id == case.id)
                    .values(worker_id=worker_id, updated=now, version=case.version + 1)
                )
                audit(
                    conn, now, "system", "case.return_assigned", case_id=case.id, worker=worker_id
                )
            report.assigned += 1
            report.notices.append(
                Notice(
                    "case.assigned", case.id, worker_id=worker_id, params={"due_at": case.due_at}
                )
            )
        for case_id in plan.escalated:
            case = get_case(conn, case_id, for_update=True)
            due = case.due_at if case.due_at is not None else math.inf
            if due - now <= self.settings.escalate_margin_s:
                self._escalate(conn, case, now, report, reason="no worker can reach it in time")

    def _pickups(
        self, conn: Connection, now: float
    ) -> tuple[list[dispatch.Pickup], tuple[float, float], dict[str, set[int]]]:
        open_cases = select(_assignments.c.case_id).where(
            _assignments.c.status.in_(OPEN_ASSIGNMENT_STATUSES)
        )
        rows = conn.execute(
            select(_cases, _points.c.lat, _points.c.lon)
            .join(_points, _points.c.device_id == _cases.c.device_id)
            .where(
                (_cases.c.state == "deposited")
                | and_(_cases.c.state == "overdue", _cases.c.resumes == "deposited")
                | and_(
                    _cases.c.result_ready_at.is_not(None),
                    (_cases.c.state == "processing")
                    | and_(_cases.c.state == "overdue", _cases.c.resumes == "processing"),
                ),
                _cases.c.id.notin_(open_cases),
            )
        ).all()
        located = [r for r in rows if r.lat is not None and r.lon is not None]
        origin = (
            (sum(r.lat for r in located) / len(located), sum(r.lon for r in located) / len(located))
            if located
            else (0.0, 0.0)
        )
        refused: dict[str, set[int]] = {}
        if rows:
            for case_id, worker_id in conn.execute(
                select(_assignments.c.case_id, _assignments.c.worker_id).where(
                    _assignments.c.case_id.in_([r.id for r in rows]),
                    _assignments.c.status.in_(("timed_out", "declined")),
                )
            ):
                refused.setdefault(case_id, set()).add(int(worker_id))
        pickups = []
        for row in rows:
            x, y = _km(origin, row.lat, row.lon)
            # A worker who let this case's offer lapse is not offered it again: the pickup gets a
            # coverage key of its own that only the other workers of its grid hold.
            grid = f"{row.grid_id}#{row.id}" if row.id in refused else row.grid_id
            deadline = row.due_at if row.due_at is not None else now + 24 * 3600
            kind = "pickup" if row.result_ready_at is None else "return"
            pickups.append(dispatch.Pickup(row.id, grid, x, y, deadline, kind))
        return pickups, origin, refused

    def _workers(
        self,
        conn: Connection,
        now: float,
        origin: tuple[float, float],
        refused: dict[str, set[int]],
    ) -> list[dispatch.Worker]:
        on_shift = {
            int(row.worker_id): (float(row.start_at), float(row.end_at))
            for row in conn.execute(
                select(_shifts).where(_shifts.c.start_at <= now, _shifts.c.end_at > now)
            )
        }
        if not on_shift:
            return []
        grids: dict[int, set[str]] = {}
        for worker_id, grid_id in conn.execute(select(_grids.c.worker_id, _grids.c.grid_id)):
            grids.setdefault(int(worker_id), set()).add(grid_id)
        for case_id, refusers in refused.items():
            grid = conn.execute(select(_cases.c.grid_id).where(_cases.c.id == case_id)).scalar_one()
            for worker_id, covered in grids.items():
                if grid in covered and worker_id not in refusers:
                    covered.add(f"{grid}#{case_id}")
        load = worker_load(conn)
        workers = []
        for row in conn.execute(
            select(_workers).where(_workers.c.role == "worker", _workers.c.active)
        ):
            if row.id not in on_shift or not grids.get(row.id):
                continue
            held = load.get(row.id, 0)
            free = max(0, row.capacity - held)
            if row.home_lat is None or row.home_lon is None:
                x, y = 0.0, 0.0  # no home position: assume the site's middle
            else:
                x, y = _km(origin, row.home_lat, row.home_lon)
            start, end = on_shift[row.id]
            workers.append(
                dispatch.Worker(
                    str(row.id),
                    frozenset(grids[row.id]),
                    x,
                    y,
                    row.speed_kmh,
                    free,
                    held,
                    start,
                    end,
                )
            )
        return workers

    # -- SLA --------------------------------------------------------------------------------------
    def _escalate(
        self, conn: Connection, case: CaseRecord, now: float, report: BatchReport, *, reason: str
    ) -> None:
        index = ESCALATION_LEVELS.index(case.level)
        if case.state == "escalated" and index == len(ESCALATION_LEVELS) - 1:
            return  # the street has it already
        level = ESCALATION_LEVELS[min(index + 1, len(ESCALATION_LEVELS) - 1)]
        area = self._area_at(conn, case.grid_id, level)
        set_overlay(
            conn,
            case,
            "escalated",
            now,
            actor="system",
            level=level,
            due_at=now + self.settings.escalate_after_s,
        )
        report.escalated += 1
        report.notices.append(
            Notice(
                "case.escalated", case.id, area_id=area, params={"level": level, "reason": reason}
            )
        )

    def _area_at(self, conn: Connection, grid_id: str, level: str) -> str | None:
        """The community (or street) above ``grid_id`` that answers at ``level``."""
        want = "community" if level == "community" else "street"
        return next((area for area, kind in ancestors(conn, grid_id) if kind == want), None)

    def _sla(self, conn: Connection, now: float, report: BatchReport) -> None:
        late = conn.execute(
            select(_cases).where(
                _cases.c.due_at < now,
                _cases.c.state.in_(
                    ("deposited", "assigned", "collected", "processing", "overdue", "escalated")
                ),
            )
        ).all()
        for row in late:
            case = CaseRecord.from_row(row)
            if case.state in ("overdue", "escalated"):
                self._escalate(conn, case, now, report, reason="overdue")
                continue
            set_overlay(
                conn,
                case,
                "overdue",
                now,
                actor="system",
                due_at=now + self.settings.escalate_after_s,
            )
            report.overdue += 1
            report.notices.append(Notice("case.overdue", case.id, worker_id=case.worker_id))
        self._reminders(conn, now, report)

    def _reminders(self, conn: Connection, now: float, report: BatchReport) -> None:
        """Once per case and step: the worker holding a case due within ``remind_before_s``,
        and the resident whose result has waited ``collect_remind_after_s`` in the locker. The
        audit entry written here is what makes it once (batches are serialised)."""
        settings = self.settings
        for state, action, template, when in (
            ("assigned", "case.reminded_pickup", "case.reminder", _cases.c.due_at),
            ("processing", "case.reminded_processing", "case.reminder", _cases.c.due_at),
            ("result_stored", "case.reminded_collect", "case.collect_reminder", _cases.c.result_at),
        ):
            reminded = select(_audit.c.case_id).where(
                _audit.c.action == action, _audit.c.case_id.is_not(None)
            )
            if template == "case.collect_reminder":
                due = when <= now - settings.collect_remind_after_s
            else:
                due = and_(when <= now + settings.remind_before_s, when > now)
            for row in conn.execute(
                select(_cases).where(_cases.c.state == state, due, _cases.c.id.notin_(reminded))
            ):
                audit(conn, now, "system", action, case_id=row.id)
                report.notices.append(
                    Notice(
                        template,
                        row.id,
                        worker_id=row.worker_id,
                        to_resident=template == "case.collect_reminder",
                    )
                )

    # -- the loop ---------------------------------------------------------------------------------
    def wake(self) -> None:
        """Run a batch soon (a new case was deposited)."""
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="linli-dispatcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # a database outage: try again next interval
                log.exception("dispatch batch failed; retrying in %.0f s", self.settings.interval_s)
            self._wake.wait(self.settings.interval_s)
            self._wake.clear()


HOLDING: Final = ("collected", "processing")
"""Flow states in which a worker has a case's documents in hand."""


def worker_load(conn: Connection) -> dict[int, int]:
    """Tasks each worker holds: open offers plus cases whose documents they have (also under an
    overdue/escalated overlay). The dispatcher fills capacity from it; the admin page shows it."""
    load: dict[int, int] = {}
    for (worker_id,) in conn.execute(
        select(_assignments.c.worker_id).where(_assignments.c.status.in_(OPEN_ASSIGNMENT_STATUSES))
    ):
        load[int(worker_id)] = load.get(int(worker_id), 0) + 1
    held = or_(
        _cases.c.state.in_(HOLDING),
        _cases.c.state.in_(("overdue", "escalated")) & _cases.c.resumes.in_(HOLDING),
    )
    for (worker_id,) in conn.execute(
        select(_cases.c.worker_id).where(held, _cases.c.worker_id.is_not(None))
    ):
        load[int(worker_id)] = load.get(int(worker_id), 0) + 1
    return load


def distance_km(a_lat: float, a_lon: float, b_lat: float, b_lon: float) -> float:
    """Straight-line distance between two points of a district (km)."""
    return math.hypot(*_km((a_lat, a_lon), b_lat, b_lon))


def _km(origin: tuple[float, float], lat: float, lon: float) -> tuple[float, float]:
    """Equirectangular projection around ``origin``: exact enough within a district."""
    x = (lon - origin[1]) * KM_PER_DEGREE * math.cos(math.radians(origin[0]))
    y = (lat - origin[0]) * KM_PER_DEGREE
    return x, y
