"""provisioning.broker and `linli provision broker`: files, modes, re-runs, rotation, errors."""

from __future__ import annotations

import ipaddress
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from hardware_sim.mosquitto import BrokerConnectError, MosquittoTestBroker
from provisioning.broker import BrokerProvisionError, provision_broker, render_acl

from .conftest import require_mosquitto

ROOT = Path(__file__).resolve().parents[2]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _sans(cert_path: Path) -> list[str]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(v) for v in san.get_values_for_type(x509.DNSName)] + [
        str(v) for v in san.get_values_for_type(x509.IPAddress)
    ]


@pytest.fixture(autouse=True)
def _tools() -> None:
    require_mosquitto()


def test_first_run_writes_every_file_with_private_modes(tmp_path: Path) -> None:
    result = provision_broker(tmp_path / "site", ["k1", "locker-2"], hosts=["mqtt.example.cn"])
    files = result.files
    for secret in (files.ca_key, files.server_key, files.passwd):
        assert _mode(secret) == 0o600, secret
    assert _mode(files.root) == 0o700
    assert set(result.created) == {"k1", "locker-2", "linli-server"}
    passwd = files.passwd.read_text()
    for cred in result.created.values():
        assert cred.password not in passwd  # hashed by mosquitto_passwd
        assert cred.password not in repr(cred)
        assert passwd.count(f"{cred.username}:$7$") == 1
    assert {"localhost", "127.0.0.1", "mqtt.example.cn"} <= set(_sans(files.server_cert))
    conf = files.conf.read_text()
    for line in ("per_listener_settings false", "allow_anonymous false", "tls_version tlsv1.2",
                 "require_certificate false", "listener 8883"):  # fmt: skip
        assert line in conf
    assert "127.0.0.1" not in conf  # no plain listener unless asked
    bundle = result.bundles()["k1"]
    assert bundle["publish"] == "linli/v1/dev/k1/up/#"
    assert bundle["subscribe"] == "linli/v1/dev/k1/down/#"
    assert bundle["ca_pem"].startswith("-----BEGIN CERTIFICATE-----")


def test_rerun_adds_devices_and_keeps_existing_passwords(tmp_path: Path) -> None:
    site = tmp_path / "site"
    provision_broker(site, ["k1"])
    before = (site / "passwd").read_text().splitlines()
    ca_before = (site / "ca.crt").read_bytes()
    again = provision_broker(site, ["k1", "k2"])
    assert set(again.created) == {"k2"}
    after = (site / "passwd").read_text().splitlines()
    assert set(before) <= set(after)
    assert (site / "ca.crt").read_bytes() == ca_before
    assert again.devices == ["k1", "k2"]


def test_rotate_issues_a_new_password_for_that_account_only(tmp_path: Path) -> None:
    site = tmp_path / "site"
    provision_broker(site, ["k1", "k2"])
    lines = dict(line.split(":", 1) for line in (site / "passwd").read_text().splitlines())
    rotated = provision_broker(site, rotate=["k1"])
    assert set(rotated.created) == {"k1"}
    new = dict(line.split(":", 1) for line in (site / "passwd").read_text().splitlines())
    assert new["k1"] != lines["k1"]
    assert new["k2"] == lines["k2"]
    with pytest.raises(BrokerProvisionError, match="not provisioned"):
        provision_broker(site, rotate=["nobody"])


def test_new_host_reissues_the_server_certificate_under_the_same_ca(tmp_path: Path) -> None:
    site = tmp_path / "site"
    first = provision_broker(site, ["k1"])
    cert_before = first.files.server_cert.read_bytes()
    provision_broker(site, [])
    assert first.files.server_cert.read_bytes() == cert_before
    provision_broker(site, [], hosts=["10.0.0.5"])
    assert first.files.server_cert.read_bytes() != cert_before
    assert str(ipaddress.ip_address("10.0.0.5")) in _sans(first.files.server_cert)


@pytest.mark.parametrize("bad", ["", "a/b", "dev+", "#", "dev%u", "x" * 65, "有"])
def test_invalid_device_ids_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(BrokerProvisionError, match="device id"):
        provision_broker(tmp_path / "site", [bad])
    assert not (tmp_path / "site" / "passwd").exists()


def test_server_user_must_not_be_a_device_and_must_stay_the_same(tmp_path: Path) -> None:
    site = tmp_path / "site"
    with pytest.raises(BrokerProvisionError, match="also a device"):
        provision_broker(site, ["linli-server"])
    provision_broker(site, ["k1"], server_user="srv")
    with pytest.raises(BrokerProvisionError, match="--server-user srv"):
        provision_broker(site, ["k2"])


def test_acl_gives_devices_only_their_own_subtree() -> None:
    acl = render_acl("srv")
    assert "pattern write linli/v1/dev/%u/up/#" in acl
    assert "pattern read linli/v1/dev/%u/down/#" in acl
    assert acl.index("user srv") < acl.index("topic read linli/v1/dev/+/up/#")


def test_reprovisioned_site_keeps_old_passwords_working_on_the_real_broker(
    fresh_broker: MosquittoTestBroker,
) -> None:
    old_password = fresh_broker.credentials["dev-a"].password
    new = fresh_broker.add_devices("dev-c")
    assert set(new) == {"dev-c"}
    with pytest.raises(BrokerConnectError):
        fresh_broker.client("dev-c")  # not loaded yet
    fresh_broker.reload()  # SIGHUP: mosquitto re-reads passwd and acl
    with fresh_broker.client("dev-c") as dev_c, fresh_broker.server_client() as server:
        assert server.subscribe("$share/linli/linli/v1/dev/+/up/#").value == 1
        assert dev_c.publish("linli/v1/dev/dev-c/up/events", b"hi").value == 0
        assert server.expect_message().topic == "linli/v1/dev/dev-c/up/events"
    with fresh_broker.client("dev-a", old_password) as dev_a:
        assert dev_a.connected


def _linli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "linli", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=60,
    )


def test_cli_writes_the_site_and_prints_new_credentials_once(tmp_path: Path) -> None:
    site = tmp_path / "site"
    done = _linli("provision", "broker", "--site", str(site), "--device", "k1",
                  "--device", "k2", "--host", "broker.local", "--plain-port", "1884")  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert set(out["credentials"]) == {"k1", "k2", "linli-server"}
    assert out["credentials"]["k1"]["client_id"] == "k1"
    for name in ("ca.crt", "ca.key", "server.crt", "server.key", "passwd", "acl", "mosquitto.conf"):
        assert (site / name).is_file(), name
    assert "listener 1884 127.0.0.1" in (site / "mosquitto.conf").read_text()
    for cred in out["credentials"].values():
        assert cred["password"] not in done.stderr

    again = _linli("provision", "broker", "--site", str(site), "--device", "k1")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["credentials"] == {}


def test_cli_bad_device_id_exits_non_zero_with_a_message(tmp_path: Path) -> None:
    done = _linli("provision", "broker", "--site", str(tmp_path / "s"), "--device", "a/b")
    assert done.returncode != 0
    assert "device id 'a/b' is not valid" in done.stderr
    assert done.stdout == ""


def test_missing_mosquitto_tools_raise_errors_naming_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hardware_sim.mosquitto as sim_mosquitto
    import provisioning.broker as broker_module
    from device.errors import DeviceUnavailableError
    from provisioning.broker import MosquittoToolMissingError

    monkeypatch.setattr(broker_module.shutil, "which", lambda _name: None)
    monkeypatch.setattr(broker_module, "MOSQUITTO_PASSWD", str(tmp_path / "none"))
    monkeypatch.setattr(sim_mosquitto, "MOSQUITTO", str(tmp_path / "none"))
    with pytest.raises(MosquittoToolMissingError, match="apt-get install mosquitto"):
        provision_broker(tmp_path / "site", ["k1"])
    with pytest.raises(DeviceUnavailableError, match="apt-get install mosquitto mosquitto-clients"):
        sim_mosquitto.mosquitto_path()
