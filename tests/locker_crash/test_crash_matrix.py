"""Crash safety of the locker (docs/locker.md, "Crash safety"), tested the hard way: the real
``linli locker run`` is SIGKILLed at every step of every flow, then restarted.

For each flow x each crash point the flow passes, after the restart: no compartment is left in an
impossible state (nothing in progress, each ends as the flow should), the credential or command
cannot be used a second time, and every physical action is reported exactly once (as many
``compartment.unlocked`` events as the lock boards gave pulses; one deposit or pickup; a
``compartment.state`` chain without a gap).
"""

from __future__ import annotations

from collections import Counter

import pytest

from device.credential import SigningKey
from tests.locker_crash.conftest import MakeRig
from tests.locker_crash.flows import CASE, FLOWS, Flow, Started
from tests.locker_crash.rig import LOCKS, Event, LockerRig, ServerSide

MATRIX = [
    pytest.param(flow, point, id=f"{flow.name}.{point}") for flow in FLOWS for point in flow.points
]

EXPECTED_EVENTS = frozenset(
    {
        "compartment.door",
        "compartment.state",
        "compartment.unlocked",
        "compartment.deposited",
        "compartment.emptied",
        "credential.accepted",
        "credential.refused",
        "cmd.result",
        "cmd.refused",
    }
)
"""All a flow and its replay may report: no fault, no dropped request, no failed pulse, no alarm
(the restart is quick, so nothing is too old to carry out)."""


def crash_and_restart(
    rig: LockerRig, server: ServerSide | None, flow: Flow, point: str, key: SigningKey
) -> Started:
    """Run ``flow`` with the locker set to die at ``point``; prove it died by SIGKILL; restart it
    and let the flow end as a person would (the door springs open on the pulse; shut it once the
    locker has seen it open)."""
    number = flow.compartment
    rig.start(crash_at=point)
    if server is not None:
        server.wait_online(rig)
    started = flow.trigger(rig, key, server)
    if point == "door-closed":
        rig.wait_request(number, "opened")
        rig.bus.close_door(number)
    rig.wait_killed()
    rig.start()
    if server is not None:
        server.wait_online(rig)
    rig.finish(number)
    return started


def assert_state_chains(events: list[Event], states: dict[int, str]) -> None:
    """Each compartment's ``compartment.state`` events link up from ``free`` (its state when
    created) to the state in the table."""
    last = dict.fromkeys(states, "free")
    for event in events:
        number = event.data["compartment"]
        assert event.data["from"] == last[number], f"broken chain at seq {event.seq}: {event}"
        last[number] = event.data["to"]
    assert last == states


@pytest.mark.parametrize(("flow", "point"), MATRIX)
def test_killed_at_any_step_the_flow_ends_once_and_cannot_be_replayed(
    flow: Flow, point: str, make_rig: MakeRig, server_key: SigningKey
) -> None:
    """Killed at ``point`` of ``flow`` and restarted, the locker completes the flow exactly once:
    the compartment ends holding (deposit) or free (pickup) with nothing in progress, the lock was
    pulsed once and that pulse reported once, one deposit/pickup is reported, the state events
    form an unbroken chain, and the same credential or command presented again is refused and
    opens nothing."""
    rig, server = make_rig(flow)
    number = flow.compartment
    before = rig.last_seq()  # events of the set-up run, if any, are not this flow's

    started = crash_and_restart(rig, server, flow, point, server_key)
    pulses = rig.pulses(number)
    started.replay()
    # Read while the locker runs (read-only): the fixture kills it at teardown.

    # No impossible state: nothing in progress, every compartment where the flow leaves it.
    assert rig.requests_in_progress() == []
    expected = dict.fromkeys(range(1, LOCKS + 1), "free")
    if flow.deposits:
        expected[number] = "holding"
    assert rig.states() == expected
    inside = rig.compartment(number)
    if flow.deposits:
        assert (inside["case"], inside["content"]) == (CASE, flow.content)
    else:
        assert (inside["case"], inside["content"]) == (None, None)
    assert inside["door"] == "closed"

    # Every physical action reported exactly once.
    events = rig.events(after=before)
    unlocked = [e for e in events if e.type == "compartment.unlocked"]
    assert [e.data["compartment"] for e in unlocked] == [number]
    assert rig.pulses(number) == pulses == 1, "the replay must pulse nothing"
    assert all(rig.pulses(n) == 0 for n in range(1, LOCKS + 1) if n != number)
    # Killed between the pulse and its record: the door the spring opened stands for the pulse.
    assert unlocked[0].data.get("recovered", False) is (point == "after-pulse")
    kinds = Counter(e.type for e in events)
    assert kinds["compartment.deposited"] == (1 if flow.deposits else 0)
    assert kinds["compartment.emptied"] == (0 if flow.deposits else 1)
    assert set(kinds) <= EXPECTED_EVENTS, kinds
    doors = [e.data for e in events if e.type == "compartment.door"]
    assert not [d for d in doors if d.get("problem")], "a door opened without a pulse"
    # A fresh locker reports each door once when it first reads it (closed).
    seen = [d["state"] for d in doors if d["compartment"] == number]
    assert seen == (["closed"] if flow.setup is None else []) + ["open", "closed"]
    assert_state_chains(rig.events("compartment.state"), rig.states())

    # Used once, refused after.
    if flow.by_command:
        results = [e.data for e in events if e.type == "cmd.result"]
        assert [(r["id"], r["status"]) for r in results] == [(started.authority, "succeeded")]
        refused = [e.data for e in events if e.type == "cmd.refused"]
        assert refused and {(r["id"], r["reason"]) for r in refused} == {
            (started.authority, "replayed")
        }
    else:
        accepted = [e.data["cti"] for e in events if e.type == "credential.accepted"]
        assert accepted == [started.authority]
        refused = [e.data for e in events if e.type == "credential.refused"]
        assert [(r["cti"], r["reason"]) for r in refused] == [(started.authority, "already-used")]
