"""How the device applies ``down/sync`` messages, fed straight to the handler (agent not started):
in order or not at all, and the ``doc.applied`` event in the same transaction as the apply."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from device.store import StoreError
from device.store.db import Transaction
from device.sync import SyncAgent
from device.sync.documents import DOC_APPLIED_EVENT, DocumentSync
from hardware_sim.mosquitto import MosquittoTestBroker

from .conftest import ID_NUMBERS, DocDevice, resident, sync_config


@pytest.fixture
def device(broker: MosquittoTestBroker, tmp_path: Any) -> Iterator[DocDevice]:
    dev = DocDevice(broker, "dev-a", tmp_path, None)
    dev.agent = SyncAgent(sync_config(broker, "dev-a"), "dev-a", dev.store)
    dev.sync = DocumentSync(dev.store, dev.agent)
    yield dev
    dev.close()


def feed(device: DocDevice, message: dict[str, Any]) -> None:
    msg = mqtt.MQTTMessage(topic=b"linli/v1/dev/dev-a/down/sync")
    msg.payload = json.dumps(message).encode()
    assert device.sync is not None
    device.sync.handle(msg)


def snap(doc: str, version: int, items: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "snapshot", "doc": doc, "version": version, "items": items}


def delta(
    doc: str, frm: int, to: int, upserts: dict[str, Any], deletes: list[str]
) -> dict[str, Any]:
    return {
        "kind": "delta",
        "doc": doc,
        "from_version": frm,
        "version": to,
        "upserts": upserts,
        "deletes": deletes,
    }


def applied(device: DocDevice) -> list[dict[str, Any]]:
    return [e.data for e in device.store.outbox.pending(100) if e.type == DOC_APPLIED_EVENT]


def test_versions_apply_in_order_and_others_are_ignored_or_refused(device: DocDevice) -> None:
    assert device.sync is not None
    feed(device, snap("catalogue", 2, {"a": 1, "b": 2}))
    feed(device, delta("catalogue", 2, 3, {"c": 3}, ["a"]))
    assert device.version("catalogue") == 3
    assert device.items("catalogue") == {"b": 2, "c": 3}
    feed(device, snap("catalogue", 3, {"x": 0}))  # same version: ignored
    feed(device, delta("catalogue", 1, 2, {"x": 0}, []))  # older: ignored
    feed(device, delta("catalogue", 5, 6, {"x": 0}, []))  # gap: not applied (asks again)
    feed(device, delta("catalogue", 2, 4, {"x": 0}, []))  # overlaps: not applied
    assert device.items("catalogue") == {"b": 2, "c": 3} and device.version("catalogue") == 3
    stats = device.sync.stats()
    assert (stats.snapshots, stats.deltas, stats.ignored, stats.refused) == (1, 1, 2, 0)
    assert applied(device) == [{"doc": "catalogue", "version": v} for v in (2, 3)]


def test_an_invalid_record_refuses_the_whole_version(device: DocDevice) -> None:
    assert device.sync is not None
    feed(device, snap("residents", 1, {ID_NUMBERS[0]: resident(ID_NUMBERS[0])}))
    bad = {ID_NUMBERS[1]: resident(ID_NUMBERS[1]), ID_NUMBERS[2]: resident(ID_NUMBERS[0])}
    feed(device, delta("residents", 1, 2, bad, [ID_NUMBERS[0]]))
    assert device.version("residents") == 1
    assert device.store.documents.get("residents", ID_NUMBERS[0]) == resident(ID_NUMBERS[0])
    assert device.store.documents.get("residents", ID_NUMBERS[1]) is None
    assert device.sync.stats().refused == 1
    assert applied(device) == [{"doc": "residents", "version": 1}]


def test_the_event_commits_with_the_apply_or_neither_does(
    device: DocDevice, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert device.sync is not None
    feed(device, snap("notices", 1, {"n": {"t": "a"}}))

    def disk_full(self: Transaction, type: str, data: Any, *, personal: bool = False) -> Any:
        raise StoreError("disk full (injected)")

    monkeypatch.setattr(Transaction, "emit", disk_full)
    feed(device, delta("notices", 1, 2, {"m": {"t": "b"}}, ["n"]))
    monkeypatch.undo()
    assert device.version("notices") == 1, "the apply committed without its event"
    assert device.items("notices") == {"n": {"t": "a"}}
    assert device.sync.stats().failed == 1
    feed(device, delta("notices", 1, 2, {"m": {"t": "b"}}, ["n"]))  # the same again: applies
    assert device.version("notices") == 2
    assert applied(device) == [{"doc": "notices", "version": v} for v in (1, 2)]
