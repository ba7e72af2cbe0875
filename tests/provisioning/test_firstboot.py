"""provisioning.firstboot: systemd units (checked by the real systemd-analyze), udev rules, the
cloud-init seed (checked by the real `cloud-init schema`), secrets kept out of logs and reprs."""

from __future__ import annotations

import base64
import logging
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from device.config import DeviceConfig, parse_config
from provisioning.firstboot import (
    KNOWN_ADAPTERS,
    SCRUBBED,
    BundleFile,
    FirstBootError,
    UsbMatch,
    cloud_init,
    enrollment_dirs,
    hostname_for,
    serial_devices,
    service_groups,
    systemd_units,
    udev_rules,
)

SECRET = b"mqtt-password-7f3c9e2a41d8b6"
PATH_1 = "platform-fd500000.pcie-pci-0000:01:00.0-usb-0:1.3:1.0"
PATH_2 = "platform-fd500000.pcie-pci-0000:01:00.0-usb-0:1.4:1.0"
# systemd-analyze < 254 does not know these; the units carry them for Raspberry Pi OS Trixie.
NEWER_SYSTEMD_KEYS = ("RestartSteps", "RestartMaxDelaySec")


def _config(kind: str, **sections: dict[str, Any]) -> DeviceConfig:
    return parse_config({"device": {"id": f"{kind}-0001", "kind": kind}, **sections})


def _unit(file: BundleFile) -> dict[str, list[tuple[str, str]]]:
    """A unit file as section -> [(key, value)], comments dropped (keys repeat in systemd)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for line in file.content.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections[current] = []
            continue
        key, _, value = line.partition("=")
        sections[current].append((key, value))
    return sections


def _values(unit: Mapping[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [v for k, v in unit[section] if k == key]


def _by_name(files: list[BundleFile]) -> dict[str, BundleFile]:
    return {Path(f.path).name: f for f in files}


# --- systemd ---------------------------------------------------------------------------------


def _systemd_version() -> int:
    out = subprocess.run(
        ["systemd-analyze", "--version"], capture_output=True, text=True, check=True
    ).stdout
    found = re.match(r"systemd (\d+)", out)
    assert found, out
    return int(found.group(1))


@pytest.mark.parametrize(
    ("kind", "enroll", "data_dir"),
    [
        ("locker", True, "/var/lib/linli"),
        ("kiosk", True, "/var/lib/linli"),
        ("locker", False, "/srv/linli/data"),
    ],
)
def test_units_pass_systemd_analyze_verify(
    tmp_path: Path, kind: Literal["kiosk", "locker"], enroll: bool, data_dir: str
) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    linli = tmp_path / "bin" / "linli"  # verify checks that ExecStart= is an executable
    linli.parent.mkdir()
    linli.write_text("#!/bin/sh\nexit 0\n")
    linli.chmod(0o755)
    units = tmp_path / "units"
    units.mkdir()
    files = systemd_units(kind, linli=str(linli), enroll=enroll, data_dir=data_dir)
    for file in files:
        (units / Path(file.path).name).write_bytes(file.content)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *sorted(str(p) for p in units.iterdir())],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    allowed = NEWER_SYSTEMD_KEYS if _systemd_version() < 254 else ()
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if line.strip() and not any(f"Unknown key '{key}'" in line for key in allowed)
    ]
    assert problems == []


def test_locker_units_run_the_daemon_after_enrolment_and_never_give_up() -> None:
    files = _by_name(systemd_units("locker", enroll=True))
    assert set(files) == {"linli-locker.service", "linli-enroll.service"}
    daemon = _unit(files["linli-locker.service"])
    assert _values(daemon, "Service", "ExecStart") == [
        "/opt/linli/venv/bin/linli locker run --config /etc/linli/device.toml"
    ]
    assert _values(daemon, "Service", "User") == ["linli"]
    assert _values(daemon, "Service", "Restart") == ["always"]
    assert _values(daemon, "Unit", "StartLimitIntervalSec") == ["0"]
    (wants,) = _values(daemon, "Unit", "Wants")
    assert set(wants.split()) == {"linli-enroll.service", "network-online.target"}
    (after,) = _values(daemon, "Unit", "After")
    assert {"linli-enroll.service", "network-online.target", "time-sync.target"} <= set(
        after.split()
    )
    assert _values(daemon, "Service", "SupplementaryGroups") == ["dialout gpio video"]
    assert _values(daemon, "Service", "StateDirectory") == ["linli"]
    assert _values(daemon, "Service", "ProtectSystem") == ["strict"]
    assert _values(daemon, "Service", "NoNewPrivileges") == ["yes"]
    keys = {k for k, _ in daemon["Service"]}
    # Each of these would hide /dev/ttyUSB*, /dev/gpiomem or /dev/dri from the daemon.
    assert not keys & {"PrivateDevices", "DevicePolicy", "DeviceAllow", "ProtectClock"}
    assert _values(daemon, "Install", "WantedBy") == ["multi-user.target"]
    assert files["linli-locker.service"].mode == 0o644
    assert not files["linli-locker.service"].secret
    text = files["linli-locker.service"].content.decode()
    assert text.startswith("# linli-locker.service:")
    assert "no\n# separate sync unit" in text


def test_enroll_unit_runs_once_until_the_certificate_exists() -> None:
    enroll = _unit(_by_name(systemd_units("kiosk", enroll=True))["linli-enroll.service"])
    assert _values(enroll, "Service", "Type") == ["oneshot"]
    assert _values(enroll, "Service", "ExecStart") == [
        "/opt/linli/venv/bin/linli sync enroll --config /etc/linli/device.toml"
    ]
    assert _values(enroll, "Unit", "ConditionPathExists") == ["!/etc/linli/keys/device.crt"]
    assert _values(enroll, "Unit", "Before") == ["linli-kiosk.service"]
    assert _values(enroll, "Service", "Restart") == ["on-failure"]
    assert _values(enroll, "Service", "User") == ["linli"]
    # The certificate is written there: the only writable place under /etc.
    assert _values(enroll, "Service", "ReadWritePaths") == ["-/etc/linli/keys"]
    assert _values(enroll, "Service", "ExecStartPost") == [
        "+/usr/bin/systemctl --no-block try-restart linli-kiosk.service"
    ]


def test_enrolment_may_write_where_the_config_says() -> None:
    config = _config(
        "locker",
        sync={"password_file": "/etc/linli/broker-password"},
        enroll={"cert_file": "/etc/linli/keys/id/device.crt"},
    )
    dirs = enrollment_dirs(config)
    assert dirs == ("/etc/linli/keys", "/etc/linli/keys/id", "/etc/linli")
    files = systemd_units(
        "locker", enroll=True, enroll_dirs=dirs, enrolled_marker=config.enroll.cert_file
    )
    enroll = _unit(_by_name(files)["linli-enroll.service"])
    assert _values(enroll, "Service", "ReadWritePaths") == [f"-{d}" for d in dirs]
    assert _values(enroll, "Unit", "ConditionPathExists") == ["!/etc/linli/keys/id/device.crt"]
    runcmd = _user_data(cloud_init(hostname="locker-0001", files=files, writable_dirs=dirs))[
        "runcmd"
    ]
    for directory in dirs:
        assert ["chown", "linli:linli", directory] in runcmd
        assert ["chmod", "0750", directory] in runcmd
    with pytest.raises(FirstBootError, match="writable_dirs"):
        cloud_init(hostname="locker-0001", files=files, writable_dirs=["/etc"])


def test_without_enrolment_there_is_only_the_daemon() -> None:
    (only,) = systemd_units("locker", enroll=False)
    unit = _unit(only)
    assert "linli-enroll.service" not in only.content.decode()
    assert _values(unit, "Unit", "Wants") == ["network-online.target"]


def test_kiosk_draws_on_kms_without_x_and_takes_tty1() -> None:
    unit = _unit(systemd_units("kiosk", enroll=False)[0])
    env = dict(v.split("=", 1) for v in _values(unit, "Service", "Environment"))
    assert env["KIVY_WINDOW"] == "sdl2"
    assert env["SDL_VIDEODRIVER"] == "kmsdrm"
    assert env["KIVY_GL_BACKEND"] == "sdl2"
    # ProtectHome hides ~linli: Kivy's and the caches' files go to the state directory.
    assert env["KIVY_HOME"] == "/var/lib/linli/kivy"
    assert env["XDG_CACHE_HOME"] == "/var/lib/linli/cache"
    assert env["XDG_RUNTIME_DIR"] == "/run/linli"
    assert _values(unit, "Service", "RuntimeDirectory") == ["linli"]
    assert _values(unit, "Service", "SupplementaryGroups") == ["dialout video render input"]
    assert _values(unit, "Unit", "Conflicts") == ["getty@tty1.service"]


def test_data_dir_outside_var_lib_is_created_then_made_writable() -> None:
    unit = _unit(systemd_units("locker", enroll=False, data_dir="/srv/linli/data", user="svc")[0])
    assert _values(unit, "Service", "ExecStartPre") == [
        "+/usr/bin/install -d -o svc -g svc -m 0750 /srv/linli/data"
    ]
    assert _values(unit, "Service", "ReadWritePaths") == ["/srv/linli/data"]
    assert _values(unit, "Service", "StateDirectory") == []


def test_groups_follow_the_configuration() -> None:
    gpio_locker = _config("locker", locks={"backend": "gpio"}, scanner={"backend": "camera"})
    assert service_groups(gpio_locker) == ("gpio", "video")
    rs485_locker = _config("locker", locks={"backend": "rs485"}, scanner={"backend": "serial"})
    assert service_groups(rs485_locker) == ("dialout",)
    unit = _unit(systemd_units("locker", enroll=False, groups=service_groups(rs485_locker))[0])
    assert _values(unit, "Service", "SupplementaryGroups") == ["dialout"]


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("linli", "/opt/my linli/bin/linli"),  # a space would split ExecStart
        ("linli", "/opt/linli/%n"),  # a systemd specifier
        ("config_path", "/etc/linli/device.toml\nExecStartPre=/bin/sh"),
        ("config_path", "etc/linli/device.toml"),
        ("data_dir", "/var/lib/../etc"),
        ("data_dir", "/var/lib"),  # would be handed to the service user
        ("user", "Linli User"),
    ],
)
def test_unsafe_unit_values_are_refused(option: str, value: str) -> None:
    with pytest.raises(FirstBootError, match=option):
        systemd_units("locker", enroll=True, **{option: value})


# --- UsbMatch --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1a86:7523", UsbMatch("1a86", "7523")),
        ("1A86:7523", UsbMatch("1a86", "7523")),
        ("0403:6001:A50285BI", UsbMatch("0403", "6001", serial="A50285BI")),
        (f"1a86:7523@{PATH_1}", UsbMatch("1a86", "7523", port_path=PATH_1)),
        (f"10c4:ea60:0001@{PATH_2}", UsbMatch("10c4", "ea60", "0001", PATH_2)),
    ],
)
def test_usb_match_parses(text: str, expected: UsbMatch) -> None:
    assert UsbMatch.parse(text) == expected
    assert UsbMatch.parse(str(expected)) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1a86",
        "1a86:",
        "1a86:75230",
        "zz86:7523",
        "1a86:7523:",
        "1a86:7523@",
        '1a86:7523:A1"B',
        "1a86:7523:A1,B",
        "1a86:7523:A1\n",
        "1a86:7523:A1 B",
        "1a86:7523:A*",
        "1a86:7523@platform-x,RUN+=/bin/sh",
    ],
)
def test_usb_match_refuses_garbage_with_the_expected_form(text: str) -> None:
    with pytest.raises(FirstBootError, match="expected VID:PID") as caught:
        UsbMatch.parse(text)
    assert isinstance(caught.value, ValueError)


@given(st.text(max_size=80))
def test_usb_match_parse_returns_a_match_or_refuses(text: str) -> None:
    try:
        match = UsbMatch.parse(text)
    except FirstBootError:
        return
    assert UsbMatch.parse(str(match)) == match
    assert re.fullmatch(r"[0-9a-f]{4}", match.vendor)
    assert not set('",\n\r *?[]|') & set(str(match))


@given(
    st.from_regex(r"[0-9a-f]{4}", fullmatch=True),
    st.from_regex(r"[0-9a-f]{4}", fullmatch=True),
    st.none() | st.from_regex(r"[A-Za-z0-9._:+-]{1,20}", fullmatch=True),
    st.none() | st.from_regex(r"[A-Za-z0-9._:+-]{1,40}", fullmatch=True),
)
def test_usb_match_round_trips(
    vendor: str, product: str, serial: str | None, path: str | None
) -> None:
    match = UsbMatch(vendor, product, serial, path)
    assert UsbMatch.parse(str(match)) == match


def test_known_adapters_are_help_only() -> None:
    assert KNOWN_ADAPTERS["CH340/CH341"].usb == UsbMatch.parse("1a86:7523")
    assert not KNOWN_ADAPTERS["CH340/CH341"].has_serial
    kiosk = _config("kiosk")
    rules = udev_rules(kiosk, {}).content.decode()
    # Listed in a comment, never turned into a rule.
    assert "#   CH340/CH341   1a86:7523  no serial number" in rules
    assert "SYMLINK" not in rules


# --- udev ------------------------------------------------------------------------------------


def _rules(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_kiosk_rules_name_each_adapter_by_port_path_or_serial() -> None:
    kiosk = _config("kiosk")
    assert serial_devices(kiosk) == {
        "idcard": "/dev/linli-idcard",
        "scanner": "/dev/linli-scanner",
        "receipt": "/dev/linli-receipt",
    }
    file = udev_rules(
        kiosk,
        {
            "idcard": UsbMatch.parse(f"1a86:7523@{PATH_1}"),
            "scanner": UsbMatch.parse(f"1a86:7523@{PATH_2}"),
        },
    )
    assert (file.path, file.mode, file.secret) == ("/etc/udev/rules.d/99-linli.rules", 0o644, False)
    text = file.content.decode()
    assert _rules(text) == [
        'SUBSYSTEM=="tty", ATTRS{idVendor}=="1a86", ATTRS{idProduct}=="7523", '
        f'ENV{{ID_PATH}}=="{PATH_1}", SYMLINK+="linli-idcard", GROUP="linli", MODE="0660", '
        'ENV{ID_MM_DEVICE_IGNORE}="1"',
        'SUBSYSTEM=="tty", ATTRS{idVendor}=="1a86", ATTRS{idProduct}=="7523", '
        f'ENV{{ID_PATH}}=="{PATH_2}", SYMLINK+="linli-scanner", GROUP="linli", MODE="0660", '
        'ENV{ID_MM_DEVICE_IGNORE}="1"',
    ]
    # The receipt printer has a /dev name but no adapter given: said, not guessed.
    assert (
        "# receipt: receipt printer, [receipt] port = /dev/linli-receipt\n# no rule: no USB" in text
    )


def test_locker_rules_for_scanner_and_rs485_boards_with_serials() -> None:
    locker = _config("locker", scanner={"backend": "serial"}, locks={"backend": "rs485"})
    text = udev_rules(
        locker,
        {"scanner": UsbMatch.parse("10c4:ea60:0001"), "locks": UsbMatch.parse("0403:6001:AB12")},
        group="svc",
    ).content.decode()
    assert _rules(text) == [
        'SUBSYSTEM=="tty", ATTRS{idVendor}=="10c4", ATTRS{idProduct}=="ea60", '
        'ATTRS{serial}=="0001", SYMLINK+="linli-scanner", GROUP="svc", MODE="0660", '
        'ENV{ID_MM_DEVICE_IGNORE}="1"',
        'SUBSYSTEM=="tty", ATTRS{idVendor}=="0403", ATTRS{idProduct}=="6001", '
        'ATTRS{serial}=="AB12", SYMLINK+="linli-locks", GROUP="svc", MODE="0660", '
        'ENV{ID_MM_DEVICE_IGNORE}="1"',
    ]


def test_gpio_locker_with_camera_needs_no_rule_and_says_why() -> None:
    locker = _config("locker", scanner={"backend": "camera"}, locks={"backend": "gpio"})
    assert serial_devices(locker) == {}
    text = udev_rules(locker, {}).content.decode()
    assert _rules(text) == []
    assert "group gpio on Raspberry Pi OS" in text


def test_ports_that_are_not_dev_names_get_a_comment_not_a_rule() -> None:
    kiosk = _config(
        "kiosk",
        idcard={"port": "/dev/ttyUSB0"},
        scanner={"port": "/tmp/sim/scanner-pty"},
        receipt={"backend": "none"},
    )
    text = udev_rules(
        kiosk, {"idcard": UsbMatch.parse("1a86:7523"), "scanner": UsbMatch.parse("067b:2303")}
    ).content.decode()
    assert _rules(text) == []
    assert "/dev/ttyUSB0 is a kernel name, which can change at every boot" in text
    assert "/tmp/sim/scanner-pty is not under /dev" in text


def test_usb_receipt_printer_gets_its_device_node_group() -> None:
    kiosk = _config("kiosk", receipt={"backend": "usb", "usb_vendor_id": 0x0416})
    assert _rules(udev_rules(kiosk, {}).content.decode()) == [
        'SUBSYSTEM=="usb", ENV{DEVTYPE}=="usb_device", ATTR{idVendor}=="0416", '
        'ATTR{idProduct}=="5011", GROUP="linli", MODE="0660"'
    ]


def test_two_rules_that_could_name_one_adapter_are_refused() -> None:
    kiosk = _config("kiosk")
    with pytest.raises(FirstBootError, match="could match the same adapter"):
        udev_rules(
            kiosk,
            {"idcard": UsbMatch.parse("1a86:7523"), "scanner": UsbMatch.parse("1a86:7523:X1")},
        )
    # Told apart by serial: accepted.
    udev_rules(
        kiosk, {"idcard": UsbMatch.parse("0403:6001:X1"), "scanner": UsbMatch.parse("0403:6001:X2")}
    )


def test_two_devices_on_one_port_are_refused() -> None:
    kiosk = _config("kiosk", scanner={"port": "/dev/linli-idcard"})
    with pytest.raises(FirstBootError, match="already the port of idcard"):
        udev_rules(kiosk, {})


@pytest.mark.parametrize(
    ("usb", "message"),
    [
        ({"locks": UsbMatch.parse("1a86:7523")}, "uses serial ports only for: idcard"),
        ({"printer": UsbMatch.parse("1a86:7523")}, "USB adapter given for printer"),
    ],
)
def test_matches_for_devices_the_kind_does_not_use_are_refused(
    usb: dict[str, UsbMatch], message: str
) -> None:
    with pytest.raises(FirstBootError, match=message):
        udev_rules(_config("kiosk"), usb)


def test_values_that_would_inject_udev_syntax_are_refused() -> None:
    with pytest.raises(FirstBootError, match="serial number"):
        UsbMatch("1a86", "7523", serial='x", RUN+="/bin/sh')
    with pytest.raises(FirstBootError, match="ID_PATH"):
        UsbMatch("1a86", "7523", port_path="usb-0:1.2\nRUN+=/bin/sh")
    with pytest.raises(FirstBootError, match="group"):
        udev_rules(_config("kiosk"), {}, group='linli", RUN+="/bin/sh')
    quoted = _config("kiosk", idcard={"port": '/dev/linli"idcard'})
    with pytest.raises(FirstBootError, match=r"idcard\.port"):
        udev_rules(quoted, {})
    newline = _config("kiosk", idcard={"port": "/dev/linli-idcard\nRUN+=x"})
    with pytest.raises(FirstBootError, match=r"idcard\.port"):
        udev_rules(newline, {})


def test_a_serial_number_on_a_chip_without_one_is_flagged(caplog: pytest.LogCaptureFixture) -> None:
    text = udev_rules(_config("kiosk"), {"idcard": UsbMatch.parse("1a86:7523:X1")}).content
    assert b"# warning: CH340/CH341 adapters report no serial number" in text
    assert "report no serial number" in caplog.text


# --- cloud-init ------------------------------------------------------------------------------

SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl tech"
WHEEL = "/boot/firmware/linli-0.1.0-py3-none-any.whl"
TOP_LEVEL = {
    "hostname", "manage_etc_hosts", "timezone", "ssh_pwauth", "disable_root", "users",
    "package_update", "packages", "write_files", "runcmd",
}  # fmt: skip


def _bundle(secret: bytes = SECRET) -> list[BundleFile]:
    locker = _config("locker", scanner={"backend": "serial"}, locks={"backend": "rs485"})
    return [
        *systemd_units("locker", enroll=True),
        udev_rules(locker, {"locks": UsbMatch.parse("0403:6001:AB12")}),
        BundleFile("/etc/linli/device.toml", b'[device]\nid = "locker-0001"\n', 0o644),
        BundleFile("/etc/linli/keys/mqtt-password", secret, 0o600, secret=True),
    ]


def _seed(**options: Any) -> dict[str, BundleFile]:
    return cloud_init(hostname="locker-0001", files=_bundle(), **options)


def _user_data(seed: Mapping[str, BundleFile]) -> dict[str, Any]:
    raw = seed["user-data"].content
    assert raw.startswith(b"#cloud-config\n")
    data = yaml.safe_load(raw)
    assert isinstance(data, dict)
    return data


def _cloud_init_schema(path: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("cloud-init") is None:
        pytest.skip(
            "cloud-init is not installed (apt-get install --no-install-recommends cloud-init); "
            "the structure checks of the other tests still ran"
        )
    return subprocess.run(
        ["cloud-init", "schema", "--config-file", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_user_data_writes_every_file_and_installs_and_starts_the_units() -> None:
    seed = _seed(ssh_authorized_keys=[SSH_KEY], wheel=WHEEL, extras=["pi"])
    assert set(seed) == {"user-data", "meta-data"}
    assert {f.path for f in seed.values()} == {
        "/boot/firmware/user-data",
        "/boot/firmware/meta-data",
    }
    data = _user_data(seed)
    assert set(data) <= TOP_LEVEL
    assert data["hostname"] == "locker-0001"
    assert data["timezone"] == "Asia/Shanghai"
    assert data["ssh_pwauth"] is False
    (user,) = data["users"]
    assert user["name"] == "linli"
    assert user["lock_passwd"] is True  # no password login
    assert user["ssh_authorized_keys"] == [SSH_KEY]
    assert set(user["groups"]) == {"dialout", "gpio", "video", "systemd-journal"}
    assert "sudo" not in user
    written = {entry["path"]: entry for entry in data["write_files"]}
    for file in _bundle():
        entry = written.pop(file.path)
        assert base64.b64decode(entry["content"]) == file.content
        assert entry["encoding"] == "b64"
        assert entry["permissions"] == f"{file.mode:04o}"
    assert written == {}
    runcmd = data["runcmd"]
    assert runcmd[0] == "set -e"
    assert runcmd[1:3] == [
        ["python3", "-m", "venv", "/opt/linli/venv"],
        ["/opt/linli/venv/bin/pip", "install", "--no-cache-dir", f"{WHEEL}[pi]"],
    ]
    for command in (
        ["udevadm", "control", "--reload"],
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "linli-locker.service", "linli-enroll.service"],
        ["systemctl", "start", "--no-block", "linli-locker.service", "linli-enroll.service"],
        ["systemctl", "enable", "--now", "--no-block", "ssh.service"],
        ["chown", "linli:linli", "/etc/linli/keys"],
    ):
        assert command in runcmd
    order = [c[1] if isinstance(c, list) else c for c in runcmd]
    assert order.index("control") < order.index("daemon-reload") < order.index("enable")


def test_secret_files_are_0600_owned_by_the_service_user_and_deferred() -> None:
    entries = {e["path"]: e for e in _user_data(_seed(user="svc"))["write_files"]}
    secret = entries["/etc/linli/keys/mqtt-password"]
    assert (secret["permissions"], secret["owner"], secret["defer"]) == ("0600", "svc:svc", True)
    public = entries["/etc/linli/device.toml"]
    assert (public["permissions"], public["owner"]) == ("0644", "root:root")
    assert "defer" not in public  # written early, before the units are enabled
    assert entries["/etc/udev/rules.d/99-linli.rules"]["owner"] == "root:root"


def test_user_data_passes_cloud_init_schema(tmp_path: Path) -> None:
    seed = _seed(
        ssh_authorized_keys=[SSH_KEY],
        wheel=WHEEL,
        sudo=True,
        pip_index_url="https://mirrors.example.cn/pypi/simple",
    )
    path = tmp_path / "user-data"
    path.write_bytes(seed["user-data"].content)
    result = _cloud_init_schema(path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid cloud-config" in result.stdout


def test_runcmd_is_valid_shell_and_the_scrub_leaves_a_valid_secret_free_stub(
    tmp_path: Path,
) -> None:
    runcmd = _user_data(_seed())["runcmd"]
    scrub = runcmd[-1]
    assert scrub[:2] == ["sh", "-c"] and SCRUBBED in scrub[2]
    stub = tmp_path / "user-data"
    subprocess.run(["sh", "-c", scrub[2].replace(SCRUBBED, str(stub))], check=True, timeout=10)
    assert yaml.safe_load(stub.read_text()) == {}
    assert SECRET not in stub.read_bytes()
    assert stub.read_text().startswith("#cloud-config\n")
    if shutil.which("cloud-init"):
        assert _cloud_init_schema(stub).returncode == 0
    # cloud-init quotes every word of a list command; "set -e" is a line of its own.
    script = "\n".join(
        c if isinstance(c, str) else " ".join("'" + w.replace("'", "'\\''") + "'" for w in c)
        for c in runcmd
    )
    assert subprocess.run(["sh", "-n"], input=script, text=True, check=False).returncode == 0


def test_no_secrets_no_scrub_and_no_secret_flag() -> None:
    files = [f for f in _bundle() if not f.secret]
    seed = cloud_init(hostname="locker-0001", files=files)
    assert not seed["user-data"].secret
    assert not any(isinstance(c, list) and c[0] == "sh" for c in _user_data(seed)["runcmd"])


def test_instance_id_changes_with_any_content() -> None:
    first = yaml.safe_load(_seed()["meta-data"].content)
    again = yaml.safe_load(_seed()["meta-data"].content)
    other = yaml.safe_load(
        cloud_init(hostname="locker-0001", files=_bundle(b"rotated-password"))["meta-data"].content
    )
    assert first == again  # the same bundle is the same instance
    assert first["instance-id"].startswith("linli-locker-0001-")
    assert first["local-hostname"] == "locker-0001"
    assert other["instance-id"] != first["instance-id"]
    network = {"version": 2, "ethernets": {"eth0": {"dhcp4": True}}}
    with_net = yaml.safe_load(_seed(network_config=network)["meta-data"].content)
    assert with_net["instance-id"] != first["instance-id"]


def test_network_config_is_written_and_kept_secret() -> None:
    wifi = {
        "version": 2,
        "wifis": {"wlan0": {"dhcp4": True, "access-points": {"site-01": {"password": "pw-123"}}}},
    }
    seed = _seed(network_config=wifi)
    net = seed["network-config"]
    assert (net.path, net.mode, net.secret) == ("/boot/firmware/network-config", 0o600, True)
    assert yaml.safe_load(net.content) == wifi
    with pytest.raises(FirstBootError, match="version"):
        _seed(network_config={"ethernets": {}})
    with pytest.raises(FirstBootError, match="not plain YAML"):
        _seed(network_config={"version": 2, "ethernets": {"eth0": {"dhcp4": object()}}})


def test_packages_and_groups_follow_the_daemon_kind() -> None:
    kiosk_files = systemd_units("kiosk", enroll=False)
    data = _user_data(cloud_init(hostname="kiosk-1", files=kiosk_files))
    assert {"cups", "pcscd", "libmtdev1"} <= set(data["packages"])
    assert "render" in data["users"][0]["groups"]
    locker = _user_data(_seed(packages=[], groups=["dialout"]))
    assert "packages" not in locker
    assert locker["users"][0]["groups"] == ["dialout", "systemd-journal"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"hostname": "Locker_01"}, "hostname"),
        ({"timezone": "Asia/Shanghai; rm -rf /"}, "timezone"),
        ({"ssh_authorized_keys": ["ssh-ed25519 AAAA\nssh-rsa BBBB"]}, "ssh key"),
        ({"wheel": "/tmp/linli.whl"}, "wheel"),
        ({"wheel": "/boot/firmware/linli.whl;reboot"}, "wheel"),
        ({"packages": ["cups; reboot"]}, "package"),
        ({"extras": ["pi]"]}, "extra"),
        ({"pip_index_url": "ftp://mirror"}, "pip_index_url"),
        ({"user": "root user"}, "user"),
    ],
)
def test_bad_cloud_init_options_are_refused(options: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"hostname": "locker-0001", "files": _bundle(), **options}
    with pytest.raises(FirstBootError, match=message):
        cloud_init(**arguments)


def test_duplicate_paths_and_unsafe_files_are_refused() -> None:
    twice = [*_bundle(), BundleFile("/etc/linli/device.toml", b"", 0o644)]
    with pytest.raises(FirstBootError, match="listed twice"):
        cloud_init(hostname="locker-0001", files=twice)
    with pytest.raises(FirstBootError, match="readable by group or others"):
        BundleFile("/etc/linli/keys/device.key", SECRET, 0o644, secret=True)
    for path in ("etc/linli/x", "/etc/linli/../shadow", "/etc/linli/a b", "/etc/linli/x\n"):
        with pytest.raises(FirstBootError, match="path"):
            BundleFile(path, b"", 0o644)


def test_hostname_for_device_ids() -> None:
    assert hostname_for("Locker_01.site-A") == "locker-01-site-a"
    with pytest.raises(FirstBootError):
        hostname_for("___")


def test_secrets_never_reach_a_repr_or_a_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    bundle = _bundle()
    seed = cloud_init(hostname="locker-0001", files=bundle, ssh_authorized_keys=[SSH_KEY])
    secret_file = bundle[-1]
    shown = repr(secret_file) + str(secret_file) + repr(seed) + repr(bundle)
    assert "secret" in repr(secret_file) and "bytes" in repr(secret_file)
    encoded = base64.b64encode(SECRET).decode()
    for text in (shown, caplog.text):
        assert SECRET.decode() not in text
        assert encoded not in text
    assert "first boot for locker-0001" in caplog.text  # something was logged
    # The secret is in user-data (cloud-init needs it there), which is itself secret.
    assert encoded.encode() in seed["user-data"].content
    assert seed["user-data"].secret and seed["user-data"].mode == 0o600
