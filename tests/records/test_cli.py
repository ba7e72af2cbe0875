"""``linli records``: import, check and query through click's CliRunner, on both databases; the
terminal output masks ID numbers and names, exit statuses are what docs/records.md says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from linli.commands.records import EXIT_REJECTED, records
from tests.records.conftest import EXAMPLE_MAPPING, make_id, row, write_csv, write_xlsx

A = make_id("19400312", 1)  # 80 or more whatever the date the test runs
B = make_id("19420709", 2, male=False)
C = make_id("19990101", 3)


def rows() -> list[dict[str, object]]:
    return [
        row(A, "王伟", **{"联系电话": "13800000001", "与户主关系": "户主"}),
        row(B, "李芳", address=None, **{"联系电话": "13800000002", "与户主关系": "配偶"}),
        row(C, "王强", **{"联系电话": "12345", "与户主关系": "子"}),
    ]


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(records, list(args))
    return result.exit_code, result.output


@pytest.mark.parametrize("command", [[], ["import"], ["check"], ["query"]])
def test_every_command_has_help(command: list[str]) -> None:
    status, output = invoke(*command, "--help")
    assert status == 0 and "Usage:" in output
    if command == ["import"]:
        assert "--replace" in output and "--report" in output and "--mapping" in output


def test_import_prints_a_masked_summary_and_writes_the_report(
    migrated_url: str, tmp_path: Path
) -> None:
    report_path = tmp_path / "report.json"
    sheet = write_csv(tmp_path / "幸福社区.csv", rows(), encoding="gbk")
    status, output = invoke(
        "import",
        str(sheet),
        "--mapping",
        str(EXAMPLE_MAPPING),
        "--community",
        "C01",
        "--db",
        migrated_url,
        "--report",
        str(report_path),
    )
    assert status == 0, output
    assert "3 rows, 2 accepted, 1 rejected; 1 households" in output
    assert f"row 4, 联系电话 ({C[:6]}********{C[-2:]} 王*): not a mainland mobile" in output
    assert f"report: {report_path}" in output
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert (report["accepted"], report["rejected"], report["encoding"]) == (2, 1, "gb18030")
    everything = output + report_path.read_text(encoding="utf-8")
    for clear in (A, B, C, "王伟", "李芳", "王强"):
        assert clear not in everything

    status, output = invoke(
        "import",
        str(sheet),
        "--mapping",
        str(EXAMPLE_MAPPING),
        "--community",
        "C01",
        "--db",
        migrated_url,
        "--fail-on-rejects",
    )
    assert status == EXIT_REJECTED and "1 rejected" in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--community", "C99"], "no area 'C99'"),
        (["--community", "G1"], "is a grid, not a community"),
    ],
)
def test_import_errors_exit_1_with_the_reason(
    migrated_url: str, tmp_path: Path, args: list[str], message: str
) -> None:
    sheet = write_csv(tmp_path / "r.csv", rows())
    status, output = invoke(
        "import", str(sheet), "--mapping", str(EXAMPLE_MAPPING), "--db", migrated_url, *args
    )
    assert status == 1 and message in output


def test_import_refuses_a_bad_mapping_and_an_unmigrated_database(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "r.csv", rows())
    mapping = tmp_path / "m.toml"
    mapping.write_text('[columns]\n"身份证号码" = "id"\n', encoding="utf-8")
    status, output = invoke(
        "import",
        str(sheet),
        "--mapping",
        str(mapping),
        "--community",
        "C01",
        "--db",
        f"sqlite:///{tmp_path}/new.db",
    )
    assert status == 1 and "columns.'身份证号码'" in output
    status, output = invoke(
        "import",
        str(sheet),
        "--mapping",
        str(EXAMPLE_MAPPING),
        "--community",
        "C01",
        "--db",
        f"sqlite:///{tmp_path}/new.db",
    )
    assert status == 1 and "migrate it first" in output


def test_check_needs_no_database(tmp_path: Path) -> None:
    bad = write_xlsx(tmp_path / "r.xlsx", rows())
    status, output = invoke("check", str(bad), "--mapping", str(EXAMPLE_MAPPING))
    assert status == 1
    assert "3 rows, 2 acceptable, 1 rejected" in output and "row 4, 联系电话" in output
    good = write_xlsx(tmp_path / "ok.xlsx", rows()[:2])
    status, output = invoke("check", str(good), "--mapping", str(EXAMPLE_MAPPING))
    assert status == 0 and "0 rejected" in output


def test_query_prints_masked_and_exports_in_full(migrated_url: str, tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "r.csv", rows()[:2])
    assert (
        invoke(
            "import",
            str(sheet),
            "--mapping",
            str(EXAMPLE_MAPPING),
            "--community",
            "C01",
            "--db",
            migrated_url,
        )[0]
        == 0
    )
    status, output = invoke(
        "query",
        "--db",
        migrated_url,
        "--community",
        "C01",
        "--min-age",
        "80",
        "--subsidy-missing",
        "2026",
        "--on",
        "2026-06-15",
    )
    assert status == 0 and "2 residents" in output
    assert f"{A[:6]}********{A[-2:]}  王*   86  H001  138****0001  -" in output
    assert A not in output and "王伟" not in output
    export = tmp_path / "due.xlsx"
    status, output = invoke(
        "query",
        "--db",
        migrated_url,
        "--community",
        "C01",
        "--min-age",
        "85",
        "--on",
        "2026-06-15",
        "--export",
        str(export),
    )
    assert status == 0 and f"1 residents written to {export}" in output

    import openpyxl

    values = list(openpyxl.load_workbook(export).worksheets[0].iter_rows(values_only=True))
    assert [v[:2] for v in values[1:]] == [(A, "王伟")]
