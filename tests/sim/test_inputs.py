"""The input watch over the world API: real drivers on pty emulators, through faults."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from pyzbar.pyzbar import decode

from device.credential import load_verify_key, verify
from device.inputs import InputEvent, InputWatch
from hardware_sim.idcards import sample_card
from hardware_sim.world import World
from tests.certificates.conftest import pdf_text, qr_codes


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with World(tmp_path / "site", pace=False) as w:
        yield w


def _next(events: queue.Queue[InputEvent], kind: str, timeout: float = 10.0) -> InputEvent:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            event = events.get(timeout=deadline - time.monotonic())
        except queue.Empty:
            break
        if event.kind == kind:
            return event
    raise AssertionError(f"no {kind} event within {timeout} s")


def _ready(watch: InputWatch, timeout: float = 10.0) -> None:
    """Wait until every peripheral is open: bytes sent to a port nobody has open are lost."""
    deadline = time.monotonic() + timeout
    while not all(watch.health().values()):
        assert time.monotonic() < deadline, watch.health()
        time.sleep(0.05)


def test_card_and_scan_arrive_through_the_configured_drivers(world: World) -> None:
    events: queue.Queue[InputEvent] = queue.Queue()
    with InputWatch(world.device_config(), events.put) as watch:
        _ready(watch)
        world.reader.insert(sample_card(7))
        card = _next(events, "idcard").idcard
        assert card is not None and card.id_number == sample_card(7).id_number
        world.scanner.show("LQ1:HELLO")
        scan = _next(events, "scan").scan
        assert scan is not None and scan.text == "LQ1:HELLO"
        assert watch.health() == {"idcard": True, "scanner": True}


def test_peripherals_that_vanish_send_garbage_or_stall_do_not_stop_the_watch(
    world: World,
) -> None:
    events: queue.Queue[InputEvent] = queue.Queue()
    with InputWatch(world.device_config(), events.put) as watch:
        _ready(watch)
        world.reader.insert(sample_card(1))
        _next(events, "idcard")
        world.reader.lift()
        # Both ports disappear, as when the USB hub is knocked out, then come back.
        world.reader.unplug()
        world.scanner.unplug()
        time.sleep(1.5)
        assert watch.health() == {"idcard": False, "scanner": False}
        world.reader.plug()
        world.scanner.plug()
        # The scanner babbles, the reader stalls for a while.
        world.scanner.send_garbage(40, seed=3)
        world.reader.silent = True
        time.sleep(1.5)
        world.reader.silent = False
        world.reader.insert(sample_card(2))
        card = _next(events, "idcard", timeout=20).idcard
        assert card is not None and card.id_number == sample_card(2).id_number
        world.scanner.show("after-the-storm")
        scan = _next(events, "scan", timeout=20).scan
        assert scan is not None and scan.text == "after-the-storm"


def test_a_failing_listener_does_not_stop_the_peripherals(world: World) -> None:
    seen: list[str] = []

    def listener(event: InputEvent) -> None:
        seen.append(event.kind)
        if len(seen) == 1:
            raise RuntimeError("listener bug")

    with InputWatch(world.device_config(), listener) as watch:
        _ready(watch)
        world.scanner.show("one")
        time.sleep(1.0)
        world.scanner.show("two")
        deadline = time.monotonic() + 10
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert seen == ["scan", "scan"]


def test_world_config_is_a_valid_device_configuration(world: World) -> None:
    path = world.write_config()
    from device.config import load_config

    cfg = load_config(path)
    assert cfg.idcard.port == str(world.workdir / "idcard")
    assert cfg.scanner.backend == "serial"


def test_demo_command_reads_cards_and_scans_codes_with_personal_data_masked() -> None:
    linli = Path(sys.executable).with_name("linli")
    result = subprocess.run(
        [str(linli), "sim", "demo", "--visits", "2", "--interval", "0.5", "--no-print"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "cards read: 2, codes scanned: 2" in result.stderr
    assert '"certificate"' not in result.stdout
    assert '"LINLI-DEMO-0001"' in result.stdout
    for i in range(2):
        assert sample_card(i).id_number not in result.stdout
        assert sample_card(i).name not in result.stdout


def test_watch_command_against_served_emulators(tmp_path: Path) -> None:
    linli = str(Path(sys.executable).with_name("linli"))
    with World(tmp_path / "w") as world:
        config = world.write_config()
        proc = subprocess.Popen(
            [linli, "watch", "--config", str(config), "--duration", "8"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.5)
        world.reader.insert(sample_card(3))
        time.sleep(1.5)
        world.scanner.show("watched")
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert '"event": "idcard"' in out
    assert '"text": "watched"' in out
    assert sample_card(3).id_number not in out


def test_watch_with_a_bad_config_names_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[device]\nid = "k"\nkind = "kiosk"\n[scanner]\nbaud = 9600\n', "utf-8")
    linli = str(Path(sys.executable).with_name("linli"))
    result = subprocess.run(
        [linli, "watch", "--config", str(bad), "--duration", "1"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "scanner.baud: unknown key" in result.stderr


def test_demo_prints_a_certificate_and_a_receipt_for_each_card(tmp_path: Path) -> None:
    """The whole kiosk on simulated hardware: real cupsd + cups-pdf, receipt emulator."""
    linli = Path(sys.executable).with_name("linli")
    workdir = tmp_path / "site"
    result = subprocess.run(
        [str(linli), "sim", "demo", "--visits", "2", "--interval", "0.5", "--workdir", workdir],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "certificates issued: 2, A4 pages out: 2" in result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    certificates = [line for line in lines if line["event"] == "certificate"]
    assert [c["receipt"] for c in certificates] == ["printed", "printed"]
    serials = [c["serial"] for c in certificates]
    public = load_verify_key(workdir / "kiosk" / "certificate-public.pem", "sim-kiosk-1")
    for i, serial in enumerate(serials):
        pdf = (workdir / "kiosk" / "printed" / f"{serial}.pdf").read_bytes()
        assert sample_card(i).name in pdf_text(pdf)
        (code,) = qr_codes(pdf)
        claims = verify(code, {"sim-kiosk-1": public}, audience=None, now=time.time())
        assert claims.sub == serial
        receipt = Image.open(workdir / "kiosk" / "receipts" / f"{serial}.png")
        assert [c.data.decode("ascii") for c in decode(receipt)] == [code]
    for i in range(2):
        assert sample_card(i).id_number not in result.stdout + result.stderr
        assert sample_card(i).name not in result.stdout + result.stderr
