"""The kiosk daemon from its configuration file: the real reader driver polling the SAM
emulator on a pty, the real CUPS and ESC/POS drivers, the device store; and
``linli kiosk run --headless``."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from device.atrest import DeviceKey
from device.config import DeviceConfig, load_config
from device.credential import generate_signing_key, save_signing_key
from device.errors import ConfigError
from device.idcard.codec import Command
from device.privacy import mask_name
from device.store import open_store
from hardware_sim.cups import CupsTestServer, SimQueue
from hardware_sim.escpos.server import EscposTcpPrinter
from hardware_sim.sam import SamEmulator
from kiosk_ui.daemon import KioskDaemon
from tests.kiosk_session.conftest import CATALOGUE, EXPIRED, NOTICES, RESIDENT, households
from tests.mqtt_helpers import wait_for

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def card_slot() -> Iterator[SamEmulator]:
    with SamEmulator(pace=False) as emulator:
        yield emulator


@pytest.fixture
def receipt_model() -> Iterator[EscposTcpPrinter]:
    with EscposTcpPrinter(port=0) as model:
        yield model


def write_config(
    tmp_path: Path, card_slot: SamEmulator, cupsd: CupsTestServer, queue: SimQueue, port: int
) -> Path:
    key_path = tmp_path / "device-ed25519.pem"
    save_signing_key(generate_signing_key("kiosk-7"), key_path)
    config = tmp_path / "kiosk.toml"
    config.write_text(
        f"""
[device]
id = "kiosk-7"
kind = "kiosk"
data_dir = "{tmp_path / "data"}"

[idcard]
port = "{card_slot.path}"
timeout_s = 0.5

[a4printer]
queue = "{queue.name}"
server = "{cupsd.socket}"
job_timeout_s = 20
poll_interval_s = 0.05

[receipt]
backend = "network"
tcp_port = {port}
timeout_s = 2

[certificate]
signing_key = "{key_path}"
community = "幸福社区居民委员会"

[scanner]
backend = "none"

[kiosk]
community_id = "C01"
idle_timeout_s = 30
subsidy_deadline = "06-30"
fullscreen = false
""",
        encoding="utf-8",
    )
    return config


def seed(config: DeviceConfig) -> None:
    """The documents the server would have synced to this kiosk."""
    data_dir = Path(config.device.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    with open_store(data_dir / "store.db", key=DeviceKey.for_data_dir(data_dir)) as store:
        store.documents.apply_snapshot("residents", 1, households())
        store.documents.apply_snapshot("catalogue", 1, CATALOGUE)
        store.documents.apply_snapshot("notices", 1, NOTICES)


def test_daemon_reads_cards_and_prints_from_its_config(
    tmp_path: Path,
    card_slot: SamEmulator,
    receipt_model: EscposTcpPrinter,
    cupsd: CupsTestServer,
    queue: SimQueue,
) -> None:
    config = load_config(write_config(tmp_path, card_slot, cupsd, queue, receipt_model.port))
    seed(config)
    stop = threading.Event()
    daemon = KioskDaemon(config)
    session = daemon.session
    runner = threading.Thread(target=daemon.run, args=(stop,), daemon=True)
    runner.start()
    try:
        wait_for(lambda: daemon.indicators().reader_ok, 10, "reader available")
        assert not daemon.indicators().online  # no sync.host: offline from the cache

        card_slot.insert(RESIDENT)
        wait_for(lambda: session.screen.id == "menu", 10, "menu after the card")
        assert mask_name(RESIDENT.name) in session.screen.title
        assert session.touch("certificate")
        assert session.touch("template", name="residence")
        wait_for(lambda: session.screen.id == "preview", 20, "preview")
        assert session.touch("confirm")
        wait_for(lambda: session.screen.id == "printed", 30, "printed")
        assert len(queue.wait_for_output(1)) == 1
        assert len(receipt_model.cut_pages) == 1
        assert session.touch("end")

        # A card that cannot be read gets its screen from the watcher's on_read_error.
        card_slot.lift()
        threading.Event().wait(0.5)
        card_slot.fail_next(Command.READ_TEXT_PHOTO, 0x31)
        card_slot.insert(EXPIRED)
        wait_for(lambda: session.screen.id == "card_unreadable", 10, "unreadable card screen")
    finally:
        stop.set()
        runner.join(20)
    assert not runner.is_alive()
    assert session.screen.id == "idle"  # stopping ends the session


def test_a_locker_config_or_a_missing_key_is_refused(
    tmp_path: Path,
    card_slot: SamEmulator,
    receipt_model: EscposTcpPrinter,
    cupsd: CupsTestServer,
    queue: SimQueue,
) -> None:
    path = write_config(tmp_path, card_slot, cupsd, queue, receipt_model.port)
    config = load_config(path)
    locker = config.model_copy(
        update={"device": config.device.model_copy(update={"kind": "locker"})}
    )
    with pytest.raises(ConfigError, match="needs a kiosk config"):
        KioskDaemon(locker)
    (tmp_path / "device-ed25519.pem").unlink()
    with pytest.raises(ConfigError, match="provision the device"):
        KioskDaemon(config)


def test_cli_runs_headless_and_stops(
    tmp_path: Path,
    card_slot: SamEmulator,
    receipt_model: EscposTcpPrinter,
    cupsd: CupsTestServer,
    queue: SimQueue,
) -> None:
    path = write_config(tmp_path, card_slot, cupsd, queue, receipt_model.port)
    seed(load_config(path))
    done = subprocess.run(
        [sys.executable, "-m", "linli", "kiosk", "run", "--config", str(path), "--headless",
         "--duration", "2"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "linli kiosk: kiosk-7, offline" in done.stderr
    assert "linli kiosk: stopped" in done.stderr


def test_cli_without_a_display_says_use_headless(tmp_path: Path) -> None:
    config = tmp_path / "kiosk.toml"
    config.write_text('[device]\nid = "k"\nkind = "kiosk"\n', encoding="utf-8")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "linli", "kiosk", "run", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip
    assert done.returncode == 2
    assert "use --headless" in done.stderr
