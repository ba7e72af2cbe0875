"""Documents end to end: server database -> consumer -> real Mosquitto -> sync agent -> store.

What an operator cares about: a device ends up with exactly the server's document, by snapshot
when it is new and by the missing deltas when it is a little behind; resident records stay
sealed on the device; versions published while a device is away reach it when it is back.
"""

from __future__ import annotations

from sqlalchemy import Engine, delete

from device.store import DOCUMENTS
from hardware_sim.mosquitto import MosquittoTestBroker
from sync_server.consumer import Consumer
from sync_server.documents import publish_version, snapshot
from sync_server.models import Document

from .conftest import (
    ID_NUMBERS,
    MakeDocDevice,
    add_areas,
    applied_events,
    register,
    resident,
    wait_for,
)

PERSONAL = [
    *ID_NUMBERS,
    "王伟",
    "李芳",
    "幸福路",
    "13800000000",
    "H-310115-0042",
]


def publish_residents(engine: Engine, *kiosks: str) -> None:
    """Two versions of community C01's residents; ``kiosks`` are registered as C01's."""
    add_areas(engine)
    for kiosk in kiosks:
        register(engine, kiosk, "C01")
    c01 = "C01"
    publish_version(
        engine, "residents", upserts={n: resident(n) for n in ID_NUMBERS[:2]}, scope=c01
    )
    publish_version(
        engine,
        "residents",
        upserts={ID_NUMBERS[2]: resident(ID_NUMBERS[2], phone="13900000000")},
        deletes=[ID_NUMBERS[0]],
        scope=c01,
    )


def test_fresh_device_gets_snapshots_and_resident_records_stay_sealed(
    engine: Engine, server: Consumer, make_doc_device: MakeDocDevice
) -> None:
    publish_residents(engine, "dev-a")
    for i in range(3):
        publish_version(engine, "catalogue", upserts={f"svc{i}": {"name": f"service {i}"}})
    device = make_doc_device("dev-a")
    wait_for(
        lambda: device.version("residents") == 2 and device.version("catalogue") == 3,
        what="both documents",
    )
    assert device.sync is not None
    stats = device.sync.stats()
    assert (stats.snapshots, stats.deltas, stats.refused) == (2, 0, 0)
    assert device.sync.versions() == {
        d: {"residents": 2, "catalogue": 3}.get(d, 0) for d in DOCUMENTS
    }
    assert device.items("catalogue") == snapshot(engine, "catalogue").items
    docs = device.store.documents
    assert docs.get("residents", ID_NUMBERS[0]) is None
    assert docs.get("residents", ID_NUMBERS[1]) == resident(ID_NUMBERS[1])
    assert docs.get("residents", ID_NUMBERS[2]) == resident(ID_NUMBERS[2], phone="13900000000")
    # Each applied version is an event, sent like any other and stored by the server.
    wait_for(lambda: len(applied_events(engine, "dev-a")) == 2, what="doc.applied events")
    assert sorted(applied_events(engine, "dev-a")) == [("catalogue", 3), ("residents", 2)]
    # Nothing personal in the database files, while open (WAL) and after close.
    files = [p for p in device.path.parent.glob(f"{device.path.name}*") if p.is_file()]
    raw = b"".join(p.read_bytes() for p in files)
    device.close()
    raw += device.path.read_bytes()
    for text in PERSONAL:
        assert text.encode() not in raw, f"{text!r} is in the store files in clear"


def test_device_behind_gets_exactly_the_missing_deltas_after_being_offline(
    engine: Engine, server: Consumer, make_doc_device: MakeDocDevice
) -> None:
    for i in range(2):
        publish_version(engine, "notices", upserts={f"n{i}": {"title": f"notice {i}"}})
    device = make_doc_device("dev-a")
    wait_for(lambda: device.version("notices") == 2, what="the first snapshot")
    device.stop()  # the device is off; the office publishes three more versions
    publish_version(engine, "notices", upserts={"n2": {"title": "notice 2"}})
    publish_version(engine, "notices", upserts={"n0": {"title": "changed"}}, deletes=["n1"])
    publish_version(engine, "notices", upserts={}, deletes=["n2"])
    sync = device.start()
    wait_for(lambda: device.version("notices") == 5, what="the missing versions")
    stats = sync.stats()
    assert (stats.deltas, stats.snapshots, stats.rerequests) == (3, 0, 0)
    assert device.items("notices") == {"n0": {"title": "changed"}}
    assert device.items("notices") == snapshot(engine, "notices").items
    wait_for(lambda: len(applied_events(engine, "dev-a")) == 4, what="doc.applied events")
    assert applied_events(engine, "dev-a") == [("notices", v) for v in (2, 3, 4, 5)]


def test_the_same_agent_asks_again_on_every_reconnect(
    engine: Engine,
    server: Consumer,
    broker: MosquittoTestBroker,
    make_doc_device: MakeDocDevice,
) -> None:
    publish_version(engine, "revocations", upserts={"cti-1": {"at": 1}})
    device = make_doc_device("dev-a")
    wait_for(lambda: device.version("revocations") == 1, what="the first version")
    # Published while the device is connected: nothing asks for it (no timer in this test)...
    publish_version(engine, "revocations", upserts={"cti-2": {"at": 2}})
    publish_version(engine, "revocations", upserts={"cti-3": {"at": 3}})
    # ...until the device loses its connection (a second client takes its session over) and
    # its agent reconnects on its own.
    intruder = broker.client("dev-a", client_id="dev-a")
    intruder.disconnect()
    wait_for(lambda: device.version("revocations") == 3, what="the versions after reconnect")
    assert set(device.items("revocations")) == {"cti-1", "cti-2", "cti-3"}


def test_a_timer_request_picks_up_new_versions_while_connected(
    engine: Engine, server: Consumer, make_doc_device: MakeDocDevice
) -> None:
    device = make_doc_device("dev-a", docs=("config",))
    assert device.sync is not None
    wait_for(lambda: device.sync is not None and device.sync.stats().requests == 1, what="ask")
    assert device.version("config") == 0
    publish_version(engine, "config", upserts={"idle_timeout_s": 90})
    assert device.sync.request() == 1
    wait_for(lambda: device.version("config") == 1, what="the new version")
    assert device.items("config") == {"idle_timeout_s": 90}


def test_documents_survive_a_device_restart_without_asking_from_zero(
    engine: Engine, server: Consumer, make_doc_device: MakeDocDevice
) -> None:
    publish_residents(engine, "dev-b")
    device = make_doc_device("dev-b")
    wait_for(lambda: device.version("residents") == 2, what="residents")
    device.close()
    publish_version(engine, "residents", upserts={}, deletes=[ID_NUMBERS[1]], scope="C01")
    again = make_doc_device("dev-b")  # same files: a new process on the same store
    wait_for(lambda: again.version("residents") == 3, what="the new version")
    assert again.sync is not None
    assert (again.sync.stats().deltas, again.sync.stats().snapshots) == (1, 0)
    assert again.store.documents.get("residents", ID_NUMBERS[1]) is None
    assert again.store.documents.get("residents", ID_NUMBERS[2]) is not None


def test_device_ahead_of_a_restored_server_follows_the_server(
    engine: Engine, server: Consumer, make_doc_device: MakeDocDevice
) -> None:
    publish_version(engine, "catalogue", upserts={"old": {"fee": 1}})
    publish_version(engine, "catalogue", upserts={"lost": {"fee": 2}})
    publish_version(engine, "catalogue", upserts={"lost2": {"fee": 3}})
    device = make_doc_device("dev-a", docs=("catalogue",))
    wait_for(lambda: device.version("catalogue") == 3, what="version 3")
    device.stop()
    with engine.begin() as conn:  # the server database is restored from a backup at version 1
        conn.execute(delete(Document).where(Document.version > 1))
    device.start()
    wait_for(lambda: device.version("catalogue") == 4, what="the server's document")
    assert device.items("catalogue") == {"old": {"fee": 1}}
    assert snapshot(engine, "catalogue").version == 4
