"""Per-device ACL on the real Mosquitto: a device only has its own up/ and down/ (DESIGN.md 3)."""

from __future__ import annotations

from hardware_sim.mosquitto import MosquittoTestBroker, MqttTestClient

UP_A = "linli/v1/dev/dev-a/up/events"
UP_B = "linli/v1/dev/dev-b/up/events"
DOWN_A = "linli/v1/dev/dev-a/down/ack"
DOWN_B = "linli/v1/dev/dev-b/down/ack"

SUCCESS = 0x00
GRANTED_QOS1 = 0x01
NO_MATCHING_SUBSCRIBERS = 0x10
NOT_AUTHORIZED = 0x87


def test_device_publishes_its_up_and_the_shared_subscription_receives_it(
    server: MqttTestClient, dev_a: MqttTestClient
) -> None:
    assert dev_a.publish(UP_A, b'{"seq": 1}').value == SUCCESS
    message = server.expect_message()
    assert (message.topic, message.payload) == (UP_A, b'{"seq": 1}')


def test_device_receives_what_the_server_publishes_on_its_down(
    server: MqttTestClient, dev_a: MqttTestClient
) -> None:
    assert dev_a.subscribe("linli/v1/dev/dev-a/down/#").value == GRANTED_QOS1
    assert server.publish(DOWN_A, b'{"seq": 7}').value == SUCCESS
    message = dev_a.expect_message()
    assert (message.topic, message.payload, message.qos) == (DOWN_A, b'{"seq": 7}', 1)


def test_publish_to_another_devices_up_is_refused_and_never_delivered(
    server: MqttTestClient, dev_a: MqttTestClient
) -> None:
    # Mosquitto 2.0.11 answers a denied QoS 1 PUBLISH from a v5 client with PUBACK 0x87.
    assert dev_a.publish(UP_B, b"forged").value == NOT_AUTHORIZED
    assert server.drain(0.5) == []
    # The connection stays usable: its own topic still goes through.
    assert dev_a.publish(UP_A, b"mine").value == SUCCESS
    assert server.expect_message().topic == UP_A


def test_device_cannot_publish_on_any_down_topic(
    server: MqttTestClient, dev_a: MqttTestClient
) -> None:
    # A device must not fake commands or acks, not even to itself.
    assert server.subscribe("linli/v1/dev/+/down/#").value == GRANTED_QOS1
    assert dev_a.publish(DOWN_A, b"self-command").value == NOT_AUTHORIZED
    assert dev_a.publish(DOWN_B, b"command").value == NOT_AUTHORIZED
    assert server.drain(0.5) == []


def test_subscription_to_another_devices_down_delivers_nothing(
    server: MqttTestClient, dev_a: MqttTestClient, dev_b: MqttTestClient
) -> None:
    # Mosquitto 2.0's acl_file is not consulted for SUBSCRIBE ("FIXME" in its source): the SUBACK
    # grants. The ACL is enforced per delivered message, which is what keeps B's commands from A.
    assert dev_a.subscribe("linli/v1/dev/dev-b/down/#").value in {GRANTED_QOS1, NOT_AUTHORIZED}
    assert dev_b.subscribe("linli/v1/dev/dev-b/down/#").value == GRANTED_QOS1
    assert server.publish(DOWN_B, b"open compartment 3").value == SUCCESS
    assert dev_b.expect_message().payload == b"open compartment 3"
    assert dev_a.drain(0.5) == []


def test_wildcard_subscriptions_deliver_only_the_devices_own_down(
    server: MqttTestClient, dev_a: MqttTestClient, dev_b: MqttTestClient
) -> None:
    for pattern in ("linli/v1/dev/+/up/#", "#", "linli/#", "$share/x/linli/v1/dev/+/up/#"):
        assert dev_a.subscribe(pattern).value in {GRANTED_QOS1, NOT_AUTHORIZED}
    assert dev_b.publish(UP_B, b"b's event").value == SUCCESS
    assert server.expect_message().payload == b"b's event"
    assert server.publish(DOWN_B, b"for b").value == SUCCESS
    assert dev_a.drain(0.5) == []
    # What A may read still arrives, once per matching subscription ("#" and "linli/#").
    assert server.publish(DOWN_A, b"for a").value == SUCCESS
    got = dev_a.drain(1.0)
    assert got and {m.topic for m in got} == {DOWN_A}


def test_retained_state_of_another_device_is_not_readable(
    broker: MosquittoTestBroker, server: MqttTestClient, dev_b: MqttTestClient
) -> None:
    state_b = "linli/v1/dev/dev-b/up/state"
    info = dev_b.paho.publish(state_b, b'{"online": true}', qos=1, retain=True)
    info.wait_for_publish(5)
    server.drain(0.5)
    with broker.client("dev-a", client_id="dev-a-snoop") as snoop:
        snoop.subscribe("#")
        snoop.subscribe(state_b)
        assert snoop.drain(0.7) == []
    # Clear the retained message so later tests start clean.
    dev_b.paho.publish(state_b, b"", qos=1, retain=True).wait_for_publish(5)


def test_device_publish_with_no_server_subscribed_gets_no_matching_subscribers(
    dev_a: MqttTestClient,
) -> None:
    # No `server` fixture here: nobody subscribes, Mosquitto says so in the PUBACK (v5 0x10).
    # The sync agent must treat 0x10 as delivered to the broker (not an error, not a retry).
    assert dev_a.publish("linli/v1/dev/dev-a/up/nobody-listens", b"x").value == (
        NO_MATCHING_SUBSCRIBERS
    )
