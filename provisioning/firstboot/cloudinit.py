"""The cloud-init seed on the boot partition (``user-data``, ``meta-data``, ``network-config``)
that installs the bundle files, the service user and linli, then starts everything on first boot."""

from __future__ import annotations

import base64
import hashlib
import logging
import posixpath
import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from provisioning.firstboot.common import (
    _NAME_RE,
    _SYSTEM_DIRS,
    BOOT_DIR,
    DEFAULT_GROUPS,
    KEYS_DIR,
    SCRUBBED,
    SERVICE_USER,
    UNIT_DIR,
    VENV,
    BundleFile,
    FirstBootError,
    Kind,
    _check,
    _check_path,
)
from provisioning.firstboot.units import daemon_unit_name

log = logging.getLogger(__name__)

_BUILD = ("python3-venv", "python3-dev", "build-essential", "pkg-config")
# pyscard (swig, PC/SC headers) and pycups (CUPS headers) may build from source on arm64; zbar
# decodes QR codes; libgl1/glib for OpenCV; the CJK font for certificates and receipts.
_COMMON = ("swig", "libpcsclite-dev", "libcups2-dev", "libzbar0", "libgl1", "libglib2.0-0")
_FONTS = ("fonts-wqy-microhei", "fontconfig")
DEFAULT_PACKAGES: Mapping[Kind, tuple[str, ...]] = {
    # pcscd: the PC/SC card reader; cups: the A4 queue; mesa + mtdev: Kivy on KMS with touch.
    "kiosk": (
        *_BUILD,
        *_COMMON,
        *_FONTS,
        "pcscd",
        "cups",
        "cups-client",
        "libgl1-mesa-dri",
        "libmtdev1",
    ),
    "locker": (*_BUILD, *_COMMON),
}

_HOST_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_TZ_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$")
_SSH_KEY_RE = re.compile(
    r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com"
    r"|sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]+={0,3}( [^\r\n]*)?$"
)
_PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9.+-]+$")
_EXTRA_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_WHEEL_RE = re.compile(rf"^{BOOT_DIR}/[A-Za-z0-9._+-]+\.whl$")
_URL_RE = re.compile(r"^https?://[A-Za-z0-9._~:/?#@!&'()*+,;=%-]+$")


def hostname_for(device_id: str) -> str:
    """A host name from a device id (``Locker_01.a`` -> ``locker-01-a``)."""
    name = re.sub(r"[^a-z0-9-]+", "-", device_id.lower()).strip("-")[:63].strip("-")
    return _check(name, _HOST_RE, "host name from device id", "has no letters or digits")


def _kind_of(files: Sequence[BundleFile]) -> Kind | None:
    kinds: tuple[Kind, ...] = ("kiosk", "locker")
    for kind in kinds:
        if any(f.path == f"{UNIT_DIR}/{daemon_unit_name(kind)}" for f in files):
            return kind
    return None


def _write_file(item: BundleFile, user: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "path": item.path,
        "encoding": "b64",
        "content": base64.b64encode(item.content).decode("ascii"),
        "permissions": f"{item.mode:04o}",
    }
    if item.secret:
        # The service user exists only after the users module, which runs after write_files:
        # defer writes the file in the final stage (before runcmd), when chown can work.
        entry.update(owner=f"{user}:{user}", defer=True)
    else:
        entry["owner"] = "root:root"
    return entry


class _Argv(list[str]):
    """A command's argument vector: dumped on one line (``[systemctl, daemon-reload]``)."""


def _runcmd(
    *,
    files: Sequence[BundleFile],
    user: str,
    wheel: str | None,
    extras: Sequence[str],
    venv: str,
    pip_index_url: str | None,
    writable_dirs: Sequence[str],
    ssh: bool,
    scrub: bool,
) -> list[str | _Argv]:
    # set -e: the first failing step stops the rest, and `cloud-init status` reports the error.
    steps: list[str | _Argv] = ["set -e"]
    if wheel:
        spec = f"{wheel}[{','.join(extras)}]" if extras else wheel
        index = ["--index-url", pip_index_url] if pip_index_url else []
        steps += [
            _Argv(["python3", "-m", "venv", venv]),
            _Argv([f"{venv}/bin/pip", "install", "--no-cache-dir", *index, spec]),
        ]
    units = [posixpath.basename(f.path) for f in files if _is_unit(f)]
    commands = [
        # `linli sync enroll` runs as the service user and writes its key, certificate and
        # broker password in these directories.
        *(["mkdir", "-p", d] for d in writable_dirs),
        *(["chown", f"{user}:{user}", d] for d in writable_dirs),
        *(["chmod", "0750", d] for d in writable_dirs),
        ["udevadm", "control", "--reload"],
        ["udevadm", "trigger", "--subsystem-match=tty", "--subsystem-match=usb"],
        ["udevadm", "settle", "--timeout=30"],
        ["systemctl", "daemon-reload"],
        *([["systemctl", "enable", *units]] if units else []),
        # --no-block: queue the starts and let cloud-init finish (waiting here could deadlock
        # on a unit ordered after cloud-init's final stage).
        *([["systemctl", "start", "--no-block", *units]] if units else []),
        *([["systemctl", "enable", "--now", "--no-block", "ssh.service"]] if ssh else []),
    ]
    if scrub:
        # The boot partition is FAT, readable by every local user: once everything is in place,
        # the secrets leave it. The instance id (meta-data) is unchanged, so nothing runs again.
        stub = "# Linli first boot done: its files are installed and the secrets removed from here."
        script = f'printf "%s\\n" "#cloud-config" "{stub}" "{{}}" > {SCRUBBED} && sync'
        commands.append(["sh", "-c", script])
    return steps + [_Argv(command) for command in commands]


def _is_unit(item: BundleFile) -> bool:
    return posixpath.dirname(item.path) == UNIT_DIR and item.path.endswith(".service")


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(
    _Argv, lambda dumper, argv: dumper.represent_sequence("tag:yaml.org,2002:seq", argv, True)
)


def _dump(data: Mapping[str, Any]) -> str:
    text: str = yaml.dump(
        dict(data),
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=1 << 30,
    )
    return text


def _check_cloud_args(
    *,
    hostname: str,
    files: Sequence[BundleFile],
    user: str,
    keys: Sequence[str],
    timezone: str,
    packages: Sequence[str],
    extras: Sequence[str],
) -> None:
    _check(hostname, _HOST_RE, "hostname", "must be 1-63 of a-z 0-9 - (see hostname_for)")
    _check(user, _NAME_RE, "user", "must be a lower-case user name")
    _check(timezone, _TZ_RE, "timezone", "must be a tz database name such as Asia/Shanghai")
    for key in keys:
        if not isinstance(key, str) or not _SSH_KEY_RE.fullmatch(key):
            # Not the key itself in the message: only its first characters.
            raise FirstBootError(
                f"ssh key starting {str(key)[:16]!r}: must be one line 'TYPE BASE64 [comment]'"
            )
    for package in packages:
        _check(package, _PACKAGE_RE, "package", "must be a Debian package name")
    for extra in extras:
        _check(extra, _EXTRA_RE, "extra", "must be a Python extra name, e.g. pi")
    seen: set[str] = set()
    for item in files:
        if item.path in seen:
            raise FirstBootError(f"{item.path}: listed twice in the bundle files")
        seen.add(item.path)


def cloud_init(
    *,
    hostname: str,
    files: Sequence[BundleFile],
    user: str = SERVICE_USER,
    ssh_authorized_keys: Sequence[str] = (),
    timezone: str = "Asia/Shanghai",
    wheel: str | None = None,
    packages: Sequence[str] | None = None,
    extras: Sequence[str] = (),
    venv: str = VENV,
    pip_index_url: str | None = None,
    groups: Sequence[str] | None = None,
    sudo: bool = False,
    writable_dirs: Sequence[str] = (KEYS_DIR,),
    network_config: Mapping[str, Any] | None = None,
    scrub: bool = True,
) -> dict[str, BundleFile]:
    """The cloud-init seed for the boot partition: ``user-data`` (files, user, packages, the
    commands that install and start everything), ``meta-data`` and, if given, ``network-config``.

    ``packages``/``groups`` default to :data:`DEFAULT_PACKAGES`/:data:`DEFAULT_GROUPS` of the kind
    whose daemon unit is in ``files`` (a locker's when there is none). ``wheel``: a linli wheel
    the technician copies to /boot/firmware, installed with ``extras`` (e.g. ``("pi",)`` for GPIO
    locks) into ``venv``.
    ``writable_dirs``: made and handed to the service user (:func:`enrollment_dirs`).
    ``scrub``: when ``files`` hold secrets, the last step replaces user-data (a copy of them on
    the world-readable boot partition) with a stub, once every step before it succeeded.
    """
    kind = _kind_of(files)
    default: Kind = kind or "locker"
    chosen_packages = tuple(DEFAULT_PACKAGES[default] if packages is None else packages)
    chosen_groups = tuple(DEFAULT_GROUPS[default] if groups is None else groups)
    _check_cloud_args(
        hostname=hostname,
        files=files,
        user=user,
        keys=ssh_authorized_keys,
        timezone=timezone,
        packages=chosen_packages,
        extras=extras,
    )
    for group in chosen_groups:
        _check(group, _NAME_RE, "group", "must be a lower-case group name")
    _check_path(venv, "venv")
    for directory in writable_dirs:
        _check_path(directory, "writable_dirs")
        if directory in _SYSTEM_DIRS:
            raise FirstBootError(f"writable_dirs {directory!r}: must be a directory of its own")
    if wheel is not None:
        _check(wheel, _WHEEL_RE, "wheel", f"must be a .whl file directly under {BOOT_DIR}/")
    if pip_index_url is not None:
        _check(pip_index_url, _URL_RE, "pip_index_url", "must be an http(s) URL")
    account: dict[str, Any] = {
        "name": user,
        "gecos": "Linli device service",
        "shell": "/bin/bash",
        "lock_passwd": True,
        # systemd-journal: journalctl without root. cloud-init creates groups that are missing.
        "groups": _Argv([*chosen_groups, "systemd-journal"]),
    }
    if ssh_authorized_keys:
        account["ssh_authorized_keys"] = list(ssh_authorized_keys)
    if sudo:
        account["sudo"] = "ALL=(ALL) NOPASSWD:ALL"  # no password exists to type
    config: dict[str, Any] = {
        "hostname": hostname,
        "manage_etc_hosts": True,
        "timezone": timezone,
        "ssh_pwauth": False,
        "disable_root": True,
        "users": [account],
        "package_update": True,
        "packages": list(chosen_packages),
        "write_files": [_write_file(item, user) for item in files],
        "runcmd": _runcmd(
            files=files,
            user=user,
            wheel=wheel,
            extras=extras,
            venv=venv,
            pip_index_url=pip_index_url,
            writable_dirs=writable_dirs,
            ssh=bool(ssh_authorized_keys),
            scrub=scrub and any(item.secret for item in files),
        ),
    }
    if not chosen_packages:
        del config["packages"], config["package_update"]
    user_data = ("#cloud-config\n" + _dump(config)).encode()
    secret = any(item.secret for item in files)
    seed = {
        "user-data": BundleFile(
            f"{BOOT_DIR}/user-data", user_data, 0o600 if secret else 0o644, secret=secret
        )
    }
    network = b""
    if network_config is not None:
        if network_config.get("version") not in (1, 2):
            raise FirstBootError("network_config: needs 'version: 2' (netplan) or 'version: 1'")
        try:
            network = _dump(network_config).encode()
        except yaml.YAMLError as err:
            raise FirstBootError(f"network_config: not plain YAML data ({err})") from None
        # Wi-Fi passwords live here.
        seed["network-config"] = BundleFile(f"{BOOT_DIR}/network-config", network, 0o600, True)
    # A new id whenever anything changes: a re-provisioned card runs first boot again.
    digest = hashlib.sha256(user_data + b"\0" + network).hexdigest()[:12]
    meta = _dump({"instance-id": f"linli-{hostname}-{digest}", "local-hostname": hostname})
    seed["meta-data"] = BundleFile(f"{BOOT_DIR}/meta-data", meta.encode(), 0o644)
    log.info(
        "first boot for %s: %d files (%d secret), instance linli-%s-%s",
        hostname,
        len(files),
        sum(item.secret for item in files),
        hostname,
        digest,
    )
    return seed
