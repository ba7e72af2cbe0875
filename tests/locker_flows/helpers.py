"""Acting on a simulated locker as its users would, and reading what it did (LockerSite)."""

from __future__ import annotations

import json
from typing import Any

from device.clock import FakeClock
from hardware_sim.locker_site import LockerSite

Row = tuple[int, str, str | None, str | None]


def advance(site: LockerSite, seconds: float) -> None:
    """Let time pass with nothing running (the locker's loop is not ticked)."""
    assert isinstance(site.clock, FakeClock)
    site.clock.advance(seconds)


def snapshot(site: LockerSite) -> list[Row]:
    """Every compartment as (number, state, case, content): what a user would see changed."""
    return [(c.number, str(c.state), c.case_id, c.content) for c in site.locker.compartments.all()]


def state(site: LockerSite, number: int) -> str:
    return str(site.locker.compartments.get(number).state)


def pulse_counts(site: LockerSite) -> list[int]:
    """How many times each lock's relay was energised, lock 1 first."""
    return [len(site.gpio.pulses(n)) for n in range(1, site.locks.lock_count + 1)]


def mark(site: LockerSite) -> int:
    """The outbox position now: pass it to :func:`events_after` to see what happened since."""
    return site.store.outbox.last_seq


def events_after(
    site: LockerSite, after: int, type_: str | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """``(type, data)`` of the events queued after ``after`` (optionally of one type)."""
    return [
        (e.type, dict(e.data))
        for e in site.store.outbox.pending(100_000, after=after)
        if type_ is None or e.type == type_
    ]


def data_of(site: LockerSite, after: int, type_: str) -> list[dict[str, Any]]:
    return [data for _type, data in events_after(site, after, type_)]


def outbox_text(site: LockerSite, after: int = 0) -> str:
    """All queued events after ``after`` as JSON text (to look for what must never be there)."""
    return json.dumps(events_after(site, after))


def deposit(site: LockerSite, case: str, *, size: str = "S", content: str = "documents") -> int:
    """A ``locker.deposit`` command carried out to the end: the door pops open, something is put
    in, the door is closed. Returns the compartment, now holding ``case``."""
    outcome = site.command("locker.deposit", {"case": case, "size": size, "content": content})
    assert outcome.status == "succeeded", outcome
    assert outcome.result is not None
    number = int(outcome.result["compartment"])
    site.settle(0.4)
    assert site.gpio.door_is_open(number), "the deposit pulse did not pop the door open"
    site.gpio.close_door(number)
    site.settle(0.2)
    assert state(site, number) == "holding"
    return number


def take_out(site: LockerSite, number: int) -> None:
    """The door of ``number`` popped open by a pulse: someone takes what is inside and closes it."""
    site.settle(0.4)
    assert site.gpio.door_is_open(number), f"compartment {number} did not open"
    site.gpio.close_door(number)
    site.settle(0.2)
