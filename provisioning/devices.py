"""Put a kiosk or locker into service, rotate its secrets, take it out (docs/provisioning.md).

``add`` registers the device with the server (service point + identity), gives it a broker
account, and writes its bundle: the device config (validated by the device's own schema), the
site CA, the server's public keys, the first-boot files for Raspberry Pi OS, and either

- ``bundle`` mode: the device's Ed25519 key and certificate and its broker password, made here; or
- ``enroll`` mode: only a one-time enrollment token; the device makes its key on first boot and
  gets its certificate and (sealed) broker password from the server (:mod:`device.enroll`).

``rotate`` is ``add`` again for a registered device: a new identity generation and broker
password (the old key retired, the old password refused after the broker reloads); it also
reinstates a revoked device, which is how a replacement board takes over a cabinet. ``revoke``
removes the broker account (a connected device is disconnected at the reload), marks the device
revoked on the server, puts its certificate on the CRL and its outstanding credentials on the
``revocations`` document.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import tomli_w
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from device.config import DeviceConfig, parse_config
from device.enroll import seal_for_enrollment
from device.errors import ConfigError
from provisioning.broker import (
    private_pem,
    provision_broker,
    read_accounts,
    remove_accounts,
    write_public,
)
from provisioning.firstboot import (
    BundleFile,
    UsbMatch,
    cloud_init,
    enrollment_dirs,
    hostname_for,
    service_groups,
    systemd_units,
    udev_rules,
)
from provisioning.site import Site, SiteError
from sync_server import registry

__all__ = [
    "AddResult",
    "DeviceRequest",
    "add_device",
    "install_bundle",
    "list_devices",
    "revoke_device",
    "rotate_device",
]

log = logging.getLogger(__name__)

Mode = Literal["bundle", "enroll"]
Kind = Literal["kiosk", "locker"]
BOOT_DIR = "/boot/firmware"


@dataclass(frozen=True)
class DeviceRequest:
    """What the technician says about the device (``linli provision device add`` options)."""

    device_id: str
    kind: Kind
    area_id: str
    name: str
    address: str = ""
    lat: float | None = None
    lon: float | None = None
    mode: Mode = "enroll"
    template: Mapping[str, Any] = field(default_factory=dict)
    """Device config sections for this hardware ([locks], [scanner]...), merged under ours."""
    usb: Mapping[str, UsbMatch] = field(default_factory=dict)
    ssh_keys: Sequence[str] = ()
    hostname: str = ""
    token_ttl_s: float | None = None


@dataclass(frozen=True)
class AddResult:
    """A written bundle. ``token_expires`` is set in enroll mode."""

    device_id: str
    generation: int
    key_id: str
    mode: Mode
    bundle_dir: Path
    files: list[BundleFile]
    token_expires: float | None
    broker_reloaded: bool


def _device_path(site: Site, *parts: str) -> str:
    return str(PurePosixPath(site.settings.devices.install_dir, *parts))


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def device_config(site: Site, request: DeviceRequest, key_id: str) -> dict[str, Any]:
    """The device's config as a TOML mapping; provisioning owns identity, sync and enroll keys."""
    s = site.settings
    keys = _device_path(site, "keys")
    ours: dict[str, Any] = {
        "device": {
            "id": request.device_id,
            "kind": request.kind,
            "data_dir": s.devices.data_dir,
        },
        "sync": {
            "host": s.broker.host,
            "port": s.broker.tls_port,
            "ca_file": f"{keys}/site-ca.crt",
            "password_file": _device_path(site, "broker-password"),
            "server_keys_dir": f"{keys}/server",
        },
        "enroll": {
            "url": site.enroll_url() if request.mode == "enroll" else "",
            "token_file": f"{keys}/enroll-token",
            "key_file": f"{keys}/device-ed25519.pem",
            "cert_file": f"{keys}/device.crt",
        },
    }
    if request.kind == "kiosk":
        ours["certificate"] = {"signing_key": f"{keys}/device-ed25519.pem", "key_id": key_id}
        ours["kiosk"] = {"community_id": request.area_id}
    return _merge(dict(request.template), ours)


def _check_config(data: dict[str, Any], device_id: str) -> DeviceConfig:
    try:
        return parse_config(data, f"config of {device_id}")
    except ConfigError as err:
        raise SiteError(f"{err} (fix --config-template)") from err


def _issue(site: Site, request: DeviceRequest, *, rotating: bool) -> AddResult:
    """The shared part of add and rotate: identity, broker password, secrets, bundle."""
    registry_now = time.time()
    engine = site.engine()
    with engine.begin() as conn:
        if not rotating:  # first: a wrong kind or area is the clearer message
            registry.register_point(
                conn,
                device_id=request.device_id,
                kind=request.kind,
                name=request.name,
                area_id=request.area_id,
                address=request.address,
                lat=request.lat,
                lon=request.lon,
                now=registry_now,
            )
        current = registry.identity(conn, request.device_id)
        if current is not None and not rotating:
            raise SiteError(
                f"{request.device_id} is already provisioned ({current.state}, generation "
                f"{current.generation}); use linli provision device rotate"
            )
        if current is None and rotating:
            raise SiteError(f"{request.device_id} was never provisioned; use device add")
        ident = registry.new_identity(conn, request.device_id, mode=request.mode, now=registry_now)
        config = device_config(site, request, ident.key_id)
        parsed = _check_config(config, request.device_id)
        accounts = read_accounts(site.root)
        broker = provision_broker(
            site.root,
            [request.device_id],
            server_user=site.settings.server_user,
            rotate=[request.device_id] if request.device_id in accounts else [],
            listener=site.settings.broker.listener(),
        )
        password = broker.created[request.device_id].password
        secret_files: list[BundleFile] = []
        token_expires = None
        if request.mode == "bundle":
            key = Ed25519PrivateKey.generate()
            cert = site.enrollment_ca().certify(
                key.public_key(),
                device_id=request.device_id,
                kind=request.kind,
                kid=ident.key_id,
                site=site.settings.name,
                now=registry_now,
            )
            registry.certify_identity(conn, request.device_id, cert, registry_now)
            secret_files += [
                BundleFile(parsed.enroll.key_file, private_pem(key), 0o600, secret=True),
                BundleFile(
                    parsed.enroll.cert_file, cert.public_bytes(serialization.Encoding.PEM), 0o644
                ),
                BundleFile(parsed.sync.password_file, password.encode(), 0o600, secret=True),
            ]
        else:
            token = secrets.token_urlsafe(24)
            ttl = request.token_ttl_s or site.settings.devices.token_ttl_h * 3600
            token_expires = registry.add_token(
                conn,
                request.device_id,
                token=token,
                wrapped=seal_for_enrollment(token, request.device_id, password),
                ttl_s=ttl,
                now=registry_now,
            )
            secret_files.append(
                BundleFile(parsed.enroll.token_file, token.encode(), 0o600, secret=True)
            )
    reloaded = site.reload_broker()
    files = _bundle_files(site, request, parsed, config, secret_files)
    bundle_dir = _write_bundle(site, request.device_id, files)
    log.info(
        "device %s: %s bundle (generation %d) in %s",
        request.device_id,
        request.mode,
        ident.generation,
        bundle_dir,
    )
    return AddResult(
        request.device_id,
        ident.generation,
        ident.key_id,
        request.mode,
        bundle_dir,
        files,
        token_expires,
        reloaded,
    )


def _bundle_files(
    site: Site,
    request: DeviceRequest,
    parsed: DeviceConfig,
    config: dict[str, Any],
    secrets_: list[BundleFile],
) -> list[BundleFile]:
    keys = _device_path(site, "keys")
    files = [
        BundleFile(_device_path(site, "device.toml"), tomli_w.dumps(config).encode(), 0o644),
        BundleFile(parsed.sync.ca_file, site.files.ca_cert.read_bytes(), 0o644),
        *(
            BundleFile(f"{keys}/server/{pem.name}", pem.read_bytes(), 0o644)
            for pem in sorted(site.server_keys_dir.glob("*.pem"))
        ),
        *secrets_,
        *systemd_units(
            request.kind,
            config_path=_device_path(site, "device.toml"),
            data_dir=site.settings.devices.data_dir,
            enroll=request.mode == "enroll",
            groups=service_groups(parsed),
            enroll_dirs=enrollment_dirs(parsed),
            enrolled_marker=parsed.enroll.cert_file,
        ),
        udev_rules(parsed, request.usb),
    ]
    boot = cloud_init(
        hostname=request.hostname or hostname_for(request.device_id),
        files=files,
        ssh_authorized_keys=request.ssh_keys,
        groups=service_groups(parsed),
        writable_dirs=enrollment_dirs(parsed),
    )
    files += [
        BundleFile(f"{BOOT_DIR}/{name}", f.content, f.mode, f.secret) for name, f in boot.items()
    ]
    return files


def _write_bundle(site: Site, device_id: str, files: list[BundleFile]) -> Path:
    """``bundles/ID/rootfs/...`` mirrors the device's file system (0700 directory; secrets 0600).
    A previous bundle of the device is replaced: its secrets are no longer valid."""
    site.bundles_dir.mkdir(mode=0o700, exist_ok=True)
    target = site.bundles_dir / device_id
    staging = site.bundles_dir / f".{device_id}.new"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o700)
    root = staging / "rootfs"
    for f in files:
        path = root / f.path.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        path.write_bytes(f.content)
        path.chmod(f.mode)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    target.chmod(0o700)
    return target


def install_bundle(bundle_dir: Path, root: Path = Path("/"), under: str = "/") -> list[Path]:
    """Copy a bundle's ``rootfs`` onto ``root`` keeping modes (what cloud-init does on first
    boot; by hand: ``sudo cp -a rootfs/. /``); only files whose device path is inside
    ``under`` (tests and the virtual site install a device's config and keys, not its systemd
    units). Returns the files written."""
    written = []
    source = Path(bundle_dir) / "rootfs"
    prefix = PurePosixPath(under)
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        device_path = PurePosixPath("/", path.relative_to(source).as_posix())
        if not device_path.is_relative_to(prefix):
            continue
        dest = Path(root) / path.relative_to(source)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)
        written.append(dest)
    return written


def add_device(site: Site, request: DeviceRequest) -> AddResult:
    """Register, credential and bundle a new device (see the module docstring)."""
    return _issue(site, request, rotating=False)


def rotate_device(site: Site, request: DeviceRequest) -> AddResult:
    """A new identity generation and broker password for a registered device; reinstates a
    revoked one. ``request`` carries the mode and config template (kind/area/name unchanged)."""
    return _issue(site, request, rotating=True)


@dataclass(frozen=True)
class RevokeResult:
    summary: registry.RevokeSummary
    broker_account_removed: bool
    broker_reloaded: bool
    crl: Path


def revoke_device(
    site: Site, device_id: str, *, reason: str = "retired", compromised: bool = False
) -> RevokeResult:
    """Take a device out of service everywhere (see the module docstring)."""
    engine = site.engine()
    summary = registry.revoke_device(
        engine, device_id, now=time.time(), reason=reason, compromised=compromised
    )
    removed = remove_accounts(site.root, [device_id], listener=site.settings.broker.listener())
    with engine.connect() as conn:
        serials = registry.revoked_serials(conn)
    write_public(site.crl, site.enrollment_ca().crl(serials, time.time()).decode("ascii"))
    reloaded = site.reload_broker()
    shutil.rmtree(site.bundles_dir / device_id, ignore_errors=True)
    return RevokeResult(summary, bool(removed), reloaded, site.crl)


@dataclass(frozen=True)
class ListedDevice:
    row: registry.InventoryRow
    broker_account: bool


def list_devices(site: Site) -> list[ListedDevice]:
    """The inventory: every registered device, its identity state, last contact, and whether
    the broker has its account (a mismatch means the broker files were not deployed)."""
    accounts = read_accounts(site.root)
    with site.engine().connect() as conn:
        rows = registry.inventory(conn)
    return [ListedDevice(row, accounts.get(row.device_id) == "device") for row in rows]


def describe_time(at: float | None) -> str:
    """A timestamp for the inventory table (local time, minutes)."""
    if at is None:
        return "-"
    return dt.datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M")


def registered(site: Site, device_id: str) -> tuple[Kind, str, str]:
    """``(kind, area_id, name)`` of a registered device (for rotate)."""
    with site.engine().connect() as conn:
        rows = [r for r in registry.inventory(conn) if r.device_id == device_id]
    if not rows:
        raise SiteError(f"{device_id} is not registered on this site")
    kind: Kind = "kiosk" if rows[0].kind == "kiosk" else "locker"
    return kind, rows[0].area_id, rows[0].name
