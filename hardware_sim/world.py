"""The world API: the outside of one simulated device, for tests, the demo and technicians.

A :class:`World` starts the emulated peripherals of a kiosk or locker — the SAM ID-card reader and
the GM65 scanner on ptys with stable names, a camera, and (when pcscd is there) a vpcd card — and
writes the device configuration that points the real drivers at them. Tests act through it
(``world.reader.insert(card)``, ``world.scanner.show(text)``) and read its transcripts.
"""

from __future__ import annotations

import tempfile
import tomllib
from pathlib import Path
from types import TracebackType
from typing import Literal

from device.config import DeviceConfig, parse_config
from hardware_sim.camera import SimCamera
from hardware_sim.sam import SamEmulator
from hardware_sim.scanner import Gm65Emulator
from hardware_sim.vpcd import VPCD_PORT_SLOT0, VirtualCard


class World:
    """Emulated peripherals of one device, their stable port names and the config that uses them.

    ``workdir`` holds the pty links (``idcard``, ``scanner``) and ``device.toml``; a temporary
    directory is made when none is given. ``pace=False`` skips the baud-rate pacing (faster tests).
    """

    def __init__(
        self,
        workdir: str | Path | None = None,
        *,
        device_id: str = "sim-kiosk-1",
        kind: Literal["kiosk", "locker"] = "kiosk",
        scanner: Literal["serial", "camera"] = "serial",
        pcsc: bool = False,
        vpcd_port: int = VPCD_PORT_SLOT0,
        pace: bool = True,
        idcard_baudrate: int = 115200,
    ) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="linli-world-")
            workdir = self._tmp.name
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.device_id, self.kind, self.scanner_backend = device_id, kind, scanner
        self.reader = SamEmulator(idcard_baudrate, link=self.workdir / "idcard", pace=pace)
        self.scanner = Gm65Emulator(link=self.workdir / "scanner", pace=pace)
        self.camera = SimCamera()
        self.card: VirtualCard | None = VirtualCard(port=vpcd_port) if pcsc else None
        self._started = False

    def start(self) -> World:
        if not self._started:
            self.reader.start()
            self.scanner.start()
            if self.card is not None:
                self.card.start()
            self._started = True
        return self

    def close(self) -> None:
        """Stop every emulator and remove the pty links; safe to call twice."""
        if self.card is not None:
            self.card.close()
        self.scanner.close()
        self.reader.close()
        self._started = False
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> World:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def config_toml(self) -> str:
        """The device configuration a real device would have, pointing at the emulators."""
        pcsc_backend = "pcsc" if self.card is not None else "none"
        return (
            f'[device]\nid = "{self.device_id}"\nkind = "{self.kind}"\n\n'
            f'[idcard]\nbackend = "serial"\nport = "{self.reader.path}"\n'
            f"baudrate = {self.reader.baudrate}\n\n"
            f'[pcsc]\nbackend = "{pcsc_backend}"\nreader = "Virtual PCD"\n\n'
            f'[scanner]\nbackend = "{self.scanner_backend}"\nport = "{self.scanner.path}"\n'
            f"baudrate = {self.scanner.baudrate}\n"
        )

    def device_config(self) -> DeviceConfig:
        return parse_config(tomllib.loads(self.config_toml()), "simulated world")

    def write_config(self, path: str | Path | None = None) -> Path:
        """Write :meth:`config_toml` (default ``workdir/device.toml``) and return its path."""
        target = Path(path) if path is not None else self.workdir / "device.toml"
        target.write_text(self.config_toml(), encoding="utf-8")
        return target
