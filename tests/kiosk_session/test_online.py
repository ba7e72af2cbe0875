"""Online parts of a session through the real pipe: the kiosk's store and SyncAgent with an
RpcClient, a private real Mosquitto, the server's Consumer with an RpcServer.

The server methods are stand-ins with exactly the documented params, results and error codes
(docs/kiosk-session.md, "Server methods"), so these tests prove the kiosk's side of the contract
end to end: ``applications.list`` has no server handler yet, and the real ``residents.lookup``
needs a resident database these tests do not build (tests/records/test_lookup.py tests it).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select

from sync_server.models import Event
from sync_server.rpc import RpcMethodError
from tests.e2e import conftest as e2e
from tests.e2e.conftest import wait_for
from tests.rpc import conftest as rpc_fixtures
from tests.rpc.conftest import MakeRpcDevice, MakeRpcServer

from .conftest import RESIDENT, STRANGER, MakeKiosk, assert_wiped, households

broker = e2e.broker
db_url = e2e.db_url
engine = e2e.engine
make_consumer = e2e.make_consumer
make_device = e2e.make_device
make_rpc_server = rpc_fixtures.make_rpc_server
make_rpc_device = rpc_fixtures.make_rpc_device

ELSEWHERE = {**households()[RESIDENT.id_number]["household"], "address": "上海市浦东新区和平街8号"}
"""STRANGER's record in another community (on the server only)."""


def _server_events(engine: Engine, device: str, type_: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(Event.data).where(Event.device_id == device, Event.type == type_)
        ).all()
    return [dict(row[0]) for row in rows]


def test_stranger_found_online_gets_a_certificate_audited_at_the_server(
    make_kiosk: MakeKiosk,
    make_rpc_server: MakeRpcServer,
    make_rpc_device: MakeRpcDevice,
    engine: Engine,
) -> None:
    asked: list[dict[str, Any]] = []

    def lookup(device_id: str, params: dict[str, Any]) -> dict[str, Any]:
        asked.append(params)
        if params != {"id_number": STRANGER.id_number}:
            raise RpcMethodError("not-found", "no such resident")
        return {"id_number": STRANGER.id_number, "household": ELSEWHERE}

    make_rpc_server({"residents.lookup": lookup})
    device = make_rpc_device("dev-a")
    agent = device.device.agent
    kiosk = make_kiosk(store=device.device.store, rpc=device.rpc, online=lambda: agent.connected)

    kiosk.place(STRANGER)
    menu = kiosk.wait("menu")
    assert "已通过服务器查到" in menu.body
    assert asked == [{"id_number": STRANGER.id_number}]
    kiosk.session.touch("certificate")
    kiosk.session.touch("template", name="residence")
    serial = kiosk.wait("preview").body.rsplit("：", 1)[1]
    kiosk.session.touch("confirm")
    kiosk.wait("printed")
    assert len(kiosk.queue.wait_for_output(1)) == 1

    agent.notify()
    wait_for(lambda: bool(_server_events(engine, "dev-a", "certificate.issued")),
             what="the audit event at the server")  # fmt: skip
    (audit,) = _server_events(engine, "dev-a", "certificate.issued")
    assert audit["serial"] == serial and audit["id_number"] == STRANGER.id_number
    assert kiosk.desk.households.household_for(STRANGER) is None  # nothing cached locally

    kiosk.session.touch("end")
    assert_wiped(kiosk, STRANGER)


def test_online_application_printed_for_a_resident_without_a_record(
    make_kiosk: MakeKiosk, make_rpc_server: MakeRpcServer, make_rpc_device: MakeRpcDevice
) -> None:
    def lookup(device_id: str, params: dict[str, Any]) -> dict[str, Any]:
        raise RpcMethodError("not-found", "no such resident")

    def applications(device_id: str, params: dict[str, Any]) -> dict[str, Any]:
        assert params == {"id_number": STRANGER.id_number}
        return {
            "applications": [
                {"id": "A-1", "title": "高龄补贴资格认证", "status": "待打印签字",
                 "submitted_at": 1_773_600_000.0, "template": "elderly_subsidy",
                 "data": {"address": "上海市浦东新区和平街8号",
                          "elderly": {"level": "80-89周岁档"}}},
                {"id": "A-0", "title": "居住证申领", "status": "已受理",
                 "submitted_at": 1_773_000_000.0, "template": None, "data": {}},
            ]
        }  # fmt: skip

    make_rpc_server({"residents.lookup": lookup, "applications.list": applications})
    device = make_rpc_device("dev-a")
    agent = device.device.agent
    kiosk = make_kiosk(store=device.device.store, rpc=device.rpc, online=lambda: agent.connected)

    kiosk.place(STRANGER)
    unknown = kiosk.wait("resident_unknown")
    assert "certificate" not in {a.id for a in unknown.actions}
    kiosk.session.touch("applications")
    listed = kiosk.wait("applications")
    printable, kept = listed.items
    assert "待打印签字" in printable.text and printable.action is not None
    assert "已受理" in kept.text and kept.action is None and "无需在本机打印" in kept.text

    assert kiosk.session.touch("application", id="A-1")
    preview = kiosk.wait("preview")
    assert "高龄老人补贴资格认证表" in preview.title
    assert kiosk.session.touch("back")
    assert kiosk.session.screen.id == "applications"  # back to the list it came from
    kiosk.session.touch("application", id="A-1")
    kiosk.wait("preview")
    kiosk.session.touch("confirm")
    kiosk.wait("printed")
    assert len(kiosk.queue.wait_for_output(1)) == 1
    kiosk.session.touch("end")
    assert_wiped(kiosk, STRANGER)


def test_a_server_without_the_methods_is_said_plainly(
    make_kiosk: MakeKiosk, make_rpc_server: MakeRpcServer, make_rpc_device: MakeRpcDevice
) -> None:
    make_rpc_server({})  # today's server: only sys.ping
    device = make_rpc_device("dev-a")
    agent = device.device.agent
    kiosk = make_kiosk(store=device.device.store, rpc=device.rpc, online=lambda: agent.connected)

    kiosk.place(STRANGER)
    screen = kiosk.wait("resident_unknown_offline")
    assert "服务器暂未开通这项查询" in screen.body
    kiosk.session.touch("end")

    kiosk.place(RESIDENT)  # a cached resident: everything offline still works
    kiosk.session.touch("applications")
    problem = kiosk.wait("server_problem")
    assert "服务器暂未开通这项查询" in problem.body
    kiosk.session.touch("menu")
    assert kiosk.session.screen.id == "menu"


def test_a_server_that_does_not_answer_times_out(
    make_kiosk: MakeKiosk, make_rpc_server: MakeRpcServer, make_rpc_device: MakeRpcDevice
) -> None:
    site = make_rpc_server({})
    device = make_rpc_device("dev-a")
    agent = device.device.agent
    kiosk = make_kiosk(
        store=device.device.store,
        rpc=device.rpc,
        online=lambda: agent.connected,
        rpc_timeout_s=0.5,
    )
    site.consumer.stop()  # the broker keeps the kiosk connected; nobody answers

    kiosk.place(STRANGER)
    assert kiosk.session.screen.busy and kiosk.session.screen.id == "working"
    screen = kiosk.wait("resident_unknown_offline", timeout_s=5)
    assert "服务器没有及时答复" in screen.body
