"""A site directory: everything a technician keeps to run one site's devices (docs/provisioning.md).

``linli provision site init`` creates it: the site CA and the broker's files
(:mod:`provisioning.broker`), the enrollment CA the server certifies device keys with, the
server's Ed25519 signing key (credentials and commands) with its key id, the server's config file
and broker password, and ``site.toml``, which the device commands read back. Running it again
keeps every key and password and only rewrites what changed.

The site directory is 0700 and holds the site CA key: keep it with the technician (or on the
server host), back it up, never copy it to a device.
"""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import tomli_w
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Engine

from device.credential import generate_signing_key, load_signing_key
from device.errors import LinliError
from provisioning.broker import (
    DEFAULT_SERVER_USER,
    ListenerOptions,
    SiteFiles,
    ca_certificate,
    load_site_ca,
    private_pem,
    provision_broker,
    write_private,
    write_public,
)
from sync_server.config import ServerConfig, load_server_config
from sync_server.db import open_database, upgrade
from sync_server.enrollment import EnrollmentCA

__all__ = [
    "Site",
    "SiteError",
    "SiteSettings",
    "init_site",
    "open_site",
]

log = logging.getLogger(__name__)

SITE_FILE = "site.toml"
SERVER_CONFIG = "server.toml"
SERVER_PASSWORD = "server-broker-password"  # noqa: S105 -- a file name
ENROLL_CA_DAYS = 3650


class SiteError(LinliError, ValueError):
    """The site directory is missing, incomplete or asked for something impossible."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BrokerSettings(_Section):
    host: Annotated[str, Field(min_length=1, max_length=253)] = "localhost"
    """The name devices (and the server) reach the broker by: one of its certificate's SANs."""
    tls_port: Annotated[int, Field(ge=1, le=65535)] = 8883
    plain_port: Annotated[int | None, Field(ge=1, le=65535)] = None
    run_as: str | None = None
    persistence_dir: str | None = None
    log_file: str | None = None
    reload_command: list[str] = Field(default_factory=list)
    """How to make the broker re-read its password file, e.g. ``["systemctl", "reload",
    "mosquitto"]``; empty: the technician copies ``passwd`` and reloads by hand."""

    def listener(self) -> ListenerOptions:
        return ListenerOptions(
            tls_port=self.tls_port,
            plain_port=self.plain_port,
            run_as=self.run_as,
            persistence_dir=Path(self.persistence_dir) if self.persistence_dir else None,
            log_file=Path(self.log_file) if self.log_file else None,
        )


class DeviceDefaults(_Section):
    install_dir: str = "/etc/linli"
    """Where a device's config and keys live on the device."""
    data_dir: str = "/var/lib/linli"
    enroll_url: str = ""
    """The server URL devices enroll at (default: ``public_url``)."""
    token_ttl_h: Annotated[float, Field(gt=0, le=30 * 24)] = 72.0


class SiteSettings(_Section):
    """``site.toml``."""

    name: Annotated[str, Field(min_length=1, max_length=64)]
    public_url: str = "http://127.0.0.1:8080"
    server_user: str = DEFAULT_SERVER_USER
    signing_kid: str
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    devices: DeviceDefaults = Field(default_factory=DeviceDefaults)


@dataclass(frozen=True)
class Site:
    """An initialised site directory."""

    root: Path
    settings: SiteSettings

    @property
    def files(self) -> SiteFiles:
        return SiteFiles(self.root)

    @property
    def server_config_path(self) -> Path:
        return self.root / SERVER_CONFIG

    @property
    def enroll_ca_cert(self) -> Path:
        return self.root / "enroll-ca.crt"

    @property
    def enroll_ca_key(self) -> Path:
        return self.root / "enroll-ca.key"

    @property
    def crl(self) -> Path:
        return self.root / "crl.pem"

    @property
    def server_keys_dir(self) -> Path:
        """Public keys of the server (``KID.pem``): copied to every device."""
        return self.root / "server-keys"

    @property
    def bundles_dir(self) -> Path:
        return self.root / "bundles"

    def server_config(self) -> ServerConfig:
        return load_server_config(self.server_config_path)

    def engine(self) -> Engine:
        """The server database (schema current, or :class:`SchemaNotCurrentError`)."""
        return open_database(self.server_config().database.url)

    def enrollment_ca(self) -> EnrollmentCA:
        return EnrollmentCA.load(self.enroll_ca_cert, self.enroll_ca_key, [self.files.ca_cert])

    def enroll_url(self) -> str:
        return self.settings.devices.enroll_url or self.settings.public_url

    def reload_broker(self) -> bool:
        """Run the reload command; False when none is configured (the technician reloads)."""
        command = self.settings.broker.reload_command
        if not command:
            return False
        done = subprocess.run(  # noqa: S603 -- the technician's own configured command
            command, capture_output=True, text=True, check=False, timeout=30
        )
        if done.returncode != 0:
            raise SiteError(
                f"broker reload ({' '.join(command)}) failed: {done.stderr.strip()[:300]}"
            )
        return True


def open_site(root: Path) -> Site:
    """Read ``site.toml`` of an initialised site directory."""
    root = Path(root).resolve()
    path = root / SITE_FILE
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise SiteError(
            f"{root} is not a site directory (no {SITE_FILE}); run linli provision site init"
        ) from err
    except tomllib.TOMLDecodeError as err:
        raise SiteError(f"{path}: not valid TOML: {err}") from err
    try:
        settings = SiteSettings.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise SiteError(f"{path}: {where}: {first['msg']}") from err
    return Site(root, settings)


def _new_enroll_ca(site: Site, now: dt.datetime) -> None:
    ca_cert, ca_key = load_site_ca(site.files)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, site.settings.name),
            x509.NameAttribute(NameOID.COMMON_NAME, "Linli enrollment CA"),
        ]
    )
    cert = ca_certificate(
        name,
        key.public_key(),
        signer=ca_key,
        issuer=ca_cert.subject,
        now=now,
        days=ENROLL_CA_DAYS,
    )
    write_private(site.enroll_ca_key, private_pem(key))
    write_public(site.enroll_ca_cert, cert.public_bytes(serialization.Encoding.PEM).decode("ascii"))


def _server_config(site: Site, database_url: str, http_host: str, http_port: int) -> dict[str, Any]:
    s = site.settings
    return {
        "site_name": s.name,
        "public_url": s.public_url,
        "database": {"url": database_url},
        "broker": {
            "host": s.broker.host,
            "port": s.broker.tls_port,
            "ca": "ca.crt",
            "user": s.server_user,
            "password_file": SERVER_PASSWORD,
        },
        "http": {"host": http_host, "port": http_port},
        "signing": {"key": f"signing/{s.signing_kid}.pem", "kid": s.signing_kid},
        "enrollment": {"ca_cert": "enroll-ca.crt", "ca_key": "enroll-ca.key", "chain": ["ca.crt"]},
    }


def init_site(  # one parameter per site init option
    root: Path,
    *,
    name: str,
    broker: BrokerSettings,
    hosts: tuple[str, ...] = (),
    public_url: str = "http://127.0.0.1:8080",
    database_url: str = "",
    http_host: str = "127.0.0.1",
    http_port: int = 8080,
    devices: DeviceDefaults | None = None,
) -> Site:
    """Create (or update) the site directory and migrate the server database.

    Keys, CAs and passwords made by an earlier run are kept: re-running changes names, ports and
    URLs only. ``database_url`` defaults to a SQLite file in the site directory.
    """
    root = Path(root).resolve()
    now = dt.datetime.now(dt.UTC)
    previous = open_site(root).settings if (root / SITE_FILE).exists() else None
    kid = previous.signing_kid if previous else f"srv-{now:%Y%m%d}"
    settings = SiteSettings(
        name=name,
        public_url=public_url,
        server_user=previous.server_user if previous else DEFAULT_SERVER_USER,
        signing_kid=kid,
        broker=broker,
        devices=devices or (previous.devices if previous else DeviceDefaults()),
    )
    site = Site(root, settings)
    result = provision_broker(
        root,
        (),
        server_user=settings.server_user,
        hosts=(broker.host, *hosts) if broker.host != "localhost" else hosts,
        listener=broker.listener(),
    )
    server_cred = result.created.get(settings.server_user)
    if server_cred is not None:
        write_private(root / SERVER_PASSWORD, server_cred.password.encode("utf-8"))
    elif not (root / SERVER_PASSWORD).exists():
        raise SiteError(
            f"{root / SERVER_PASSWORD} is missing; rotate the server's broker password with "
            f"linli provision broker --site {root} --rotate {settings.server_user}"
        )
    if not (site.enroll_ca_cert.exists() and site.enroll_ca_key.exists()):
        _new_enroll_ca(site, now)
    signing = root / "signing"
    signing.mkdir(mode=0o700, exist_ok=True)
    private = signing / f"{kid}.pem"
    key = load_signing_key(private, kid) if private.exists() else generate_signing_key(kid)
    if not private.exists():
        write_private(private, key.private_pem())
    site.server_keys_dir.mkdir(exist_ok=True)
    write_public(site.server_keys_dir / f"{kid}.pem", key.verify_key.public_pem().decode("ascii"))
    if previous is not None and not database_url:
        database_url = site.server_config().database.url
    database_url = database_url or f"sqlite:///{root / 'server.db'}"
    write_public(
        site.server_config_path,
        tomli_w.dumps(_server_config(site, database_url, http_host, http_port)),
    )
    write_public(root / SITE_FILE, tomli_w.dumps(settings.model_dump(exclude_none=True)))
    site.server_config()  # the file we wrote must load: every path it names exists
    upgrade(database_url)
    log.info("site %s initialised (%s)", root, name)
    return site
