"""`linli idcard read|decode` through click's runner, and as a real process on the emulator pty."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from device.idcard.codec import Command, build_read_reply, build_reply, build_request
from hardware_sim.idcards import sample_card
from hardware_sim.sam import SamEmulator
from linli.cli import cli

pytestmark = pytest.mark.timeout(30)

LINLI = Path(sys.executable).with_name("linli")
KEYS = {
    "name",
    "gender",
    "nation",
    "birth",
    "address",
    "id_number",
    "issuer",
    "valid_from",
    "valid_to",
    "photo_bytes",
    "id_number_valid",
    "id_number_problems",
}


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("command", [["idcard"], ["idcard", "read"], ["idcard", "decode"]])
def test_every_command_has_help(command: list[str]) -> None:
    code, out, _ = run(*command, "--help")
    assert code == 0
    assert "Usage:" in out
    assert len(out.splitlines()) > 4


def test_decode_a_read_reply_prints_the_identity() -> None:
    card = sample_card(2)
    code, out, _ = run("idcard", "decode", build_read_reply(card).hex(" "))
    assert code == 0
    data = json.loads(out)
    assert set(data) == KEYS
    assert data["id_number"] == card.id_number
    assert data["name"] == card.name
    assert data["photo_bytes"] == 1024
    assert data["valid_to"] == "长期"


def test_decode_a_status_reply_prints_status_and_meaning() -> None:
    code, out, _ = run("idcard", "decode", "AA AA AA 96 69 00 04 00 00 80 84")
    assert code == 0
    data = json.loads(out)
    assert data["sw3"] == "80"
    assert data["ok"] is False
    assert "find card failed" in data["status"]
    code, out, _ = run("idcard", "decode", build_reply(0x9F, bytes(4)).hex())
    assert json.loads(out)["status"] == "card found"


def test_decode_a_request() -> None:
    code, out, _ = run("idcard", "decode", build_request(Command.SELECT_CARD).hex())
    assert code == 0
    assert json.loads(out)["request"] == "select_card"


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ("AA AA AA 96 69 00 04 00 00 80 85", "bad checksum: expected 84, got 85"),
        ("AA AA AA 96 69 00 04 00 00", "truncated"),
        ("AB AA AA 96 69 00 04 00 00 80 84", "bad preamble"),
        ("AA AA AA 96 69 00 04 00 00 80 84 00", "length mismatch"),
        ("not hex", "not a hex string"),
    ],
)
def test_decode_a_malformed_frame_fails_with_the_reason(frame: str, message: str) -> None:
    code, _, err = run("idcard", "decode", frame)
    assert code != 0
    assert message in err


def test_read_prints_the_card_as_json(tmp_path: Path) -> None:
    card = sample_card(1)
    with SamEmulator() as emulator:
        emulator.insert(card)
        code, out, _ = run("idcard", "read", "--port", emulator.path, "--timeout", "0.5")
    assert code == 0
    data = json.loads(out)
    assert set(data) == KEYS
    assert data == card.to_json()


def test_read_without_a_card_fails_clearly() -> None:
    with SamEmulator() as emulator:
        code, _, err = run("idcard", "read", "--port", emulator.path, "--wait", "0.7")
    assert code == 1
    assert "no card on the reader" in err and "within 0.7 s" in err


def test_read_waits_for_a_card_placed_later() -> None:
    with SamEmulator() as emulator:
        timer = threading.Timer(0.5, emulator.insert, args=(sample_card(4),))
        timer.start()
        code, out, _ = run("idcard", "read", "--port", emulator.path, "--wait", "5")
        timer.join()
    assert code == 0
    assert json.loads(out)["id_number"] == sample_card(4).id_number


def test_read_as_a_process_against_the_emulator_pty(tmp_path: Path) -> None:
    card = sample_card(3)
    with SamEmulator() as emulator:
        emulator.insert(card)
        proc = subprocess.run(
            [str(LINLI), "idcard", "read", "--port", emulator.path],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == card.to_json()


def test_read_as_a_process_with_a_missing_port(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(LINLI), "idcard", "read", "--port", str(tmp_path / "ttyNONE")],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert proc.returncode == 1
    assert "cannot open" in proc.stderr
    assert proc.stdout == ""
