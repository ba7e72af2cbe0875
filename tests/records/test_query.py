"""Queries by condition (the "80 or older, not certified this year" list), export to CSV and XLSX
read back (and imported back), and reminders through a send callable with dedupe; on SQLite and
on a real PostgreSQL."""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from sync_server.records import (
    ExportError,
    RecordMapping,
    ResidentRecord,
    dedupe_key,
    export_residents,
    find_residents,
    import_records,
    remind_residents,
)
from sync_server.records.query import EXPORT_COLUMNS
from tests.records.conftest import TODAY, clock, make_id, row, write_csv

EXACTLY_80 = make_id("19460615", 1)  # 80 on TODAY (birthday)
ALMOST_80 = make_id("19460616", 2)  # 79, 80 tomorrow
CERTIFIED = make_id("19400229", 3, male=False)  # 86, certified 2026
NO_PHONE = make_id("19300101", 4, male=False)  # 96, certified 2025, no phone
ELSEWHERE = make_id("19440301", 5)  # 82, community C02
YOUNG = make_id("19900101", 6)
LEAP = make_id("19440229", 7)  # born on 29 February


@pytest.fixture
def loaded(engine: Engine, mapping: RecordMapping, tmp_path: Path) -> Engine:
    c01 = [
        row(
            EXACTLY_80,
            "王伟",
            **{"联系电话": "13800000001", "与户主关系": "户主", "补贴档次": "80-89周岁档"},
        ),
        row(ALMOST_80, "王二", **{"联系电话": "13800000002", "与户主关系": "兄"}),
        row(
            CERTIFIED,
            "李芳",
            household="H002",
            address="和平路1号",
            **{"联系电话": "13800000003", "高龄补贴认证年度": 2026},
        ),
        row(
            NO_PHONE,
            "赵敏",
            household="H003",
            address="和平路2号",
            **{"高龄补贴认证年度": 2025, "居住起始日期": "1988-08-08"},
        ),
        row(YOUNG, "孙七", household="H003", address=None),
        row(LEAP, "周八", household="H004", address="和平路3号", **{"联系电话": "13800000007"}),
    ]
    c02 = [row(ELSEWHERE, "吴九", household="P01", address="和平路", **{"联系电话": "13800000005"})]
    assert (
        import_records(
            engine, write_csv(tmp_path / "c01.csv", c01), mapping, "C01", clock=clock
        ).rejected
        == 0
    )
    assert (
        import_records(
            engine, write_csv(tmp_path / "c02.csv", c02), mapping, "C02", clock=clock
        ).rejected
        == 0
    )
    return engine


def ids(records: list[ResidentRecord]) -> set[str]:
    return {r.id_number for r in records}


def test_over_80_without_this_years_certification(loaded: Engine) -> None:
    found = find_residents(loaded, "C01", min_age=80, on=TODAY, subsidy_missing_year=2026)
    assert ids(found) == {EXACTLY_80, NO_PHONE, LEAP}
    by_id = {r.id_number: r for r in found}
    assert by_id[EXACTLY_80].age == 80 and by_id[NO_PHONE].age == 96
    assert (
        by_id[NO_PHONE].address == "和平路2号" and by_id[NO_PHONE].residence_since == "1988-08-08"
    )
    assert by_id[EXACTLY_80].extra == {"elderly.level": "80-89周岁档"}
    # The day before, the 80th birthday has not come yet.
    day_before = find_residents(loaded, "C01", min_age=80, on=TODAY - dt.timedelta(days=1))
    assert EXACTLY_80 not in ids(day_before)
    assert ids(find_residents(loaded, None, min_age=80, on=TODAY, subsidy_missing_year=2026)) == {
        EXACTLY_80,
        NO_PHONE,
        LEAP,
        ELSEWHERE,
    }


def test_ages_around_29_february(loaded: Engine) -> None:
    """Born 1944-02-29: 79 on 2024-02-28, 80 on 2024-02-29; in 2025 (no 29th) 80 on 03-01."""
    assert LEAP not in ids(find_residents(loaded, min_age=80, on=dt.date(2024, 2, 28)))
    assert LEAP in ids(find_residents(loaded, min_age=80, on=dt.date(2024, 2, 29)))
    assert LEAP in ids(find_residents(loaded, max_age=80, on=dt.date(2025, 2, 28)))
    assert [r.age for r in find_residents(loaded, id_numbers=[LEAP], on=dt.date(2025, 2, 28))] == [
        80
    ]


def test_other_conditions(loaded: Engine) -> None:
    assert ids(find_residents(loaded, "C01", max_age=79, on=TODAY)) == {ALMOST_80, YOUNG}
    assert ids(find_residents(loaded, household_id="H003", on=TODAY)) == {NO_PHONE, YOUNG}
    assert ids(find_residents(loaded, "C01", has_phone=False, on=TODAY)) == {NO_PHONE, YOUNG}
    assert len(find_residents(loaded, "C01", has_phone=True, limit=2)) == 2
    assert find_residents(loaded, "C99") == []


def test_records_repr_masks_personal_data(loaded: Engine) -> None:
    (record,) = find_residents(loaded, id_numbers=[EXACTLY_80], on=TODAY)
    assert EXACTLY_80 not in repr(record) and "王伟" not in repr(record)
    assert "王*" in repr(record)


def test_export_csv_reads_back_and_imports_back(
    loaded: Engine, mapping: RecordMapping, tmp_path: Path
) -> None:
    found = find_residents(loaded, "C01", min_age=80, on=TODAY, subsidy_missing_year=2026)
    path = tmp_path / "due.csv"
    assert export_residents(found, path) == 3
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # the BOM Excel needs to read UTF-8
    with path.open(encoding="utf-8-sig", newline="") as f:
        lines = list(csv.reader(f))
    assert lines[0] == [title for _, title in EXPORT_COLUMNS] + ["elderly.level"]
    by_id = {line[0].strip(): line for line in lines[1:]}
    assert set(by_id) == {EXACTLY_80, NO_PHONE, LEAP}
    assert all(line[0].startswith("\t") for line in lines[1:])  # Excel keeps it as text
    assert by_id[EXACTLY_80][1:5] == ["王伟", "男", "1946-06-15", "80"]
    assert by_id[EXACTLY_80][-1] == "80-89周岁档" and by_id[NO_PHONE][9] == ""
    report = import_records(loaded, path, mapping, "C01", clock=clock)
    assert (report.accepted, report.rejected) == (3, 0)


def test_export_xlsx_reads_back(loaded: Engine, tmp_path: Path) -> None:
    import openpyxl

    found = find_residents(loaded, "C01", min_age=80, on=TODAY, subsidy_missing_year=2026)
    path = tmp_path / "due.xlsx"
    assert export_residents(found, path) == 3
    workbook = openpyxl.load_workbook(path)
    sheet = workbook.worksheets[0]
    values = list(sheet.iter_rows(values_only=True))
    assert values[0][:4] == ("身份证号码", "姓名", "性别", "出生日期")
    by_id = {v[0]: v for v in values[1:]}
    assert set(by_id) == {EXACTLY_80, NO_PHONE, LEAP}  # text cells: every digit kept
    assert sheet.cell(row=2, column=1).number_format == "@"
    assert by_id[EXACTLY_80][4] == 80 and by_id[EXACTLY_80][9] == "13800000001"
    assert not list(tmp_path.glob(".*partial"))


def test_export_refuses_other_suffixes(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"\.csv or \.xlsx"):
        export_residents([], tmp_path / "due.xls")
    with pytest.raises(ExportError, match="no such directory"):
        export_residents([], tmp_path / "absent" / "due.csv")


class RecordingNotifier:
    """Stands in for ``NotificationService.notify``: same signature, and the same dedupe rule
    (a key already stored is not sent again), recording what would reach a phone."""

    def __init__(self) -> None:
        self.stored: dict[str, dict[str, Any]] = {}
        self.delivered: list[tuple[str, str, str, dict[str, Any]]] = []

    def notify(
        self,
        channel: str,
        recipient: str,
        template: str,
        params: Mapping[str, Any],
        case_id: str | None = None,
        dedupe: str | None = None,
    ) -> dict[str, Any]:
        assert case_id is None, "dedupe must be passed by keyword, not into case_id"
        if dedupe is not None and dedupe in self.stored:
            return self.stored[dedupe]
        self.delivered.append((channel, recipient, template, dict(params)))
        entry = {"recipient": recipient, "dedupe": dedupe}
        if dedupe is not None:
            self.stored[dedupe] = entry
        return entry


def test_reminders_skip_residents_without_phone_and_dedupe(loaded: Engine) -> None:
    due = find_residents(loaded, "C01", min_age=80, on=TODAY, subsidy_missing_year=2026)
    notifier = RecordingNotifier()
    params = {"deadline": "2026年6月30日", "place": "幸福社区服务机"}
    counts = remind_residents(due, notifier.notify, params=params, dedupe_prefix="subsidy-2026")
    assert (counts.residents, counts.requested, counts.skipped_no_phone) == (3, 2, 1)
    assert sorted(d[1] for d in notifier.delivered) == ["13800000001", "13800000007"]
    assert {d[2] for d in notifier.delivered} == {"subsidy.reminder"}
    assert notifier.delivered[0][3] == params and notifier.delivered[0][0] == "sms"
    assert set(notifier.stored) == {
        dedupe_key("subsidy-2026", EXACTLY_80),
        dedupe_key("subsidy-2026", LEAP),
    }
    assert not any(EXACTLY_80 in key or LEAP in key for key in notifier.stored)

    again = remind_residents(due, notifier.notify, params=params, dedupe_prefix="subsidy-2026")
    assert again.requested == 2 and len(notifier.delivered) == 2  # nothing new reached a phone

    next_year = remind_residents(due, notifier.notify, params=params, dedupe_prefix="subsidy-2027")
    assert next_year.requested == 2 and len(notifier.delivered) == 4


def test_reminder_prefix_is_checked(loaded: Engine) -> None:
    from sync_server.records import RecordsError

    with pytest.raises(RecordsError, match="dedupe_prefix"):
        remind_residents([], RecordingNotifier().notify, params={}, dedupe_prefix="")
