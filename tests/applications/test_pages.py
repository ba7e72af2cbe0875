"""The resident's pages (``/apply``, ``/apply/{kind}``, ``/a/{number}/{token}``) and the office's
(``/admin/applications``) through the real app, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from sync_server.domain_models import Application, AuditEntry
from sync_server.notify import RecordingNotifier
from sync_server.web.app import create_app
from sync_server.web.context import WebContext
from tests.web.conftest import RecordingSender

from .conftest import PASSWORD, PHONE, UNKNOWN, WANG, Clock, last_code

FORM = {"name": "王伟", "id_number": WANG, "phone": PHONE, "consent": "yes",
        "monthly_income": "1500", "reason": "家庭成员患重病"}  # fmt: skip


def get_code(client: TestClient, phone: str = PHONE, kind: str = "difficulty") -> None:
    r = client.post(f"/apply/{kind}", data={**FORM, "phone": phone, "action": "code"})
    assert r.status_code == 200, r.text
    assert "验证码已发送至138****8000" in r.text or phone != PHONE
    assert r.headers["cache-control"] == "no-store"


def submit(client: TestClient, code: str, kind: str = "difficulty", **changes: str) -> Any:
    data = {**FORM, "code": code, "action": "submit", **changes}
    return client.post(f"/apply/{kind}", data=data, follow_redirects=False)


def apply(client: TestClient, sms: RecordingNotifier, kind: str = "difficulty") -> tuple[str, str]:
    get_code(client, kind=kind)
    r = submit(client, last_code(sms), kind)
    assert r.status_code == 303, r.text
    match = re.fullmatch(r"/a/(A\w{9})/([\w-]+)", r.headers["location"])
    assert match
    return match.group(1), match.group(2)


def test_the_kinds_are_listed_and_each_has_its_form(client: TestClient) -> None:
    r = client.get("/apply")
    assert r.status_code == 200
    assert all(t in r.text for t in ("生活困难证明申请", "高龄津贴申领", "居住证办理预约"))
    form = client.get("/apply/difficulty").text
    assert 'name="monthly_income"' in form and 'name="reason"' in form and "获取验证码" in form
    assert 'name="monthly_income"' not in client.get("/apply/elderly_subsidy").text
    missing = client.get("/apply/passport")
    assert missing.status_code == 404 and "没有这类申请" in missing.text


def test_a_resident_applies_and_follows_the_application(
    client: TestClient, sms: RecordingNotifier, town: Engine
) -> None:
    number, token = apply(client, sms)
    page = client.get(f"/a/{number}/{token}")
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    assert number in page.text and "已提交，等待社区受理" in page.text
    assert 'data-status="submitted"' in page.text and WANG not in page.text
    with town.connect() as conn:
        row = conn.execute(select(Application).where(Application.id == number)).one()
    assert (row.id_number, row.name, row.phone, row.community_id) == (WANG, "王伟", PHONE, "c1")
    assert row.data == {"monthly_income": 1500, "reason": "家庭成员患重病"}
    assert token not in row.access_hash


def test_a_forged_or_foreign_token_opens_nothing(
    client: TestClient, sms: RecordingNotifier
) -> None:
    number, token = apply(client, sms)
    _, other_token = apply_after_a_minute(client, sms)
    for path in (f"/a/{number}/{other_token}", f"/a/{number}/{'x' * len(token)}",
                 f"/a/A222222222/{token}"):  # fmt: skip
        r = client.get(path)
        assert r.status_code == 404 and "链接无效" in r.text and number not in r.text


def apply_after_a_minute(client: TestClient, sms: RecordingNotifier) -> tuple[str, str]:
    clock: Clock = client.app.state.context.clock  # type: ignore[attr-defined]
    clock.advance(61)
    return apply(client, sms)


def test_a_wrong_code_is_refused_and_files_nothing(
    client: TestClient, sms: RecordingNotifier, town: Engine
) -> None:
    get_code(client)
    code = last_code(sms)
    r = submit(client, f"{(int(code) + 1) % 1_000_000:06d}")
    assert r.status_code == 422 and "验证码不正确或已过期" in r.text
    assert 'value="王伟"' in r.text  # what was typed is kept
    r = submit(client, "12ab")
    assert r.status_code == 422 and "6位验证码" in r.text
    with town.connect() as conn:
        assert conn.execute(select(Application)).first() is None


def test_an_expired_code_is_refused(
    client: TestClient, sms: RecordingNotifier, clock: Clock
) -> None:
    get_code(client)
    clock.advance(301)
    r = submit(client, last_code(sms))
    assert r.status_code == 422 and "验证码不正确或已过期" in r.text


@pytest.mark.parametrize(("name", "id_number"), [("王五", WANG), ("王伟", UNKNOWN)])
def test_a_name_id_mismatch_is_one_plain_refusal(
    client: TestClient, sms: RecordingNotifier, town: Engine, name: str, id_number: str
) -> None:
    get_code(client)
    r = submit(client, last_code(sms), name=name, id_number=id_number)
    assert r.status_code == 403
    assert "未能通过社区登记信息核验" in r.text
    with town.connect() as conn:
        assert conn.execute(select(Application)).first() is None
        refused = conn.execute(
            select(AuditEntry.detail).where(AuditEntry.action == "application.refused")
        ).scalar_one()
    assert refused == {"kind": "difficulty"}
    # The code is used up: a second guess needs a new SMS.
    r = submit(client, last_code(sms))
    assert r.status_code == 422 and "验证码不正确或已过期" in r.text


def test_bad_input_is_said_by_field_in_chinese(client: TestClient, sms: RecordingNotifier) -> None:
    get_code(client)
    code = last_code(sms)
    r = submit(client, code, reason="病" * 201, monthly_income="-5", consent="")
    assert r.status_code == 422
    for text in ("请用2到200个字说明困难原因", "请填写0到100000之间的金额", "请确认所填信息真实"):
        assert text in r.text
    r = submit(client, code)  # the code survived the refused form
    assert r.status_code == 303


def test_oversize_and_foreign_bodies_are_refused(client: TestClient) -> None:
    big = client.post("/apply/difficulty", data={**FORM, "reason": "病" * 3000, "action": "submit"})
    assert big.status_code == 413 and "过长" in big.text
    json_body = client.post("/apply/difficulty", json=FORM)
    assert json_body.status_code == 415


def test_a_bad_phone_gets_no_code(client: TestClient, sms: RecordingNotifier) -> None:
    r = client.post("/apply/difficulty", data={**FORM, "phone": "12345", "action": "code"})
    assert r.status_code == 422 and "手机号应为11位数字" in r.text
    assert sms.recent == []


def test_codes_are_rate_limited_on_the_page(client: TestClient, sms: RecordingNotifier) -> None:
    get_code(client)
    r = client.post("/apply/difficulty", data={**FORM, "action": "code"})
    assert r.status_code == 429 and "过于频繁" in r.text
    assert len(sms.recent) == 1


def test_without_a_notification_service_the_form_says_so(town: Engine) -> None:
    app = create_app(WebContext(engine=town, signing_key=None, send_command=RecordingSender()))  # type: ignore[arg-type]
    with TestClient(app, base_url="http://linli.test") as c:
        r = c.post("/apply/difficulty", data={**FORM, "action": "code"})
    assert r.status_code == 503 and "短信服务暂未开通" in r.text


# -- the office ----------------------------------------------------------------------------------


def login(client: TestClient, username: str) -> str:
    r = client.post(
        "/w/login", data={"username": username, "password": PASSWORD}, follow_redirects=False
    )
    assert r.status_code == 303, r.text
    match = re.search(r'name="csrf" value="([^"]+)"', client.get("/admin/applications").text)
    assert match
    return match.group(1)


def test_staff_accept_and_finish_and_the_resident_sees_it(
    client: TestClient, sms: RecordingNotifier
) -> None:
    number, token = apply(client, sms)
    csrf = login(client, "zhou")
    listing = client.get("/admin/applications").text
    assert number in listing and "王*" in listing and WANG not in listing
    page = client.get(f"/admin/applications/{number}").text
    assert "王伟" in page and "138****8000" in page and PHONE not in page and WANG not in page
    assert "家庭成员患重病" in page and 'id="accept"' in page and 'id="done"' not in page
    assert client.post(f"/admin/applications/{number}/done", data={"csrf": csrf}).status_code == 409
    r = client.post(f"/admin/applications/{number}/accept", data={"csrf": csrf},
                    follow_redirects=False)  # fmt: skip
    assert r.status_code == 303
    client.post(f"/admin/applications/{number}/done", data={"csrf": csrf})
    page = client.get(f"/admin/applications/{number}").text
    assert 'data-status="done"' in page and "application.done" in page
    resident = client.get(f"/a/{number}/{token}").text
    assert "已办结，可在社区服务机打印" in resident and 'id="print-hint"' in resident


def test_a_rejection_needs_a_reason_the_resident_reads(
    client: TestClient, sms: RecordingNotifier
) -> None:
    number, token = apply(client, sms)
    csrf = login(client, "root")
    r = client.post(f"/admin/applications/{number}/reject", data={"csrf": csrf, "reason": ""})
    assert r.status_code == 422 and "不予通过的原因" in r.text
    client.post(f"/admin/applications/{number}/reject",
                data={"csrf": csrf, "reason": "家庭收入超过标准"})  # fmt: skip
    resident = client.get(f"/a/{number}/{token}").text
    assert "未通过" in resident and "家庭收入超过标准" in resident


def test_other_communities_and_forged_csrf_are_refused(
    client: TestClient, sms: RecordingNotifier
) -> None:
    number, _ = apply(client, sms)
    csrf = login(client, "sun")  # staff of c2; the application is c1's
    assert number not in client.get("/admin/applications").text
    assert client.get(f"/admin/applications/{number}").status_code == 404
    r = client.post(f"/admin/applications/{number}/accept", data={"csrf": csrf})
    assert r.status_code == 404
    client.post("/w/logout", data={"csrf": csrf})
    login(client, "zhou")
    forged = client.post(f"/admin/applications/{number}/accept", data={"csrf": "forged"})
    assert forged.status_code == 403
