"""Small builders for hand-made dispatch cases: one grid, a line, 36 km/h (100 s per km)."""

from __future__ import annotations

from collections.abc import Callable

from sync_server.dispatch import Pickup, Plan, Weights, Worker

Solver = Callable[..., Plan]

NOW = 1000.0
# No detour, no lateness and no workload unless a test turns one on: costs are plain travel.
PLAIN = Weights(
    lateness_per_s=0.0,
    workload_s_per_task=0.0,
    escalate_s=10_000.0,
    soft_due_margin_s=0.0,
    detour=1.0,
)


def pickup(id: str, x: float, *, y: float = 0.0, deadline: float = 1e6, grid: str = "g") -> Pickup:
    return Pickup(id, grid, x, y, deadline)


def worker(
    id: str,
    x: float,
    *,
    y: float = 0.0,
    grids: tuple[str, ...] = ("g",),
    capacity: int = 3,
    load: int = 0,
    speed: float = 36.0,
    shift: tuple[float, float] = (0.0, 1e6),
) -> Worker:
    return Worker(id, frozenset(grids), x, y, speed, capacity, load, shift[0], shift[1])


def ds(seconds: float) -> int:
    """Seconds as the engine's integer cost (deciseconds)."""
    return round(seconds * 10)
