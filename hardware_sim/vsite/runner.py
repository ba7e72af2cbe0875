"""Run a scenario on a virtual site and report: each step (done, failed, not run) and each
expectation (held or not, and what was found instead).

Steps act as the people and the world would: cards go on the emulated reader, the kiosk's
screen is touched through its control socket, phones use the server's pages and API, doors are
opened and pushed shut on the emulated lock boards, codes are shown to the emulated scanners,
and faults are injected into the emulators, the network links and the processes. The first step
that fails stops the day; the expectations are checked all the same, so the report shows what
state the site was left in.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from device.errors import LinliError
from device.idcard.codec import Command
from device.sync.daemon import STORE_FILE
from hardware_sim.smsgw import SmsTimeoutError
from hardware_sim.vsite import data
from hardware_sim.vsite.phones import (
    OfficeBrowser,
    PhoneError,
    ResidentApplication,
    ResidentCase,
    ResidentPhone,
    WorkerPhone,
)
from hardware_sim.vsite.scenario import (
    ApplyArgs,
    CancelArgs,
    CardArgs,
    CaseArgs,
    CertificateArgs,
    ClearFaultArgs,
    CollectArgs,
    DecideArgs,
    DepositArgs,
    Expect,
    FaultArgs,
    KioskArgs,
    LookupArgs,
    NoticeArgs,
    PickupArgs,
    PrintApplicationArgs,
    ReadNoticeArgs,
    ReassignArgs,
    ReturnArgs,
    ScanArgs,
    Scenario,
    ScreenArgs,
    Step,
    TasksArgs,
    TogetherArgs,
    TouchArgs,
    WaitArgs,
    WaitCaseArgs,
)
from hardware_sim.vsite.site import SimKiosk, SimLocker, SiteError, VirtualSite
from sync_server.domain_models import AuditEntry, Case, Compartment, Worker
from sync_server.models import Event

DOOR_TIMEOUT_S = 30.0
CASE_TIMEOUT_S = 45.0
REOPEN_AFTER_S = 10.0
LIFT_PAUSE_S = 1.0
HAND_S = 0.6
"""How long a person's hand is in the compartment (the locker must see the door open)."""
REFUSED_S = 3.0
"""How long a person waits at a locker that refuses their code before giving up."""
SMS_TIMEOUT_S = 20.0
CHINA = ZoneInfo("Asia/Shanghai")
_SMS_CODE = re.compile(r"验证码(\d{6})")


class StepFailed(LinliError, RuntimeError):
    """A step could not be done as written (a door that did not open, a screen that did not
    come); the message says what was awaited."""


@dataclass
class StepResult:
    number: int
    name: str
    status: str  # "ok", "failed", "not run"
    seconds: float = 0.0
    note: str = ""


@dataclass
class ExpectResult:
    name: str
    ok: bool
    detail: str


@dataclass
class Report:
    scenario: str
    steps: list[StepResult] = field(default_factory=list)
    expectations: list[ExpectResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(s.status == "ok" for s in self.steps) and all(e.ok for e in self.expectations)

    @property
    def failed_step(self) -> StepResult | None:
        return next((s for s in self.steps if s.status == "failed"), None)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["passed"] = self.passed
        return out

    def to_text(self) -> str:
        marks = {"ok": "✓", "failed": "✗", "not run": "·"}
        lines = [f"scenario: {self.scenario}", "steps:"]
        for s in self.steps:
            note = f" — {s.note}" if s.note else ""
            lines.append(f"  {marks[s.status]} {s.number:>2}. {s.name} ({s.seconds:.1f} s){note}")
        lines.append("expectations:")
        for e in self.expectations:
            lines.append(f"  {'✓' if e.ok else '✗'} {e.name}: {e.detail}")
        verdict = "PASSED" if self.passed else "FAILED"
        failed = self.failed_step
        if failed is not None:
            verdict += f" at step {failed.number} ({failed.name})"
        elif not self.passed:
            bad = [e.name for e in self.expectations if not e.ok]
            verdict += f": expectation {', '.join(bad)} did not hold"
        lines.append(f"{verdict} in {self.seconds:.1f} s")
        return "\n".join(lines)


def _poll(predicate: Callable[[], bool], what: str, timeout_s: float) -> None:
    """:meth:`VirtualSite.wait`, failing the step."""
    try:
        VirtualSite.wait(predicate, what, timeout_s)
    except SiteError as err:
        raise StepFailed(str(err)) from None


class ScenarioRun:
    """One run of ``scenario`` on a started ``site``; :meth:`run` returns the report."""

    def __init__(
        self,
        site: VirtualSite,
        scenario: Scenario,
        on_step: Callable[[StepResult, int], None] | None = None,
    ) -> None:
        self.site = site
        self.scenario = scenario
        self.on_step = on_step or (lambda _result, _total: None)
        self.cases: dict[str, tuple[ResidentCase, ResidentPhone, str]] = {}
        self.applications: dict[str, tuple[ResidentApplication, ResidentPhone]] = {}
        self.phones: dict[int, ResidentPhone] = {}
        self.workers: dict[str, WorkerPhone] = {}
        self.office: OfficeBrowser | None = None
        self.notices: dict[str, str] = {}  # title -> key
        self.revoked: dict[str, str] = {}  # case -> the revoked pickup code
        self.notes: list[str] = []
        self._expect_deadline = 0.0  # set when the expectations are checked

    def run(self) -> Report:
        started = time.monotonic()
        report = Report(self.scenario.name)
        total = len(self.scenario.steps)
        failed = False
        try:
            for number, step in enumerate(self.scenario.steps, 1):
                if failed:
                    report.steps.append(StepResult(number, step.name, "not run"))
                    continue
                t0 = time.monotonic()
                self.notes = []
                try:
                    self._do(step)
                    status, note = "ok", "; ".join(self.notes)
                except (LinliError, OSError) as err:
                    status, note, failed = "failed", str(err), True
                result = StepResult(number, step.name, status, time.monotonic() - t0, note)
                report.steps.append(result)
                self.on_step(result, total)
            report.expectations = self._check(self.scenario.expect)
        finally:
            for browser in [*self.workers.values(), *self.phones.values(), self.office]:
                if browser is not None:
                    browser.close()
        report.seconds = time.monotonic() - started
        return report

    def _do(self, step: Step) -> None:
        handler: Callable[[Any], None] = getattr(self, f"_step_{step.action}")
        handler(step.args)

    # -- kiosk ---------------------------------------------------------------------------------
    def _screen(self, kiosk: SimKiosk, screen: str, within_s: float) -> None:
        reply = kiosk.control().wait(screen, timeout_s=within_s)
        if not reply.get("ok"):
            shown = reply.get("screen", {}).get("id")
            raise StepFailed(f"{kiosk.id} shows {shown!r}, not {screen!r} after {within_s:g} s")

    def _touch(self, kiosk: SimKiosk, action: str, **args: str) -> None:
        reply = kiosk.control().touch(action, **args)
        if not reply.get("ok"):
            shown = reply.get("screen", {})
            raise StepFailed(f"{kiosk.id}: {action!r} is not on screen {shown.get('id')!r} "
                             f"(actions: {', '.join(shown.get('actions', []))})")  # fmt: skip

    @staticmethod
    def _lift(kiosk: SimKiosk) -> None:
        """The resident takes the card and walks away; the reader (polled every 300 ms) sees
        the empty slot before the next resident's card."""
        kiosk.reader.lift()
        time.sleep(LIFT_PAUSE_S)

    def _step_card(self, args: CardArgs) -> None:
        self.site.kiosk(args.kiosk).reader.insert(data.resident(args.resident))

    def _step_lift(self, args: KioskArgs) -> None:
        self._lift(self.site.kiosk(args.kiosk))

    def _step_touch(self, args: TouchArgs) -> None:
        self._touch(self.site.kiosk(args.kiosk), args.action, **args.args)

    def _step_screen(self, args: ScreenArgs) -> None:
        self._screen(self.site.kiosk(args.kiosk), args.screen, args.within_s)

    def _step_lookup(self, args: LookupArgs) -> None:
        kiosk = self.site.kiosk(args.kiosk)
        kiosk.reader.insert(data.resident(args.resident))
        try:
            self._screen(kiosk, args.screen, 20)
            self._end_if_offered(kiosk)
        finally:
            self._lift(kiosk)

    def _print_preview(self, kiosk: SimKiosk, outcome: str) -> None:
        """Look at the preview, tap 确认打印, see the outcome, tap 结束."""
        self._screen(kiosk, "preview", 30)
        self._touch(kiosk, "confirm")
        self._screen(kiosk, outcome, 60)
        self._touch(kiosk, "end")

    def _end_if_offered(self, kiosk: SimKiosk) -> None:
        if "end" in kiosk.control().screen().get("screen", {}).get("actions", []):
            self._touch(kiosk, "end")

    def _step_certificate(self, args: CertificateArgs) -> None:
        kiosk = self.site.kiosk(args.kiosk)
        kiosk.reader.insert(data.resident(args.resident))
        try:
            self._screen(kiosk, "menu", 20)
            self._touch(kiosk, "certificate")
            self._touch(kiosk, "template", name=args.template)
            self._print_preview(kiosk, args.outcome)
        finally:
            self._lift(kiosk)
        self._screen(kiosk, "idle", 10)

    def _step_print_application(self, args: PrintApplicationArgs) -> None:
        application, _phone = self.applications[args.application]
        kiosk = self.site.kiosk(args.kiosk)
        kiosk.reader.insert(data.resident(args.resident))
        try:
            self._screen(kiosk, "menu", 20)
            self._touch(kiosk, "applications")
            self._screen(kiosk, "applications", 30)
            offered = kiosk.control().touch("application", id=application.id).get("ok")
            if args.outcome == "not_printable":
                if offered:
                    raise StepFailed(f"{kiosk.id} offered to print application {application.id}")
                self.notes.append(f"application {application.id} listed without a print button")
                self._end_if_offered(kiosk)
            elif not offered:
                raise StepFailed(f"{kiosk.id} does not offer to print application {application.id}")
            else:
                self._print_preview(kiosk, args.outcome)
        finally:
            self._lift(kiosk)
        self._screen(kiosk, "idle", 10)

    def _step_read_notice(self, args: ReadNoticeArgs) -> None:
        kiosk = self.site.kiosk(args.kiosk)
        self._touch(kiosk, "notices")
        self._screen(kiosk, "notices", 10)
        self._touch(kiosk, "notice_item", key=self.notices[args.title])
        self._screen(kiosk, "notice_item", 10)
        self._end_if_offered(kiosk)

    # -- locker ----------------------------------------------------------------------------------
    def _door_opens(self, locker: SimLocker, what: str, timeout_s: float = DOOR_TIMEOUT_S) -> int:
        """Wait for a door of ``locker`` to pop open; its number."""
        found: list[int] = []

        def opened() -> bool:
            found[:] = [
                n for n in range(1, locker.bus.lock_count + 1) if locker.bus.door_is_open(n)
            ]
            return bool(found)

        _poll(opened, f"a door of {locker.id} to open ({what})", timeout_s)
        return found[0]

    def _stays_shut(self, locker: SimLocker, what: str) -> None:
        """No door opens for ``what`` (a refused code) while a person would wait."""
        try:
            number = self._door_opens(locker, what, REFUSED_S)
        except StepFailed:
            return  # nothing opened, as it should be
        raise StepFailed(f"compartment {number} opened for {what}: it should be refused")

    def _phone(self, resident: int) -> ResidentPhone:
        if resident not in self.phones:
            self.phones[resident] = ResidentPhone(self.site.url, data.resident_phone(resident))
        return self.phones[resident]

    def _office(self) -> OfficeBrowser:
        if self.office is None:
            self.office = OfficeBrowser(self.site.url, data.ADMIN, data.WORKER_PASSWORD)
        return self.office

    def _sms(
        self, phone: ResidentPhone, match: Callable[[str], bool], what: str, after: float = 0.0
    ) -> str:
        """The text of the newest SMS on ``phone`` that ``match`` accepts (waiting for it)."""
        number = phone.phone_number or ""
        try:
            return self.site.sms.wait_for(
                number, lambda m: match(m.text), SMS_TIMEOUT_S, after=after
            ).text
        except SmsTimeoutError as err:
            raise StepFailed(f"{what}: {err}") from None

    def _hand_in_and_shut(self, locker: SimLocker, number: int) -> None:
        time.sleep(HAND_S)
        locker.bus.close_door(number)

    def _link_up(self, device_id: str) -> bool:
        device = self.site.device(device_id)
        return device.link.is_up and device.process.running

    def _wait_state(self, case: str, state: str, timeout_s: float = CASE_TIMEOUT_S) -> None:
        case_id, _phone, locker = self._case(case)
        if not self._link_up(locker):
            self.notes.append(f"{locker} is offline: the server learns when it is back")
            return
        _poll(lambda: self._state_of(case_id) == state, f"case {case} to be {state} at the server "
              f"(it is {self._state_of(case_id)})", timeout_s)  # fmt: skip

    def _state_of(self, case_id: str) -> str | None:
        with self.site.db().connect() as conn:
            value = conn.execute(select(Case.state).where(Case.id == case_id)).scalar()
        return None if value is None else str(value)

    def _case(self, name: str) -> tuple[str, ResidentPhone, str]:
        case, phone, locker = self.cases[name]
        return case.id, phone, locker

    def _step_deposit(self, args: DepositArgs) -> None:
        locker = self.site.locker(args.locker)
        phone = self._phone(args.resident)
        if args.service not in phone.services(args.locker):
            raise StepFailed(f"{args.locker}'s page does not offer {args.service!r}")
        case = phone.start_case(args.locker, args.service)
        self.cases[args.case] = (case, phone, args.locker)
        try:
            number = self._door_opens(locker, "for the documents", REOPEN_AFTER_S)
        except StepFailed:
            # Nothing opened (a jammed lock): the resident taps 重新开柜 on the case page once.
            phone.reopen(case)
            self.notes.append("no door opened: the resident tapped 重新开柜")
            number = self._door_opens(locker, "for the documents, after 重新开柜")
        self._hand_in_and_shut(locker, number)
        phone.confirm(case)
        self.notes.append(f"case {case.id} in compartment {number}")
        self._wait_state(args.case, "assigned")

    def _worker_for(self, case_id: str) -> WorkerPhone:
        """The phone of the worker the case is assigned to (once it is)."""
        found: list[str] = []

        def assigned() -> bool:
            query = select(Worker.username).join(Case, Case.worker_id == Worker.id)
            with self.site.db().connect() as conn:
                username = conn.execute(query.where(Case.id == case_id)).scalar()
            found[:] = [] if username is None else [str(username)]
            return bool(found)

        _poll(assigned, f"case {case_id} to be assigned to a worker", CASE_TIMEOUT_S)
        return self._worker(found[0])

    def _worker(self, username: str) -> WorkerPhone:
        if username not in self.workers:
            self.workers[username] = WorkerPhone(self.site.url, username, data.WORKER_PASSWORD)
        return self.workers[username]

    def _step_collect(self, args: CollectArgs) -> None:
        case_id, _phone, locker_id = self._case(args.case)
        locker = self.site.locker(locker_id)
        worker = self._worker_for(case_id)
        worker.accept(case_id)  # no open offer (already accepted): nothing to tap
        self.notes.append(f"worker {worker.username}")
        if args.how == "online":
            worker.open_online(case_id)
        else:
            locker.scanner.show(worker.offline_code(case_id, "open"))
        if args.outcome == "refused":
            self._stays_shut(locker, "the refused code")
            return
        number = self._door_opens(locker, f"the worker's {args.how} open")
        self._hand_in_and_shut(locker, number)
        self._wait_state(args.case, "collected")

    def _step_process(self, args: CaseArgs) -> None:
        case_id, _phone, _locker = self._case(args.case)
        self._worker_for(case_id).mark_processing(case_id)

    def _step_return(self, args: ReturnArgs) -> None:
        case_id, _phone, locker_id = self._case(args.case)
        locker = self.site.locker(locker_id)
        worker = self._worker_for(case_id)
        if args.how == "online":
            worker.return_result(case_id)
        else:
            locker.scanner.show(worker.offline_code(case_id, "deposit"))
        number = self._door_opens(locker, f"the worker's {args.how} return")
        self._hand_in_and_shut(locker, number)
        self._wait_state(args.case, "result_stored")

    def _step_pickup(self, args: PickupArgs) -> None:
        case, phone, locker_id = self.cases[args.case]
        locker = self.site.locker(locker_id)
        self._wait_state(args.case, "result_stored")
        if args.code == "revoked":
            if args.case not in self.revoked:
                raise StepFailed(f"no pickup code of case {args.case} was revoked before")
            locker.scanner.show(self.revoked[args.case])
            self._stays_shut(locker, "the revoked pickup code")
            return
        # The 办结 SMS carries the case's link; the page there shows the pickup QR.
        text = self._sms(phone, lambda t: f"/c/{case.id}/" in t, "the 办结 SMS")
        locker.scanner.show(phone.collect_code(phone.case_from_link(text)))
        number = self._door_opens(locker, "the resident's pickup code")
        self._hand_in_and_shut(locker, number)
        self._wait_state(args.case, "completed")

    def _step_tasks(self, args: TasksArgs) -> None:
        names = {self._case(name)[0]: name for name in args.order}
        shown = [names[c] for c in self._worker(args.worker).task_order() if c in names]
        if shown != args.order:
            raise StepFailed(f"{args.worker}'s task list shows {shown}, not {args.order}")

    # -- online applications ---------------------------------------------------------------------
    def _step_apply(self, args: ApplyArgs) -> None:
        card = data.resident(args.resident)
        phone = self._phone(args.resident)
        since = time.time()

        def read_code() -> str:
            text = self._sms(phone, lambda t: "验证码" in t, "the verification SMS", since)
            found = _SMS_CODE.search(text)
            if found is None:
                raise StepFailed("the verification SMS carries no 6-digit code")
            return found.group(1)

        try:
            application = phone.apply(args.kind, card.name, card.id_number, args.fields, read_code)
        except PhoneError as err:
            if args.outcome == "refused" and err.status == 403:
                self.notes.append("refused: the name and ID number are not in the records")
                return
            raise
        if args.outcome == "refused":
            raise StepFailed(f"application {application.id} was filed; it should be refused")
        self.applications[args.application] = (application, phone)
        self.notes.append(f"application {application.id}")

    def _step_decide(self, args: DecideArgs) -> None:
        application, phone = self.applications[args.application]
        self._office().decide(application.id, args.decision, args.reason)
        # As sync_server.web.applications_admin.ACTIONS (not imported: it loads the web app).
        status = {"accept": "accepted", "done": "done", "reject": "rejected"}[args.decision]
        if f'data-status="{status}"' not in phone.application_page(application):
            raise StepFailed(f"the resident's page of {application.id} does not show {status}")

    # -- the community office --------------------------------------------------------------------
    def _store(self, device_id: str) -> contextlib.closing[sqlite3.Connection]:
        """The device's store, read-only (as a technician would look at the Pi's disk)."""
        path = self.site.device(device_id).data_dir / STORE_FILE
        return contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5))

    def _has_items(self, device_id: str, doc: str, keys: list[str]) -> bool:
        with self._store(device_id) as c:
            query = "SELECT 1 FROM doc_items WHERE doc = ? AND key = ?"
            return all(c.execute(query, (doc, key)).fetchone() is not None for key in keys)

    def _reaches(self, device_ids: list[str], doc: str, keys: list[str], what: str) -> None:
        """Wait until each online device has every item ``keys`` of ``doc``."""
        for device_id in device_ids:
            if not self._link_up(device_id):
                self.notes.append(f"{device_id} is offline: it gets the {doc} when it is back")
                continue
            has = functools.partial(self._has_items, device_id, doc, keys)
            _poll(has, f"{device_id} to receive {what}", 30)

    def _step_notice(self, args: NoticeArgs) -> None:
        until = (dt.datetime.now(CHINA) + dt.timedelta(days=args.days)).date().isoformat()
        key = self._office().publish_notice(args.title, args.body, until, args.community)
        self.notices[args.title] = key
        self._reaches(list(self.site.kiosks), "notices", [key], f"notice {args.title!r}")

    def _step_cancel(self, args: CancelArgs) -> None:
        case_id, _phone, _locker = self._case(args.case)
        self._office().cancel(case_id, args.reason)
        _poll(lambda: self._state_of(case_id) == "cancelled", f"case {args.case} cancelled", 10)

    def _step_reassign(self, args: ReassignArgs) -> None:
        case_id, _phone, _locker = self._case(args.case)
        if args.to not in data.WORKER_NAMES:
            raise StepFailed(f"no grid worker {args.to!r} (workers: {', '.join(data.WORKERS)})")
        self._office().reassign(case_id, data.WORKER_NAMES[args.to])
        phone = self._worker(args.to)
        _poll(lambda: phone.has_task(case_id), f"case {args.case} on {args.to}'s list", 10)

    def _step_revoke(self, args: CaseArgs) -> None:
        """The resident lost the phone that showed the pickup QR; the office revokes the case's
        live codes and the step waits until the locker knows."""
        case, phone, locker_id = self.cases[args.case]
        lost = phone.collect_code(case)
        ctis = self._office().revoke_credentials(case.id)
        if not ctis:
            raise StepFailed(f"case {args.case} had no live code to revoke")
        self.revoked[args.case] = lost
        self.notes.append(f"{len(ctis)} code(s) revoked")
        self._reaches([locker_id], "revocations", ctis, "the revocation")

    def _step_clear_fault(self, args: ClearFaultArgs) -> None:
        self._office().device_command(args.locker, "clear_fault", args.compartment)

        def cleared() -> bool:
            query = select(Compartment.state).where(
                Compartment.device_id == args.locker, Compartment.number == args.compartment
            )
            with self.site.db().connect() as conn:
                return conn.execute(query).scalar() == "free"

        _poll(cleared, f"compartment {args.compartment} of {args.locker} to be free again", 15)

    # -- several people at once ------------------------------------------------------------------
    def _step_together(self, args: TogetherArgs) -> None:
        errors: list[str] = []

        def one(step: Step) -> None:
            try:
                self._do(step)
            except (LinliError, OSError) as err:
                errors.append(f"{step.name}: {err}")

        threads = [threading.Thread(target=one, args=(step,)) for step in args.steps]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise StepFailed("; ".join(errors))

    def _step_wait_case(self, args: WaitCaseArgs) -> None:
        case_id, _phone, _locker = self._case(args.case)
        _poll(lambda: self._state_of(case_id) == args.state,
              f"case {args.case} to be {args.state} (it is {self._state_of(case_id)})",
              args.within_s)  # fmt: skip

    def _step_scan(self, args: ScanArgs) -> None:
        self.site.device(args.device).scanner.show(args.text)

    def _step_wait(self, args: WaitArgs) -> None:
        time.sleep(args.seconds)

    # -- faults ----------------------------------------------------------------------------------
    def _step_fault(self, args: FaultArgs) -> None:
        self._fault(args, on=True)

    def _step_repair(self, args: FaultArgs) -> None:
        self._fault(args, on=False)

    def _fault(self, args: FaultArgs, *, on: bool) -> None:
        site, kind = self.site, args.kind
        if kind in ("broker_restart", "broker_crash"):
            if on:
                took = self.site.restart_broker(args.off_s, crash=kind == "broker_crash")
                self.notes.append(f"devices back online {took:.1f} s after the start")
            return
        assert args.device is not None
        device = site.device(args.device)
        if kind == "network_cut":
            device.link.cut() if on else device.link.restore()
        elif kind == "network_blackhole":
            device.link.blackhole() if on else device.link.restore()
        elif kind == "power_loss":
            if on:
                device.process.kill()
                time.sleep(args.off_s)
            device.process.start()
            site.wait(lambda: site.is_online(device.id), f"{device.id} online after power", 60)
        elif isinstance(device, SimKiosk):
            self._kiosk_fault(device, args, on=on)
        elif isinstance(device, SimLocker):
            self._locker_fault(device, args, on=on)

    def _kiosk_fault(self, kiosk: SimKiosk, args: FaultArgs, *, on: bool) -> None:
        if args.kind == "paper_out" and args.printer == "a4":
            assert kiosk.queue is not None and self.site.cupsd is not None
            kiosk.queue.set_mode("paper-out" if on else "ok")
            if not on:  # paper loaded: the technician re-enables the stopped queue
                self.site.cupsd.enable(kiosk.queue.name)
        elif args.kind == "paper_out":
            kiosk.receipt.paper_out(on)
        elif args.kind == "printer_offline":
            kiosk.receipt.cover_open(on)
        elif args.kind == "reader_fault":
            if not on:
                kiosk.reader.clear_faults()
            elif args.read == "corrupt":
                kiosk.reader.corrupt_next(Command.READ_TEXT_PHOTO, times=5)
            elif args.read == "silent":
                kiosk.reader.silence_next(Command.READ_TEXT_PHOTO, times=5)
            elif args.read == "garbage":
                kiosk.reader.garbage_before_next(Command.READ_TEXT_PHOTO, times=5)
            else:
                kiosk.reader.fail_next(Command.READ_TEXT_PHOTO, 0x31, times=5)
        elif args.kind == "scanner_noise" and on:
            kiosk.scanner.send_garbage(32)
        elif on:
            raise StepFailed(f"{args.kind} is not a kiosk fault")

    def _locker_fault(self, locker: SimLocker, args: FaultArgs, *, on: bool) -> None:
        bus = locker.bus
        if args.kind == "jam":
            bus.jam(args.compartment, on)
        elif args.kind == "door_forced":
            bus.force_open(args.compartment) if on else bus.close_door(args.compartment)
        elif args.kind == "lock_board_mute":
            bus.mute(1, on)
        elif args.kind == "lock_board_noise" and on:
            bus.send_garbage(32)
        elif args.kind == "scanner_noise" and on:
            locker.scanner.send_garbage(32)
        elif on:
            raise StepFailed(f"{args.kind} is not a locker fault")

    # -- expectations ----------------------------------------------------------------------------
    def _check(self, expect: Expect) -> list[ExpectResult]:
        self._expect_deadline = time.monotonic() + expect.within_s
        results: list[ExpectResult] = []
        if expect.all_online:
            results.append(self._all_online())
        if expect.nothing_lost:
            results.extend(self._nothing_lost())
        if expect.cases:
            results.append(self._cases(expect.cases))
        for name, state in expect.case_states.items():
            results.append(self._case_state(name, state))
        for kiosk_id, printed in expect.printed.items():
            kiosk = self.site.kiosk(kiosk_id)
            found = {"pages": kiosk.pages_printed(), "receipts": kiosk.receipts_cut()}
            wanted = {k: v for k, v in printed.model_dump().items() if v is not None}
            ok = all(found[k] == v for k, v in wanted.items())
            results.append(ExpectResult(f"printed at {kiosk_id}", ok,
                                        f"wanted {wanted}, found {found}"))  # fmt: skip
        for alarm in expect.alarms:
            results.append(self._alarm(alarm.device, alarm.event))
        for locker, reasons in expect.refusals.items():
            results.append(self._refusals(locker, reasons))
        return results

    def _eventually(self, predicate: Callable[[], bool]) -> bool:
        """Whether ``predicate`` holds by the expectations' deadline (``expect.within_s``)."""
        left = self._expect_deadline - time.monotonic()
        if left <= 0:
            return predicate()
        with contextlib.suppress(SiteError):
            VirtualSite.wait(predicate, "", left)
            return True
        return False

    def _all_online(self) -> ExpectResult:
        ok = self._eventually(self.site.all_online)
        online = self.site.online()
        offline = [d.id for d in self.site.devices() if not online.get(d.id)]
        detail = "every device online" if ok else f"offline: {', '.join(offline)}"
        return ExpectResult("all devices online", ok, detail)

    def _outbox_left(self, device_id: str) -> int:
        with self._store(device_id) as c:
            return int(c.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def _outbox_empty(self, device_id: str) -> bool:
        return self._outbox_left(device_id) == 0

    def _server_seqs(self, device_id: str) -> list[int]:
        with self.site.db().connect() as conn:
            rows = conn.execute(select(Event.seq).where(Event.device_id == device_id))
            return sorted(int(s) for (s,) in rows)

    def _nothing_lost(self) -> list[ExpectResult]:
        results = []
        for device in self.site.devices():
            ok = self._eventually(functools.partial(self._outbox_empty, device.id))
            seqs = self._server_seqs(device.id)
            gaps = sorted(set(range(1, (seqs[-1] if seqs else 0) + 1)) - set(seqs))
            left = self._outbox_left(device.id)
            detail = f"{len(seqs)} events at the server, {left} left on the device"
            if gaps:
                detail += f", missing seq {gaps[:10]}"
            results.append(ExpectResult(f"nothing lost from {device.id}", ok and not gaps, detail))
        return results

    def _cases(self, wanted: dict[str, int]) -> ExpectResult:
        def holds() -> bool:
            found = self.site.cases_by_state()
            return all(found.get(state, 0) == n for state, n in wanted.items())

        ok = self._eventually(holds)
        return ExpectResult("cases by state", ok,
                            f"wanted {wanted}, found {self.site.cases_by_state()}")  # fmt: skip

    def _case_state(self, name: str, state: str) -> ExpectResult:
        if name not in self.cases:
            return ExpectResult(f"case {name}", False, "never deposited")
        case_id = self.cases[name][0].id
        ok = self._eventually(lambda: self._state_of(case_id) == state)
        return ExpectResult(f"case {name}", ok, f"wanted {state}, found {self._state_of(case_id)}")

    def _alarm(self, device_id: str, event: str) -> ExpectResult:
        def seen() -> bool:
            with self.site.db().connect() as conn:
                return conn.execute(
                    select(Event.id).where(Event.device_id == device_id, Event.type == event)
                ).first() is not None  # fmt: skip

        ok = self._eventually(seen)
        detail = "received by the server" if ok else "never reached the server"
        return ExpectResult(f"{event} from {device_id}", ok, detail)

    def _refusals(self, locker: str, wanted: list[str]) -> ExpectResult:
        def found() -> list[str]:
            with self.site.db().connect() as conn:
                rows = conn.execute(
                    select(AuditEntry.detail).where(
                        AuditEntry.action == "credential.refused", AuditEntry.device_id == locker
                    )
                )
                return sorted(str(d.get("reason")) for (d,) in rows)

        ok = self._eventually(lambda: found() == sorted(wanted))
        return ExpectResult(
            f"refusals at {locker}", ok, f"wanted {sorted(wanted)}, found {found()}"
        )


def run_scenario(
    site: VirtualSite, scenario: Scenario, on_step: Callable[[StepResult, int], None] | None = None
) -> Report:
    """Run ``scenario`` on the started ``site``."""
    if scenario.site.kiosks > len(site.kiosks) or scenario.site.lockers > len(site.lockers):
        raise SiteError(
            f"{scenario.name!r} needs {scenario.site.kiosks} kiosks and {scenario.site.lockers} "
            f"lockers; the site has {len(site.kiosks)} and {len(site.lockers)}"
        )
    return ScenarioRun(site, scenario, on_step).run()


def report_json(report: Report) -> str:
    return json.dumps(report.to_json(), ensure_ascii=False, indent=2)
