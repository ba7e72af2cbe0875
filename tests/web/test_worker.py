"""The worker app: login, limits, CSRF, who sees which case, and a pickup and return."""

from __future__ import annotations

import re

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import Engine, insert, select

from device.credential import SigningKey
from sync_server.cases import get_case, move
from sync_server.domain_models import Assignment, IssuedCredential, Worker
from sync_server.sitedata import load_site_data
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
