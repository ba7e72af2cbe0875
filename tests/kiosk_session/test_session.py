"""Whole kiosk sessions driven by card events, touches and a fake clock, on simulated hardware.

What a resident would notice: what the screen says, what comes out of the A4 printer and the
receipt printer, what the server will receive (the outbox), and that the kiosk forgets them.
"""

from __future__ import annotations

import gc
import io
import logging
import weakref
from collections.abc import Callable

import pytest
from PIL import Image

from device.idcard.codec import Command
from device.idcard.identity import Identity
from device.privacy import mask_name
from kiosk_ui.screens import Screen, State
from tests.certificates.conftest import household_record, pdf_text

from .conftest import (
    BAD_ID,
    CERTIFIED,
    DUE,
    EXPIRED,
    IDLE_S,
    INCOMPLETE,
    RESIDENT,
    RESULT_S,
    STRANGER,
    UNKNOWN_SUBSIDY,
    HeldJobs,
    Kiosk,
    MakeKiosk,
    assert_wiped,
    personal_reachable,
)


def _to_preview(kiosk: Kiosk, template: str = "residence") -> Screen:
    kiosk.place(RESIDENT)
    assert kiosk.session.screen.id == "menu"
    assert kiosk.session.touch("certificate")
    assert kiosk.session.touch("template", name=template)
    if isinstance(kiosk.runner, HeldJobs):
        kiosk.runner.run_all()
    return kiosk.wait("preview")


def test_happy_path_card_to_printed_certificate(
    make_kiosk: MakeKiosk, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    kiosk = make_kiosk(on_change=lambda screen: seen.append(screen.id))
    assert kiosk.session.state is State.IDLE and kiosk.session.seconds_left() is None

    kiosk.place(RESIDENT)
    menu = kiosk.session.screen
    assert menu.state is State.IDENTIFIED and menu.id == "menu"
    assert mask_name(RESIDENT.name) in menu.title and RESIDENT.name not in menu.title
    assert kiosk.session.seconds_left() == IDLE_S

    assert kiosk.session.touch("certificate")
    choose = kiosk.session.screen
    assert choose.state is State.SERVICE
    assert [i.title for i in choose.items] == [
        t.title for t in kiosk.services.certificates.templates()
    ]
    assert kiosk.session.touch("template", name="residence")
    preview = kiosk.wait("preview")
    assert preview.state is State.PREVIEW and "居住证明" in preview.title
    assert preview.image is not None
    assert Image.open(io.BytesIO(preview.image)).width == 400
    serial = preview.body.rsplit("：", 1)[1]

    assert kiosk.session.touch("confirm")
    assert kiosk.session.screen.state is State.PRINTING
    assert not kiosk.session.touch("confirm")  # no second print of the same preview
    done = kiosk.wait("printed")
    assert done.state is State.DONE and serial in done.body

    (out,) = kiosk.queue.wait_for_output(1)
    text = pdf_text(out.read_bytes())
    assert RESIDENT.name in text and serial in text  # the page printed is the page previewed
    (receipt,) = kiosk.receipt_model.cut_pages
    assert any(serial in line for line in receipt.lines)
    (issued,) = kiosk.events("certificate.issued")
    assert issued.personal and issued.data["serial"] == serial
    assert issued.data["id_number"] == RESIDENT.id_number and issued.data["template"] == "residence"
    assert kiosk.events("kiosk.printer_problem") == []
    assert kiosk.desk.a4.pending() == []

    assert kiosk.session.touch("end")
    assert_wiped(kiosk, RESIDENT)
    assert seen[:3] == ["menu", "choose_template", "working"] and seen[-1] == "idle"
    logged = caplog.text
    assert RESIDENT.name not in logged and RESIDENT.id_number not in logged
    assert household_record()["address"] not in logged


def test_countdown_and_idle_timeout(make_kiosk: MakeKiosk) -> None:
    kiosk = make_kiosk()
    kiosk.place(RESIDENT)
    kiosk.clock.advance(IDLE_S - 10.5)
    kiosk.session.tick()
    assert kiosk.session.seconds_left() == 11 and kiosk.session.state is State.IDENTIFIED
    assert kiosk.session.touch("status")  # a touch restarts the countdown
    assert kiosk.session.seconds_left() == IDLE_S
    kiosk.clock.advance(IDLE_S - 0.1)
    kiosk.session.tick()
    assert kiosk.session.screen.state is State.SERVICE
    kiosk.clock.advance(0.1)
    kiosk.session.tick()
    assert_wiped(kiosk, RESIDENT)


# -- the idle timeout from every state ----------------------
def _card_read(kiosk: Kiosk) -> None:
    kiosk.online[0] = True  # a stranger with the kiosk online: the lookup job is held back
    kiosk.place(STRANGER)


def _identified(kiosk: Kiosk) -> None:
    kiosk.place(RESIDENT)


def _service(kiosk: Kiosk) -> None:
    kiosk.place(RESIDENT)
    kiosk.session.touch("status")


def _anonymous_service(kiosk: Kiosk) -> None:
    kiosk.session.touch("guide")


def _preview(kiosk: Kiosk) -> None:
    _to_preview(kiosk)


def _printing(kiosk: Kiosk) -> None:
    _to_preview(kiosk)
    kiosk.session.touch("confirm")


def _done(kiosk: Kiosk) -> None:
    _printing(kiosk)
    assert isinstance(kiosk.runner, HeldJobs)
    kiosk.runner.run_all()


def _refused(kiosk: Kiosk) -> None:
    kiosk.place(EXPIRED)


STATES: dict[str, tuple[Callable[[Kiosk], None], State, float, Identity]] = {
    "card_read": (_card_read, State.CARD_READ, IDLE_S, STRANGER),
    "identified": (_identified, State.IDENTIFIED, IDLE_S, RESIDENT),
    "service": (_service, State.SERVICE, IDLE_S, RESIDENT),
    "anonymous_service": (_anonymous_service, State.SERVICE, IDLE_S, RESIDENT),
    "preview": (_preview, State.PREVIEW, IDLE_S, RESIDENT),
    "printing": (_printing, State.PRINTING, IDLE_S, RESIDENT),
    "done": (_done, State.DONE, RESULT_S, RESIDENT),
    "refused": (_refused, State.REFUSED, RESULT_S, EXPIRED),
}


@pytest.mark.parametrize("name", list(STATES))
def test_idle_timeout_from_every_state_wipes_personal_data(
    make_kiosk: MakeKiosk, name: str
) -> None:
    drive, state, timeout, card = STATES[name]
    kiosk = make_kiosk(runner=HeldJobs())
    drive(kiosk)
    assert kiosk.session.state is state
    assert kiosk.session.seconds_left() == timeout

    kiosk.clock.advance(timeout - 1)
    kiosk.session.tick()
    assert kiosk.session.state is state
    kiosk.clock.advance(1)
    kiosk.session.tick()

    assert kiosk.session.state is State.IDLE
    kiosk.join()  # a job held back finishes now: its result must not bring the session back
    assert_wiped(kiosk, card)
    if name == "printing":  # the resident walked away: the certificate still printed, audited
        assert len(kiosk.queue.wait_for_output(1)) == 1
        assert len(kiosk.events("certificate.issued")) == 1


# -- the card leaves the reader -----------------------------
def test_card_lifted_at_preview_forgets_everything(make_kiosk: MakeKiosk) -> None:
    kiosk = make_kiosk()
    kiosk.card_slot.insert(RESIDENT)
    identity = kiosk.reader.read_card()
    assert identity is not None
    gone = weakref.ref(identity)
    kiosk.session.card_placed(identity)
    del identity
    kiosk.session.touch("certificate")
    kiosk.session.touch("template", name="residence")
    kiosk.wait("preview")

    kiosk.lift()

    assert_wiped(kiosk, RESIDENT)
    kiosk.join()
    gc.collect()
    assert gone() is None  # not one reference to the card's identity is left anywhere
    assert kiosk.nothing_printed()


def test_card_lifted_while_printing_finishes_anonymously(make_kiosk: MakeKiosk) -> None:
    kiosk = make_kiosk(runner=HeldJobs())
    _printing(kiosk)

    kiosk.lift()
    assert kiosk.session.state is State.PRINTING
    assert personal_reachable(kiosk.session._screen, RESIDENT, stop=()) == []
    assert kiosk.session._identity is None and kiosk.session._household is None
    kiosk.join()  # the print job ends

    done = kiosk.session.screen
    assert done.id == "printed" and [a.label for a in done.actions] == ["返回首页"]
    assert len(kiosk.queue.wait_for_output(1)) == 1
    assert personal_reachable(kiosk.session, RESIDENT, stop=(kiosk.services,)) == []
    kiosk.clock.advance(RESULT_S)
    kiosk.session.tick()
    assert_wiped(kiosk, RESIDENT)


# -- bad input: its own screen, nothing printed -------------
def _mid_read(kiosk: Kiosk) -> None:
    kiosk.card_slot.lift_during_next_read()
    kiosk.place(RESIDENT)


def _unreadable(kiosk: Kiosk) -> None:
    kiosk.card_slot.fail_next(Command.READ_TEXT_PHOTO, 0x40)  # not a resident ID card
    kiosk.place(RESIDENT)


def _bad_check_digit(kiosk: Kiosk) -> None:
    kiosk.place(BAD_ID)


def _expired(kiosk: Kiosk) -> None:
    kiosk.place(EXPIRED)


def _missing_fields(kiosk: Kiosk) -> None:
    kiosk.place(INCOMPLETE)
    kiosk.session.touch("certificate")
    kiosk.session.touch("template", name="residence")
    kiosk.wait("record_incomplete")


BAD_INPUT: dict[str, tuple[Callable[[Kiosk], None], str, str]] = {
    "lifted mid-read": (_mid_read, "card_read_interrupted", "读卡时身份证被移开"),
    "unreadable card": (_unreadable, "card_unreadable", "这张卡读不出来"),
    "bad check digit": (_bad_check_digit, "id_invalid", "号码没有通过校验"),
    "expired card": (_expired, "card_expired", "有效期到2018年"),
    "record missing fields": (_missing_fields, "record_incomplete", "现居住地址"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_has_its_own_screen_and_prints_nothing(make_kiosk: MakeKiosk, case: str) -> None:
    drive, screen_id, words = BAD_INPUT[case]
    kiosk = make_kiosk()
    drive(kiosk)

    screen = kiosk.session.screen
    assert screen.id == screen_id
    assert words in screen.body
    assert not kiosk.session.touch("confirm")
    kiosk.join()
    assert kiosk.nothing_printed()
    if screen.state is State.REFUSED:  # a refused card leaves nothing of itself behind
        assert kiosk.session._identity is None
        assert [a.id for a in screen.actions] == ["end"]


def test_each_bad_input_screen_is_distinct() -> None:
    assert len({screen_id for _, screen_id, _ in BAD_INPUT.values()}) == len(BAD_INPUT)


def test_record_incomplete_lets_the_resident_choose_another(make_kiosk: MakeKiosk) -> None:
    kiosk = make_kiosk()
    _missing_fields(kiosk)
    assert kiosk.session.touch("back")
    assert kiosk.session.screen.id == "choose_template"


# -- printers in trouble ------------------------------------
def test_a4_paper_out_is_shown_kept_and_reported(make_kiosk: MakeKiosk) -> None:
    kiosk = make_kiosk()
    kiosk.queue.set_mode("paper-out")
    serial = _to_preview(kiosk).body.rsplit("：", 1)[1]

    kiosk.session.touch("confirm")
    screen = kiosk.wait("printer_problem")

    assert screen.state is State.DONE
    assert "A4打印机缺纸" in screen.body and serial in screen.body
    assert "已通知工作人员" in screen.body
    (kept,) = kiosk.desk.a4.pending()
    (problem,) = kiosk.events("kiosk.printer_problem")
    assert not problem.personal
    assert problem.data == {"printer": "a4", "problem": "PaperOutError", "words": "A4打印机缺纸",
                            "job": kept.key, "serial": serial}  # fmt: skip
    assert len(kiosk.events("certificate.issued")) == 1  # issued, and kept for a retry
    kiosk.queue.set_mode("ok")
    kiosk.desk.a4.enable_queue()
    kiosk.desk.a4.retry(kept.key)
    (out,) = kiosk.queue.wait_for_output(1)
    assert serial in pdf_text(out.read_bytes())


def test_receipt_paper_out_keeps_the_receipt(make_kiosk: MakeKiosk) -> None:
    kiosk = make_kiosk()
    kiosk.receipt_model.paper_out()
    _to_preview(kiosk)

    kiosk.session.touch("confirm")
    screen = kiosk.wait("printer_problem")

    assert "小票打印机缺纸" in screen.body and "回执已保存" in screen.body
    assert len(kiosk.queue.wait_for_output(1)) == 1  # the certificate itself printed
    assert len(kiosk.desk.receipts.pending()) == 1
    (problem,) = kiosk.events("kiosk.printer_problem")
    assert problem.data["printer"] == "receipt" and problem.data["problem"] == "PaperOutError"


def test_cupsd_gone_keeps_the_job_and_prints_no_receipt(make_kiosk: MakeKiosk) -> None:
    kiosk = make_kiosk()
    _to_preview(kiosk)
    kiosk.cupsd.stop()
    try:
        kiosk.session.touch("confirm")
        screen = kiosk.wait("printer_problem")
    finally:
        kiosk.cupsd.start()
    assert "打印服务没有响应" in screen.body and "证明已保存在本机" in screen.body
    assert kiosk.receipt_model.received == bytearray()
    assert len(kiosk.desk.a4.pending()) == 1
    assert kiosk.events("kiosk.printer_problem")[0].data["problem"] == "CupsUnavailableError"


# -- offline ------------------------------------------------
def test_offline_resident_not_in_cache(make_kiosk: MakeKiosk) -> None:
    kiosk = make_kiosk()  # offline
    kiosk.place(STRANGER)

    screen = kiosk.session.screen
    assert screen.id == "resident_unknown_offline" and screen.state is State.IDENTIFIED
    assert "连不上服务器" in screen.body and "不能为您打印证明" in screen.body
    assert {a.id for a in screen.actions} == {"guide", "notices", "end"}
    assert not kiosk.session.touch("certificate")
    assert not kiosk.session.touch("template", name="residence")
    assert kiosk.session.touch("guide")
    assert kiosk.session.screen.items
    assert kiosk.nothing_printed()


def test_offline_applications_say_what_works(make_kiosk: MakeKiosk) -> None:
    kiosk = make_kiosk()
    kiosk.place(RESIDENT)
    assert kiosk.session.touch("applications")
    screen = kiosk.session.screen
    assert screen.id == "offline"
    assert "打印和查询网上申请需要联网" in screen.body and "查看办事指南和社区公告" in screen.body


# -- status, guide, notices, scanner ------------------------
@pytest.mark.parametrize(
    ("card", "answer"),
    [
        (CERTIFIED, "已认证 2026年度"),
        (DUE, "未认证：2026年度尚未认证，请于2026年6月30日前"),
        (UNKNOWN_SUBSIDY, "本机档案中没有您的认证记录"),
        (RESIDENT, "您未满80周岁"),
    ],
)
def test_subsidy_status_from_the_cache(make_kiosk: MakeKiosk, card: Identity, answer: str) -> None:
    kiosk = make_kiosk()
    kiosk.place(card)
    assert kiosk.session.touch("status")
    subsidy, record, online = kiosk.session.screen.items
    assert subsidy.title == "高龄补贴认证" and answer in subsidy.text
    assert "家庭成员：3人" in record.text
    assert online.action is not None and online.action.id == "applications"


def test_service_guide_from_the_catalogue(make_kiosk: MakeKiosk) -> None:
    kiosk = make_kiosk()
    kiosk.place(RESIDENT)
    assert kiosk.session.touch("guide")
    guide = kiosk.session.screen
    assert [i.title for i in guide.items] == ["居住证明开具", "高龄津贴申领"]
    assert kiosk.session.touch("guide_item", key="svc-elderly")
    detail = kiosk.session.screen
    assert detail.title == "高龄津贴申领"
    assert "1. 居民身份证\n2. 银行卡" in detail.body and "约3天" in detail.body
    assert not kiosk.session.touch("guide_item", key="svc-unknown")
    assert kiosk.session.touch("guide")
    assert kiosk.session.touch("menu")
    assert kiosk.session.screen.id == "menu"


def test_notices_current_for_this_community(make_kiosk: MakeKiosk) -> None:
    kiosk = make_kiosk()
    assert kiosk.session.touch("notices")  # no card needed
    notices = kiosk.session.screen
    assert [i.title for i in notices.items] == ["幸福社区停水通知", "全区疫苗接种安排"]
    assert [a.label for a in notices.actions] == ["返回首页"]
    assert kiosk.session.touch("notice_item", key="n-local")
    assert "停水" in kiosk.session.screen.body and "2026年3月16日发布" in kiosk.session.screen.body
    kiosk.clock.advance(3 * 86400)  # the water notice expires
    assert kiosk.session.touch("notices")
    assert [i.title for i in kiosk.session.screen.items] == ["全区疫苗接种安排"]


def test_scanned_certificate_is_checked(make_kiosk: MakeKiosk) -> None:
    kiosk = make_kiosk()
    household = {"address": "x", "residence_since": "2015-06-01"}
    prepared = kiosk.services.certificates.prepare(RESIDENT, household, "residence")
    assert kiosk.session.scan(prepared.certificate.qr_text)
    screen = kiosk.session.screen
    assert screen.id == "certificate_check" and screen.title == "证明有效"
    assert prepared.serial in screen.body and "居住证明" in screen.body
    assert kiosk.session.scan("https://example.com/")
    assert kiosk.session.screen.id == "scan_unknown"
    assert kiosk.session.touch("end")
    assert kiosk.session.state is State.IDLE


def test_a_scan_the_scanner_refused_is_shown_as_unknown(make_kiosk: MakeKiosk) -> None:
    kiosk = make_kiosk()
    assert kiosk.session.scan_refused()
    assert kiosk.session.screen.id == "scan_unknown"
    assert "无法识别这个二维码" in kiosk.session.screen.title


def test_keep_alive_restarts_the_timeout_but_not_when_idle(make_kiosk: MakeKiosk) -> None:
    kiosk = make_kiosk()
    kiosk.session.keep_alive()
    assert kiosk.session.seconds_left() is None
    kiosk.place(RESIDENT)
    kiosk.clock.advance(IDLE_S - 5)
    assert kiosk.session.seconds_left() == 5
    kiosk.session.keep_alive()  # the resident turned a page
    assert kiosk.session.seconds_left() == IDLE_S


@pytest.mark.parametrize(
    ("typed", "error"),
    [("A7K2", "编号应为10位"), ("A7K2M9Q4TI", "编号应为10位"), ("B7K2M9Q4TX", "编号应为10位")],
)
def test_progress_number_is_checked_before_asking(
    make_kiosk: MakeKiosk, typed: str, error: str
) -> None:
    kiosk = make_kiosk(online=True)
    assert kiosk.session.touch("progress")
    assert kiosk.session.screen.entry is not None
    assert kiosk.session.touch("progress_submit", text=typed)
    entry = kiosk.session.screen.entry
    assert kiosk.session.screen.id == "progress_query" and entry is not None
    assert error in entry.error
    assert not kiosk.session.touch("progress_submit", text="A" * 11)  # longer than the field


def test_stale_touches_are_ignored(make_kiosk: MakeKiosk) -> None:
    kiosk = make_kiosk()
    assert not kiosk.session.touch("certificate")  # no card yet
    kiosk.place(RESIDENT)
    assert not kiosk.session.touch("confirm")
    assert not kiosk.session.touch("template", name="residence")  # not on the menu screen
    assert kiosk.session.screen.id == "menu"


def test_a_new_card_ends_the_previous_session(make_kiosk: MakeKiosk) -> None:
    kiosk = make_kiosk()
    kiosk.place(RESIDENT)
    kiosk.session.touch("status")
    kiosk.card_slot.lift()  # this reader reports no lift: the next card is the news
    kiosk.place(CERTIFIED)
    assert kiosk.session.screen.id == "menu"
    assert mask_name(CERTIFIED.name) in kiosk.session.screen.title
    assert kiosk.session._identity == CERTIFIED
    left = personal_reachable(
        kiosk.session, RESIDENT, stop=(kiosk.services,), objects=False, household=False
    )
    assert left == []  # the first resident's name and ID number are gone
