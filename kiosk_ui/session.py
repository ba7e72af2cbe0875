"""The kiosk session controller: a UI-free state machine driven by the card reader, touches, the
scanner and a clock (DESIGN.md section 3, docs/kiosk-session.md).

:class:`KioskSession` takes inputs as method calls (``card_placed``, ``card_lifted``, ``touch``,
``scan``, ``tick``) from any thread and answers with a :class:`~kiosk_ui.screens.Screen` that a UI
renders. Slow work (an online lookup, rendering a preview, printing) runs through an injected
runner (a worker thread by default) so the controller stays responsive; a result that arrives
after its session ended is dropped. Ending a session (idle timeout, card lifted, "结束", a new
card) drops every reference the controller holds to the identity, the household record, the
preview and the applications: personal data leaves memory and the screen together.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from device.clock import SYSTEM_CLOCK, Clock
from device.errors import DeviceUnavailableError, LinliError
from device.idcard.errors import CardReadError, SamFailureError, SelectFailedError
from device.idcard.identity import Identity
from device.privacy import mask_name
from kiosk_ui import screens as sc
from kiosk_ui.certificates import CertificateDataError, MissingFieldError
from kiosk_ui.certificates.fields import chinese_date
from kiosk_ui.online import Application, OfflineError, OnlineError, Progress
from kiosk_ui.printing import AuditError, Prepared, PrinterProblem, PrintOutcome
from kiosk_ui.screens import Action, Item, Screen, State
from kiosk_ui.services import KioskServices, StatusLine, china_date, household_summary

log = logging.getLogger(__name__)

T = TypeVar("T")
Job = Callable[[], None]
Runner = Callable[[Job], None]
"""Runs a job soon, in another thread (:class:`ThreadRunner`); tests may hold jobs back."""


class ThreadRunner:
    """Runs each job in a daemon thread of its own; :meth:`join` waits for those still running."""

    def __init__(self) -> None:
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def __call__(self, job: Job) -> None:
        thread = threading.Thread(target=job, name="kiosk-session-job", daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def join(self, timeout_s: float = 30.0) -> bool:
        """Wait for running jobs; False if one is still running after ``timeout_s``."""
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout_s)
        return not any(t.is_alive() for t in threads)


@dataclass(frozen=True)
class SessionSettings:
    """Timeouts of the session (seconds of the injected clock's monotonic time)."""

    idle_timeout_s: float = 60.0
    """Any state but idle: no input for this long ends the session."""
    result_timeout_s: float = 20.0
    """``DONE`` and ``REFUSED`` screens go back to idle sooner."""

    def __post_init__(self) -> None:
        if not (self.idle_timeout_s > 0 and self.result_timeout_s > 0):
            raise ValueError("session timeouts must be positive seconds")


class KioskSession:
    """One kiosk's session state machine; see the module docstring and docs/kiosk-session.md.

    ``on_change(screen)`` is called (outside the controller's lock, from whichever thread caused
    the change) after every change of screen; a Kivy UI schedules its redraw from it. Without
    it, a UI can poll :attr:`screen` and :attr:`revision` from its clock callback that calls
    :meth:`tick`.
    """

    def __init__(
        self,
        services: KioskServices,
        *,
        clock: Clock = SYSTEM_CLOCK,
        settings: SessionSettings | None = None,
        runner: Runner | None = None,
        on_change: Callable[[Screen], None] | None = None,
    ) -> None:
        self._services = services
        self._clock = clock
        self._settings = settings or SessionSettings()
        self._runner: Runner = runner if runner is not None else ThreadRunner()
        self._on_change = on_change
        self._lock = threading.RLock()
        self._to_start: list[Job] = []
        self._job: int | None = None
        self._jobs = 0
        self._revision = 0
        self._deadline: float | None = None
        self._screen = sc.idle()
        self._printing: tuple[str, str] | None = None  # (title, serial): not personal
        self._lookup = "none"  # "found", "online", "not_found", "offline": not personal
        self._origin = "certificate"  # where "back" leads from a preview
        # Personal data: every one of these is dropped by _wipe().
        self._identity: Identity | None = None
        self._household: Mapping[str, Any] | None = None
        self._prepared: Prepared | None = None
        self._applications: list[Application] | None = None
        self._offline_reason = ""

    # -- what the UI reads ------------------------------------------------------------------------
    @property
    def screen(self) -> Screen:
        return self._screen

    @property
    def state(self) -> State:
        return self._screen.state

    @property
    def revision(self) -> int:
        """Goes up with every change of screen."""
        return self._revision

    def seconds_left(self) -> int | None:
        """Whole seconds until the session times out (the countdown to show); None when idle."""
        deadline = self._deadline
        if deadline is None:
            return None
        return max(0, math.ceil(deadline - self._clock.monotonic()))

    # -- inputs -----------------------------------------------------------------------------------
    def card_placed(self, read: Identity | BaseException) -> None:
        """A card was read (an :class:`Identity`), or reading it failed (the reader's error)."""
        self._input(lambda: self._card(read))

    def card_lifted(self) -> None:
        """The card left the reader: the session ends (a print under way finishes anonymously)."""
        self._input(self._lifted)

    def touch(self, action: str, **args: str) -> bool:
        """The resident touched ``action`` of the current screen; False when the screen does not
        offer it (a stale touch after the screen changed), which is ignored."""
        return self._input(lambda: self._touch(action, args))

    def scan(self, text: str) -> bool:
        """The scanner read ``text``; False when ignored (work under way)."""
        return self._input(lambda: self._scan(text))

    def keep_alive(self) -> None:
        """The resident is still there (a touch that changes nothing: paging, typing): restart
        the idle timeout. Nothing happens when idle."""
        self._input(self._keep_alive)

    def listen(self, on_change: Callable[[Screen], None] | None) -> None:
        """Set the ``on_change`` callback (a UI built after the session)."""
        self._on_change = on_change

    def scan_refused(self) -> bool:
        """The scanner refused what it read (binary, oversized): shown like an unknown code."""
        return self._input(lambda: self._scan(""))

    def tick(self) -> None:
        """Call often (every 0.5 s): ends the session once the idle timeout has passed."""
        self._input(self._tick)

    def end(self) -> None:
        """End the session now (staff, shutdown)."""
        self._input(lambda: self._end("ended"))

    def close(self, timeout_s: float = 30.0) -> None:
        """End the session and wait for running jobs (with the default runner)."""
        self.end()
        if isinstance(self._runner, ThreadRunner):
            self._runner.join(timeout_s)

    # -- plumbing ---------------------------------------------------------------------------------
    def _input(self, fn: Callable[[], T]) -> T:
        with self._lock:
            before = self._revision
            result = fn()
            jobs, self._to_start = self._to_start, []
            screen, changed = self._screen, self._revision != before
        for job in jobs:
            self._runner(job)
        if changed:
            self._notify(screen)
        return result

    def _notify(self, screen: Screen) -> None:
        if self._on_change is None:
            return
        try:
            self._on_change(screen)
        except Exception:  # a UI bug must not break the controller
            log.exception("kiosk screen listener failed on %s", screen.id)

    def _show(self, screen: Screen) -> None:
        if screen.id != "preview":  # a preview not on the screen is not kept either
            self._prepared = None
        self._screen = screen
        self._revision += 1
        self._restart_timer()

    def _restart_timer(self) -> None:
        state = self._screen.state
        if state is State.IDLE:
            self._deadline = None
            return
        settings = self._settings
        quick = state in (State.DONE, State.REFUSED)
        timeout = settings.result_timeout_s if quick else settings.idle_timeout_s
        self._deadline = self._clock.monotonic() + timeout

    def _start_job(
        self, screen: Screen, work: Callable[[], T], done: Callable[[T | Exception], None]
    ) -> None:
        """Show ``screen`` and run ``work`` through the runner; ``done`` gets its result under the
        lock, unless the session (or the step) has moved on by then."""
        self._jobs += 1
        token = self._job = self._jobs
        self._show(screen)

        def run() -> None:
            result: T | Exception
            try:
                result = work()
            except Exception as err:  # noqa: BLE001 -- handed to done(), which shows and logs it
                result = err
            with self._lock:
                if self._job != token:
                    log.debug("kiosk job %d finished after its session moved on", token)
                    return
                self._job = None
                before = self._revision
                done(result)
                jobs, self._to_start = self._to_start, []
                screen, changed = self._screen, self._revision != before
            for job in jobs:
                self._runner(job)
            if changed:
                self._notify(screen)

        self._to_start.append(run)

    def _wipe(self, *, keep_print: bool = False) -> None:
        """Drop every reference to personal data; ``keep_print`` lets a running print report."""
        self._identity = None
        self._household = None
        self._prepared = None
        self._applications = None
        self._offline_reason = ""
        self._lookup = "none"
        if not keep_print:
            self._job = None
            self._printing = None

    def _end(self, reason: str) -> None:
        if self._screen.state is not State.IDLE:
            log.info("kiosk session ended (%s)", reason)
        self._wipe()
        self._show(sc.idle())

    def _keep_alive(self) -> None:
        if self._screen.state is not State.IDLE and not self._screen.busy:
            self._restart_timer()

    def _tick(self) -> None:
        if self._deadline is not None and self._clock.monotonic() >= self._deadline:
            self._end("timeout")

    # -- card -------------------------------------------------------------------------------------
    def _card(self, read: Identity | BaseException) -> None:
        if self._screen.state is not State.IDLE:
            self._end("new card")
        if isinstance(read, BaseException):
            self._show(_refusal(read))
            return
        if read.id_number_problems:
            log.info("card refused: %d ID number problems", len(read.id_number_problems))
            self._show(sc.id_invalid())
            return
        today = china_date(self._clock.time())
        if read.valid_to is not None and read.valid_to < today:
            log.info("card refused: expired")
            self._show(sc.card_expired(chinese_date(read.valid_to)))
            return
        self._identity = read
        log.info("kiosk session started for %s", read.masked())
        try:
            household = self._services.households.household_for(read)
        except LinliError as err:  # a record that does not open (AtRestError): not usable here
            log.warning("local record of %s unusable: %s", read.masked(), type(err).__name__)
            household = None
        if household is not None:
            self._household, self._lookup = household, "found"
            self._show(self._menu())
        elif not self._services.online():
            self._lookup, self._offline_reason = "offline", OfflineError.words
            self._show(self._menu())
        else:
            identity, residents = read, self._services.online_residents
            screen = sc.busy(State.CARD_READ, "正在联网查询您的档案")
            self._start_job(screen, lambda: residents.household_for(identity), self._looked_up)

    def _looked_up(self, result: Mapping[str, Any] | Exception | None) -> None:
        if isinstance(result, Exception):
            self._lookup = "offline"
            self._offline_reason = _online_words(result, "online resident lookup")
        elif result is None:
            self._lookup = "not_found"
        else:
            self._household, self._lookup = result, "online"
        self._show(self._menu())

    def _lifted(self) -> None:
        if self._identity is None:
            return  # refusals stay readable; idle and anonymous browsing are not about a card
        if self._printing is not None and self._job is not None:
            log.info("card lifted while printing: personal data dropped, the print goes on")
            self._wipe(keep_print=True)
            self._show(sc.printing(*self._printing))
            return
        self._end("card lifted")

    def _menu(self) -> Screen:
        identity = self._identity
        if identity is None:
            return sc.idle()
        greeting = mask_name(identity.name)
        if self._household is not None:
            return sc.menu(greeting, online_record=self._lookup == "online")
        if self._lookup == "not_found":
            return sc.resident_unknown(greeting)
        return sc.resident_unknown_offline(greeting, self._offline_reason or OfflineError.words)

    # -- touches ----------------------------------------------------------------------------------
    def _touch(self, action: str, args: Mapping[str, str]) -> bool:
        if not self._screen.allows(action, args):
            log.debug("touch %r ignored on screen %s", action, self._screen.id)
            return False
        handler = getattr(self, f"_on_{action}", None)
        if handler is None:
            log.error("screen %s offers %r but nothing handles it", self._screen.id, action)
            return False
        self._restart_timer()
        handler(**args)
        return True

    def _back_to_menu(self) -> Action:
        return sc.MENU if self._identity is not None else sc.HOME

    def _on_end(self) -> None:
        self._end("touch")

    def _on_menu(self) -> None:
        self._show(self._menu())

    def _on_guide(self) -> None:
        items = tuple(
            Item(e.title, e.summary, sc.action("guide_item", e.title, key=e.key))
            for e in self._services.guide.entries()
        )
        empty = "本机还没有收到办事指南，请到社区居委会咨询。"
        back = self._back_to_menu()
        self._show(sc.listing("guide", State.SERVICE, "办事指南", items, empty=empty, back=back))

    def _on_guide_item(self, key: str) -> None:
        entry = self._services.guide.entry(key)
        if entry is None:  # the catalogue changed meanwhile
            self._on_guide()
            return
        back = sc.action("guide", "返回办事指南")
        self._show(sc.detail("guide_item", State.SERVICE, entry.title, entry.body, back))

    def _on_notices(self) -> None:
        items = tuple(
            Item(e.title, e.summary, sc.action("notice_item", e.title, key=e.key))
            for e in self._services.notices.entries(self._clock.time())
        )
        empty, back = "目前没有社区公告。", self._back_to_menu()
        self._show(sc.listing("notices", State.SERVICE, "社区公告", items, empty=empty, back=back))

    def _on_notice_item(self, key: str) -> None:
        entry = self._services.notices.entry(key, self._clock.time())
        if entry is None:  # expired or withdrawn meanwhile
            self._on_notices()
            return
        back = sc.action("notices", "返回社区公告")
        self._show(sc.detail("notice_item", State.SERVICE, entry.title, entry.body, back))

    def _on_status(self) -> None:
        identity, household = self._identity, self._household
        if identity is None or household is None:
            self._show(self._menu())
            return
        today = china_date(self._clock.time())
        lines: list[StatusLine] = [
            self._services.subsidy.status(identity, household, today),
            household_summary(household),
        ]
        online = Item(
            "网上申请进度",
            "查看您在手机上提交的申请办到哪一步（需要联网）。",
            sc.action("applications", "查看网上申请"),
        )
        items = (*(Item(line.title, line.text) for line in lines), online)
        self._show(
            Screen("status", State.SERVICE, "办理状态", items=items, actions=(sc.MENU, sc.END))
        )

    def _on_progress(self) -> None:
        self._show(sc.progress_query(self._back_to_menu()))

    def _on_progress_submit(self, text: str) -> None:
        back = self._back_to_menu()
        number = "".join(text.split()).upper()
        if not _PROGRESS_NUMBER.fullmatch(number):
            error = "编号应为10位：A或C开头，后面是数字2-9和字母（没有I和O）。请核对后重新输入。"
            self._show(sc.progress_query(back, error))
            return
        if not self._services.online():
            self._show(sc.offline("查询办理进度"))
            return
        applications = self._services.applications
        screen = sc.busy(State.SERVICE, "正在查询办理进度")
        self._start_job(screen, lambda: applications.progress(number), self._progressed)

    def _progressed(self, result: Progress | Exception | None) -> None:
        back = self._back_to_menu()
        if isinstance(result, Exception):
            self._show(_online_failure(result, "查询办理进度", "查询办理进度"))
        elif result is None:
            error = "没有找到这个编号的申请或办件，请核对后重新输入。"
            self._show(sc.progress_query(back, error))
        else:
            updated = ""
            if result.updated_at is not None:
                updated = chinese_date(china_date(result.updated_at))
            self._show(
                sc.progress_result(result.number, result.title, result.status, updated, back)
            )

    def _on_certificate(self) -> None:
        if self._household is None:
            self._show(self._menu())
            return
        templates = [
            (t.name, t.title, t.description) for t in self._services.certificates.templates()
        ]
        self._show(sc.choose_template(templates))

    def _on_template(self, name: str) -> None:
        self._prepare("certificate", name, self._household)

    def _on_applications(self) -> None:
        identity = self._identity
        if identity is None:
            return
        if not self._services.online():
            self._show(sc.offline("打印和查询网上申请"))
            return
        applications = self._services.applications
        screen = sc.busy(State.SERVICE, "正在查询您的网上申请")
        self._start_job(screen, lambda: applications.list_for(identity), self._listed)

    def _listed(self, result: list[Application] | Exception) -> None:
        if isinstance(result, Exception):
            self._show(_online_failure(result, "打印和查询网上申请", "查询网上申请"))
            return
        self._applications = result
        self._show(self._applications_screen(result))

    def _applications_screen(self, applications: list[Application]) -> Screen:
        templates = {t.name for t in self._services.certificates.templates()}
        items = []
        for app in applications:
            when = f"，{chinese_date(china_date(app.submitted_at))}提交" if app.submitted_at else ""
            text = f"{app.status or '已提交'}{when}"
            printable = app.template is not None and app.template in templates
            if not printable:
                text += "（无需在本机打印）" if app.template is None else "（本机不能打印这类申请）"
            act = sc.action("application", f"打印{app.title}", id=app.id) if printable else None
            items.append(Item(app.title, text, act))
        empty = "没有找到您在网上提交的申请。"
        return sc.listing(
            "applications", State.SERVICE, "我的网上申请", tuple(items), empty=empty, back=sc.MENU
        )

    def _on_application(self, id: str) -> None:
        app = next((a for a in self._applications or [] if a.id == id), None)
        if app is None or app.template is None:
            self._show(self._menu())
            return
        record = {**(self._household or {}), **app.data}
        self._prepare("applications", app.template, record)

    def _prepare(self, origin: str, template: str, record: Mapping[str, Any] | None) -> None:
        identity = self._identity
        if identity is None or record is None:
            self._show(self._menu())
            return
        self._origin = origin
        certificates = self._services.certificates
        title = certificates.title_of(template)
        screen = sc.busy(State.SERVICE, f"正在生成{title}预览")
        self._start_job(
            screen,
            lambda: certificates.prepare(identity, record, template),
            lambda result: self._show_prepared(title, result),
        )

    def _show_prepared(self, title: str, result: Prepared | Exception) -> None:
        if isinstance(result, MissingFieldError):
            log.info(
                "certificate %s refused: %d fields missing", result.template, len(result.missing)
            )
            self._show(sc.record_incomplete(title, [_label(m) for m in result.missing]))
        elif isinstance(result, Exception):
            kind = "data" if isinstance(result, CertificateDataError) else type(result).__name__
            log.warning("certificate %s not produced (%s)", title, kind)
            self._show(sc.certificate_failed(title))
        else:
            self._prepared = result
            self._show(sc.preview(result.title, result.serial, result.preview_png))

    def _on_back(self) -> None:
        self._prepared = None
        if self._origin == "applications" and self._applications is not None:
            self._show(self._applications_screen(self._applications))
        else:
            self._on_certificate()

    def _on_confirm(self) -> None:
        identity, prepared = self._identity, self._prepared
        if identity is None or prepared is None:
            self._show(self._menu())
            return
        self._prepared = None  # the job holds it until printed; the preview leaves the screen
        self._printing = (prepared.title, prepared.serial)
        certificates = self._services.certificates
        self._start_job(
            sc.printing(prepared.title, prepared.serial),
            lambda: certificates.print(identity, prepared),
            self._printed,
        )

    def _printed(self, result: PrintOutcome | Exception) -> None:
        title, serial = self._printing or ("证明", "")
        self._printing = None
        identified = self._identity is not None
        if isinstance(result, Exception):
            if not isinstance(result, AuditError):
                log.error("certificate %s print job failed: %s", serial, type(result).__name__)
            lines = [f"本机出现故障，{title}没有打印。请到社区居委会人工窗口办理。"]
            self._show(sc.printer_problem(lines, identified=identified))
        elif result.problems:
            lines = [_problem_line(p, result) for p in result.problems]
            self._show(sc.printer_problem(lines, identified=identified))
        else:
            self._show(sc.printed(title, serial, identified=identified))

    # -- scanner ----------------------------------------------------------------------------------
    def _scan(self, text: str) -> bool:
        if self._screen.busy:
            return False
        checker, back = self._services.checker, self._back_to_menu()
        text = text.strip()
        if checker is None or not text.startswith(checker.PREFIX):
            screen = sc.detail(
                "scan_unknown",
                State.SERVICE,
                "无法识别这个二维码",
                "本机只能识别社区证明上的核验二维码。",
                back,
            )
        else:
            title, body = checker.check(text, self._clock.time())
            screen = sc.detail("certificate_check", State.SERVICE, title, body, back)
        self._show(screen)
        return True


def _online_words(err: Exception, what: str) -> str:
    """What the screen says about a failed online question; a failure that is not an
    :class:`OnlineError` is a bug, logged (type only: messages may carry data)."""
    if isinstance(err, OnlineError):
        return err.words
    log.error("%s failed: %s", what, type(err).__name__)
    return OnlineError.words


def _online_failure(err: Exception, offline_what: str, problem_what: str) -> Screen:
    """``offline`` when the kiosk could not ask, else ``server_problem`` in plain words."""
    if isinstance(err, OfflineError):
        return sc.offline(offline_what)
    return sc.server_problem(problem_what, _online_words(err, problem_what))


_PROGRESS_NUMBER = re.compile(r"[AC][2-9A-HJ-NP-Z]{9}")


def _refusal(err: BaseException) -> Screen:
    """The screen for a failed card read (a :class:`~device.idcard.errors.SamStatusError`,
    ``FrameError``, ``DeviceTimeoutError``...)."""
    if isinstance(err, CardReadError | SelectFailedError):
        log.info("card read interrupted (%s)", type(err).__name__)
        return sc.card_read_interrupted()
    if isinstance(err, SamFailureError | DeviceUnavailableError):
        log.warning("card reader fault: %s", type(err).__name__)
        return sc.reader_fault()
    log.info("card unreadable (%s)", type(err).__name__)
    return sc.card_unreadable()


def _label(missing: str) -> str:
    """``"现居住地址 [household.address]"`` -> ``"现居住地址"`` (the label residents understand)."""
    return missing.split(" [", 1)[0]


def _problem_line(problem: PrinterProblem, outcome: PrintOutcome) -> str:
    title, serial = outcome.title, outcome.serial
    if problem.printer == "receipt":
        return f"{problem.words}。回执已保存，稍后补打；{title}本身不受影响。"
    if not outcome.handed_over and problem.job is None:
        return f"{problem.words}，{title}没有打印。请稍后再试，或到社区居委会人工窗口办理。"
    if not outcome.handed_over:
        return (
            f"{problem.words}，{title}还没有打印。证明已保存在本机（编号 {serial}），"
            "工作人员处理好打印机后会补打，请稍后到社区居委会领取。"
        )
    return (
        f"{problem.words}，{title}可能还没有打印出来。打印任务已保存（编号 {serial}），"
        "打印机恢复后会继续打印；如果没有取到，请到社区居委会领取。"
    )
