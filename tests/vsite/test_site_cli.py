"""`linli sim site` (what ./run.sh starts) and `linli sim serve`, as a technician runs them."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hardware_sim.processes import reserved_tcp_port
from tests.kiosk_ui.conftest import HEIGHT, WIDTH, _free_display

pytestmark = pytest.mark.timeout(300)
LINLI = [sys.executable, "-m", "linli"]


@pytest.fixture
def display(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A private Xvfb (Mesa's software OpenGL); the environment for a child process to use it,
    without any Kivy settings this test process may carry."""
    number = _free_display()
    xvfb = subprocess.Popen(
        ["Xvfb", f":{number}", "-screen", "0", f"{WIDTH}x{HEIGHT}x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not Path(f"/tmp/.X11-unix/X{number}").exists():
            assert xvfb.poll() is None and time.monotonic() < deadline, "Xvfb did not start"
            time.sleep(0.05)
        env = {k: v for k, v in os.environ.items() if not k.startswith("KIVY_")}
        yield {**env, "DISPLAY": f":{number}", "KIVY_HOME": str(tmp_path / "kivy")}
    finally:
        xvfb.terminate()
        xvfb.wait(10)


def test_site_plays_a_scenario_with_a_live_summary_and_stops(
    tmp_path: Path, display: dict[str, str]
) -> None:
    """With ``--window`` the kiosk runs Kivy's window on the X server, and the scenario is
    played through it as through a headless kiosk (`linli sim run` covers headless kiosks)."""
    done = subprocess.run(
        [*LINLI, "sim", "site", "--kiosks", "1", "--lockers", "1", "--scenario",
         "kiosk-certificate", "--duration", "2", "--interval", "0.5", "--http-port", "0",
         "--window", "--workdir", str(tmp_path / "site")],
        capture_output=True, text=True, timeout=240, check=False, env=display,
    )  # fmt: skip
    kiosk_log = (tmp_path / "site" / "logs" / "kiosk-1.log").read_text(errors="replace")
    assert done.returncode == 0, f"{done.stderr[-3000:]}\n{kiosk_log[-3000:]}"
    described = json.loads(done.stdout)
    assert set(described["devices"]) == {"kiosk-1", "locker-1"}
    assert described["pages"]["worker"].endswith("/w")
    assert Path(described["devices"]["kiosk-1"]["idcard"]).exists() is False  # removed at stop
    assert "[1/2] ✓" in done.stderr and "[2/2] ✓" in done.stderr
    assert "online 2/2 · cases: none" in done.stderr
    assert "PASSED" in done.stderr
    assert "stopping the site" in done.stderr
    # Each device ran as its own process with its own store.
    for device in ("kiosk-1", "locker-1"):
        assert (
            tmp_path / "site" / "devices" / device / "var" / "lib" / "linli" / "store.db"
        ).exists()
        assert (tmp_path / "site" / "logs" / f"{device}.log").exists()
    # The kiosk ran Kivy's window (not --headless), drew it with OpenGL and stopped cleanly.
    assert "--headless" not in kiosk_log.splitlines()[0]
    assert re.search(r"Window[\s\]:]*Provider:", kiosk_log), kiosk_log[-3000:]
    assert re.search(r"GL[\s\]:]*OpenGL version", kiosk_log), kiosk_log[-3000:]
    assert "linli kiosk: stopped" in kiosk_log


def test_site_refuses_a_used_workdir(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "something").write_text("x", encoding="utf-8")
    done = subprocess.run(
        [*LINLI, "sim", "site", "--scenario", "none", "--workdir", str(tmp_path / "site")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "is not empty: give a new --workdir" in done.stderr


def test_serve_offers_the_lock_board_and_the_printer_on_tcp(tmp_path: Path) -> None:
    port = reserved_tcp_port()
    process = subprocess.Popen(
        [*LINLI, "sim", "serve", "--dir", str(tmp_path), "--printer-port", str(port),
         "--locks", "4", "--duration", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not (tmp_path / "locks").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (tmp_path / "locks").exists() and (tmp_path / "idcard").exists()
        status = subprocess.run(
            [*LINLI, "escpos", "status", "--host", "127.0.0.1", "--port", str(port)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert status.returncode == 0, status.stderr
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    finally:
        process.send_signal(signal.SIGINT)
        out, _err = process.communicate(timeout=30)
    assert f"printer tcp://0.0.0.0:{port}" in out
    assert "locks" in out
