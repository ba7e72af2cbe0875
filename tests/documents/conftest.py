"""Fixtures of the versioned-document tests.

Storage tests run on SQLite and on a private real PostgreSQL (``server_engine``, as in
tests/server). End-to-end tests use the real Mosquitto, the real server consumer with its
``up/sync-req`` handler, and real device stores with their sync agents (fixtures from tests/e2e).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select, update

from device.atrest import DeviceKey
from device.store import Store, open_store
from device.sync import SyncAgent
from device.sync.documents import DocumentSync
from hardware_sim.mosquitto import MosquittoTestBroker
from sync_server.consumer import Consumer
from sync_server.db import make_engine, upgrade
from sync_server.documents import DocumentServer
from sync_server.domain_models import Area, ServicePoint
from sync_server.models import Event
from tests.certificates.conftest import household_record
from tests.e2e import conftest as e2e
from tests.e2e.conftest import MakeConsumer, sync_config, wait_for
from tests.server import conftest as server_fixtures

# Fixtures shared with tests/e2e (real Mosquitto, migrated SQLite, consumers) and tests/server
# (the private PostgreSQL, session-wide).
broker = e2e.broker
db_url = e2e.db_url
engine = e2e.engine
make_consumer = e2e.make_consumer
TEMPLATE = server_fixtures.TEMPLATE


ID_NUMBERS = ("11010519491231002X", "310115195003021234", "440304198807120011")
COMMUNITIES = ("C01", "C02")


def add_areas(engine: Engine, communities: tuple[str, ...] = COMMUNITIES) -> None:
    """A street and its communities in ``areas`` (service points and records point at them)."""
    with engine.begin() as conn:
        conn.execute(insert(Area).values(id="S1", name="幸福街道", level="street", parent_id=None))
        conn.execute(
            insert(Area),
            [
                {"id": c, "name": f"社区 {c}", "level": "community", "parent_id": "S1"}
                for c in communities
            ],
        )


def register(engine: Engine, device: str, area: str, *, kind: str = "kiosk") -> None:
    """A ``service_points`` row: ``device`` is a kiosk (or locker) serving ``area``."""
    with engine.begin() as conn:
        conn.execute(
            insert(ServicePoint).values(
                device_id=device, kind=kind, name=device, area_id=area, created=1.0
            )
        )


def move(engine: Engine, device: str, area: str) -> None:
    """The kiosk now serves another community."""
    with engine.begin() as conn:
        conn.execute(
            update(ServicePoint).where(ServicePoint.device_id == device).values(area_id=area)
        )


def revoke(engine: Engine, device: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(ServicePoint).where(ServicePoint.device_id == device).values(revoked_at=2.0)
        )


def resident(id_number: str, **changes: Any) -> dict[str, Any]:
    """A residents item as the server publishes it: keyed by (and carrying) the ID number."""
    household = household_record()
    household.update(changes)
    return {"id_number": id_number, "household": household}


@pytest.fixture(params=["sqlite", "postgresql"])
def server_engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    """A migrated server database of its own, on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db')}/server.db"
        upgrade(url)
    else:
        url = server_fixtures.new_database(request, "docs", TEMPLATE)
    eng = make_engine(url)
    yield eng
    eng.dispose()


class DocDevice:
    """A device with a persistent store (key file) that can go offline and come back."""

    def __init__(
        self, broker: MosquittoTestBroker, device: str, root: Path, docs: tuple[str, ...] | None
    ) -> None:
        self.id = device
        self.broker = broker
        self.path = root / f"{device}.db"
        self.key = DeviceKey.load_or_create(root / f"{device}.key")
        self.docs = docs
        self.store: Store = open_store(self.path, key=self.key)
        self.agent: SyncAgent | None = None
        self.sync: DocumentSync | None = None

    def start(self) -> DocumentSync:
        """A new agent and DocumentSync on the same store (a process start, as far as MQTT sees)."""
        self.agent = SyncAgent(sync_config(self.broker, self.id), self.id, self.store)
        kwargs: dict[str, Any] = {} if self.docs is None else {"docs": self.docs}
        self.sync = DocumentSync(self.store, self.agent, **kwargs)
        self.sync.attach()
        self.agent.start()
        return self.sync

    def stop(self) -> None:
        if self.agent is not None:
            self.agent.stop()
            self.agent = None

    def version(self, doc: str) -> int:
        return self.store.documents.version(doc)

    def items(self, doc: str) -> dict[str, Any]:
        return dict(self.store.documents.items(doc))

    def close(self) -> None:
        self.stop()
        self.store.close()


MakeDocDevice = Callable[..., DocDevice]


@pytest.fixture
def make_doc_device(broker: MosquittoTestBroker, tmp_path: Path) -> Iterator[MakeDocDevice]:
    """``make_doc_device("dev-a", start=True, docs=None)``; closed at teardown."""
    made: list[DocDevice] = []

    def make(
        device: str = "dev-a", *, start: bool = True, docs: tuple[str, ...] | None = None
    ) -> DocDevice:
        dev = DocDevice(broker, device, tmp_path, docs)
        made.append(dev)
        if start:
            dev.start()
        return dev

    yield make
    for dev in made:
        dev.close()


@pytest.fixture
def server(make_consumer: MakeConsumer, engine: Engine) -> Consumer:
    """The real consumer with the document handler on ``up/sync-req``, connected."""
    consumer = make_consumer(start=False)
    documents = DocumentServer(engine, publish=consumer.publish)
    consumer.add_handler("up/sync-req", documents.handle_request)
    consumer.start()
    wait_for(lambda: consumer.connected, what="the consumer to connect")
    return consumer


def applied_events(engine: Engine, device: str) -> list[tuple[str, int]]:
    """``(doc, version)`` of every ``doc.applied`` event the server stored, in device order."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(Event.data)
            .where(Event.device_id == device, Event.type == "doc.applied")
            .order_by(Event.seq)
        ).all()
    return [(str(data["doc"]), int(data["version"])) for (data,) in rows]


@pytest.fixture
def sync_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every record of the device and server document code (and the consumer's refusals)."""
    caplog.set_level(logging.DEBUG, logger="device.sync.documents")
    caplog.set_level(logging.DEBUG, logger="sync_server.documents")
    caplog.set_level(logging.INFO, logger="sync_server.consumer")
    return caplog
