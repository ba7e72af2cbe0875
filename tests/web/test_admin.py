"""The admin pages: who sees what, CSRF, each page with data, and what each action changes.

Every test runs on SQLite and on PostgreSQL (the ``client`` fixture), through the real app.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import Engine, insert, select

from device.credential import SigningKey
from sync_server.case_stats import case_stats
from sync_server.cases import get_case, hash_token, set_overlay
from sync_server.credentials import issue_credential
from sync_server.documents import NoSuchVersionError, latest_version, snapshot
from sync_server.domain_models import (
    Assignment,
    AuditEntry,
    Case,
    IssuedCredential,
    ServicePoint,
    Shift,
    Worker,
)
from sync_server.ingest import record_state
from sync_server.models import Command
from sync_server.sitedata import load_site_data
from sync_server.web.app import SITE_TZ
from tests.cases.conftest import NOW
from tests.cases.test_cases import new_case, send
from tests.web.conftest import RecordingSender

PASSWORD = "correct horse battery"
HOUR = 3600.0


@pytest.fixture
def people(site: Engine) -> Engine:
    """A second community (c2: grid g3, locker-3) and accounts that can log in."""
    load_site_data(
        site,
        {
            "areas": [
                {"id": "c2", "name": "和平社区", "level": "community", "parent": "st1"},
                {"id": "g3", "name": "第三网格", "level": "grid", "parent": "c2"},
            ],
            "points": [
                {"device": "locker-3", "kind": "locker", "name": "和平社区1号柜", "area": "g3"}
            ],
            "workers": [
                {"username": "root", "name": "管理员", "role": "admin", "password": PASSWORD},
                {
                    "username": "zhou",
                    "name": "周主任",
                    "role": "staff",
                    "area": "c1",
                    "password": PASSWORD,
                },
                {
                    "username": "sun",
                    "name": "孙主任",
                    "role": "staff",
                    "area": "c2",
                    "password": PASSWORD,
                },
                {
                    "username": "chen",
                    "name": "陈网格",
                    "password": PASSWORD,
                    "grids": ["g1"],
                    "shifts": [{"start": NOW - HOUR, "end": NOW + HOUR}],
                },
                {"username": "wu", "name": "吴网格", "password": PASSWORD, "grids": ["g3"]},
            ],
        },
        clock=lambda: NOW,
        hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1),
    )
    return site


def login(client: TestClient, username: str, password: str = PASSWORD) -> str:
    """Log in through the worker app's form; returns the CSRF token of the admin pages."""
    r = client.post(
        "/w/login", data={"username": username, "password": password}, follow_redirects=False
    )
    assert r.status_code == 303, r.text
    match = re.search(r'name="csrf" value="([^"]+)"', client.get("/admin").text)
    assert match
    return match.group(1)


def wid(engine: Engine, username: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(Worker.id).where(Worker.username == username)).scalar_one())


def deposited(engine: Engine, device: str = "locker-1", compartment: int = 3) -> str:
    case_id, _ = new_case(engine, device)
    send(
        engine,
        device,
        (
            "compartment.deposited",
            {"compartment": compartment, "case": case_id, "content": "documents"},
        ),
    )
    return case_id


def audits(engine: Engine, action: str) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(AuditEntry).where(AuditEntry.action == action)))


def day(at: float) -> str:
    return dt.datetime.fromtimestamp(at, SITE_TZ).date().isoformat()


# -- access ----------------------------------------------------------------------------------------


def test_anonymous_requests_go_to_the_login_page(client: TestClient, people: Engine) -> None:
    for path in ("/admin", "/admin/cases", "/admin/stats", "/admin/devices/locker-1"):
        r = client.get(path, follow_redirects=False)
        assert (r.status_code, r.headers["location"]) == (303, "/w/login"), path
    r = client.post("/admin/devices/locker-1/revoke", data={"csrf": "x"}, follow_redirects=False)
    assert r.status_code == 303


def test_a_grid_worker_is_refused(client: TestClient, people: Engine) -> None:
    r = client.post("/w/login", data={"username": "chen", "password": PASSWORD})
    assert r.status_code == 200
    for path in ("/admin", "/admin/devices", "/admin/cases"):
        r = client.get(path)
        assert r.status_code == 403 and "没有权限" in r.text


def test_staff_see_only_their_own_area(client: TestClient, people: Engine) -> None:
    ours, theirs = deposited(people, "locker-1"), deposited(people, "locker-3")
    login(client, "sun")  # staff of c2
    cases = client.get("/admin/cases").text
    assert theirs in cases and ours not in cases
    assert client.get(f"/admin/cases/{ours}").status_code == 404
    assert client.get(f"/admin/cases/{theirs}").status_code == 200
    devices = client.get("/admin/devices").text
    assert "locker-3" in devices and "locker-1" not in devices
    assert client.get("/admin/devices/locker-1").status_code == 404
    workers = client.get("/admin/workers").text
    assert "吴网格" in workers and "陈网格" not in workers
    home = client.get("/admin").text
    assert re.search(r'data-state="deposited"><td>.*?</td><td class="count">1<', home)
    assert "第一网格" not in client.get(f"/admin/stats?start={day(NOW - 86400)}").text

    login(client, "root")
    cases = client.get("/admin/cases").text
    assert theirs in cases and ours in cases


def test_staff_may_act_on_their_cases_only(client: TestClient, people: Engine) -> None:
    ours, theirs = deposited(people, "locker-1"), deposited(people, "locker-3")
    csrf = login(client, "zhou")  # staff of c1
    refused = [
        ("/admin/devices/locker-1/revoke", {}),
        ("/admin/services/publish", {}),
        ("/admin/notices", {"title": "停水", "body": "明天停水", "valid_until": day(NOW)}),
        (
            "/admin/workers",
            {"username": "x1", "display_name": "某", "password": PASSWORD, "role": "admin"},
        ),
    ]
    for path, data in refused:
        r = client.post(path, data={"csrf": csrf, **data})
        assert r.status_code == 403 and "只有管理员" in r.text, path
    with people.connect() as conn:
        assert (
            conn.execute(
                select(ServicePoint.revoked_at).where(ServicePoint.device_id == "locker-1")
            ).scalar_one()
            is None
        )
        assert conn.execute(select(Worker.id).where(Worker.username == "x1")).first() is None
    r = client.post(f"/admin/cases/{theirs}/cancel", data={"csrf": csrf, "reason": "duplicate"})
    assert r.status_code == 404
    r = client.post(f"/admin/cases/{ours}/cancel", data={"csrf": csrf, "reason": "duplicate"})
    assert r.status_code == 200 and "案件已取消" in r.text
    with people.connect() as conn:
        assert get_case(conn, ours).state == "cancelled"
        assert get_case(conn, theirs).state == "deposited"
    [entry] = [a for a in audits(people, "case.cancelled") if a.case_id == ours]
    assert entry.actor == f"worker:{wid(people, 'zhou')}" and entry.detail["reason"] == "duplicate"


def test_a_post_without_the_sessions_csrf_token_is_refused(
    client: TestClient, people: Engine
) -> None:
    csrf = login(client, "root")
    assert client.post("/admin/devices/locker-1/revoke", data={"csrf": "forged"}).status_code == 403
    cross_site = client.post(
        "/admin/devices/locker-1/revoke",
        data={"csrf": csrf},
        headers={"origin": "https://evil.example"},
    )
    assert cross_site.status_code == 403
    with people.connect() as conn:
        assert (
            conn.execute(
                select(ServicePoint.revoked_at).where(ServicePoint.device_id == "locker-1")
            ).scalar_one()
            is None
        )
    assert audits(people, "device.revoked") == []


# -- pages -----------------------------------------------------------------------------------------


def _busy_site(engine: Engine, key: SigningKey) -> str:
    """A deposited case, a faulty compartment, an online locker with health and a ping answer."""
    case_id = deposited(engine, "locker-1", 3)
    send(
        engine,
        "locker-1",
        ("compartment.state", {"compartment": 3, "to": "holding", "case": case_id}),
        ("compartment.state", {"compartment": 5, "to": "fault"}),
        ("compartment.fault", {"compartment": 5, "reason": "lock-stuck"}),
    )
    record_state(
        engine,
        "locker-1",
        online=True,
        boot=4,
        at=NOW,
        clock=lambda: NOW,
        payload={"online": True, "boot": 4, "at": NOW, "temp_c": 41},
    )
    with engine.begin() as conn:
        conn.execute(
            insert(Command).values(
                id="c" * 32,
                device_id="locker-1",
                type="sys.ping",
                args={},
                created=NOW - 60,
                expires=NOW + 60,
                status="succeeded",
                result={"pending": 7, "time": NOW},
                completed=NOW - 59,
            )
        )
        issue_credential(
            conn,
            key,
            NOW,
            kind="collect",
            device_id="locker-1",
            case_id=case_id,
            compartment=None,
            valid_s=HOUR,
        )
    return case_id


def test_every_page_renders_with_data(client: TestClient, people: Engine, key: SigningKey) -> None:
    case_id = _busy_site(people, key)
    login(client, "root")
    expected = {
        "/admin": ['id="online">1<', 'id="faults">1<'],
        "/admin/devices": ["幸福社区1号柜", "在线", "temp_c=41", "从未连接"],
        "/admin/devices/locker-1": ["lock-stuck", "清除故障", 'id="backlog">7<', case_id],
        "/admin/cases": [case_id, "居住证明", "第一网格"],
        f"/admin/cases/{case_id}": ["case.deposited", "case.opened", "居民取件码"],
        "/admin/workers": ["陈网格", "在班", "0 / 5"],
        "/admin/stats": ["居住证明", "第一网格"],
        "/admin/services": ["居住证明", "停办业务"],
        "/admin/services/residence": ["户口簿复印件 | 1"],
        "/admin/notices": ["暂无公告"],
        "/admin/credentials": ["居民取件码", case_id, "有效"],
    }
    for path, texts in expected.items():
        r = client.get(path)
        assert r.status_code == 200, path
        for text in texts:
            assert text in r.text, (path, text)


def test_the_case_page_masks_the_residents_phone(client: TestClient, people: Engine) -> None:
    case_id = deposited(people)
    login(client, "root")
    page = client.get(f"/admin/cases/{case_id}").text
    assert "138****8000" in page and "13800138000" not in page
    assert "13800138000" not in client.get("/admin/cases").text


# -- catalogue, notices, credentials, devices ------------------------------------------------------


def test_saving_a_service_publishes_the_catalogue(client: TestClient, people: Engine) -> None:
    csrf = login(client, "root")
    form = {
        "csrf": csrf,
        "id": "passport",
        "name": "护照代办",
        "description": "首次申领",
        "documents": "身份证 | 1 | 原件\n照片 | 2",
        "pickup_hours": "8",
        "process_hours": "120",
    }
    r = client.post("/admin/services", data=form)
    assert r.status_code == 200 and "已保存并发布" in r.text
    first = snapshot(people, "catalogue")
    assert first.items == {
        "passport": {
            "name": "护照代办",
            "description": "首次申领",
            "documents": [
                {"name": "身份证", "copies": 1, "note": "原件"},
                {"name": "照片", "copies": 2, "note": ""},
            ],
            "pickup_hours": 8.0,
            "process_hours": 120.0,
        }
    }
    client.post("/admin/services", data={**form, "name": "护照办理"})
    second = snapshot(people, "catalogue")
    assert second.version > first.version and second.items["passport"]["name"] == "护照办理"

    client.post("/admin/services/publish", data={"csrf": csrf})  # the site's services too
    assert set(snapshot(people, "catalogue").items) == {"passport", "residence"}
    client.post("/admin/services/passport/active", data={"csrf": csrf, "active": "0"})
    assert set(snapshot(people, "catalogue").items) == {"residence"}
    assert len(audits(people, "service.saved")) == 2
    assert len(audits(people, "service.deactivated")) == 1

    bad = client.post("/admin/services", data={**form, "id": "Bad Id"})
    assert bad.status_code == 422 and "编号" in bad.text
    bad = client.post("/admin/services", data={**form, "documents": "照片 | 两份"})
    assert bad.status_code == 422 and "第 1 行" in bad.text


def test_notices_are_published_and_deleted(client: TestClient, people: Engine) -> None:
    csrf = login(client, "root")
    with pytest.raises(NoSuchVersionError):
        snapshot(people, "notices")
    r = client.post(
        "/admin/notices",
        data={
            "csrf": csrf,
            "title": "停水通知",
            "body": "周六8点至12点停水。",
            "community": "c1",
            "valid_until": day(NOW + 7 * 86400),
        },
    )
    assert r.status_code == 200 and "停水通知" in r.text
    [(key, item)] = snapshot(people, "notices").items.items()
    assert (item["title"], item["community"], item["community_name"]) == (
        "停水通知",
        "c1",
        "幸福社区",
    )
    assert item["valid_until"] > NOW + 7 * 86400 - 86400
    r = client.post(f"/admin/notices/{key}/delete", data={"csrf": csrf})
    assert r.status_code == 200 and "停水通知" not in r.text
    assert snapshot(people, "notices").items == {} and latest_version(people, "notices") >= 2
    assert client.post(f"/admin/notices/{key}/delete", data={"csrf": csrf}).status_code == 404
    late = client.post(
        "/admin/notices",
        data={"csrf": csrf, "title": "旧", "body": "旧", "valid_until": day(NOW - 86400)},
    )
    assert late.status_code == 422
    assert [a.detail["notice"] for a in audits(people, "notice.deleted")] == [key]


def test_revoking_a_credential_publishes_its_cti(
    client: TestClient, people: Engine, key: SigningKey
) -> None:
    case_id = deposited(people)
    with people.begin() as conn:
        issued = issue_credential(
            conn,
            key,
            NOW,
            kind="collect",
            device_id="locker-1",
            case_id=case_id,
            compartment=None,
            valid_s=HOUR,
        )
    csrf = login(client, "root")
    r = client.post(f"/admin/credentials/{issued.cti}/revoke", data={"csrf": csrf})
    assert r.status_code == 200 and "已吊销" in r.text
    assert issued.cti in snapshot(people, "revocations").items
    with people.connect() as conn:
        assert (
            conn.execute(
                select(IssuedCredential.revoked_at).where(IssuedCredential.cti == issued.cti)
            ).scalar_one()
            == NOW
        )
    [entry] = audits(people, "credential.revoked")
    assert entry.detail["cti"] == issued.cti and entry.case_id == case_id


def test_a_revoked_locker_has_no_resident_page_and_takes_no_commands(
    client: TestClient, people: Engine, sender: RecordingSender
) -> None:
    assert client.get("/l/locker-1").status_code == 200
    csrf = login(client, "root")
    page = client.get("/admin/devices/locker-1").text
    assert "linli provision" in page
    r = client.post("/admin/devices/locker-1/revoke", data={"csrf": csrf})
    assert r.status_code == 200 and "已于" in r.text
    assert client.get("/l/locker-1").status_code == 404
    r = client.post("/admin/devices/locker-1/command", data={"csrf": csrf, "action": "ping"})
    assert r.status_code == 409 and sender.sent == []
    [entry] = audits(people, "device.revoked")
    assert entry.device_id == "locker-1" and entry.actor == f"admin:{wid(people, 'root')}"


def test_compartment_commands_go_to_the_locker(
    client: TestClient, people: Engine, key: SigningKey, sender: RecordingSender
) -> None:
    _busy_site(people, key)
    csrf = login(client, "root")
    url = "/admin/devices/locker-1/command"
    r = client.post(url, data={"csrf": csrf, "action": "clear_fault", "compartment": "5"})
    assert r.status_code == 200 and "指令已发送" in r.text
    assert sender.sent[-1] == ("locker-1", "locker.clear_fault", {"compartment": 5})
    client.post(url, data={"csrf": csrf, "action": "ping"})
    assert sender.sent[-1] == ("locker-1", "sys.ping", {})
    unknown = client.post(url, data={"csrf": csrf, "action": "disable", "compartment": "9"})
    assert unknown.status_code == 422 and len(sender.sent) == 2
    assert client.post(url, data={"csrf": csrf, "action": "reboot"}).status_code == 422
    sender.online = False
    offline = client.post(url, data={"csrf": csrf, "action": "disable", "compartment": "3"})
    assert offline.status_code == 503 and "离线" in offline.text
    sent = [(a.detail["type"], a.detail["sent"]) for a in audits(people, "device.command")]
    assert sent == [("locker.clear_fault", True), ("sys.ping", True), ("locker.disable", False)]


# -- case actions ----------------------------------------------------------------------------------


def _offers(engine: Engine, case_id: str) -> list[tuple[int, str]]:
    with engine.connect() as conn:
        return [
            (int(row.worker_id), row.status)
            for row in conn.execute(
                select(Assignment).where(Assignment.case_id == case_id).order_by(Assignment.id)
            )
        ]


def test_reassigning_offers_the_pickup_to_the_chosen_worker(
    client: TestClient, people: Engine
) -> None:
    case_id = deposited(people)
    chen, li = wid(people, "chen"), wid(people, "li")
    csrf = login(client, "root")
    r = client.post(f"/admin/cases/{case_id}/reassign", data={"csrf": csrf, "worker": chen})
    assert r.status_code == 200 and "已改派" in r.text
    assert _offers(people, case_id) == [(chen, "offered")]
    with people.connect() as conn:  # the dispatcher's default acknowledgement time
        assert conn.execute(select(Assignment.ack_due)).scalar_one() == NOW + 300
    client.post(f"/admin/cases/{case_id}/reassign", data={"csrf": csrf, "worker": li})
    assert _offers(people, case_id) == [(chen, "cancelled"), (li, "offered")]
    with people.connect() as conn:
        case = get_case(conn, case_id)
    assert (case.state, case.worker_id) == ("assigned", li)
    assert len(audits(people, "case.reassigned")) == 2

    csrf = login(client, "zhou")  # staff of c1 may not hand it to a worker of c2
    r = client.post(
        f"/admin/cases/{case_id}/reassign", data={"csrf": csrf, "worker": wid(people, "wu")}
    )
    assert r.status_code == 422 and _offers(people, case_id)[-1] == (li, "offered")

    send(
        people,
        "locker-1",
        ("compartment.emptied", {"compartment": 3, "case": case_id, "content": "documents"}),
    )
    r = client.post(f"/admin/cases/{case_id}/reassign", data={"csrf": csrf, "worker": chen})
    assert r.status_code == 409


def test_a_case_can_be_cancelled_only_before_collection(client: TestClient, people: Engine) -> None:
    assigned, collected = deposited(people, compartment=3), deposited(people, compartment=4)
    csrf = login(client, "root")
    client.post(
        f"/admin/cases/{assigned}/reassign", data={"csrf": csrf, "worker": wid(people, "chen")}
    )
    r = client.post(f"/admin/cases/{assigned}/cancel", data={"csrf": csrf, "reason": "other"})
    assert r.status_code == 200
    assert _offers(people, assigned) == [(wid(people, "chen"), "cancelled")]
    send(
        people,
        "locker-1",
        ("compartment.emptied", {"compartment": 4, "case": collected, "content": "documents"}),
    )
    r = client.post(f"/admin/cases/{collected}/cancel", data={"csrf": csrf, "reason": "other"})
    assert r.status_code == 409 and "不能再取消" in r.text
    with people.connect() as conn:
        assert get_case(conn, assigned).state == "cancelled"
        assert get_case(conn, collected).state == "collected"
    bad = client.post(f"/admin/cases/{collected}/cancel", data={"csrf": csrf, "reason": "x"})
    assert bad.status_code == 422


def test_de_escalating_hands_the_case_back_to_its_grid(client: TestClient, people: Engine) -> None:
    case_id = deposited(people)
    with people.begin() as conn:
        set_overlay(
            conn,
            get_case(conn, case_id),
            "escalated",
            NOW,
            actor="system",
            level="community",
            due_at=NOW - 60,
        )
    csrf = login(client, "zhou")
    home = client.get("/admin").text
    assert case_id in home and 'class="level">社区<' in home
    r = client.post(f"/admin/cases/{case_id}/de-escalate", data={"csrf": csrf})
    assert r.status_code == 200 and "撤回上报" in r.text
    with people.connect() as conn:
        case = get_case(conn, case_id)
    # The deadline had passed: the grid gets the service's pickup time (4 h) again.
    assert (case.state, case.level, case.due_at) == ("deposited", "grid", NOW + 4 * HOUR)
    assert (
        client.post(f"/admin/cases/{case_id}/de-escalate", data={"csrf": csrf}).status_code == 409
    )
    [entry] = audits(people, "case.de_escalated")
    assert entry.detail == {"from": "escalated", "level": "community"}


# -- workers ---------------------------------------------------------------------------------------


def _local(at: float) -> str:
    return dt.datetime.fromtimestamp(at, SITE_TZ).strftime("%Y-%m-%dT%H:%M")


def test_workers_are_created_given_shifts_and_deactivated(
    client: TestClient, people: Engine
) -> None:
    csrf = login(client, "root")
    r = client.post(
        "/admin/workers",
        data={
            "csrf": csrf,
            "username": "zheng",
            "display_name": "郑网格",
            "password": PASSWORD,
            "role": "worker",
            "grids": ["g1", "g2"],
            "capacity": "3",
            "phone": "13912345678",
        },
    )
    assert r.status_code == 200 and "郑网格" in r.text and "139****5678" in r.text
    zheng = wid(people, "zheng")
    with people.connect() as conn:
        stored = conn.execute(select(Worker).where(Worker.id == zheng)).one()
    assert stored.password_hash.startswith("$argon2id$") and PASSWORD not in stored.password_hash
    taken = client.post(
        "/admin/workers",
        data={
            "csrf": csrf,
            "username": "zheng",
            "display_name": "又一个",
            "password": PASSWORD,
            "role": "worker",
            "grids": ["g1"],
        },
    )
    assert taken.status_code == 409

    r = client.post(
        f"/admin/workers/{zheng}/shifts",
        data={"csrf": csrf, "start": _local(NOW - 60), "end": _local(NOW + 8 * HOUR)},
    )
    assert r.status_code == 200
    row = re.search(r'data-worker="zheng">(.*?)</tr>', r.text, re.S)
    assert row and "在班" in row.group(1)
    with people.connect() as conn:
        assert len(conn.execute(select(Shift).where(Shift.worker_id == zheng)).all()) == 1
    backwards = client.post(
        f"/admin/workers/{zheng}/shifts",
        data={"csrf": csrf, "start": _local(NOW + HOUR), "end": _local(NOW)},
    )
    assert backwards.status_code == 422

    case_id = deposited(people)
    client.post(f"/admin/cases/{case_id}/reassign", data={"csrf": csrf, "worker": zheng})
    r = client.post(f"/admin/workers/{zheng}/active", data={"csrf": csrf, "active": "0"})
    assert r.status_code == 200 and "已停用" in r.text
    assert _offers(people, case_id) == [(zheng, "cancelled")]
    with people.connect() as conn:
        case = get_case(conn, case_id)
    assert (case.state, case.worker_id) == ("deposited", None)
    refused = client.post("/w/login", data={"username": "zheng", "password": PASSWORD})
    assert refused.status_code == 401
    csrf = login(client, "root")
    me = wid(people, "root")
    assert (
        client.post(f"/admin/workers/{me}/active", data={"csrf": csrf, "active": "0"}).status_code
        == 409
    )


# -- statistics ------------------------------------------------------------------------------------


def _history(engine: Engine) -> None:
    """Seven cases with known times (T = 60 h before NOW; pickup 4 h, processing 48 h for
    ``residence``; 24 h / 72 h for ``retired``)."""
    t = NOW - 60 * HOUR
    rows = [  # id, service, device, grid, state, deposited, collected, result
        ("CAAAAAAAAA", "residence", "locker-1", "g1", "completed", t, t + 1 * HOUR, t + 11 * HOUR),
        (
            "CBBBBBBBBB",
            "residence",
            "locker-1",
            "g1",
            "result_stored",
            t,
            t + 3 * HOUR,
            t + 53 * HOUR,
        ),
        ("CCCCCCCCCC", "residence", "locker-1", "g1", "processing", t, t + 5 * HOUR, None),
        ("CDDDDDDDDD", "residence", "locker-2", "g2", "deposited", NOW - HOUR, None, None),
        ("CEEEEEEEEE", "residence", "locker-2", "g2", "cancelled", t, None, None),
        ("CFFFFFFFFF", "retired", "locker-1", "g1", "collected", t, t + 2 * HOUR, None),
        (
            "CGGGGGGGGG",
            "residence",
            "locker-1",
            "g1",
            "completed",
            t - 10 * 86400,
            t - 10 * 86400 + HOUR,
            t - 9 * 86400,
        ),
    ]
    with engine.begin() as conn:
        for case_id, service, device, grid, state, dep, col, res in rows:
            conn.execute(
                insert(Case).values(
                    id=case_id,
                    service_id=service,
                    device_id=device,
                    grid_id=grid,
                    state=state,
                    level="grid",
                    access_hash=hash_token(case_id),
                    created=dep - 60,
                    updated=NOW,
                    deposited_at=dep,
                    collected_at=col,
                    result_at=res,
                    version=1,
                )
            )
        conn.execute(
            insert(AuditEntry).values(
                at=t + 6 * HOUR,
                actor="system",
                action="case.escalated",
                case_id="CCCCCCCCCC",
                detail={"level": "community"},
            )
        )


def test_statistics_on_a_small_history(client: TestClient, people: Engine) -> None:
    _history(people)
    start = dt.datetime.fromisoformat(day(NOW - 5 * 86400)).replace(tzinfo=SITE_TZ).timestamp()
    with people.connect() as conn:
        report = case_stats(conn, start=start, end=NOW + 86400, now=NOW)
    total = report.total
    assert (total.opened, total.completed, total.escalated) == (6, 1, 1)
    assert (total.pickup.median_s, total.pickup.p90_s) == (2.5 * HOUR, 5 * HOUR)
    assert (total.processing.median_s, total.processing.p90_s) == (30 * HOUR, 50 * HOUR)
    assert (total.on_time, total.decided) == (1, 3)  # B and C late, D and F undecided, E cancelled
    grids = {g.key: g for g in report.by_grid}
    assert (grids["g1"].opened, grids["g2"].opened, grids["g2"].on_time_share) == (4, 2, None)
    services = {s.key: s for s in report.by_service}
    assert services["retired"].pickup.median_s == 2 * HOUR
    assert (services["retired"].on_time, services["retired"].decided) == (0, 0)

    login(client, "root")
    page = client.get(f"/admin/stats?start={day(NOW - 5 * 86400)}&end={day(NOW)}").text
    row = re.search(r'id="by-service">.*?<tr data-key="\*">(.*?)</tr>', page, re.S)
    assert row, page
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(1))
    assert cells == [
        "合计",
        "6",
        "1",
        "2.5 小时",
        "5.0 小时",
        "30.0 小时",
        "50.0 小时",
        "33%（1/3）",
        "1",
    ]
    login(client, "sun")  # c2's staff: none of these cases is theirs
    assert (
        '<td class="opened">0</td>'
        in client.get(f"/admin/stats?start={day(NOW - 5 * 86400)}&end={day(NOW)}").text
    )
    assert client.get("/admin/stats?start=2025-13-01").status_code == 422
