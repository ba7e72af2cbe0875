"""Publishing a community's records to its kiosks, on SQLite and PostgreSQL: only what changed
goes into a version, nothing when nothing changed, concurrent publishers never store a stale
change, and ``linli records publish`` / ``records import`` through click's CliRunner."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, update

from device.protocol import DocumentDelta, SyncRequest
from linli.commands.records import EXIT_NOT_PUBLISHED, records
from sync_server.documents import answer, latest_version, snapshot
from sync_server.domain_models import Area
from sync_server.records import (
    RecordMapping,
    UnknownCommunityError,
    community_items,
    import_records,
)
from sync_server.records.publish import community_ids, publish_communities, publish_community
from tests.records.conftest import EXAMPLE_MAPPING, clock, make_id, row, write_csv

A = make_id("19450312", 1)
B = make_id("19500709", 2, male=False)
C = make_id("19800101", 3)
D = make_id("19600101", 4, male=False)


def c01_rows(phone: str = "13800000001") -> list[dict[str, Any]]:
    return [
        row(A, "王伟", **{"与户主关系": "户主", "联系电话": phone}),
        row(B, "李芳", address=None, **{"与户主关系": "配偶"}),
    ]


def residents_of(engine: Engine, community: str) -> dict[str, Any]:
    return snapshot(engine, "residents", scope=community).items


def test_a_version_holds_only_what_changed(
    engine: Engine, mapping: RecordMapping, tmp_path: Path
) -> None:
    import_records(engine, write_csv(tmp_path / "1.csv", c01_rows()), mapping, "C01", clock=clock)
    assert publish_community(engine, "C01", clock=clock) == 1
    assert residents_of(engine, "C01") == community_items(engine, "C01")
    assert publish_community(engine, "C01", clock=clock) is None
    assert publish_community(engine, "C02", clock=clock) is None  # no residents, never published
    # A new phone for A, B gone (--replace), C new: the delta names exactly those.
    rows = [c01_rows("13900000009")[0], row(C, "王强", **{"与户主关系": "子"})]
    import_records(
        engine, write_csv(tmp_path / "2.csv", rows), mapping, "C01", clock=clock, replace=True
    )
    assert publish_community(engine, "C01", clock=clock) == 2
    (delta,) = answer(engine, SyncRequest(doc="residents", version=1), scope="C01")
    assert isinstance(delta, DocumentDelta)
    assert sorted(delta.upserts) == sorted([A, C]) and delta.deletes == [B]
    assert delta.upserts[A]["household"]["phone"] == "13900000009"
    assert residents_of(engine, "C01") == community_items(engine, "C01")
    with pytest.raises(UnknownCommunityError, match="is a grid, not a community"):
        publish_community(engine, "G1")
    assert community_ids(engine) == ["C01", "C02"]
    assert publish_communities(engine, clock=clock) == {"C01": None, "C02": None}


def test_concurrent_publishers_of_one_community_end_with_the_records(
    engine: Engine, mapping: RecordMapping, tmp_path: Path
) -> None:
    import_records(engine, write_csv(tmp_path / "1.csv", c01_rows()), mapping, "C01", clock=clock)
    results: list[int | None] = []
    errors: list[BaseException] = []

    def publisher() -> None:
        try:
            results.append(publish_community(engine, "C01", clock=clock))
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=publisher) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    # One of them published; the others found nothing left to do (or published nothing new).
    assert [r for r in results if r is not None] == [1]
    assert residents_of(engine, "C01") == community_items(engine, "C01")


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(records, list(args))
    return result.exit_code, result.output


def import_cli(url: str, sheet: Path, community: str, *extra: str) -> tuple[int, str]:
    return invoke(
        "import",
        str(sheet),
        "--mapping",
        str(EXAMPLE_MAPPING),
        "--community",
        community,
        "--db",
        url,
        *extra,
    )


def test_import_publishes_unless_told_not_to_and_publish_catches_up(
    migrated_url: str, engine: Engine, tmp_path: Path
) -> None:
    status, output = import_cli(migrated_url, write_csv(tmp_path / "1.csv", c01_rows()), "C01")
    assert status == 0, output
    assert "C01: residents version 1 published to the kiosks" in output
    assert residents_of(engine, "C01") == community_items(engine, "C01")
    sheet = write_csv(tmp_path / "2.csv", c01_rows("13900000009"))
    status, output = import_cli(migrated_url, sheet, "C01", "--no-publish")
    assert status == 0 and "published" not in output
    assert latest_version(engine, "residents", scope="C01") == 1
    status, output = invoke("publish", "--community", "C01", "--db", migrated_url)
    assert status == 0 and "C01: residents version 2 published" in output
    status, output = invoke("publish", "--all", "--db", migrated_url)
    assert status == 0, output
    assert "C01: kiosks up to date" in output and "C02: kiosks up to date" in output
    for clear in (A, B, "王伟", "李芳", "13900000009"):
        assert clear not in output


def test_an_import_that_moves_residents_also_updates_the_old_communitys_kiosks(
    migrated_url: str, engine: Engine, tmp_path: Path
) -> None:
    assert import_cli(migrated_url, write_csv(tmp_path / "1.csv", c01_rows()), "C01")[0] == 0
    # The whole household H001 moves to C02 (and D joins C02 in another household).
    moved = [*c01_rows(), row(D, "赵敏", household="H002", address="和平路1号")]
    status, output = import_cli(migrated_url, write_csv(tmp_path / "2.csv", moved), "C02")
    assert status == 0, output
    assert "2 moved from another community" in output
    assert "C02: residents version 2 published" in output
    assert "C01: residents version 3 published" in output
    assert residents_of(engine, "C01") == {}
    assert residents_of(engine, "C02").keys() == {A, B, D}


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["--community", "C99"], 1, "no area 'C99'"),
        (["--community", "G1"], 1, "is a grid, not a community"),
        ([], 2, "give --community C"),
        (["--community", "C01", "--all"], 2, "give --community C"),
    ],
)
def test_publish_refuses_what_it_cannot_do(
    migrated_url: str, args: list[str], status: int, message: str
) -> None:
    got, output = invoke("publish", "--db", migrated_url, *args)
    assert (got, message in output) == (status, True), output


def test_a_failed_publish_after_an_import_exits_4_with_what_to_run(
    migrated_url: str, engine: Engine, tmp_path: Path
) -> None:
    assert import_cli(migrated_url, write_csv(tmp_path / "1.csv", c01_rows()), "C01")[0] == 0
    # C01 stops being a community (a data mistake) while its kiosks still hold H001; an import
    # moving H001 to C02 commits and publishes C02, but C01 cannot be published.
    with engine.begin() as conn:
        conn.execute(update(Area).where(Area.id == "C01").values(level="grid"))
    status, output = import_cli(migrated_url, write_csv(tmp_path / "2.csv", c01_rows()), "C02")
    assert status == EXIT_NOT_PUBLISHED == 4, output
    assert "C02: residents version 2 published" in output
    assert "import 2 committed, but the kiosks of C01 were not updated" in output
    assert "linli records publish --community C01 --db " in output
    assert residents_of(engine, "C02").keys() == {A, B}
