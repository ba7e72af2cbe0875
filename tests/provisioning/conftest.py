"""A provisioned site for real: `linli provision site init` output, the server database migrated
and loaded with areas, and (for the end-to-end tests) Mosquitto started with the site's own
generated ``mosquitto.conf`` and the server runtime with the site's own ``server.toml``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher

from hardware_sim.mosquitto import mosquitto_path
from hardware_sim.processes import reserved_tcp_port, stop_process
from provisioning.site import BrokerSettings, DeviceDefaults, Site, init_site, open_site
from sync_server.runtime import ServerRuntime
from sync_server.sitedata import load_site_data

AREAS = [
    {"id": "st1", "name": "东湖街道", "level": "street"},
    {"id": "c1", "name": "幸福社区", "level": "community", "parent": "st1"},
    {"id": "g1", "name": "第一网格", "level": "grid", "parent": "c1"},
]


def wait_for(predicate: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def make_site(root: Path, *, tls_port: int | None = None, http_port: int = 0) -> Site:
    """`site init` for a private test site: device paths inside ``root/dev`` so bundles can be
    installed on this machine; Mosquitto runs as root when we are root (it would drop to user
    `mosquitto`, which cannot read the 0600 files)."""
    site = init_site(
        root / "site",
        name="幸福社区",
        broker=BrokerSettings(
            host="localhost",
            tls_port=tls_port or reserved_tcp_port(),
            run_as="root" if os.geteuid() == 0 else None,
            persistence_dir=str(root / "mosquitto-data"),
            log_file=str(root / "mosquitto.log"),
        ),
        public_url=f"http://127.0.0.1:{http_port or 8080}",
        http_port=http_port or 8080,
        devices=DeviceDefaults(
            install_dir=str(root / "dev" / "etc" / "linli"),
            data_dir=str(root / "dev" / "data"),
        ),
    )
    engine = site.engine()
    try:
        load_site_data(
            engine,
            {"areas": AREAS},
            hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1),
        )
    finally:
        engine.dispose()
    return site


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return make_site(tmp_path)


@dataclass
class RunningSite:
    """A site with its broker and server running from the files provisioning generated."""

    site: Site
    broker: subprocess.Popen[bytes]
    runtime: ServerRuntime
    url: str
    root: Path

    def reopen(self) -> Site:
        return open_site(self.site.root)


def _mosquitto(site: Site, root: Path) -> subprocess.Popen[bytes]:
    (root / "mosquitto-data").mkdir(exist_ok=True)
    with (root / "mosquitto.stdout").open("ab") as out:
        process = subprocess.Popen(
            [mosquitto_path(), "-c", str(site.files.conf)], stdout=out, stderr=subprocess.STDOUT
        )
    port = site.settings.broker.tls_port

    def listening() -> bool:
        import socket

        with socket.socket() as sock:
            sock.settimeout(0.2)
            return sock.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_for(listening, "mosquitto to listen on the site's TLS port", 10)
    except AssertionError as err:
        process.kill()
        log = root / "mosquitto.log"
        raise AssertionError(log.read_text() if log.exists() else "no log") from err
    return process


@pytest.fixture
def running_site(tmp_path: Path) -> Iterator[RunningSite]:
    for tool in ("mosquitto", "mosquitto_passwd"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            pytest.fail(f"{tool} is not installed (scripts/bootstrap.sh)", pytrace=False)
    http_port = reserved_tcp_port()
    site = make_site(tmp_path, http_port=http_port)
    broker = _mosquitto(site, tmp_path)
    # The reload command provisioning runs after every change: SIGHUP to this broker.
    site = init_site(
        site.root,
        name=site.settings.name,
        broker=site.settings.broker.model_copy(
            update={"reload_command": ["kill", "-HUP", str(broker.pid)]}
        ),
        public_url=site.settings.public_url,
        http_port=http_port,
        devices=site.settings.devices,
    )
    runtime = ServerRuntime(site.server_config())
    stop = threading.Event()
    thread = threading.Thread(target=runtime.run, args=(stop,), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{http_port}"

    def http_up() -> bool:
        try:
            return httpx.get(url + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(http_up, "the server's HTTP to answer")
        wait_for(
            lambda: runtime.consumer is not None and runtime.consumer.connected,
            "the server's consumer to connect to the site broker",
        )
        yield RunningSite(site, broker, runtime, url, tmp_path)
    finally:
        stop.set()
        thread.join(timeout=20)
        stop_process(broker, 10)


def linli(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """The real `linli` program of this venv, as a technician runs it."""
    program = Path(sys.executable).with_name("linli")
    return subprocess.run(
        [str(program), *args], capture_output=True, text=True, timeout=120, check=False, **kwargs
    )
