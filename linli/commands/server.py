"""`linli server`: run the sync server's consumer (MQTT up/# -> database, down/ack back)."""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

import click
from sqlalchemy import Engine

from device.credential import CredentialKeyError, SigningKey, load_signing_key
from device.errors import LinliError
from sync_server.commands import CommandIssuer
from sync_server.consumer import BrokerSettings, Consumer
from sync_server.db import open_database
from sync_server.documents import DocumentServer
from sync_server.errors import ServerError
from sync_server.rpc import RpcServer

log = logging.getLogger(__name__)


class ServerCommandError(LinliError, ValueError):
    """The server's command line names files or accounts that do not work."""


@click.group()
def server() -> None:
    """Sync server: consume device events and state from the site broker."""


def _site_server_user(site: Path) -> str:
    try:
        accounts = json.loads((site / "accounts.json").read_text(encoding="utf-8"))["accounts"]
    except (OSError, ValueError, KeyError) as err:
        raise ServerCommandError(
            f"{site}/accounts.json: cannot read the account list ({err}); "
            "is --site a directory made by `linli provision broker`?"
        ) from err
    users = [name for name, role in accounts.items() if role == "server"]
    if len(users) != 1:
        raise ServerCommandError(f"{site}/accounts.json: expected one server account")
    return str(users[0])


def _command_key(path: Path | None, kid: str | None) -> SigningKey | None:
    if path is None and kid is None:
        return None
    if path is None or not kid:
        raise click.UsageError("give --command-key and --command-kid together")
    try:
        return load_signing_key(path, kid)
    except CredentialKeyError as err:
        raise ServerCommandError(str(err)) from err


def _consumer(
    *,
    db_url: str,
    site: Path | None,
    broker_host: str,
    broker_port: int,
    ca: Path | None,
    user: str | None,
    password_file: Path,
    client_id: str | None,
) -> tuple[Engine, Consumer]:
    """The database and a consumer with the document and rpc handlers (not started)."""
    ca = ca or (site / "ca.crt" if site else None)
    user = user or (_site_server_user(site) if site else None)
    if ca is None or user is None:
        raise click.UsageError("give --site, or both --ca and --user")
    password = password_file.read_text(encoding="utf-8").strip()
    try:
        engine = open_database(db_url)
    except ServerError as err:  # the server's errors are not LinliErrors: say them plainly
        raise ServerCommandError(str(err)) from err
    try:
        consumer = Consumer(
            engine,
            BrokerSettings(host=broker_host, port=broker_port),
            user=user,
            password=password,
            ca_file=ca,
            client_id=client_id,
        )
    except ServerError as err:
        engine.dispose()
        raise ServerCommandError(str(err)) from err
    documents = DocumentServer(engine, publish=consumer.publish)
    consumer.add_handler("up/sync-req", documents.handle_request)
    rpc = RpcServer(consumer.publish)
    consumer.add_handler("up/rpc", rpc.handle)
    return engine, consumer


EXPIRE_INTERVAL_S = 30.0
"""How often ``linli server run --command-key`` marks unanswered, expired commands ``expired``."""


def _expire_commands(engine: Any) -> None:
    """A database hiccup must not stop the server: log it and try again next time."""
    from sqlalchemy.exc import SQLAlchemyError

    from sync_server.commands import expire_overdue

    try:
        expire_overdue(engine, time.time())
    except SQLAlchemyError as err:
        log.warning("could not expire overdue commands (will retry): %s", type(err).__name__)


@server.command("migrate")
@click.option("--db", "db_url", required=True, help="Database URL to migrate to the newest schema.")
def migrate(db_url: str) -> None:
    """Create or upgrade the server database's schema (Alembic; safe to run again)."""
    from sync_server.db import upgrade

    try:
        upgrade(db_url)
    except ServerError as err:
        raise ServerCommandError(str(err)) from err
    click.echo(f"database migrated: {db_url.rsplit('@', maxsplit=1)[-1]}", err=True)


@server.command("load-site")
@click.option("--db", "db_url", required=True, help="Database URL (migrated).")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
def load_site(db_url: str, file: Path) -> None:
    """Load areas, services, lockers, kiosks and workers from a TOML file (an upsert)."""
    import tomllib

    from sync_server.sitedata import load_site_data

    try:
        engine = open_database(db_url)
        data = load_site_data(engine, tomllib.loads(file.read_text(encoding="utf-8")))
    except (ServerError, tomllib.TOMLDecodeError) as err:
        raise ServerCommandError(f"{file}: {err}") from err
    from sync_server.catalogue import sync_catalogue

    version = sync_catalogue(engine)
    engine.dispose()
    if version is not None:
        click.echo(f"catalogue published to devices as version {version}", err=True)
    click.echo(
        f"loaded {len(data.areas)} areas, {len(data.services)} services, "
        f"{len(data.points)} service points, {len(data.workers)} workers",
        err=True,
    )


def _run_full(config_path: Path, roles: tuple[str, ...], duration: float | None) -> None:
    """``run --config``: HTTP, consumer and dispatcher (or the chosen roles) in this process."""
    from sync_server.config import load_server_config
    from sync_server.runtime import ROLES, ServerRuntime

    try:
        config = load_server_config(config_path)
        runtime = ServerRuntime(config, roles or ROLES)
    except (ServerError, CredentialKeyError, OSError) as err:
        raise ServerCommandError(str(err)) from err
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if duration is not None:
        threading.Timer(duration, stop.set).start()
    where = f"http://{config.http.host}:{config.http.port}" if "http" in runtime.roles else "-"
    click.echo(f"linli server: {', '.join(runtime.roles)}; web {where}", err=True)
    with contextlib.suppress(KeyboardInterrupt):
        runtime.run(stop)
    click.echo("linli server: stopped", err=True)


@server.command("run")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Server config (TOML, docs/server.md): runs HTTP, consumer and dispatcher.",
)
@click.option(
    "--role",
    "roles",
    multiple=True,
    type=click.Choice(["http", "consumer", "dispatcher"]),
    help="With --config: run only these parts (repeat the option); default all.",
)
@click.option(
    "--db",
    "db_url",
    default=None,
    help="Without --config: database URL (sqlite:///PATH or postgresql+psycopg://...).",
)
@click.option(
    "--site",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="Site directory from `linli provision broker`: gives --ca and --user.",
)
@click.option(
    "--broker-host",
    default="127.0.0.1",
    show_default=True,
    help="Broker host name (a SAN of its certificate).",
)
@click.option(
    "--broker-port",
    default=8883,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="Broker TLS port.",
)
@click.option(
    "--ca",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Site CA certificate (ca.crt).",
)
@click.option("--user", default=None, help="Broker account of the server (default: from --site).")
@click.option(
    "--password-file",
    default=None,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Without --config: file holding the server account's broker password.",
)
@click.option(
    "--client-id",
    default=None,
    help="MQTT client id (default: linli-server-HOST-PID; unique per process).",
)
@click.option(
    "--command-key",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Ed25519 private key (PEM) that signs down/cmd commands; enables command results.",
)
@click.option("--command-kid", default=None, help="Key id of --command-key (what devices know).")
@click.option(
    "--duration", type=float, default=None, help="Stop after this many seconds (tests, demos)."
)
def run(
    *,
    config_path: Path | None,
    roles: tuple[str, ...],
    db_url: str | None,
    site: Path | None,
    broker_host: str,
    broker_port: int,
    ca: Path | None,
    user: str | None,
    password_file: Path | None,
    client_id: str | None,
    command_key: Path | None,
    command_kid: str | None,
    duration: float | None,
) -> None:
    """Run the server until SIGTERM or Ctrl-C.

    With --config: the web app (resident, worker and admin pages, API), the MQTT consumer and
    the dispatcher, or the parts named by --role. Without it (the ingest-only form): consume up/#
    through the shared subscription, answer up/sync-req (docs/documents.md) and up/rpc
    (docs/rpc.md), and, with --command-key, record up/cmd-result (docs/commands.md).
    """
    if config_path is not None:
        _run_full(config_path, roles, duration)
        return
    if db_url is None or password_file is None:
        raise click.UsageError("give --config, or --db and --password-file")
    issuer_key = _command_key(command_key, command_kid)
    engine, consumer = _consumer(
        db_url=db_url,
        site=site,
        broker_host=broker_host,
        broker_port=broker_port,
        ca=ca,
        user=user,
        password_file=password_file,
        client_id=client_id,
    )
    if issuer_key is not None:
        CommandIssuer(engine, issuer_key).attach(consumer)
    stop = threading.Event()

    def _stop(*_args: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    consumer.start()
    click.echo(
        f"linli server: consuming as {consumer.client_id} from {broker_host}:{broker_port}",
        err=True,
    )
    deadline = None if duration is None else time.monotonic() + duration
    next_expiry = time.monotonic()
    try:
        while not stop.wait(0.2):
            if deadline is not None and time.monotonic() >= deadline:
                break
            if issuer_key is not None and time.monotonic() >= next_expiry:
                _expire_commands(engine)
                next_expiry = time.monotonic() + EXPIRE_INTERVAL_S
    except KeyboardInterrupt:
        pass
    finally:
        consumer.stop()
        engine.dispose()
        health = consumer.health()
        click.echo(
            f"linli server: stopped; {health.stored} events stored, {health.rejected} refused",
            err=True,
        )
