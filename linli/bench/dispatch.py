"""Benchmark: the dispatch engine on seeded synthetic cities (DESIGN.md budget: 1,000 pickups x
200 workers assigned with 0 % gap to a min-cost-flow reference in <= 50 ms).

Each city (:func:`sync_server.dispatch_sim.synthetic_city`, seed, seed+1, ...) is solved
``repeats`` times by the production solver, the independent OR-Tools min-cost-flow reference and
the greedy baseline, after one untimed warm-up each. Every plan goes through
:func:`~sync_server.dispatch.check_plan`, which recomputes its cost pair by pair, so the gaps are
between checked, feasible plans; a plan that breaks a rule fails the run instead of reporting.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from linli.bench import summarize, value
from sync_server.dispatch import (
    Pickup,
    Plan,
    Weights,
    Worker,
    check_plan,
    pair_cost,
    solve,
    solve_greedy,
    solve_reference,
)
from sync_server.dispatch_sim import City, synthetic_city

BUDGET_MS = 50.0
Solver = Callable[[Sequence[Pickup], Sequence[Worker], float, Weights | None], Plan]


def _timed(solver: Solver, city: City, weights: Weights, repeats: int) -> tuple[Plan, list[float]]:
    """Solve ``city`` once untimed, then ``repeats`` timed times; return the checked plan and ms."""
    plan = solver(city.pickups, city.workers, city.now, weights)
    samples: list[float] = []
    for _ in range(repeats):
        started = time.perf_counter()
        plan = solver(city.pickups, city.workers, city.now, weights)
        samples.append((time.perf_counter() - started) * 1000.0)
    return plan, samples


def _eligibility(city: City, weights: Weights) -> tuple[int, int]:
    """(eligible pairs, pickups with no eligible worker), counted one pair at a time."""
    by_grid: dict[str, list[Worker]] = {}
    for worker in city.workers:
        for grid in worker.grids:
            by_grid.setdefault(grid, []).append(worker)
    pairs = unreachable = 0
    for pickup in city.pickups:
        found = sum(
            pair_cost(pickup, w, city.now, weights) is not None
            for w in by_grid.get(pickup.grid, [])
        )
        pairs += found
        unreachable += found == 0
    return pairs, unreachable


def _gap(cost: int, reference: int) -> float:
    return 100.0 * (cost - reference) / reference if reference else 0.0


def _ratio(cost: int, reference: int) -> float:
    # A zero reference only comes with a zero-cost batch (nothing to pay for): a ratio of 1.
    return cost / reference if reference else 1.0


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def run(
    pickups: int = 1000,
    workers: int = 200,
    *,
    cities: int = 5,
    repeats: int = 10,
    seed: int = 20261123,
    weights: Weights | None = None,
) -> list[dict[str, Any]]:
    """Time and compare the three solvers on ``cities`` seeded cities; see docs/dispatch.md."""
    weights = weights or Weights()
    times: dict[str, list[float]] = {"solve": [], "reference": [], "greedy": []}
    costs: dict[str, list[int]] = {"solve": [], "reference": [], "greedy": []}
    assigned: list[int] = []
    escalated: list[int] = []
    pairs: list[int] = []
    unreachable: list[int] = []
    solvers: dict[str, Solver] = {
        "solve": solve,
        "reference": solve_reference,
        "greedy": solve_greedy,
    }
    for c in range(cities):
        city = synthetic_city(seed + c, pickups, workers)
        for name, solver in solvers.items():
            plan, samples = _timed(solver, city, weights, repeats)
            times[name].extend(samples)
            costs[name].append(check_plan(plan, city.pickups, city.workers, city.now, weights))
            if name == "solve":
                assigned.append(len(plan.assignments))
                escalated.append(len(plan.escalated))
        n_pairs, n_unreachable = _eligibility(city, weights)
        pairs.append(n_pairs)
        unreachable.append(n_unreachable)

    size = {"pickups": pickups, "workers": workers, "cities": cities, "seed": seed}
    ref = costs["reference"]
    solve_gaps = [_gap(cost, r) for cost, r in zip(costs["solve"], ref, strict=True)]
    greedy_gaps = [_gap(cost, r) for cost, r in zip(costs["greedy"], ref, strict=True)]
    worst = max(range(cities), key=lambda i: solve_gaps[i])
    worst_greedy = max(range(cities), key=lambda i: greedy_gaps[i])
    solve_times = summarize("dispatch_solve", "ms", times["solve"], **size, budget_ms=BUDGET_MS)
    solve_times["within_budget"] = solve_times["p95"] <= BUDGET_MS
    return [
        solve_times,
        value(
            "dispatch_gap",
            "%",
            cities,
            solve_gaps[worst],
            reference=ref[worst],
            ratio=_ratio(costs["solve"][worst], ref[worst]),
            cost=costs["solve"][worst],
            cities_at_optimum=sum(g == 0 for g in solve_gaps),
            **size,
        ),
        summarize("dispatch_reference_solve", "ms", times["reference"], **size),
        summarize("dispatch_greedy_solve", "ms", times["greedy"], **size),
        value("dispatch_greedy_gap_mean", "%", cities, _mean(greedy_gaps), **size),
        value(
            "dispatch_greedy_gap_max",
            "%",
            cities,
            greedy_gaps[worst_greedy],
            reference=ref[worst_greedy],
            ratio=_ratio(costs["greedy"][worst_greedy], ref[worst_greedy]),
            cost=costs["greedy"][worst_greedy],
            **size,
        ),
        value("dispatch_eligible_pairs", "pairs", cities, _mean(pairs), **size),
        value(
            "dispatch_assigned",
            "pickups",
            cities,
            _mean(assigned),
            min=min(assigned),
            max=max(assigned),
            **size,
        ),
        value(
            "dispatch_escalated",
            "pickups",
            cities,
            _mean(escalated),
            min=min(escalated),
            max=max(escalated),
            unreachable=_mean(unreachable),
            **size,
        ),
    ]
