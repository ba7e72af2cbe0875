"""`linli locker`: the cloud-locker daemon and a look at its compartments, doors and sync state."""

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
from device.sync.daemon import STORE_FILE
from linli.commands.sync import read_outbox_status

config_option = click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Device configuration (TOML) of a locker: [device], [locks], [locker], [scanner], [sync].",
)


@click.group()
def locker() -> None:
    """Cloud locker (云柜): compartments, doors, offline credentials."""


@locker.command("run")
@config_option
@click.option(
    "--duration", type=float, default=None, help="Stop after this many seconds (tests, demos)."
)
def run(*, config_path: Path, duration: float | None) -> None:
    """Run the locker daemon until SIGTERM or Ctrl-C: locks, doors, scanner, sync."""
    from locker.daemon import LockerDaemon

    config = load_config(config_path)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_args: stop.set())
    if duration is not None:
        threading.Timer(duration, stop.set).start()
    daemon = LockerDaemon(config)
    click.echo(
        f"linli locker: {config.device.id}, {daemon.locker.locks.lock_count} compartments, "
        f"sync {'to ' + config.sync.host if config.sync.host else 'off (offline)'}",
        err=True,
    )
    try:
        daemon.run(stop)
    except KeyboardInterrupt:
        daemon.stop()
    click.echo("linli locker: stopped", err=True)


def read_status(path: Path) -> dict[str, Any]:
    """Compartments, open requests, scanner lockout and outbox of the store at ``path``, read-only
    (opening the Store would migrate it and count a boot, which a look must not do)."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        compartments = [
            {
                "number": n,
                "size": size,
                "state": state,
                "door": door,
                "case": case,
                "content": content,
                "fault": fault,
            }
            for n, size, state, door, case, content, fault in conn.execute(
                "SELECT number, size, state, door, case_id, content, fault FROM compartments "
                "ORDER BY number"
            )
        ]
        requests = {
            n: status
            for n, status in conn.execute(
                "SELECT compartment, status FROM locker_intents "
                "WHERE status IN ('pending', 'pulsed', 'opened')"
            )
        }
        for row in compartments:
            row["request"] = requests.get(row["number"])
        failures, level, until = conn.execute(
            "SELECT failures, level, until FROM scanner_lockout"
        ).fetchone()
        sync = read_outbox_status(conn)
    return {
        "compartments": compartments,
        "lockout": {"invalid_scans": failures, "level": level, "until": until},
        "sync": sync,
    }


@locker.command("status")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(*, config_path: Path, as_json: bool) -> None:
    """Compartments (state, door, request in progress), scanner lockout and the sync outbox.

    Safe while the daemon runs: it reads the store without changing it. Doors are as the daemon
    last saw them.
    """
    config = load_config(config_path)
    path = Path(config.device.data_dir) / STORE_FILE
    if not path.exists():
        raise click.ClickException(f"{path}: no store yet (has `linli locker run` ever run here?)")
    try:
        report = {"device": config.device.id, **read_status(path)}
    except sqlite3.Error as err:
        raise click.ClickException(
            f"{path}: cannot read the locker's state ({err}); is this a locker's store?"
        ) from err
    if as_json:
        click.echo(json.dumps(report, ensure_ascii=False))
        return
    click.echo(f"locker {report['device']}")
    click.echo(f"{'no':>3} {'size':4} {'state':17} {'door':8} {'request':8} case")
    for row in report["compartments"]:
        click.echo(
            f"{row['number']:>3} {row['size']:4} {row['state']:17} {row['door']:8} "
            f"{row['request'] or '-':8} {row['case'] or '-'}"
            + (f"  fault: {row['fault']}" if row["fault"] else "")
        )
    lockout, sync = report["lockout"], report["sync"]
    click.echo(
        f"scanner: {lockout['invalid_scans']} invalid scans in a row, level {lockout['level']}"
    )
    click.echo(
        f"outbox: {sync['pending']} pending, last seq {sync['last_seq']}, "
        f"acked up to {sync['acked_seq']} (boot {sync['boot']})"
    )
