"""Scenarios: what happens on the virtual site, as YAML a technician can read and write.

A scenario names the site it needs, a list of steps run in order, and what must hold at the end::

    name: 居民在一体机打印居住证明
    site: {kiosks: 1, lockers: 0}
    steps:
      - certificate: {kiosk: kiosk-1, resident: 0}
      - fault: {paper_out: kiosk-1, printer: a4}
        name: the A4 printer runs out of paper
      - certificate: {kiosk: kiosk-1, resident: 1, outcome: printer_problem}
    expect:
      printed: {kiosk-1: {pages: 1, receipts: 2}}
      alarms: [{device: kiosk-1, event: kiosk.printer_problem}]
      nothing_lost: true

Each step is a mapping with one action (its arguments as a mapping) and optionally a ``name``;
faults are steps too, so they happen at a given moment of the day. The actions, their arguments
and the expectations are listed in docs/virtual-site.md; :data:`ACTIONS` is the same list in code.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from device.errors import LinliError

DeviceId = Annotated[str, Field(pattern=r"^(kiosk|locker)-\d{1,3}$")]
KioskId = Annotated[str, Field(pattern=r"^kiosk-\d{1,3}$")]
LockerId = Annotated[str, Field(pattern=r"^locker-\d{1,3}$")]
CaseName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")]
Resident = Annotated[int, Field(ge=0, le=999)]
Worker = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
Seconds = Annotated[float, Field(ge=0, le=600)]


class ScenarioError(LinliError, ValueError):
    """A scenario file that cannot be run (not YAML, an unknown action, a wrong argument)."""


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- the resident at a kiosk ---------------------------------------------------------------------
class CardArgs(_Args):
    kiosk: KioskId
    resident: Resident


class KioskArgs(_Args):
    kiosk: KioskId


class TouchArgs(_Args):
    kiosk: KioskId
    action: Annotated[str, Field(pattern=r"^[a-z_]{1,32}$")]
    args: dict[str, str] = Field(default_factory=dict)


class ScreenArgs(_Args):
    kiosk: KioskId
    screen: Annotated[str, Field(pattern=r"^[a-z_]{1,40}$")]
    within_s: Seconds = 20.0


class CertificateArgs(_Args):
    """Place the card, choose 打印证明 and a template, look at the preview, print, end."""

    kiosk: KioskId
    resident: Resident
    template: Annotated[str, Field(pattern=r"^[a-z_]{1,40}$")] = "residence"
    outcome: Literal["printed", "printer_problem"] = "printed"


class LookupArgs(_Args):
    """Place the card of a resident and check the first screen (menu or not known)."""

    kiosk: KioskId
    resident: Resident
    screen: Annotated[str, Field(pattern=r"^[a-z_]{1,40}$")] = "menu"


# -- the locker: residents and grid workers ------------------------------------------------------
class DepositArgs(_Args):
    """The resident scans the locker's QR, chooses a service, puts the documents in, confirms."""

    locker: LockerId
    resident: Resident
    service: Annotated[str, Field(pattern=r"^[a-z_]{1,40}$")] = "residence"
    case: CaseName


class CollectArgs(_Args):
    """The case's grid worker accepts it and opens the compartment (online, or the offline QR at
    the scanner), takes the documents and shuts the door."""

    case: CaseName
    how: Literal["online", "offline"] = "online"
    outcome: Literal["collected", "refused"] = "collected"


class CaseArgs(_Args):
    case: CaseName


class ReturnArgs(_Args):
    """The worker brings the result back: online (the server asks for a compartment) or with the
    offline 存件码 at the scanner."""

    case: CaseName
    how: Literal["online", "offline"] = "online"


class PickupArgs(_Args):
    """The resident follows the link in the 办结 SMS and shows the pickup QR at the scanner
    (``code: revoked``: the code the office revoked, which must be refused)."""

    case: CaseName
    code: Literal["new", "revoked"] = "new"
    outcome: Literal["collected", "refused"] = "collected"

    @model_validator(mode="after")
    def _revoked_is_refused(self) -> PickupArgs:
        if (self.code == "revoked") != (self.outcome == "refused"):
            raise ValueError("a revoked code is refused and only a revoked code is")
        return self


class TasksArgs(_Args):
    """The worker's task list shows these cases in this order (by deadline, then distance)."""

    worker: Worker
    order: Annotated[list[CaseName], Field(min_length=1, max_length=20)]


class WaitCaseArgs(_Args):
    case: CaseName
    state: Annotated[str, Field(pattern=r"^[a-z_]{1,20}$")]
    within_s: Seconds = 30.0


class ScanArgs(_Args):
    """Somebody shows ``text`` (a QR code) to a device's scanner."""

    device: DeviceId
    text: Annotated[str, Field(min_length=1, max_length=2000)]


class WaitArgs(_Args):
    seconds: Seconds


# -- online applications (网上申请) -------------------------------------------------------------
class ApplyArgs(_Args):
    """The resident fills ``/apply/KIND`` on the phone with the SMS code (``refused``: the name
    and ID number are not a resident of the records)."""

    resident: Resident
    kind: Annotated[str, Field(pattern=r"^[a-z_]{1,40}$")]
    application: CaseName
    fields: dict[str, str] = Field(default_factory=dict)
    outcome: Literal["filed", "refused"] = "filed"


class DecideArgs(_Args):
    """The community office accepts, finishes or rejects an application on the admin pages."""

    application: CaseName
    decision: Literal["accept", "done", "reject"]
    reason: Annotated[str, Field(max_length=400)] = ""

    @model_validator(mode="after")
    def _reason_for_reject(self) -> DecideArgs:
        if self.decision == "reject" and not self.reason.strip():
            raise ValueError("a rejection needs a reason (the resident reads it)")
        return self


class PrintApplicationArgs(_Args):
    """At the kiosk: card, 打印网上申请, the application, preview, print (``not_printable``: the
    list shows it but offers no print, as before the office finished it)."""

    kiosk: KioskId
    resident: Resident
    application: CaseName
    outcome: Literal["printed", "printer_problem", "not_printable"] = "printed"


# -- the community office (admin pages) ----------------------------------------------------------
class NoticeArgs(_Args):
    """Publish a notice for ``days`` days (every community when ``community`` is empty); the step
    waits until every online kiosk has it."""

    title: Annotated[str, Field(min_length=1, max_length=64)]
    body: Annotated[str, Field(min_length=1, max_length=2000)]
    community: Annotated[str, Field(pattern=r"^[a-z0-9_-]{0,32}$")] = ""
    days: Annotated[int, Field(ge=1, le=365)] = 7


class ReadNoticeArgs(_Args):
    """Somebody reads the notice titled ``title`` at the kiosk (社区公告, no card needed)."""

    kiosk: KioskId
    title: Annotated[str, Field(min_length=1, max_length=64)]


class CancelArgs(_Args):
    case: CaseName
    reason: Literal["resident_request", "duplicate", "wrong_service", "other"] = "resident_request"


class ReassignArgs(_Args):
    """改派: the office offers the pickup to ``to``, who accepts it in the app."""

    case: CaseName
    to: Worker


class ClearFaultArgs(_Args):
    """After the repair, the office clears a compartment's fault from the device page."""

    locker: LockerId
    compartment: Annotated[int, Field(ge=1, le=64)]


# -- faults and repairs --------------------------------------------------------------------------
FaultKind = Literal[
    "network_cut",  # the device's network link drops (connections reset, nothing gets through)
    "network_blackhole",  # the link stays up but carries nothing (keepalives must notice)
    "broker_restart",  # Mosquitto stops (saving its sessions) and starts again
    "broker_crash",  # Mosquitto is killed and starts again
    "power_loss",  # the device's power is cut (SIGKILL); it boots again after off_s
    "paper_out",  # a kiosk printer (a4 or receipt) runs out of paper
    "printer_offline",  # the receipt printer goes offline / its cover opens
    "jam",  # a locker compartment's lock no longer releases
    "door_forced",  # a compartment door is pried open
    "lock_board_mute",  # the lock board stops answering (cut RS485 cable)
    "lock_board_noise",  # line noise on the RS485 bus
    "reader_fault",  # the ID-card reader's next read fails (corrupt / silent / garbage / bad card)
    "scanner_noise",  # garbage bytes on the scanner's serial line
]
FAULTS: tuple[str, ...] = get_args(FaultKind)


class FaultArgs(_Args):
    """One fault: ``{network_cut: locker-1}``, ``{paper_out: kiosk-1, printer: a4}``..."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    kind: FaultKind
    device: DeviceId | None = None
    printer: Literal["a4", "receipt"] = "receipt"
    compartment: Annotated[int, Field(ge=1, le=64)] = 1
    off_s: Seconds = 3.0
    read: Literal["corrupt", "silent", "garbage", "refused"] = "corrupt"

    @model_validator(mode="before")
    @classmethod
    def _kind_key(cls, raw: Any) -> Any:
        """``{network_cut: locker-1}``: the fault's name is the key, its device the value."""
        if not isinstance(raw, dict):
            raise ValueError("a fault is a mapping such as {network_cut: locker-1}")
        kinds = [k for k in raw if k in FAULTS]
        if len(kinds) != 1:
            raise ValueError(f"name exactly one fault of: {', '.join(FAULTS)}")
        out = {k: v for k, v in raw.items() if k != kinds[0]}
        out["kind"] = kinds[0]
        if raw[kinds[0]] is not None:
            out["device"] = raw[kinds[0]]
        return out

    @model_validator(mode="after")
    def _device_needed(self) -> FaultArgs:
        if self.kind.startswith("broker_"):
            return self
        if self.device is None:
            raise ValueError(f"{self.kind} needs a device: {{{self.kind}: kiosk-1}}")
        wants = {"paper_out": "kiosk", "printer_offline": "kiosk", "reader_fault": "kiosk",
                 "jam": "locker", "door_forced": "locker", "lock_board_mute": "locker",
                 "lock_board_noise": "locker"}.get(self.kind)  # fmt: skip
        if wants is not None and not self.device.startswith(wants):
            raise ValueError(f"{self.kind} happens at a {wants}, not {self.device}")
        return self


ACTIONS: dict[str, type[_Args]] = {
    "card": CardArgs,
    "lift": KioskArgs,
    "touch": TouchArgs,
    "screen": ScreenArgs,
    "certificate": CertificateArgs,
    "lookup": LookupArgs,
    "deposit": DepositArgs,
    "collect": CollectArgs,
    "process": CaseArgs,
    "return": ReturnArgs,
    "pickup": PickupArgs,
    "tasks": TasksArgs,
    "apply": ApplyArgs,
    "decide": DecideArgs,
    "print_application": PrintApplicationArgs,
    "notice": NoticeArgs,
    "read_notice": ReadNoticeArgs,
    "cancel": CancelArgs,
    "reassign": ReassignArgs,
    "revoke": CaseArgs,
    "clear_fault": ClearFaultArgs,
    "wait_case": WaitCaseArgs,
    "scan": ScanArgs,
    "wait": WaitArgs,
    "fault": FaultArgs,
    "repair": FaultArgs,
}


class Step(BaseModel):
    """One step: ``action`` with its ``args``, and a ``name`` for the report."""

    model_config = ConfigDict(frozen=True)

    action: str
    args: _Args
    name: str

    @model_validator(mode="before")
    @classmethod
    def _one_action(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            raise ValueError("a step is a mapping such as {deposit: {locker: locker-1, ...}}")
        if "action" in raw and "args" in raw:
            return raw
        actions = [k for k in raw if k != "name"]
        if len(actions) != 1 or actions[0] not in ACTIONS:
            raise ValueError(
                f"a step has one action of: {', '.join(ACTIONS)} (got {', '.join(actions)})"
            )
        action = actions[0]
        value = raw[action]
        if action == "wait" and isinstance(value, int | float):
            value = {"seconds": value}
        if action == "lift" and isinstance(value, str):
            value = {"kiosk": value}
        if action == "together" and isinstance(value, list):
            value = {"steps": value}
        args = ACTIONS[action].model_validate(value)
        name = raw.get("name") or _describe(action, value)
        return {"action": action, "args": args, "name": str(name)}


class TogetherArgs(_Args):
    """Steps done at the same time by different people (two residents at two kiosks...); the
    step is done when all of them are, and fails if any does."""

    steps: Annotated[list[Step], Field(min_length=2, max_length=10)]

    @model_validator(mode="after")
    def _flat(self) -> TogetherArgs:
        if any(step.action == "together" for step in self.steps):
            raise ValueError("together steps cannot nest")
        return self


ACTIONS["together"] = TogetherArgs


def _describe_raw(raw: Any) -> str:
    if isinstance(raw, dict):
        actions = [k for k in raw if k != "name"]
        if raw.get("name"):
            return str(raw["name"])
        if len(actions) == 1:
            return _describe(actions[0], raw[actions[0]])
    return str(raw)


def _describe(action: str, value: Any) -> str:
    if action == "together" and isinstance(value, dict):
        return "together: " + " | ".join(_describe_raw(s) for s in value.get("steps", []))
    if isinstance(value, dict):
        parts = ", ".join(f"{k}={v}" for k, v in value.items())
        return f"{action} ({parts})"
    return f"{action} ({value})"


class PrintedExpect(_Args):
    pages: Annotated[int, Field(ge=0)] | None = None
    receipts: Annotated[int, Field(ge=0)] | None = None


class AlarmExpect(_Args):
    device: DeviceId
    event: Annotated[str, Field(pattern=r"^[a-z_]+\.[a-z_]+$")]


class Expect(_Args):
    """What must hold at the end (each key optional)."""

    # Cases on the server by state, e.g. {completed: 2}; states not named are not checked.
    cases: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)
    # Named cases' states, e.g. {c1: completed}.
    case_states: dict[CaseName, str] = Field(default_factory=dict)
    # Pages out of each kiosk's A4 printer and receipts cut by its receipt printer.
    printed: dict[KioskId, PrintedExpect] = Field(default_factory=dict)
    # Events the server received from a device (alarms, printer problems, refusals).
    alarms: list[AlarmExpect] = Field(default_factory=list)
    # Refusal reasons the server audited for scans at a locker ({locker-1: [not-a-credential]}).
    refusals: dict[LockerId, list[str]] = Field(default_factory=dict)
    # Every event each device stored reached the server: no device has one left to send, and
    # the server holds every sequence number without a gap.
    nothing_lost: bool = True
    # Every device online at the end.
    all_online: bool = True
    # Seconds, from the end of the last step, in which every expectation must come true (events
    # and acks may still be on their way); once they are up, each is checked once more as it is.
    within_s: Annotated[float, Field(gt=0, le=600)] = 30.0


class SiteSize(_Args):
    kiosks: Annotated[int, Field(ge=0, le=20)] = 1
    lockers: Annotated[int, Field(ge=0, le=20)] = 1


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(min_length=1, max_length=200)]
    about: str = ""
    site: SiteSize = Field(default_factory=SiteSize)
    steps: Annotated[list[Step], Field(min_length=1)]
    expect: Expect = Field(default_factory=Expect)

    @model_validator(mode="after")
    def _devices_exist(self) -> Scenario:
        """Every device a step names is on the site; every case and application is deposited
        or filed before a step uses it."""
        known = {f"kiosk-{i}" for i in range(1, self.site.kiosks + 1)}
        known |= {f"locker-{i}" for i in range(1, self.site.lockers + 1)}
        size = f"{self.site.kiosks} kiosks and {self.site.lockers} lockers"
        named: dict[str, set[str]] = {kind: set() for kind in _INTRODUCED}
        for number, step in _numbered(self.steps):
            for key in ("kiosk", "locker", "device"):
                device = getattr(step.args, key, None)
                if device is not None and device not in known:
                    raise ValueError(
                        f"step {number} ({step.name}): no {device} on a site of {size}"
                    )
            for kind, (first, what) in _INTRODUCED.items():
                used = getattr(step.args, kind, None)
                if step.action == first:
                    named[kind].add(str(used))
                    continue
                order = getattr(step.args, "order", []) if kind == "case" else []
                for name in ([used] if used is not None else []) + list(order):
                    if name not in named[kind]:
                        raise ValueError(
                            f"step {number} ({step.name}): {kind} {name!r} was not {what} before"
                        )
        return self


_INTRODUCED = {
    "case": ("deposit", "deposited"),
    "application": ("apply", "filed"),
    "title": ("notice", "published"),
}
"""What a step introduces by name (the action, the word for it) for later steps to use."""


def _numbered(steps: list[Step]) -> Iterator[tuple[str, Step]]:
    """Every step with its number as the report gives it (``3``, or ``3.1`` inside together)."""
    for n, step in enumerate(steps, 1):
        if isinstance(step.args, TogetherArgs):
            for m, inner in enumerate(step.args.steps, 1):
                yield f"{n}.{m}", inner
        else:
            yield str(n), step


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    """Parse and check a scenario; :class:`ScenarioError` names the file and the problem."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ScenarioError(f"{source}: not YAML: {err}") from err
    try:
        return Scenario.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ScenarioError(f"{source}: {where + ': ' if where else ''}{message}") from None


def load_scenario(path: str | Path) -> Scenario:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ScenarioError(f"cannot read scenario {path}: {err.strerror}") from err
    return parse_scenario(text, str(path))


LIBRARY = Path(__file__).resolve().parent.parent / "scenarios"


def library() -> list[Path]:
    """The scenarios shipped with Linli (``hardware_sim/scenarios/*.yaml``)."""
    return sorted(LIBRARY.glob("*.yaml"))
