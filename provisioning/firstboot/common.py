"""Types, constants and checks shared by the first-boot modules: :class:`BundleFile` (one file as
it will sit on the device), :class:`UsbMatch` (how udev recognises an adapter),
:class:`FirstBootError`, and the paths the units, rules and cloud-init seed agree on.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from device.errors import LinliError

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
