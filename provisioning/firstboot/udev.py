"""The udev rules that give a device's USB serial adapters stable ``/dev`` names (and its USB
receipt printer to the service group). Nothing is guessed: a rule only for an adapter given."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

from device.config import DeviceConfig
from provisioning.firstboot.common import (
    _NAME_RE,
    KNOWN_ADAPTERS,
    SERVICE_USER,
    UDEV_RULES_PATH,
    BundleFile,
    FirstBootError,
    KnownAdapter,
    UsbMatch,
    _check,
)

log = logging.getLogger(__name__)

_PORT_RE = re.compile(r"^[A-Za-z0-9._/:+-]{1,255}$")
_LINK_RE = re.compile(r"^/dev/([A-Za-z0-9._+-]{1,64})$")
_KERNEL_NAME_RE = re.compile(r"^(tty.*|serial[0-9]+|console|ptmx|null|zero)$")

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
