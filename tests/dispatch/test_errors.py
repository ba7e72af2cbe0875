"""Bad input is refused with a typed error naming the offending id; broken plans are caught."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import pytest

from sync_server.dispatch import (
    Assignment,
    DispatchInputError,
    Pickup,
    Plan,
    PlanError,
    Weights,
    Worker,
    check_plan,
    escalate_cost,
    solve,
    solve_greedy,
    solve_reference,
)
from sync_server.errors import ServerError
from tests.dispatch.helpers import NOW, PLAIN, Solver, ds, pickup, worker


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: Pickup("p7", "g", math.nan, 0.0, 1.0), ["'p7'", "x_km"]),
        (lambda: Pickup("p7", "g", 0.0, math.inf, 1.0), ["'p7'", "y_km"]),
        (lambda: Pickup("p7", "g", 0.0, 0.0, math.inf), ["'p7'", "deadline"]),
        (lambda: Pickup("p7", "g", 0.0, 0.0, 1.0, kind="parcel"), ["'p7'", "parcel"]),
        (lambda: Pickup("", "g", 0.0, 0.0, 1.0), ["empty id"]),
        (lambda: worker("w3", 0.0, capacity=-1), ["'w3'", "negative capacity"]),
        (lambda: worker("w3", 0.0, load=-2), ["'w3'", "negative load"]),
        (lambda: worker("w3", 0.0, speed=0.0), ["'w3'", "speed"]),
        (lambda: worker("w3", 0.0, speed=-5.0), ["'w3'", "speed"]),
        (lambda: worker("w3", 0.0, speed=math.nan), ["'w3'", "speed_kmh"]),
        (lambda: worker("w3", math.nan), ["'w3'", "x_km"]),
        (lambda: worker("w3", 0.0, shift=(0.0, math.inf)), ["'w3'", "shift_end"]),
        (lambda: worker("w3", 0.0, shift=(10.0, 5.0)), ["'w3'", "ends before it starts"]),
        (
            lambda: dataclasses.replace(worker("w3", 0.0), grids="g1"),  # type: ignore[arg-type]
            ["'w3'", "string"],
        ),
        (lambda: Weights(escalate_s=-1.0), ["escalate_s"]),
        (lambda: Weights(lateness_per_s=math.nan), ["lateness_per_s"]),
        (lambda: Weights(detour=0.0), ["detour"]),
        (lambda: Weights(escalate_s=1e15), ["escalate_s", "<= 1000000 s"]),
    ],
)
def test_bad_values_are_refused_when_built(make: Callable[[], object], words: list[str]) -> None:
    with pytest.raises(DispatchInputError) as caught:
        make()
    assert isinstance(caught.value, ServerError) and isinstance(caught.value, ValueError)
    for word in words:
        assert word in str(caught.value)


@pytest.mark.parametrize("solver", [solve, solve_reference, solve_greedy])
def test_bad_batches_are_refused_by_every_solver(solver: Solver) -> None:
    run = solver
    with pytest.raises(DispatchInputError, match="pickup id 'p1' appears twice"):
        run([pickup("p1", 0.0), pickup("p1", 1.0)], [worker("w1", 0.0)], NOW)
    with pytest.raises(DispatchInputError, match="worker id 'w1' appears twice"):
        run([pickup("p1", 0.0)], [worker("w1", 0.0), worker("w1", 1.0)], NOW)
    with pytest.raises(DispatchInputError, match="now"):
        run([pickup("p1", 0.0)], [worker("w1", 0.0)], math.nan)


def _batch() -> tuple[list[Pickup], list[Worker]]:
    return [pickup("p1", 1.0), pickup("p2", 2.0)], [worker("A", 0.0, capacity=1), worker("B", 0.0)]


def test_check_plan_accepts_a_correct_plan_and_returns_its_cost() -> None:
    pickups, workers = _batch()
    plan = Plan((Assignment("p1", "A", NOW + 100, ds(100)),), ("p2",), ds(100 + 10_000), 0.0)
    assert check_plan(plan, pickups, workers, NOW, PLAIN) == ds(10_100)


@pytest.mark.parametrize(
    ("assignments", "escalated", "cost", "words"),
    [
        # p2 is 200 s from A: the stated cost is fine, but A has one slot.
        (
            [("p1", "A", 100, 100), ("p2", "A", 200, 200)],
            [],
            300,
            ["'A'", "2 tasks for 1 free slots"],
        ),
        ([("p1", "A", 100, 100)], ["p1", "p2"], 20_100, ["'p1'", "twice"]),
        ([("p1", "A", 100, 100), ("p1", "B", 100, 100)], ["p2"], 10_200, ["'p1'", "twice"]),
        ([("p1", "A", 100, 100)], [], 100, ["neither assigned nor escalated", "p2"]),
        ([("p1", "Z", 100, 100)], ["p2"], 10_100, ["'Z'", "unknown"]),
        ([], ["p1", "p2", "p9"], 30_000, ["'p9'", "not in the batch"]),
        ([("p1", "A", 100, 100)], ["p2"], 10_000, ["states cost", "recomputed"]),
        ([("p1", "A", 100, 90)], ["p2"], 10_100, ["assignments sum to"]),
        ([("p1", "A", 99, 100)], ["p2"], 10_100, ["'p1'", "eta"]),
    ],
)
def test_check_plan_refuses_broken_plans(
    assignments: list[tuple[str, str, float, float]],
    escalated: list[str],
    cost: float,
    words: list[str],
) -> None:
    pickups, workers = _batch()
    plan = Plan(
        tuple(Assignment(p, w, NOW + eta, ds(c)) for p, w, eta, c in assignments),
        tuple(escalated),
        ds(cost),
        0.0,
    )
    with pytest.raises(PlanError) as caught:
        check_plan(plan, pickups, workers, NOW, PLAIN)
    for word in words:
        assert word in str(caught.value)


def test_check_plan_refuses_an_ineligible_pair() -> None:
    pickups = [pickup("p1", 1.0, grid="east")]
    workers = [worker("west", 1.0, grids=("west",))]
    plan = Plan((Assignment("p1", "west", NOW, 0),), (), 0, 0.0)
    with pytest.raises(PlanError, match="'p1' -> worker 'west' is not eligible"):
        check_plan(plan, pickups, workers, NOW, PLAIN)
    escalated = Plan((), ("p1",), escalate_cost(PLAIN), 0.0)
    assert check_plan(escalated, pickups, workers, NOW, PLAIN) == escalate_cost(PLAIN)
