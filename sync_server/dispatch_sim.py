"""Seeded synthetic cities for the dispatch engine: the benchmark's and the tests' instances.

A city is a rectangle of grids (网格) with lockers in every grid; pickups wait at lockers with
deadlines over the next hours (some tight, a few already impossible), busier in some grids than
others; workers on e-bikes each cover their home grid and up to two neighbours, some off shift.
The same seed and sizes always give the same city (numpy's PCG64 stream).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sync_server.dispatch import Pickup, Worker

DEFAULT_NOW = 1_790_000_000.0
"""A fixed 'now' (unix s, 2026) so a city's deadlines and shifts are reproducible."""

HOUR = 3600.0


@dataclass(frozen=True)
class Locker:
    """A locker (where pickups wait) at a point of its grid."""

    id: str
    grid: str
    x_km: float
    y_km: float


@dataclass(frozen=True)
class City:
    """One batch to dispatch: the pickups and workers at ``now``, and the map they live on."""

    seed: int
    now: float
    grids: tuple[str, ...]
    lockers: tuple[Locker, ...]
    pickups: tuple[Pickup, ...]
    workers: tuple[Worker, ...]


def _grid_id(col: int, row: int) -> str:
    return f"g{row}-{col}"


def _neighbours(col: int, row: int, cols: int, rows: int) -> list[tuple[int, int]]:
    around = [(col + dc, row + dr) for dc in (-1, 0, 1) for dr in (-1, 0, 1) if dc or dr]
    return [(c, r) for c, r in around if 0 <= c < cols and 0 <= r < rows]


def synthetic_city(
    seed: int,
    pickups: int = 1000,
    workers: int = 200,
    *,
    cols: int = 8,
    rows: int = 5,
    size_km: float = 12.0,
    now: float = DEFAULT_NOW,
) -> City:
    """A city of ``cols`` x ``rows`` grids on a ``size_km`` square, ``pickups`` x ``workers``.

    Deadlines: 75 % in 1-8 h, 21 % tight (10-60 min), 4 % already impossible (past, or within
    2 min). Workers: speed 12-20 km/h, capacity 3-8 free slots, load 0-3 tasks held, shifts that
    end in 15 min to 8 h; 8 % are off shift (finished, or starting later). Grid popularity is
    lognormal, so demand exceeds the nearby capacity in some grids and not in others.
    """
    rng = np.random.default_rng(seed)
    cell_w, cell_h = size_km / cols, size_km / rows
    cells = [(c, r) for r in range(rows) for c in range(cols)]
    grids = tuple(_grid_id(c, r) for c, r in cells)

    lockers: list[Locker] = []
    for c, r in cells:
        for k in range(int(rng.integers(1, 4))):
            x = (c + rng.uniform(0.1, 0.9)) * cell_w
            y = (r + rng.uniform(0.1, 0.9)) * cell_h
            lockers.append(Locker(f"L-{_grid_id(c, r)}-{k}", _grid_id(c, r), x, y))

    popularity = rng.lognormal(0.0, 0.7, size=len(lockers))
    chosen = rng.choice(len(lockers), size=pickups, p=popularity / popularity.sum())
    band = rng.uniform(size=pickups)
    pickup_list: list[Pickup] = []
    for i in range(pickups):
        locker = lockers[int(chosen[i])]
        if band[i] < 0.04:
            deadline = now + rng.uniform(-1800.0, 120.0)
        elif band[i] < 0.25:
            deadline = now + rng.uniform(600.0, HOUR)
        else:
            deadline = now + rng.uniform(HOUR, 8 * HOUR)
        kind = "return" if rng.uniform() < 0.15 else "pickup"
        pickup_list.append(
            Pickup(f"P{i:05d}", locker.grid, locker.x_km, locker.y_km, float(deadline), kind)
        )

    worker_list: list[Worker] = []
    for j in range(workers):
        c, r = cells[int(rng.integers(len(cells)))]
        near = _neighbours(c, r, cols, rows)
        extra = rng.choice(len(near), size=min(len(near), int(rng.integers(0, 3))), replace=False)
        covered = frozenset([_grid_id(c, r)] + [_grid_id(*near[int(k)]) for k in extra])
        state = rng.uniform()
        if state < 0.04:  # shift already over
            start, end = now - rng.uniform(4, 8) * HOUR, now - rng.uniform(0, 1) * HOUR
        elif state < 0.08:  # shift starts later
            start = now + rng.uniform(0.5, 3) * HOUR
            end = start + 4 * HOUR
        else:
            start, end = now - rng.uniform(0, 4) * HOUR, now + rng.uniform(0.25, 8) * HOUR
        worker_list.append(
            Worker(
                id=f"W{j:04d}",
                grids=covered,
                x_km=float((c + rng.uniform()) * cell_w),
                y_km=float((r + rng.uniform()) * cell_h),
                speed_kmh=float(rng.uniform(12.0, 20.0)),
                capacity=int(rng.integers(3, 9)),
                load=int(rng.integers(0, 4)),
                shift_start=float(start),
                shift_end=float(end),
            )
        )
    return City(seed, now, grids, tuple(lockers), tuple(pickup_list), tuple(worker_list))
