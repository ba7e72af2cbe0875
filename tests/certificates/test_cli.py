"""`linli certificate ...` and `linli bench print` through click's runner, with real files."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from device.idcard.identity import Identity
from hardware_sim.idcards import sample_card
from linli.cli import cli

from .conftest import household_record, page_count, pdf_text, qr_codes


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    identity = tmp_path / "id.json"
    identity.write_text(json.dumps(sample_card(2).to_json(), ensure_ascii=False), encoding="utf-8")
    household = tmp_path / "household.json"
    household.write_text(json.dumps(household_record(), ensure_ascii=False), encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(
        cli,
        [
            "certificate",
            "keygen",
            "--private",
            str(tmp_path / "k.pem"),
            "--public",
            str(tmp_path / "k.pub"),
        ],
    )
    assert result.exit_code == 0, result.output
    return {
        "identity": identity,
        "household": household,
        "key": tmp_path / "k.pem",
        "pub": tmp_path / "k.pub",
        "dir": tmp_path,
    }


def render_args(files: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        "certificate",
        "render",
        "--template",
        "residence",
        "--identity",
        str(files["identity"]),
        "--household",
        str(files["household"]),
        "--out",
        str(out),
        *extra,
    ]


def test_identity_json_round_trips() -> None:
    card = sample_card(4)
    back = Identity.from_json(json.loads(json.dumps(card.to_json())))
    assert back.name == card.name and back.id_number == card.id_number
    assert back.birth == card.birth and back.valid_to == card.valid_to
    assert back.photo == b""
    with pytest.raises(ValueError, match="'birth' must be a date"):
        Identity.from_json({**card.to_json(), "birth": "yesterday"})
    with pytest.raises(ValueError, match="'name' must be a string"):
        Identity.from_json({k: v for k, v in card.to_json().items() if k != "name"})


def test_render_writes_pdf_and_preview_and_the_qr_verifies(files: dict[str, Path]) -> None:
    out, preview = files["dir"] / "cert.pdf", files["dir"] / "cert.png"
    runner = CliRunner()
    result = runner.invoke(
        cli,
        render_args(
            files,
            out,
            "--key",
            str(files["key"]),
            "--preview",
            str(preview),
            "--community",
            "幸福社区居委会",
        ),
    )
    assert result.exit_code == 0, result.output
    pdf = out.read_bytes()
    assert page_count(pdf) == 1
    assert sample_card(2).name in pdf_text(pdf)
    assert "幸福社区居委会" in pdf_text(pdf)
    assert preview.read_bytes().startswith(b"\x89PNG")
    [qr] = qr_codes(pdf)
    result = runner.invoke(cli, ["certificate", "verify", qr, "--public-key", str(files["pub"])])
    assert result.exit_code == 0, result.output
    claims = json.loads(result.output)
    assert claims["kind"] == "certificate" and claims["template"] == "residence"
    assert claims["sub"] in pdf_text(pdf)
    tampered = qr[:40] + ("A" if qr[40] != "A" else "B") + qr[41:]
    result = runner.invoke(
        cli, ["certificate", "verify", tampered, "--public-key", str(files["pub"])]
    )
    assert result.exit_code == 1
    assert "refused" in result.output


def test_render_without_key_says_the_key_is_ephemeral(files: dict[str, Path]) -> None:
    out = files["dir"] / "cert.pdf"
    result = CliRunner().invoke(cli, render_args(files, out, "--date", "2026-01-02"))
    assert result.exit_code == 0, result.output
    assert "ephemeral key" in result.output
    assert "2026年1月2日" in pdf_text(out.read_bytes())


def test_missing_fields_exit_non_zero_and_write_no_file(files: dict[str, Path]) -> None:
    record = household_record()
    del record["address"]
    files["household"].write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")
    out, preview = files["dir"] / "cert.pdf", files["dir"] / "cert.png"
    result = CliRunner().invoke(
        cli, render_args(files, out, "--key", str(files["key"]), "--preview", str(preview))
    )
    assert result.exit_code == 1
    assert "现居住地址 [household: address]" in result.output
    assert not out.exists() and not preview.exists()
    assert list(files["dir"].glob("*.pdf")) == []


@pytest.mark.parametrize(
    ("target", "content", "expected"),
    [
        ("household", "{not json", "household record is not valid JSON"),
        ("identity", '{"name": 1}', "'name' must be a string"),
    ],
)
def test_bad_input_files_are_clear_errors(
    files: dict[str, Path], target: str, content: str, expected: str
) -> None:
    files[target].write_text(content)
    result = CliRunner().invoke(cli, render_args(files, files["dir"] / "c.pdf"))
    assert result.exit_code == 1
    assert expected in result.output


def test_unknown_template_and_bad_key(files: dict[str, Path]) -> None:
    runner = CliRunner()
    args = render_args(files, files["dir"] / "c.pdf")
    args[args.index("residence")] = "nope"
    result = runner.invoke(cli, args)
    assert result.exit_code == 1 and "available:" in result.output
    result = runner.invoke(
        cli, render_args(files, files["dir"] / "c.pdf", "--key", str(files["pub"]))
    )
    assert result.exit_code == 1 and "not an unencrypted PEM private key" in result.output


def test_templates_lists_builtin_and_community_templates(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["certificate", "templates", "--json"])
    assert result.exit_code == 0, result.output
    names = {row["name"] for row in json.loads(result.output)}
    assert {"residence", "family_relationship", "elderly_subsidy", "difficulty"} <= names
    (tmp_path / "broken.toml").write_text('name = "broken"\n')
    result = CliRunner().invoke(cli, ["certificate", "templates", "--templates-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "broken.toml" in result.output and "title: required key is missing" in result.output


def test_verify_garbage_exits_non_zero(files: dict[str, Path]) -> None:
    result = CliRunner().invoke(
        cli, ["certificate", "verify", "hello", "--public-key", str(files["pub"])]
    )
    assert result.exit_code == 1
    assert "refused (not-a-credential)" in result.output


def test_keygen_refuses_to_overwrite_and_writes_0600(files: dict[str, Path]) -> None:
    assert stat.S_IMODE(files["key"].stat().st_mode) == 0o600
    result = CliRunner().invoke(
        cli,
        ["certificate", "keygen", "--private", str(files["key"]), "--public", str(files["pub"])],
    )
    assert result.exit_code == 1 and "--force" in result.output


def test_bench_print_reports_render_and_preview_times() -> None:
    result = CliRunner().invoke(cli, ["bench", "print", "--runs", "3", "--json"])
    assert result.exit_code == 0, result.output
    measurements = {m["name"]: m for m in json.loads(result.output)}
    assert set(measurements) == {"certificate_render", "certificate_preview"}
    for m in measurements.values():
        assert m["n"] == 3 and m["unit"] == "s" and 0 < m["p50"] <= m["p95"] < 5
