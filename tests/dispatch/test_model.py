"""Hand-made batches whose optimum is known: each rule of the model changes who goes where.

Every plan from every solver is also passed through ``check_plan``.
"""

from __future__ import annotations

import dataclasses

import pytest

from sync_server.dispatch import (
    Pickup,
    Plan,
    Weights,
    Worker,
    check_plan,
    escalate_cost,
    pair_cost,
    solve,
    solve_greedy,
    solve_reference,
)
from tests.dispatch.helpers import NOW, PLAIN, Solver, ds, pickup, worker

EXACT = (solve, solve_reference)


def who(plan: Plan) -> dict[str, str]:
    return {a.pickup_id: a.worker_id for a in plan.assignments}


def checked(solver: Solver, pickups: list[Pickup], workers: list[Worker], weights: Weights) -> Plan:
    plan = solver(pickups, workers, NOW, weights)
    assert check_plan(plan, pickups, workers, NOW, weights) == plan.cost
    return plan


@pytest.mark.parametrize("solver", EXACT)
def test_workload_spreads_two_tasks_over_two_workers(solver: Solver) -> None:
    weights = dataclasses.replace(PLAIN, workload_s_per_task=300.0)
    pickups = [pickup("p1", 0.0), pickup("p2", 0.0)]
    workers = [worker("near", 0.0), worker("far", 1.0)]
    plan = checked(solver, pickups, workers, weights)
    # Both to "near": 0 + 0 + 300 + 600 = 900 s; spread: 0 + 300 + 100 + 300 = 700 s.
    assert sorted(who(plan).values()) == ["far", "near"]
    assert plan.cost == ds(700)
    # Without the workload term the near worker takes both.
    plain = checked(solver, pickups, workers, PLAIN)
    assert set(who(plain).values()) == {"near"}
    assert plain.cost == 0


@pytest.mark.parametrize("solver", EXACT)
def test_tasks_already_held_make_a_worker_dearer(solver: Solver) -> None:
    weights = dataclasses.replace(PLAIN, workload_s_per_task=300.0)
    pickups = [pickup("p1", 0.0)]
    workers = [worker("busy", 0.0, load=3), worker("free", 2.0)]
    plan = checked(solver, pickups, workers, weights)
    # busy: 0 + 300*4 = 1200 s; free: 200 + 300 = 500 s.
    assert who(plan) == {"p1": "free"}
    assert plan.cost == ds(500)


@pytest.mark.parametrize("solver", EXACT)
def test_lateness_sends_the_nearer_worker_to_the_tight_pickup(solver: Solver) -> None:
    weights = dataclasses.replace(PLAIN, lateness_per_s=2.0, soft_due_margin_s=1000.0)
    # Both pickups at the same point: 100 s from A, 300 s from B. Without lateness either
    # split costs 400 s; the tight one (due in 400 s, soft due 600 s ago) must get A.
    pickups = [pickup("loose", 1.0), pickup("tight", 1.0, deadline=NOW + 400)]
    workers = [worker("A", 0.0, capacity=1), worker("B", 4.0, capacity=1)]
    plan = checked(solver, pickups, workers, weights)
    assert who(plan) == {"tight": "A", "loose": "B"}
    # tight->A: 100 + 2 * (100 + 600) = 1500; loose->B: 300.
    assert plan.cost == ds(1800)


@pytest.mark.parametrize("solver", EXACT)
def test_capacity_escalates_the_dearest_pickup(solver: Solver) -> None:
    pickups = [pickup("p1", 1.0), pickup("p2", 5.0), pickup("p3", 2.0)]
    workers = [worker("A", 0.0, capacity=2)]
    plan = checked(solver, pickups, workers, PLAIN)
    assert who(plan) == {"p1": "A", "p3": "A"}
    assert plan.escalated == ("p2",)
    assert plan.cost == ds(100 + 200 + 10_000)


@pytest.mark.parametrize("solver", EXACT)
def test_shift_rules(solver: Solver) -> None:
    pickups = [pickup("p1", 1.0)]
    workers = [
        worker("ends_before_arrival", 0.0, shift=(0.0, NOW + 50)),  # arrives at NOW + 100
        worker("not_started", 0.0, shift=(NOW + 10, 1e6)),
        worker("ended", 0.0, shift=(0.0, NOW - 1)),
        worker("on_shift", 4.0),
    ]
    plan = checked(solver, pickups, workers, PLAIN)
    assert who(plan) == {"p1": "on_shift"}
    assert plan.cost == ds(300)
    # Arriving exactly at shift end is still on shift.
    exact = [worker("exact", 0.0, shift=(0.0, NOW + 100))]
    assert who(checked(solver, pickups, exact, PLAIN)) == {"p1": "exact"}


@pytest.mark.parametrize("solver", EXACT)
def test_only_workers_covering_the_grid_are_sent(solver: Solver) -> None:
    pickups = [pickup("p1", 1.0, grid="east")]
    workers = [
        worker("west", 1.0, grids=("west",)),
        worker("east", 9.0, grids=("west", "east")),
    ]
    plan = checked(solver, pickups, workers, PLAIN)
    assert who(plan) == {"p1": "east"}


@pytest.mark.parametrize("solver", EXACT)
def test_unreachable_deadlines_and_full_workers_escalate(solver: Solver) -> None:
    pickups = [
        pickup("too_soon", 1.0, deadline=NOW + 99),  # 100 s away at best
        pickup("past", 0.0, deadline=NOW - 1),
        pickup("just_in_time", 1.0, deadline=NOW + 100),
    ]
    workers = [worker("A", 0.0), worker("full", 0.0, capacity=0)]
    plan = checked(solver, pickups, workers, PLAIN)
    assert who(plan) == {"just_in_time": "A"}
    assert plan.escalated == ("too_soon", "past")


@pytest.mark.parametrize("solver", EXACT)
def test_escalating_is_chosen_when_cheaper_than_going(solver: Solver) -> None:
    weights = dataclasses.replace(PLAIN, escalate_s=150.0)
    pickups = [pickup("near", 1.0), pickup("far", 2.0)]
    plan = checked(solver, pickups, [worker("A", 0.0)], weights)
    assert who(plan) == {"near": "A"}
    assert plan.escalated == ("far",)
    assert plan.cost == ds(100 + 150)


@pytest.mark.parametrize("solver", (*EXACT, solve_greedy))
def test_empty_batches(solver: Solver) -> None:
    empty = checked(solver, [], [worker("A", 0.0)], PLAIN)
    assert empty.assignments == () and empty.escalated == () and empty.cost == 0
    assert checked(solver, [], [], PLAIN).cost == 0
    pickups = [pickup("p1", 0.0), pickup("p2", 3.0)]
    nobody = checked(solver, pickups, [], PLAIN)
    assert nobody.escalated == ("p1", "p2")
    assert nobody.cost == 2 * escalate_cost(PLAIN)


@pytest.mark.parametrize("solver", EXACT)
def test_assignment_costs_fill_each_workers_slots_in_arrival_order(solver: Solver) -> None:
    weights = dataclasses.replace(PLAIN, workload_s_per_task=10.0)
    pickups = [pickup("second", 2.0), pickup("first", 1.0)]
    plan = checked(solver, pickups, [worker("A", 0.0, load=1)], weights)
    costs = {a.pickup_id: a.cost for a in plan.assignments}
    # Slot 0 (load 1 -> 2 * 10 s) to the earlier arrival, slot 1 (3 * 10 s) to the later.
    assert costs == {"first": ds(100 + 20), "second": ds(200 + 30)}
    etas = {a.pickup_id: a.eta for a in plan.assignments}
    assert etas == {"first": NOW + 100, "second": NOW + 200}


def test_greedy_is_strictly_worse_when_the_earliest_deadline_takes_the_shared_worker() -> None:
    # "early" is a little nearer to A than to B; "late" can only sensibly be served by A.
    pickups = [pickup("early", 0.9, deadline=NOW + 5000), pickup("late", -1.0)]
    workers = [worker("A", 0.0, capacity=1), worker("B", 2.0, capacity=1)]
    greedy = checked(solve_greedy, pickups, workers, PLAIN)
    best = checked(solve, pickups, workers, PLAIN)
    assert who(greedy) == {"early": "A", "late": "B"}
    assert greedy.cost == ds(90 + 300)
    assert who(best) == {"early": "B", "late": "A"}
    assert best.cost == ds(110 + 100) == checked(solve_reference, pickups, workers, PLAIN).cost


def test_default_weights_and_pair_cost() -> None:
    weights = Weights()
    assert weights.detour == 1.3
    p = pickup("p", 3.0, y=4.0, deadline=NOW + 3600)  # 5 km straight, 6.5 km by street
    w = worker("w", 0.0, speed=13.0)  # 0.5 h -> 1800 s
    found = pair_cost(p, w, NOW, weights)
    assert found is not None
    eta, cost = found
    assert eta == pytest.approx(NOW + 1800)
    # Soft due 30 min before the deadline = NOW + 1800: arriving then is not late.
    assert cost == ds(1800)
    assert pair_cost(p, dataclasses.replace(w, grids=frozenset({"h"})), NOW, weights) is None
