"""Fixtures of the end-to-end sync tests: a real Mosquitto, a real SQLite file database migrated
by Alembic, the real server consumer and real device stores with their sync agents.

A missing ``mosquitto`` FAILS the tests with what to install: exactly-once delivery is only
proven through the real broker.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from device.atrest import DeviceKey
from device.config import SyncSection
from device.store import Store, open_store
from device.sync import SyncAgent
from hardware_sim.mosquitto import INSTALL_HINT, MosquittoTestBroker
from sync_server.consumer import BrokerSettings, Consumer
from sync_server.db import open_database, upgrade
from sync_server.models import Device, Event
from tests.mqtt_helpers import agent_config
from tests.mqtt_helpers import wait_for as shared_wait_for

DEVICES = ("dev-a", "dev-b", "dev-c")
ROOT = Path(__file__).resolve().parents[2]


def wait_for(predicate: Callable[[], bool], timeout_s: float = 20.0, what: str = "") -> None:
    """:func:`tests.mqtt_helpers.wait_for` with the longer default end-to-end steps need."""
    shared_wait_for(predicate, timeout_s, what)


@pytest.fixture
def broker() -> Iterator[MosquittoTestBroker]:
    for tool in ("mosquitto", "mosquitto_passwd"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            pytest.fail(f"{tool} is not installed; {INSTALL_HINT}", pytrace=False)
    test_broker = MosquittoTestBroker(devices=DEVICES, plain=True)
    test_broker.start()
    yield test_broker
    test_broker.cleanup()


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'server.db'}"
    upgrade(url)
    return url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = open_database(db_url)
    yield eng
    eng.dispose()


MakeConsumer = Callable[..., Consumer]


@pytest.fixture
def make_consumer(broker: MosquittoTestBroker, engine: Engine) -> Iterator[MakeConsumer]:
    """``make_consumer(client_id="c1", engine=None, start=True)``: stopped at teardown."""
    consumers: list[Consumer] = []

    def make(
        client_id: str = "server-1",
        *,
        engine_: Engine | None = None,
        start: bool = True,
        port: int | None = None,
        **settings: Any,
    ) -> Consumer:
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": port or broker.tls_port,
            "keepalive_s": 10,
            "session_expiry_s": 0,
            "backoff_min_s": 0.05,
            "backoff_max_s": 0.5,
        }
        values.update(settings)
        consumer = Consumer(
            engine_ or engine,
            BrokerSettings(**values),
            user=broker.server_user,
            password=broker.credentials[broker.server_user].password,
            ca_file=broker.ca_cert,
            client_id=client_id,
        )
        consumers.append(consumer)
        if start:
            consumer.start()
            wait_for(lambda: consumer.connected, what=f"consumer {client_id} to connect")
        return consumer

    yield make
    for consumer in consumers:
        consumer.stop()


def sync_config(broker: MosquittoTestBroker, device: str, **overrides: Any) -> SyncSection:
    return agent_config(broker, device, **{"ack_timeout_s": 1.0, **overrides})


class Device_:
    """A device: its store (real SQLite outbox) and its sync agent (real paho, real TLS)."""

    def __init__(self, broker: MosquittoTestBroker, device: str, path: Path, **cfg: Any) -> None:
        self.id = device
        self.store: Store = open_store(path, key=DeviceKey.generate())
        self.agent = SyncAgent(sync_config(broker, device, **cfg), device, self.store)
        self.emitted = 0

    def emit(self, count: int) -> None:
        for _ in range(count):
            with self.store.transaction() as tx:
                tx.emit("test.tick", {"i": self.emitted})
            self.emitted += 1
        self.agent.notify()

    def drained(self) -> bool:
        return self.store.outbox.count() == 0

    def close(self) -> None:
        self.agent.stop()
        self.store.close()


MakeDevice = Callable[..., Device_]


@pytest.fixture
def make_device(broker: MosquittoTestBroker, tmp_path: Path) -> Iterator[MakeDevice]:
    devices: list[Device_] = []

    def make(device: str = "dev-a", *, start: bool = True, **cfg: Any) -> Device_:
        made = Device_(broker, device, tmp_path / f"{device}-{len(devices)}.db", **cfg)
        devices.append(made)
        if start:
            made.agent.start()
        return made

    yield make
    for made in devices:
        made.close()


def stored(engine: Engine, device: str) -> list[tuple[int, int]]:
    """``(seq, data["i"])`` of each stored event of ``device`` in seq order, duplicates included."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(Event.seq, Event.data).where(Event.device_id == device).order_by(Event.seq)
        ).all()
    return [(int(seq), int(data["i"])) for seq, data in rows]


def device_row(engine: Engine, device: str) -> tuple[bool, int | None]:
    with engine.connect() as conn:
        row = conn.execute(select(Device.online, Device.boot).where(Device.id == device)).one()
    return bool(row[0]), row[1]


def exactly_once(engine: Engine, device: str, count: int) -> bool:
    return stored(engine, device) == [(seq, seq - 1) for seq in range(1, count + 1)]


def json_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()
