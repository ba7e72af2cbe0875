"""The column mapping file: the shipped example loads, and every kind of mistake is an error
naming the key (before any spreadsheet is opened)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sync_server.records import MappingError, load_mapping
from sync_server.records.mapping import DEFAULT_DATE_FORMATS
from tests.records.conftest import EXAMPLE_MAPPING

BASE = """
[columns]
"身份证号码" = "id_number"
"姓名" = "name"
"户号" = "household_id"
"现住址" = "address"
"""


def test_example_mapping_loads_with_every_field() -> None:
    mapping = load_mapping(EXAMPLE_MAPPING)
    assert mapping.columns["身份证号码"] == "id_number"
    assert mapping.columns["高龄补贴认证年度"] == "subsidy_year"
    assert mapping.columns["补贴档次"] == "extra.elderly.level"
    assert mapping.header_of("relation") == "与户主关系"
    assert mapping.date_formats == DEFAULT_DATE_FORMATS
    assert mapping.header_row == 1
    assert mapping.unmapped == "ignore"


def test_headers_match_without_blanks(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text(BASE.replace('"姓名"', '"姓　名 "'), encoding="utf-8")
    assert load_mapping(path).columns["姓名"] == "name"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[sources]\nsheet = 'x'\n" + BASE, "'sources'"),
        ("[source]\nsheets = 'x'\n" + BASE, "source.sheets"),
        (BASE + '"民族" = "nation"\n', "columns.'民族'"),
        (BASE + '"证件号" = "id_number"\n', "both feed 'id_number'"),
        (BASE.replace('"现住址" = "address"\n', ""), "no column for address"),
        ("[source]\nheader_row = 0\n" + BASE, "source.header_row"),
        ("[source]\nheader_row = '2'\n" + BASE, "source.header_row"),
        ("[source]\ndate_formats = ['%Y-%m']\n" + BASE, "source.date_formats"),
        ("[source]\ndate_formats = '%Y-%m-%d'\n" + BASE, "source.date_formats"),
        ("[source]\nencoding = 'latin-1'\n" + BASE, "source.encoding"),
        ("[source]\ndelimiter = '|'\n" + BASE, "source.delimiter"),
        ("[source]\nunmapped = 'keep'\n" + BASE, "source.unmapped"),
        (BASE + '"地址2" = "extra.address"\n', "shadow the household record's 'address'"),
        (BASE + '"档" = "extra.elderly"\n"级" = "extra.elderly.level"\n', "columns.'档'"),
        (BASE + '"档" = "extra.x"\n"级" = "household_extra.x"\n', "both give 'x'"),
        (BASE + '"备注" = "extra.my note"\n', "columns.'备注'"),
        (BASE + '"备注" = 3\n', "columns.'备注' must be a field name"),
        (BASE + '"姓名 " = "extra.x"\n', "same header"),
        ("[columns\n", "not valid TOML"),
        ("title = 'x'\n", "unknown key 'title'"),
        ("[source]\n", "'columns' is missing"),
    ],
)
def test_bad_mapping_names_the_key(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(MappingError) as caught:
        load_mapping(path)
    assert named in str(caught.value)
    assert str(path) in str(caught.value)


def test_missing_mapping_file(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match="cannot read"):
        load_mapping(tmp_path / "absent.toml")
