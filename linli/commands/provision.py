"""`linli provision`: prepare a site's infrastructure; `broker` writes Mosquitto's CA, TLS
certificate, password file, ACL and config, and prints the new device credentials once."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


# -- site and devices (docs/provisioning.md) -------------------------------------------------------


def _site_option(fn: Any) -> Any:
    return click.option(
        "--site",
        "site_dir",
        required=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="The site directory (made by `linli provision site init`).",
    )(fn)


@contextlib.contextmanager
def _plainly() -> Iterator[None]:
    """The server's registry errors are not LinliErrors: say them as one line too."""
    from sync_server.errors import ServerError

    try:
        yield
    except ServerError as err:
        raise click.ClickException(str(err)) from err


def _open(site_dir: Path) -> Any:
    from provisioning.site import open_site

    return open_site(site_dir)


@provision.group("site")
def site_group() -> None:
    """The site: CAs, server keys, broker configuration, server config."""


@site_group.command("init")
@_site_option
@click.option("--name", required=True, help="Site name (printed on certificates, shown on pages).")
@click.option(
    "--broker-host",
    default="localhost",
    show_default=True,
    help="Name or IP devices reach the broker by (goes into the broker certificate).",
)
@click.option("--host", "hosts", multiple=True, metavar="NAME", help="More broker names/IPs.")
@click.option("--tls-port", default=8883, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--plain-port", type=click.IntRange(1, 65535), help="Also plain MQTT on 127.0.0.1 (tests)."
)
@click.option(
    "--broker-user",
    default=None,
    help="Mosquitto's `user` option (default: mosquitto's own; `root` for a private test broker).",
)
@click.option(
    "--reload-command",
    default="",
    help='How to reload the broker, e.g. "systemctl reload mosquitto" (run after every change).',
)
@click.option("--public-url", default="http://127.0.0.1:8080", show_default=True)
@click.option("--enroll-url", default="", help="URL devices enroll at (default: --public-url).")
@click.option("--database", "database_url", default="", help="Server database URL.")
@click.option("--http-port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--install-dir", default="/etc/linli", show_default=True, help="Config dir on devices."
)
@click.option(
    "--data-dir", default="/var/lib/linli", show_default=True, help="Data dir on devices."
)
@click.option(
    "--token-ttl-hours", default=72.0, show_default=True, type=click.FloatRange(0.01, 720)
)
def site_init(  # noqa: PLR0917  # one parameter per click option
    site_dir: Path,
    name: str,
    broker_host: str,
    hosts: tuple[str, ...],
    tls_port: int,
    plain_port: int | None,
    broker_user: str | None,
    reload_command: str,
    public_url: str,
    enroll_url: str,
    database_url: str,
    http_port: int,
    install_dir: str,
    data_dir: str,
    token_ttl_hours: float,
) -> None:
    """Create or update a site directory: site CA, broker files, enrollment CA, server signing
    key, server.toml, and the server database's schema. Keys and passwords are kept on reruns."""
    import shlex

    from provisioning.site import BrokerSettings, DeviceDefaults, init_site

    with _plainly():
        site = init_site(
            site_dir,
            name=name,
            broker=BrokerSettings(
                host=broker_host,
                tls_port=tls_port,
                plain_port=plain_port,
                run_as=broker_user,
                reload_command=shlex.split(reload_command),
            ),
            hosts=hosts,
            public_url=public_url,
            database_url=database_url,
            http_port=http_port,
            devices=DeviceDefaults(
                install_dir=install_dir,
                data_dir=data_dir,
                enroll_url=enroll_url,
                token_ttl_h=token_ttl_hours,
            ),
        )
    click.echo(f"site {site.settings.name!r} in {site.root}")
    click.echo(f"  broker config: {site.files.conf}")
    click.echo(f"  server config: {site.server_config_path}  (linli server run --config ...)")
    click.echo(f"  server signing key id: {site.settings.signing_kid}")


@provision.group("device")
def device_group() -> None:
    """Add, rotate and revoke kiosks and lockers."""


def _device_options(fn: Any) -> Any:
    options = [
        click.option(
            "--mode",
            type=click.Choice(["enroll", "bundle"]),
            default="enroll",
            show_default=True,
            help="enroll: the device makes its key on first boot (one-time token in the "
            "bundle); bundle: key, certificate and password made here.",
        ),
        click.option(
            "--config-template",
            type=click.Path(dir_okay=False, exists=True, path_type=Path),
            help="Device config TOML for this hardware ([locks], [scanner]...), merged under ours.",
        ),
        click.option(
            "--usb",
            "usb",
            multiple=True,
            metavar="ROLE=VID:PID[:SERIAL|@PATH]",
            help="Stable name for a USB serial adapter (idcard, scanner, receipt, locks).",
        ),
        click.option(
            "--ssh-key",
            "ssh_keys",
            multiple=True,
            type=click.Path(dir_okay=False, exists=True, path_type=Path),
            help="Public key file for the service user's ssh login (repeatable).",
        ),
        click.option("--hostname", default="", help="Host name on the device (default: its id)."),
        click.option(
            "--token-ttl-hours",
            type=click.FloatRange(0.01, 720),
            help="Enrollment token validity (default: the site's).",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _settings(  # noqa: PLR0917  # the options _device_options adds
    mode: str,
    config_template: Path | None,
    usb: tuple[str, ...],
    ssh_keys: tuple[Path, ...],
    hostname: str,
    token_ttl_hours: float | None,
) -> dict[str, Any]:
    """The DeviceRequest fields add and rotate share, from their common options."""
    import tomllib

    from provisioning.firstboot import UsbMatch

    template: dict[str, Any] = {}
    if config_template is not None:
        try:
            template = tomllib.loads(config_template.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as err:
            raise click.BadParameter(
                f"{config_template}: {err}", param_hint="--config-template"
            ) from err
    matches: dict[str, Any] = {}
    for item in usb:
        role, sep, spec = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r}: expected ROLE=VID:PID", param_hint="--usb")
        try:
            matches[role] = UsbMatch.parse(spec)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--usb") from err
    return {
        "mode": "bundle" if mode == "bundle" else "enroll",
        "template": template,
        "usb": matches,
        "ssh_keys": [p.read_text(encoding="utf-8").strip() for p in ssh_keys],
        "hostname": hostname,
        "token_ttl_s": token_ttl_hours * 3600 if token_ttl_hours else None,
    }


def _print_added(result: Any) -> None:
    click.echo(f"{result.device_id}: generation {result.generation}, key id {result.key_id}")
    click.echo(f"  bundle: {result.bundle_dir}  ({len(result.files)} files)")
    if result.token_expires is not None:
        when = _time(result.token_expires)
        click.echo(f"  enrollment token valid until {when}; first boot runs linli sync enroll")
    if not result.broker_reloaded:
        click.echo(
            "  broker: copy the site's passwd to the broker and reload it (no --reload-command)"
        )


def _time(at: float | None) -> str:
    from provisioning.devices import describe_time

    return describe_time(at)


@device_group.command("add")
@_site_option
@click.option("--kind", type=click.Choice(["kiosk", "locker"]), required=True)
@click.option("--id", "device_id", required=True, help="Device id (1-64 of A-Z a-z 0-9 _ . -).")
@click.option("--area", required=True, help="Area id: a locker's grid, a kiosk's community.")
@click.option("--name", required=True, help="Where it stands, as residents say it.")
@click.option("--address", default="", help="Street address.")
@click.option("--lat", type=click.FloatRange(-90, 90))
@click.option("--lon", type=click.FloatRange(-180, 180))
@_device_options
def device_add(  # noqa: PLR0917  # one parameter per click option
    site_dir: Path,
    kind: str,
    device_id: str,
    area: str,
    name: str,
    address: str,
    lat: float | None,
    lon: float | None,
    mode: str,
    config_template: Path | None,
    usb: tuple[str, ...],
    ssh_keys: tuple[Path, ...],
    hostname: str,
    token_ttl_hours: float | None,
) -> None:
    """Register a device with the server, give it a broker account and write its bundle."""
    from provisioning.broker import validate_account_name
    from provisioning.devices import DeviceRequest, add_device

    request = DeviceRequest(
        device_id=validate_account_name(device_id),
        kind="kiosk" if kind == "kiosk" else "locker",
        area_id=area,
        name=name,
        address=address,
        lat=lat,
        lon=lon,
        **_settings(mode, config_template, usb, ssh_keys, hostname, token_ttl_hours),
    )
    with _plainly():
        _print_added(add_device(_open(site_dir), request))


@device_group.command("rotate")
@_site_option
@click.argument("device_id")
@_device_options
def device_rotate(  # noqa: PLR0917  # one parameter per click option
    site_dir: Path,
    device_id: str,
    mode: str,
    config_template: Path | None,
    usb: tuple[str, ...],
    ssh_keys: tuple[Path, ...],
    hostname: str,
    token_ttl_hours: float | None,
) -> None:
    """New key, certificate and broker password for DEVICE_ID (old ones stop working at the
    broker's reload); also reinstates a revoked device on new hardware."""
    from provisioning.devices import DeviceRequest, registered, rotate_device

    site = _open(site_dir)
    with _plainly():
        kind, area, name = registered(site, device_id)
    request = DeviceRequest(
        device_id=device_id,
        kind=kind,
        area_id=area,
        name=name,
        **_settings(mode, config_template, usb, ssh_keys, hostname, token_ttl_hours),
    )
    with _plainly():
        _print_added(rotate_device(site, request))


@device_group.command("revoke")
@_site_option
@click.argument("device_id")
@click.option("--reason", default="retired", show_default=True, help="Recorded in the audit log.")
@click.option(
    "--compromised",
    is_flag=True,
    help="Its key may be in other hands: certificates it signed stop verifying too.",
)
def device_revoke(site_dir: Path, device_id: str, reason: str, compromised: bool) -> None:
    """Take DEVICE_ID out of service: broker account removed (it is disconnected at the
    reload), revoked on the server, certificate on the CRL, its credentials revoked."""
    from provisioning.devices import revoke_device

    with _plainly():
        result = revoke_device(_open(site_dir), device_id, reason=reason, compromised=compromised)
    s = result.summary
    click.echo(
        f"{device_id}: {'was already revoked' if s.already else 'revoked'}; "
        f"{s.credentials} outstanding credential(s) revoked; "
        f"key {'revoked' if s.key_revoked else 'retired'}; CRL {result.crl}"
    )
    if not result.broker_reloaded:
        click.echo("  broker: copy the site's passwd to the broker and reload it NOW")


@provision.command("list")
@_site_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_cmd(site_dir: Path, as_json: bool) -> None:
    """The site's devices: kind, state, identity generation, online, last contact."""
    from provisioning.devices import list_devices

    with _plainly():
        devices = list_devices(_open(site_dir))
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "device": d.row.device_id,
                        "kind": d.row.kind,
                        "name": d.row.name,
                        "area": d.row.area_id,
                        "state": d.row.state,
                        "generation": d.row.generation,
                        "key_id": d.row.key_id,
                        "online": d.row.online,
                        "last_contact": d.row.last_contact,
                        "cert_not_after": d.row.cert_not_after,
                        "token_expires": d.row.token_expires,
                        "broker_account": d.broker_account,
                    }
                    for d in devices
                ],
                ensure_ascii=False,
                indent=2,
            )
        )
        return
    click.echo(f"{'device':<20} {'kind':<7} {'state':<13} {'gen':>3} {'online':<6} last contact")
    for d in devices:
        r = d.row
        flag = (
            ""
            if d.broker_account or r.state in ("revoked", "unprovisioned")
            else "  (no broker account)"
        )
        click.echo(
            f"{r.device_id:<20} {r.kind:<7} {r.state:<13} {r.generation or '-':>3} "
            f"{'yes' if r.online else 'no':<6} {_time(r.last_contact)}{flag}"
        )
