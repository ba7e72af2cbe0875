"""`linli server run` as real processes: two in one share group, one SIGKILLed mid-stream."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from sqlalchemy import Engine

from hardware_sim.mosquitto import MosquittoTestBroker
from sync_server.ingest import acked_seq

from .conftest import ROOT, MakeDevice, exactly_once, wait_for


def _server(
    broker: MosquittoTestBroker, db_url: str, tmp_path: Path, name: str
) -> subprocess.Popen[bytes]:
    password_file = tmp_path / "server-password"
    password_file.write_text(broker.credentials[broker.server_user].password, encoding="utf-8")
    password_file.chmod(0o600)
    log = (tmp_path / f"{name}.log").open("wb")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "linli",
            "-v",
            "server",
            "run",
            "--db",
            db_url,
            "--site",
            str(broker.files.root),
            "--broker-port",
            str(broker.tls_port),
            "--password-file",
            str(password_file),
            "--client-id",
            name,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_two_server_processes_and_a_killed_one_store_every_event_once(
    broker: MosquittoTestBroker,
    db_url: str,
    engine: Engine,
    make_device: MakeDevice,
    tmp_path: Path,
) -> None:
    servers = [_server(broker, db_url, tmp_path, f"server-{i}") for i in (1, 2)]
    try:
        devices = [make_device(name, batch_size=20) for name in ("dev-a", "dev-b", "dev-c")]
        for device in devices:
            device.emit(100)
        wait_for(
            lambda: all(acked_seq(engine, d.id) >= 40 for d in devices),
            timeout_s=30,
            what="both servers consuming",
        )
        servers[0].send_signal(signal.SIGKILL)  # a crash: no DISCONNECT, unacked in flight
        servers[0].wait(5)
        for device in devices:
            device.emit(100)
        servers.append(_server(broker, db_url, tmp_path, "server-3"))
        for device in devices:
            device.emit(100)
        for device in devices:
            wait_for(device.drained, timeout_s=60, what=f"{device.id} to drain")
            assert exactly_once(engine, device.id, 300)
    finally:
        for process in servers:
            process.terminate()
        for process in servers:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
    assert servers[1].returncode == 0, (tmp_path / "server-2.log").read_text()
    assert "events stored" in (tmp_path / "server-2.log").read_text()
