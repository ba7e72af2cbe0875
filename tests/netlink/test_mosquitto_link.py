"""A device's MQTT over TLS through its NetLink to the real Mosquitto: cut, then reconnect.

A missing ``mosquitto`` FAILS the test with what to install: the point is the real broker's TLS
through the relay.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from device.protocol import topic
from hardware_sim.mosquitto import INSTALL_HINT, MosquittoTestBroker, MqttTestClient
from hardware_sim.netlink import NetLink
from tests.mqtt_helpers import wait_for

DEVICE = "dev-1"


@pytest.fixture
def broker() -> Iterator[MosquittoTestBroker]:
    for tool in ("mosquitto", "mosquitto_passwd"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            pytest.fail(f"{tool} is not installed; {INSTALL_HINT}", pytrace=False)
    test_broker = MosquittoTestBroker(devices=(DEVICE,))
    test_broker.start()
    yield test_broker
    test_broker.cleanup()


def round_trip(device: MqttTestClient, server: MqttTestClient, text: str) -> None:
    """Up from the device to the server, and a command down to the device, through the link."""
    assert not device.subscribe(topic(DEVICE, "down/cmd")).is_failure
    puback = device.publish(topic(DEVICE, "up/events"), f"up {text}")
    assert puback is not None and not puback.is_failure
    assert server.expect_message().payload == f"up {text}".encode()
    puback = server.publish(topic(DEVICE, "down/cmd"), f"down {text}")
    assert puback is not None and not puback.is_failure
    assert device.expect_message().payload == f"down {text}".encode()


def device_client(broker: MosquittoTestBroker, link: NetLink) -> MqttTestClient:
    # The certificate names 127.0.0.1, which is also the relay's address: TLS verifies as-is.
    device = MqttTestClient(
        host="127.0.0.1",
        port=link.port,
        username=DEVICE,
        password=broker.credentials[DEVICE].password,
        client_id=DEVICE,
        ca_file=broker.ca_cert,
    )
    device.paho.reconnect_delay_set(min_delay=1, max_delay=1)
    return device


def test_mqtt_tls_through_the_link_survives_a_cut_and_reconnects(
    broker: MosquittoTestBroker,
) -> None:
    with NetLink("127.0.0.1", broker.tls_port, name=DEVICE) as link:
        server = broker.server_client()  # the server's own network is not cut
        assert not server.subscribe(topic(DEVICE, "up/events")).is_failure
        device = device_client(broker, link)
        try:
            device.connect()
            round_trip(device, server, "before")
            assert link.bytes_up > 0
            assert link.bytes_down > 0

            link.cut()
            wait_for(lambda: not device.connected, 2.0, "the device to see its link drop")
            # paho keeps retrying; the cut link accepts and resets each try.
            wait_for(lambda: link.connections_total >= 2, 5.0, "a reconnect attempt while cut")
            assert not device.connected

            link.restore()
            wait_for(lambda: device.connected, 10.0, "the device to reconnect after restore")
            round_trip(device, server, "after")
        finally:
            device.disconnect()
            server.disconnect()


def test_blackhole_is_noticed_by_keepalive_and_restore_lets_the_device_back(
    broker: MosquittoTestBroker,
) -> None:
    with NetLink("127.0.0.1", broker.tls_port, name=DEVICE) as link:
        server = broker.server_client()
        assert not server.subscribe(topic(DEVICE, "up/events")).is_failure
        device = device_client(broker, link)
        try:
            # MqttTestClient.connect() uses keepalive 30 s; 1 s keeps this test short.
            device.paho.connect("127.0.0.1", link.port, keepalive=1)
            device.paho.loop_start()
            wait_for(lambda: device.connected, 5.0, "the device to connect through the link")
            round_trip(device, server, "before")

            link.blackhole()
            # Nothing ends the TCP connection: only the missing PINGRESP tells paho.
            wait_for(lambda: not device.connected, 5.0, "keepalive to notice the dead link")
            assert server.drain(0.2) == []

            link.restore()
            wait_for(lambda: device.connected, 10.0, "the device to reconnect after restore")
            round_trip(device, server, "after")
        finally:
            device.disconnect()
            server.disconnect()
