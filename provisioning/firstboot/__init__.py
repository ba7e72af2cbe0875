"""First-boot files for a provisioned Raspberry Pi OS device: the systemd units that run it, the
udev rules that give its USB serial adapters stable names, and the cloud-init seed (``user-data``,
``meta-data``, ``network-config`` on the boot partition) that installs everything on first boot.

Pure: every function returns :class:`BundleFile` objects and writes nothing (docs/first-boot.md).
Split by what it makes: :mod:`.common` (types, errors, shared paths), :mod:`.units` (systemd),
:mod:`.udev` and :mod:`.cloudinit`; import from here.
"""

from __future__ import annotations

from provisioning.firstboot.cloudinit import DEFAULT_PACKAGES, cloud_init, hostname_for
from provisioning.firstboot.common import (
    BOOT_DIR,
    CONFIG_PATH,
    DATA_DIR,
    DEFAULT_GROUPS,
    ENROLL_UNIT,
    ENROLLED_MARKER,
    KEYS_DIR,
    KNOWN_ADAPTERS,
    LINLI,
    SCRUBBED,
    SERVICE_USER,
    UDEV_RULES_PATH,
    UNIT_DIR,
    VENV,
    BundleFile,
    FirstBootError,
    Kind,
    KnownAdapter,
    UsbMatch,
)
from provisioning.firstboot.udev import serial_devices, udev_rules
from provisioning.firstboot.units import (
    daemon_unit_name,
    enrollment_dirs,
    service_groups,
    systemd_units,
)

__all__ = [
    "BOOT_DIR",
    "CONFIG_PATH",
    "DATA_DIR",
    "DEFAULT_GROUPS",
    "DEFAULT_PACKAGES",
    "ENROLLED_MARKER",
    "ENROLL_UNIT",
    "KEYS_DIR",
    "KNOWN_ADAPTERS",
    "LINLI",
    "SCRUBBED",
    "SERVICE_USER",
    "UDEV_RULES_PATH",
    "UNIT_DIR",
    "VENV",
    "BundleFile",
    "FirstBootError",
    "Kind",
    "KnownAdapter",
    "UsbMatch",
    "cloud_init",
    "daemon_unit_name",
    "enrollment_dirs",
    "hostname_for",
    "serial_devices",
    "service_groups",
    "systemd_units",
    "udev_rules",
]
