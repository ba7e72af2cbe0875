"""The worker app: login, limits, CSRF, who sees which case, and a pickup and return."""

from __future__ import annotations

import re

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import Engine, insert, select, update

from device.credential import SigningKey
from sync_server.cases import get_case, move
from sync_server.domain_models import Assignment, Case, IssuedCredential, Worker
from sync_server.sitedata import load_site_data
from sync_server.web.worker import SAME_DEADLINE_S
from tests.cases.conftest import NOW
from tests.cases.test_cases import send
from tests.web.conftest import RecordingSender
from tests.web.test_resident import open_case

PASSWORD = "correct horse battery"


@pytest.fixture
def workers(site: Engine) -> Engine:
    load_site_data(
        site,
        {"workers": [
            {"username": "chen", "name": "陈网格", "password": PASSWORD, "grids": ["g1"]},
            {"username": "liu", "name": "刘网格", "password": PASSWORD, "grids": ["g1"]},
        ]},
        clock=lambda: NOW,
        hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1),
    )  # fmt: skip
    return site


def login(client: TestClient, username: str, password: str = PASSWORD) -> str:
    r = client.post(
        "/w/login", data={"username": username, "password": password}, follow_redirects=False
    )
    assert r.status_code == 303, r.text
    page = client.get("/w")
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match
    return match.group(1)


def worker_id(engine: Engine, username: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(Worker.id).where(Worker.username == username)).scalar_one())


def assign(engine: Engine, case_id: str, wid: int) -> int:
    with engine.begin() as conn:
        aid = conn.execute(
            insert(Assignment)
            .values(
                case_id=case_id,
                worker_id=wid,
                kind="pickup",
                status="offered",
                created=NOW,
                ack_due=NOW + 300,
            )
            .returning(Assignment.id)
        ).scalar_one()
        move(
            conn,
            get_case(conn, case_id),
            "assigned",
            NOW,
            actor="system",
            reason="test",
            worker_id=wid,
        )
    return int(aid)


def deposited_case(client: TestClient, engine: Engine) -> str:
    case_id, _ = open_case(client)
    send(
        engine,
        "locker-1",
        ("compartment.deposited", {"compartment": 3, "case": case_id, "content": "documents"}),
    )
    return case_id


def test_pages_need_a_login(client: TestClient) -> None:
    r = client.get("/w", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/w/login"


def test_a_wrong_password_and_an_unknown_user_read_the_same(
    client: TestClient, workers: Engine
) -> None:
    a = client.post("/w/login", data={"username": "chen", "password": "wrong password"})
    b = client.post("/w/login", data={"username": "nobody", "password": "wrong password"})
    assert a.status_code == b.status_code == 401
    assert "用户名或密码错误" in a.text and "用户名或密码错误" in b.text


def test_brute_force_is_limited_even_with_the_right_password(
    client: TestClient, workers: Engine
) -> None:
    for _ in range(5):
        assert (
            client.post(
                "/w/login", data={"username": "chen", "password": "guess-guess"}
            ).status_code
            == 401
        )
    r = client.post("/w/login", data={"username": "chen", "password": PASSWORD})
    assert r.status_code == 429 and "尝试次数过多" in r.text


def test_the_session_cookie_is_httponly_and_strict(client: TestClient, workers: Engine) -> None:
    r = client.post(
        "/w/login", data={"username": "chen", "password": PASSWORD}, follow_redirects=False
    )
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie


def test_a_post_without_the_csrf_token_is_refused(client: TestClient, workers: Engine) -> None:
    case_id = deposited_case(client, workers)
    aid = assign(workers, case_id, worker_id(workers, "chen"))
    login(client, "chen")
    assert client.post(f"/w/a/{aid}/ack", data={"csrf": "forged"}).status_code == 403
    with workers.connect() as conn:
        assert (
            conn.execute(select(Assignment.status).where(Assignment.id == aid)).scalar_one()
            == "offered"
        )


def test_a_worker_cannot_reach_another_workers_case(client: TestClient, workers: Engine) -> None:
    case_id = deposited_case(client, workers)
    assign(workers, case_id, worker_id(workers, "chen"))
    csrf = login(client, "liu")
    assert client.get(f"/w/c/{case_id}").status_code == 404
    assert client.get(f"/w/c/{case_id}/offline-open").status_code == 404
    assert client.post(f"/w/c/{case_id}/collected", data={"csrf": csrf}).status_code == 404
    assert case_id not in client.get("/w").text


def test_pickup_processing_and_return(
    client: TestClient, workers: Engine, sender: RecordingSender, key: SigningKey
) -> None:
    case_id = deposited_case(client, workers)
    aid = assign(workers, case_id, worker_id(workers, "chen"))
    csrf = login(client, "chen")
    assert case_id in client.get("/w").text
    assert client.post(f"/w/a/{aid}/ack", data={"csrf": csrf}).status_code == 200
    client.post(f"/w/c/{case_id}/open", data={"csrf": csrf})
    assert sender.sent[-1] == ("locker-1", "locker.open", {"compartment": 3, "case": case_id})
    code = client.get(f"/w/c/{case_id}/offline-open")
    assert "<svg" in code.text
    send(
        workers,
        "locker-1",
        ("compartment.emptied", {"compartment": 3, "case": case_id, "content": "documents"}),
    )
    with workers.connect() as conn:
        assert (
            conn.execute(select(Assignment.status).where(Assignment.id == aid)).scalar_one()
            == "done"
        )
    client.post(f"/w/c/{case_id}/processing", data={"csrf": csrf})
    client.post(f"/w/c/{case_id}/return", data={"csrf": csrf})
    assert sender.sent[-1] == ("locker-1", "locker.deposit", {"case": case_id, "content": "result"})
    send(
        workers,
        "locker-1",
        ("compartment.deposited", {"compartment": 8, "case": case_id, "content": "result"}),
    )
    with workers.connect() as conn:
        case = get_case(conn, case_id)
    assert (case.state, case.result_compartment) == ("result_stored", 8)


def test_the_offline_open_credential_is_for_that_compartment_only(
    client: TestClient, workers: Engine
) -> None:
    case_id = deposited_case(client, workers)
    assign(workers, case_id, worker_id(workers, "chen"))
    login(client, "chen")
    page = client.get(f"/w/c/{case_id}/offline-open").text
    assert "将打开 3 号格口" in page

    with workers.connect() as conn:
        row = conn.execute(
            select(IssuedCredential).where(IssuedCredential.case_id == case_id)
        ).one()
    assert (row.kind, row.compartment, row.device_id) == ("worker-open", 3, "locker-1")


def test_logout_ends_the_session(client: TestClient, workers: Engine) -> None:
    csrf = login(client, "chen")
    client.post("/w/logout", data={"csrf": csrf})
    assert client.get("/w", follow_redirects=False).status_code == 303


def test_the_app_is_installable(client: TestClient) -> None:
    manifest = client.get("/w/manifest.webmanifest").json()
    assert manifest["start_url"] == "/w" and manifest["display"] == "standalone"
    assert "serviceWorker" in client.get("/static/worker.js").text
    assert client.get("/w/sw.js").headers["content-type"].startswith("text/javascript")


def test_the_list_is_by_deadline_then_by_distance(client: TestClient, workers: Engine) -> None:
    """Tasks due in the same half hour come nearer locker first; an earlier half hour comes
    before both, however far its locker is."""
    cases = []
    for compartment in (3, 4, 5):
        case_id, _ = open_case(client)
        send(workers, "locker-1", ("compartment.deposited",
             {"compartment": compartment, "case": case_id, "content": "documents"}))  # fmt: skip
        cases.append(case_id)
    far_soon, near_later, far_later = cases
    chen = worker_id(workers, "chen")
    for case_id in cases:
        assign(workers, case_id, chen)
    slot = (NOW // SAME_DEADLINE_S + 4) * SAME_DEADLINE_S  # a half hour's start, ahead of now
    due = {far_soon: slot + 60, far_later: slot + SAME_DEADLINE_S + 60,
           near_later: slot + SAME_DEADLINE_S + 600}  # fmt: skip
    with workers.begin() as conn:
        # chen's base is at locker-1; locker-2 is about 1.5 km away (30.51, 114.31).
        conn.execute(
            update(Worker).where(Worker.id == chen).values(home_lat=30.50, home_lon=114.30)
        )
        for case_id, at in due.items():
            values: dict[str, object] = {"due_at": at}
            if case_id != near_later:
                values["device_id"] = "locker-2"
            conn.execute(update(Case).where(Case.id == case_id).values(**values))
    login(client, "chen")
    page = client.get("/w").text
    assert re.findall(r'class="card task" data-case="(C\w{9})"', page) == [
        far_soon,
        near_later,
        far_later,
    ]
    assert page.count("约 1.5 公里") == 2 and page.count("约 0.0 公里") == 1
