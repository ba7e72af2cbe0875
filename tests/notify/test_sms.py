"""The SMS gateway adapter against a local HTTP server: request shapes, success tests, and every
kind of failure classified as temporary or permanent."""

from __future__ import annotations

import json
import logging
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hardware_sim.processes import free_tcp_port
from sync_server.notify import (
    InvalidRecipientError,
    NotifyConfigError,
    PermanentDeliveryError,
    SmsGatewayNotifier,
    TemporaryDeliveryError,
    render,
)
from tests.notify.conftest import HttpSim, Reply

PHONE = "13812345678"
PARAMS = {
    "service": "高龄津贴申领",
    "locker": "幸福里3号柜",
    "case_no": "C20240001",
    "link": "https://l.example.cn/c/Ab3",
}
TEXT = render("case.result_ready", PARAMS)


@pytest.fixture
def make_sms(http_sim: HttpSim) -> Iterator[Any]:
    made: list[SmsGatewayNotifier] = []

    def make(**kwargs: Any) -> SmsGatewayNotifier:
        kwargs.setdefault("url", http_sim.url + "/sms/send")
        notifier = SmsGatewayNotifier(**kwargs)
        made.append(notifier)
        return notifier

    yield make
    for notifier in made:
        notifier.close()


def send(notifier: SmsGatewayNotifier, recipient: str = PHONE) -> None:
    notifier.send(recipient, "case.result_ready", TEXT, PARAMS)


def test_json_body_with_placeholders_secrets_and_sign(http_sim: HttpSim, make_sms: Any) -> None:
    notifier = make_sms(
        body_template={
            "account": "N8812",
            "password": "{api_secret}",
            "mobile": "{phone}",
            "msg": "{sign}{text}",
            "extra": {"tpl": "{template}", "to": ["{phone_e164}"], "report": True},
        },
        headers={"X-Api-Key": "{api_key}"},
        sign="【邻里】",
        secrets={"api_key": "k-123", "api_secret": "s-456"},
    )
    send(notifier, "+86 138 1234 5678")
    (seen,) = http_sim.requests("/sms/send")
    assert seen.method == "POST"
    assert seen.headers["x-api-key"] == "k-123"
    assert seen.headers["content-type"].startswith("application/json")
    assert seen.json() == {
        "account": "N8812",
        "password": "s-456",
        "mobile": PHONE,
        "msg": "【邻里】" + TEXT,
        "extra": {"tpl": "case.result_ready", "to": ["+86" + PHONE], "report": True},
    }


def test_default_body_is_phone_and_signed_text(http_sim: HttpSim, make_sms: Any) -> None:
    send(make_sms(sign="【邻里】"))
    assert http_sim.requests()[0].json() == {"phone": PHONE, "text": "【邻里】" + TEXT}


def test_form_body(http_sim: HttpSim, make_sms: Any) -> None:
    send(make_sms(body_template={"to": "{phone}", "content": "{text}"}, body_format="form"))
    seen = http_sim.requests()[0]
    assert seen.headers["content-type"] == "application/x-www-form-urlencoded"
    assert seen.form() == {"to": PHONE, "content": TEXT}


def test_get_with_query_and_bare_answer(http_sim: HttpSim, make_sms: Any) -> None:
    """smsbao style: GET ?u=&p=&m=&c= answered by a bare ``0``."""
    http_sim.default("/sms", Reply(body="0"))
    notifier = make_sms(
        url=http_sim.url + "/sms",
        method="GET",
        query={"u": "linli", "p": "{api_key}", "m": "{phone}", "c": "{sign}{text}"},
        sign="【邻里】",
        success_field="",
        success_value="0",
        secrets={"api_key": "md5pass"},
    )
    send(notifier)
    (seen,) = http_sim.requests("/sms")
    assert seen.method == "GET"
    assert seen.query == {"u": "linli", "p": "md5pass", "m": PHONE, "c": "【邻里】" + TEXT}
    http_sim.default("/sms", Reply(body="41"))
    with pytest.raises(PermanentDeliveryError, match="code 41"):
        send(notifier)


def test_jinja2_template_body(http_sim: HttpSim, make_sms: Any) -> None:
    notifier = make_sms(
        body_template=(
            '{"to": {{ phone|tojson }}, "content": {{ (sign ~ text)|tojson }}, '
            '"vars": {{ params|tojson }}}'
        ),
        sign="【邻里】",
    )
    tricky = {**PARAMS, "service": 'a "quoted"\nname'}
    notifier.send(PHONE, "case.result_ready", render("case.result_ready", tricky), tricky)
    seen = http_sim.requests()[0]
    assert seen.headers["content-type"] == "application/json; charset=utf-8"
    body = seen.json()
    assert body["to"] == PHONE
    assert 'a "quoted"\nname' in body["content"]
    assert body["vars"] == tricky


def test_nested_success_field_and_retryable_codes(http_sim: HttpSim, make_sms: Any) -> None:
    notifier = make_sms(
        success_field="result.status",
        success_value="0",
        message_field="result.message",
        retryable_values=["1011"],
    )
    http_sim.script("/sms/send", Reply(body={"result": {"status": 0}}))
    send(notifier)  # 0 and "0" both match
    http_sim.script(
        "/sms/send", Reply(body={"result": {"status": 1011, "message": "流量控制，请稍后"}})
    )
    with pytest.raises(TemporaryDeliveryError, match=r"code 1011.*流量控制"):
        send(notifier)
    http_sim.script("/sms/send", Reply(body={"result": {"status": 2}}))
    with pytest.raises(PermanentDeliveryError, match="code 2"):
        send(notifier)


def test_refusal_reason_masks_the_number_the_gateway_echoes(
    http_sim: HttpSim, make_sms: Any
) -> None:
    http_sim.script(
        "/sms/send", Reply(body={"code": "103", "msg": f"手机号{PHONE}在黑名单中 (+86{PHONE})"})
    )
    with pytest.raises(PermanentDeliveryError) as err:
        send(make_sms(message_field="msg"))
    assert PHONE not in err.value.reason
    assert "138****5678" in err.value.reason
    assert "code 103" in err.value.reason


@pytest.mark.parametrize(
    ("reply", "kind", "words"),
    [
        (Reply(500, {"code": "0"}), TemporaryDeliveryError, "HTTP 500"),
        (Reply(503, "busy"), TemporaryDeliveryError, "HTTP 503"),
        (Reply(429, "slow down"), TemporaryDeliveryError, "HTTP 429"),
        (Reply(400, {"code": "0"}), PermanentDeliveryError, "HTTP 400"),
        (Reply(401, "bad key"), PermanentDeliveryError, "HTTP 401"),
        (Reply(302, ""), PermanentDeliveryError, "final URL"),
        (Reply(200, "<html>ok</html>"), PermanentDeliveryError, "not JSON"),
        (Reply(200, ["0"]), PermanentDeliveryError, "not an object"),
        (Reply(200, {"status": "0"}), PermanentDeliveryError, "no field 'code'"),
        (Reply(200, {"code": "1"}), PermanentDeliveryError, "code 1"),
    ],
)
def test_answers_are_classified(
    http_sim: HttpSim, make_sms: Any, reply: Reply, kind: type[Exception], words: str
) -> None:
    http_sim.script("/sms/send", reply)
    with pytest.raises(kind, match=words) as err:
        send(make_sms())
    assert isinstance(err.value, TemporaryDeliveryError) == err.value.retryable  # type: ignore[attr-defined]


def test_slow_gateway_is_a_temporary_timeout(http_sim: HttpSim, make_sms: Any) -> None:
    http_sim.script("/sms/send", Reply(delay_s=1.5))
    notifier = make_sms(timeout_s=0.3)
    started = time.monotonic()
    with pytest.raises(TemporaryDeliveryError, match=r"did not answer within 0\.3 s"):
        send(notifier)
    assert time.monotonic() - started < 1.2


def test_connection_refused_is_temporary(make_sms: Any) -> None:
    notifier = make_sms(url=f"http://127.0.0.1:{free_tcp_port()}/sms", timeout_s=2)
    with pytest.raises(TemporaryDeliveryError, match="unreachable"):
        send(notifier)


@pytest.mark.parametrize("bad", ["1381234567", "021-88886666", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o", ""])
def test_a_bad_phone_is_refused_before_any_request(
    http_sim: HttpSim, make_sms: Any, bad: str
) -> None:
    with pytest.raises(InvalidRecipientError, match="not a mainland mobile") as err:
        send(make_sms(), bad)
    assert not err.value.retryable
    assert http_sim.requests() == []


def test_httpx_request_log_carries_no_query(
    http_sim: HttpSim, make_sms: Any, caplog: pytest.LogCaptureFixture
) -> None:
    http_sim.default("/sms", Reply(body={"code": "0"}))
    notifier = make_sms(
        url=http_sim.url + "/sms",
        method="GET",
        query={"key": "{api_key}", "m": "{phone}"},
        secrets={"api_key": "sekrit-key"},
    )
    with caplog.at_level(logging.DEBUG):
        send(notifier)
    assert "HTTP Request" in caplog.text  # httpx logged the request...
    assert "sekrit-key" not in caplog.text  # ...without its query string
    assert PHONE not in caplog.text
    assert "sekrit" not in repr(notifier)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"url": "ftp://gw/sms"}, "http:// or https://"),
        ({"body_template": {"to": "{phnoe}"}}, "unknown placeholders \\['phnoe'\\]"),
        ({"headers": {"X-Key": "{api_key}"}}, "unknown placeholders \\['api_key'\\]"),
        ({"body_template": "{{ phone "}, "not a valid jinja2 template"),
        ({"timeout_s": 0}, "timeout_s must be > 0"),
        ({"method": "GET", "body_template": {"to": "{phone}"}}, "GET takes query"),
        ({"secrets": {"text": "x"}}, "secret name 'text'"),
    ],
)
def test_bad_configuration_is_refused_at_construction(kwargs: dict[str, Any], words: str) -> None:
    kwargs.setdefault("url", "http://127.0.0.1:9/sms")
    with pytest.raises(NotifyConfigError, match=words):
        SmsGatewayNotifier(**kwargs)


def test_unicode_text_arrives_intact(http_sim: HttpSim, make_sms: Any) -> None:
    send(make_sms())
    raw = http_sim.requests()[0].body
    assert json.loads(raw.decode("utf-8"))["text"] == TEXT


def test_url_placeholders_are_percent_encoded(http_sim: HttpSim, make_sms: Any) -> None:
    """A key holding / or ? stays one path segment instead of changing the URL."""
    notifier = make_sms(url=http_sim.url + "/v2/{api_key}/sms", secrets={"api_key": "k/1?x=2"})
    send(notifier)
    (seen,) = http_sim.requests()
    assert seen.path == "/v2/k%2F1%3Fx%3D2/sms"
    assert seen.query == {}
    assert "k/1" not in repr(notifier)


def test_registered_template_gateway_from_the_docs(http_sim: HttpSim, make_sms: Any) -> None:
    """The 模板短信 example of docs/notifications.md: template code and variables, no text."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "notifications.md").read_text("utf-8")
    block = doc[doc.index("# A gateway that sends only pre-registered") :]
    body_template = tomllib.loads(block[: block.index("```")])["body_template"]
    notifier = make_sms(body_template=body_template, sign="邻里")
    send(notifier)
    assert http_sim.requests()[0].json() == {
        "mobile": PHONE,
        "sign": "邻里",
        "tpl": "SMS_1001",
        "vars": PARAMS,
    }
    with pytest.raises(PermanentDeliveryError, match="body_template failed"):
        notifier.send(PHONE, "case.overdue", "x", {"case_no": "1", "service": "s", "deadline": "d"})
