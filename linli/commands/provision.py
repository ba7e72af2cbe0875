"""`linli provision`: prepare a site's infrastructure; `broker` writes Mosquitto's CA, TLS
certificate, password file, ACL and config, and prints the new device credentials once."""

from __future__ import annotations

import json
from pathlib import Path

import click

from device.errors import LinliError


@click.group()
def provision() -> None:
    """Site provisioning: broker credentials, certificates and configuration."""


@provision.command("broker")
@click.option(
    "--site",
    "site",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Site directory (created 0700; keep it, it holds the CA key and account list).",
)
@click.option(
    "--device", "devices", multiple=True, metavar="ID", help="Device id to add (repeatable)."
)
@click.option(
    "--server-user",
    default="linli-server",
    show_default=True,
    help="Broker account of the sync server (reads all up/, writes all down/).",
)
@click.option(
    "--host",
    "hosts",
    multiple=True,
    metavar="NAME",
    help="Broker DNS name or IP for the TLS certificate (repeatable; localhost is always in).",
)
@click.option(
    "--rotate",
    multiple=True,
    metavar="ID",
    help="Issue a new password for this existing account (repeatable); others are kept.",
)
@click.option(
    "--tls-port",
    default=8883,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="TLS listener port written into mosquitto.conf.",
)
@click.option(
    "--plain-port",
    type=click.IntRange(1, 65535),
    help="Also listen without TLS on 127.0.0.1:PORT (local proxies and tests only).",
)
def broker_cmd(  # noqa: PLR0917  # one parameter per click option
    site: Path,
    devices: tuple[str, ...],
    server_user: str,
    hosts: tuple[str, ...],
    rotate: tuple[str, ...],
    tls_port: int,
    plain_port: int | None,
) -> None:
    """Write the broker files into --site and print NEW credentials as JSON (shown only once).

    Re-running adds devices and keeps every existing password unless --rotate names it. The JSON
    maps each new username to {username, password, role, client_id, publish, subscribe, ca_pem}.
    """
    from provisioning.broker import ListenerOptions, provision_broker

    try:
        result = provision_broker(
            site,
            devices,
            server_user=server_user,
            hosts=hosts,
            rotate=rotate,
            listener=ListenerOptions(tls_port=tls_port, plain_port=plain_port),
        )
    except LinliError as err:
        raise click.ClickException(str(err)) from err
    click.echo(
        json.dumps({"site": str(result.files.root), "credentials": result.bundles()}, indent=2)
    )
    click.echo(
        f"{len(result.created)} new credential(s); {len(result.devices)} device(s) on the site; "
        f"config: {result.files.conf}",
        err=True,
    )
