"""Fixtures of the signed-command tests: server keys, a device store with its command runner, and
(from tests/e2e) the real Mosquitto, the real server consumer and real devices with sync agents.

A missing ``mosquitto`` FAILS the end-to-end tests with what to install: that a compromised or
confused broker cannot make a device act is only shown through the real broker.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from device.atrest import DeviceKey
from device.clock import FakeClock
from device.credential import SigningKey, VerifyKey, generate_signing_key
from device.store import Store, Transaction, open_store
from device.sync.commands import CommandRunner
from sync_server.models import Event
from tests.e2e.conftest import broker, db_url, engine, make_consumer, make_device

__all__ = ["broker", "db_url", "engine", "make_consumer", "make_device"]

KID = "srv-2026-01"
SECRET_ARG = "ARG-MARKER-7f3a"
"""Put in every command's args: it must never show up in an audit event or a log line."""


@pytest.fixture(scope="session")
def server_key() -> SigningKey:
    return generate_signing_key(KID)


@pytest.fixture(scope="session")
def keys(server_key: SigningKey) -> dict[str, VerifyKey]:
    """What a device is provisioned with: the server's public key by key id."""
    return {KID: server_key.verify_key}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> Iterator[Store]:
    with open_store(tmp_path / "device.db", key=DeviceKey.generate(), clock=clock) as opened:
        yield opened


class Locker:
    """Stands for a locker's executors: counts how often each command really ran and records
    the effect in the store (an event in the same transaction), as a daemon would."""

    def __init__(self) -> None:
        self.opened: list[int] = []
        self._lock = threading.Lock()

    def open(self, tx: Transaction, args: Mapping[str, Any]) -> dict[str, Any]:
        compartment = int(args["compartment"])
        tx.emit("compartment.opened", {"compartment": compartment})
        with self._lock:
            self.opened.append(compartment)
        return {"compartment": compartment, "door": "open"}

    def register(self, runner: CommandRunner) -> None:
        runner.register("locker.open", self.open)


@pytest.fixture
def locker() -> Locker:
    return Locker()


@pytest.fixture
def runner(
    store: Store, keys: dict[str, VerifyKey], clock: FakeClock, locker: Locker
) -> CommandRunner:
    made = CommandRunner(store, keys, "dev-a", clock=clock, skew_s=60)
    locker.register(made)
    return made


def args(compartment: int = 3) -> dict[str, Any]:
    return {"compartment": compartment, "note": SECRET_ARG}


def outbox_events(store: Store, type_: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """``(type, data)`` of every queued event (optionally of one type), in seq order."""
    return [
        (event.type, dict(event.data))
        for event in store.outbox.pending(1000)
        if type_ is None or event.type == type_
    ]


def server_events(engine: Engine, device: str, type_: str) -> list[dict[str, Any]]:
    """The ``data`` of ``device``'s stored events of ``type_``, in seq order."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(Event.data)
            .where(Event.device_id == device, Event.type == type_)
            .order_by(Event.seq)
        ).scalars()
        return [dict(row) for row in rows]


def all_server_event_text(engine: Engine) -> str:
    with engine.connect() as conn:
        return json.dumps([dict(d) for d in conn.execute(select(Event.data)).scalars()])
