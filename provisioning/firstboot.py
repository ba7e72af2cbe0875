"""First-boot files for a provisioned Raspberry Pi OS device: the systemd units that run it, the
udev rules that give its USB serial adapters stable names, and the cloud-init seed (``user-data``,
``meta-data``, ``network-config`` on the boot partition) that installs everything on first boot.

Pure: every function returns :class:`BundleFile` objects and writes nothing (docs/first-boot.md).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from device.config import DeviceConfig
from device.errors import LinliError

log = logging.getLogger(__name__)

Kind = Literal["kiosk", "locker"]

CONFIG_PATH = "/etc/linli/device.toml"
KEYS_DIR = "/etc/linli/keys"
ENROLLED_MARKER = f"{KEYS_DIR}/device.crt"
"""Written by ``linli sync enroll`` once enrolled: the enrol unit runs until it exists."""
LINLI = "/opt/linli/venv/bin/linli"
VENV = "/opt/linli/venv"
SERVICE_USER = "linli"
DATA_DIR = "/var/lib/linli"
BOOT_DIR = "/boot/firmware"
UNIT_DIR = "/etc/systemd/system"
UDEV_RULES_PATH = "/etc/udev/rules.d/99-linli.rules"
ENROLL_UNIT = "linli-enroll.service"
SCRUBBED = f"{BOOT_DIR}/user-data"
"""The user-data replaced by a secret-free stub (an empty cloud-config) after first boot."""

DEFAULT_GROUPS: Mapping[Kind, tuple[str, ...]] = {
    # dialout: serial ports without a udev rule; video + render: the KMS screen (/dev/dri) with GPU
    # acceleration; input: the touch screen (/dev/input).
    "kiosk": ("dialout", "video", "render", "input"),
    # gpio: /dev/gpiomem and /dev/gpiochip* on Raspberry Pi OS; video: a camera QR scanner.
    "locker": ("dialout", "gpio", "video"),
}
"""Supplementary groups of the daemon by kind. No lp/lpadmin: printing through CUPS needs neither
(only ``linli a4`` re-enabling a stopped queue does, run by a technician)."""

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

# Never handed to the service user as its data_dir.
_SYSTEM_DIRS = frozenset(
    [
        *("/", "/var", "/var/lib", "/etc", "/usr", "/opt", "/home", "/run", "/srv", "/root"),
        "/tmp",  # noqa: S108 -- a name refused, not a file used
    ]
)
_PATH_RE = re.compile(r"^(/[A-Za-z0-9._+-]+)+$")  # no spaces, quotes, '%' (systemd specifiers), '$'
_NAME_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")  # user and group names
_HEX4_RE = re.compile(r"^[0-9A-Fa-f]{4}$")
# udev match values are glob patterns inside double quotes: no quotes, commas, spaces, *?[]| or
# newlines can reach a rule.
_UDEV_VALUE_RE = re.compile(r"^[A-Za-z0-9._:+-]{1,128}$")
_PORT_RE = re.compile(r"^[A-Za-z0-9._/:+-]{1,255}$")
_LINK_RE = re.compile(r"^/dev/([A-Za-z0-9._+-]{1,64})$")
_KERNEL_NAME_RE = re.compile(r"^(tty.*|serial[0-9]+|console|ptmx|null|zero)$")
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


class FirstBootError(LinliError, ValueError):
    """A first-boot file cannot be made from what was given (unsafe value, clashing adapters)."""


def _check(value: str, pattern: re.Pattern[str], what: str, hint: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise FirstBootError(f"{what} {value!r}: {hint}")
    return value


def _check_path(value: str, what: str) -> str:
    _check(value, _PATH_RE, what, "must be an absolute path of letters, digits and ._+-")
    if posixpath.normpath(value) != value or "/../" in f"{value}/":
        raise FirstBootError(f"{what} {value!r}: must be a normalised absolute path (no . or ..)")
    return value


@dataclass(frozen=True)
class BundleFile:
    """One file of a device bundle, as it will sit on the device."""

    path: str  # absolute path on the device, e.g. "/etc/linli/device.toml"
    content: bytes = field(repr=False)
    mode: int  # 0o600 for secrets, 0o644 otherwise (0o755 for scripts)
    secret: bool = False  # True: never print, 0600, owned by the service user on the device

    def __post_init__(self) -> None:
        _check_path(self.path, "bundle file path")
        if not isinstance(self.content, bytes):
            raise FirstBootError(f"{self.path}: content must be bytes")
        if not 0 <= self.mode <= 0o7777:
            raise FirstBootError(f"{self.path}: mode {self.mode:#o} is not a file mode")
        if self.secret and self.mode & 0o077:
            raise FirstBootError(
                f"{self.path}: a secret file must not be readable by group or others "
                f"(mode {self.mode:#o}; use 0o600)"
            )

    def __repr__(self) -> str:
        # Never the content: a secret's repr would end up in a log or a traceback.
        flag = ", secret" if self.secret else ""
        return f"BundleFile({self.path!r}, {len(self.content)} bytes, mode={self.mode:#o}{flag})"

    __str__ = __repr__


@dataclass(frozen=True)
class UsbMatch:
    """How udev recognises one peripheral: vendor/product ids, optionally the adapter's serial
    number or the physical USB port path (ID_PATH) when two identical adapters are plugged in."""

    vendor: str  # 4 hex digits
    product: str  # 4 hex digits
    serial: str | None = None
    port_path: str | None = None  # udev ID_PATH, e.g. "platform-xhci-hcd.0-usb-0:1.2:1.0"

    def __post_init__(self) -> None:
        for name in ("vendor", "product"):
            value = getattr(self, name)
            _check(value, _HEX4_RE, f"USB {name} id", "must be 4 hex digits, e.g. 1a86")
            object.__setattr__(self, name, value.lower())
        safe = "may hold only letters, digits and ._:+- (no quotes, commas, spaces or newlines)"
        if self.serial is not None:
            _check(self.serial, _UDEV_VALUE_RE, "USB serial number", safe)
        if self.port_path is not None:
            _check(self.port_path, _UDEV_VALUE_RE, "USB port path (ID_PATH)", safe)

    @classmethod
    def parse(cls, text: str) -> UsbMatch:
        """``VID:PID``, ``VID:PID:SERIAL``, ``VID:PID@ID_PATH`` or ``VID:PID:SERIAL@ID_PATH``."""
        form = (
            "expected VID:PID, VID:PID:SERIAL or VID:PID@ID_PATH, e.g. 1a86:7523 or "
            "1a86:7523@platform-xhci-hcd.0-usb-0:1.2:1.0"
        )
        if not isinstance(text, str):
            raise FirstBootError(f"USB match {text!r}: {form}")
        ids, at, port_path = text.partition("@")
        parts = ids.split(":", 2)
        if len(parts) < 2 or (at and not port_path) or (len(parts) == 3 and not parts[2]):
            raise FirstBootError(f"USB match {text!r}: {form}")
        try:
            return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None, port_path or None)
        except FirstBootError as err:
            raise FirstBootError(f"USB match {text!r}: {err}; {form}") from None

    def __str__(self) -> str:
        serial = f":{self.serial}" if self.serial else ""
        port = f"@{self.port_path}" if self.port_path else ""
        return f"{self.vendor}:{self.product}{serial}{port}"

    def could_match_same_adapter(self, other: UsbMatch) -> bool:
        """True when one adapter could satisfy both matches (udev would give it both names)."""
        if (self.vendor, self.product) != (other.vendor, other.product):
            return False
        serials_differ = bool(self.serial and other.serial and self.serial != other.serial)
        paths_differ = bool(
            self.port_path and other.port_path and self.port_path != other.port_path
        )
        return not (serials_differ or paths_differ)


@dataclass(frozen=True)
class KnownAdapter:
    """A common USB serial chip, for help texts only: never assumed for a device."""

    name: str
    usb: UsbMatch
    has_serial: bool
    note: str


KNOWN_ADAPTERS: Mapping[str, KnownAdapter] = {
    a.name: a
    for a in (
        KnownAdapter("CH340/CH341", UsbMatch("1a86", "7523"), False, "no serial number"),
        KnownAdapter("CH9102/CH343", UsbMatch("1a86", "55d4"), True, "serial number"),
        KnownAdapter("CP2102", UsbMatch("10c4", "ea60"), True, "serial number"),
        KnownAdapter("FTDI FT232R", UsbMatch("0403", "6001"), True, "serial number"),
        KnownAdapter("PL2303", UsbMatch("067b", "2303"), False, "usually no serial number"),
    )
}
"""Common USB-serial chips by vendor:product. Two adapters without a serial number are told apart
by the USB port they are plugged into (``port_path``)."""


# --- systemd -----------------------------------------------------------------------------------


def daemon_unit_name(kind: Kind) -> str:
    """The daemon's unit: ``linli-kiosk.service`` or ``linli-locker.service``."""
    return f"linli-{kind}.service"


def service_groups(config: DeviceConfig) -> tuple[str, ...]:
    """The supplementary groups this device's daemon needs, from its configured backends (a
    group that does not exist on the device would stop the unit with status 216/GROUP)."""
    groups = ["dialout"] if serial_devices(config) else []
    if config.device.kind == "locker" and config.locks.backend == "gpio":
        groups.append("gpio")
    if config.scanner.backend == "camera" or config.device.kind == "kiosk":
        groups.append("video")
    if config.device.kind == "kiosk":
        groups += ["render", "input"]
    return tuple(groups)


def enrollment_dirs(config: DeviceConfig) -> tuple[str, ...]:
    """The directories ``linli sync enroll`` writes in: those of ``[enroll] key_file``,
    ``cert_file``, ``token_file`` (deleted) and ``[sync] password_file``."""
    files = [config.enroll.key_file, config.enroll.cert_file, config.enroll.token_file]
    files += [config.sync.password_file] if config.sync.password_file else []
    return tuple(dict.fromkeys(posixpath.dirname(f) for f in files))


_HARDENING = """\
# Hardening that leaves serial ports, /dev/gpiomem, /dev/dri and the CUPS and pcscd sockets
# reachable: no PrivateDevices=, DevicePolicy= or ProtectClock= (each hides device nodes).
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectHostname=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
RestrictNamespaces=yes
LockPersonality=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
UMask=0077
"""


def _state_lines(data_dir: str, user: str) -> list[str]:
    if data_dir.startswith("/var/lib/") and data_dir != "/var/lib/":
        return [f"StateDirectory={data_dir.removeprefix('/var/lib/')}", "StateDirectoryMode=0750"]
    # Outside /var/lib systemd does not create it: make it, as root ("+"), before the start.
    return [
        f"ExecStartPre=+/usr/bin/install -d -o {user} -g {user} -m 0750 {data_dir}",
        f"ReadWritePaths={data_dir}",
    ]


def _daemon_unit(
    kind: Kind,
    *,
    config_path: str,
    linli: str,
    user: str,
    data_dir: str,
    enroll: bool,
    groups: Sequence[str],
) -> str:
    # time-sync.target is ordered after, never pulled in (systemd.special(7)): no unit here
    # waits for a synchronised clock, so an offline device still starts.
    wants = ["network-online.target"] + ([ENROLL_UNIT] if enroll else [])
    after = [*wants, "time-sync.target"]
    unit = [
        f"Description=Linli {kind} daemon with its sync agent",
    ]
    env = [f"XDG_CACHE_HOME={data_dir}/cache", "PYTHONUNBUFFERED=1"]
    extra: list[str] = []
    if kind == "kiosk":
        # The touch screen takes tty1's display: no login prompt under (or over) the kiosk.
        unit.append("Conflicts=getty@tty1.service")
        after += ["getty@tty1.service", "systemd-user-sessions.service"]
        # Kivy without X: SDL2's KMS/DRM video driver draws straight on the display.
        env += [
            "KIVY_WINDOW=sdl2",
            "KIVY_GL_BACKEND=sdl2",
            "SDL_VIDEODRIVER=kmsdrm",
            f"KIVY_HOME={data_dir}/kivy",
            "KIVY_NO_ARGS=1",
            f"XDG_RUNTIME_DIR=/run/{user}",
        ]
        extra = [f"RuntimeDirectory={user}", "RuntimeDirectoryMode=0700"]
    unit += [
        f"Wants={' '.join(wants)}",
        f"After={' '.join(after)}",
        "# Never give up: the device must come back however often it fails.",
        "StartLimitIntervalSec=0",
    ]
    service = [
        "Type=simple",
        f"User={user}",
        *([f"SupplementaryGroups={' '.join(groups)}"] if groups else []),
        f"ExecStart={linli} {kind} run --config {config_path}",
        "Restart=always",
        "# 2 s, doubling up to 2 min (RestartSteps/RestartMaxDelaySec: systemd >= 254; an older",
        "# systemd ignores them and retries every 2 s).",
        "RestartSec=2s",
        "RestartSteps=6",
        "RestartMaxDelaySec=2min",
        "TimeoutStopSec=30s",
        *(f"Environment={item}" for item in env),
        *_state_lines(data_dir, user),
        *extra,
    ]
    header = (
        f"# {daemon_unit_name(kind)}: the Linli {kind} daemon (`linli {kind} run`).\n"
        "# The sync agent runs inside it: the broker allows one connection per device id, and a\n"
        "# second process with the same MQTT client id would kick this one off. So there is no\n"
        "# separate sync unit. Written at provisioning (docs/first-boot.md); change it with\n"
        f"# `systemctl edit {daemon_unit_name(kind)}` (a drop-in), not here.\n"
    )
    return _render(header, unit, service)


def _enroll_unit(
    kind: Kind,
    *,
    config_path: str,
    linli: str,
    user: str,
    data_dir: str,
    marker: str,
    dirs: Sequence[str],
) -> str:
    daemon = daemon_unit_name(kind)
    unit = [
        f"Description=Linli device enrolment (until {marker} exists)",
        "Wants=network-online.target",
        "After=network-online.target time-sync.target",
        f"Before={daemon}",
        f"ConditionPathExists=!{marker}",
        "StartLimitIntervalSec=0",
    ]
    service = [
        "Type=oneshot",
        f"User={user}",
        f"ExecStart={linli} sync enroll --config {config_path}",
        "# Enrolled on a retry while the daemon already runs (offline): restart it on the new",
        "# credentials. At first boot the daemon is not running yet and this does nothing.",
        f"ExecStartPost=+/usr/bin/systemctl --no-block try-restart {daemon}",
        "# Retried while it fails (server unreachable, clock not yet synchronised).",
        "Restart=on-failure",
        "RestartSec=30s",
        "TimeoutStartSec=2min",
        *_state_lines(data_dir, user),
        # Where enrolment writes (key, certificate, broker password): the only writable /etc.
        *(f"ReadWritePaths=-{d}" for d in dirs),
    ]
    header = (
        f"# {ENROLL_UNIT}: enrols this device with its site once (`linli sync enroll`).\n"
        f"# Runs before {daemon} at every boot until {marker} exists, then\n"
        "# never again. Written at provisioning (docs/first-boot.md).\n"
    )
    return _render(header, unit, service)


def _render(header: str, unit: Sequence[str], service: Sequence[str]) -> str:
    return (
        f"{header}\n[Unit]\n"
        + "".join(f"{line}\n" for line in unit)
        + "\n[Service]\n"
        + "".join(f"{line}\n" for line in service)
        + "\n"
        + _HARDENING
        + "\n[Install]\nWantedBy=multi-user.target\n"
    )


def systemd_units(
    kind: Literal["kiosk", "locker"],
    *,
    config_path: str = CONFIG_PATH,
    linli: str = LINLI,
    user: str = SERVICE_USER,
    data_dir: str = DATA_DIR,
    enroll: bool,
    groups: Sequence[str] | None = None,
    enroll_dirs: Sequence[str] = (KEYS_DIR,),
    enrolled_marker: str = ENROLLED_MARKER,
) -> list[BundleFile]:
    """The daemon unit and, with ``enroll``, the enrol unit that runs before it until enrolled.

    ``groups``: the daemon's supplementary groups; default :data:`DEFAULT_GROUPS` for the kind
    (:func:`service_groups` gives exactly what a configuration needs). ``enroll_dirs``: where
    enrolment may write (:func:`enrollment_dirs`); ``enrolled_marker``: ``[enroll] cert_file``.
    """
    if kind not in DEFAULT_GROUPS:
        raise FirstBootError(f"device kind {kind!r}: must be 'kiosk' or 'locker'")
    for value, what in (
        (config_path, "config_path"),
        (linli, "linli"),
        (data_dir, "data_dir"),
        (enrolled_marker, "enrolled_marker"),
        *((d, "enroll_dirs") for d in enroll_dirs),
    ):
        _check_path(value, what)
    if data_dir in _SYSTEM_DIRS:
        # It is created and handed to the service user: never a directory the system owns.
        raise FirstBootError(f"data_dir {data_dir!r}: must be a directory of its own")
    _check(user, _NAME_RE, "user", "must be a lower-case user name")
    chosen = tuple(DEFAULT_GROUPS[kind] if groups is None else groups)
    for group in chosen:
        _check(group, _NAME_RE, "group", "must be a lower-case group name")
    daemon = _daemon_unit(
        kind,
        config_path=config_path,
        linli=linli,
        user=user,
        data_dir=data_dir,
        enroll=enroll,
        groups=chosen,
    )
    files = [BundleFile(f"{UNIT_DIR}/{daemon_unit_name(kind)}", daemon.encode(), 0o644)]
    if enroll:
        text = _enroll_unit(
            kind,
            config_path=config_path,
            linli=linli,
            user=user,
            data_dir=data_dir,
            marker=enrolled_marker,
            dirs=enroll_dirs,
        )
        files.append(BundleFile(f"{UNIT_DIR}/{ENROLL_UNIT}", text.encode(), 0o644))
    return files


# --- udev --------------------------------------------------------------------------------------

_LABELS = {
    "idcard": "ID-card reader (SAM)",
    "scanner": "QR scanner module",
    "receipt": "receipt printer",
    "locks": "RS485 lock boards",
}


def serial_devices(config: DeviceConfig) -> dict[str, str]:
    """The serial peripherals this device uses, by name (``idcard``, ``scanner``, ``receipt``,
    ``locks``), each with its configured port: the names :func:`udev_rules` takes matches for."""
    found: dict[str, str] = {}
    if config.device.kind == "kiosk" and config.idcard.backend == "serial":
        found["idcard"] = config.idcard.port
    if config.scanner.backend == "serial":
        found["scanner"] = config.scanner.port
    if config.device.kind == "kiosk" and config.receipt.backend == "serial":
        found["receipt"] = config.receipt.port
    if config.device.kind == "locker" and config.locks.backend == "rs485":
        found["locks"] = config.locks.port
    return found


def _link_name(name: str, port: str) -> tuple[str | None, str]:
    """The udev SYMLINK name for a configured port, or None and why there is no rule."""
    _check(port, _PORT_RE, f"{name}.port", "contains characters a udev rule cannot take")
    found = _LINK_RE.fullmatch(port)
    if found is None:
        return None, f"{port} is not under /dev (a simulator or a network port)"
    if _KERNEL_NAME_RE.fullmatch(found.group(1)):
        return None, f"{port} is a kernel name, which can change at every boot"
    return found.group(1), ""


def _tty_rule(usb: UsbMatch, link: str, group: str) -> str:
    keys = [
        'SUBSYSTEM=="tty"',
        f'ATTRS{{idVendor}}=="{usb.vendor}"',
        f'ATTRS{{idProduct}}=="{usb.product}"',
    ]
    if usb.serial:
        keys.append(f'ATTRS{{serial}}=="{usb.serial}"')
    if usb.port_path:
        keys.append(f'ENV{{ID_PATH}}=="{usb.port_path}"')
    # ID_MM_DEVICE_IGNORE: ModemManager, where installed, would probe the port with AT commands.
    keys += [
        f'SYMLINK+="{link}"',
        f'GROUP="{group}"',
        'MODE="0660"',
        'ENV{ID_MM_DEVICE_IGNORE}="1"',
    ]
    return ", ".join(keys)


def _check_distinct(matches: Mapping[str, UsbMatch]) -> None:
    names = sorted(matches)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            if matches[first].could_match_same_adapter(matches[second]):
                raise FirstBootError(
                    f"{first} ({matches[first]}) and {second} ({matches[second]}) could match the "
                    "same adapter: give each its serial number or port path (docs/first-boot.md)"
                )


def udev_rules(
    config: DeviceConfig,
    usb: Mapping[str, UsbMatch],
    *,
    group: str = SERVICE_USER,
    path: str = UDEV_RULES_PATH,
) -> BundleFile:
    """One rule per serial peripheral whose port is a ``/dev/NAME`` link and whose adapter is
    given in ``usb``; the others get a comment saying why there is no rule. Nothing is guessed."""
    _check(group, _NAME_RE, "group", "must be a lower-case group name")
    kind, devices = config.device.kind, serial_devices(config)
    unknown = sorted(set(usb) - set(devices))
    if unknown:
        raise FirstBootError(
            f"USB adapter given for {', '.join(unknown)}, but this {kind}'s configuration uses "
            f"serial ports only for: {', '.join(devices) or 'nothing'}"
        )
    links: dict[str, str] = {}
    ruled: dict[str, UsbMatch] = {}
    lines = [
        f"# Linli {kind} {config.device.id}: stable names for its USB serial adapters.",
        "# Written at provisioning (docs/first-boot.md). An adapter's ID_VENDOR_ID, ID_MODEL_ID,",
        "# ID_SERIAL_SHORT and ID_PATH: udevadm info -q property /dev/ttyUSB0",
        "",
    ]
    for name, port in devices.items():
        link, why = _link_name(name, port)
        match = usb.get(name)
        lines.append(f"# {name}: {_LABELS[name]}, [{name}] port = {port}")
        if link is None:
            lines += [f"# no rule: {why} (use e.g. /dev/linli-{name})", ""]
            continue
        if link in links:
            raise FirstBootError(f"{name}.port {port}: already the port of {links[link]}")
        links[link] = name
        if match is None:
            lines += ["# no rule: no USB adapter given for it (see the table at the end)", ""]
            continue
        known = _known(match)
        if match.serial and known is not None and not known.has_serial:
            log.warning(
                "%s: %s adapters report no serial number: the rule may never match",
                name,
                known.name,
            )
            lines.append(
                f"# warning: {known.name} adapters report no serial number: use a port path"
            )
        ruled[name] = match
        lines += [_tty_rule(match, link, group), ""]
    _check_distinct(ruled)
    if kind == "kiosk" and config.receipt.backend == "usb":
        vendor, product = config.receipt.usb_vendor_id, config.receipt.usb_product_id
        lines += [
            f'# receipt: USB printer {vendor:04x}:{product:04x} ([receipt] backend = "usb"),',
            "# opened through libusb: give the service group its device node.",
            f'SUBSYSTEM=="usb", ENV{{DEVTYPE}}=="usb_device", ATTR{{idVendor}}=="{vendor:04x}", '
            f'ATTR{{idProduct}}=="{product:04x}", GROUP="{group}", MODE="0660"',
            "",
        ]
    if kind == "locker" and config.locks.backend == "gpio":
        lines += [
            '# locks: [locks] backend = "gpio" needs no rule: /dev/gpiomem and /dev/gpiochip*',
            "# belong to group gpio on Raspberry Pi OS, which the locker service joins.",
            "",
        ]
    lines.append("# Common USB serial adapters (help only; never assumed for a device):")
    lines += [f"#   {a.name:<13} {a.usb}  {a.note}" for a in KNOWN_ADAPTERS.values()]
    return BundleFile(path, ("\n".join(lines) + "\n").encode(), 0o644)


def _known(match: UsbMatch) -> KnownAdapter | None:
    for adapter in KNOWN_ADAPTERS.values():
        if (adapter.usb.vendor, adapter.usb.product) == (match.vendor, match.product):
            return adapter
    return None


# --- cloud-init --------------------------------------------------------------------------------


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
