"""The Kivy kiosk screen under Xvfb: whole sessions driven by touches on the drawn buttons and keys,
card and printer events on simulated hardware, with a screenshot of every screen.

What a resident would notice: the words drawn (read back from the widgets), what the printers
produce, and that nothing of them stays on the screen after the session.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from PIL import Image

from device.privacy import mask_name
from kiosk_ui.certificates.fonts import find_cjk_font
from kiosk_ui.daemon import Indicators
from kiosk_ui.screens import State
from tests.kiosk_session.conftest import (
    CERTIFIED,
    RESIDENT,
    STRANGER,
    HeldJobs,
    Kiosk,
    MakeKiosk,
)
from tests.kiosk_session.test_session import BAD_INPUT

from .conftest import HEIGHT, WIDTH, Ui

pytestmark = pytest.mark.timeout(120)


class Screenful:
    """A :class:`KioskView` on the test window for one kiosk, with helpers to read and touch it."""

    def __init__(self, ui: Ui, kiosk: Kiosk, *, elderly: bool = False) -> None:
        from kiosk_ui.app import KioskView

        self.ui = ui
        self.kiosk = kiosk
        self.reader_ok = True
        self.view = KioskView(
            kiosk.session,
            lambda: Indicators(online=kiosk.online[0], reader_ok=self.reader_ok),
            font_name=str(find_cjk_font()),
            elderly=elderly,
        )
        kiosk.session.listen(self.view.schedule_show)
        ui.show(self.view)

    def words(self) -> list[str]:
        """Every text drawn: labels and buttons."""
        from kivy.uix.label import Label

        return [w.text for w in self.view.walk() if isinstance(w, Label) and w.text]

    def drawn(self) -> str:
        return "\n".join(self.words())

    def button(self, text: str) -> Any:
        from kivy.uix.button import Button

        found = [w for w in self.view.walk() if isinstance(w, Button) and text in w.text]
        assert found, f"no button {text!r} on screen {self.kiosk.session.screen.id}: {self.words()}"
        return found[0]

    def tap(self, text: str) -> None:
        self.ui.tap(self.button(text))

    def until(self, screen_id: str, timeout_s: float = 20.0) -> None:
        """Pump frames until the session shows ``screen_id`` and the view has drawn it."""
        session = self.kiosk.session
        shown = self.ui.pump(
            lambda: session.screen.id == screen_id and self.view._screen is session.screen,
            timeout_s,
        )
        assert shown, f"screen {screen_id} never drawn (session at {session.screen.id})"
        self.ui.pump(timeout_s=0.05)

    def shot(self, name: str) -> None:
        path = self.ui.shot(self.view, name)
        with Image.open(path) as image:
            assert image.size == (WIDTH, HEIGHT)
            assert len(image.convert("L").getcolors(256) or []) > 8, "a blank screenshot"

    def type_keys(self, text: str | list[str]) -> None:
        """Touch each key of the on-screen keyboard (backspace is "删除")."""
        keyboard = self.view.keyboard
        assert keyboard is not None, "no on-screen keyboard on this screen"
        for key in text:
            self.ui.tap(_Key(keyboard, key))


class _Key:
    """Where key ``char`` of a VKeyboard is drawn, as a tappable widget-like thing."""

    def __init__(self, keyboard: Any, char: str) -> None:
        layout = keyboard.available_layouts[keyboard.layout]
        for line in range(1, layout["rows"] + 1):
            keys = layout[f"normal_{line}"]
            for index, key in enumerate(keys):
                if key[0] == char:
                    (x, y), (w, h) = keyboard.layout_geometry[f"LINE_{line}"][index]
                    self._keyboard = keyboard
                    self.center = (x + w / 2, y + h / 2)
                    return
        raise AssertionError(f"no key {char!r} on the keyboard")

    def to_window(self, x: float, y: float) -> tuple[float, float]:
        # A VKeyboard is a Scatter: its keys are in its own coordinates.
        keyboard = self._keyboard
        return tuple(keyboard.to_window(*keyboard.to_parent(x, y)))  # type: ignore[return-value]


@pytest.fixture
def screenful(ui: Ui, make_kiosk: MakeKiosk) -> Iterator[Callable[..., Screenful]]:
    made: list[Screenful] = []

    def make(*, elderly: bool = False, **kiosk_args: Any) -> Screenful:
        screen = Screenful(ui, make_kiosk(**kiosk_args), elderly=elderly)
        made.append(screen)
        return screen

    yield make
    for screen in made:
        screen.kiosk.session.listen(None)
    ui.pump(timeout_s=0.05)


def test_whole_session_by_touch_prints_and_leaves_nothing_on_screen(
    screenful: Callable[..., Screenful],
) -> None:
    s = screenful()
    kiosk = s.kiosk
    assert "欢迎使用社区事务一体机" in s.drawn() and "● 未联网" in s.drawn()
    s.shot("01-idle")

    kiosk.place(RESIDENT)
    s.until("menu")
    greeting = mask_name(RESIDENT.name)
    assert f"{greeting}，您好" in s.words() and RESIDENT.name not in s.drawn()
    s.shot("02-menu")

    s.tap("打印证明")
    s.until("choose_template")
    s.shot("03-choose-template")
    s.tap("居住证明")
    s.until("preview")
    from kivy.uix.image import Image as KivyImage

    (preview,) = [w for w in s.view.walk() if isinstance(w, KivyImage)]
    assert preview.texture is not None and preview.texture.width == 400
    s.shot("04-preview")

    s.tap("确认打印")
    s.until("printed")
    s.shot("05-printed")
    assert len(kiosk.queue.wait_for_output(1)) == 1
    assert len(kiosk.receipt_model.cut_pages) == 1
    assert len(kiosk.events("certificate.issued")) == 1

    s.tap("结束")
    s.until("idle")
    drawn = s.drawn()
    assert greeting not in drawn and "居住证明" not in drawn


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_screens_are_drawn_and_print_nothing(
    screenful: Callable[..., Screenful], case: str
) -> None:
    drive, screen_id, words = BAD_INPUT[case]
    s = screenful()
    drive(s.kiosk)
    s.until(screen_id)
    assert any(words in w for w in s.words()), s.words()
    s.shot(f"error-{screen_id}")
    if s.kiosk.session.state is State.REFUSED:
        s.tap("知道了")
        s.until("idle")
    s.kiosk.join()
    assert s.kiosk.nothing_printed()


def test_printer_out_of_paper_is_explained(screenful: Callable[..., Screenful]) -> None:
    s = screenful()
    s.kiosk.queue.set_mode("paper-out")
    s.kiosk.place(RESIDENT)
    s.until("menu")
    s.tap("打印证明")
    s.until("choose_template")
    s.tap("居住证明")
    s.until("preview")
    s.tap("确认打印")
    s.until("printer_problem")
    assert any("A4打印机缺纸" in w for w in s.words())
    s.shot("error-printer-problem")
    assert len(s.kiosk.desk.a4.pending()) == 1  # the job is kept


def test_elderly_mode_larger_text_and_fewer_choices(screenful: Callable[..., Screenful]) -> None:
    s = screenful()
    s.kiosk.place(CERTIFIED)
    s.until("menu")
    standard_size = s.button("打印证明").font_size
    choices = ["打印证明", "查询办理状态", "打印网上申请", "查询办理进度", "办事指南", "社区公告"]
    assert all(any(c == w for w in s.words()) for c in choices)

    s.tap("大字模式")
    s.ui.pump(timeout_s=0.1)
    assert s.button("打印证明").font_size > standard_size
    shown = [c for c in choices if c in s.words()]
    assert shown == choices[:3]  # three per page
    assert "第1页，共2页" in s.words()
    s.shot("06-menu-elderly")
    s.tap("下一页")
    assert [c for c in choices if c in s.words()] == choices[3:]
    s.tap("社区公告")
    s.until("notices")
    s.tap("标准字体")
    assert s.button("结束").font_size == standard_size


def test_countdown_shows_then_the_session_ends(screenful: Callable[..., Screenful]) -> None:
    s = screenful()
    s.kiosk.place(RESIDENT)
    s.until("menu")
    s.view.refresh_status()
    assert s.view.countdown.text == ""
    s.kiosk.clock.advance(50)  # 10 s left of the 60 s idle timeout
    s.view.refresh_status()
    assert s.view.countdown.text == "10秒后自动退出"
    s.shot("07-countdown")
    s.tap("社区公告")  # a touch restarts the timeout
    s.until("notices")
    s.view.refresh_status()
    assert s.view.countdown.text == ""
    s.kiosk.clock.advance(61)
    s.view.refresh_status()
    s.until("idle")
    assert mask_name(RESIDENT.name) not in s.drawn()


def test_status_bar_shows_link_and_reader(screenful: Callable[..., Screenful]) -> None:
    s = screenful()
    s.kiosk.online[0] = True
    s.reader_ok = False
    s.view.refresh_status()
    assert s.view.network.text == "● 已联网"
    assert s.view.reader.text == "读卡器故障，请联系工作人员"
    s.shot("08-reader-fault")


class _ProgressServer:
    """Answers ``applications.status`` for one number.

    A stand-in for the server's rpc: this test is about typing on the on-screen keyboard; the
    method itself is tested against the real server and Mosquitto in tests/applications.
    """

    def call(self, method: str, params: Any = None, *, timeout_s: float = 4.0) -> Any:
        from device.sync.rpc import RpcRemoteError

        assert method == "applications.status"
        if params["number"] != "A7K2M9Q4TX":
            raise RpcRemoteError(method, "not-found", "no such number")
        return {"number": "A7K2M9Q4TX", "title": "生活困难证明申请", "status": "已受理",
                "updated_at": 1773626400.0}  # fmt: skip


def test_progress_query_typed_on_the_on_screen_keyboard(
    screenful: Callable[..., Screenful],
) -> None:
    s = screenful(rpc=_ProgressServer(), online=True)
    s.tap("查询办理进度")
    s.until("progress_query")
    assert s.view.keyboard is not None
    s.shot("09-keyboard")

    s.type_keys("A7K2")
    assert s.view.field is not None and s.view.field.text == "A7K2"
    s.tap("查询")  # too short: the screen says what a number looks like
    s.ui.pump(lambda: bool(s.kiosk.session.screen.entry and s.kiosk.session.screen.entry.error))
    s.until("progress_query")
    assert any("编号应为10位" in w for w in s.words())
    assert s.view.field.text == "A7K2"  # kept to correct
    s.shot("error-progress-number")

    s.type_keys("M9Q4TZ")
    s.type_keys(["删除", "X"])  # a slip corrected with backspace
    assert s.view.field.text == "A7K2M9Q4TX"
    s.type_keys("Y")  # the field is full: an eleventh key does nothing
    assert s.view.field.text == "A7K2M9Q4TX"
    s.tap("查询")
    s.until("progress_result")
    drawn = s.drawn()
    assert "生活困难证明申请" in drawn and "已受理" in drawn and "A7K2M9Q4TX" in drawn
    s.shot("10-progress-result")

    s.tap("查询其他编号")
    s.until("progress_query")
    assert s.view.field.text == "例如 A7K2M9Q4TX"  # empty field, hint shown
    s.type_keys("C23456789Z")
    s.tap("查询")
    s.until("progress_query")
    assert any("没有找到这个编号" in w for w in s.words())


def test_progress_query_offline_says_so(screenful: Callable[..., Screenful]) -> None:
    s = screenful()
    s.tap("查询办理进度")
    s.until("progress_query")
    s.type_keys("A7K2M9Q4TX")
    s.tap("查询")
    s.until("offline")
    assert any("查询办理进度需要联网" in w for w in s.words())


class _Server:
    """Answers the kiosk's online questions: no record for anyone, two applications, and a
    failing ``applications.status``.

    A stand-in for the server's rpc so that every screen can be reached in one test; the methods
    themselves run against the real server and Mosquitto in tests/records and tests/applications.
    """

    def call(self, method: str, params: Any = None, *, timeout_s: float = 4.0) -> Any:
        from device.sync.rpc import RpcRemoteError

        if method == "residents.lookup":
            raise RpcRemoteError(method, "not-found", "no such resident")
        if method == "applications.list":
            return {"applications": [
                {"id": "A7K2M9Q4TX", "title": "生活困难证明申请", "status": "已办结",
                 "submitted_at": 1773600000.0, "template": "difficulty",
                 "data": {"difficulty": {"monthly_income": 820, "reason": "家庭成员患重病"}}},
                {"id": "A8K2M9Q4TX", "title": "居住证办理预约", "status": "已提交",
                 "submitted_at": 1773500000.0, "template": None, "data": {}},
            ]}  # fmt: skip
        raise RpcRemoteError(method, "internal", "database down")


SCREENS = {
    "idle", "working", "menu", "resident_unknown", "resident_unknown_offline", "offline",
    "server_problem", "choose_template", "record_incomplete", "preview", "printing", "printed",
    "printer_problem", "status", "applications", "guide", "guide_item", "notices", "notice_item",
    "certificate_check", "scan_unknown", "card_read_interrupted", "card_unreadable",
    "reader_fault", "id_invalid", "card_expired", "progress_query", "progress_result",
}  # fmt: skip
"""Every screen id of docs/kiosk-session.md but ``certificate_failed`` (a broken template)."""


def test_every_screen_is_drawn(screenful: Callable[..., Screenful]) -> None:
    """Walks to each screen the other tests do not and keeps its screenshot; together with them
    every screen of the kiosk is drawn and kept as an artifact."""
    from device.errors import DeviceUnavailableError

    drawn: set[str] = set()
    s = screenful(rpc=_Server(), online=True)
    session, kiosk = s.kiosk.session, s.kiosk

    def seen(screen_id: str) -> None:
        s.until(screen_id)
        assert session.screen.title in s.words()
        s.shot(f"screen-{screen_id}")
        drawn.add(screen_id)

    seen("idle")
    for open_, item in (("办事指南", "居住证明开具"), ("社区公告", "幸福社区停水通知")):
        s.tap(open_)
        seen("guide" if open_ == "办事指南" else "notices")
        s.tap(item)
        seen("guide_item" if open_ == "办事指南" else "notice_item")
        s.tap("结束")
        s.until("idle")
    session.scan("https://example.com/")
    seen("scan_unknown")
    prepared = kiosk.services.certificates.prepare(
        RESIDENT, {"address": "x", "residence_since": "2015-06-01"}, "residence"
    )
    session.scan(prepared.certificate.qr_text)
    seen("certificate_check")
    s.tap("返回首页")
    session.card_placed(DeviceUnavailableError("reader gone"))
    seen("reader_fault")
    s.tap("知道了")

    kiosk.place(STRANGER)  # not cached; the server has no record either
    seen("resident_unknown")
    s.tap("打印网上申请")
    seen("applications")
    assert any("居住证办理预约" in w and "无需在本机打印" in w for w in s.words())
    s.tap("结束")
    s.until("idle")

    kiosk.place(CERTIFIED)
    seen("menu")
    s.tap("查询办理状态")
    seen("status")
    s.tap("返回业务菜单")
    s.tap("查询办理进度")
    seen("progress_query")
    s.type_keys("A7K2M9Q4TX")
    s.tap("查询")
    seen("server_problem")
    kiosk.online[0] = False
    s.tap("返回业务菜单")
    s.tap("打印网上申请")
    seen("offline")
    s.tap("结束")
    s.until("idle")
    kiosk.place(STRANGER)
    seen("resident_unknown_offline")
    s.tap("结束")

    # Busy screens, with the jobs held until the test lets them run.
    held = HeldJobs()
    h = screenful(runner=held)
    h.kiosk.place(RESIDENT)
    h.until("menu")
    h.tap("打印证明")
    h.until("choose_template")
    h.tap("居住证明")
    h.until("working")
    h.shot("screen-working")
    held.run_all()
    h.until("preview")
    h.tap("确认打印")
    h.until("printing")
    h.shot("screen-printing")
    held.run_all()
    h.until("printed")
    drawn |= {"working", "printing"}

    done_elsewhere = {"choose_template", "record_incomplete", "preview", "printed",
                      "printer_problem", "card_read_interrupted", "card_unreadable",
                      "id_invalid", "card_expired", "progress_result"}  # fmt: skip
    assert drawn | done_elsewhere == SCREENS
