"""Authentication and TLS on the real Mosquitto: passwords, unknown users, plain TCP, wrong CA."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest

from hardware_sim.mosquitto import BrokerConnectError, MosquittoTestBroker, MqttTestClient
from provisioning.broker import provision_broker

NOT_AUTHORIZED = 0x87


def test_wrong_password_is_refused_with_connack_not_authorized(broker: MosquittoTestBroker) -> None:
    with pytest.raises(BrokerConnectError) as caught:
        broker.client("dev-a", "not-the-password", client_id="dev-a-wrong")
    assert caught.value.reason is not None
    assert caught.value.reason.value == NOT_AUTHORIZED


def test_unknown_user_is_refused_with_connack_not_authorized(broker: MosquittoTestBroker) -> None:
    with pytest.raises(BrokerConnectError) as caught:
        broker.client("dev-zz", "whatever", client_id="dev-zz")
    assert caught.value.reason is not None
    assert caught.value.reason.value == NOT_AUTHORIZED


def test_another_devices_password_does_not_work(broker: MosquittoTestBroker) -> None:
    with pytest.raises(BrokerConnectError):
        broker.client("dev-a", broker.credentials["dev-b"].password, client_id="dev-a-x")


def test_anonymous_is_refused_on_the_plain_listener(broker: MosquittoTestBroker) -> None:
    assert broker.plain_port is not None
    client = MqttTestClient(
        host="127.0.0.1", port=broker.plain_port, username="", password="", client_id="anon",
        ca_file=None,
    )  # fmt: skip
    client.paho.username_pw_set(None)
    with pytest.raises(BrokerConnectError):
        client.connect()


def test_plain_loopback_listener_applies_the_same_acl(broker: MosquittoTestBroker) -> None:
    assert broker.plain_port is not None
    client = MqttTestClient(
        host="127.0.0.1",
        port=broker.plain_port,
        username="dev-a",
        password=broker.credentials["dev-a"].password,
        client_id="dev-a-plain",
        ca_file=None,
    )
    client.connect()
    with client:
        assert client.publish("linli/v1/dev/dev-b/up/events", b"x").value == NOT_AUTHORIZED


def test_plain_tcp_to_the_tls_port_fails(broker: MosquittoTestBroker) -> None:
    client = MqttTestClient(
        host="127.0.0.1",
        port=broker.tls_port,
        username="dev-a",
        password=broker.credentials["dev-a"].password,
        client_id="dev-a-cleartext",
        ca_file=None,
    )
    with pytest.raises(BrokerConnectError):
        client.connect()
    assert not client.connected


def test_client_not_trusting_the_site_ca_fails_the_handshake(
    broker: MosquittoTestBroker, tmp_path: Path
) -> None:
    other_site = provision_broker(tmp_path / "other-site", ["dev-a"])
    with pytest.raises(BrokerConnectError) as caught:
        broker.client("dev-a", client_id="dev-a-other-ca", ca_file=other_site.files.ca_cert)
    assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)


def test_certificate_names_localhost_and_127_0_0_1(broker: MosquittoTestBroker) -> None:
    context = ssl.create_default_context(cafile=str(broker.ca_cert))
    for name in ("localhost", "127.0.0.1"):
        with (
            socket.create_connection(("127.0.0.1", broker.tls_port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=name) as tls,
        ):
            assert tls.version() in {"TLSv1.2", "TLSv1.3"}


def test_a_tls_1_2_only_client_connects(broker: MosquittoTestBroker) -> None:
    # tls_version tlsv1.2 is a minimum: 1.2 clients (older device OpenSSL) must still work.
    context = ssl.create_default_context(cafile=str(broker.ca_cert))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection(("127.0.0.1", broker.tls_port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.version() == "TLSv1.2"
