"""Importing into the server database, on SQLite and on a real PostgreSQL: what is stored, what is
reported (and that the stored report holds no clear ID number or name), re-imports, replace,
residents moving between communities, households another community uses, and all-or-nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from sync_server.domain_models import Household, RecordImport, Resident
from sync_server.records import (
    ImportReport,
    RecordMapping,
    RecordsError,
    UnknownCommunityError,
    import_records,
)
from sync_server.records import importer as importer_module
from tests.records.conftest import NOW, clock, make_id, row, write_csv, write_xlsx

A = make_id("19450312", 1)  # 王伟, head of H001
B = make_id("19500709", 2, male=False)  # 李芳, spouse
C = make_id("19800101", 3)  # 王强, son
D = make_id("19600101", 4, male=False)  # 赵敏, H002


def family() -> list[dict[str, Any]]:
    return [
        row(
            A,
            "王伟",
            **{"与户主关系": "户主", "联系电话": "13800001111", "居住起始日期": "2010-05-01"},
        ),
        row(B, "李芳", address=None, **{"与户主关系": "配偶", "高龄补贴认证年度": 2025}),
        row(C, "王强", **{"与户主关系": "子"}),
        row(D, "赵敏", household="H002", address="幸福路14号", **{"与户主关系": "户主"}),
    ]


def dump(engine: Engine) -> dict[str, Any]:
    """Everything the import writes, in a comparable form."""
    with engine.connect() as conn:
        residents = conn.execute(select(Resident.__table__).order_by("id_number")).all()
        households = conn.execute(select(Household.__table__).order_by("id")).all()
        imports = conn.execute(select(RecordImport.__table__).order_by("id")).all()
    return {
        "residents": [tuple(r) for r in residents],
        "households": [tuple(h) for h in households],
        "imports": [tuple(i) for i in imports],
    }


def residents(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        rows = conn.execute(select(Resident.__table__)).mappings().all()
    return {r["id_number"]: dict(r) for r in rows}


def households(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        rows = conn.execute(select(Household.__table__)).mappings().all()
    return {r["id"]: dict(r) for r in rows}


def test_valid_import_stores_households_and_residents(
    engine: Engine, mapping: RecordMapping, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "幸福社区.csv", family(), encoding="gbk")
    report = import_records(engine, path, mapping, "C01", clock=clock)
    assert (report.rows, report.accepted, report.rejected, report.households) == (4, 4, 0, 2)
    assert report.encoding == "gb18030" and report.source == "幸福社区.csv"
    stored = residents(engine)
    assert set(stored) == {A, B, C, D}
    assert stored[A] == {
        "id_number": A,
        "household_id": "H001",
        "community_id": "C01",
        "name": "王伟",
        "gender": "男",
        "birth_date": "1945-03-12",
        "relation": "户主",
        "phone": "13800001111",
        "subsidy_year": None,
        "extra": {},
        "import_id": report.import_id,
        "updated": NOW,
    }
    assert stored[B]["subsidy_year"] == 2025 and stored[B]["gender"] == "女"
    homes = households(engine)
    assert homes["H001"]["address"] == "幸福路12号3栋501室"
    assert homes["H001"]["residence_since"] == "2010-05-01"
    assert homes["H002"]["community_id"] == "C01"
    with engine.connect() as conn:
        record = conn.execute(select(RecordImport.__table__)).mappings().one()
    assert (record["accepted"], record["rejected"], record["at"]) == (4, 0, NOW)
    assert record["report"] == report.to_json()


def test_rejected_rows_are_reported_and_the_rest_committed(
    engine: Engine, mapping: RecordMapping, tmp_path: Path
) -> None:
    rows = family()
    rows[2]["联系电话"] = "12345"
    rows.append(row(A, "王伟伟", household="H003", address="x"))
    path = write_xlsx(tmp_path / "r.xlsx", rows)
    report = import_records(engine, path, mapping, "C01", clock=clock)
    assert (report.accepted, report.rejected) == (2, 3)
    assert set(residents(engine)) == {B, D}
    assert [(p.row, p.column) for p in report.problems] == [
        (2, "身份证号码"),
        (4, "联系电话"),
        (6, "身份证号码"),
    ]
    with engine.connect() as conn:
        stored = conn.execute(select(RecordImport.report)).scalar_one()
    text = json.dumps(stored, ensure_ascii=False) + "\n".join(p.line() for p in report.problems)
    for clear in (A, C, "王伟", "王强", "王伟伟", "12345"):
        assert clear not in text
    assert f"{A[:6]}********{A[-2:]}" in text and "王*" in text


def test_reimport_updates_and_keeps_what_is_not_in_the_file(
    engine: Engine, mapping: RecordMapping, tmp_path: Path
) -> None:
    first = import_records(
        engine, write_csv(tmp_path / "1.csv", family()), mapping, "C01", clock=clock
    )
    changed = family()[:2]
    changed[0]["联系电话"] = "13900002222"
    changed[0]["现住址"] = "幸福路12号3栋502室"
    changed[1]["高龄补贴认证年度"] = 2026
    second = import_records(
        engine, write_csv(tmp_path / "2.csv", changed), mapping, "C01", clock=lambda: NOW + 60
    )
    assert second.import_id != first.import_id and second.deleted == 0
    stored = residents(engine)
    assert set(stored) == {A, B, C, D}  # not replace: C and D stay as they were
    assert stored[A]["phone"] == "13900002222" and stored[A]["updated"] == NOW + 60
    assert stored[B]["subsidy_year"] == 2026 and stored[B]["import_id"] == second.import_id
    assert stored[C]["import_id"] == first.import_id
    assert households(engine)["H001"]["address"] == "幸福路12号3栋502室"


def test_replace_deletes_the_absent_but_not_a_rejected_row(
    engine: Engine, mapping: RecordMapping, tmp_path: Path
) -> None:
    import_records(engine, write_csv(tmp_path / "1.csv", family()), mapping, "C01", clock=clock)
    other = make_id("19700101", 5)
    import_records(
        engine,
        write_csv(tmp_path / "c02.csv", [row(other, "孙七", household="P01", address="和平路")]),
        mapping,
        "C02",
        clock=clock,
    )
    rows = family()
    rows[1]["联系电话"] = "bad"  # B: rejected, but her ID number is readable: she is kept
    del rows[3]  # D left: deleted, and her household H002 with her
    report = import_records(
        engine, write_csv(tmp_path / "2.csv", rows), mapping, "C01", clock=clock, replace=True
    )
    assert (report.accepted, report.rejected, report.deleted) == (2, 1, 1)
    assert "1 residents not in the file deleted" in report.summary()
    assert set(residents(engine)) == {A, B, C, other}
    assert set(households(engine)) == {"H001", "P01"}


def test_replace_refuses_a_file_with_nothing_accepted(
    engine: Engine, mapping: RecordMapping, tmp_path: Path
) -> None:
    import_records(engine, write_csv(tmp_path / "1.csv", family()), mapping, "C01", clock=clock)
    before = dump(engine)
    bad = [row("123", "王伟")]
    with pytest.raises(RecordsError, match="no row was accepted; refusing to replace"):
        import_records(engine, write_csv(tmp_path / "2.csv", bad), mapping, "C01", replace=True)
    assert dump(engine) == before


def test_a_resident_moving_community_is_updated(
    engine: Engine, mapping: RecordMapping, tmp_path: Path
) -> None:
    import_records(engine, write_csv(tmp_path / "1.csv", family()), mapping, "C01", clock=clock)
    moved = [row(D, "赵敏", household="P07", address="和平路7号", **{"与户主关系": "户主"})]
    report = import_records(
        engine, write_csv(tmp_path / "2.csv", moved), mapping, "C02", clock=clock
    )
    assert report.moved == 1 and "1 moved from another community" in report.summary()
    stored = residents(engine)[D]
    assert (stored["community_id"], stored["household_id"]) == ("C02", "P07")
    homes = households(engine)
    assert "H002" not in homes  # left empty by the move
    assert homes["P07"]["community_id"] == "C02"


def test_a_household_number_of_another_community_is_refused(
    engine: Engine, mapping: RecordMapping, tmp_path: Path
) -> None:
    import_records(engine, write_csv(tmp_path / "1.csv", family()), mapping, "C01", clock=clock)
    before = dump(engine)["households"]
    clash = [row(make_id("19900101", 6), "陌生人", household="H001", address="和平路9号")]
    report = import_records(
        engine, write_csv(tmp_path / "2.csv", clash), mapping, "C02", clock=clock
    )
    assert (report.accepted, report.rejected) == (0, 1)
    (problem,) = report.problems
    assert problem.column == "户号" and "another community" in problem.problem
    assert dump(engine)["households"] == before
    assert set(residents(engine)) == {A, B, C, D}


def test_a_whole_household_moving_takes_its_number_along(
    engine: Engine, mapping: RecordMapping, tmp_path: Path
) -> None:
    import_records(engine, write_csv(tmp_path / "1.csv", family()), mapping, "C01", clock=clock)
    whole = [r for r in family() if r["户号"] == "H001"]
    for r in whole:
        r.update({"现住址": "和平路3号"} if "现住址" in r else {})
    report = import_records(
        engine, write_csv(tmp_path / "2.csv", whole), mapping, "C02", clock=clock
    )
    assert (report.accepted, report.moved) == (3, 3)
    assert households(engine)["H001"]["community_id"] == "C02"
    assert {r["community_id"] for k, r in residents(engine).items() if k != D} == {"C02"}


@pytest.mark.parametrize(("community", "match"), [("C99", "no area 'C99'"), ("G1", "a grid")])
def test_the_community_must_exist(
    engine: Engine, mapping: RecordMapping, tmp_path: Path, community: str, match: str
) -> None:
    with pytest.raises(UnknownCommunityError, match=match):
        import_records(engine, write_csv(tmp_path / "1.csv", family()), mapping, community)
    assert dump(engine) == {"residents": [], "households": [], "imports": []}


def test_a_failure_mid_import_leaves_the_previous_data(
    engine: Engine, mapping: RecordMapping, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upsert is made to fail after its first chunks have been written (chunks of 2 rows; the
    fourth statement raises, when the households and the first residents are in the
    transaction), standing for a crash or a database error half way. Everything rolls back: the
    records are those of the previous import, and no record_imports row is added."""
    import_records(engine, write_csv(tmp_path / "1.csv", family()[:2]), mapping, "C01", clock=clock)
    before = dump(engine)
    real = importer_module._upsert
    calls: list[int] = []

    def failing(conn: Any, table: Any, key: str, rows: list[dict[str, Any]]) -> None:
        calls.append(len(rows))
        if len(calls) == 4:
            raise RuntimeError("injected failure after some rows")
        real(conn, table, key, rows)

    monkeypatch.setattr(importer_module, "UPSERT_CHUNK", 2)
    monkeypatch.setattr(importer_module, "_upsert", failing)
    rows = family()
    rows[0]["联系电话"] = "13900009999"
    rows += [
        row(make_id("19700101", n), f"新{n}", household="H005", address="y") for n in range(10, 13)
    ]
    with pytest.raises(RuntimeError, match="injected"):
        import_records(
            engine, write_csv(tmp_path / "2.csv", rows), mapping, "C01", clock=clock, replace=True
        )
    # Households (3, in chunks of 2 and 1), residents: the first chunk written, the second fails.
    assert calls == [2, 1, 2, 2]
    assert dump(engine) == before


def test_the_same_file_twice_changes_nothing_but_the_import(
    engine: Engine, mapping: RecordMapping, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "1.csv", family())
    first: ImportReport = import_records(engine, path, mapping, "C01", clock=clock)
    after_first = {"r": residents(engine), "h": households(engine)}
    second = import_records(engine, path, mapping, "C01", clock=clock)

    def without_import(data: dict[str, Any]) -> dict[str, Any]:
        return {k: {i: {**v, "import_id": 0} for i, v in d.items()} for k, d in data.items()}

    assert second.to_json() | {"import_id": 0} == first.to_json() | {"import_id": 0}
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(RecordImport)).scalar_one() == 2
    after_second = {"r": residents(engine), "h": households(engine)}
    assert after_second["r"][A]["import_id"] == second.import_id
    assert without_import(after_second) == without_import(after_first)


def test_concurrent_imports_of_overlapping_files(
    engine: Engine, mapping: RecordMapping, tmp_path: Path
) -> None:
    """Two imports at once (two offices, or a double click) touching the same residents in
    opposite file orders: both commit (rows are written in key order, so on PostgreSQL one
    waits for the other instead of deadlocking; SQLite serialises writers)."""
    import threading

    people = [
        row(make_id("19500101", n), f"居民{n}", household=f"H{n % 7}", address=f"路{n % 7}号")
        for n in range(60)
    ]
    forward = write_csv(tmp_path / "f.csv", people)
    backward = write_csv(tmp_path / "b.csv", people[::-1])
    errors: list[BaseException] = []

    def run(path: Path) -> None:
        try:
            for _ in range(3):
                import_records(engine, path, mapping, "C01", clock=clock)
        except BaseException as err:  # reported below, with the thread's traceback lost
            errors.append(err)

    threads = [threading.Thread(target=run, args=(p,)) for p in (forward, backward)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(residents(engine)) == 60 and len(households(engine)) == 7
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(RecordImport)).scalar_one() == 6
