"""A real kiosk daemon with its control socket on: the SAM emulator on a pty, the private cupsd,
the ESC/POS emulator (the wiring of tests/kiosk_ui/test_daemon.py, reused by import)."""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from device.config import DeviceConfig, load_config
from hardware_sim.cups import CupsTestServer, SimQueue
from hardware_sim.escpos.server import EscposTcpPrinter
from hardware_sim.sam import SamEmulator
from kiosk_ui.daemon import KioskDaemon
from tests.kiosk_ui import test_daemon
from tests.kiosk_ui.test_daemon import seed, write_config

# The SAM emulator on a pty and the ESC/POS emulator of test_daemon.py, as fixtures here too.
card_slot = test_daemon.card_slot
receipt_model = test_daemon.receipt_model


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short directory for sockets: pytest's tmp_path can exceed the 107 bytes of sun_path."""
    path = Path(tempfile.mkdtemp(prefix="lkc-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def kiosk_config(
    tmp_path: Path,
    sock_dir: Path,
    card_slot: SamEmulator,
    receipt_model: EscposTcpPrinter,
    cupsd: CupsTestServer,
    queue: SimQueue,
) -> DeviceConfig:
    """The TOML of test_daemon.py plus ``[kiosk] control_socket`` (``[kiosk]`` is its last
    table), with the synced documents in the store."""
    path = write_config(tmp_path, card_slot, cupsd, queue, receipt_model.port)
    with path.open("a", encoding="utf-8") as toml:
        toml.write(f'control_socket = "{sock_dir / "kiosk.sock"}"\n')
    config = load_config(path)
    seed(config)
    return config


@pytest.fixture
def start_kiosk(
    kiosk_config: DeviceConfig,
) -> Iterator[Callable[[DeviceConfig], KioskDaemon]]:
    """Start daemons (control socket listening on return); stopped after the test, before the
    emulators they use."""
    daemons: list[KioskDaemon] = []

    def start(config: DeviceConfig) -> KioskDaemon:
        daemon = KioskDaemon(config)
        daemons.append(daemon)
        daemon.start()
        return daemon

    yield start
    for daemon in daemons:
        daemon.stop()


def stale_socket(path: Path) -> None:
    """What a killed daemon leaves: a socket file nobody listens on."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
        sock.listen(1)
