"""Case statistics for the decision pages (决策分析): per service and per grid over a period.

Every figure is about one cohort: the cases whose documents were deposited in the period
(``deposited_at`` in ``[start, end)``); drafts never deposited are not cases yet.

- ``opened``: the cohort's size; ``completed``: those the resident has since collected.
- pickup time: ``collected_at - deposited_at``; processing time: ``result_at - collected_at``
  (result in a compartment); each as the median and the 90th percentile (nearest rank: the
  smallest value with at least 90 % of the values at or below it) of the cases that did the step.
- within SLA: a case is *on time* when its pickup took at most the service's ``pickup_hours`` and
  its processing at most ``process_hours``; *late* when either step took longer, or is still
  unfinished past that limit (judged at ``now``); otherwise (a step still under way within its
  limit) it is not decided yet. The share is on time / decided. Cancelled cases are left out of
  it. The service's current hours are used.
- ``escalated``: cohort cases escalated at least once (an audit ``case.escalated`` entry).

Rows are read with plain SQL and counted in Python, so both databases give the same numbers.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import ColumnElement, Connection, Table, select, true

from sync_server.domain_models import Area, AuditEntry, Case, Service

__all__ = ["Durations", "GroupStats", "StatsReport", "case_stats", "p90"]

_cases = cast(Table, Case.__table__)
_services = cast(Table, Service.__table__)
_areas = cast(Table, Area.__table__)
_audit = cast(Table, AuditEntry.__table__)


def p90(values: list[float]) -> float:
    """The 90th percentile by nearest rank (``values`` not empty)."""
    ordered = sorted(values)
    return ordered[math.ceil(0.9 * len(ordered)) - 1]


@dataclass(frozen=True)
class Durations:
    """How long one step took (seconds) over the cases that did it."""

    count: int
    median_s: float | None
    p90_s: float | None

    @classmethod
    def of(cls, values: list[float]) -> Durations:
        if not values:
            return cls(0, None, None)
        return cls(len(values), float(statistics.median(values)), p90(values))


@dataclass(frozen=True)
class GroupStats:
    """The figures of one service, one grid, or everything (``key`` ``*``)."""

    key: str
    name: str
    opened: int
    completed: int
    pickup: Durations
    processing: Durations
    on_time: int
    decided: int
    escalated: int

    @property
    def on_time_share(self) -> float | None:
        return self.on_time / self.decided if self.decided else None


@dataclass(frozen=True)
class StatsReport:
    start: float
    end: float
    total: GroupStats
    by_service: list[GroupStats] = field(default_factory=list)
    by_grid: list[GroupStats] = field(default_factory=list)


@dataclass(frozen=True)
class _Case:
    id: str
    service: str
    grid: str
    state: str
    deposited: float
    collected: float | None
    result: float | None
    pickup_limit_s: float
    process_limit_s: float


def _step_on_time(
    begin: float | None, end: float | None, limit_s: float, now: float
) -> bool | None:
    """True/False when the step is decided on time/late; None while it is under way in time."""
    if begin is None:
        return None
    if end is not None:
        return end - begin <= limit_s
    return False if now - begin > limit_s else None


def _on_time(case: _Case, now: float) -> bool | None:
    if case.state == "cancelled":
        return None
    pickup = _step_on_time(case.deposited, case.collected, case.pickup_limit_s, now)
    if pickup is False:
        return False
    processing = _step_on_time(case.collected, case.result, case.process_limit_s, now)
    if processing is False:
        return False
    return True if pickup and processing else None


def _group(key: str, name: str, cases: list[_Case], escalated: set[str], now: float) -> GroupStats:
    verdicts = [_on_time(case, now) for case in cases]
    return GroupStats(
        key=key,
        name=name,
        opened=len(cases),
        completed=sum(1 for case in cases if case.state == "completed"),
        pickup=Durations.of([c.collected - c.deposited for c in cases if c.collected is not None]),
        processing=Durations.of(
            [
                c.result - c.collected
                for c in cases
                if c.result is not None and c.collected is not None
            ]
        ),
        on_time=sum(1 for v in verdicts if v is True),
        decided=sum(1 for v in verdicts if v is not None),
        escalated=sum(1 for case in cases if case.id in escalated),
    )


def _grouped(
    cases: Iterable[_Case], key: str, names: dict[str, str], escalated: set[str], now: float
) -> list[GroupStats]:
    groups: dict[str, list[_Case]] = {}
    for case in cases:
        groups.setdefault(getattr(case, key), []).append(case)
    return sorted(
        (_group(k, names.get(k, k), v, escalated, now) for k, v in groups.items()),
        key=lambda g: (-g.opened, g.name),
    )


def case_stats(
    conn: Connection,
    *,
    start: float,
    end: float,
    now: float,
    grids: frozenset[str] | None = None,
) -> StatsReport:
    """The figures of the cases deposited in ``[start, end)``, in ``grids`` (None: all)."""
    where: ColumnElement[bool] = true() if grids is None else _cases.c.grid_id.in_(sorted(grids))
    rows: list[Any] = list(
        conn.execute(
            select(
                _cases.c.id,
                _cases.c.service_id,
                _cases.c.grid_id,
                _cases.c.state,
                _cases.c.deposited_at,
                _cases.c.collected_at,
                _cases.c.result_at,
                _services.c.pickup_hours,
                _services.c.process_hours,
            )
            .join(_services, _services.c.id == _cases.c.service_id)
            .where(_cases.c.deposited_at >= start, _cases.c.deposited_at < end, where)
        )
    )
    cases = [
        _Case(
            r.id,
            r.service_id,
            r.grid_id,
            r.state,
            float(r.deposited_at),
            r.collected_at,
            r.result_at,
            float(r.pickup_hours) * 3600,
            float(r.process_hours) * 3600,
        )
        for r in rows
    ]
    escalated: set[str] = set()
    ids = [case.id for case in cases]
    for chunk in range(0, len(ids), 500):  # keep IN lists short on either database
        escalated.update(
            row.case_id
            for row in conn.execute(
                select(_audit.c.case_id)
                .where(
                    _audit.c.action == "case.escalated",
                    _audit.c.case_id.in_(ids[chunk : chunk + 500]),
                )
                .distinct()
            )
        )
    service_names = {r.id: r.name for r in conn.execute(select(_services.c.id, _services.c.name))}
    grid_names = {r.id: r.name for r in conn.execute(select(_areas.c.id, _areas.c.name))}
    return StatsReport(
        start=start,
        end=end,
        total=_group("*", "合计", cases, escalated, now),
        by_service=_grouped(cases, "service", service_names, escalated, now),
        by_grid=_grouped(cases, "grid", grid_names, escalated, now),
    )
