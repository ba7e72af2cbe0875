"""Malformed ``down/sync`` and ``up/sync-req`` payloads through the real broker: refused, logged
without their content, and neither the device nor the server stops syncing."""

from __future__ import annotations

import json
import random

import pytest
from sqlalchemy import Engine, select

from device.protocol import MAX_SYNC_BYTES, MAX_SYNC_REQUEST_BYTES, topic
from hardware_sim.mosquitto import MosquittoTestBroker
from sync_server.consumer import Consumer
from sync_server.documents import publish_version
from sync_server.models import Event

from .conftest import ID_NUMBERS, MakeDocDevice, resident, wait_for

SECRET = ID_NUMBERS[1]
MARKER = "PAYLOAD-MARKER-7f3a"


def no_payload_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        line = record.getMessage()
        assert SECRET not in line and MARKER not in line, f"payload text logged: {line[:200]}"


def test_malformed_down_sync_is_refused_and_the_device_keeps_syncing(
    engine: Engine,
    server: Consumer,
    broker: MosquittoTestBroker,
    make_doc_device: MakeDocDevice,
    sync_logs: pytest.LogCaptureFixture,
) -> None:
    publish_version(engine, "catalogue", upserts={"a": {"fee": 1}})
    device = make_doc_device("dev-a", docs=("catalogue", "notices"))
    wait_for(lambda: device.version("catalogue") == 1, what="the first snapshot")
    assert device.sync is not None
    rng = random.Random(20250101)
    bad = [
        rng.randbytes(512),  # random bytes
        json.dumps({"kind": "delta", "doc": "catalogue", "note": MARKER}).encode(),  # schema
        json.dumps(  # an unexpected field named by personal data
            {"kind": "snapshot", "doc": "catalogue", "version": 9, "items": {}, SECRET: 1}
        ).encode(),
        json.dumps(  # a document this device does not sync, carrying personal data
            {
                "kind": "snapshot",
                "doc": "residents",
                "version": 9,
                "items": {SECRET: resident(SECRET)},
            }
        ).encode(),
        b'{"kind":"snapshot","doc":"catalogue","version":9,"items":{"m":"'
        + (MARKER * (MAX_SYNC_BYTES // len(MARKER))).encode()
        + b'"}}',  # oversize
        json.dumps({"kind": "snapshot", "doc": "secrets", "version": 9, "items": {}}).encode(),
    ]
    assert len(bad[4]) > MAX_SYNC_BYTES
    with broker.server_client("probe") as probe:
        for payload in bad:
            probe.publish(topic("dev-a", "down/sync"), payload)
    wait_for(lambda: device.sync is not None and device.sync.stats().refused == 6, what="refusals")
    assert device.version("catalogue") == 1 and device.items("catalogue") == {"a": {"fee": 1}}
    assert device.store.documents.version("residents") == 0
    refusals = [r for r in sync_logs.records if "refused a down/sync" in r.getMessage()]
    assert len(refusals) == 6 and all(r.levelname == "WARNING" for r in refusals)
    no_payload_in_logs(sync_logs)
    # A delta that does not start at the device's version: not applied, asked for again.
    with broker.server_client("probe2") as probe:
        gap = {"kind": "delta", "doc": "catalogue", "from_version": 4, "version": 5, "upserts": {}}
        probe.publish(topic("dev-a", "down/sync"), json.dumps(gap).encode())
    wait_for(lambda: device.sync is not None and device.sync.stats().rerequests == 1, what="ask")
    assert device.version("catalogue") == 1
    # Documents and events still flow afterwards.
    publish_version(engine, "catalogue", upserts={"b": {"fee": 2}})
    device.sync.request("catalogue")
    wait_for(lambda: device.version("catalogue") == 2, what="the next version")
    with device.store.transaction() as tx:
        tx.emit("test.tick", {"i": 0})
    assert device.agent is not None
    device.agent.notify()
    wait_for(lambda: stored_types(engine, "dev-a") == ["a", "a", "t"], what="events in order")


def stored_types(engine: Engine, device: str) -> list[str]:
    """First letter of each stored event type (``a``: doc.applied, ``t``: test.tick)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(Event.type).where(Event.device_id == device).order_by(Event.seq)
        ).all()
    return ["a" if t == "doc.applied" else "t" for (t,) in rows]


def test_malformed_sync_requests_are_refused_and_the_server_keeps_answering(
    engine: Engine,
    server: Consumer,
    broker: MosquittoTestBroker,
    make_doc_device: MakeDocDevice,
    sync_logs: pytest.LogCaptureFixture,
) -> None:
    publish_version(engine, "notices", upserts={"n": {"title": "water cut"}})
    rng = random.Random(7)
    bad = [
        rng.randbytes(200),
        b'{"doc":"notices"}',
        b'{"doc":"secrets","version":0}',
        b'{"doc":"notices","version":0,"' + SECRET.encode() + b'":1}',
        b'{"doc":"notices","version":0,"m":"' + MARKER.encode() * 100 + b'"}',  # over 1 KiB
        b'{"doc":"notices","version":' + str(10**12).encode() + b"}",  # absurdly ahead
    ]
    assert len(bad[4]) > MAX_SYNC_REQUEST_BYTES
    # dev-b's own account, another client id (the device itself is not running).
    with broker.client("dev-b", client_id="dev-b-probe") as probe:
        for payload in bad:
            probe.publish(topic("dev-b", "up/sync-req"), payload)

    def refused() -> int:
        return sum("message refused (up/sync-req)" in r.getMessage() for r in sync_logs.records)

    wait_for(lambda: refused() == len(bad), what="every refusal logged")
    health = server.health()
    assert health.rejected == len(bad)
    assert health.connected and health.storage_errors == 0
    no_payload_in_logs(sync_logs)
    # The server still answers devices, and still stores their events.
    device = make_doc_device("dev-a")
    wait_for(lambda: device.version("notices") == 1, what="the snapshot")
    with device.store.transaction() as tx:
        tx.emit("test.tick", {"i": 0})
    assert device.agent is not None
    device.agent.notify()
    wait_for(lambda: stored_types(engine, "dev-a") == ["a", "t"], what="events in order")
