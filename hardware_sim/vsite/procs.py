"""The virtual site's child processes: Mosquitto, the server, each kiosk and locker.

Each runs as its own process with its own log file, as it would on its own machine; the site can
stop one cleanly (SIGTERM, as systemd does), cut its power (SIGKILL) and start it again.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from device.errors import DeviceUnavailableError
from hardware_sim.processes import stop_process


class ChildProcess:
    """One program of the site: ``argv`` run with its output in ``log``, restartable."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log: Path,
        *,
        ready: Callable[[], bool] | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        self.ready = ready
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.running and self.process is not None else None

    def start(self, timeout_s: float = 30.0) -> None:
        """Start the program and wait until ``ready()`` holds (if given); a program that exits
        or is not ready in time raises :class:`DeviceUnavailableError` with its log's tail."""
        self.launch()
        self.wait_ready(timeout_s)

    def launch(self) -> None:
        """Start the program without waiting (several start at once; :meth:`wait_ready`)."""
        if self.running:
            return
        self.log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env} if self.env is not None else None
        with self.log.open("ab") as out:
            out.write(f"--- start {self.starts + 1}: {' '.join(self.argv)}\n".encode())
            out.flush()
            self.process = subprocess.Popen(  # noqa: S603 -- our own argv, no shell
                self.argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self.cwd
            )
        self.starts += 1

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Wait until the launched program's ``ready()`` holds (see :meth:`start`)."""
        if self.ready is None or self.process is None:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise DeviceUnavailableError(
                    f"{self.name} exited ({code}) while starting; {self.tail()}"
                )
            if self.ready():
                return
            time.sleep(0.05)
        self.kill()
        raise DeviceUnavailableError(f"{self.name} was not ready in {timeout_s:g}s; {self.tail()}")

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM and wait (SIGKILL after ``timeout_s``)."""
        if self.process is not None:
            stop_process(self.process, timeout_s, terminate=self.process.poll() is None)
            self.process = None

    def kill(self) -> None:
        """SIGKILL: the power is cut; nothing gets to run a cleanup."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)

    def tail(self, chars: int = 2000) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""
        return f"log {self.log} (tail):\n{text[-chars:]}"
