"""``applications.list`` and ``applications.status``: the methods alone (every refusal, the
audit), then end to end through a real Mosquitto: the server's Consumer with an RpcServer, a
kiosk's store and SyncAgent with an RpcClient, and the kiosk's own ``OnlineApplications``. On
SQLite and on PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, select, update

from device.idcard.identity import Identity
from device.sync.rpc import RpcRemoteError
from kiosk_ui.online import OnlineApplications
from sync_server.applications import file_application, transition, validate_submission
from sync_server.applications_rpc import (
    LIST_METHOD,
    STATUS_METHOD,
    applications_list,
    applications_status,
)
from sync_server.domain_models import AuditEntry, ServicePoint
from sync_server.rpc import RpcMethodError
from tests.cases.conftest import NOW
from tests.cases.test_cases import new_case, send
from tests.e2e import conftest as e2e
from tests.rpc import conftest as rpc_fixtures
from tests.rpc.conftest import MakeRpcDevice, MakeRpcServer

from .conftest import LI, PHONE, WANG

broker = e2e.broker
make_consumer = e2e.make_consumer
make_device = e2e.make_device
make_rpc_server = rpc_fixtures.make_rpc_server
make_rpc_device = rpc_fixtures.make_rpc_device

NEWEST_FIRST = ("residence_permit", "elderly_subsidy", "difficulty")
Method = Callable[[str, dict[str, Any]], dict[str, Any]]


def filed(engine: Engine, kind: str, at: float, *, done: bool = False, **fields: Any) -> str:
    submission = validate_submission(kind, "王伟", WANG, PHONE, fields)
    with engine.begin() as conn:
        application, _ = file_application(conn, at, submission)
        if done:
            accepted = transition(conn, application, "accepted", at + 1, actor="worker:1")
            transition(conn, accepted, "done", at + 2, actor="worker:1")
    return application.id


@pytest.fixture
def applied(town: Engine) -> dict[str, str]:
    """Wang's three applications: a finished difficulty one, an elderly-subsidy one just filed,
    a residence-permit booking."""
    return {
        "difficulty": filed(
            town,
            "difficulty",
            NOW - 300,
            done=True,
            monthly_income="820.5",
            reason="家庭成员患重病",
        ),
        "elderly_subsidy": filed(town, "elderly_subsidy", NOW - 200),
        "residence_permit": filed(town, "residence_permit", NOW - 100, note="周六上午"),
    }


@pytest.fixture
def list_(town: Engine) -> Method:
    return applications_list(town, clock=lambda: NOW)


@pytest.fixture
def status(town: Engine) -> Method:
    return applications_status(town, clock=lambda: NOW)


def test_a_kiosk_lists_a_residents_own_applications_newest_first(
    list_: Method, applied: dict[str, str], town: Engine
) -> None:
    answer = list_("dev-a", {"id_number": WANG.lower()})
    items = answer["applications"]
    assert [a["id"] for a in items] == [applied[k] for k in NEWEST_FIRST]
    assert all(set(a) == {"id", "title", "status", "submitted_at", "template", "data"}
               for a in items)  # fmt: skip
    permit, elderly, difficulty = items
    assert (permit["template"], elderly["template"]) == (None, None)  # not printable yet
    assert difficulty["template"] == "difficulty"
    assert difficulty["data"] == {
        "difficulty": {"monthly_income": 820.5, "reason": "家庭成员患重病"}
    }
    assert list_("dev-a", {"id_number": LI}) == {"applications": []}
    with town.connect() as conn:
        details = (
            conn.execute(select(AuditEntry.detail).where(AuditEntry.action == LIST_METHOD))
            .scalars()
            .all()
        )
    assert details == [{"count": 3}, {"count": 0}]


@pytest.mark.parametrize(
    ("device", "params", "code"),
    [
        ("dev-a", {"id_number": WANG[:-1] + ("1" if WANG[-1] != "1" else "2")}, "bad-id-number"),
        ("dev-a", {"id_number": 110105}, "bad-request"),
        ("dev-a", {"id_number": WANG, "more": 1}, "bad-request"),
        ("dev-b", {"id_number": WANG}, "forbidden"),  # a locker
        ("kiosk-2", {"id_number": WANG}, "forbidden"),  # revoked below
        ("stranger", {"id_number": WANG}, "forbidden"),
    ],
)
def test_list_refusals(
    list_: Method, town: Engine, device: str, params: dict[str, Any], code: str
) -> None:
    with town.begin() as conn:
        conn.execute(
            update(ServicePoint).where(ServicePoint.device_id == "kiosk-2").values(revoked_at=NOW)
        )
    with pytest.raises(RpcMethodError) as err:
        list_(device, params)
    assert err.value.code == code
    if code == "forbidden":
        with town.connect() as conn:
            refused = conn.execute(
                select(AuditEntry.device_id, AuditEntry.detail).where(
                    AuditEntry.action == f"{LIST_METHOD}_refused"
                )
            ).one()
        assert refused.device_id == device and WANG not in str(refused.detail)


def test_status_of_an_application_and_a_case_without_personal_data(
    status: Method, applied: dict[str, str], town: Engine
) -> None:
    number = applied["difficulty"]
    answer = status("dev-a", {"number": number})
    assert answer == {"number": number, "title": "生活困难证明申请", "status": "已办结",
                      "updated_at": NOW - 298}  # fmt: skip
    case_id, _ = new_case(town)
    deposited = {"compartment": 3, "case": case_id, "content": "documents"}
    send(town, "locker-1", ("compartment.deposited", deposited))
    case = status("dev-a", {"number": case_id})
    assert case["title"] == "居住证明" and case["status"] == "材料已存入，等待网格员取件"
    assert set(case) == {"number", "title", "status", "updated_at"}
    for text in (WANG, "王伟", PHONE):
        assert text not in str(answer) and text not in str(case)


@pytest.mark.parametrize(
    ("device", "params", "code"),
    [
        ("dev-a", {"number": "A222222222"}, "not-found"),
        ("dev-a", {"number": "C222222222"}, "not-found"),
        ("dev-a", {"number": "A0000"}, "bad-request"),
        ("dev-a", {"number": "B222222222"}, "bad-request"),
        ("dev-a", {"number": 7}, "bad-request"),
        ("dev-a", {}, "bad-request"),
        ("dev-b", {"number": "A222222222"}, "forbidden"),
    ],
)
def test_status_refusals(
    status: Method, town: Engine, device: str, params: dict[str, Any], code: str
) -> None:
    with pytest.raises(RpcMethodError) as err:
        status(device, params)
    assert err.value.code == code
    if code in ("not-found", "forbidden"):
        with town.connect() as conn:
            actions = conn.execute(select(AuditEntry.action, AuditEntry.detail)).all()
        assert any(a.action.startswith(STATUS_METHOD) and a.detail["found"] is False
                   for a in actions)  # fmt: skip


# -- end to end ----------------------------------------------------------------------------------


def wang() -> Identity:
    return Identity(
        name="王伟", gender="男", nation="汉", birth=dt.date(1945, 3, 12), address="幸福路1号",
        id_number=WANG, issuer="北京市公安局西城分局", valid_from=dt.date(2015, 1, 1),
        valid_to=None,
    )  # fmt: skip


def test_the_kiosk_lists_and_asks_through_the_broker(
    town: Engine,
    applied: dict[str, str],
    make_rpc_server: MakeRpcServer,
    make_rpc_device: MakeRpcDevice,
) -> None:
    make_rpc_server(
        {LIST_METHOD: applications_list(town), STATUS_METHOD: applications_status(town)}
    )
    kiosk = make_rpc_device("dev-a")
    online = OnlineApplications(kiosk.rpc, lambda: kiosk.device.agent.connected, timeout_s=10)

    found = online.list_for(wang())
    assert [a.id for a in found] == [applied[k] for k in NEWEST_FIRST]
    difficulty = found[2]
    assert difficulty.template == "difficulty" and "已办结" in difficulty.status
    assert difficulty.data == {"difficulty": {"monthly_income": 820.5, "reason": "家庭成员患重病"}}
    assert found[1].template is None and found[1].status == "已提交，等待社区受理"

    asked = applied["elderly_subsidy"].lower()  # typed on the kiosk's keyboard
    answer = kiosk.rpc.call(STATUS_METHOD, {"number": asked}, timeout_s=10)
    assert (
        answer["number"] == asked
        and answer["status"] == "已提交，等待社区受理"
        and answer["title"] == "高龄津贴申领"
    )
    with pytest.raises(RpcRemoteError) as err:
        kiosk.rpc.call(STATUS_METHOD, {"number": "A222222222"}, timeout_s=10)
    assert err.value.code == "not-found"

    # What the kiosk's 查询办理进度 screen calls (the number as the session normalised it).
    progress = online.progress(applied["elderly_subsidy"])
    assert progress is not None
    assert (progress.number, progress.title) == (applied["elderly_subsidy"], "高龄津贴申领")
    assert progress.status == "已提交，等待社区受理" and progress.updated_at is not None
    assert online.progress("A222222222") is None

    locker = make_rpc_device("dev-b")
    with pytest.raises(RpcRemoteError) as err:
        locker.rpc.call(LIST_METHOD, {"id_number": WANG}, timeout_s=10)
    assert err.value.code == "forbidden"
