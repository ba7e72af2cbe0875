"""A device put into service with the technician's commands, end to end: `linli provision` writes
the site, Mosquitto runs with the generated mosquitto.conf, the server with the generated
server.toml, the device enrolls with `linli sync enroll` and syncs with its own sync daemon;
revocation cuts it off at the broker's reload, and rotation brings a replacement board back."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from device.config import DeviceConfig, load_config
from device.credential import RevokedCredentialError, load_signing_key, verify
from device.sync.daemon import SyncDaemon
from provisioning.devices import install_bundle
from sync_server.credentials import issue_credential
from sync_server.models import Device, Event
from tests.provisioning.conftest import RunningSite, linli, wait_for

DEVICE = "locker-07"


class _Document:
    """The device's ``revocations`` document as the locker's gatekeeper reads it."""

    def __init__(self, daemon: SyncDaemon) -> None:
        self.daemon = daemon

    def __contains__(self, cti: object) -> bool:
        return (
            isinstance(cti, str) and self.daemon.store.documents.get("revocations", cti) is not None
        )


def add(running: RunningSite, *extra: str) -> None:
    done = linli(
        "provision", "device", "add", "--site", str(running.site.root), "--kind", "locker",
        "--id", DEVICE, "--area", "g1", "--name", "7号楼云柜", *extra,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def install(running: RunningSite) -> DeviceConfig:
    site = running.reopen()
    install_bundle(site.bundles_dir / DEVICE, under=site.settings.devices.install_dir)
    return load_config(Path(site.settings.devices.install_dir) / "device.toml")


def online(running: RunningSite) -> bool:
    with running.site.engine().connect() as conn:
        return bool(conn.execute(select(Device.online).where(Device.id == DEVICE)).scalar())


def events_stored(running: RunningSite) -> int:
    with running.site.engine().connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(Event).where(Event.device_id == DEVICE)
            ).scalar()
            or 0
        )


def test_enrolled_device_syncs_revoked_is_cut_off_rotated_comes_back(
    running_site: RunningSite,
) -> None:
    running = running_site
    add(running, "--mode", "enroll")
    config = install(running)
    assert config.enroll.url == running.url
    enrolled = linli(
        "sync",
        "enroll",
        "--config",
        str(Path(running.site.settings.devices.install_dir) / "device.toml"),
    )
    assert enrolled.returncode == 0, enrolled.stderr
    assert "enrolled; key locker-07-g1" in enrolled.stderr

    daemon = SyncDaemon(config)
    daemon.start()
    try:
        wait_for(lambda: online(running), "the enrolled locker to be online at the server")
        with daemon.store.transaction() as tx:
            tx.emit("test.hello", {"n": 1})
        daemon.agent.notify()
        wait_for(lambda: events_stored(running) >= 1, "the locker's event to be stored")
        wait_for(lambda: daemon.agent.health().pending == 0, "the server's ack")
        listed = json.loads(
            linli("provision", "list", "--site", str(running.site.root), "--json").stdout
        )
        row = next(r for r in listed if r["device"] == DEVICE)
        assert row["state"] == "enrolled" and row["online"] and row["last_contact"] is not None

        # A credential for the locker is out when it is revoked.
        key = load_signing_key(
            running.site.root / "signing" / f"{running.site.settings.signing_kid}.pem",
            running.site.settings.signing_kid,
        )
        with running.site.engine().begin() as conn:
            issued = issue_credential(
                conn, key, time.time(), kind="worker-open", device_id=DEVICE, case_id="C7",
                compartment=2, valid_s=3600,
            )  # fmt: skip

        revoked = linli(
            "provision",
            "device",
            "revoke",
            "--site",
            str(running.site.root),
            DEVICE,
            "--reason",
            "stolen",
        )
        assert revoked.returncode == 0, revoked.stderr
        assert "1 outstanding credential(s) revoked" in revoked.stdout
        # The broker's reload disconnected it, and it cannot come back.
        wait_for(
            lambda: not daemon.agent.health().connected, "the revoked locker to be disconnected", 10
        )
        wait_for(lambda: daemon.agent.health().attempts >= 2, "reconnect attempts", 15)
        time.sleep(1.0)
        health = daemon.agent.health()
        assert not health.connected
        assert "not authorized" in (health.last_error or "").lower(), health.last_error
    finally:
        daemon.stop()

    # A replacement board enrolled under the same id (rotate) syncs again, and refuses the QR
    # that was out when the old one was revoked.
    rotated = linli(
        "provision",
        "device",
        "rotate",
        "--site",
        str(running.site.root),
        DEVICE,
        "--mode",
        "bundle",
    )
    assert rotated.returncode == 0, rotated.stderr
    config = install(running)
    replacement = SyncDaemon(config)
    replacement.start()
    try:
        wait_for(lambda: replacement.agent.health().connected, "the replacement board to connect")
        revocations = replacement.store.documents
        wait_for(lambda: revocations.get("revocations", issued.cti) is not None,
                 "the revocations document to reach the replacement board")  # fmt: skip
        with pytest.raises(RevokedCredentialError):  # the locker's own check, on its document
            verify(issued.text, {key.kid: key.verify_key}, audience=DEVICE, now=time.time(),
                   revoked=_Document(replacement))  # fmt: skip
        listed = json.loads(
            linli("provision", "list", "--site", str(running.site.root), "--json").stdout
        )
        row = next(r for r in listed if r["device"] == DEVICE)
        assert row["state"] == "enrolled" and row["generation"] == 2
    finally:
        replacement.stop()


def test_an_old_password_is_refused_after_rotation(running_site: RunningSite) -> None:
    running = running_site
    add(running, "--mode", "bundle")
    old = install(running)
    old_password = Path(old.sync.password_file).read_text(encoding="utf-8")
    rotated = linli(
        "provision",
        "device",
        "rotate",
        "--site",
        str(running.site.root),
        DEVICE,
        "--mode",
        "bundle",
    )
    assert rotated.returncode == 0, rotated.stderr
    # the old board still has the old password (its files were not replaced)
    Path(old.sync.password_file).write_text(old_password, encoding="utf-8")
    daemon = SyncDaemon(old)
    daemon.start()
    try:
        wait_for(lambda: daemon.agent.health().attempts >= 1, "a connection attempt", 15)
        wait_for(lambda: daemon.agent.health().last_error is not None, "the broker's answer", 15)
        assert not daemon.agent.health().connected
        assert "not authorized" in (daemon.agent.health().last_error or "").lower()
    finally:
        daemon.stop()
    config = install(running)  # the new bundle's password works
    daemon = SyncDaemon(config)
    daemon.start()
    try:
        wait_for(lambda: daemon.agent.health().connected, "the rotated device to connect")
    finally:
        daemon.stop()
