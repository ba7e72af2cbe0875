"""Finding residents by condition, and exporting them to a spreadsheet.

The typical question: "residents over 80 who have not completed this year's subsidy
certification" is ``find_residents(engine, community_id, min_age=80, subsidy_missing_year=2026)``.
Ages are full years on a given date, computed from ``birth_date`` in SQL (ISO dates compare as
text), so the database filters, not Python.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, cast

from sqlalchemy import Engine, Row, Table, or_, select

from sync_server.domain_models import Household, Resident
from sync_server.records.errors import ExportError
from sync_server.records.importer import CHINA_TZ
from sync_server.records.validate import mask_id_number, mask_name

__all__ = ["EXPORT_COLUMNS", "ResidentRecord", "age_on", "export_residents", "find_residents"]

_households = cast(Table, Household.__table__)
_residents = cast(Table, Resident.__table__)

EXPORT_COLUMNS: Final = (
    ("id_number", "身份证号码"),
    ("name", "姓名"),
    ("gender", "性别"),
    ("birth_date", "出生日期"),
    ("age", "年龄"),
    ("household_id", "户号"),
    ("address", "现住址"),
    ("residence_since", "居住起始日期"),
    ("relation", "与户主关系"),
    ("phone", "联系电话"),
    ("subsidy_year", "高龄补贴认证年度"),
    ("community_id", "社区"),
)
"""Export headers: those of the example mapping, so an export imports back with it."""


def age_on(birth: dt.date, day: dt.date) -> int:
    """Full years of age on ``day``."""
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


@dataclass(frozen=True, repr=False)
class ResidentRecord:
    """One resident with the household's address; ``age`` is on the query's date."""

    id_number: str
    name: str
    gender: str | None
    birth_date: str
    age: int
    household_id: str
    address: str
    residence_since: str | None
    relation: str | None
    phone: str | None
    subsidy_year: int | None
    community_id: str
    extra: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"ResidentRecord(id_number={mask_id_number(self.id_number)!r}, "
            f"name={mask_name(self.name)!r}, age={self.age}, community_id={self.community_id!r})"
        )

    __str__ = __repr__

    def value(self, key: str) -> Any:
        return getattr(self, key)


def _cutoff(day: dt.date, years: int) -> str:
    """The ISO text ``b`` such that ``birth_date <= b`` means at least ``years`` old on ``day``.

    Compared as text, so 29 February needs no real date in the cutoff year."""
    return f"{day.year - years:04d}-{day.month:02d}-{day.day:02d}"


def find_residents(
    engine: Engine,
    community_id: str | None = None,
    *,
    min_age: int | None = None,
    max_age: int | None = None,
    on: dt.date | None = None,
    subsidy_missing_year: int | None = None,
    household_id: str | None = None,
    has_phone: bool | None = None,
    id_numbers: Iterable[str] | None = None,
    limit: int | None = None,
) -> list[ResidentRecord]:
    """Residents matching every condition given, by community, household, birth date.

    ``min_age``/``max_age`` are inclusive full years on ``on`` (default: today in China);
    ``subsidy_missing_year=Y`` keeps residents whose last certification is before ``Y`` or
    never; ``has_phone`` keeps those with (True) or without (False) a mobile number.
    """
    day = on or dt.datetime.now(CHINA_TZ).date()
    r, h = _residents.c, _households.c
    query = select(_residents, h.address, h.residence_since).join(
        _households, h.id == r.household_id
    )
    if community_id is not None:
        query = query.where(r.community_id == community_id)
    if min_age is not None:
        query = query.where(r.birth_date <= _cutoff(day, min_age))
    if max_age is not None:
        query = query.where(r.birth_date > _cutoff(day, max_age + 1))
    if subsidy_missing_year is not None:
        query = query.where(or_(r.subsidy_year.is_(None), r.subsidy_year < subsidy_missing_year))
    if household_id is not None:
        query = query.where(r.household_id == household_id)
    if has_phone is not None:
        query = query.where(r.phone.is_not(None) if has_phone else r.phone.is_(None))
    if id_numbers is not None:
        query = query.where(r.id_number.in_(sorted(set(id_numbers))))
    query = query.order_by(r.community_id, r.household_id, r.birth_date, r.id_number)
    if limit is not None:
        query = query.limit(limit)
    with engine.connect() as conn:
        return [_record(row, day) for row in conn.execute(query)]


def _record(row: Row[Any], day: dt.date) -> ResidentRecord:
    m = row._mapping
    return ResidentRecord(
        id_number=m["id_number"],
        name=m["name"],
        gender=m["gender"],
        birth_date=m["birth_date"],
        age=age_on(dt.date.fromisoformat(m["birth_date"]), day),
        household_id=m["household_id"],
        address=m["address"],
        residence_since=m["residence_since"],
        relation=m["relation"],
        phone=m["phone"],
        subsidy_year=m["subsidy_year"],
        community_id=m["community_id"],
        extra=dict(m["extra"] or {}),
    )


def export_residents(records: Sequence[ResidentRecord], path: str | Path) -> int:
    """Write ``records`` to ``path``: ``.csv`` (UTF-8 with BOM, which Excel opens as UTF-8) or
    ``.xlsx`` (ID numbers and phones as text cells). Extra keys follow the standard columns.
    Returns the number of residents written; the file appears whole or not at all.

    In the CSV the ID number is written after a tab character: Excel would otherwise read it as
    a number and show ``1.10105E+17``, losing the last digits when saved. The importer strips it.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".xlsx"):
        raise ExportError(f"{path}: export to a .csv or .xlsx file")
    if not path.parent.is_dir():
        raise ExportError(f"{path.parent}: no such directory")
    extras = sorted({key for record in records for key in record.extra})
    header = [title for _, title in EXPORT_COLUMNS] + extras
    rows = [_export_row(record, extras) for record in records]
    partial = path.with_name(f".{path.name}.partial")
    try:
        if suffix == ".csv":
            _write_csv(partial, header, rows)
        else:
            _write_xlsx(partial, header, rows)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return len(rows)


def _export_row(record: ResidentRecord, extras: list[str]) -> list[Any]:
    values: list[Any] = [record.value(key) for key, _ in EXPORT_COLUMNS]
    values += [record.extra.get(key) for key in extras]
    return ["" if v is None else v for v in values]


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with path.open("w", encoding="utf-8-sig", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        for row in rows:
            writer.writerow(["\t" + row[0], *row[1:]])


def _write_xlsx(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    import openpyxl
    from openpyxl.cell import WriteOnlyCell

    workbook = openpyxl.Workbook(write_only=True)
    sheet = workbook.create_sheet("居民")
    sheet.append(header)
    text_columns = {0, [k for k, _ in EXPORT_COLUMNS].index("phone")}
    for row in rows:
        cells: list[Any] = []
        for i, value in enumerate(row):
            if i in text_columns:
                cell = WriteOnlyCell(sheet, value=str(value))
                cell.number_format = "@"  # text: Excel must not turn it into a number
                cells.append(cell)
            else:
                cells.append(value)
        sheet.append(cells)
    workbook.save(path)
