"""RpcServer's edges that the broker cannot provoke: what it answers through ``publish``
(Consumer.publish's signature) for results it cannot send, and how it routes the answer."""

from __future__ import annotations

import json
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.properties import Properties

from device.protocol import MessageError, parse_rpc_response, topic
from sync_server.rpc import (
    DEFAULT_ANSWER_EXPIRY_S,
    MAX_ANSWER_EXPIRY_S,
    RpcMethodError,
    RpcServer,
)
from tests.rpc.conftest import rpc_properties

REPLY_TO = topic("dev-a", "down/rpc")


class Published:
    """Records what RpcServer hands to ``publish``; ``up=False`` plays a disconnected consumer."""

    def __init__(self, *, up: bool = True, fail: bool = False) -> None:
        self.up = up
        self.fail = fail
        self.sent: list[tuple[str, str, bytes, Properties | None, str | None]] = []

    def __call__(
        self,
        device: str,
        suffix: str,
        payload: bytes,
        *,
        properties: Properties | None = None,
        qos: int = 1,
        response_topic: str | None = None,
    ) -> bool:
        if self.fail:
            raise ValueError("a response topic must be the device's own down/ topic")
        self.sent.append((device, suffix, payload, properties, response_topic))
        return self.up

    def error_code(self) -> str:
        error = parse_rpc_response(self.sent[-1][2]).error
        assert error is not None
        return error.code


def prop(properties: Properties | None, name: str) -> Any:
    return getattr(properties, name, None)


def message(payload: bytes, properties: Properties) -> mqtt.MQTTMessage:
    msg = mqtt.MQTTMessage(mid=1, topic=topic("dev-a", "up/rpc").encode())
    msg.payload = payload
    msg.properties = properties
    return msg


def request(method: str, params: dict[str, Any] | None = None) -> bytes:
    return json.dumps({"method": method, "params": params or {}}).encode()


def test_the_answer_goes_to_the_devices_down_rpc_with_its_correlation_and_expiry() -> None:
    published = Published()
    server = RpcServer(published, clock=lambda: 1_790_000_000.5)
    server.handle("dev-a", message(request("sys.ping"), rpc_properties(REPLY_TO, b"k" * 16, 9)))
    device, suffix, payload, properties, reply_to = published.sent[0]
    assert (device, suffix, reply_to) == ("dev-a", "down/rpc", REPLY_TO)
    assert (prop(properties, "CorrelationData"), prop(properties, "MessageExpiryInterval")) == (
        b"k" * 16,
        9,
    )
    assert parse_rpc_response(payload).result == {"time": 1_790_000_000.5}


@pytest.mark.parametrize(
    ("expiry", "expected"),
    [(None, DEFAULT_ANSWER_EXPIRY_S), (100_000, MAX_ANSWER_EXPIRY_S), (3, 3)],
)
def test_the_answers_expiry_follows_the_request_within_bounds(
    expiry: int | None, expected: int
) -> None:
    published = Published()
    RpcServer(published).handle(
        "dev-a", message(request("sys.ping"), rpc_properties(REPLY_TO, b"k", expiry))
    )
    assert prop(published.sent[0][3], "MessageExpiryInterval") == expected


@pytest.mark.parametrize(
    ("result", "code"),
    [
        ("x" * 70_000, "result-too-large"),
        ({"when": object()}, "internal"),
        ({"x": float("nan")}, "internal"),
        ({1, 2}, "internal"),
    ],
)
def test_a_result_that_cannot_be_sent_is_answered_with_a_code(
    result: Any, code: str, caplog: pytest.LogCaptureFixture
) -> None:
    published = Published()
    server = RpcServer(published)
    server.register("test.result", lambda _device, _params: result)
    server.handle("dev-a", message(request("test.result"), rpc_properties(REPLY_TO, b"k")))
    assert published.error_code() == code
    assert "test.result" in caplog.text
    assert server.stats().errors == {code: 1}


def test_over_long_correlation_data_is_refused_unanswered() -> None:
    published = Published()
    server = RpcServer(published)
    with pytest.raises(MessageError, match="correlation data over 64 bytes"):
        server.handle("dev-a", message(request("sys.ping"), rpc_properties(REPLY_TO, b"k" * 65)))
    assert published.sent == [] and server.stats().refused == 1


def test_an_answer_that_cannot_be_published_is_counted_and_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # An exception here would reach the consumer, which takes it for a storage failure.
    for published in (Published(up=False), Published(fail=True)):
        server = RpcServer(published)
        server.handle("dev-a", message(request("sys.ping"), rpc_properties(REPLY_TO, b"k")))
        assert server.stats().unsent == 1
    assert caplog.text.count("answer to rpc sys.ping not sent") == 2
    assert "not connected" in caplog.text and "ValueError" in caplog.text


def test_method_names_and_error_codes_are_checked_when_registered() -> None:
    server = RpcServer(Published())
    for bad in ("ping", "Sys.Ping", "a..b", "a.b-c", "a." + "b" * 70):
        with pytest.raises(ValueError, match="lower-case dotted"):
            server.register(bad, lambda _d, _p: None)
    with pytest.raises(ValueError, match="already registered"):
        server.register("sys.ping", lambda _d, _p: None)
    with pytest.raises(ValueError, match="must match"):
        RpcMethodError("Not Found", "m")
    assert RpcMethodError("not-found", "m" * 600).message == "m" * 512
    assert server.methods == ("sys.ping",)
