"""Row and file rules, each rejection with its report line, and a report that holds no ID number
or name in clear. No database: ``check_file`` is the importer's first step."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from device.protocol import id_check_digit
from sync_server.records import RecordMapping, RowProblem
from sync_server.records.importer import check_file
from sync_server.records.validate import LOST_DIGITS, Validation
from tests.records.conftest import TODAY, make_id, row, write_csv, write_xlsx

A = make_id("19450312", 1)  # male, 81 on TODAY
B = make_id("19500709", 2, male=False)  # female


def x_id() -> str:
    """A valid ID number whose check character is X."""
    for seq in range(100):
        body = f"11010519491231{seq:02d}2"
        if id_check_digit(body) == "X":
            return body + "X"
    raise AssertionError("no X check digit in 100 tries")


def check(tmp_path: Path, mapping: RecordMapping, rows: list[dict[str, Any]]) -> Validation:
    path = write_csv(tmp_path / "rows.csv", rows, encoding="utf-8-sig")
    return check_file(path, mapping, today=TODAY)[1]


def problems_of(validation: Validation, row_number: int) -> list[tuple[str, str]]:
    return [(p.column, p.problem) for p in validation.problems if p.row == row_number]


def assert_masked(validation: Validation, clear: list[str]) -> None:
    text = json.dumps([p.to_json() for p in validation.problems], ensure_ascii=False)
    text += "\n".join(p.line() for p in validation.problems)
    for value in clear:
        assert value not in text


def test_valid_rows_are_normalised(tmp_path: Path, mapping: RecordMapping) -> None:
    xid = x_id()
    rows = [
        row(A, " 王伟 ", **{"与户主关系": "户主", "联系电话": "+86 138-0000-1111", "性别": "男"}),
        row(
            f"'{xid[:6]} {xid[6:-1]}{xid[-1].lower()}",
            "王芳",
            address=None,
            **{"性别": "女性", "出生日期": "1949/12/31", "高龄补贴认证年度": "2025年"},
        ),
        row(
            "１１" + B[2:],
            "李芳",
            household="H002",
            address="和平路1号",
            **{"居住起始日期": "2015年6月1日", "补贴档次": "80-89周岁档"},
        ),
    ]
    result = check(tmp_path, mapping, rows)
    assert result.problems == []
    accepted = {r.id_number: r for r in result.accepted.values()}
    assert set(accepted) == {A, xid, B}
    assert accepted[A].name == "王伟" and accepted[A].phone == "13800001111"
    assert accepted[A].gender == "男" and accepted[A].birth_date == "1945-03-12"
    assert accepted[xid].gender == "女" and accepted[xid].subsidy_year == 2025
    assert accepted[B].extra == {"elderly.level": "80-89周岁档"}
    # The member row without an address takes its household's.
    assert result.households["H001"].address == "幸福路12号3栋501室"
    assert result.households["H002"].residence_since == "2015-06-01"


@pytest.mark.parametrize(
    ("cells", "column", "problem"),
    [
        ({"身份证号码": ""}, "身份证号码", "required"),
        ({"身份证号码": "11010519450312001"}, "身份证号码", "17 characters, expected 18"),
        ({"身份证号码": "11010519450312001A"}, "身份证号码", "17 digits followed by a digit or X"),
        (
            {"身份证号码": A[:-1] + str((int(A[-1]) + 1) % 10) if A[-1] != "X" else A[:-1] + "0"},
            "身份证号码",
            "check digit",
        ),
        ({"身份证号码": "110105450312001"}, "身份证号码", "15-digit"),
        ({"身份证号码": "1.10105E+17"}, "身份证号码", LOST_DIGITS),
        ({"身份证号码": "110105194503120000"}, "身份证号码", LOST_DIGITS),
        ({"姓名": ""}, "姓名", "required"),
        ({"姓名": "王" * 65}, "姓名", "longer than 64"),
        ({"户号": ""}, "户号", "required"),
        ({"性别": "女"}, "性别", "17th digit (odd: 男)"),
        ({"性别": "未知"}, "性别", "must be 男 or 女"),
        ({"出生日期": "1945-03-13"}, "出生日期", "does not match the birth date in the ID"),
        ({"出生日期": "1945-13-01"}, "出生日期", "not a date"),
        ({"居住起始日期": "去年"}, "居住起始日期", "not a date"),
        ({"居住起始日期": "2027-01-01"}, "居住起始日期", "in the future"),
        ({"联系电话": "010-12345678"}, "联系电话", "not a mainland mobile"),
        ({"联系电话": "1380000111"}, "联系电话", "not a mainland mobile"),
        ({"高龄补贴认证年度": "1999"}, "高龄补贴认证年度", "not a plausible"),
        ({"高龄补贴认证年度": "2027"}, "高龄补贴认证年度", "not a plausible"),
        ({"高龄补贴认证年度": "去年"}, "高龄补贴认证年度", "not a year"),
        ({"与户主关系": "关" * 17}, "与户主关系", "longer than 16"),
        ({"现住址": ""}, "现住址", "no row of this household"),
    ],
)
def test_each_rejection_has_its_report_line(
    tmp_path: Path, mapping: RecordMapping, cells: dict[str, str], column: str, problem: str
) -> None:
    good = row(B, "李芳", household="H009", address="和平路1号")
    bad = row(A, "王伟")
    bad.update(cells)
    result = check(tmp_path, mapping, [good, bad])
    assert [r.id_number for r in result.accepted.values()] == [B]
    assert result.rejected_rows == 1
    lines = problems_of(result, 3)
    assert any(c == column and problem in p for c, p in lines), lines
    assert_masked(result, [A, B, "王伟", "李芳", cells.get("姓名", "王伟") or "王伟"])


def test_future_birth_date_in_id(tmp_path: Path, mapping: RecordMapping) -> None:
    result = check(tmp_path, mapping, [row(make_id("20270101", 1), "王伟")])
    assert problems_of(result, 2) == [("身份证号码", "digits 7-14 are a birth date in the future")]


def test_invalid_embedded_date(tmp_path: Path, mapping: RecordMapping) -> None:
    result = check(tmp_path, mapping, [row(make_id("19451332", 1), "王伟")])
    assert problems_of(result, 2) == [("身份证号码", "digits 7-14 are not a valid date")]


def test_duplicates_reject_both_rows(tmp_path: Path, mapping: RecordMapping) -> None:
    rows = [row(A, "王伟"), row(B, "李芳"), row(A.lower(), "王小伟", household="H002", address="x")]
    result = check(tmp_path, mapping, rows)
    assert [r.id_number for r in result.accepted.values()] == [B]
    assert problems_of(result, 2) == [("身份证号码", "the same ID number is also in row 4")]
    assert problems_of(result, 4) == [("身份证号码", "the same ID number is also in row 2")]
    masked = {p.id_number for p in result.problems}
    assert masked == {f"{A[:6]}********{A[-2:]}"}
    assert {p.name for p in result.problems} == {"王*"}


def test_household_with_two_addresses_rejects_its_rows(
    tmp_path: Path, mapping: RecordMapping
) -> None:
    c = make_id("19800101", 3)
    rows = [
        row(A, "王伟", address="幸福路12号"),
        row(B, "李芳", address=None),
        row(c, "王强", address="幸福路 13号"),
        row(make_id("19900101", 4), "赵六", household="H002", address="和平路1号"),
    ]
    result = check(tmp_path, mapping, rows)
    assert len(result.accepted) == 1 and list(result.households) == ["H002"]
    for n in (2, 3, 4):
        assert problems_of(result, n) == [
            (
                "现住址",
                "this household (户号) has different addresses in rows 2, 4; "
                "one household, one address",
            )
        ]
    assert_masked(result, ["幸福路", A, B, c])


def test_the_same_address_with_other_blanks_is_one_address(
    tmp_path: Path, mapping: RecordMapping
) -> None:
    rows = [row(A, "王伟", address="幸福路12号 501室"), row(B, "李芳", address="幸福路12号  501室")]
    assert check(tmp_path, mapping, rows).problems == []


def test_xlsx_cells_keep_their_types_and_row_numbers(
    tmp_path: Path, mapping: RecordMapping
) -> None:
    """A title row above the header, a blank row, dates as date cells, an ID number that Excel
    turned into a float, a phone as a number: row numbers are the worksheet's."""
    path = write_xlsx(
        tmp_path / "rows.xlsx",
        [
            row(
                A,
                "王伟",
                **{
                    "出生日期": dt.datetime(1945, 3, 12),
                    "联系电话": 13800001111,
                    "居住起始日期": dt.date(2010, 5, 1),
                    "高龄补贴认证年度": 2025,
                },
            ),
            None,
            row(float(B), "李芳"),
            row(int(make_id("19800101", 3)[:-1] + "0"), "王强"),
        ],
        before=[["幸福社区一户一档"]],
    )
    mapping = dataclasses.replace(mapping, header_row=2)
    sheet, result = check_file(path, mapping, today=TODAY)
    assert sheet.sheet == "居民信息"
    assert [n for n, _ in sheet.rows] == [3, 5, 6]
    accepted = list(result.accepted.values())
    assert [r.row for r in accepted] == [3]
    assert accepted[0].phone == "13800001111" and accepted[0].subsidy_year == 2025
    assert result.households["H001"].residence_since == "2010-05-01"
    assert problems_of(result, 5) == [("身份证号码", LOST_DIGITS)]
    assert problems_of(result, 6) == [("身份证号码", LOST_DIGITS)]
    assert_masked(result, [B, "李芳", "王强"])


def test_report_line_format() -> None:
    problem = RowProblem(7, "身份证号码", "check digit is 1, expected 2", "110105********12", "张*")
    assert (
        problem.line() == "row 7, 身份证号码 (110105********12 张*): check digit is 1, expected 2"
    )
