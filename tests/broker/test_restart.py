"""Broker restarts against the real Mosquitto: persistent sessions keep queued QoS 1 messages."""

from __future__ import annotations

import pytest

from hardware_sim.mosquitto import BrokerConnectError, MosquittoTestBroker

DOWN_A = "linli/v1/dev/dev-a/down/cmd"


def test_persistent_session_gets_messages_published_while_offline_across_a_restart(
    fresh_broker: MosquittoTestBroker,
) -> None:
    device = fresh_broker.client("dev-a", clean_start=False, session_expiry_s=3600)
    assert device.subscribe("linli/v1/dev/dev-a/down/#").value == 1
    device.disconnect()

    with fresh_broker.server_client() as server:
        for n in range(3):
            assert server.publish(DOWN_A, f"cmd-{n}".encode()).value == 0
    port = fresh_broker.tls_port
    fresh_broker.stop()
    fresh_broker.start()
    assert fresh_broker.tls_port == port

    device = fresh_broker.client("dev-a", clean_start=False, session_expiry_s=3600)
    with device:
        got = [device.expect_message().payload for _ in range(3)]
        assert got == [b"cmd-0", b"cmd-1", b"cmd-2"]
        assert device.drain(0.3) == []


def test_subscription_survives_a_restart_without_resubscribing(
    fresh_broker: MosquittoTestBroker,
) -> None:
    device = fresh_broker.client("dev-b", clean_start=False, session_expiry_s=3600)
    assert device.subscribe("linli/v1/dev/dev-b/down/#").value == 1
    device.disconnect()
    fresh_broker.stop()
    fresh_broker.start()
    with fresh_broker.client("dev-b", clean_start=False, session_expiry_s=3600) as device:
        with fresh_broker.server_client() as server:
            assert server.publish("linli/v1/dev/dev-b/down/ack", b"5").value == 0
        assert device.expect_message().payload == b"5"


def test_clean_session_loses_messages_published_while_offline(
    fresh_broker: MosquittoTestBroker,
) -> None:
    device = fresh_broker.client("dev-a")  # clean start, session expiry 0
    device.subscribe("linli/v1/dev/dev-a/down/#")
    device.disconnect()
    with fresh_broker.server_client() as server:
        server.publish(DOWN_A, b"lost")
    with fresh_broker.client("dev-a") as device:
        assert device.drain(0.5) == []


def test_killed_broker_refuses_then_comes_back_on_the_same_port(
    fresh_broker: MosquittoTestBroker,
) -> None:
    fresh_broker.kill()
    assert not fresh_broker.running
    with pytest.raises(BrokerConnectError):
        fresh_broker.client("dev-a")
    fresh_broker.start()
    with fresh_broker.client("dev-a") as device:
        assert device.connected
    assert fresh_broker.log_file.exists()
