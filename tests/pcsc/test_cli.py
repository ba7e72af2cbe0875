"""`linli card ...` through click's runner, against the real pcscd and the virtual card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from device.pcsc.profile import CardRecord
from hardware_sim.vpcd import VirtualCard
from linli.cli import cli

from .conftest import READER_SLOT0, Pcscd


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.mark.parametrize("args", [["card"], ["card", "readers"], ["card", "read"]])
def test_every_command_has_help(runner: CliRunner, args: list[str]) -> None:
    result = runner.invoke(cli, [*args, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output
    if args[-1] == "read":
        assert "--wait" in result.output and "--reader" in result.output
        assert "Exit status" in result.output


@pytest.mark.pcscd
def test_readers_lists_the_virtual_reader_and_its_card(
    runner: CliRunner, card: VirtualCard, pcscd: Pcscd
) -> None:
    result = runner.invoke(cli, ["card", "readers"])
    assert result.exit_code == 0
    assert f"{READER_SLOT0}\tempty" in result.output
    card.insert()
    result = runner.invoke(cli, ["card", "readers", "--json"])
    assert {"name": READER_SLOT0, "card": True} in json.loads(result.output)


@pytest.mark.pcscd
def test_read_prints_the_card_as_json(
    runner: CliRunner, card: VirtualCard, record: CardRecord
) -> None:
    card.insert()
    result = runner.invoke(cli, ["card", "read", "--reader", READER_SLOT0, "--wait", "3"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {
        "reader": READER_SLOT0,
        "number": record.number,
        "kind": "social_security",
        "issuer": "310115",
        "expiry": "2030-12-31",
        "expired": False,
    }
    masked = runner.invoke(cli, ["card", "read", "--reader", READER_SLOT0, "--mask"])
    assert json.loads(masked.output)["number"] == record.masked_number


@pytest.mark.pcscd
def test_read_takes_the_reader_from_the_config_file(
    runner: CliRunner, card: VirtualCard, record: CardRecord, tmp_path: Path
) -> None:
    config = tmp_path / "device.toml"
    config.write_text(
        '[device]\nid = "kiosk-1"\nkind = "kiosk"\n\n[pcsc]\nreader = "PCD 00 00"\ntimeout_s = 3\n'
    )
    card.insert()
    result = runner.invoke(cli, ["card", "read", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["number"] == record.number


@pytest.mark.pcscd
def test_read_without_a_matching_reader_exits_3_naming_the_readers(
    runner: CliRunner, pcscd: Pcscd
) -> None:
    result = runner.invoke(cli, ["card", "read", "--reader", "ACR122", "--wait", "0.2"])
    assert result.exit_code == 3
    assert "no PC/SC reader matches pcsc.reader='ACR122'" in result.output
    assert READER_SLOT0 in result.output


@pytest.mark.pcscd
def test_read_without_a_card_exits_4(runner: CliRunner, card: VirtualCard) -> None:
    result = runner.invoke(cli, ["card", "read", "--reader", READER_SLOT0, "--wait", "0.3"])
    assert result.exit_code == 4
    assert "no card presented within 0.3 s" in result.output


@pytest.mark.pcscd
def test_read_of_a_card_failing_a_command_exits_1_with_the_status_word(
    runner: CliRunner, card: VirtualCard
) -> None:
    card.insert()
    card.fail(0xA4, 0x6A82)
    result = runner.invoke(cli, ["card", "read", "--reader", READER_SLOT0])
    assert result.exit_code == 1
    assert "6A82 (file or application not found)" in result.output


def test_bad_aid_is_a_usage_error(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["card", "read", "--aid", "F0"])
    assert result.exit_code == 2
    assert "aid" in result.output
