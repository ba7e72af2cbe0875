"""A scripted stream of residents for the demo and ``linli sim serve --auto``.

Each visit: a sample ID card is placed on the emulated reader and lifted again, then a code is shown
to the emulated scanner. Every fourth visit the scanner first sends line noise, to show that the
drivers shrug it off. Full YAML scenarios come with the virtual-site issue.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from hardware_sim.idcards import sample_card
from hardware_sim.world import World

log = logging.getLogger(__name__)


def visit(world: World, i: int, stop: threading.Event, dwell_s: float = 1.2) -> None:
    """One resident: card on the reader for ``dwell_s``, lifted, then a code at the scanner."""
    world.reader.insert(sample_card(i))
    if stop.wait(dwell_s):
        return
    world.reader.lift()
    if i % 4 == 3:
        world.scanner.send_garbage(24, seed=i)
    world.scanner.show(f"LINLI-DEMO-{i:04d}")


def run_visits(
    world: World,
    stop: threading.Event,
    *,
    interval_s: float = 3.0,
    visits: int | None = None,
    on_visit: Callable[[int], None] | None = None,
) -> int:
    """Run a visit every ``interval_s`` until ``stop`` or ``visits`` ran; return how many ran."""
    i = 0
    while not stop.is_set() and (visits is None or i < visits):
        visit(world, i, stop)
        if on_visit is not None:
            on_visit(i)
        i += 1
        if stop.wait(interval_s):
            break
    return i
