"""Fixtures of the sync agent tests: a real Mosquitto per test, a stand-in server, a fresh store.

A missing ``mosquitto`` FAILS the tests with what to install: the agent's TLS, credentials, Last
Will and session behaviour are only proven against the real broker.
"""

from __future__ import annotations

import json
import queue
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from device.atrest import DeviceKey
from device.clock import FakeClock
from device.config import SyncSection
from device.protocol import MessageError, parse_events, topic
from device.store import Store, open_store
from device.sync import SyncAgent
from hardware_sim.mosquitto import INSTALL_HINT, MosquittoTestBroker, MqttTestClient
from tests.mqtt_helpers import agent_config

DEVICE = "dev-a"
SHARED = "$share/linli/linli/v1/dev/+/up/#"


class StandInServer:
    """Stands in for sync_server (built in parallel), so these tests need nothing but the agent.

    It does what DESIGN.md section 3 asks of the server and no more: consume ``up/#`` through the
    shared subscription with the server's broker account, keep events by ``(device, seq)``
    (a redelivery is stored once) and publish ``down/ack`` with the highest *contiguous* seq it
    holds, again for a duplicate batch so a device that lost an ack catches up. ``auto_ack=False``
    lets a test ack by hand.
    """

    def __init__(self, broker: MosquittoTestBroker, *, auto_ack: bool = True) -> None:
        self.auto_ack = auto_ack
        self.client: MqttTestClient = broker.server_client()
        self.batches: list[dict[str, Any]] = []
        self.events: dict[str, dict[int, dict[str, Any]]] = {}
        self.contiguous: dict[str, int] = {}
        self.rejected = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        assert self.client.subscribe(SHARED).value == 1
        self._thread = threading.Thread(target=self._consume, daemon=True)
        self._thread.start()

    def __enter__(self) -> StandInServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.disconnect()

    def _consume(self) -> None:
        while not self._stop.is_set():
            try:
                message = self.client.messages.get(timeout=0.05)
            except queue.Empty:
                continue
            if not message.topic.endswith("/up/events"):
                continue
            try:
                batch = parse_events(message.payload)
            except MessageError:
                self.rejected += 1
                continue
            with self._lock:
                self.batches.append(batch.model_dump())
                stored = self.events.setdefault(batch.device, {})
                for event in batch.events:
                    stored.setdefault(event.seq, event.model_dump())
                high = self.contiguous.get(batch.device, 0)
                while high + 1 in stored:
                    high += 1
                self.contiguous[batch.device] = high
            if self.auto_ack and high:
                self.ack(batch.device, high)

    def ack(self, device: str, seq: int) -> None:
        self.send_ack(device, json.dumps({"seq": seq}).encode())

    def send_ack(self, device: str, payload: bytes) -> None:
        self.client.publish(topic(device, "down/ack"), payload)

    def seqs(self, device: str = DEVICE) -> list[int]:
        with self._lock:
            return sorted(self.events.get(device, {}))

    def stored(self, device: str = DEVICE) -> list[dict[str, Any]]:
        with self._lock:
            return [event for _, event in sorted(self.events.get(device, {}).items())]


@pytest.fixture
def broker() -> Iterator[MosquittoTestBroker]:
    """A broker per test: tests stop and kill it, and the device's session must not leak."""
    for tool in ("mosquitto", "mosquitto_passwd"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            pytest.fail(f"{tool} is not installed; {INSTALL_HINT}", pytrace=False)
    test_broker = MosquittoTestBroker(devices=(DEVICE, "dev-b"))
    test_broker.start()
    yield test_broker
    test_broker.cleanup()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()  # wall time 2026-09: past the agent's clock floor


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> Iterator[Store]:
    with open_store(tmp_path / "store.db", key=DeviceKey.generate(), clock=clock) as opened:
        yield opened


def sync_config(broker: MosquittoTestBroker, **overrides: Any) -> SyncSection:
    return agent_config(broker, DEVICE, **overrides)


@pytest.fixture
def make_agent(
    broker: MosquittoTestBroker, store: Store, clock: FakeClock
) -> Iterator[Callable[..., SyncAgent]]:
    agents: list[SyncAgent] = []

    def make(**overrides: Any) -> SyncAgent:
        agent = SyncAgent(sync_config(broker, **overrides), DEVICE, store, clock=clock)
        agents.append(agent)
        return agent

    yield make
    for agent in agents:
        agent.stop()


def emit(store: Store, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        with store.transaction() as tx:
            tx.emit("test.tick", {"i": i})
