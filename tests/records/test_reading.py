"""Reading spreadsheets as Chinese offices save them: CSV in UTF-8, UTF-8 with BOM, GBK (Excel's
plain "CSV" on a Chinese Windows), UTF-16 tab-separated ("Unicode text"), and XLSX; and the
errors that stop an import before any row is looked at."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from sync_server.records import RecordMapping, SpreadsheetError
from sync_server.records.importer import check_file
from sync_server.records.sheet import decode_csv
from tests.records.conftest import HEADERS, TODAY, make_id, row, write_csv, write_xlsx

A = make_id("19450312", 1)
B = make_id("19500709", 2, male=False)
ROWS = [row(A, "王伟", **{"与户主关系": "户主"}), row(B, "李芳", **{"与户主关系": "配偶"})]


@pytest.mark.parametrize(
    ("encoding", "delimiter", "detected"),
    [
        ("utf-8", ",", "utf-8"),
        ("utf-8-sig", ",", "utf-8-sig"),
        ("gbk", ",", "gb18030"),
        ("gb18030", ";", "gb18030"),
        ("utf-16", "\t", "utf-16"),
    ],
)
def test_csv_encodings_are_detected(
    tmp_path: Path, mapping: RecordMapping, encoding: str, delimiter: str, detected: str
) -> None:
    path = write_csv(tmp_path / "r.csv", ROWS, encoding=encoding, delimiter=delimiter)
    sheet, result = check_file(path, mapping, today=TODAY)
    assert sheet.encoding == detected
    assert sheet.headers[: len(HEADERS)] == HEADERS
    assert sorted(r.name for r in result.accepted.values()) == ["李芳", "王伟"]
    assert result.households["H001"].address == "幸福路12号3栋501室"


def test_explicit_encoding_is_used(tmp_path: Path, mapping: RecordMapping) -> None:
    path = write_csv(tmp_path / "r.csv", ROWS, encoding="gbk")
    with pytest.raises(SpreadsheetError, match="not valid utf-8-sig text"):
        check_file(path, dataclasses.replace(mapping, encoding="utf-8"), today=TODAY)
    sheet, _ = check_file(path, dataclasses.replace(mapping, encoding="gb18030"), today=TODAY)
    assert sheet.encoding == "gb18030"


def test_undecodable_bytes_are_refused() -> None:
    with pytest.raises(SpreadsheetError, match="neither UTF-8 nor GB18030"):
        decode_csv(b"\x81\x30\xff\xff,\x80\n")


def test_header_row_below_a_title(tmp_path: Path, mapping: RecordMapping) -> None:
    path = write_csv(tmp_path / "r.csv", ROWS, before=[["幸福社区居民信息表"], []])
    sheet, result = check_file(path, dataclasses.replace(mapping, header_row=3), today=TODAY)
    assert [n for n, _ in sheet.rows] == [4, 5]
    assert len(result.accepted) == 2


def test_wrong_header_row_names_what_was_found(tmp_path: Path, mapping: RecordMapping) -> None:
    path = write_csv(tmp_path / "r.csv", ROWS, before=[["幸福社区居民信息表"]])
    with pytest.raises(SpreadsheetError) as caught:
        check_file(path, mapping, today=TODAY)
    message = str(caught.value)
    assert "'身份证号码'" in message and "found: 幸福社区居民信息表" in message
    assert "source.header_row" in message


def test_empty_header_row(tmp_path: Path, mapping: RecordMapping) -> None:
    path = write_csv(tmp_path / "r.csv", ROWS, before=[[]])
    with pytest.raises(SpreadsheetError, match=r"row 1 \(source.header_row\) is empty"):
        check_file(path, mapping, today=TODAY)


def test_a_mapped_header_twice(tmp_path: Path, mapping: RecordMapping) -> None:
    path = write_csv(tmp_path / "r.csv", ROWS, headers=[*HEADERS, "姓 名"])
    with pytest.raises(SpreadsheetError, match=r"'姓名' appears twice \(columns B and L\)"):
        check_file(path, mapping, today=TODAY)


def test_missing_optional_columns_are_listed(tmp_path: Path, mapping: RecordMapping) -> None:
    path = write_csv(
        tmp_path / "r.csv", ROWS, headers=["身份证号码", "姓名", "户号", "现住址", "民族"]
    )
    _, result = check_file(path, mapping, today=TODAY)
    assert len(result.accepted) == 2
    assert "联系电话" in result.missing_columns and "身份证号码" not in result.missing_columns
    assert result.ignored_columns == ["民族"]


def test_unmapped_columns_kept_as_extra(tmp_path: Path, mapping: RecordMapping) -> None:
    rows = [row(A, "王伟", **{"民族": "汉", "备注.1": "独居"})]
    path = write_csv(tmp_path / "r.csv", rows, headers=[*HEADERS, "民族", "备注.1"])
    _, result = check_file(path, dataclasses.replace(mapping, unmapped="extra"), today=TODAY)
    (accepted,) = result.accepted.values()
    assert accepted.extra == {"民族": "汉", "备注_1": "独居"}


def test_xlsx_named_sheet(tmp_path: Path, mapping: RecordMapping) -> None:
    path = write_xlsx(tmp_path / "r.xlsx", ROWS, sheet="居民", other_sheets=["说明"])
    sheet, result = check_file(path, dataclasses.replace(mapping, sheet="居民"), today=TODAY)
    assert sheet.sheet == "居民" and len(result.accepted) == 2
    with pytest.raises(SpreadsheetError, match=r"no sheet '人口'.*the workbook has: 居民, 说明"):
        check_file(path, dataclasses.replace(mapping, sheet="人口"), today=TODAY)


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("r.xls", b"\xd0\xcf\x11\xe0", "Excel 97-2003"),
        ("r.xlsx", b"not a zip", "not a readable .xlsx"),
        ("r.ods", b"", "unknown file type .ods"),
    ],
)
def test_unreadable_files(
    tmp_path: Path, mapping: RecordMapping, name: str, content: bytes, match: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SpreadsheetError, match=match):
        check_file(path, mapping, today=TODAY)
