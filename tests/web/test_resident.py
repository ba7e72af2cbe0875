"""The resident's pages and API: locker page, deposit, case page, collect credential."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from device.credential import SigningKey, verify
from sync_server.domain_models import Case
from tests.cases.conftest import NOW
from tests.cases.test_cases import send
from tests.web.conftest import RecordingSender


def open_case(client: TestClient, phone: str = "13800138000") -> tuple[str, str]:
    r = client.post(
        "/l/locker-1/s/residence", data={"phone": phone, "consent": "yes"}, follow_redirects=False
    )
    assert r.status_code == 303, r.text
    match = re.fullmatch(r"/c/(C\w{9})/([\w-]+)", r.headers["location"])
    assert match
    return match.group(1), match.group(2)


def test_the_lockers_page_lists_the_active_services(client: TestClient) -> None:
    r = client.get("/l/locker-1")
    assert r.status_code == 200
    assert "幸福社区1号柜" in r.text and "居住证明" in r.text
    assert "停办业务" not in r.text
    assert r.headers["referrer-policy"] == "no-referrer"


def test_a_service_page_lists_the_documents(client: TestClient) -> None:
    r = client.get("/l/locker-1/s/residence")
    assert "户口簿复印件" in r.text and "开柜存件" in r.text


@pytest.mark.parametrize(
    "path",
    [
        "/l/nope",
        "/l/kiosk-1",
        "/l/locker-1/s/retired",
        "/l/locker-1/s/nope",
        "/l/bad%20id",
        "/c/CAAAAAAAAA/aaaaaaaaaaaaaaaaaaaaaa",
    ],
)
def test_unknown_lockers_services_and_cases_are_404_in_chinese(
    client: TestClient, path: str
) -> None:
    r = client.get(path)
    assert r.status_code in (404, 422)
    assert "出错了" in r.text


def test_depositing_opens_a_case_and_asks_the_locker_for_a_compartment(
    client: TestClient, sender: RecordingSender, site: Engine
) -> None:
    case_id, token = open_case(client)
    assert sender.sent == [("locker-1", "locker.deposit", {"case": case_id})]
    page = client.get(f"/c/{case_id}/{token}")
    assert "等待存件" in page.text and page.headers["cache-control"] == "no-store"
    send(
        site,
        "locker-1",
        ("compartment.deposited", {"compartment": 4, "case": case_id, "content": "documents"}),
    )
    page = client.get(f"/c/{case_id}/{token}")
    assert 'data-state="deposited"' in page.text and 'id="compartment">4<' in page.text
    with site.connect() as conn:
        assert (
            conn.execute(select(Case.phone).where(Case.id == case_id)).scalar_one() == "13800138000"
        )


def test_a_bad_phone_number_is_refused_and_opens_nothing(
    client: TestClient, sender: RecordingSender
) -> None:
    r = client.post("/l/locker-1/s/residence", data={"phone": "12345", "consent": "yes"})
    assert r.status_code == 422 and "手机号应为11位数字" in r.text
    r = client.post("/l/locker-1/s/residence", data={"phone": "", "consent": ""})
    assert r.status_code == 422 and "同意" in r.text
    assert sender.sent == []


def test_another_residents_case_cannot_be_reached_by_editing_the_url(client: TestClient) -> None:
    mine, my_token = open_case(client)
    theirs, _ = open_case(client)
    assert client.get(f"/c/{theirs}/{my_token}").status_code == 404
    assert client.post(f"/c/{theirs}/{my_token}/reopen").status_code == 404
    r = client.get(f"/api/v1/cases/{theirs}", headers={"X-Case-Token": my_token})
    assert r.status_code == 404
    assert client.get(f"/c/{mine}/{my_token}").status_code == 200


def test_a_cross_site_form_post_is_refused(client: TestClient, sender: RecordingSender) -> None:
    r = client.post(
        "/l/locker-1/s/residence",
        data={"consent": "yes"},
        headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
    )
    assert r.status_code == 403
    assert sender.sent == []


def test_an_offline_locker_is_said_plainly_and_the_resident_can_retry(
    client: TestClient, sender: RecordingSender
) -> None:
    sender.online = False
    r = client.post("/api/v1/lockers/locker-1/cases", json={"service": "residence"})
    assert r.status_code == 201 and r.json()["compartment_requested"] is False
    sender.online = True
    case_id, token = r.json()["case"], r.json()["token"]
    client.post(f"/c/{case_id}/{token}/reopen")
    assert sender.sent == [("locker-1", "locker.deposit", {"case": case_id})]


def test_the_collect_credential_opens_only_the_result_compartment(
    client: TestClient, site: Engine, key: SigningKey
) -> None:
    case_id, token = open_case(client)
    headers = {"X-Case-Token": token}
    assert client.post(f"/api/v1/cases/{case_id}/credential", headers=headers).status_code == 409
    send(
        site,
        "locker-1",
        ("compartment.deposited", {"compartment": 2, "case": case_id, "content": "documents"}),
    )
    send(
        site,
        "locker-1",
        ("compartment.emptied", {"compartment": 2, "case": case_id, "content": "documents"}),
    )
    send(
        site,
        "locker-1",
        ("compartment.deposited", {"compartment": 6, "case": case_id, "content": "result"}),
    )
    body = client.post(f"/api/v1/cases/{case_id}/credential", headers=headers).json()
    claims = verify(body["text"], {key.kid: key.verify_key}, audience="locker-1", now=NOW)
    assert (claims.kind, claims.sub, claims.compartment) == ("collect", case_id, 6)
    page = client.get(f"/c/{case_id}/{token}/collect")
    assert "<svg" in page.text and 'id="compartment">6<' in page.text


def test_the_api_validates_its_input(client: TestClient) -> None:
    r = client.post("/api/v1/lockers/locker-1/cases", json={"service": "Residence!"})
    assert r.status_code == 422
    r = client.post("/api/v1/lockers/locker-1/cases", json={"service": "residence", "phone": "abc"})
    assert r.status_code == 422 and "手机号" in str(r.json())
    r = client.get("/api/v1/cases/CAAAAAAAAA", headers={"X-Case-Token": "short"})
    assert r.status_code == 422
