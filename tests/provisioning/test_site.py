"""`linli provision site init` through the real CLI: the files it writes, their modes, reruns that
keep every secret, and the generated server.toml that the server itself loads."""

from __future__ import annotations

import hashlib
import stat
import tomllib
from pathlib import Path

import pytest
from cryptography import x509

from hardware_sim.processes import free_tcp_port
from provisioning.site import SiteError, open_site
from sync_server.config import load_server_config
from sync_server.db import current_revision, head_revision, open_database
from tests.provisioning.conftest import linli

SECRETS = (
    "ca.key",
    "enroll-ca.key",
    "server.key",
    "passwd",
    "server-broker-password",
)


def digests(root: Path) -> dict[str, str]:
    names = [*SECRETS, "ca.crt", "enroll-ca.crt"]
    files = [root / n for n in names] + sorted((root / "signing").glob("*.pem"))
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def init(root: Path, *extra: str) -> None:
    done = linli(
        "provision", "site", "init", "--site", str(root), "--name", "幸福社区",
        "--broker-host", "mqtt.xingfu.example.cn", "--tls-port", str(free_tcp_port()), *extra,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "server signing key id: srv-" in done.stdout


def test_site_init_writes_the_site_and_keeps_secrets_on_rerun(tmp_path: Path) -> None:
    root = tmp_path / "site"
    init(root, "--public-url", "https://linli.xingfu.example.cn")
    site = open_site(root)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    for name in SECRETS:
        assert stat.S_IMODE((root / name).stat().st_mode) == 0o600, name
    signing = root / "signing" / f"{site.settings.signing_kid}.pem"
    assert stat.S_IMODE(signing.stat().st_mode) == 0o600
    assert (site.server_keys_dir / f"{site.settings.signing_kid}.pem").exists()
    # the enrollment CA is the site CA's child and may only sign end-entity certificates
    enroll_ca = x509.load_pem_x509_certificate((root / "enroll-ca.crt").read_bytes())
    enroll_ca.verify_directly_issued_by(
        x509.load_pem_x509_certificate((root / "ca.crt").read_bytes())
    )
    constraints = enroll_ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0
    # the broker certificate names the host devices use
    broker = x509.load_pem_x509_certificate((root / "server.crt").read_bytes())
    names = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "mqtt.xingfu.example.cn" in names.get_values_for_type(x509.DNSName)
    # the server loads the config written for it, enrollment included, and the schema is current
    config = load_server_config(site.server_config_path)
    assert config.enrollment is not None and config.broker.user == "linli-server"
    assert config.public_url == "https://linli.xingfu.example.cn"
    engine = open_database(config.database.url)
    assert current_revision(engine) == head_revision()
    engine.dispose()
    before = digests(root)
    init(root, "--public-url", "https://new.example.cn")
    assert digests(root) == before  # no key, CA or password changed
    assert open_site(root).settings.public_url == "https://new.example.cn"
    site_toml = tomllib.loads((root / "site.toml").read_text(encoding="utf-8"))
    assert site_toml["name"] == "幸福社区"


def test_device_commands_refuse_a_directory_that_is_not_a_site(tmp_path: Path) -> None:
    with pytest.raises(SiteError, match="not a site directory"):
        open_site(tmp_path)
    done = linli("provision", "list", "--site", str(tmp_path))
    assert done.returncode == 1 and "not a site directory" in done.stderr


def test_cli_errors_are_one_line_messages(tmp_path: Path) -> None:
    root = tmp_path / "site"
    init(root)
    done = linli(
        "provision", "device", "add", "--site", str(root), "--kind", "locker", "--id", "l1",
        "--area", "nowhere", "--name", "x",
    )  # fmt: skip
    assert done.returncode == 1 and "area 'nowhere'" in done.stderr
    assert "Traceback" not in done.stderr
    done = linli(
        "provision", "device", "add", "--site", str(root), "--kind", "locker", "--id", "l/1",
        "--area", "g1", "--name", "x",
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    done = linli("provision", "device", "add", "--site", str(root), "--kind", "locker",
                 "--id", "l1", "--area", "g1", "--name", "x", "--usb", "idcard=zz:top")  # fmt: skip
    assert done.returncode == 2 and "--usb" in done.stderr


@pytest.mark.parametrize(
    "command",
    [
        ("provision", "site", "init"),
        ("provision", "device", "add"),
        ("provision", "device", "rotate"),
        ("provision", "device", "revoke"),
        ("provision", "list"),
        ("sync", "enroll"),
    ],
)
def test_every_command_has_help(command: tuple[str, ...]) -> None:
    done = linli(*command, "--help")
    assert done.returncode == 0 and "Usage:" in done.stdout and len(done.stdout) > 200


def test_no_secret_reaches_a_log_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Add (both modes), rotate and revoke at DEBUG: no password, token or key in any record."""
    import logging

    from provisioning.devices import DeviceRequest, add_device, revoke_device, rotate_device
    from tests.provisioning.conftest import make_site

    caplog.set_level(logging.DEBUG)
    site = make_site(tmp_path)
    results = [
        add_device(site, DeviceRequest("l1", "locker", "g1", "1号柜", mode="bundle")),
        add_device(site, DeviceRequest("l2", "locker", "g1", "2号柜", mode="enroll")),
        rotate_device(site, DeviceRequest("l1", "locker", "g1", "1号柜", mode="enroll")),
    ]
    revoke_device(site, "l2")
    secrets = [f.content.decode().strip() for r in results for f in r.files if f.secret]
    secrets.append((site.root / "server-broker-password").read_text().strip())
    assert len(secrets) >= 4
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "l1" in text  # the records are there...
    for secret in secrets:
        for line in secret.splitlines():  # ...and no line of any secret is in them
            if len(line) > 8 and "-----" not in line:
                assert line not in text


def test_list_prints_a_table(tmp_path: Path) -> None:
    from provisioning.devices import DeviceRequest, add_device
    from tests.provisioning.conftest import make_site

    site = make_site(tmp_path)
    add_device(site, DeviceRequest("kiosk-01", "kiosk", "c1", "一体机", mode="bundle"))
    done = linli("provision", "list", "--site", str(site.root))
    assert done.returncode == 0, done.stderr
    header, row = done.stdout.splitlines()
    assert header.split()[:3] == ["device", "kind", "state"]
    assert row.split()[:5] == ["kiosk-01", "kiosk", "enrolled", "1", "no"]
