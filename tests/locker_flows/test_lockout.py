"""The scanner lockout: invalid scans in a row lock the scanner out, even for a valid credential,
for a delay that doubles with each further lockout up to a ceiling; a valid scan resets it, and a
restart (pulling the plug on purpose) does not lift it."""

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
    take_out,
)

AFTER, BASE_S, MAX_S = 3, 10.0, 25.0
JUNK = "https://example.org/not-a-credential"


def locker(make_site: MakeSite) -> tuple[LockerSite, int]:
    """A locker with a result waiting in a compartment (returned) for its resident."""
    site = make_site(lockout_after=AFTER, lockout_base_s=BASE_S, lockout_max_s=MAX_S)
    return site, deposit(site, "C-1", content="result")


def invalid_scans(site: LockerSite, count: int) -> list[str | None]:
    return [site.locker.scan(JUNK).reason for _ in range(count)]


def test_invalid_scans_lock_the_scanner_out(make_site: MakeSite) -> None:
    site, _number = locker(make_site)
    seen = mark(site)

    reasons = invalid_scans(site, AFTER)

    assert reasons == ["not-a-credential"] * AFTER  # each audited for what it was
    assert len(data_of(site, seen, "credential.refused")) == AFTER
    (lockout,) = data_of(site, seen, "scanner.lockout")
    assert lockout["level"] == 1
    assert lockout["delay_s"] == BASE_S
    assert lockout["invalid_scans"] == AFTER
    assert lockout["until"] == site.clock.time() + BASE_S


def test_fewer_invalid_scans_do_not_lock_out(make_site: MakeSite) -> None:
    site, number = locker(make_site)
    seen = mark(site)
    invalid_scans(site, AFTER - 1)
    assert data_of(site, seen, "scanner.lockout") == []
    assert site.locker.scan(site.credential("collect", "C-1", number)).accepted


def test_a_valid_credential_during_the_lockout_opens_nothing(make_site: MakeSite) -> None:
    site, number = locker(make_site)
    invalid_scans(site, AFTER)
    before, pulses, seen = snapshot(site), pulse_counts(site), mark(site)
    credential = site.credential("collect", "C-1", number)

    outcome = site.locker.scan(credential)
    junk = site.locker.scan(JUNK)
    site.settle(1.0)

    assert (outcome.accepted, outcome.reason) == (False, "locked-out")
    assert junk.reason == "locked-out"
    assert (snapshot(site), pulse_counts(site)) == (before, pulses)
    # Each scan during the lockout is audited with its reason, and none lengthens the lockout.
    refused = [data for type_, data in events_after(site, seen) if type_ == "credential.refused"]
    assert refused == [{"reason": "locked-out"}, {"reason": "locked-out"}]
    assert not [t for t, _ in events_after(site, seen) if t == "scanner.lockout"]
    assert site.locker.status()["lockout"]["ignored"] == 2

    # After the delay the same credential works (a locked-out scan does not use it up), and the
    # end of the lockout is reported with the scans it ignored.
    advance(site, BASE_S)
    assert site.locker.scan(credential).accepted
    take_out(site, number)
    assert snapshot(site)[number - 1] == (number, "free", None, None)
    assert pulse_counts(site)[number - 1] == pulses[number - 1] + 1
    assert data_of(site, seen, "scanner.lockout_ended") == [{"level": 1, "ignored_scans": 2}]


def test_the_lockout_lasts_its_delay_and_no_less(make_site: MakeSite) -> None:
    site, number = locker(make_site)
    invalid_scans(site, AFTER)
    credential = site.credential("collect", "C-1", number)
    advance(site, BASE_S - 0.5)
    assert site.locker.scan(credential).reason == "locked-out"
    advance(site, 0.5)
    assert site.locker.scan(credential).accepted


def test_the_delay_doubles_up_to_the_ceiling(make_site: MakeSite) -> None:
    site, _number = locker(make_site)
    seen = mark(site)
    for _ in range(4):
        invalid_scans(site, AFTER)
        advance(site, MAX_S)  # past any of them

    delays = [d["delay_s"] for d in data_of(site, seen, "scanner.lockout")]
    levels = [d["level"] for d in data_of(site, seen, "scanner.lockout")]
    assert delays == [BASE_S, 2 * BASE_S, MAX_S, MAX_S]
    assert levels == [1, 2, 3, 4]
    # Each lockout's end was reported at the first scan after it.
    assert len(data_of(site, seen, "scanner.lockout_ended")) == 3


def test_a_valid_scan_resets_the_count_and_the_level(make_site: MakeSite) -> None:
    site, number = locker(make_site)
    seen = mark(site)
    invalid_scans(site, AFTER)  # level 1
    advance(site, BASE_S)
    invalid_scans(site, AFTER - 1)
    # A valid scan between invalid ones: the count starts again...
    assert site.locker.scan(site.credential("collect", "C-1", number)).accepted
    take_out(site, number)
    invalid_scans(site, AFTER - 1)
    assert len(data_of(site, seen, "scanner.lockout")) == 1
    # ...and so does the delay: the next lockout is a first one again.
    invalid_scans(site, 1)
    lockouts = data_of(site, seen, "scanner.lockout")
    assert [(d["level"], d["delay_s"]) for d in lockouts] == [(1, BASE_S), (1, BASE_S)]


def test_the_lockout_survives_a_restart(make_site: MakeSite) -> None:
    site, number = locker(make_site)
    invalid_scans(site, AFTER)
    credential = site.credential("collect", "C-1", number)

    site.restart()
    site.settle(0.2)

    pulses = pulse_counts(site)
    assert site.locker.scan(credential).reason == "locked-out"
    site.settle(0.5)
    assert pulse_counts(site) == pulses
    advance(site, BASE_S)
    assert site.locker.scan(credential).accepted
    take_out(site, number)
    assert pulse_counts(site)[number - 1] == pulses[number - 1] + 1


def test_the_next_lockout_after_a_restart_is_longer(make_site: MakeSite) -> None:
    site, _number = locker(make_site)
    invalid_scans(site, AFTER)
    advance(site, BASE_S)
    site.restart()
    seen = mark(site)
    invalid_scans(site, AFTER)
    assert [d["delay_s"] for d in data_of(site, seen, "scanner.lockout")] == [2 * BASE_S]
