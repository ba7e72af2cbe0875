"""Broker provisioning for a site: private CA, TLS server certificate, per-device passwords, ACL and
``mosquitto.conf`` for the Mosquitto broker that devices and the sync server share (DESIGN.md 3).

A site directory holds everything; running :func:`provision_broker` again adds devices and keeps
every existing password unless a rotation is asked for. New passwords are returned to the caller
once and are never logged.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import logging
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from device.errors import LinliError

log = logging.getLogger(__name__)

TOPIC_ROOT = "linli/v1/dev"
SHARE_GROUP = "linli"
SERVER_SUBSCRIPTION = f"$share/{SHARE_GROUP}/{TOPIC_ROOT}/+/up/#"
DEFAULT_SERVER_USER = "linli-server"
DEFAULT_TLS_PORT = 8883
INSTALL_HINT = "install with: apt-get install mosquitto mosquitto-clients (scripts/bootstrap.sh)"
# Same rule as device/config.py DeviceSection.id: no '/', '+', '#' or '%' can reach an ACL pattern.
_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_CA_DAYS = 3650
_SERVER_DAYS = 825
_PASSWORD_BYTES = 24
MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"  # noqa: S105 -- a program path, not a password


class BrokerProvisionError(LinliError, ValueError):
    """The site cannot be provisioned as asked (bad device id, broken site directory...)."""


class MosquittoToolMissingError(LinliError, FileNotFoundError):
    """A Mosquitto program (``mosquitto_passwd``, ``mosquitto``) is not installed."""


@dataclass(frozen=True)
class SiteFiles:
    """Where each generated file lives inside a site directory."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.root / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.root / "server.key"

    @property
    def passwd(self) -> Path:
        return self.root / "passwd"

    @property
    def acl(self) -> Path:
        return self.root / "acl"

    @property
    def conf(self) -> Path:
        return self.root / "mosquitto.conf"

    @property
    def accounts(self) -> Path:
        """Who is provisioned (names and roles, no secrets): read back on the next run."""
        return self.root / "accounts.json"


@dataclass(frozen=True)
class Credential:
    """A broker account's secret, handed out once (device enrollment or the server's config)."""

    username: str
    password: str
    role: str  # "device" or "server"

    def bundle(self, ca_pem: str) -> dict[str, Any]:
        """What the device (or server) needs to connect; enrollment tools rely on these keys."""
        out: dict[str, Any] = {
            "username": self.username,
            "password": self.password,
            "role": self.role,
            "ca_pem": ca_pem,
        }
        if self.role == "device":
            out["client_id"] = self.username
            out["publish"] = f"{TOPIC_ROOT}/{self.username}/up/#"
            out["subscribe"] = f"{TOPIC_ROOT}/{self.username}/down/#"
        else:
            out["subscribe"] = SERVER_SUBSCRIPTION
            out["publish"] = f"{TOPIC_ROOT}/+/down/#"
        return out

    def __repr__(self) -> str:  # never show the password in a traceback or log line
        return f"Credential(username={self.username!r}, role={self.role!r}, password=***)"


@dataclass
class ProvisionResult:
    """The site's files, and the credentials created or rotated by this run (only those)."""

    files: SiteFiles
    created: dict[str, Credential] = field(default_factory=dict)
    devices: list[str] = field(default_factory=list)
    server_user: str = DEFAULT_SERVER_USER

    def bundles(self) -> dict[str, dict[str, Any]]:
        """New credentials by username, each with the site CA (PEM): print once, hand over."""
        ca_pem = self.files.ca_cert.read_text(encoding="ascii")
        return {name: cred.bundle(ca_pem) for name, cred in sorted(self.created.items())}


def validate_account_name(name: str, what: str = "device id") -> str:
    """A device id or server user that is safe in a topic and an ACL pattern, else an error."""
    if not _ID_RE.fullmatch(name):
        raise BrokerProvisionError(
            f"{what} {name!r} is not valid: use 1-64 of A-Z a-z 0-9 _ . - "
            "(same rule as [device].id in the device config)"
        )
    return name


def render_acl(server_user: str) -> str:
    """The ACL: each device only its own ``up`` (write) and ``down`` (read) subtree, by ``%u``.

    The server reads every device's ``up`` (through the shared subscription) and writes every
    ``down``. Mosquitto 2.0's ACL file is not consulted for SUBSCRIBE at all (every SUBACK grants);
    it is checked when a message is delivered, against the message's real topic. So a shared
    subscription needs no ``$share/...`` line: ``read linli/v1/dev/+/up/#`` covers its deliveries,
    and a device that subscribes to another's topics is granted the subscription but receives
    nothing (tests/broker show both against the real broker).
    """
    validate_account_name(server_user, "server user")
    return (
        "# Generated by `linli provision broker`; edits are overwritten on the next run.\n"
        "# No lines before the first `user`: anonymous clients get nothing (and are refused).\n"
        f"user {server_user}\n"
        f"topic read {TOPIC_ROOT}/+/up/#\n"
        f"topic write {TOPIC_ROOT}/+/down/#\n"
        "\n"
        "# Every account, by its username (= device id): its own subtree only.\n"
        f"pattern write {TOPIC_ROOT}/%u/up/#\n"
        f"pattern read {TOPIC_ROOT}/%u/down/#\n"
    )


@dataclass(frozen=True)
class ListenerOptions:
    """How the broker listens and where it keeps state; tests change ports, dirs and the user."""

    tls_port: int = DEFAULT_TLS_PORT
    tls_bind: str | None = None  # None: all interfaces
    plain_port: int | None = None  # plain MQTT, always bound to 127.0.0.1 only
    persistence_dir: Path | None = None
    log_file: Path | None = None
    run_as: str | None = None  # mosquitto's `user` option (it drops root to `mosquitto` otherwise)


def render_mosquitto_conf(files: SiteFiles, options: ListenerOptions) -> str:
    """``mosquitto.conf`` for the site: TLS 1.2+ with passwords and ACL, no anonymous access."""
    lines = [
        "# Generated by `linli provision broker`; see docs/broker.md.",
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {files.passwd}",
        f"acl_file {files.acl}",
        # Small packets (PUBACK, down/ack) go out at once: with Nagle's algorithm an ack waited
        # ~40 ms for the peer's delayed TCP ACK, which dominated an offline device's drain.
        "set_tcp_nodelay true",
        "",
    ]
    if options.run_as:
        lines.append(f"user {options.run_as}")
    if options.persistence_dir is not None:
        lines += ["persistence true", f"persistence_location {options.persistence_dir}/"]
    else:
        lines.append("persistence true")
    if options.log_file is not None:
        lines += [f"log_dest file {options.log_file}", "log_type all", "log_timestamp true"]
    bind = f" {options.tls_bind}" if options.tls_bind else ""
    lines += [
        "",
        f"listener {options.tls_port}{bind}",
        f"cafile {files.ca_cert}",
        f"certfile {files.server_cert}",
        f"keyfile {files.server_key}",
        "require_certificate false",
        "tls_version tlsv1.2",
    ]
    if options.plain_port is not None:
        # Plain MQTT only on loopback: for a local TCP proxy in tests, never for devices.
        lines += ["", f"listener {options.plain_port} 127.0.0.1"]
    return "\n".join(lines) + "\n"


def write_private(path: Path, data: bytes) -> None:
    # Created 0600 from the start (no window where a secret is world-readable), then renamed in.
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    tmp.replace(path)


def write_public(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.chmod(0o644)
    tmp.replace(path)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Linli site"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def private_pem(key: ec.EllipticCurvePrivateKey | Ed25519PrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM: the files are 0600 in a 0700 directory (write_private)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def ca_certificate(  # one parameter per certificate field
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    *,
    signer: ec.EllipticCurvePrivateKey,
    issuer: x509.Name | None = None,
    now: dt.datetime,
    days: int,
) -> x509.Certificate:
    """A CA certificate that may sign end-entity certificates and CRLs only (``pathlen:0``):
    self-signed when ``issuer`` is None, else issued by ``signer`` (the site CA)."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer or subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
            critical=False,
        )
    return builder.sign(signer, hashes.SHA256())


def _new_ca(files: SiteFiles, now: dt.datetime) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = ca_certificate(
        _name("Linli site CA"), key.public_key(), signer=key, now=now, days=_CA_DAYS
    )
    write_private(files.ca_key, private_pem(key))
    write_public(files.ca_cert, cert.public_bytes(serialization.Encoding.PEM).decode("ascii"))
    log.info("new site CA in %s", files.ca_cert)


def _san_entries(hosts: Iterable[str]) -> list[x509.GeneralName]:
    entries: list[x509.GeneralName] = []
    for host in ["localhost", "127.0.0.1", "::1", *hosts]:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            if not re.fullmatch(r"[A-Za-z0-9*]([A-Za-z0-9.-]{0,252})", host):
                raise BrokerProvisionError(
                    f"--host {host!r} is neither an IP nor a DNS name"
                ) from None
            general: x509.GeneralName = x509.DNSName(host)
        else:
            general = x509.IPAddress(address)
        if general not in entries:
            entries.append(general)
    return entries


def load_site_ca(files: SiteFiles) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
        key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    except (OSError, ValueError) as err:
        raise BrokerProvisionError(
            f"{files.root}: the site CA (ca.crt / ca.key) cannot be read ({err}); restore it from "
            "the backup, or provision a new site directory"
        ) from err
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise BrokerProvisionError(f"{files.ca_key}: not an EC private key")
    return cert, key


def _server_cert_covers(files: SiteFiles, wanted: list[x509.GeneralName]) -> bool:
    if not files.server_cert.exists() or not files.server_key.exists():
        return False
    cert = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    ca_cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    if cert.issuer != ca_cert.subject:
        return False
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return all(entry in san for entry in wanted)


def _new_server_cert(files: SiteFiles, sans: list[x509.GeneralName], now: dt.datetime) -> None:
    ca_cert, ca_key = load_site_ca(files)
    key = ec.generate_private_key(ec.SECP256R1())
    first = next((s.value for s in sans if isinstance(s, x509.DNSName)), "localhost")
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(str(first)))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    write_private(files.server_key, private_pem(key))
    write_public(files.server_cert, cert.public_bytes(serialization.Encoding.PEM).decode("ascii"))
    log.info("new broker certificate in %s (%d names)", files.server_cert, len(sans))


def mosquitto_passwd_path() -> str:
    """The ``mosquitto_passwd`` program; :class:`MosquittoToolMissingError` names the package."""
    found = shutil.which("mosquitto_passwd") or MOSQUITTO_PASSWD
    if not Path(found).exists():
        raise MosquittoToolMissingError(f"mosquitto_passwd is not installed; {INSTALL_HINT}")
    return found


def _hash_passwords(files: SiteFiles, new: dict[str, Credential]) -> dict[str, str]:
    """Hash with the real ``mosquitto_passwd -U`` (passwords never on a command line)."""
    tool = mosquitto_passwd_path()
    plain = files.root / ".passwd.new"
    write_private(plain, "".join(f"{c.username}:{c.password}\n" for c in new.values()).encode())
    try:
        done = subprocess.run(  # noqa: S603 -- fixed program, our own file, no shell
            [tool, "-U", str(plain)], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise BrokerProvisionError(f"mosquitto_passwd -U failed: {done.stderr.strip()}")
        hashed = _read_passwd(plain)
    finally:
        plain.unlink(missing_ok=True)
    if set(hashed) != set(new):
        raise BrokerProvisionError("mosquitto_passwd -U did not hash every account")
    return hashed


def _read_passwd(path: Path) -> dict[str, str]:
    entries: dict[str, str] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if ":" in line:
                user, _, rest = line.partition(":")
                entries[user] = rest
    return entries


def _read_accounts(files: SiteFiles) -> dict[str, str]:
    if not files.accounts.exists():
        return {}
    try:
        data = json.loads(files.accounts.read_text(encoding="utf-8"))
        return {str(k): str(v) for k, v in data["accounts"].items()}
    except (OSError, ValueError, KeyError, AttributeError) as err:
        raise BrokerProvisionError(
            f"{files.accounts}: cannot read the account list ({err})"
        ) from err


def _check_server_user(accounts: dict[str, str], server_user: str, devices: list[str]) -> None:
    validate_account_name(server_user, "server user")
    if accounts.get(server_user) == "device" or server_user in devices:
        raise BrokerProvisionError(f"server user {server_user!r} is also a device id; pick another")
    old_servers = [name for name, role in accounts.items() if role == "server"]
    if old_servers and server_user not in old_servers:
        raise BrokerProvisionError(
            f"this site's server user is {old_servers[0]!r}, not {server_user!r}; "
            "pass --server-user " + old_servers[0]
        )


def provision_broker(
    site_dir: Path,
    devices: Iterable[str] = (),
    *,
    server_user: str = DEFAULT_SERVER_USER,
    hosts: Iterable[str] = (),
    rotate: Collection[str] = (),
    listener: ListenerOptions | None = None,
) -> ProvisionResult:
    """Create or update the site directory; return the credentials made by this run only.

    Existing accounts keep their passwords unless named in ``rotate``; the CA is made once; the
    server certificate is re-issued only when it does not cover the requested ``hosts``.
    """
    devices = [validate_account_name(d) for d in dict.fromkeys(devices)]
    files = SiteFiles(Path(site_dir).resolve())
    files.root.mkdir(parents=True, exist_ok=True)
    files.root.chmod(0o700)
    accounts = _read_accounts(files)
    _check_server_user(accounts, server_user, devices)
    unknown = [name for name in rotate if name not in accounts and name not in devices]
    if unknown:
        raise BrokerProvisionError(f"cannot rotate {unknown}: not provisioned on this site")
    now = dt.datetime.now(dt.UTC)
    if not (files.ca_cert.exists() and files.ca_key.exists()):
        if files.server_cert.exists() or accounts:
            raise BrokerProvisionError(
                f"{files.root}: the CA is missing but accounts exist; restore ca.crt and ca.key"
            )
        _new_ca(files, now)
    sans = _san_entries(hosts)
    if not _server_cert_covers(files, sans):
        _new_server_cert(files, sans, now)

    result = ProvisionResult(files=files, server_user=server_user)
    wanted = {server_user: "server", **dict.fromkeys(devices, "device")}
    existing = _read_passwd(files.passwd)
    for name, role in wanted.items():
        if name in existing and name in accounts and name not in rotate:
            continue
        password = secrets.token_urlsafe(_PASSWORD_BYTES)
        result.created[name] = Credential(username=name, password=password, role=role)
    for name in rotate:
        if name not in result.created:
            role = accounts.get(name, wanted.get(name, "device"))
            password = secrets.token_urlsafe(_PASSWORD_BYTES)
            result.created[name] = Credential(username=name, password=password, role=role)

    if result.created:
        existing.update(_hash_passwords(files, result.created))
    write_private(files.passwd, "".join(f"{u}:{h}\n" for u, h in existing.items()).encode())
    accounts.update({name: cred.role for name, cred in result.created.items()})
    write_public(
        files.accounts, json.dumps({"accounts": dict(sorted(accounts.items()))}, indent=2) + "\n"
    )
    write_public(files.acl, render_acl(server_user))
    write_public(files.conf, render_mosquitto_conf(files, listener or ListenerOptions()))
    result.devices = sorted(name for name, role in accounts.items() if role == "device")
    log.info(
        "site %s: %d device(s), %d new or rotated account(s)",
        files.root,
        len(result.devices),
        len(result.created),
    )
    return result


def remove_accounts(
    site_dir: Path, names: Collection[str], *, listener: ListenerOptions | None = None
) -> list[str]:
    """Delete device accounts from the password file and account list; returns those removed.

    The broker refuses them from its next reload (SIGHUP), and disconnects any of them still
    connected at that moment (Mosquitto 2.0 re-checks connected clients on reload; tested).
    The server account cannot be removed this way.
    """
    files = SiteFiles(Path(site_dir).resolve())
    accounts = _read_accounts(files)
    servers = [n for n in names if accounts.get(n) == "server"]
    if servers:
        raise BrokerProvisionError(f"{servers[0]!r} is the server's account, not a device's")
    existing = _read_passwd(files.passwd)
    removed = [n for n in names if n in existing or n in accounts]
    for name in removed:
        existing.pop(name, None)
        accounts.pop(name, None)
    write_private(files.passwd, "".join(f"{u}:{h}\n" for u, h in existing.items()).encode())
    write_public(
        files.accounts, json.dumps({"accounts": dict(sorted(accounts.items()))}, indent=2) + "\n"
    )
    if listener is not None:
        write_public(files.conf, render_mosquitto_conf(files, listener))
    log.info("site %s: %d account(s) removed", files.root, len(removed))
    return removed


def read_accounts(site_dir: Path) -> dict[str, str]:
    """The site's broker accounts and their roles (``device``/``server``); no secrets."""
    return _read_accounts(SiteFiles(Path(site_dir).resolve()))
