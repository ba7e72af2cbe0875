"""Whole locker flows in one process, as the people of DESIGN.md section 1 live them: a resident
deposits documents (server command), a grid worker collects them (online command or offline
credential), deposits the result (command or offline credential), the resident collects it.

Each opening is exactly one relay pulse, each step one event in the outbox (what the server hears).
"""

from __future__ import annotations

from hardware_sim.locker_site import LockerSite
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

PULSE_S = 0.2  # [locks] pulse_ms


def test_resident_deposit_by_command(site: LockerSite) -> None:
    seen = mark(site)

    outcome = site.command("locker.deposit", {"case": "C-100", "size": "M"})

    assert outcome.status == "succeeded"
    assert outcome.result == {"compartment": 2, "size": "M"}  # the smallest free M
    assert state(site, 2) == "reserved"  # journaled, the loop has not pulsed yet
    site.settle(0.4)
    assert site.gpio.door_is_open(2), "the door pops open for the resident"
    assert state(site, 2) == "open_for_deposit"
    assert pulse_counts(site) == [0, 1, 0, 0]
    (start, end) = site.gpio.pulses(2)[0]
    assert abs((end - start) - PULSE_S) < 1e-6

    site.gpio.close_door(2)
    site.settle(0.2)

    assert snapshot(site)[1] == (2, "holding", "C-100", "documents")
    assert pulse_counts(site) == [0, 1, 0, 0]
    # The server is told, once each: the command's result, the unlock, the deposit.
    assert data_of(site, seen, "cmd.result") == [
        {
            "id": outcome.id,
            "type": "locker.deposit",
            "status": "succeeded",
            "result": {"compartment": 2, "size": "M"},
        }
    ]
    assert data_of(site, seen, "compartment.unlocked") == [
        {"compartment": 2, "intent": 1, "flow": "deposit", "attempt": 1}
    ]
    assert data_of(site, seen, "compartment.deposited") == [
        {"compartment": 2, "case": "C-100", "content": "documents", "flow": "deposit"}
    ]
    moves = [(d["from"], d["to"]) for d in data_of(site, seen, "compartment.state")]
    assert moves == [
        ("free", "reserved"),
        ("reserved", "open_for_deposit"),
        ("open_for_deposit", "holding"),
    ]
    doors = [d["state"] for d in data_of(site, seen, "compartment.door")]
    assert doors == ["open", "closed"]
    assert not any("problem" in d for d in data_of(site, seen, "compartment.door"))


def test_a_deposit_without_a_free_compartment_fails_and_opens_nothing(site: LockerSite) -> None:
    deposit(site, "C-L", size="L")
    before = snapshot(site)
    seen = mark(site)

    outcome = site.command("locker.deposit", {"case": "C-X", "size": "L"})
    site.settle(0.4)

    assert outcome.status == "failed"
    assert outcome.result == {"error": "NoFreeCompartmentError"}
    assert snapshot(site) == before
    assert pulse_counts(site) == [0, 0, 0, 1]
    assert [t for t, _ in events_after(site, seen)] == ["cmd.result"]


def test_worker_collects_by_online_command(site: LockerSite) -> None:
    number = deposit(site, "C-200")
    seen = mark(site)

    outcome = site.command("locker.open", {"compartment": number, "case": "C-200"})
    assert outcome.status == "succeeded"
    assert state(site, number) == "open_for_pickup"
    take_out(site, number)

    assert snapshot(site)[number - 1] == (number, "free", None, None)
    assert pulse_counts(site) == [2, 0, 0, 0]  # the deposit's and this one
    assert data_of(site, seen, "compartment.emptied") == [
        {"compartment": number, "case": "C-200", "content": "documents", "flow": "worker-open"}
    ]
    assert len(data_of(site, seen, "compartment.unlocked")) == 1


def test_an_open_command_for_another_case_fails_and_opens_nothing(site: LockerSite) -> None:
    number = deposit(site, "C-201")
    before = snapshot(site)

    outcome = site.command("locker.open", {"compartment": number, "case": "C-999"})
    site.settle(0.4)

    assert outcome.status == "failed"
    assert snapshot(site) == before
    assert pulse_counts(site) == [1, 0, 0, 0]


def test_worker_collects_offline_with_a_worker_open_credential(site: LockerSite) -> None:
    number = deposit(site, "C-300")
    credential = site.credential("worker-open", "C-300", number)
    seen = mark(site)

    outcome = site.locker.scan(credential)

    assert outcome.accepted
    assert outcome.compartment == number
    take_out(site, number)
    assert snapshot(site)[number - 1] == (number, "free", None, None)
    assert pulse_counts(site) == [2, 0, 0, 0]
    accepted = data_of(site, seen, "credential.accepted")
    assert len(accepted) == 1
    assert accepted[0]["kind"] == "worker-open"
    assert accepted[0]["case"] == "C-300"
    assert len(data_of(site, seen, "compartment.emptied")) == 1
    assert data_of(site, seen, "credential.refused") == []


def test_result_deposit_by_command(site: LockerSite) -> None:
    seen = mark(site)
    number = deposit(site, "C-400", content="result")
    assert snapshot(site)[number - 1] == (number, "holding", "C-400", "result")
    assert data_of(site, seen, "compartment.deposited") == [
        {"compartment": number, "case": "C-400", "content": "result", "flow": "result"}
    ]
    assert pulse_counts(site) == [1, 0, 0, 0]


def test_result_deposit_by_offline_credential_naming_a_compartment(site: LockerSite) -> None:
    seen = mark(site)

    outcome = site.locker.scan(site.credential("deposit", "C-500", 3))

    assert outcome.accepted
    assert outcome.compartment == 3
    take_out(site, 3)
    assert snapshot(site)[2] == (3, "holding", "C-500", "result")
    assert pulse_counts(site) == [0, 0, 1, 0]
    assert data_of(site, seen, "compartment.deposited") == [
        {"compartment": 3, "case": "C-500", "content": "result", "flow": "result"}
    ]


def test_result_deposit_by_offline_credential_without_a_compartment(site: LockerSite) -> None:
    deposit(site, "C-other")  # takes compartment 1, the only S
    seen = mark(site)

    outcome = site.locker.scan(site.credential("deposit", "C-600"))

    assert outcome.accepted
    assert outcome.compartment == 2  # the smallest free one
    take_out(site, 2)
    assert snapshot(site)[1] == (2, "holding", "C-600", "result")
    assert pulse_counts(site) == [1, 1, 0, 0]
    assert len(data_of(site, seen, "compartment.deposited")) == 1


def test_resident_collects_the_result_with_a_collect_credential(site: LockerSite) -> None:
    number = deposit(site, "C-700", content="result")
    seen = mark(site)

    outcome = site.locker.scan(site.credential("collect", "C-700", number))

    assert outcome.accepted
    assert state(site, number) == "open_for_pickup"
    take_out(site, number)
    assert snapshot(site)[number - 1] == (number, "free", None, None)
    assert pulse_counts(site) == [2, 0, 0, 0]
    assert data_of(site, seen, "compartment.emptied") == [
        {"compartment": number, "case": "C-700", "content": "result", "flow": "collect"}
    ]


def test_a_whole_case_from_deposit_to_collection(site: LockerSite) -> None:
    # The resident deposits; the worker collects offline; deposits the result offline into
    # whichever compartment is free; the resident collects it.
    documents = deposit(site, "C-800", size="M")
    assert site.locker.scan(site.credential("worker-open", "C-800", documents)).accepted
    take_out(site, documents)
    result = site.locker.scan(site.credential("deposit", "C-800"))
    assert result.accepted
    assert result.compartment is not None
    take_out(site, result.compartment)
    assert site.locker.scan(site.credential("collect", "C-800", result.compartment)).accepted
    take_out(site, result.compartment)

    assert [row[1] for row in snapshot(site)] == ["free"] * 4
    assert sum(pulse_counts(site)) == 4  # four openings, four pulses
    kinds = [t for t, _ in events_after(site, 0)]
    assert kinds.count("compartment.unlocked") == 4
    assert kinds.count("compartment.deposited") == 2
    assert kinds.count("compartment.emptied") == 2
    assert kinds.count("credential.accepted") == 3
    assert "credential.refused" not in kinds
    assert "compartment.alarm" not in kinds


def test_disable_and_enable_keep_what_the_compartment_holds(site: LockerSite) -> None:
    number = deposit(site, "C-900")
    assert site.command("locker.disable", {"compartment": number}).status == "succeeded"
    assert state(site, number) == "disabled"
    # A disabled compartment is never chosen for a deposit.
    outcome = site.command("locker.deposit", {"case": "C-901", "size": "S"})
    assert outcome.result == {"compartment": 2, "size": "M"}

    assert site.command("locker.enable", {"compartment": number}).status == "succeeded"
    assert snapshot(site)[number - 1] == (number, "holding", "C-900", "documents")


def test_status_command_reports_every_compartment_and_door(site: LockerSite) -> None:
    deposit(site, "C-950")
    outcome = site.command("locker.status", {})
    assert outcome.status == "succeeded"
    assert outcome.result == {
        "compartments": [
            {"number": 1, "state": "holding", "door": "closed"},
            {"number": 2, "state": "free", "door": "closed"},
            {"number": 3, "state": "free", "door": "closed"},
            {"number": 4, "state": "free", "door": "closed"},
        ]
    }
    # No case ids on the status (the server has them).
    assert "C-950" not in str(outcome.result)
