"""The whole site for real: ``ServerRuntime`` (uvicorn HTTP, MQTT consumer, dispatcher) on a SQLite
file, a private Mosquitto with per-device passwords and ACL, the real ``linli locker run`` against
lock boards and a GM65 scanner emulated on ptys (tests/locker_crash/rig.py), and Chromium (Debian's,
driven by Playwright) as the resident's and the worker's phones.

Screenshots of the main pages go to ``artifacts/screenshots/`` (kept by CI as test artifacts).
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from playwright.sync_api import Browser, Playwright, sync_playwright
from sqlalchemy import Engine, select

from device.credential import SigningKey, generate_signing_key, save_signing_key
from hardware_sim.mosquitto import INSTALL_HINT, MosquittoTestBroker
from hardware_sim.processes import reserved_tcp_port
from sync_server.config import load_server_config
from sync_server.db import open_database, upgrade
from sync_server.models import Device
from sync_server.runtime import ServerRuntime
from sync_server.sitedata import load_site_data
from tests.locker_crash.rig import DEVICE_ID, LockerRig, SyncLink, wait_for

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
WORKER_PASSWORD = "e2e-worker-password"
KID = "srv-e2e-1"


def site_data(now: float) -> dict[str, Any]:
    return {
        "areas": [
            {"id": "st1", "name": "东湖街道", "level": "street"},
            {"id": "c1", "name": "幸福社区", "level": "community", "parent": "st1"},
            {"id": "g1", "name": "第一网格", "level": "grid", "parent": "c1"},
        ],
        "services": [
            {"id": "residence", "name": "居住证明",
             "documents": [{"name": "户口簿复印件", "copies": 1}, {"name": "租房合同复印件"}],
             "pickup_hours": 4, "process_hours": 48},
            {"id": "subsidy", "name": "高龄津贴申领", "documents": [{"name": "身份证复印件"}]},
        ],
        "points": [
            {"device": DEVICE_ID, "kind": "locker", "name": "幸福社区1号柜", "area": "g1",
             "address": "幸福路8号社区服务中心门口", "lat": 30.50, "lon": 114.30},
        ],
        "workers": [
            {"username": "chen", "name": "陈网格", "password": WORKER_PASSWORD, "grids": ["g1"],
             "phone": "13900001111", "home_lat": 30.505, "home_lon": 114.305,
             "shifts": [{"start": now - 3600, "end": now + 8 * 3600}]},
            {"username": "admin", "name": "管理员", "role": "admin", "password": WORKER_PASSWORD},
        ],
    }  # fmt: skip


@dataclass
class Site:
    """Everything of one running site."""

    url: str
    engine: Engine
    runtime: ServerRuntime
    locker: LockerRig
    key: SigningKey

    def device_online(self) -> bool:
        with self.engine.connect() as conn:
            return bool(conn.execute(select(Device.online).where(Device.id == DEVICE_ID)).scalar())


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    for tool in ("mosquitto", "mosquitto_passwd"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            pytest.fail(f"{tool} is not installed; {INSTALL_HINT}", pytrace=False)
    broker = MosquittoTestBroker(devices=(DEVICE_ID,))
    broker.start()
    key = generate_signing_key(KID)
    db_url = f"sqlite:///{tmp_path / 'server.db'}"
    upgrade(db_url)
    engine = open_database(db_url)
    load_site_data(engine, site_data(time.time()),
                   hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))  # fmt: skip
    save_signing_key(key, tmp_path / "signing.pem")
    (tmp_path / "broker-password").write_text(
        broker.credentials[broker.server_user].password, encoding="utf-8"
    )
    port = reserved_tcp_port()
    (tmp_path / "server.toml").write_text(
        f"""site_name = "幸福社区服务"
public_url = "http://127.0.0.1:{port}"
[database]
url = "{db_url}"
[broker]
host = "127.0.0.1"
port = {broker.tls_port}
ca = "{broker.ca_cert}"
user = "{broker.server_user}"
password_file = "broker-password"
keepalive_s = 10
[http]
host = "127.0.0.1"
port = {port}
[signing]
key = "signing.pem"
kid = "{KID}"
[dispatch]
interval_s = 0.5
ack_timeout_s = 120
""",
        encoding="utf-8",
    )
    runtime = ServerRuntime(load_server_config(tmp_path / "server.toml"))
    stop = threading.Event()
    thread = threading.Thread(target=runtime.run, args=(stop,), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"

    def http_up() -> bool:
        try:
            return httpx.get(url + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    locker = LockerRig(
        tmp_path / "locker",
        key,
        sync=SyncLink(broker.tls_port, broker.ca_cert, broker.credentials[DEVICE_ID].password),
    )
    site = Site(url, engine, runtime, locker, key)
    try:
        wait_for(http_up, "the server's HTTP to answer", 20)
        assert runtime.consumer is not None
        wait_for(lambda: runtime.consumer is not None and runtime.consumer.connected,
                 "the server's consumer to connect", 20)  # fmt: skip
        locker.start()
        wait_for(site.device_online, "the locker to be online at the server", 30, locker)
        yield site
    finally:
        locker.close()
        stop.set()
        thread.join(timeout=20)
        engine.dispose()
        broker.cleanup()


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed; run ./scripts/bootstrap.sh (Debian: chromium)",
                    pytrace=False)  # fmt: skip
    with sync_playwright() as p:
        yield p


@pytest.fixture
def browser(playwright: Playwright) -> Iterator[Browser]:
    b = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    yield b
    b.close()


def phone(browser: Browser) -> Any:
    """A new phone: a mobile-sized browser context in Chinese."""
    return browser.new_context(
        viewport={"width": 390, "height": 844}, locale="zh-CN", device_scale_factor=2
    ).new_page()


def screenshot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
