"""The production solver against an independent reference and, on tiny batches, brute force.

``solve`` (sparse assignment) and ``solve_reference`` (OR-Tools min-cost flow) must reach the same
integer optimum on every batch; on batches small enough to enumerate, that optimum is the least
cost over every possible plan. The greedy baseline is never better. Every plan passes
``check_plan``.
"""

from __future__ import annotations

import itertools
import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sync_server.dispatch import (
    Pickup,
    Weights,
    Worker,
    _eligible_pairs,
    check_plan,
    escalate_cost,
    pair_cost,
    slot_cost,
    solve,
    solve_greedy,
    solve_reference,
)
from sync_server.dispatch_sim import synthetic_city

NOW = 50_000.0


def brute_force(pickups: list[Pickup], workers: list[Worker], weights: Weights) -> int:
    """The least cost over every plan: each pickup to any worker or escalated."""
    options = [
        [(j, found[1]) for j, w in enumerate(workers) if (found := pair_cost(p, w, NOW, weights))]
        + [(-1, escalate_cost(weights))]
        for p in pickups
    ]
    best: int | None = None
    for choice in itertools.product(*options):
        taken = [0] * len(workers)
        total = 0
        for j, cost in choice:
            total += cost
            if j >= 0:
                total += slot_cost(workers[j], taken[j], weights)
                taken[j] += 1
        if all(t <= w.capacity for t, w in zip(taken, workers, strict=True)):
            best = total if best is None else min(best, total)
    assert best is not None
    return best


def all_three(
    pickups: list[Pickup], workers: list[Worker], weights: Weights, now: float = NOW
) -> tuple[int, int]:
    """Check every solver's plan; return (optimum, greedy cost)."""
    best = solve(pickups, workers, now, weights)
    reference = solve_reference(pickups, workers, now, weights)
    greedy = solve_greedy(pickups, workers, now, weights)
    for plan in (best, reference, greedy):
        assert check_plan(plan, pickups, workers, now, weights) == plan.cost
    assert best.cost == reference.cost
    assert greedy.cost >= best.cost
    return best.cost, greedy.cost


def random_weights(rng: random.Random) -> Weights:
    return Weights(
        lateness_per_s=rng.choice([0.0, 0.5, 2.0, 10.0]),
        workload_s_per_task=rng.choice([0.0, 60.0, 300.0, 1000.0]),
        escalate_s=rng.choice([200.0, 1500.0, 4 * 3600.0]),
        soft_due_margin_s=rng.choice([0.0, 600.0, 1800.0]),
        detour=rng.choice([1.0, 1.3]),
    )


def tie_heavy(rng: random.Random, n: int, m: int) -> tuple[list[Pickup], list[Worker]]:
    """Integer positions on a tiny map, equal speeds: many equal costs, shared grids."""
    grids = ["a", "b", "c"]
    pickups = [
        Pickup(
            f"p{i}",
            rng.choice(grids),
            float(rng.randint(0, 3)),
            float(rng.randint(0, 3)),
            NOW + rng.choice([-10.0, 300.0, 900.0, 1800.0, 7200.0]),
            rng.choice(["pickup", "return"]),
        )
        for i in range(n)
    ]
    workers = [
        Worker(
            f"w{j}",
            frozenset(rng.sample(grids, rng.randint(1, 3))),
            float(rng.randint(0, 3)),
            float(rng.randint(0, 3)),
            rng.choice([12.0, 18.0]),
            rng.randint(0, 4),
            rng.randint(0, 3),
            start := NOW - rng.choice([0.0, 3600.0, -60.0]),
            start + rng.choice([0.0, 600.0, 3660.0, 4200.0, 28800.0]),
        )
        for j in range(m)
    ]
    return pickups, workers


coordinate = st.floats(0.0, 4.0, allow_nan=False)


@st.composite
def tiny_batch(draw: st.DrawFn) -> tuple[list[Pickup], list[Worker], Weights]:
    n = draw(st.integers(0, 5))
    m = draw(st.integers(0, 3))
    grids = st.sampled_from(["a", "b"])
    pickups = [
        Pickup(
            f"p{i}",
            draw(grids),
            draw(coordinate),
            draw(coordinate),
            NOW + draw(st.floats(-100.0, 3000.0)),
        )
        for i in range(n)
    ]
    workers = [
        Worker(
            f"w{j}",
            frozenset(draw(st.sets(grids, min_size=1))),
            draw(coordinate),
            draw(coordinate),
            draw(st.floats(5.0, 25.0)),
            draw(st.integers(0, 3)),
            draw(st.integers(0, 4)),
            start := NOW - draw(st.floats(-100.0, 1000.0)),
            start + draw(st.floats(0.0, 4000.0)),
        )
        for j in range(m)
    ]
    weights = Weights(
        lateness_per_s=draw(st.sampled_from([0.0, 1.0, 5.0])),
        workload_s_per_task=draw(st.sampled_from([0.0, 100.0, 400.0])),
        escalate_s=draw(st.sampled_from([300.0, 1200.0, 5000.0])),
        soft_due_margin_s=draw(st.sampled_from([0.0, 900.0])),
    )
    return pickups, workers, weights


@settings(max_examples=300)
@given(tiny_batch())
def test_tiny_batches_reach_the_brute_force_optimum(
    batch: tuple[list[Pickup], list[Worker], Weights],
) -> None:
    pickups, workers, weights = batch
    optimum, _ = all_three(pickups, workers, weights)
    assert optimum == brute_force(pickups, workers, weights)


def test_tie_heavy_batches_agree_with_the_reference_and_brute_force() -> None:
    rng = random.Random(7)
    for _ in range(300):
        pickups, workers = tie_heavy(rng, rng.randint(0, 5), rng.randint(0, 3))
        weights = random_weights(rng)
        optimum, _ = all_three(pickups, workers, weights)
        assert optimum == brute_force(pickups, workers, weights)
    for _ in range(150):
        pickups, workers = tie_heavy(rng, rng.randint(20, 120), rng.randint(3, 25))
        all_three(pickups, workers, random_weights(rng))


def test_synthetic_cities_agree_with_the_reference_and_greedy_is_worse() -> None:
    rng = random.Random(11)
    greedy_worse = 0
    for seed in range(40):
        n, m = rng.randint(1, 250), rng.randint(1, 50)
        city = synthetic_city(seed, n, m, cols=rng.randint(1, 4), rows=rng.randint(1, 4))
        weights = random_weights(rng) if seed % 2 else Weights()
        optimum, greedy = all_three(list(city.pickups), list(city.workers), weights, city.now)
        greedy_worse += greedy > optimum
    # Not a formality: on most of these batches the greedy plan costs strictly more.
    assert greedy_worse >= 20


def test_full_size_city_agrees_with_the_reference() -> None:
    city = synthetic_city(3)
    optimum, greedy = all_three(list(city.pickups), list(city.workers), Weights(), city.now)
    assert greedy > optimum
    plan = solve(city.pickups, city.workers, city.now)
    # A stressed batch: most pickups assigned, some escalated for want of a reachable slot.
    assert 600 < len(plan.assignments) < 1000
    assert len(plan.escalated) > 0


def test_vectorised_pairs_equal_the_scalar_cost_bit_for_bit() -> None:
    """``solve`` builds pairs with numpy, the reference and the checker one at a time: same
    pairs, same eta, same integer cost, also when arrival falls exactly on a deadline."""
    city = synthetic_city(5, 400, 80)
    workers = list(city.workers)
    # Deadlines set to the exact arrival of one worker: eligible iff eta <= deadline holds alike.
    pickups = list(city.pickups)
    for i, p in enumerate(pickups[:100]):
        for w in workers:
            found = pair_cost(Pickup(p.id, p.grid, p.x_km, p.y_km, 1e12), w, city.now, Weights())
            if found is not None:
                pickups[i] = Pickup(p.id, p.grid, p.x_km, p.y_km, found[0])
                break
    for weights in (Weights(), Weights(lateness_per_s=3.3, soft_due_margin_s=777.7, detour=1.17)):
        pairs = _eligible_pairs(pickups, workers, city.now, weights)
        vectorised = {
            (int(i), int(j)): (float(e), int(c))
            for i, j, e, c in zip(pairs.pickup, pairs.worker, pairs.eta, pairs.cost, strict=True)
        }
        scalar = {
            (i, j): found
            for i, p in enumerate(pickups)
            for j, w in enumerate(workers)
            if (found := pair_cost(p, w, city.now, weights)) is not None
        }
        assert vectorised == scalar
        assert len(scalar) > 1000


def test_same_seed_same_city_other_seed_other_city() -> None:
    a, b, c = synthetic_city(1, 50, 10), synthetic_city(1, 50, 10), synthetic_city(2, 50, 10)
    assert a == b
    assert a.pickups != c.pickups
    deadlines = np.array([p.deadline for p in synthetic_city(1).pickups]) - a.now
    # Some already impossible, some tight, most within 1-8 h.
    assert (deadlines < 0).sum() > 0
    assert ((deadlines > 0) & (deadlines < 3600)).sum() > 100
    assert ((deadlines >= 3600) & (deadlines <= 8 * 3600)).sum() > 600
