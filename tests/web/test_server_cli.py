"""`linli server migrate | load-site | run --config`: the commands a site runs, as processes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from device.credential import generate_signing_key, save_signing_key
from hardware_sim.mosquitto import MosquittoTestBroker
from hardware_sim.processes import reserved_tcp_port
from linli.cli import cli
from sync_server.config import ServerConfigError, load_server_config

ROOT = Path(__file__).resolve().parents[2]

SITE_TOML = """
[[areas]]
id = "c1"
name = "幸福社区"
level = "community"
[[areas]]
id = "g1"
name = "第一网格"
level = "grid"
parent = "c1"
[[services]]
id = "residence"
name = "居住证明"
[[points]]
device = "locker-1"
kind = "locker"
name = "1号柜"
area = "g1"
"""


def config_text(tmp: Path, db: str, broker_port: int, ca: Path, http_port: int) -> str:
    return f"""
[database]
url = "{db}"
[broker]
port = {broker_port}
ca = "{ca}"
user = "linli-server"
password_file = "pw"
[http]
port = {http_port}
[signing]
key = "key.pem"
kid = "srv-1"
[dispatch]
interval_s = 0.2
"""


def test_migrate_and_load_site(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 's.db'}"
    runner = CliRunner()
    assert runner.invoke(cli, ["server", "migrate", "--db", db]).exit_code == 0
    (tmp_path / "site.toml").write_text(SITE_TOML, encoding="utf-8")
    result = runner.invoke(cli, ["server", "load-site", "--db", db, str(tmp_path / "site.toml")])
    assert result.exit_code == 0, result.output
    assert "2 areas, 1 services, 1 service points" in result.output
    assert "catalogue published to devices as version 1" in result.output
    again = runner.invoke(cli, ["server", "load-site", "--db", db, str(tmp_path / "site.toml")])
    assert again.exit_code == 0 and "catalogue published" not in again.output  # nothing changed
    (tmp_path / "bad.toml").write_text(SITE_TOML.replace('level = "grid"', 'level = "block"'),
                                       encoding="utf-8")  # fmt: skip
    result = runner.invoke(cli, ["server", "load-site", "--db", db, str(tmp_path / "bad.toml")])
    assert result.exit_code != 0 and "level must be one of" in str(result.exception)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.replace("[dispatch]", "[dispatch]\nspeed = 3"), "dispatch.speed"),
        (
            lambda t: t.replace('key = "key.pem"', 'key = "missing.pem"'),
            "signing.key: no such file",
        ),
        (lambda t: t + "\n[http\n", "not valid TOML"),
        (lambda t: t.replace("interval_s = 0.2", "interval_s = -1"), "dispatch.interval_s"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, change: object, message: str) -> None:
    (tmp_path / "pw").write_text("x", encoding="utf-8")
    save_signing_key(generate_signing_key("srv-1"), tmp_path / "key.pem")
    (tmp_path / "ca.crt").write_text("x", encoding="utf-8")
    text = config_text(tmp_path, "sqlite:///x.db", 8883, tmp_path / "ca.crt", 8080)
    (tmp_path / "server.toml").write_text(change(text), encoding="utf-8")  # type: ignore[operator]
    with pytest.raises(ServerConfigError, match=message):
        load_server_config(tmp_path / "server.toml")


def test_run_by_role_as_separate_processes(tmp_path: Path) -> None:
    """The http role and the dispatcher role as two processes on one database and broker."""
    broker = MosquittoTestBroker(devices=("locker-1",))
    broker.start()
    try:
        db = f"sqlite:///{tmp_path / 's.db'}"
        runner = CliRunner()
        assert runner.invoke(cli, ["server", "migrate", "--db", db]).exit_code == 0
        (tmp_path / "site.toml").write_text(SITE_TOML, encoding="utf-8")
        assert runner.invoke(cli, ["server", "load-site", "--db", db,
                                   str(tmp_path / "site.toml")]).exit_code == 0  # fmt: skip
        (tmp_path / "pw").write_text(broker.credentials["linli-server"].password, encoding="utf-8")
        save_signing_key(generate_signing_key("srv-1"), tmp_path / "key.pem")
        port = reserved_tcp_port()
        (tmp_path / "server.toml").write_text(
            config_text(tmp_path, db, broker.tls_port, broker.ca_cert, port), encoding="utf-8"
        )
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "linli",
                    "server",
                    "run",
                    "--config",
                    str(tmp_path / "server.toml"),
                    "--role",
                    role,
                    "--duration",
                    "8",
                ],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            for role in ("http", "dispatcher")
        ]
        deadline = time.monotonic() + 20
        page = None
        while time.monotonic() < deadline:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/l/locker-1", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert page is not None and page.status_code == 200 and "1号柜" in page.text
        for proc in procs:
            out, _ = proc.communicate(timeout=30)
            assert proc.returncode == 0, out.decode()
            assert b"linli server: stopped" in out
    finally:
        broker.cleanup()
