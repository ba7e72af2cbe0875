"""Dispatch engine: assign a batch of pickups (and result returns) to grid workers at least cost.

Pure: plain values in, a :class:`Plan` out; no database, no MQTT (the dispatcher that reads cases
and shifts and writes assignments sits on top). docs/dispatch.md describes the model; in short:

* a (pickup, worker) pair is *eligible* when the worker covers the pickup's grid, is on shift now
  and still on shift on arrival, has a free slot, and arrives by the deadline;
* an eligible pair costs travel + lateness inside the soft margin before the deadline, and the
  k-th task a worker takes in this batch adds ``workload_s_per_task * (load + k + 1)`` (convex, so
  the work is spread);
* any pickup may instead be escalated at ``escalate_s``, so every batch has a plan.

Every cost is an integer number of deciseconds (:data:`COST_UNITS_PER_S`), computed by the same
float operations in the scalar and the vectorised code, so every solver optimises exactly the same
objective and "0 % gap to the reference" is an exact, not a tolerance, statement.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from ortools.graph.python import min_cost_flow  # type: ignore[import-untyped,unused-ignore]
from scipy.sparse import coo_array  # type: ignore[import-untyped,unused-ignore]
from scipy.sparse.csgraph import (  # type: ignore[import-untyped,unused-ignore]
    min_weight_full_bipartite_matching,
)

from sync_server.errors import ServerError

COST_UNITS_PER_S = 10
"""Costs are integers in tenths of a second: fine enough to rank pairs, exact to sum and compare."""

MAX_ESCALATE_S = 1e6
"""Upper bound of ``escalate_s`` (11.6 days). Every edge the solver keeps is cheaper than
escalating, so this keeps a batch's costs (and LAPJVsp's float64 sums over up to 10**8 pickups)
below 2**53, where float64 still holds every integer exactly."""

PICKUP_KINDS = ("pickup", "return")


class DispatchInputError(ServerError, ValueError):
    """A pickup, worker, weight or batch cannot be dispatched as given (the message names it)."""


class PlanError(ServerError, ValueError):
    """A plan breaks a hard rule or misstates its cost (raised by :func:`check_plan`)."""


def _finite(value: float, what: str) -> None:
    if not math.isfinite(value):
        raise DispatchInputError(f"{what} is {value!r}; it must be a finite number")


@dataclass(frozen=True)
class Pickup:
    """A task at a point: collect a deposit (``pickup``) or bring a result back (``return``).

    Coordinates are kilometres on the site's local plane; ``deadline`` is unix seconds.
    """

    id: str
    grid: str
    x_km: float
    y_km: float
    deadline: float
    kind: str = "pickup"

    def __post_init__(self) -> None:
        if not self.id:
            raise DispatchInputError("a pickup has an empty id")
        _finite(self.x_km, f"pickup {self.id!r} x_km")
        _finite(self.y_km, f"pickup {self.id!r} y_km")
        _finite(self.deadline, f"pickup {self.id!r} deadline")
        if self.kind not in PICKUP_KINDS:
            raise DispatchInputError(
                f"pickup {self.id!r} has kind {self.kind!r}; use one of {PICKUP_KINDS}"
            )


@dataclass(frozen=True)
class Worker:
    """A grid worker as a batch sees them: where, which grids, how much they can still take.

    ``capacity`` is the number of tasks they may take *in this batch* (free slots); ``load`` the
    tasks they already hold, which makes their next task dearer. Shift times are unix seconds.
    """

    id: str
    grids: frozenset[str]
    x_km: float
    y_km: float
    speed_kmh: float
    capacity: int
    load: int
    shift_start: float
    shift_end: float

    def __post_init__(self) -> None:
        if not self.id:
            raise DispatchInputError("a worker has an empty id")
        if isinstance(self.grids, str):
            raise DispatchInputError(
                f"worker {self.id!r} grids is the string {self.grids!r}; give a set of grid ids"
            )
        for name in ("x_km", "y_km", "speed_kmh", "shift_start", "shift_end"):
            _finite(getattr(self, name), f"worker {self.id!r} {name}")
        if self.speed_kmh <= 0:
            raise DispatchInputError(
                f"worker {self.id!r} has speed {self.speed_kmh} km/h; it must be > 0"
            )
        if self.capacity < 0:
            raise DispatchInputError(f"worker {self.id!r} has negative capacity {self.capacity}")
        if self.load < 0:
            raise DispatchInputError(f"worker {self.id!r} has negative load {self.load}")
        if self.shift_end < self.shift_start:
            raise DispatchInputError(f"worker {self.id!r} has a shift that ends before it starts")


@dataclass(frozen=True)
class Weights:
    """The objective's knobs, all in seconds so they add up with travel time.

    Defaults: a second of arrival inside the last ``soft_due_margin_s`` (30 min) before a deadline
    costs ``lateness_per_s`` = 2 s more, so tight pickups go to the nearest/fastest worker; each
    task a worker holds (already, or earlier in this batch) adds ``workload_s_per_task`` = 300 s
    (5 min) to the next one, worth about 1 km of e-bike detour to relieve a busy colleague;
    escalating costs ``escalate_s`` = 4 h, more than an assignment costs on a town-sized site
    (even across it, late and to a busy worker), so it happens when no worker can go, or on
    purpose when going would cost more. ``detour`` turns
    straight-line distance into street distance.
    """

    lateness_per_s: float = 2.0
    workload_s_per_task: float = 300.0
    escalate_s: float = 4 * 3600.0
    soft_due_margin_s: float = 1800.0
    detour: float = 1.3

    def __post_init__(self) -> None:
        for name in (
            "lateness_per_s",
            "workload_s_per_task",
            "escalate_s",
            "soft_due_margin_s",
            "detour",
        ):
            value = getattr(self, name)
            _finite(value, f"weight {name}")
            if value < 0:
                raise DispatchInputError(f"weight {name} is {value}; it must be >= 0")
        if self.detour <= 0:
            raise DispatchInputError(f"weight detour is {self.detour}; it must be > 0")
        if self.escalate_s > MAX_ESCALATE_S:
            raise DispatchInputError(
                f"weight escalate_s is {self.escalate_s} s; it must be <= {MAX_ESCALATE_S:.0f} s"
            )


@dataclass(frozen=True)
class Assignment:
    """``pickup_id`` goes to ``worker_id``, arriving at ``eta`` (unix s), costing ``cost`` (ds).

    ``cost`` includes the workload of the slot it takes: a worker's tasks in a plan take slots in
    order of arrival time.
    """

    pickup_id: str
    worker_id: str
    eta: float
    cost: int


@dataclass(frozen=True)
class Plan:
    """A batch's outcome: every pickup assigned once or escalated; ``cost`` is the total (ds)."""

    assignments: tuple[Assignment, ...]
    escalated: tuple[str, ...]
    cost: int
    solve_s: float = field(compare=False)


# --- the cost of one pair: the single definition every solver and the checker use ---------------


def _ticks(seconds: float) -> int:
    # floor(x + 0.5), the same operation as the vectorised np.floor, so both round alike.
    return math.floor(seconds * COST_UNITS_PER_S + 0.5)


def escalate_cost(weights: Weights) -> int:
    """The integer cost of escalating one pickup."""
    return _ticks(weights.escalate_s)


def slot_cost(worker: Worker, k: int, weights: Weights) -> int:
    """The integer workload cost of the ``k``-th (0-based) task ``worker`` takes in this batch.

    Non-decreasing in ``k``, so modelling a worker's slots as separate columns (or parallel arcs)
    is exact: an optimal plan fills them cheapest first.
    """
    return _ticks(weights.workload_s_per_task * (worker.load + k + 1))


def pair_cost(
    pickup: Pickup, worker: Worker, now: float, weights: Weights
) -> tuple[float, int] | None:
    """``(eta, cost)`` of sending ``worker`` to ``pickup`` now, or None if the pair is ineligible.

    ``cost`` (ds) is travel plus lateness, without the workload term (see :func:`slot_cost`).
    """
    if pickup.grid not in worker.grids or worker.capacity <= 0:
        return None
    if not worker.shift_start <= now <= worker.shift_end:
        return None
    dx = pickup.x_km - worker.x_km
    dy = pickup.y_km - worker.y_km
    travel = weights.detour * math.sqrt(dx * dx + dy * dy) / worker.speed_kmh * 3600.0
    eta = now + travel
    if eta > pickup.deadline or eta > worker.shift_end:
        return None
    late = max(0.0, eta - (pickup.deadline - weights.soft_due_margin_s))
    return eta, _ticks(travel + weights.lateness_per_s * late)


def _validate(pickups: Sequence[Pickup], workers: Sequence[Worker], now: float) -> None:
    _finite(now, "now")
    for kind, items in (("pickup", pickups), ("worker", workers)):
        seen: set[str] = set()
        for item in items:
            if item.id in seen:
                raise DispatchInputError(f"{kind} id {item.id!r} appears twice in the batch")
            seen.add(item.id)


# --- the production solver -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Pairs:
    """Every eligible pair, sorted by pickup then worker, as parallel arrays."""

    pickup: NDArray[np.intp]
    worker: NDArray[np.intp]
    eta: NDArray[np.float64]
    cost: NDArray[np.int64]


def _floats(values: Iterable[float], n: int) -> NDArray[np.float64]:
    return np.fromiter(values, dtype=np.float64, count=n)


def _ticks_array(seconds: NDArray[np.float64]) -> NDArray[np.int64]:
    return np.floor(seconds * COST_UNITS_PER_S + 0.5).astype(np.int64)


def _eligible_pairs(
    pickups: Sequence[Pickup], workers: Sequence[Worker], now: float, weights: Weights
) -> _Pairs:
    """:func:`pair_cost` over all pairs at once, touching in Python only each pickup and worker."""
    n, m = len(pickups), len(workers)
    grid_index: dict[str, int] = {}
    pickup_grid = np.fromiter(
        (grid_index.setdefault(p.grid, len(grid_index)) for p in pickups), dtype=np.intp, count=n
    )
    start = _floats((w.shift_start for w in workers), m)
    end = _floats((w.shift_end for w in workers), m)
    capacity = np.fromiter((w.capacity for w in workers), dtype=np.int64, count=m)
    usable = (capacity > 0) & (start <= now) & (now <= end)
    covers = np.zeros((len(grid_index), m), dtype=bool)
    for j in np.flatnonzero(usable).tolist():
        for grid in workers[j].grids:
            g = grid_index.get(grid)
            if g is not None:
                covers[g, j] = True
    pi, wj = np.nonzero(covers[pickup_grid])
    px = _floats((p.x_km for p in pickups), n)[pi]
    py = _floats((p.y_km for p in pickups), n)[pi]
    deadline = _floats((p.deadline for p in pickups), n)[pi]
    dx = px - _floats((w.x_km for w in workers), m)[wj]
    dy = py - _floats((w.y_km for w in workers), m)[wj]
    speed = _floats((w.speed_kmh for w in workers), m)[wj]
    travel = weights.detour * np.sqrt(dx * dx + dy * dy) / speed * 3600.0
    eta = now + travel
    ok = (eta <= deadline) & (eta <= end[wj])
    late = np.maximum(0.0, eta[ok] - (deadline[ok] - weights.soft_due_margin_s))
    cost = _ticks_array(travel[ok] + weights.lateness_per_s * late)
    return _Pairs(pi[ok], wj[ok], eta[ok], cost)


def _slot_costs(
    workers: Sequence[Worker], slots: NDArray[np.int64], weights: Weights
) -> tuple[NDArray[np.intp], NDArray[np.int64], NDArray[np.int64]]:
    """Slot columns: (first column of each worker, worker of each column, cost of each column)."""
    m = len(workers)
    load = np.fromiter((w.load for w in workers), dtype=np.int64, count=m)
    first = np.zeros(m + 1, dtype=np.intp)
    np.cumsum(slots, out=first[1:])
    owner = np.repeat(np.arange(m), slots)
    k = np.arange(int(first[-1])) - first[owner]
    cost = _ticks_array(weights.workload_s_per_task * (load[owner] + k + 1).astype(np.float64))
    return first, owner, cost


def _make_plan(
    pickups: Sequence[Pickup],
    workers: Sequence[Worker],
    chosen: dict[int, tuple[int, float, int]],
    weights: Weights,
    started: float,
) -> Plan:
    """Build a plan from ``pickup index -> (worker index, eta, pair cost)``; the rest escalate.

    Each worker's tasks take slots in order of arrival; the total is recomputed from the pairs,
    so a solver only has to say who goes where.
    """
    by_worker: dict[int, list[int]] = {}
    for i, (j, _, _) in chosen.items():
        by_worker.setdefault(j, []).append(i)
    slot_of: dict[int, int] = {}
    for j, tasks in by_worker.items():
        tasks.sort(key=lambda i: (chosen[i][1], i))
        if len(tasks) > workers[j].capacity:
            raise PlanError(f"worker {workers[j].id!r} was given more tasks than free slots")
        for k, i in enumerate(tasks):
            slot_of[i] = k
    assignments: list[Assignment] = []
    escalated: list[str] = []
    for i, pickup in enumerate(pickups):
        if i in chosen:
            j, eta, cost = chosen[i]
            total = cost + slot_cost(workers[j], slot_of[i], weights)
            assignments.append(Assignment(pickup.id, workers[j].id, eta, total))
        else:
            escalated.append(pickup.id)
    cost = sum(a.cost for a in assignments) + escalate_cost(weights) * len(escalated)
    return Plan(tuple(assignments), tuple(escalated), cost, time.perf_counter() - started)


def solve(
    pickups: Sequence[Pickup],
    workers: Sequence[Worker],
    now: float,
    weights: Weights | None = None,
) -> Plan:
    """The least-cost plan, exactly: the solver the dispatcher runs on every batch.

    Method: a sparse min-cost full bipartite matching (scipy's LAPJVsp,
    ``min_weight_full_bipartite_matching``). Rows are pickups; columns are worker *slots* (a
    worker's k-th task in the batch, costing its convex workload term) plus one private escalate
    column per pickup, so a full matching always exists. The graph is small because it is built
    only from eligible pairs (a pickup has ~10 candidate workers, not 200), vectorised in numpy,
    and pruned without changing the optimum: a worker gets no more slots than pickups it can
    reach, and an edge no cheaper than escalating is dropped (the pickup's private escalate
    column can always take its place). Pickups left with no edge escalate without entering the
    solver. Why this one: on 1,000 pickups x 200 workers (~50,000 slot edges) LAPJVsp takes
    ~10 ms, the same as OR-Tools' min-cost flow on pair arcs and a tenth of the dense
    ``linear_sum_assignment`` (docs/dispatch.md), and it keeps the production solver on another
    algorithm and library than the min-cost-flow reference that checks it.
    """
    started = time.perf_counter()
    weights = weights or Weights()
    _validate(pickups, workers, now)
    pairs = _eligible_pairs(pickups, workers, now, weights)
    escalate = escalate_cost(weights)
    m = len(workers)
    capacity = np.fromiter((w.capacity for w in workers), dtype=np.int64, count=m)
    load = np.fromiter((w.load for w in workers), dtype=np.int64, count=m)
    first_slot = _ticks_array(weights.workload_s_per_task * (load + 1).astype(np.float64))
    useful = pairs.cost + first_slot[pairs.worker] < escalate
    pi, wj = pairs.pickup[useful], pairs.worker[useful]
    eta, pcost = pairs.eta[useful], pairs.cost[useful]
    slots = np.minimum(capacity, np.bincount(wj, minlength=m))
    first, owner, column_cost = _slot_costs(workers, slots, weights)
    # One edge per (pair, slot of its worker): repeat each pair slots[worker] times.
    reps = slots[wj]
    edge_pair = np.repeat(np.arange(len(pi)), reps)
    offset = np.cumsum(reps) - reps
    column = first[wj[edge_pair]] + (np.arange(len(edge_pair)) - offset[edge_pair])
    edge_cost = pcost[edge_pair] + column_cost[column]
    keep = edge_cost < escalate
    chosen: dict[int, tuple[int, float, int]] = {}
    if keep.any():
        matched_pickup, matched_slot = _match(
            pi[edge_pair[keep]],
            column[keep],
            edge_cost[keep],
            n_pickups=len(pickups),
            n_slots=len(owner),
            escalate=escalate,
        )
        # Pairs are sorted by (pickup, worker): find the matched ones by that key.
        key = pi * m + wj
        hit = np.searchsorted(key, matched_pickup * m + owner[matched_slot])
        chosen = {
            int(i): (int(j), float(e), int(c))
            for i, j, e, c in zip(pi[hit], wj[hit], eta[hit], pcost[hit], strict=True)
        }
    return _make_plan(pickups, workers, chosen, weights, started)


def _compress(index: NDArray[np.intp], size: int) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """(the distinct values of ``index`` in order, ``index`` renumbered 0..k-1 among them)."""
    present = np.zeros(size, dtype=bool)
    present[index] = True
    return np.flatnonzero(present), (np.cumsum(present) - 1)[index]


def _match(
    pickup: NDArray[np.intp],
    slot: NDArray[np.intp],
    cost: NDArray[np.int64],
    *,
    n_pickups: int,
    n_slots: int,
    escalate: int,
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """LAPJVsp over the edges ``pickup -> slot``; return the (pickup, slot) pairs matched.

    Only pickups and slots with an edge enter; each pickup also gets a private escalate column.
    """
    pickups_used, row = _compress(pickup, n_pickups)
    slots_used, col = _compress(slot, n_slots)
    r, c = len(pickups_used), len(slots_used)
    # LAPJVsp needs non-zero weights: shift every edge by 1; every row takes exactly one edge,
    # so the shift adds the same r to every plan. Costs are integers far below 2**53: exact.
    data = np.concatenate([cost + 1, np.full(r, escalate + 1, dtype=np.int64)])
    rows = np.concatenate([row, np.arange(r)])
    cols = np.concatenate([col, c + np.arange(r)])
    graph = coo_array((data.astype(np.float64), (rows, cols)), shape=(r, c + r)).tocsr()
    matched_rows, matched_cols = min_weight_full_bipartite_matching(graph)
    assigned = matched_cols < c
    return pickups_used[matched_rows[assigned]], slots_used[matched_cols[assigned]]


# --- the independent reference and the greedy baseline -------------------------------------------


def solve_reference(
    pickups: Sequence[Pickup],
    workers: Sequence[Worker],
    now: float,
    weights: Weights | None = None,
) -> Plan:
    """The least-cost plan by another route, to check :func:`solve`: OR-Tools min-cost flow.

    source -> pickup (1 unit each) -> worker over one arc per eligible pair (:func:`pair_cost`,
    one pair at a time) -> sink over one unit arc per slot (:func:`slot_cost`, convex, so the flow
    fills the cheapest first); and pickup -> escalate -> sink. It shares nothing with
    :func:`solve` but the cost of one pair, and reports OR-Tools' own optimal cost.
    """
    started = time.perf_counter()
    weights = weights or Weights()
    _validate(pickups, workers, now)
    n, m = len(pickups), len(workers)
    by_grid: dict[str, list[int]] = {}
    for j, worker in enumerate(workers):
        for grid in worker.grids:
            by_grid.setdefault(grid, []).append(j)
    source, escalate_node, sink = 0, n + m + 1, n + m + 2
    flow = min_cost_flow.SimpleMinCostFlow()
    pair_arcs: dict[int, tuple[int, int, float, int]] = {}
    indegree = [0] * m
    escalate = escalate_cost(weights)
    for i, pickup in enumerate(pickups):
        flow.add_arc_with_capacity_and_unit_cost(source, 1 + i, 1, 0)
        flow.add_arc_with_capacity_and_unit_cost(1 + i, escalate_node, 1, escalate)
        for j in by_grid.get(pickup.grid, ()):
            found = pair_cost(pickup, workers[j], now, weights)
            if found is not None:
                arc = flow.add_arc_with_capacity_and_unit_cost(1 + i, 1 + n + j, 1, found[1])
                pair_arcs[arc] = (i, j, found[0], found[1])
                indegree[j] += 1
    for j, worker in enumerate(workers):
        for k in range(min(worker.capacity, indegree[j])):
            cost = slot_cost(worker, k, weights)
            flow.add_arc_with_capacity_and_unit_cost(1 + n + j, sink, 1, cost)
    flow.add_arc_with_capacity_and_unit_cost(escalate_node, sink, max(n, 1), 0)
    flow.set_node_supply(source, n)
    flow.set_node_supply(sink, -n)
    status = flow.solve()
    if status != flow.OPTIMAL:
        raise PlanError(f"the reference min-cost flow ended with status {status}, not OPTIMAL")
    chosen = {
        i: (j, eta, cost) for arc, (i, j, eta, cost) in pair_arcs.items() if flow.flow(arc) > 0
    }
    plan = _make_plan(pickups, workers, chosen, weights, started)
    if plan.cost != flow.optimal_cost():
        raise PlanError(
            f"reference plan costs {plan.cost} but the flow's optimum is {flow.optimal_cost()}"
        )
    return plan


def solve_greedy(
    pickups: Sequence[Pickup],
    workers: Sequence[Worker],
    now: float,
    weights: Weights | None = None,
) -> Plan:
    """The baseline a naive dispatcher would use: earliest deadline first, each pickup to the
    worker whose next task is cheapest for it right now, else escalated. Feasible, not optimal."""
    started = time.perf_counter()
    weights = weights or Weights()
    _validate(pickups, workers, now)
    pairs = _eligible_pairs(pickups, workers, now, weights)
    starts = np.searchsorted(pairs.pickup, np.arange(len(pickups) + 1)).tolist()
    worker_of, eta_of, cost_of = pairs.worker.tolist(), pairs.eta.tolist(), pairs.cost.tolist()
    taken = [0] * len(workers)
    chosen: dict[int, tuple[int, float, int]] = {}
    for i in sorted(range(len(pickups)), key=lambda i: (pickups[i].deadline, i)):
        best: tuple[int, int] | None = None
        for e in range(starts[i], starts[i + 1]):
            j = worker_of[e]
            if taken[j] < workers[j].capacity:
                total = cost_of[e] + slot_cost(workers[j], taken[j], weights)
                if best is None or total < best[0]:
                    best = (total, e)
        if best is not None:
            e = best[1]
            taken[worker_of[e]] += 1
            chosen[i] = (worker_of[e], eta_of[e], cost_of[e])
    return _make_plan(pickups, workers, chosen, weights, started)


# --- the checker ---------------------------------------------------------------------------------


def check_plan(
    plan: Plan,
    pickups: Sequence[Pickup],
    workers: Sequence[Worker],
    now: float,
    weights: Weights | None = None,
) -> int:
    """Recompute ``plan``'s cost pair by pair and return it; raise :class:`PlanError` if the plan
    assigns an ineligible pair, overfills a worker, names a pickup twice or not at all, or states
    a cost (total or per assignment) other than the recomputed one."""
    weights = weights or Weights()
    _validate(pickups, workers, now)
    pickup_by_id = {p.id: p for p in pickups}
    worker_by_id = {w.id: w for w in workers}
    seen: set[str] = set()
    tasks: dict[str, list[tuple[float, int]]] = {}
    for a in plan.assignments:
        if a.pickup_id not in pickup_by_id or a.worker_id not in worker_by_id:
            raise PlanError(f"assignment {a.pickup_id!r} -> {a.worker_id!r} names an unknown id")
        if a.pickup_id in seen:
            raise PlanError(f"pickup {a.pickup_id!r} is in the plan twice")
        seen.add(a.pickup_id)
        found = pair_cost(pickup_by_id[a.pickup_id], worker_by_id[a.worker_id], now, weights)
        if found is None:
            raise PlanError(f"pickup {a.pickup_id!r} -> worker {a.worker_id!r} is not eligible")
        if found[0] != a.eta:
            raise PlanError(f"pickup {a.pickup_id!r}: eta {a.eta} differs from {found[0]}")
        tasks.setdefault(a.worker_id, []).append((found[0], found[1]))
    for pickup_id in plan.escalated:
        if pickup_id not in pickup_by_id:
            raise PlanError(f"escalated pickup {pickup_id!r} is not in the batch")
        if pickup_id in seen:
            raise PlanError(f"pickup {pickup_id!r} is in the plan twice")
        seen.add(pickup_id)
    missing = [p.id for p in pickups if p.id not in seen]
    if missing:
        raise PlanError(f"{len(missing)} pickup(s) neither assigned nor escalated: {missing[:5]}")
    total = escalate_cost(weights) * len(plan.escalated)
    for worker_id, held in tasks.items():
        worker = worker_by_id[worker_id]
        if len(held) > worker.capacity:
            raise PlanError(
                f"worker {worker_id!r} has {len(held)} tasks for {worker.capacity} free slots"
            )
        total += sum(cost for _, cost in held)
        total += sum(slot_cost(worker, k, weights) for k in range(len(held)))
    stated = sum(a.cost for a in plan.assignments) + escalate_cost(weights) * len(plan.escalated)
    if plan.cost != total or stated != total:
        raise PlanError(
            f"plan states cost {plan.cost} (assignments sum to {stated}); recomputed {total}"
        )
    return total
