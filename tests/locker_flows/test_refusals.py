"""Every way a scan is refused, each with its own reason: nothing opens (no relay pulse, no
compartment moves), and the refusal is audited as exactly one ``credential.refused`` event that
names the reason and never carries the scanned text (DESIGN.md "Credentials")."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from device.credential import generate_signing_key
from device.scanner import ScanRejectedError
from hardware_sim.locker_site import SERVER_KID, LockerSite
from locker.access import REASONS
from tests.locker_flows.conftest import MakeSite
from tests.locker_flows.helpers import (
    advance,
    data_of,
    deposit,
    events_after,
    mark,
    outbox_text,
    pulse_counts,
    snapshot,
    take_out,
)

SKEW_S = 300.0  # [locker] credential_skew_s default

# The locker every scenario starts from: compartment 1 holds a resident's documents (case C-DOC),
# compartment 2 a result for the resident (case C-RES), 3 and 4 are free.
DOC, RES = 1, 2


@dataclass(frozen=True)
class Scenario:
    reason: str
    scan: Callable[[LockerSite], str]
    """Prepares what it needs on the site and returns the text to scan."""


def forged(site: LockerSite) -> str:
    # Another key that claims the server's key id: the signature gives it away.
    return site.credential("collect", "C-RES", RES, key=generate_signing_key(SERVER_KID))


def unknown_key(site: LockerSite) -> str:
    return site.credential("collect", "C-RES", RES, key=generate_signing_key("srv-unknown"))


def other_locker(site: LockerSite) -> str:
    return site.credential("collect", "C-RES", RES, aud="locker-sim-2")


def claims_another_compartment(site: LockerSite) -> str:
    return site.credential("collect", "C-RES", DOC)


def compartment_holds_another_case(site: LockerSite) -> str:
    return site.credential("worker-open", "C-ELSEWHERE", DOC)


def collect_where_documents_not_a_result_are(site: LockerSite) -> str:
    # The resident's own documents are not theirs to take back: only a result is collected.
    return site.credential("collect", "C-DOC", DOC)


def compartment_that_does_not_exist(site: LockerSite) -> str:
    return site.credential("collect", "C-RES", 9)


def collect_naming_no_compartment(site: LockerSite) -> str:
    return site.credential("collect", "C-RES")


def deposit_into_a_full_compartment(site: LockerSite) -> str:
    return site.credential("deposit", "C-NEW", DOC)


def expired(site: LockerSite) -> str:
    now = site.clock.time()
    return site.credential("collect", "C-RES", RES, valid_from=now - 7200, valid_s=3600)


def expired_just_beyond_the_margin(site: LockerSite) -> str:
    now = site.clock.time()
    return site.credential(
        "collect", "C-RES", RES, valid_from=now - 3600 - SKEW_S - 1, valid_s=3600
    )


def not_yet_valid(site: LockerSite) -> str:
    return site.credential("collect", "C-RES", RES, valid_from=site.clock.time() + SKEW_S + 60)


def revoked(site: LockerSite) -> str:
    cti = bytes.fromhex("0badc0ffee000001")
    site.store.documents.apply_snapshot("revocations", 1, {cti.hex(): {"reason": "phone lost"}})
    return site.credential("collect", "C-RES", RES, cti=cti)


def replayed(site: LockerSite) -> str:
    credential = site.credential("worker-open", "C-DOC", DOC)
    assert site.locker.scan(credential).accepted
    take_out(site, DOC)
    # The documents were collected; the worker deposits the result and shows the old QR again.
    deposit(site, "C-DOC", content="result")
    return credential


def replayed_while_open(site: LockerSite) -> str:
    # Shown twice in a row at the scanner: the second read must not open anything more.
    credential = site.credential("worker-open", "C-DOC", DOC)
    assert site.locker.scan(credential).accepted
    site.settle(0.4)
    return credential


def oversized(site: LockerSite) -> str:
    # Correctly signed, but far longer than any credential the server issues (max 700 chars).
    text = site.credential("collect", "C-" + "9" * 600, RES)
    assert len(text) > 700
    return text


def a_url(_site: LockerSite) -> str:
    return "https://linli.example.org/locker/locker-sim-1?service=residence"


def garbage_after_the_prefix(_site: LockerSite) -> str:
    return "LQ1:hello, world"


def a_certificate(site: LockerSite) -> str:
    return site.credential("certificate", "C-RES", RES)


def compartment_in_fault(site: LockerSite) -> str:
    site.gpio.jam(DOC)
    assert site.command("locker.open", {"compartment": DOC, "case": "C-DOC"}).status == (
        "succeeded"
    )
    site.settle(3, step=0.02)  # pulsed, retried, given up: fault
    assert snapshot(site)[DOC - 1][1] == "fault"
    site.gpio.jam(DOC, False)
    return site.credential("worker-open", "C-DOC", DOC)


def compartment_disabled(site: LockerSite) -> str:
    assert site.command("locker.disable", {"compartment": RES}).status == "succeeded"
    return site.credential("collect", "C-RES", RES)


def no_free_compartment(site: LockerSite) -> str:
    deposit(site, "C-3", size="M")
    deposit(site, "C-4", size="L")
    return site.credential("deposit", "C-NEW")


SCENARIOS = {
    "forged signature": Scenario("bad-signature", forged),
    "unknown key id": Scenario("unknown-key", unknown_key),
    "another locker": Scenario("wrong-audience", other_locker),
    "another compartment": Scenario("wrong-compartment", claims_another_compartment),
    "compartment holds another case": Scenario("wrong-compartment", compartment_holds_another_case),
    "collect where documents are": Scenario(
        "wrong-compartment", collect_where_documents_not_a_result_are
    ),
    "no such compartment": Scenario("wrong-compartment", compartment_that_does_not_exist),
    "collect naming no compartment": Scenario("wrong-compartment", collect_naming_no_compartment),
    "deposit into a full compartment": Scenario(
        "wrong-compartment", deposit_into_a_full_compartment
    ),
    "expired": Scenario("expired", expired),
    "expired beyond the skew margin": Scenario("expired", expired_just_beyond_the_margin),
    "not yet valid": Scenario("not-yet-valid", not_yet_valid),
    "revoked": Scenario("revoked", revoked),
    "replayed after the flow": Scenario("already-used", replayed),
    "replayed at once": Scenario("already-used", replayed_while_open),
    "oversized": Scenario("oversized", oversized),
    "a URL": Scenario("not-a-credential", a_url),
    "not base45": Scenario("malformed", garbage_after_the_prefix),
    "a certificate": Scenario("wrong-kind", a_certificate),
    "compartment in fault": Scenario("compartment-unavailable", compartment_in_fault),
    "compartment disabled": Scenario("compartment-unavailable", compartment_disabled),
    "no free compartment": Scenario("no-free-compartment", no_free_compartment),
}


def prepared(make_site: MakeSite, **options: Any) -> LockerSite:
    site = make_site(**{"open_confirm_s": 1.0, **options})
    assert deposit(site, "C-DOC") == DOC
    assert deposit(site, "C-RES", content="result") == RES
    return site


def assert_refused_and_nothing_opened(site: LockerSite, text: str, reason: str) -> None:
    before, pulses, seen = snapshot(site), pulse_counts(site), mark(site)

    outcome = site.locker.scan(text)
    site.settle(1.0)

    assert not outcome.accepted
    assert outcome.reason == reason
    assert pulse_counts(site) == pulses, "a refused scan energised a relay"
    assert snapshot(site) == before, "a refused scan moved a compartment"
    refused = data_of(site, seen, "credential.refused")
    assert len(refused) == 1
    assert refused[0]["reason"] == reason
    # The audit names what was refused but never repeats the scanned text (it may be a valid
    # credential for someone else's documents) nor a sizeable piece of it.
    audit = outbox_text(site, seen)
    assert text not in audit
    if len(text) > 16:
        assert text[4:40] not in audit
    # Nothing but the audit happened.
    assert {t for t, _ in events_after(site, seen)} <= {"credential.refused", "scanner.lockout"}


@pytest.mark.parametrize("name", SCENARIOS)
def test_refused_scan_opens_nothing(make_site: MakeSite, name: str) -> None:
    scenario = SCENARIOS[name]
    site = prepared(make_site)
    text = scenario.scan(site)
    assert_refused_and_nothing_opened(site, text, scenario.reason)


def test_every_refusal_reason_of_a_credential_is_covered_and_distinct() -> None:
    covered = {s.reason for s in SCENARIOS.values()} | {"truncated"}  # truncated: below
    # Refused before any credential check (test_lockout.py), or unreachable through a scan: a
    # credential only opens a free or holding compartment, which has no request in progress.
    elsewhere = {"locked-out", "compartment-busy"}
    assert covered | elsewhere == set(REASONS)
    assert len(set(REASONS)) == len(REASONS)


def test_refused_credentials_carry_their_id_for_the_audit(make_site: MakeSite) -> None:
    site = prepared(make_site)
    cti = bytes.fromhex("00112233445566aa")
    text = site.credential("collect", "C-RES", RES, aud="locker-sim-2", cti=cti)
    seen = mark(site)
    site.locker.scan(text)
    assert data_of(site, seen, "credential.refused") == [
        {"reason": "wrong-audience", "cti": cti.hex()}
    ]


# -- truncated: a valid credential cut short ------------------------------------------------------

# base45 packs 2 bytes into 3 characters: cuts after the prefix at a multiple of 3 characters,
# or one character past it, are what a partial scan or a cut-off copy looks like.
CUTS = [3, 4, 30, 31, 60, 61, 99, 100, 150, 151, 201, 202]


@pytest.mark.parametrize("cut", CUTS)
def test_a_credential_cut_short_is_truncated(make_site: MakeSite, cut: int) -> None:
    site = prepared(make_site)
    text = site.credential("collect", "C-RES", RES)
    assert len(text) > 4 + cut
    assert_refused_and_nothing_opened(site, text[: 4 + cut], "truncated")


def test_a_credential_cut_to_its_prefix_is_truncated(make_site: MakeSite) -> None:
    site = prepared(make_site)
    assert_refused_and_nothing_opened(site, "LQ1:", "truncated")


def test_a_credential_cut_inside_a_base45_group_is_truncated(make_site: MakeSite) -> None:
    site = prepared(make_site)
    text = site.credential("collect", "C-RES", RES)
    reasons = set()
    for cut in range(2, len(text) - 4, 3):  # 2 characters past a group boundary
        outcome = site.locker.scan(text[: 4 + cut])
        reasons.add(outcome.reason)
        advance(site, 3600)  # past any lockout
    assert reasons == {"truncated"}


def test_the_whole_credential_after_the_cuts_still_opens(make_site: MakeSite) -> None:
    site = prepared(make_site, lockout_after=100)
    text = site.credential("collect", "C-RES", RES)
    for cut in CUTS:
        assert site.locker.scan(text[: 4 + cut]).reason == "truncated"
    # A partial read does not use the credential up: the full scan that follows opens.
    assert site.locker.scan(text).accepted
    take_out(site, RES)
    assert pulse_counts(site)[RES - 1] == 2


# -- the clock-skew margin -----------------------------------------------------------------------


def test_a_credential_valid_soon_is_accepted_inside_the_skew_margin(
    make_site: MakeSite,
) -> None:
    site = prepared(make_site)
    text = site.credential("collect", "C-RES", RES, valid_from=site.clock.time() + SKEW_S - 30)
    assert site.locker.scan(text).accepted
    take_out(site, RES)
    assert snapshot(site)[RES - 1] == (RES, "free", None, None)


def test_a_credential_just_expired_is_accepted_inside_the_skew_margin(
    make_site: MakeSite,
) -> None:
    site = prepared(make_site)
    now = site.clock.time()
    text = site.credential("collect", "C-RES", RES, valid_from=now - 3600 - 30, valid_s=3600)
    assert site.locker.scan(text).accepted
    take_out(site, RES)
    assert pulse_counts(site)[RES - 1] == 2


# -- what the scanner itself refused -------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (ScanRejectedError("too_long", 5000), "oversized"),
        (ScanRejectedError("stalled", 80), "truncated"),
        (ScanRejectedError("not_utf8", 40), "not-a-credential"),
    ],
)
def test_a_scan_the_scanner_rejected_is_audited(
    make_site: MakeSite, error: ScanRejectedError, reason: str
) -> None:
    site = prepared(make_site)
    before, pulses, seen = snapshot(site), pulse_counts(site), mark(site)

    outcome = site.locker.scan_rejected(error)
    site.settle(0.5)

    assert (outcome.accepted, outcome.reason) == (False, reason)
    assert data_of(site, seen, "credential.refused") == [{"reason": reason}]
    assert (snapshot(site), pulse_counts(site)) == (before, pulses)
    assert json.dumps(data_of(site, seen, "credential.refused")).count("5000") == 0
