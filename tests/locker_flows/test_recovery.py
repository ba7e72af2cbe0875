"""Restarts in one process (LockerSite.restart: a new Locker, lock controller and store object on
the same store file, the same simulated wiring and clock), at the steps docs/locker.md "Crash
safety" names: a request journaled but not pulsed is carried out, or dropped when too old; a pulse
that happened but was not recorded is recorded once, never repeated."""

from __future__ import annotations

from hardware_sim.locker_site import LockerSite
from tests.locker_flows.conftest import MakeSite
from tests.locker_flows.helpers import (
    advance,
    data_of,
    deposit,
    events_after,
    mark,
    pulse_counts,
    snapshot,
    state,
    take_out,
)

TTL_S = 60.0


def test_a_restart_with_nothing_under_way_changes_nothing(site: LockerSite) -> None:
    number = deposit(site, "C-1")
    before, seen = snapshot(site), mark(site)

    site.restart()
    site.settle(0.5)

    assert snapshot(site) == before
    assert pulse_counts(site)[number - 1] == 1
    # The doors are as the last run left them: nothing to report again.
    assert events_after(site, seen) == []


def test_a_pickup_journaled_but_not_pulsed_is_carried_out_after_a_restart(
    make_site: MakeSite,
) -> None:
    site = make_site(intent_ttl_s=TTL_S)
    number = deposit(site, "C-1")
    assert site.locker.scan(site.credential("worker-open", "C-1", number)).accepted
    assert pulse_counts(site)[number - 1] == 1  # the loop did not run: nothing pulsed
    seen = mark(site)

    advance(site, TTL_S - 5)  # the daemon came back in time
    site.restart()
    take_out(site, number)

    assert pulse_counts(site)[number - 1] == 2
    (unlocked,) = data_of(site, seen, "compartment.unlocked")
    assert "recovered" not in unlocked
    assert unlocked["attempt"] == 1
    assert snapshot(site)[number - 1] == (number, "free", None, None)
    assert len(data_of(site, seen, "compartment.emptied")) == 1


def test_a_deposit_command_journaled_but_not_pulsed_is_carried_out_after_a_restart(
    make_site: MakeSite,
) -> None:
    site = make_site(intent_ttl_s=TTL_S)
    outcome = site.command("locker.deposit", {"case": "C-2", "size": "L"})
    assert outcome.status == "succeeded"
    seen = mark(site)

    site.restart()
    take_out(site, 4)

    assert pulse_counts(site) == [0, 0, 0, 1]
    assert snapshot(site)[3] == (4, "holding", "C-2", "documents")
    assert len(data_of(site, seen, "compartment.deposited")) == 1
    # The command is not run again: its record survived.
    assert data_of(site, seen, "cmd.result") == []


def test_a_pickup_too_old_to_carry_out_is_dropped_and_its_credential_stays_used(
    make_site: MakeSite,
) -> None:
    site = make_site(intent_ttl_s=TTL_S)
    number = deposit(site, "C-3", content="result")
    credential = site.credential("collect", "C-3", number)
    assert site.locker.scan(credential).accepted
    seen = mark(site)

    advance(site, TTL_S + 1)  # the resident has long left
    site.restart()
    site.settle(0.5)

    assert pulse_counts(site)[number - 1] == 1  # only the deposit's
    assert not site.gpio.door_is_open(number)
    assert snapshot(site)[number - 1] == (number, "holding", "C-3", "result")
    (dropped,) = data_of(site, seen, "compartment.open_dropped")
    assert dropped["compartment"] == number
    assert dropped["flow"] == "collect"
    assert dropped["case"] == "C-3"
    moves = [(d["from"], d["to"]) for d in data_of(site, seen, "compartment.state")]
    assert moves == [("open_for_pickup", "holding")]

    # The QR the resident still has was used: it opens nothing now (the server issues a new one).
    assert site.locker.scan(credential).reason == "already-used"
    site.settle(0.5)
    assert pulse_counts(site)[number - 1] == 1
    fresh = site.credential("collect", "C-3", number)
    assert site.locker.scan(fresh).accepted
    take_out(site, number)
    assert snapshot(site)[number - 1] == (number, "free", None, None)


def test_a_deposit_too_old_to_carry_out_is_dropped_and_the_compartment_freed(
    make_site: MakeSite,
) -> None:
    site = make_site(intent_ttl_s=TTL_S)
    site.command("locker.deposit", {"case": "C-4"})
    seen = mark(site)

    advance(site, TTL_S + 1)
    site.restart()
    site.settle(0.5)

    assert pulse_counts(site) == [0, 0, 0, 0]
    assert snapshot(site)[0] == (1, "free", None, None)
    (dropped,) = data_of(site, seen, "compartment.open_dropped")
    assert (dropped["compartment"], dropped["flow"], dropped["case"]) == (1, "deposit", "C-4")
    # Restarting again drops nothing more.
    again = mark(site)
    site.restart()
    site.settle(0.2)
    assert events_after(site, again) == []


def test_a_pulse_that_happened_but_was_not_recorded_is_recorded_once(
    make_site: MakeSite,
) -> None:
    site = make_site(intent_ttl_s=TTL_S)
    number = deposit(site, "C-5")
    assert site.locker.scan(site.credential("worker-open", "C-5", number)).accepted
    # The loop energised the relay and the process died before writing it down: the spring
    # popped the door open.
    site.locks.pulse(number)
    assert site.gpio.door_is_open(number)
    seen = mark(site)

    site.restart()
    site.settle(0.5)

    assert pulse_counts(site)[number - 1] == 2  # the deposit's and the one before the crash
    (unlocked,) = data_of(site, seen, "compartment.unlocked")
    assert unlocked == {
        "compartment": number,
        "intent": 2,
        "flow": "worker-open",
        "attempt": 1,
        "recovered": True,
    }
    doors = data_of(site, seen, "compartment.door")
    assert doors == [{"compartment": number, "state": "open"}]  # expected: no "problem"
    assert state(site, number) == "open_for_pickup"

    site.gpio.close_door(number)
    site.settle(0.2)
    assert snapshot(site)[number - 1] == (number, "free", None, None)
    assert len(data_of(site, seen, "compartment.emptied")) == 1
    assert pulse_counts(site)[number - 1] == 2


def test_an_unrecorded_deposit_pulse_is_recorded_once(make_site: MakeSite) -> None:
    site = make_site(intent_ttl_s=TTL_S)
    site.command("locker.deposit", {"case": "C-6"})
    site.locks.pulse(1)
    seen = mark(site)

    site.restart()
    site.settle(0.5)

    assert pulse_counts(site) == [1, 0, 0, 0]
    assert [d.get("recovered") for d in data_of(site, seen, "compartment.unlocked")] == [True]
    assert state(site, 1) == "open_for_deposit"
    site.gpio.close_door(1)
    site.settle(0.2)
    assert snapshot(site)[0] == (1, "holding", "C-6", "documents")


def test_a_recorded_pulse_with_the_door_open_at_restart_completes(make_site: MakeSite) -> None:
    # Killed after the pulse was recorded, before the open door was: long enough ago that a
    # closed door would be a fault, but the door is open, so the flow simply goes on.
    site = make_site(intent_ttl_s=TTL_S)
    number = deposit(site, "C-7")
    assert site.locker.scan(site.credential("worker-open", "C-7", number)).accepted
    site.locker.tick()  # the pulse and its record; the door pops open after
    assert pulse_counts(site)[number - 1] == 2
    seen = mark(site)

    advance(site, TTL_S + 30)
    site.restart()
    site.settle(0.5)

    assert data_of(site, seen, "compartment.fault") == []
    assert state(site, number) == "open_for_pickup"
    site.gpio.close_door(number)
    site.settle(0.2)
    assert snapshot(site)[number - 1] == (number, "free", None, None)
    assert pulse_counts(site)[number - 1] == 2
    assert data_of(site, seen, "compartment.unlocked") == []


def test_a_recorded_pulse_long_ago_with_the_door_shut_is_a_fault(make_site: MakeSite) -> None:
    site = make_site(intent_ttl_s=TTL_S, open_confirm_s=5.0)
    number = deposit(site, "C-8")
    site.gpio.jam(number)  # the pulse does not open it, and then the power goes
    assert site.locker.scan(site.credential("worker-open", "C-8", number)).accepted
    site.settle(0.5)
    assert pulse_counts(site)[number - 1] == 2
    seen = mark(site)

    advance(site, TTL_S + 30)
    site.restart()
    site.settle(1.0)

    assert state(site, number) == "fault"
    assert data_of(site, seen, "compartment.fault") == [
        {"compartment": number, "reason": "outcome-unknown-after-restart", "intent": 2}
    ]
    assert pulse_counts(site)[number - 1] == 2
    site.gpio.jam(number, False)
    assert site.command("locker.clear_fault", {"compartment": number}).result == {
        "compartment": number,
        "state": "holding",
    }
