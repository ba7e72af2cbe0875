"""The runner's "nothing may open" check, which a refused-code step relies on.

The locker here is a stand-in with a lock bus whose doors the test sets: the check reads only
``bus.lock_count`` and ``bus.door_is_open``, and a whole virtual site (about 10 s) would add
nothing to what is tested; the library scenarios run the same check against the real emulated
lock boards."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any, cast

import pytest

from hardware_sim.vsite import runner
from hardware_sim.vsite.runner import ScenarioRun, StepFailed
from hardware_sim.vsite.scenario import parse_scenario

SCENARIO = parse_scenario("name: x\nsite: {kiosks: 0, lockers: 1}\nsteps: [{wait: 0}]")


def _locker(open_doors: set[int]) -> Any:
    bus = SimpleNamespace(lock_count=4, door_is_open=lambda n: n in open_doors)
    return SimpleNamespace(id="locker-1", bus=bus)


@pytest.fixture(autouse=True)
def _quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "REFUSED_S", 0.3)


def test_a_door_that_opens_for_a_refused_code_fails_the_step() -> None:
    run = ScenarioRun(cast(Any, None), SCENARIO)
    with pytest.raises(StepFailed, match="compartment 3 opened for the code: it should be refused"):
        run._stays_shut(_locker({3}), "the code")


def test_no_door_opening_is_what_a_refused_code_wants() -> None:
    """The check passes, after watching the doors as long as a person would wait."""
    run = ScenarioRun(cast(Any, None), SCENARIO)
    started = time.monotonic()
    assert run._stays_shut(_locker(set()), "the code") is None
    assert time.monotonic() - started >= 0.3
