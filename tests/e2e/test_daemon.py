"""`linli server run` and `linli sync run` as real processes, wired as a site runs them: events,
documents, a signed command and rpc over one device link, and `linli sync status`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import Engine

from device.atrest import DeviceKey
from device.clock import SYSTEM_CLOCK
from device.config import load_config
from device.credential import generate_signing_key, save_signing_key, save_verify_key
from device.protocol import topic
from device.store import open_store
from hardware_sim.mosquitto import MosquittoTestBroker
from hardware_sim.processes import stop_process
from sync_server.commands import CommandIssuer, get_command
from sync_server.documents import publish_version
from sync_server.ingest import acked_seq, register_device

from .conftest import ROOT, MakeConsumer, wait_for

KID = "srv-2026"


def _linli(*args: str, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "linli", "-v", *args],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_server_and_device_daemons_sync_events_documents_and_commands(
    broker: MosquittoTestBroker,
    engine: Engine,
    db_url: str,
    make_consumer: MakeConsumer,
    tmp_path: Path,
) -> None:
    key = generate_signing_key(KID)
    save_signing_key(key, tmp_path / "command.pem")
    keys_dir = tmp_path / "server-keys"
    keys_dir.mkdir()
    save_verify_key(key.verify_key, keys_dir / f"{KID}.pem")
    password_file = tmp_path / "server-password"
    password_file.write_text(broker.credentials[broker.server_user].password, encoding="utf-8")
    device_password = tmp_path / "device-password"
    device_password.write_text(broker.credentials["dev-a"].password, encoding="utf-8")
    data_dir = tmp_path / "device"
    config = tmp_path / "device.toml"
    config.write_text(
        f"""
[device]
id = "dev-a"
kind = "locker"
data_dir = "{data_dir}"

[sync]
host = "127.0.0.1"
port = {broker.tls_port}
ca_file = "{broker.ca_cert}"
password_file = "{device_password}"
keepalive_s = 10
backoff_min_s = 0.05
backoff_max_s = 0.5
poll_interval_s = 0.1
server_keys_dir = "{keys_dir}"
documents_interval_s = 5
""",
        encoding="utf-8",
    )
    register_device(engine, "dev-a", "locker")
    publish_version(engine, "notices", upserts={"n-1": {"title": "停水通知"}})
    server = _linli(
        "server", "run", "--db", db_url, "--site", str(broker.files.root),
        "--broker-port", str(broker.tls_port), "--password-file", str(password_file),
        "--client-id", "server-proc", "--command-key", str(tmp_path / "command.pem"),
        "--command-kid", KID,
        log=tmp_path / "server.log",
    )  # fmt: skip
    with broker.client("dev-c") as probe:
        # The device's first publishes would meet "no subscribers" (and wait for its ack
        # timeout) if it connected before the server process subscribed.
        def subscribed() -> bool:
            state = json.dumps({"online": True, "boot": 1, "at": 1.0}).encode()
            reason = probe.publish(topic("dev-c", "up/state"), state)
            return reason is not None and reason.value == 0

        wait_for(subscribed, what="the server process to subscribe")
    device = _linli("sync", "run", "--config", str(config), log=tmp_path / "device.log")
    try:
        # Events written by another process on the device (as the locker daemon would).
        wait_for((data_dir / "store.db").exists, what="the device store")
        cfg = load_config(config)
        with open_store(
            data_dir / "store.db", key=DeviceKey.for_data_dir(data_dir), clock=SYSTEM_CLOCK
        ) as store:
            with store.transaction() as tx:
                for i in range(25):
                    tx.emit("test.tick", {"i": i})
            last = store.outbox.last_seq  # the 25 (and maybe the doc.applied audit)
            assert last >= 25
            wait_for(lambda: acked_seq(engine, "dev-a") >= last, what="events stored and acked")
            wait_for(lambda: store.documents.version("notices") == 1, what="the notices")
            assert store.documents.get("notices", "n-1") == {"title": "停水通知"}
        # A signed command, issued by another server process in the share group.
        consumer = make_consumer("issuer", start=False)
        issuer = CommandIssuer(engine, key)
        issuer.attach(consumer)
        consumer.start()
        wait_for(lambda: consumer.connected, what="the issuing consumer")
        command = issuer.issue("dev-a", "sys.ping", {}, ttl_s=60)
        assert issuer.send(consumer, command)

        def succeeded() -> bool:
            record = get_command(engine, command.id)
            return record is not None and record.status == "succeeded"

        wait_for(succeeded, what="the command result")
        record = get_command(engine, command.id)
        assert record is not None and record.result is not None
        assert record.result["documents"]["notices"] == 1
        assert cfg.device.id == "dev-a"
    finally:
        stop_process(device, 15)
        stop_process(server, 15)
    assert device.returncode == 0 and server.returncode == 0
    status = subprocess.run(
        [sys.executable, "-m", "linli", "sync", "status", "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    report = json.loads(status.stdout)
    # 25 events, the doc.applied audit and the cmd.result audit: all sent and acked.
    assert report["pending"] == 0
    assert report["acked_seq"] == report["last_seq"] >= 27
    assert report["documents"]["notices"] == 1


def test_server_run_marks_unanswered_commands_expired(
    broker: MosquittoTestBroker, engine: Engine, db_url: str, tmp_path: Path
) -> None:
    """A command the device never answered must not stay 'issued' forever on the server."""
    key = generate_signing_key(KID)
    save_signing_key(key, tmp_path / "command.pem")
    password_file = tmp_path / "server-password"
    password_file.write_text(broker.credentials[broker.server_user].password, encoding="utf-8")
    register_device(engine, "dev-a", "locker")
    stale = CommandIssuer(engine, key, clock=lambda: time.time() - 120).issue(
        "dev-a", "sys.ping", {}, ttl_s=60
    )
    live = CommandIssuer(engine, key).issue("dev-a", "sys.ping", {}, ttl_s=600)
    server = _linli(
        "server", "run", "--db", db_url, "--site", str(broker.files.root),
        "--broker-port", str(broker.tls_port), "--password-file", str(password_file),
        "--client-id", "server-proc", "--command-key", str(tmp_path / "command.pem"),
        "--command-kid", KID,
        log=tmp_path / "server.log",
    )  # fmt: skip
    try:

        def expired() -> bool:
            record = get_command(engine, stale.id)
            return record is not None and record.status == "expired"

        wait_for(expired, what="the stale command to be marked expired")
        record = get_command(engine, live.id)
        assert record is not None and record.status == "issued"
    finally:
        stop_process(server, 15)
    assert server.returncode == 0
