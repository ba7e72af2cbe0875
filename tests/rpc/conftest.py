"""Fixtures of the request/response tests: the real Mosquitto, the real server Consumer with an
RpcServer on ``up/rpc``, and real devices (store + SyncAgent) with an RpcClient on ``down/rpc``.

The broker, database, consumer and device fixtures are those of tests/e2e (imported, not copied),
so these tests exercise exactly the pipe the end-to-end tests prove.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from device.sync.rpc import RpcClient
from sync_server.consumer import Consumer
from sync_server.rpc import RpcServer
from tests.e2e import conftest as e2e
from tests.e2e.conftest import Device_, MakeConsumer, MakeDevice, wait_for

# The end-to-end fixtures, by name: a real broker per test, a migrated SQLite file, consumers
# and devices stopped at teardown.
broker = e2e.broker
db_url = e2e.db_url
engine = e2e.engine
make_consumer = e2e.make_consumer
make_device = e2e.make_device


@dataclass
class RpcDevice:
    """A device whose agent answers calls through ``rpc``."""

    device: Device_
    rpc: RpcClient

    @property
    def id(self) -> str:
        return self.device.id


@dataclass
class RpcSite:
    """The server's consumer and its RpcServer."""

    consumer: Consumer
    server: RpcServer


MakeRpcDevice = Callable[..., RpcDevice]
MakeRpcServer = Callable[..., RpcSite]


@pytest.fixture
def make_rpc_device(make_device: MakeDevice) -> MakeRpcDevice:
    """``make_rpc_device("dev-a", start=True, clock=None)``: attached before the agent starts."""

    def make(device: str = "dev-a", *, start: bool = True, **kwargs: Any) -> RpcDevice:
        made = make_device(device, start=False)
        rpc = RpcClient(made.agent, **kwargs)
        rpc.attach()
        if start:
            made.agent.start()
            wait_for(lambda: made.agent.connected, what=f"{device} to connect")
        return RpcDevice(made, rpc)

    return make


@pytest.fixture
def make_rpc_server(make_consumer: MakeConsumer) -> MakeRpcServer:
    """``make_rpc_server(methods={name: fn}, clock=...)``: its consumer connected."""

    def make(
        methods: dict[str, Callable[[str, dict[str, Any]], Any]] | None = None,
        *,
        client_id: str = "server-1",
        **kwargs: Any,
    ) -> RpcSite:
        consumer = make_consumer(client_id, start=False)
        server = RpcServer(consumer.publish, **kwargs)
        for name, fn in (methods or {}).items():
            server.register(name, fn)
        consumer.add_handler("up/rpc", server.handle)
        consumer.start()
        wait_for(lambda: consumer.connected, what="the consumer to connect")
        return RpcSite(consumer, server)

    return make


def rpc_properties(
    response_topic: str | None = None,
    correlation: bytes | None = None,
    expiry_s: int | None = None,
) -> Properties:
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if response_topic is not None:
        properties.ResponseTopic = response_topic
    if correlation is not None:
        properties.CorrelationData = correlation
    if expiry_s is not None:
        properties.MessageExpiryInterval = expiry_s
    return properties


def prop(message: mqtt.MQTTMessage, name: str) -> Any:
    """An MQTT v5 property of a received message (None when absent)."""
    return getattr(message.properties, name, None)


class Collector:
    """A raw ``down/rpc`` handler for a device's agent: keeps every message it gets."""

    def __init__(self) -> None:
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()

    def __call__(self, message: mqtt.MQTTMessage) -> None:
        self.messages.put(message)

    def get(self, timeout_s: float = 5.0) -> mqtt.MQTTMessage:
        try:
            return self.messages.get(timeout=timeout_s)
        except queue.Empty:
            raise AssertionError(f"no down/rpc message within {timeout_s}s") from None

    def none_within(self, seconds: float) -> bool:
        try:
            self.messages.get(timeout=seconds)
        except queue.Empty:
            return True
        return False
