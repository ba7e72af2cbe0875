"""Request/response end to end: real Mosquitto, real Consumer + RpcServer, real SyncAgent +
RpcClient. Each test asserts what the kiosk (or the technician reading the log) would see."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import pytest
from sqlalchemy import Engine

from device.clock import FakeClock
from device.protocol import MAX_RPC_BYTES, parse_rpc_response, topic
from device.sync import SyncError
from device.sync.rpc import (
    RpcClient,
    RpcError,
    RpcRemoteError,
    RpcRequestError,
    RpcTimeoutError,
    RpcUnavailableError,
)
from hardware_sim.mosquitto import MosquittoTestBroker
from sync_server.rpc import RpcMethodError
from tests.e2e.conftest import MakeDevice, exactly_once, wait_for
from tests.rpc.conftest import (
    Collector,
    MakeRpcDevice,
    MakeRpcServer,
    prop,
    rpc_properties,
)

ID_NUMBER = "110101199003077777"  # an ID card number: must never reach a log line


def echo(device: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"device": device, "params": params}


def test_a_call_returns_the_methods_result(
    make_rpc_server: MakeRpcServer, make_rpc_device: MakeRpcDevice
) -> None:
    make_rpc_server({"test.echo": echo})
    dev = make_rpc_device("dev-a")
    params = {"id": ID_NUMBER, "n": [1, 2.5, None, True], "name": "李四"}
    assert dev.rpc.call("test.echo", params, timeout_s=5) == {"device": "dev-a", "params": params}
    before = time.time()
    pong = dev.rpc.call("sys.ping", timeout_s=5)
    assert before - 1 <= pong["time"] <= time.time() + 1
    stats = dev.rpc.stats()
    assert (stats.calls, stats.answered, stats.dropped, stats.malformed) == (2, 2, 0, 0)


def test_concurrent_calls_from_two_threads_each_get_their_own_answer(
    make_rpc_server: MakeRpcServer, make_rpc_device: MakeRpcDevice
) -> None:
    make_rpc_server({"test.echo": echo})
    dev = make_rpc_device("dev-a")
    wrong: list[Any] = []

    def caller(name: str) -> None:
        for i in range(25):
            params = {"thread": name, "i": i}
            result = dev.rpc.call("test.echo", params, timeout_s=5)
            if result["params"] != params:
                wrong.append((params, result))

    threads = [threading.Thread(target=caller, args=(name,)) for name in ("ui", "worker")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert wrong == []
    assert dev.rpc.stats().answered == 50


def test_unknown_raising_and_refusing_methods_give_remote_errors_with_their_code(
    make_rpc_server: MakeRpcServer,
    make_rpc_device: MakeRpcDevice,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def lookup(_device: str, params: dict[str, Any]) -> Any:
        return {"known": {}}[params["id"]]  # KeyError quoting the ID number

    def refuse(_device: str, _params: dict[str, Any]) -> Any:
        raise RpcMethodError("not-found", "no such resident at this site")

    site = make_rpc_server({"residents.lookup": lookup, "residents.find": refuse})
    dev = make_rpc_device("dev-a")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(RpcRemoteError) as unknown:
        dev.rpc.call("residents.nope", {"id": ID_NUMBER}, timeout_s=5)
    assert unknown.value.code == "unknown-method"
    with pytest.raises(RpcRemoteError) as internal:
        dev.rpc.call("residents.lookup", {"id": ID_NUMBER}, timeout_s=5)
    assert internal.value.code == "internal"
    with pytest.raises(RpcRemoteError) as refused:
        dev.rpc.call("residents.find", {"id": ID_NUMBER}, timeout_s=5)
    assert (refused.value.code, refused.value.message) == (
        "not-found",
        "no such resident at this site",
    )
    assert "KeyError" in caplog.text and "residents.lookup" in caplog.text
    assert ID_NUMBER not in caplog.text
    assert site.server.stats().errors == {"unknown-method": 1, "internal": 1, "not-found": 1}
    assert dev.rpc.call("sys.ping", timeout_s=5)["time"] > 0  # the consumer kept going


def test_a_stopped_server_gives_a_timeout_within_the_timeout_plus_a_margin(
    make_rpc_server: MakeRpcServer, make_rpc_device: MakeRpcDevice
) -> None:
    site = make_rpc_server()
    dev = make_rpc_device("dev-a")
    assert dev.rpc.call("sys.ping", timeout_s=5)["time"] > 0
    site.consumer.stop()
    started = time.monotonic()
    with pytest.raises(RpcTimeoutError, match=r"sys\.ping within 0\.5 s"):
        dev.rpc.call("sys.ping", timeout_s=0.5)
    assert 0.5 <= time.monotonic() - started < 0.9
    assert dev.rpc.stats().timeouts == 1


def test_the_timeout_follows_the_injected_clock(make_rpc_device: MakeRpcDevice) -> None:
    clock = FakeClock()
    dev = make_rpc_device("dev-a", clock=clock)  # no server: nothing will answer
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            dev.rpc.call("sys.ping", timeout_s=60)
        except BaseException as err:
            outcome.append(err)

    thread = threading.Thread(target=call)
    thread.start()
    time.sleep(0.3)
    assert thread.is_alive() and outcome == []  # real time passing is not the timeout
    clock.advance(60)
    thread.join(1.0)
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], RpcTimeoutError)


def test_an_offline_agent_gives_unavailable_at_once(
    broker: MosquittoTestBroker, make_rpc_server: MakeRpcServer, make_rpc_device: MakeRpcDevice
) -> None:
    never_started = make_rpc_device("dev-b", start=False)
    started = time.monotonic()
    with pytest.raises(RpcUnavailableError, match="offline"):
        never_started.rpc.call("sys.ping", timeout_s=5)
    assert time.monotonic() - started < 0.1

    make_rpc_server()
    dev = make_rpc_device("dev-a")
    assert dev.rpc.call("sys.ping", timeout_s=5)["time"] > 0
    broker.stop()
    wait_for(lambda: not dev.device.agent.connected, what="the agent to notice the broker left")
    started = time.monotonic()
    with pytest.raises(RpcUnavailableError):
        dev.rpc.call("sys.ping", timeout_s=5)
    assert time.monotonic() - started < 0.1
    assert dev.rpc.stats().unavailable == 1


def test_a_late_answer_is_dropped_and_the_next_call_gets_its_own(
    make_rpc_server: MakeRpcServer,
    make_rpc_device: MakeRpcDevice,
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = threading.Event()

    def slow(_device: str, _params: dict[str, Any]) -> str:
        release.wait(5)
        return "late"

    make_rpc_server({"test.slow": slow, "test.echo": echo})
    dev = make_rpc_device("dev-a")
    caplog.set_level(logging.DEBUG, logger="device.sync.rpc")
    with pytest.raises(RpcTimeoutError):
        dev.rpc.call("test.slow", timeout_s=0.5)
    release.set()
    wait_for(lambda: dev.rpc.stats().dropped == 1, what="the late answer to arrive")
    assert "late or unknown" in caplog.text
    assert dev.rpc.call("test.echo", {"k": 1}, timeout_s=5)["params"] == {"k": 1}


def test_malformed_up_rpc_is_refused_and_logged_and_events_keep_flowing(
    make_rpc_server: MakeRpcServer,
    make_device: MakeDevice,
    engine: Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    site = make_rpc_server()
    own, other = Collector(), Collector()
    dev = make_device("dev-a", start=False)
    dev.agent.add_handler("down/rpc", own)
    neighbour = make_device("dev-b", start=False)
    neighbour.agent.add_handler("down/rpc", other)
    for made in (dev, neighbour):
        made.agent.start()
    wait_for(lambda: dev.agent.connected and neighbour.agent.connected, what="both to connect")
    caplog.set_level(logging.INFO)
    reply_to = topic("dev-a", "down/rpc")
    valid = b'{"method": "sys.ping", "params": {}}'
    bad_payloads = {
        "random bytes": os.urandom(64) + ID_NUMBER.encode(),
        "wrong schema": b'{"method": "PING", "params": {"id": "' + ID_NUMBER.encode() + b'"}}',
        "oversize": b'{"method": "sys.ping", "params": {"x": "' + b"x" * MAX_RPC_BYTES + b'"}}',
    }
    # Bad payloads with a usable response topic: refused AND answered bad-request at once.
    for n, payload in enumerate(bad_payloads.values()):
        correlation = bytes([n]) * 16
        props = rpc_properties(reply_to, correlation, 7)
        assert dev.agent.publish("up/rpc", payload, properties=props)
        answer = own.get()
        assert prop(answer, "CorrelationData") == correlation
        assert 1 <= prop(answer, "MessageExpiryInterval") <= 7
        error = parse_rpc_response(bytes(answer.payload)).error
        assert error is not None and error.code == "bad-request"
    assert site.consumer.health().rejected == 3
    # Nothing to answer to: refused, and no answer reaches anyone.
    unanswerable = [
        rpc_properties(None, b"c" * 16),  # no response topic
        rpc_properties(reply_to, None),  # no correlation data
        rpc_properties(topic("dev-b", "down/rpc"), b"d" * 16),  # another device's down/rpc
        rpc_properties(topic("dev-a", "down/cmd"), b"e" * 16),  # not down/rpc
    ]
    for props in unanswerable:
        assert dev.agent.publish("up/rpc", valid, properties=props)
    wait_for(lambda: site.consumer.health().rejected == 7, what="four more refusals")
    assert own.none_within(0.3) and other.none_within(0.1)
    assert site.server.stats().refused == 4
    assert caplog.text.count("device dev-a: message refused (up/rpc)") == 7
    assert ID_NUMBER not in caplog.text
    # The server goes on storing events, and answering.
    dev.emit(5)
    wait_for(lambda: exactly_once(engine, "dev-a", 5), what="events stored after the garbage")
    assert dev.agent.publish("up/rpc", valid, properties=rpc_properties(reply_to, b"f" * 16))
    assert parse_rpc_response(bytes(own.get().payload)).ok


def test_the_device_ignores_malformed_down_rpc_and_keeps_waiting(
    broker: MosquittoTestBroker, make_rpc_device: MakeRpcDevice, caplog: pytest.LogCaptureFixture
) -> None:
    # The ACL keeps devices off each other's down/#, so only the server account can send these.
    dev = make_rpc_device("dev-a")
    raw = broker.server_client("raw-server")
    assert raw.subscribe(topic("dev-a", "up/rpc")).value == 1
    caplog.set_level(logging.DEBUG, logger="device.sync.rpc")
    result: list[Any] = []
    thread = threading.Thread(
        target=lambda: result.append(dev.rpc.call("test.echo", {"id": ID_NUMBER}, timeout_s=10))
    )
    thread.start()
    request = raw.expect_message()
    correlation = prop(request, "CorrelationData")
    assert len(correlation) == 16
    assert prop(request, "ResponseTopic") == topic("dev-a", "down/rpc")
    assert 1 <= prop(request, "MessageExpiryInterval") <= 10
    down = topic("dev-a", "down/rpc")
    good = b'{"ok": true, "result": "right"}'
    for payload, props in [
        (os.urandom(40) + ID_NUMBER.encode(), rpc_properties(None, correlation)),
        (
            b'{"ok": true, "error": {"code": "x", "message": "' + ID_NUMBER.encode() + b'"}}',
            rpc_properties(None, correlation),
        ),
        (
            b'{"ok": true, "result": "' + b"x" * MAX_RPC_BYTES + b'"}',
            rpc_properties(None, correlation),
        ),
        (good, rpc_properties()),  # no correlation data
        (b'{"ok": true, "result": "wrong"}', rpc_properties(None, b"\x00" * 16)),  # someone else's
        (good, rpc_properties(None, correlation)),
    ]:
        raw.paho.publish(down, payload, qos=1, properties=props)
    thread.join(10)
    raw.disconnect()
    assert result == ["right"]
    stats = dev.rpc.stats()
    assert (stats.malformed, stats.dropped, stats.answered) == (4, 1, 1)
    assert "malformed down/rpc" in caplog.text and ID_NUMBER not in caplog.text
    assert dev.device.agent.connected


def test_invalid_calls_are_refused_before_anything_is_sent(
    make_rpc_device: MakeRpcDevice, make_device: MakeDevice
) -> None:
    dev = make_rpc_device("dev-a")
    cases: list[tuple[str, dict[str, Any], float]] = [
        ("Ping", {}, 5.0),
        ("sys.ping", {"x": float("nan")}, 5.0),
        ("sys.ping", {"x": {1, 2}}, 5.0),
        ("sys.ping", {"x": "y" * MAX_RPC_BYTES}, 5.0),
        ("sys.ping", {}, 0.0),
        ("sys.ping", {}, 301.0),
    ]
    for method, params, timeout_s in cases:
        with pytest.raises(RpcRequestError):
            dev.rpc.call(method, params, timeout_s=timeout_s)
    assert dev.rpc.stats().calls == 0
    with pytest.raises(SyncError, match="before start"):
        RpcClient(dev.device.agent).attach()  # the agent has started
    with pytest.raises(RpcError, match="already attached"):
        dev.rpc.attach()


def test_a_call_from_the_agents_own_thread_is_refused_not_deadlocked(
    make_rpc_device: MakeRpcDevice,
) -> None:
    dev = make_rpc_device("dev-a", start=False)
    seen: list[BaseException] = []

    def hook() -> None:
        try:
            dev.rpc.call("sys.ping", timeout_s=5)
        except RpcError as err:
            seen.append(err)

    dev.device.agent.add_connect_hook(hook)
    dev.device.agent.start()
    wait_for(lambda: bool(seen), what="the connect hook to run")
    assert "agent's thread" in str(seen[0])
