"""`linli sim site --window`: the kiosk runs with its Kivy window on a real X server (a private
Xvfb with Mesa's software OpenGL), and the scenario is played through that kiosk as through a
headless one: the control socket drives the same session the window shows."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.kiosk_ui.conftest import HEIGHT, WIDTH, _free_display

pytestmark = pytest.mark.timeout(300)


def test_site_with_the_kiosk_window_plays_a_scenario(tmp_path: Path) -> None:
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
        env = {**os.environ, "DISPLAY": f":{number}", "KIVY_HOME": str(tmp_path / "kivy")}
        done = subprocess.run(
            [sys.executable, "-m", "linli", "sim", "site", "--kiosks", "1", "--lockers", "0",
             "--window", "--scenario", "kiosk-certificate", "--duration", "1",
             "--workdir", str(tmp_path / "site")],
            capture_output=True, text=True, timeout=240, check=False, env=env,
        )  # fmt: skip
    finally:
        xvfb.terminate()
        xvfb.wait(10)
    log = (tmp_path / "site" / "logs" / "kiosk-1.log").read_text(errors="replace")
    assert done.returncode == 0, f"{done.stderr[-3000:]}\n{log[-3000:]}"
    assert "PASSED" in done.stderr
    # The kiosk ran Kivy's window (not --headless) and drew it with OpenGL.
    assert "--headless" not in log.splitlines()[0]
    assert "[Window      ] Provider:" in log and "[GL          ] OpenGL version" in log, log[-3000:]
    assert "linli kiosk: stopped" in log
