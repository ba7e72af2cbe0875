"""The virtual site: Mosquitto, the sync server, N kiosks and M lockers, each its own process.

:class:`VirtualSite` provisions a site the way a technician would (``provision site init``, the
areas, services and workers, the communities' household records imported and published, each
device added with a pre-generated bundle and its bundle installed in the device's own directory),
then runs every program from the files provisioning wrote:

- ``mosquitto -c site/mosquitto.conf`` (TLS, per-device passwords, ACL);
- ``linli server run --config site/server.toml`` (HTTP pages and API, MQTT consumer, dispatcher);
- per kiosk ``linli kiosk run --config`` against a SAM ID-card reader and a GM65 scanner emulated
  on ptys, a receipt printer emulated on TCP and an A4 queue of a private real cupsd;
- per locker ``linli locker run --config`` against a bus of 8A lock boards and a GM65 scanner on
  ptys.

The emulators live in this process, so a scenario can place cards, open doors and show codes
while the devices run elsewhere; each device reaches the broker through its own
:class:`~hardware_sim.netlink.NetLink`, so its network can be cut. Everything lives under
``workdir`` (``site/``, ``devices/ID/``, ``logs/``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import signal
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import tomli_w
from argon2 import PasswordHasher
from sqlalchemy import Engine, func, select

from device.errors import LinliError
from hardware_sim.cups import CupsTestServer, SimQueue
from hardware_sim.escpos.server import EscposTcpPrinter
from hardware_sim.lockboard import LockBoardBus
from hardware_sim.mosquitto import mosquitto_path
from hardware_sim.netlink import NetLink
from hardware_sim.processes import accepts, reserved_tcp_port
from hardware_sim.sam import SamEmulator
from hardware_sim.scanner import Gm65Emulator
from hardware_sim.smsgw import SmsGatewayEmulator
from hardware_sim.vsite import data
from hardware_sim.vsite.procs import ChildProcess
from kiosk_ui.control import ControlClient
from provisioning.devices import DeviceRequest, add_device, install_bundle
from provisioning.site import BrokerSettings, DeviceDefaults, Site, init_site
from sync_server.catalogue import sync_catalogue
from sync_server.domain_models import Case
from sync_server.models import Device
from sync_server.records import load_mapping
from sync_server.records.importer import import_records
from sync_server.records.publish import publish_communities

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
MAPPING = ROOT / "sync_server" / "records_mapping.example.toml"
LOCKER_SIZES = ("S", "M", "M", "L")
START_TIMEOUT_S = 60.0


class SiteError(LinliError, RuntimeError):
    """The virtual site cannot start (a missing program, a device that does not come up)."""


def linli_argv(*args: str) -> list[str]:
    """The ``linli`` program of this Python environment."""
    return [sys.executable, "-m", "linli", *args]


@dataclass
class SimDevice:
    """What every simulated device has: its process, its directory, its network link."""

    id: str
    kind: str
    directory: Path
    link: NetLink
    process: ChildProcess = field(init=False)
    scanner: Gm65Emulator = field(init=False)

    @property
    def config_path(self) -> Path:
        return self.directory / "etc" / "linli" / "device.toml"

    @property
    def data_dir(self) -> Path:
        return self.directory / "var" / "lib" / "linli"

    def close_emulators(self) -> None:
        self.scanner.close()


@dataclass
class SimKiosk(SimDevice):
    """A kiosk: reader and scanner on ptys, receipt printer on TCP, an A4 queue on cupsd."""

    reader: SamEmulator = field(init=False)
    receipt: EscposTcpPrinter = field(init=False)
    queue: SimQueue | None = field(init=False, default=None)

    @property
    def control_socket(self) -> Path:
        return self.directory / "control.sock"

    def control(self) -> ControlClient:
        """The kiosk's control socket (the touch screen, for the scenario's residents)."""
        return ControlClient(self.control_socket)

    def receipts_cut(self) -> int:
        return len(self.receipt.cut_pages)

    def pages_printed(self) -> int:
        return 0 if self.queue is None else len(self.queue.outputs())

    def close_emulators(self) -> None:
        super().close_emulators()
        self.reader.close()
        self.receipt.close()


@dataclass
class SimLocker(SimDevice):
    """A locker: a bus of lock boards and a GM65 scanner on ptys."""

    bus: LockBoardBus = field(init=False)

    def close_emulators(self) -> None:
        super().close_emulators()
        self.bus.close()


@dataclass
class SiteOptions:
    """How big the site is and how it runs."""

    kiosks: int = 1
    lockers: int = 1
    http_port: int = 0  # 0: a free port
    headless: bool = True  # kiosks without a Kivy window
    pace: bool = False  # emulate baud rates byte by byte (slower, as a real line is)


class VirtualSite:
    """The whole site under ``workdir``; :meth:`start` brings it up, :meth:`close` stops all."""

    def __init__(self, workdir: Path, options: SiteOptions | None = None) -> None:
        self.workdir = Path(workdir).resolve()
        self.options = options or SiteOptions()
        self.logs = self.workdir / "logs"
        self.http_port = self.options.http_port or reserved_tcp_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.site: Site | None = None
        self.engine: Engine | None = None
        self.broker: ChildProcess | None = None
        self.server: ChildProcess | None = None
        self.cupsd: CupsTestServer | None = None
        self.sms = SmsGatewayEmulator()  # started with the site
        self.kiosks: dict[str, SimKiosk] = {}
        self.lockers: dict[str, SimLocker] = {}
        self._stack = contextlib.ExitStack()

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> VirtualSite:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, progress: Callable[[str], None] = lambda _line: None) -> VirtualSite:
        """Provision and start everything; ``progress`` hears one line per stage."""
        try:
            self._start(progress)
        except BaseException:
            self.close()
            raise
        return self

    def _start(self, progress: Callable[[str], None]) -> None:
        for tool in ("mosquitto", "mosquitto_passwd"):
            if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
                raise SiteError(f"{tool} is not installed (scripts/bootstrap.sh installs it)")
        if self.workdir.exists() and any(self.workdir.iterdir()):
            raise SiteError(f"{self.workdir} is not empty: give a new --workdir")
        self.workdir.mkdir(parents=True, exist_ok=True)
        tls_port = reserved_tcp_port()
        progress(f"provisioning the site in {self.workdir / 'site'}")
        site = init_site(
            self.workdir / "site",
            name="幸福社区（模拟）",
            broker=BrokerSettings(
                host="localhost",
                tls_port=tls_port,
                run_as="root" if os.geteuid() == 0 else None,
                persistence_dir=str(self.workdir / "broker-data"),
                log_file=str(self.logs / "mosquitto.log"),
            ),
            public_url=self.url,
            http_port=self.http_port,
        )
        self.site = site
        self.sms.start()
        self._tune_server_config(site)
        self.engine = site.engine()
        self._stack.callback(self.engine.dispose)
        self._load_people(site, self.engine)
        for i in range(1, self.options.kiosks + 1):
            self._add_kiosk(site, f"kiosk-{i}", tls_port)
        for i in range(1, self.options.lockers + 1):
            self._add_locker(site, f"locker-{i}", tls_port)
        (self.workdir / "broker-data").mkdir(exist_ok=True)
        self.broker = ChildProcess(
            "mosquitto",
            [mosquitto_path(), "-c", str(site.files.conf)],
            self.logs / "mosquitto.out",
            ready=functools.partial(accepts, tls_port),
        )
        progress(f"starting Mosquitto on localhost:{tls_port} (TLS)")
        self.broker.start()
        self._stack.callback(self.broker.stop)
        self.server = ChildProcess(
            "server",
            linli_argv("server", "run", "--config", str(site.server_config_path)),
            self.logs / "server.log",
            ready=self._http_up,
            cwd=ROOT,
        )
        progress(f"starting the server: {self.url}")
        self.server.start(START_TIMEOUT_S)
        self._stack.callback(self.server.stop)
        progress(f"starting {', '.join(self.ids())}")
        for device in self.devices():  # all at once, as a site's machines power up
            device.process.launch()
        for device in self.devices():
            device.process.wait_ready(START_TIMEOUT_S)
        self.wait(self.all_online, "every device online at the server", 60)
        progress("all devices online")

    def close(self) -> None:
        """Stop the devices, the server and the broker; release the emulators."""
        for device in self.devices():  # all are told at once; then each is waited for
            device.process.signal(signal.SIGTERM)
        for device in self.devices():
            with contextlib.suppress(Exception):
                device.process.stop()
            with contextlib.suppress(Exception):
                device.link.close()
            with contextlib.suppress(Exception):
                device.close_emulators()
        self._stack.close()
        self.sms.close()
        if self.cupsd is not None:
            self.cupsd.stop()
            self.cupsd.remove_pdf_configs()
            self.cupsd = None

    # -- provisioning ----------------------------------------------------------------------------
    def _tune_server_config(self, site: Site) -> None:
        """A quicker dispatcher than a real site needs (offers within a second), and SMS through
        the site's emulated gateway, where the people's phones receive them."""
        path = site.server_config_path
        config = tomllib.loads(path.read_text(encoding="utf-8"))
        config["dispatch"] = {"interval_s": 0.5, "ack_timeout_s": 600}
        config["notify"] = {
            "sms": "gateway",
            "sms_gateway": {"url": self.sms.url, "sign": "【邻里】", "timeout_s": 2},
        }
        path.write_text(tomli_w.dumps(config), encoding="utf-8")

    @staticmethod
    def _load_people(site: Site, engine: Engine) -> None:
        from sync_server.sitedata import load_site_data

        load_site_data(
            engine,
            data.site_data(),
            hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1),
        )
        mapping = load_mapping(MAPPING)
        for community, path in data.write_records(site.root / "records").items():
            import_records(engine, path, mapping, community)
        publish_communities(engine)
        sync_catalogue(engine)

    @staticmethod
    def _device_view(site: Site, directory: Path) -> Site:
        """The site as seen by one device: its own file system root, as on its own Pi."""
        devices = DeviceDefaults(
            install_dir=str(directory / "etc" / "linli"),
            data_dir=str(directory / "var" / "lib" / "linli"),
        )
        return Site(site.root, site.settings.model_copy(update={"devices": devices}))

    def _install(self, site: Site, device: SimDevice, request: DeviceRequest) -> None:
        """Add the device and install its bundle; its broker port is its network link's (the
        one thing of its config that differs from a real Pi's)."""
        result = add_device(self._device_view(site, device.directory), request)
        install_bundle(result.bundle_dir, root=Path("/"), under=str(device.directory))
        config = tomllib.loads(device.config_path.read_text(encoding="utf-8"))
        config["sync"]["port"] = device.link.port
        device.config_path.write_text(tomli_w.dumps(config), encoding="utf-8")

    def _home(self, device_id: str, tls_port: int) -> tuple[Path, NetLink]:
        """A new device's file system root and its network link to the broker."""
        directory = self.workdir / "devices" / device_id
        directory.mkdir(parents=True, exist_ok=True)
        return directory, NetLink("127.0.0.1", tls_port, name=device_id).start()

    def _add_kiosk(self, site: Site, device_id: str, tls_port: int) -> None:
        directory, link = self._home(device_id, tls_port)
        kiosk = SimKiosk(device_id, "kiosk", directory, link)
        self.kiosks[device_id] = kiosk
        kiosk.reader = SamEmulator(link=directory / "idcard", pace=self.options.pace).start()
        kiosk.scanner = Gm65Emulator(link=directory / "scanner", pace=self.options.pace)
        kiosk.scanner.start()
        kiosk.receipt = EscposTcpPrinter(port=0).start()
        if self.cupsd is None:
            if os.geteuid() != 0:
                raise SiteError("kiosks print through a private cupsd, which needs root; "
                                "run as root or with --kiosks 0")  # fmt: skip
            self.cupsd = CupsTestServer(self.workdir / "cupsd")
            self.cupsd.start()
        kiosk.queue = self.cupsd.add_sim_queue(f"linli-{device_id}")
        template = {
            "idcard": {"backend": "serial", "port": str(kiosk.reader.path), "timeout_s": 0.5},
            "a4printer": {"queue": kiosk.queue.name, "server": self.cupsd.socket,
                          "job_timeout_s": 30, "poll_interval_s": 0.2},
            "receipt": {"backend": "network", "host": "127.0.0.1",
                        "tcp_port": kiosk.receipt.port, "timeout_s": 2},
            "scanner": {"backend": "serial", "port": str(kiosk.scanner.path)},
            "kiosk": {"control_socket": str(kiosk.control_socket), "fullscreen": False,
                      "idle_timeout_s": 120, "subsidy_deadline": "06-30"},
            "sync": _SYNC_TIMINGS,
        }  # fmt: skip
        self._install(
            site,
            kiosk,
            DeviceRequest(
                device_id,
                "kiosk",
                data.COMMUNITY,
                f"幸福社区{device_id[-1]}号一体机",
                address="幸福路8号社区服务中心大厅",
                mode="bundle",
                template=template,
            ),
        )
        argv = linli_argv("kiosk", "run", "--config", str(kiosk.config_path))
        if self.options.headless:
            argv.append("--headless")
        kiosk.process = ChildProcess(
            device_id, argv, self.logs / f"{device_id}.log", ready=kiosk.control_socket.exists,
            cwd=ROOT,
        )  # fmt: skip

    def _add_locker(self, site: Site, device_id: str, tls_port: int) -> None:
        directory, link = self._home(device_id, tls_port)
        locker = SimLocker(device_id, "locker", directory, link)
        self.lockers[device_id] = locker
        locker.bus = LockBoardBus([1], len(LOCKER_SIZES), link=directory / "locks")
        locker.bus.start()
        locker.scanner = Gm65Emulator(link=directory / "scanner", pace=self.options.pace)
        locker.scanner.start()
        template = {
            "locks": {"backend": "rs485", "port": str(locker.bus.path), "boards": [1],
                      "locks_per_board": len(LOCKER_SIZES), "poll_interval_ms": 50},
            "locker": {"sizes": list(LOCKER_SIZES), "open_confirm_s": 1.5, "tick_ms": 20,
                       "door_alarm_s": 5},
            "scanner": {"backend": "serial", "port": str(locker.scanner.path)},
            "sync": _SYNC_TIMINGS,
        }  # fmt: skip
        number = int(device_id.rsplit("-", 1)[1])
        self._install(
            site,
            locker,
            DeviceRequest(
                device_id,
                "locker",
                data.GRID,
                f"幸福社区{number}号柜",
                address=f"幸福路8号{number}号门",
                lat=30.50 + number * 0.008,  # about 0.9 km apart along a street
                lon=114.30,
                mode="bundle",
                template=template,
            ),
        )
        locker.process = ChildProcess(
            device_id,
            linli_argv("locker", "run", "--config", str(locker.config_path)),
            self.logs / f"{device_id}.log",
            cwd=ROOT,
        )

    # -- what the site knows ---------------------------------------------------------------------
    def devices(self) -> Iterator[SimDevice]:
        yield from self.kiosks.values()
        yield from self.lockers.values()

    def device(self, device_id: str) -> SimDevice:
        found = self.kiosks.get(device_id) or self.lockers.get(device_id)
        if found is None:
            known = ", ".join(d.id for d in self.devices()) or "none"
            raise SiteError(f"no device {device_id!r} on this site (devices: {known})")
        return found

    def ids(self) -> list[str]:
        return [d.id for d in self.devices()]

    def kiosk(self, device_id: str) -> SimKiosk:
        if device_id not in self.kiosks:
            raise SiteError(f"no kiosk {device_id!r} (kiosks: {', '.join(self.kiosks) or 'none'})")
        return self.kiosks[device_id]

    def locker(self, device_id: str) -> SimLocker:
        if device_id not in self.lockers:
            known = ", ".join(self.lockers) or "none"
            raise SiteError(f"no locker {device_id!r} (lockers: {known})")
        return self.lockers[device_id]

    def db(self) -> Engine:
        assert self.engine is not None, "the site is not started"
        return self.engine

    def _http_up(self) -> bool:
        try:
            return httpx.get(self.url + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def is_online(self, device_id: str) -> bool:
        """Whether the server sees ``device_id`` online (its ``up/state``)."""
        with self.db().connect() as conn:
            value = conn.execute(select(Device.online).where(Device.id == device_id)).scalar()
        return bool(value)

    def online(self) -> dict[str, bool]:
        with self.db().connect() as conn:
            rows = conn.execute(select(Device.id, Device.online)).all()
        return {str(device_id): bool(online) for device_id, online in rows}

    def cases_by_state(self) -> dict[str, int]:
        with self.db().connect() as conn:
            rows = conn.execute(select(Case.state, func.count()).group_by(Case.state)).all()
        return {str(state): int(n) for state, n in rows}

    @staticmethod
    def wait(predicate: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
        """Poll ``predicate``; a :class:`SiteError` naming ``what`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise SiteError(f"timed out after {timeout_s:g}s waiting for {what}")

    def all_online(self) -> bool:
        """Whether the server sees every device of the site online."""
        online = self.online()
        return all(online.get(d.id) for d in self.devices())

    def restart_broker(self, down_s: float = 0.0, *, crash: bool = False) -> float:
        """Stop Mosquitto (SIGTERM: it saves its sessions; ``crash``: SIGKILL), wait ``down_s``,
        start it again and wait until every device is back online; the seconds that took."""
        assert self.broker is not None
        self.broker.kill() if crash else self.broker.stop()
        time.sleep(down_s)
        started = time.monotonic()
        self.broker.start()
        # Devices report themselves online again through the restarted broker.
        self.wait(self.all_online, "every device back online after the broker restart", 60)
        return time.monotonic() - started

    def describe(self) -> dict[str, Any]:
        """Where everything is, for the terminal and the docs."""
        out: dict[str, Any] = {
            "workdir": str(self.workdir),
            "pages": {
                "resident (locker QR)": [f"{self.url}/l/{d}" for d in self.lockers],
                "resident (online applications)": f"{self.url}/apply",
                "worker": f"{self.url}/w",
                "admin": f"{self.url}/admin",
                "SMS inbox of a phone (append the number)": self.sms.inbox_url,
            },
            "accounts": {
                "workers": list(data.WORKERS),
                "admin": data.ADMIN,
                "password": data.WORKER_PASSWORD,
            },
            "devices": {},
        }
        for kiosk in self.kiosks.values():
            out["devices"][kiosk.id] = {
                "idcard": str(kiosk.reader.path),
                "scanner": str(kiosk.scanner.path),
                "receipt printer": f"127.0.0.1:{kiosk.receipt.port}",
                "A4 queue": kiosk.queue.name if kiosk.queue else None,
                "control": str(kiosk.control_socket),
                "log": str(kiosk.process.log),
            }
        for locker in self.lockers.values():
            out["devices"][locker.id] = {
                "locks": str(locker.bus.path),
                "scanner": str(locker.scanner.path),
                "log": str(locker.process.log),
            }
        return out


_SYNC_TIMINGS: dict[str, Any] = {
    "keepalive_s": 10,
    "backoff_min_s": 0.2,
    "backoff_max_s": 2.0,
    "poll_interval_s": 0.2,
    "documents_interval_s": 5,  # notices and revocations reach devices within seconds
}


__all__ = [
    "SimDevice",
    "SimKiosk",
    "SimLocker",
    "SiteError",
    "SiteOptions",
    "VirtualSite",
]
