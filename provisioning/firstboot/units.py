"""The systemd units that run a provisioned device: its daemon (with the sync agent inside) and,
when it enrols itself, the enrol unit that runs before the daemon until enrolled."""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from typing import Literal

from device.config import DeviceConfig
from provisioning.firstboot.common import (
    _NAME_RE,
    _SYSTEM_DIRS,
    CONFIG_PATH,
    DATA_DIR,
    DEFAULT_GROUPS,
    ENROLL_UNIT,
    ENROLLED_MARKER,
    KEYS_DIR,
    LINLI,
    SERVICE_USER,
    UNIT_DIR,
    BundleFile,
    FirstBootError,
    Kind,
    _check,
    _check_path,
)
from provisioning.firstboot.udev import serial_devices


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
