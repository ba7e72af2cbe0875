"""`linli sync`: a device's sync daemon (outbox, commands, documents, rpc) and its status."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import threading
from pathlib import Path
from typing import Any

import click

from device.config import load_config
from device.store import DOCUMENTS
from device.sync.daemon import STORE_FILE, SyncDaemon


@click.group()
def sync() -> None:
    """Device sync: the MQTT link of a kiosk or locker to the site server."""


@sync.command("run")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Device configuration (TOML); [device] and [sync] are used.",
)
@click.option(
    "--duration", type=float, default=None, help="Stop after this many seconds (tests, demos)."
)
def run(*, config_path: Path, duration: float | None) -> None:
    """Send the outbox, take signed commands, keep documents current, until SIGTERM or Ctrl-C."""
    config = load_config(config_path)
    stop = threading.Event()

    def _stop(*_args: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    if duration is not None:
        threading.Timer(duration, stop.set).start()
    daemon = SyncDaemon(config)
    daemon.start()
    click.echo(
        f"linli sync: device {config.device.id} -> {config.sync.host}:{config.sync.port}", err=True
    )
    try:
        daemon.run_until(stop, tick_s=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        health = daemon.agent.health()
        daemon.stop()
        click.echo(
            f"linli sync: stopped; acked up to seq {health.last_ack}, {health.pending} pending",
            err=True,
        )


def read_outbox_status(conn: sqlite3.Connection) -> dict[str, int]:
    """Boot count, queued events and seq counters of a store opened read-only (a look must not
    migrate the store or count a boot, as opening a Store would)."""
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    return {
        "boot": int(meta.get("boot", 0)),
        "pending": int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0]),
        "last_seq": int(meta.get("last_seq", 0)),
        "acked_seq": int(meta.get("acked_seq", 0)),
    }


@sync.command("status")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Device configuration (TOML): where the store is.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(*, config_path: Path, as_json: bool) -> None:
    """Outbox and document versions of this device's store (safe while the daemon runs)."""
    config = load_config(config_path)
    path = Path(config.device.data_dir) / STORE_FILE
    if not path.exists():
        raise click.ClickException(f"{path}: no store yet (has `linli sync run` ever run here?)")
    # Read-only: opening the Store would migrate it and count a boot, which a look must not do.
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            outbox = read_outbox_status(conn)
            versions = dict(conn.execute("SELECT doc, version FROM doc_versions").fetchall())
    except sqlite3.Error as err:
        raise click.ClickException(f"{path}: cannot read the store: {err}") from err
    documents = {doc: int(versions.get(doc, 0)) for doc in DOCUMENTS}
    report: dict[str, Any] = {"device": config.device.id, **outbox, "documents": documents}
    if as_json:
        click.echo(json.dumps(report, ensure_ascii=False))
        return
    click.echo(f"device {report['device']}")
    click.echo(
        f"outbox: {report['pending']} pending, last seq {report['last_seq']}, "
        f"acked up to {report['acked_seq']}"
    )
    click.echo("documents: " + ", ".join(f"{doc} v{v}" for doc, v in documents.items()))


@sync.command("enroll")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Device configuration (TOML); [device], [enroll] and [sync] are used.",
)
def enroll_cmd(*, config_path: Path) -> None:
    """First boot: make this device's key, send a CSR with the one-time token, and write the
    certificate and broker password. Does nothing (exit 0) when already enrolled; exits 1 with
    the reason otherwise (docs/provisioning.md)."""
    from device.enroll import enroll

    result = enroll(load_config(config_path))
    what = "already enrolled" if result.already else "enrolled"
    click.echo(
        f"linli sync: {result.device_id} {what}; key {result.key_id}, "
        f"certificate {result.serial} in {result.cert_file}",
        err=True,
    )
