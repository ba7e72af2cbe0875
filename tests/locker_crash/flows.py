"""The locker flows the crash tests drive, each from a trigger (a scanned credential or a signed
server command) to its physical end (the door shut again), and how each is replayed.

A flow that needs a compartment holding something first (a pickup) names its ``setup``: a clean
run of the earlier flow (no crash point), stopped with SIGTERM, whose data dir the crash tests
start from (conftest.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from device.credential import CredentialClaims, SigningKey, issue
from tests.locker_crash.rig import DEVICE_ID, LockerRig, ServerSide, wait_for

CASE = "CASE-2026-0042"
"""The case of every flow (one case per locker in these tests)."""

CREDENTIAL_POINTS = (
    "scan-accepted",
    "before-pulse",
    "after-pulse",
    "pulse-recorded",
    "door-opened",
    "door-closed",
)
COMMAND_POINTS = ("command-accepted", *CREDENTIAL_POINTS[1:])
"""``command-accepted`` is reached inside the command's store transaction, before it commits
(locker/commands.py): a kill there loses the command on the locker, which never acknowledged the
MQTT message, so the broker redelivers it to the restarted locker and it is carried out then."""


@dataclass(frozen=True)
class Started:
    """A flow under way: what authorised it and how to present the same authorisation again."""

    authority: str
    """The credential's ``cti`` (hex) or the command's id."""
    replay: Callable[[], None]
    """Present it again and wait until the locker has refused it."""


Trigger = Callable[[LockerRig, SigningKey, ServerSide | None], Started]


@dataclass(frozen=True)
class Flow:
    name: str
    compartment: int
    """The compartment the flow opens (the smallest free fitting one, or the one named)."""
    deposits: bool
    """It ends with something inside (``holding``), else with the compartment ``free``."""
    by_command: bool
    trigger: Trigger
    content: str | None
    """What the compartment holds after a deposit (``documents`` or ``result``)."""
    setup: str | None = None
    """Name of the set-up locker it starts from (conftest.SETUPS), or a fresh one."""

    @property
    def points(self) -> tuple[str, ...]:
        return COMMAND_POINTS if self.by_command else CREDENTIAL_POINTS


def credential(key: SigningKey, kind: str, compartment: int | None) -> tuple[str, str]:
    """A ``kind`` credential for :data:`CASE` at this locker: (QR text, cti hex)."""
    now = int(time.time())
    claims = CredentialClaims(
        kind=kind,
        sub=CASE,
        nbf=now - 60,
        exp=now + 3600,
        aud=DEVICE_ID,
        compartment=compartment,
    )
    return issue(claims, key), claims.cti_hex


def refusals(rig: LockerRig, cti: str) -> list[dict[str, Any]]:
    return [e.data for e in rig.events("credential.refused") if e.data.get("cti") == cti]


def scan_trigger(kind: str, compartment: int | None) -> Trigger:
    def trigger(rig: LockerRig, key: SigningKey, _server: ServerSide | None) -> Started:
        text, cti = credential(key, kind, compartment)
        rig.scan(text)

        def replay() -> None:
            before = len(refusals(rig, cti))
            rig.scan(text)
            wait_for(
                lambda: len(refusals(rig, cti)) > before,
                "the replayed credential's refusal",
                rig=rig,
            )

        return Started(cti, replay)

    return trigger


def command_replies(rig: LockerRig, command_id: str, event: str) -> list[dict[str, Any]]:
    return [e.data for e in rig.events(event) if e.data.get("id") == command_id]


def command_trigger(type_: str, args: dict[str, Any]) -> Trigger:
    def trigger(rig: LockerRig, _key: SigningKey, server: ServerSide | None) -> Started:
        assert server is not None, "a command flow needs the broker"
        sent = server.send(type_, args)

        def replay() -> None:
            before = len(command_replies(rig, sent.id, "cmd.refused"))
            server.publish(sent)
            wait_for(
                lambda: len(command_replies(rig, sent.id, "cmd.refused")) > before,
                "the replayed command's refusal",
                rig=rig,
            )

        return Started(sent.id, replay)

    return trigger


# A pickup flow starts from a locker where a clean run of the matching deposit left the case.
SETUP_FLOWS: dict[str, Flow] = {
    "result-in-2": Flow("setup", 2, True, False, scan_trigger("deposit", 2), "result"),
    "result-in-4": Flow("setup", 4, True, False, scan_trigger("deposit", 4), "result"),
    "documents-in-4": Flow(
        "setup",
        4,
        True,
        True,
        command_trigger("locker.deposit", {"case": CASE, "size": "L"}),
        "documents",
    ),
}

FLOWS = (
    # A grid worker deposits a result offline, into the compartment the credential names...
    Flow("deposit-credential-named", 3, True, False, scan_trigger("deposit", 3), "result"),
    # ...or into the smallest free one.
    Flow("deposit-credential-any", 1, True, False, scan_trigger("deposit", None), "result"),
    # A grid worker collects offline (here: what the worker deposited there before).
    Flow(
        "worker-open-credential",
        4,
        False,
        False,
        scan_trigger("worker-open", 4),
        None,
        setup="result-in-4",
    ),
    # The resident collects the result offline.
    Flow(
        "collect-credential",
        2,
        False,
        False,
        scan_trigger("collect", 2),
        None,
        setup="result-in-2",
    ),
    # The server opens the smallest free M compartment for a resident's documents...
    Flow(
        "deposit-command",
        2,
        True,
        True,
        command_trigger("locker.deposit", {"case": CASE, "size": "M"}),
        "documents",
    ),
    # ...and for a grid worker collecting them online.
    Flow(
        "open-command",
        4,
        False,
        True,
        command_trigger("locker.open", {"compartment": 4, "case": CASE}),
        None,
        setup="documents-in-4",
    ),
)
