"""The SMS gateway emulator, driven by the server's real SMS adapter (``SmsGatewayNotifier``
built from a ``[notify]`` table, as `linli server run` builds it) over real HTTP."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from hardware_sim.smsgw import SmsGatewayEmulator, SmsTimeoutError
from sync_server.notify.errors import InvalidRecipientError
from sync_server.notify.settings import build_notifiers, parse_notify_settings


@pytest.fixture
def gateway() -> Iterator[SmsGatewayEmulator]:
    with SmsGatewayEmulator() as gw:
        yield gw


def test_the_servers_adapter_delivers_to_the_numbers_inbox(gateway: SmsGatewayEmulator) -> None:
    settings = parse_notify_settings(
        {"sms": "gateway", "sms_gateway": {"url": gateway.url, "sign": "【邻里】"}}
    )
    sms = build_notifiers(settings)["sms"]
    try:
        sms.send("13800000002", "application.code", "验证码123456，5分钟内有效。", {})
        sms.send("13800000003", "case.deposited", "您的材料已投入柜中。", {})
    finally:
        sms.close()
    inbox = gateway.inbox("13800000002")
    assert [m.text for m in inbox] == ["【邻里】验证码123456，5分钟内有效。"]
    assert gateway.count() == 2


def test_wait_for_returns_a_message_that_arrives_later(gateway: SmsGatewayEmulator) -> None:
    since = time.time()

    def later() -> None:
        time.sleep(0.3)
        httpx.post(gateway.url, json={"phone": "13800000004", "text": "办结 /c/CX/tok"})

    threading.Thread(target=later).start()
    found = gateway.wait_for("13800000004", lambda m: "/c/" in m.text, 5, after=since)
    assert found.text == "办结 /c/CX/tok"


def test_wait_for_names_the_masked_number_when_nothing_comes(
    gateway: SmsGatewayEmulator,
) -> None:
    httpx.post(gateway.url, json={"phone": "13800000005", "text": "another message"})
    with pytest.raises(SmsTimeoutError) as raised:
        gateway.wait_for("13800000005", lambda m: "验证码" in m.text, 0.2)
    assert "138****0005" in str(raised.value) and "1 messages" in str(raised.value)
    assert "13800000005" not in str(raised.value)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"not json", 400, "400"),
        (b'{"phone": "12345", "text": "x"}', 200, "2001"),
        (b'{"phone": "13800000006", "text": "  "}', 200, "2002"),
    ],
)
def test_bad_requests_get_the_gateways_error_and_deliver_nothing(
    gateway: SmsGatewayEmulator, body: bytes, status: int, code: str
) -> None:
    reply = httpx.post(gateway.url, content=body)
    assert (reply.status_code, reply.json()["code"]) == (status, code)
    assert gateway.count() == 0


def test_the_adapter_reads_an_invalid_number_as_permanent(gateway: SmsGatewayEmulator) -> None:
    """The adapter checks the number itself before the request; the gateway would refuse it."""
    settings = parse_notify_settings({"sms": "gateway", "sms_gateway": {"url": gateway.url}})
    sms = build_notifiers(settings)["sms"]
    try:
        with pytest.raises(InvalidRecipientError):
            sms.send("12345", "application.code", "验证码", {})
    finally:
        sms.close()
    assert gateway.count() == 0


def test_other_paths_and_huge_bodies_are_refused(gateway: SmsGatewayEmulator) -> None:
    other = gateway.url.replace("/sms/send", "/other")
    assert httpx.post(other, json={}).status_code == 404
    assert httpx.post(gateway.url, content=b"x" * 20000).status_code == 413


def test_closing_a_gateway_never_started_returns_at_once() -> None:
    gateway = SmsGatewayEmulator()
    started = time.monotonic()
    gateway.close()
    assert time.monotonic() - started < 1


def test_a_person_reads_a_numbers_inbox_over_http(gateway: SmsGatewayEmulator) -> None:
    httpx.post(gateway.url, json={"phone": "13800000007", "text": "验证码654321"})
    reply = httpx.get(gateway.inbox_url + "13800000007")
    assert reply.status_code == 200
    assert [m["text"] for m in reply.json()["messages"]] == ["验证码654321"]
    assert httpx.get(gateway.inbox_url + "13800000008").json()["messages"] == []
    assert httpx.get(gateway.inbox_url + "not-a-number").status_code == 404
