"""Residents per community end to end: spreadsheet import -> publish_community -> the server's
database -> consumer -> real Mosquitto -> sync agent -> kiosk store.

What a community cares about: its kiosks hold its own residents and nobody else's, a re-import
reaches them as a delta, a kiosk that is not registered gets no resident record at all, and a
kiosk moved to another community ends up with exactly that community's records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from device.store import Store
from sync_server.consumer import Consumer
from sync_server.documents import publish_version, snapshot
from sync_server.records import import_records, load_mapping
from sync_server.records.publish import publish_community
from tests.records.conftest import EXAMPLE_MAPPING, make_id, row, write_csv

from .conftest import DocDevice, MakeDocDevice, add_areas, move, register, wait_for

A1, A2, A3 = make_id("19450312", 1), make_id("19500709", 2, male=False), make_id("19800101", 3)
B1 = make_id("19600101", 4, male=False)


def import_and_publish(engine: Engine, tmp_path: Path, community: str, rows: Any) -> int | None:
    sheet = write_csv(tmp_path / f"{community}-{len(list(tmp_path.iterdir()))}.csv", rows)
    import_records(engine, sheet, load_mapping(EXAMPLE_MAPPING), community, replace=True)
    return publish_community(engine, community)


def held(store: Store, engine: Engine, community: str) -> bool:
    """The kiosk's residents are exactly the community's newest document (sealed, by hash)."""
    want = snapshot(engine, "residents", scope=community)
    docs = store.documents
    have = dict(docs.items("residents"))
    return docs.version("residents") == want.version and have == {
        docs.lookup_hash(k): v for k, v in want.items.items()
    }


def holds_any(device: DocDevice, *id_numbers: str) -> bool:
    return any(device.store.documents.get("residents", n) is not None for n in id_numbers)


def test_each_kiosk_gets_only_its_communitys_residents_and_then_the_delta(
    engine: Engine,
    server: Consumer,
    make_doc_device: MakeDocDevice,
    sync_logs: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    add_areas(engine)
    register(engine, "dev-a", "C01")
    register(engine, "dev-b", "C02")  # dev-c has no service point
    family = [
        row(A1, "王伟", household="HA1", **{"与户主关系": "户主", "联系电话": "13800001111"}),
        row(A2, "李芳", household="HA1", address=None, **{"与户主关系": "配偶"}),
    ]
    assert import_and_publish(engine, tmp_path, "C01", family) == 1
    b_rows = [row(B1, "赵敏", household="HB1", address="和平路1号", **{"与户主关系": "户主"})]
    assert import_and_publish(engine, tmp_path, "C02", b_rows) == 2
    publish_version(engine, "catalogue", upserts={"svc": {"name": "居住证明"}})
    kiosk_a = make_doc_device("dev-a", docs=("residents",))
    kiosk_b = make_doc_device("dev-b", docs=("residents",))
    stranger = make_doc_device("dev-c", docs=("residents", "catalogue"))
    wait_for(lambda: held(kiosk_a.store, engine, "C01"), what="C01's residents on dev-a")
    wait_for(lambda: held(kiosk_b.store, engine, "C02"), what="C02's residents on dev-b")
    wait_for(lambda: stranger.version("catalogue") == 1, what="the catalogue on dev-c")
    household = kiosk_a.store.documents.get("residents", A2)
    assert household is not None and household["household"]["address"] == "幸福路12号3栋501室"
    assert not holds_any(kiosk_a, B1) and not holds_any(kiosk_b, A1, A2)
    assert stranger.version("residents") == 0

    # Re-import of C01: A1's phone changes, A2 moved away (not in the file), A3 is born.
    family = [
        row(A1, "王伟", household="HA1", **{"与户主关系": "户主", "联系电话": "13900002222"}),
        row(A3, "王强", household="HA1", address=None, **{"与户主关系": "子"}),
    ]
    assert import_and_publish(engine, tmp_path, "C01", family) == 3
    assert import_and_publish(engine, tmp_path, "C01", family) is None  # nothing changed
    assert kiosk_a.sync is not None and kiosk_b.sync is not None and stranger.sync is not None
    publish_version(engine, "catalogue", upserts={"svc2": {"name": "家庭关系证明"}})
    for device in (kiosk_a, kiosk_b, stranger):
        assert device.sync is not None
        device.sync.request()
    wait_for(lambda: kiosk_a.version("residents") == 3, what="the delta on dev-a")
    wait_for(lambda: stranger.version("catalogue") == 2, what="dev-c's second answers")
    assert kiosk_a.sync.stats().deltas == 1 and kiosk_a.sync.stats().snapshots == 1
    assert held(kiosk_a.store, engine, "C01")
    record = kiosk_a.store.documents.get("residents", A1)
    assert record is not None and record["household"]["phone"] == "13900002222"
    assert not holds_any(kiosk_a, A2, B1) and holds_any(kiosk_a, A3)
    assert kiosk_b.version("residents") == 2 and not holds_any(kiosk_b, A1, A2, A3)
    assert kiosk_b.sync.stats().deltas == 0
    assert stranger.version("residents") == 0
    refusals = [r for r in sync_logs.records if "dev-c: residents not answered" in r.getMessage()]
    assert len(refusals) == 1, "logged once per device, not at every request"
    assert "has no service point" in refusals[0].getMessage()


def test_a_kiosk_moved_to_another_community_holds_exactly_the_new_communitys_records(
    engine: Engine, server: Consumer, make_doc_device: MakeDocDevice, tmp_path: Path
) -> None:
    add_areas(engine)
    register(engine, "dev-a", "C01")
    a_rows = [row(A1, "王伟", household="HA1"), row(A2, "李芳", household="HA1", address=None)]
    import_and_publish(engine, tmp_path, "C02", [row(B1, "赵敏", household="HB1")])  # 1
    import_and_publish(engine, tmp_path, "C01", a_rows)  # 2
    import_and_publish(engine, tmp_path, "C01", a_rows[:1])  # 3
    kiosk = make_doc_device("dev-a", docs=("residents",))
    wait_for(lambda: held(kiosk.store, engine, "C01"), what="C01's residents")
    assert kiosk.version("residents") == 3
    move(engine, "dev-a", "C02")
    assert kiosk.sync is not None
    kiosk.sync.request("residents")
    wait_for(lambda: held(kiosk.store, engine, "C02"), what="C02's residents after the move")
    assert kiosk.version("residents") == 4  # C02 was moved above the kiosk's version 3
    assert holds_any(kiosk, B1) and not holds_any(kiosk, A1, A2)
