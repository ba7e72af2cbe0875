"""Fixtures of the resident records tests: databases on SQLite and a private real PostgreSQL (the
pattern of tests/server), communities in ``areas``, valid ID numbers made with the check-digit
function, and spreadsheets written by the tests themselves (CSV in several encodings, XLSX).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert

from device.protocol import id_check_digit
from sync_server.db import make_engine, upgrade
from sync_server.domain_models import Area
from sync_server.records import RecordMapping, load_mapping
from tests.server import conftest as server_fixtures

TEMPLATE = server_fixtures.TEMPLATE

EXAMPLE_MAPPING = Path(__file__).parents[2] / "sync_server" / "records_mapping.example.toml"
TODAY = dt.date(2026, 6, 15)
NOW = dt.datetime(2026, 6, 15, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=8))).timestamp()
HEADERS = (
    "身份证号码",
    "姓名",
    "性别",
    "出生日期",
    "户号",
    "现住址",
    "居住起始日期",
    "与户主关系",
    "联系电话",
    "高龄补贴认证年度",
    "补贴档次",
)


def clock() -> float:
    return NOW


def make_id(
    birth: str = "19450312", seq: int = 1, *, male: bool = True, region: str = "110105"
) -> str:
    """A valid 18-character ID number: region, birth date, 2-digit order, gender digit, check."""
    body = f"{region}{birth}{seq % 100:02d}{(1 if male else 2) + 2 * (seq // 100 % 4)}"
    return body + id_check_digit(body)


def row(
    id_number: str,
    name: str = "王伟",
    *,
    household: str = "H001",
    address: str | None = "幸福路12号3栋501室",
    **cells: Any,
) -> dict[str, Any]:
    """One spreadsheet row by header; birth date and gender left blank (taken from the ID)."""
    out: dict[str, Any] = {"身份证号码": id_number, "姓名": name, "户号": household}
    if address is not None:
        out["现住址"] = address
    out.update(cells)
    return out


def write_csv(
    path: Path,
    rows: Sequence[dict[str, Any]],
    *,
    encoding: str = "utf-8",
    headers: Sequence[str] = HEADERS,
    delimiter: str = ",",
    before: Sequence[Sequence[str]] = (),
) -> Path:
    """A CSV as Excel writes one: ``utf-8-sig`` for "CSV UTF-8", ``gbk`` for plain "CSV"."""
    text = io.StringIO(newline="")
    writer = csv.writer(text, delimiter=delimiter)
    for line in before:
        writer.writerow(line)
    writer.writerow(headers)
    for r in rows:
        writer.writerow(["" if r.get(h) is None else r[h] for h in headers])
    path.write_bytes(text.getvalue().encode(encoding))
    return path


def write_xlsx(
    path: Path,
    rows: Sequence[dict[str, Any] | None],
    *,
    headers: Sequence[str] = HEADERS,
    sheet: str = "居民信息",
    before: Sequence[Sequence[Any]] = (),
    other_sheets: Sequence[str] = (),
) -> Path:
    """An XLSX through openpyxl; cell values keep their Python type (a float ID number is what
    Excel makes of one typed without a text format). ``None`` in ``rows`` is a blank row."""
    import openpyxl

    workbook = openpyxl.Workbook()
    first = workbook.active
    assert first is not None
    for name in other_sheets:
        workbook.create_sheet(name)
    first.title = sheet
    for line in before:
        first.append(list(line))
    first.append(list(headers))
    for r in rows:
        first.append([] if r is None else [r.get(h) for h in headers])
    workbook.save(path)
    return path


@pytest.fixture
def mapping() -> RecordMapping:
    return load_mapping(EXAMPLE_MAPPING)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def migrated_url(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """A new database at the newest schema, with street S1 and communities C01, C02, grid G1."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db')}/server.db"
        upgrade(url)
    else:
        url = server_fixtures.new_database(request, "r", TEMPLATE)
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(Area),
                [
                    {"id": "S1", "name": "幸福街道", "level": "street", "parent_id": None},
                    {"id": "C01", "name": "幸福社区", "level": "community", "parent_id": "S1"},
                    {"id": "C02", "name": "和平社区", "level": "community", "parent_id": "S1"},
                    {"id": "G1", "name": "一网格", "level": "grid", "parent_id": "C01"},
                ],
            )
    finally:
        engine.dispose()
    return url


@pytest.fixture
def engine(migrated_url: str) -> Iterator[Engine]:
    eng = make_engine(migrated_url)
    yield eng
    eng.dispose()
