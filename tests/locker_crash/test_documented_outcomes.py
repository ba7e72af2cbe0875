"""The crash outcomes docs/locker.md documents as exceptions ("Crash safety"), each shown once on
the worker's offline result deposit: what the restarted locker does when the world moved on while
it was down (the door was pushed shut, or the request grew too old to carry out).
"""

from __future__ import annotations

import time
from collections import Counter

from device.credential import SigningKey
from tests.locker_crash.conftest import MakeRig
from tests.locker_crash.flows import FLOWS, Flow
from tests.locker_crash.rig import LockerRig, wait_for
from tests.locker_crash.test_crash_matrix import assert_state_chains

DEPOSIT: Flow = next(f for f in FLOWS if f.name == "deposit-credential-named")
TTL_S = 5.0
"""The shortest ``[locker] intent_ttl_s`` allowed: how long the tests wait for "too old"."""


def wait_until_older_than_ttl(rig: LockerRig, column: str) -> None:
    """Sleep until the request's ``column`` time (``created_at``/``pulsed_at``) is past TTL_S."""
    [(since,)] = rig.query(f"SELECT {column} FROM locker_intents")
    time.sleep(max(0.0, float(since) + TTL_S + 0.2 - time.time()))


def door_popped_then_pushed_shut(rig: LockerRig, number: int) -> None:
    """While the locker is down the spring pops the door open, and someone pushes it shut."""
    wait_for(lambda: rig.bus.door_is_open(number), "the spring to pop the door open")
    rig.bus.close_door(number)


def test_pulse_unrecorded_and_door_shut_before_the_restart_is_pulsed_once_more(
    make_rig: MakeRig, server_key: SigningKey
) -> None:
    """Killed between the pulse and its record, with the door shut again before the restart
    reads it: nothing witnesses the pulse, so (as documented) the lock is pulsed once more and
    only that pulse is reported; the deposit still happens once and the credential stays used."""
    rig, _ = make_rig(DEPOSIT)
    number = DEPOSIT.compartment
    rig.start(crash_at="after-pulse")
    started = DEPOSIT.trigger(rig, server_key, None)
    rig.wait_killed()
    door_popped_then_pushed_shut(rig, number)
    rig.start()
    rig.finish(number)
    started.replay()

    assert rig.requests_in_progress() == []
    assert rig.compartment(number)["state"] == "holding"
    assert rig.pulses(number) == 2
    unlocked = [e.data for e in rig.events("compartment.unlocked")]
    assert [(u["compartment"], u["attempt"], u.get("recovered")) for u in unlocked] == [
        (number, 1, None)
    ]
    kinds = Counter(e.type for e in rig.events())
    assert (kinds["compartment.deposited"], kinds["compartment.fault"]) == (1, 0)
    refused = [e.data["reason"] for e in rig.events("credential.refused")]
    assert refused == ["already-used"]
    assert_state_chains(rig.events("compartment.state"), rig.states())


def test_request_too_old_at_the_restart_is_dropped_and_its_credential_stays_used(
    make_rig: MakeRig, server_key: SigningKey
) -> None:
    """Killed after the request was journaled, before the pulse, and restarted after
    ``intent_ttl_s``: the person has left, so the request is dropped (``compartment.open_dropped``,
    the compartment free again), nothing is pulsed, and the credential cannot be used again."""
    rig, _ = make_rig(DEPOSIT, intent_ttl_s=TTL_S)
    number = DEPOSIT.compartment
    rig.start(crash_at="before-pulse")
    started = DEPOSIT.trigger(rig, server_key, None)
    rig.wait_killed()
    wait_until_older_than_ttl(rig, "created_at")
    rig.start()
    started.replay()

    assert rig.requests_in_progress() == []
    assert rig.query("SELECT status FROM locker_intents") == [("abandoned",)]
    assert rig.compartment(number) == {
        "state": "free",
        "case": None,
        "content": None,
        "door": "closed",
    }
    assert rig.pulses(number) == 0
    kinds = Counter(e.type for e in rig.events())
    assert kinds["compartment.unlocked"] == 0
    assert kinds["compartment.open_dropped"] == 1
    assert kinds["compartment.deposited"] == 0
    refused = [e.data["reason"] for e in rig.events("credential.refused")]
    assert refused == ["already-used"]
    assert_state_chains(rig.events("compartment.state"), rig.states())


def test_pulse_recorded_door_shut_and_too_old_at_the_restart_is_a_fault(
    make_rig: MakeRig, server_key: SigningKey
) -> None:
    """Killed after the pulse was recorded; the door popped and was shut while the locker was
    down, and the restart comes after ``intent_ttl_s``: nobody can say whether the worker put the
    result in, so the compartment goes to ``fault`` (``outcome-unknown-after-restart``), the one
    pulse is reported once, and the credential cannot be used again."""
    rig, _ = make_rig(DEPOSIT, intent_ttl_s=TTL_S)
    number = DEPOSIT.compartment
    rig.start(crash_at="pulse-recorded")
    started = DEPOSIT.trigger(rig, server_key, None)
    rig.wait_killed()
    door_popped_then_pushed_shut(rig, number)
    wait_until_older_than_ttl(rig, "pulsed_at")
    rig.start()
    started.replay()

    assert rig.requests_in_progress() == []
    assert rig.query("SELECT status FROM locker_intents") == [("failed",)]
    [(state, fault, resume)] = rig.query(
        "SELECT state, fault, resume_state FROM compartments WHERE number = ?", (number,)
    )
    assert (state, fault, resume) == ("fault", "outcome-unknown-after-restart", "free")
    assert rig.pulses(number) == len(rig.events("compartment.unlocked")) == 1
    faults = [e.data for e in rig.events("compartment.fault")]
    assert [(f["compartment"], f["reason"]) for f in faults] == [
        (number, "outcome-unknown-after-restart")
    ]
    assert not rig.events("compartment.deposited")
    refused = [e.data["reason"] for e in rig.events("credential.refused")]
    assert refused == ["already-used"]
    assert_state_chains(rig.events("compartment.state"), rig.states())
