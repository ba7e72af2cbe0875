"""The Kivy kiosk UI under a real X server (Xvfb) with Mesa's software OpenGL, in this process.

Kivy creates its one window when ``kivy.core.window`` is first imported, so nothing here imports
Kivy before the ``ui`` fixture has started Xvfb and pointed ``DISPLAY`` at it. The session under
the UI is the real one of tests/kiosk_session (SAM emulator on a pty, real cupsd, ESC/POS
emulator); touches are Kivy ``UnitTestTouch`` motion events dispatched through the window, as a
touch panel's would be; screenshots go to artifacts/screenshots/kiosk/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kiosk_session.conftest import make_kiosk  # noqa: F401 -- a fixture, used by name

WIDTH, HEIGHT = 1280, 800
SHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots" / "kiosk"


def _free_display() -> int:
    for number in range(91, 140):
        if (
            not Path(f"/tmp/.X11-unix/X{number}").exists()
            and not Path(f"/tmp/.X{number}-lock").exists()
        ):
            return number
    raise RuntimeError("no free X display number")


@pytest.fixture(scope="session")
def xvfb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private Xvfb; DISPLAY and Kivy's settings are set for the rest of this process."""
    if shutil.which("Xvfb") is None:
        pytest.fail("Xvfb is not installed: run scripts/bootstrap.sh (Debian package xvfb)")
    number = _free_display()
    display = f":{number}"
    proc = subprocess.Popen(
        ["Xvfb", display, "-screen", "0", f"{WIDTH}x{HEIGHT}x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not Path(f"/tmp/.X11-unix/X{number}").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"Xvfb {display} did not start")
        time.sleep(0.05)
    os.environ["DISPLAY"] = display
    os.environ["KIVY_NO_ARGS"] = "1"
    os.environ["KIVY_LOG_MODE"] = "PYTHON"  # leave the root logger (and caplog) alone
    os.environ["KIVY_NO_CONSOLELOG"] = "1"
    os.environ["KIVY_NO_FILELOG"] = "1"
    os.environ["KIVY_HOME"] = str(tmp_path_factory.mktemp("kivy-home"))
    try:
        yield display
    finally:
        proc.terminate()
        proc.wait(10)


class Ui:
    """Kivy's window and event loop, stepped by the test (no ``App.run``)."""

    def __init__(self) -> None:
        from kivy.config import Config

        Config.set("graphics", "width", str(WIDTH))
        Config.set("graphics", "height", str(HEIGHT))
        from kivy.base import EventLoop

        EventLoop.ensure_window()
        self.loop = EventLoop
        self.window = EventLoop.window
        self.window.size = (WIDTH, HEIGHT)

    def pump(self, until: Callable[[], bool] = lambda: False, timeout_s: float = 0.3) -> bool:
        """Run frames until ``until()`` or ``timeout_s``; whether it became true."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.loop.idle()
            if until():
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)

    def tap(self, widget: Any) -> None:
        """A finger down and up in the middle of ``widget``, through the window."""
        from kivy.tests.common import UnitTestTouch

        x, y = widget.to_window(*widget.center)
        touch = UnitTestTouch(x, y)
        touch.touch_down()
        self.pump(timeout_s=0.05)
        touch.touch_up()
        self.pump(timeout_s=0.05)

    def show(self, widget: Any) -> None:
        for child in list(self.window.children):
            self.window.remove_widget(child)
        self.window.add_widget(widget)
        self.pump(timeout_s=0.2)

    def shot(self, widget: Any, name: str) -> Path:
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{name}.png"
        self.pump(timeout_s=0.1)
        widget.export_to_png(str(path))
        return path


@pytest.fixture(scope="session")
def ui(xvfb: str) -> Ui:
    return Ui()
