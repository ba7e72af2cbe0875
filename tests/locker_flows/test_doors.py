"""What the doors and locks do to the locker: a door left open raises one alarm and reminders until
it is closed; a jammed lock is pulsed, retried once, then the compartment is in fault until a
technician clears it; a bouncing reed switch is one door change; a cut sensor wire is reported
but never stops a lock from being pulsed."""

from __future__ import annotations

import pytest

from hardware_sim.locker_site import LockerSite
from tests.locker_flows.conftest import MakeSite
from tests.locker_flows.helpers import (
    data_of,
    deposit,
    events_after,
    mark,
    pulse_counts,
    snapshot,
    state,
    take_out,
)

ALARM_S, REMIND_S, CONFIRM_S = 10.0, 3.0, 1.0


# -- door left open ------------------------------------------------------------------------------


def test_a_door_left_open_raises_one_alarm_reminders_and_a_clear(make_site: MakeSite) -> None:
    site = make_site(door_alarm_s=ALARM_S, reminder_interval_s=REMIND_S)
    seen = mark(site)
    site.command("locker.deposit", {"case": "C-1"})
    site.settle(0.4)
    assert site.gpio.door_is_open(1)

    site.settle(ALARM_S - 1, step=0.05)
    assert data_of(site, seen, "compartment.alarm") == []

    site.settle(1.5, step=0.05)
    (alarm,) = data_of(site, seen, "compartment.alarm")
    assert alarm["compartment"] == 1
    assert alarm["alarm"] == "door-open"
    assert ALARM_S <= alarm["open_s"] < ALARM_S + 0.2
    assert site.indicator.reminders == []

    site.settle(3 * REMIND_S + 0.5, step=0.05)
    assert site.indicator.reminders == [1, 1, 1]
    assert len(data_of(site, seen, "compartment.alarm")) == 1  # the server is told once

    site.gpio.close_door(1)
    site.settle(0.2)
    (cleared,) = data_of(site, seen, "compartment.alarm_cleared")
    assert cleared["compartment"] == 1
    assert cleared["open_s"] > ALARM_S + 3 * REMIND_S
    assert state(site, 1) == "holding"  # the deposit completed all the same

    site.settle(3 * REMIND_S, step=0.05)
    assert site.indicator.reminders == [1, 1, 1]  # no reminders once closed
    assert len(data_of(site, seen, "compartment.alarm")) == 1


def test_a_door_closed_in_time_raises_no_alarm(make_site: MakeSite) -> None:
    site = make_site(door_alarm_s=ALARM_S)
    seen = mark(site)
    site.command("locker.deposit", {"case": "C-1"})
    site.settle(ALARM_S - 1, step=0.05)
    site.gpio.close_door(1)
    site.settle(ALARM_S, step=0.05)
    kinds = [t for t, _ in events_after(site, seen)]
    assert "compartment.alarm" not in kinds
    assert "compartment.alarm_cleared" not in kinds
    assert site.indicator.reminders == []


def test_a_second_opening_of_the_same_door_can_alarm_again(make_site: MakeSite) -> None:
    site = make_site(door_alarm_s=ALARM_S)
    seen = mark(site)
    site.command("locker.deposit", {"case": "C-1", "content": "result"})
    site.settle(ALARM_S + 1, step=0.05)  # the worker leaves it open a while
    site.gpio.close_door(1)
    site.settle(0.2)
    assert site.locker.scan(site.credential("collect", "C-1", 1)).accepted
    site.settle(ALARM_S + 1, step=0.05)  # so does the resident
    site.gpio.close_door(1)
    site.settle(0.2)

    assert len(data_of(site, seen, "compartment.alarm")) == 2
    assert len(data_of(site, seen, "compartment.alarm_cleared")) == 2
    assert state(site, 1) == "free"


# -- a jammed lock -------------------------------------------------------------------------------


def test_a_jammed_lock_on_a_deposit_is_retried_once_then_in_fault(make_site: MakeSite) -> None:
    site = make_site(open_confirm_s=CONFIRM_S)
    site.gpio.jam(1)
    seen = mark(site)

    site.command("locker.deposit", {"case": "C-1"})
    site.settle(0.4)
    assert pulse_counts(site) == [1, 0, 0, 0]
    assert not site.gpio.door_is_open(1)
    assert state(site, 1) == "open_for_deposit"

    site.settle(CONFIRM_S)
    assert pulse_counts(site) == [2, 0, 0, 0]  # the retry
    site.settle(CONFIRM_S + 0.5)
    assert state(site, 1) == "fault"
    assert data_of(site, seen, "compartment.fault") == [
        {"compartment": 1, "reason": "lock-did-not-open", "intent": 1}
    ]
    assert [d["attempt"] for d in data_of(site, seen, "compartment.unlocked")] == [1, 2]

    site.settle(5 * CONFIRM_S, step=0.05)
    assert pulse_counts(site) == [2, 0, 0, 0]  # given up: no third pulse, ever
    assert len(data_of(site, seen, "compartment.fault")) == 1
    # A compartment in fault is not offered for the next deposit.
    outcome = site.command("locker.deposit", {"case": "C-2"})
    assert outcome.result == {"compartment": 2, "size": "M"}

    # The technician frees the lock and clears the fault: nothing was deposited, so it is free.
    site.gpio.jam(1, False)
    cleared = site.command("locker.clear_fault", {"compartment": 1})
    assert cleared.status == "succeeded"
    assert cleared.result == {"compartment": 1, "state": "free"}
    assert snapshot(site)[0] == (1, "free", None, None)


def test_a_jammed_lock_on_a_pickup_goes_back_to_holding_when_cleared(
    make_site: MakeSite,
) -> None:
    site = make_site(open_confirm_s=CONFIRM_S)
    number = deposit(site, "C-1")
    site.gpio.jam(number)
    credential = site.credential("worker-open", "C-1", number)
    seen = mark(site)

    assert site.locker.scan(credential).accepted
    site.settle(2 * CONFIRM_S + 1)

    assert state(site, number) == "fault"
    assert pulse_counts(site)[number - 1] == 1 + 2
    assert len(data_of(site, seen, "compartment.fault")) == 1
    # While in fault, a credential for it opens nothing.
    fresh = site.credential("worker-open", "C-1", number)
    assert site.locker.scan(fresh).reason == "compartment-unavailable"

    site.gpio.jam(number, False)
    cleared = site.command("locker.clear_fault", {"compartment": number})
    assert cleared.result == {"compartment": number, "state": "holding"}
    assert snapshot(site)[number - 1] == (number, "holding", "C-1", "documents")

    # The documents are still there for the worker: the used credential stays used, a new one
    # opens.
    assert site.locker.scan(credential).reason == "already-used"
    assert site.locker.scan(fresh).accepted
    take_out(site, number)
    assert snapshot(site)[number - 1] == (number, "free", None, None)


def test_clear_fault_on_a_compartment_not_in_fault_fails(site: LockerSite) -> None:
    number = deposit(site, "C-1")
    before = snapshot(site)
    outcome = site.command("locker.clear_fault", {"compartment": number})
    assert outcome.status == "failed"
    assert snapshot(site) == before


def test_a_lock_that_opens_on_the_retry_is_not_a_fault(make_site: MakeSite) -> None:
    site = make_site(open_confirm_s=CONFIRM_S)
    site.gpio.jam(1)
    seen = mark(site)
    site.command("locker.deposit", {"case": "C-1"})
    site.settle(0.4)
    site.gpio.jam(1, False)  # it frees itself: the retry opens the door
    site.settle(CONFIRM_S + 0.3)
    assert site.gpio.door_is_open(1)
    assert state(site, 1) == "open_for_deposit"
    site.gpio.close_door(1)
    site.settle(0.2)
    assert snapshot(site)[0] == (1, "holding", "C-1", "documents")
    assert pulse_counts(site) == [2, 0, 0, 0]
    assert data_of(site, seen, "compartment.fault") == []


# -- bounce --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("toggles", "window_s"), [(3, 0.01), (8, 0.025)])
def test_a_bouncing_reed_switch_is_one_door_change(
    make_site: MakeSite, toggles: int, window_s: float
) -> None:
    site = make_site()
    site.gpio.set_bounce(toggles, window_s)
    seen = mark(site)

    number = deposit(site, "C-1", content="result")
    assert site.locker.scan(site.credential("collect", "C-1", number)).accepted
    take_out(site, number)

    doors = [d["state"] for d in data_of(site, seen, "compartment.door")]
    assert doors == ["open", "closed", "open", "closed"]
    kinds = [t for t, _ in events_after(site, seen)]
    assert kinds.count("compartment.deposited") == 1
    assert kinds.count("compartment.emptied") == 1
    assert kinds.count("compartment.unlocked") == 2
    assert pulse_counts(site) == [2, 0, 0, 0]
    assert not any("problem" in d for d in data_of(site, seen, "compartment.door"))


# -- broken sensor, forced door ------------------------------------------------------------------


def test_a_cut_sensor_wire_is_reported_and_never_blocks_opening(site: LockerSite) -> None:
    number = deposit(site, "C-1")
    seen = mark(site)

    site.gpio.break_sensor(number)
    site.settle(0.2)

    assert data_of(site, seen, "compartment.door") == [
        {"compartment": number, "state": "open", "problem": "opened-without-pulse"}
    ]
    assert state(site, number) == "holding"  # nothing moved: nobody asked for it

    outcome = site.locker.scan(site.credential("worker-open", "C-1", number))
    site.settle(0.4)

    assert outcome.accepted
    assert pulse_counts(site)[number - 1] == 2  # the deposit's and this one: the lock was pulsed
    assert len(data_of(site, seen, "compartment.unlocked")) == 1
    assert state(site, number) == "open_for_pickup"
    # The sensor still reads open, so the door event is not repeated.
    assert len(data_of(site, seen, "compartment.door")) == 1


def test_a_door_forced_open_is_reported(site: LockerSite) -> None:
    number = deposit(site, "C-1")
    seen = mark(site)
    site.gpio.force_open(number)
    site.settle(0.2)
    site.gpio.close_door(number)
    site.settle(0.2)
    assert data_of(site, seen, "compartment.door") == [
        {"compartment": number, "state": "open", "problem": "opened-without-pulse"},
        {"compartment": number, "state": "closed"},
    ]
    assert snapshot(site)[number - 1] == (number, "holding", "C-1", "documents")
    assert pulse_counts(site)[number - 1] == 1


# -- a lock that cannot be pulsed ----------------------------------------------------------------


def test_a_relay_that_cannot_be_driven_is_retried_then_in_fault(site: LockerSite) -> None:
    # Another part of the program released lock 1's relay pin (GPIO.cleanup): pulses fail.
    site.gpio.cleanup(site.locks_config.relay_pins[0])
    seen = mark(site)

    site.command("locker.deposit", {"case": "C-1"})
    site.settle(2.0)

    failed = data_of(site, seen, "compartment.unlock_failed")
    assert [(d["compartment"], d["attempt"]) for d in failed] == [(1, 1), (1, 2)]
    assert data_of(site, seen, "compartment.fault") == [
        {"compartment": 1, "reason": "lock-not-answering", "intent": 1}
    ]
    assert data_of(site, seen, "compartment.unlocked") == []
    assert pulse_counts(site) == [0, 0, 0, 0]
    assert state(site, 1) == "fault"
