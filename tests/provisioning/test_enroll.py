"""First-boot enrollment: the device's own code (`device.enroll`) against the server's real web app
served by uvicorn on a local port, with the site's real enrollment CA and database."""

from __future__ import annotations

import datetime as dt
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from device.config import DeviceConfig, load_config
from device.credential import load_signing_key
from device.enroll import EnrollError, enroll, make_csr
from hardware_sim.processes import free_tcp_port, reserved_tcp_port
from provisioning.devices import AddResult, DeviceRequest, add_device, install_bundle
from provisioning.site import Site
from sync_server import registry
from sync_server.domain_models import AuditEntry
from sync_server.web.app import create_app
from sync_server.web.context import WebContext
from tests.provisioning.conftest import wait_for


@dataclass
class EnrollServer:
    url: str
    clock_offset: list[float]

    def advance(self, seconds: float) -> None:
        self.clock_offset[0] += seconds


@pytest.fixture
def server(site: Site) -> Iterator[EnrollServer]:
    offset = [0.0]
    context = WebContext(
        engine=site.engine(),
        signing_key=load_signing_key(
            site.root / "signing" / f"{site.settings.signing_kid}.pem", site.settings.signing_kid
        ),
        send_command=lambda *_a: None,
        clock=lambda: time.time() + offset[0],
        site_name=site.settings.name,
        extra={"enrollment_ca": site.enrollment_ca()},
    )
    port = reserved_tcp_port()
    uv = uvicorn.Server(
        uvicorn.Config(create_app(context), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    wait_for(lambda: uv.started, "uvicorn to start")
    try:
        yield EnrollServer(f"http://127.0.0.1:{port}", offset)
    finally:
        uv.should_exit = True
        thread.join(timeout=10)


def provision(
    site: Site, server: EnrollServer, device_id: str = "locker-01"
) -> tuple[AddResult, DeviceConfig]:
    """`device add --mode enroll`, the bundle's files installed, [enroll] url = this server."""
    result = add_device(
        site, DeviceRequest(device_id=device_id, kind="locker", area_id="g1", name="1号柜")
    )
    install_bundle(result.bundle_dir, under=site.settings.devices.install_dir)
    path = Path(site.settings.devices.install_dir) / "device.toml"
    config = load_config(path)
    config = config.model_copy(
        update={"enroll": config.enroll.model_copy(update={"url": server.url})}
    )
    return result, config


def token_of(config: DeviceConfig) -> str:
    return Path(config.enroll.token_file).read_text(encoding="utf-8").strip()


def refusals(site: Site) -> list[str]:
    with site.engine().connect() as conn:
        rows = conn.execute(
            select(AuditEntry.detail).where(AuditEntry.action == "device.enroll-refused")
        ).scalars()
        return [row["reason"] for row in rows]


def test_enrollment_writes_key_certificate_and_password(site: Site, server: EnrollServer) -> None:
    _, config = provision(site, server)
    token_path = Path(config.enroll.token_file)
    assert token_path.exists() and not Path(config.enroll.key_file).exists()
    result = enroll(config)
    assert not result.already and result.key_id == "locker-01-g1"
    # the key was made here, 0600; the certificate certifies it; the token is gone
    key = load_signing_key(config.enroll.key_file, result.key_id)
    cert = x509.load_pem_x509_certificate(Path(config.enroll.cert_file).read_bytes())
    assert cert.public_key() == key.private.public_key()
    cert.verify_directly_issued_by(site.enrollment_ca().cert)
    for secret in (config.enroll.key_file, config.sync.password_file):
        assert stat.S_IMODE(Path(secret).stat().st_mode) == 0o600, secret
    assert not token_path.exists()
    # (that it is the broker account's password is shown by test_e2e: the device connects)
    password = Path(config.sync.password_file).read_text(encoding="utf-8")
    assert len(password) >= 24
    with site.engine().connect() as conn:
        ident = registry.identity(conn, "locker-01")
        keys = registry.active_device_keys(conn)
    assert ident is not None and ident.state == "enrolled" and ident.mode == "enroll"
    assert keys["locker-01-g1"].public == key.private.public_key()
    # a second run sees it is done and sends nothing
    assert enroll(config).already


def test_a_stolen_token_is_refused_once_spent(site: Site, server: EnrollServer) -> None:
    _, config = provision(site, server)
    token = token_of(config)
    enroll(config)
    thief = Ed25519PrivateKey.generate()
    answer = httpx.post(
        server.url + "/api/enroll",
        json={"device": "locker-01", "token": token, "csr": make_csr(thief, "locker-01")},
    )
    assert answer.status_code == 409 and "已被使用" in answer.json()["detail"]
    assert refusals(site) == ["token-used"]


def test_the_device_learns_its_token_was_stolen(site: Site, server: EnrollServer) -> None:
    _, config = provision(site, server)
    thief = Ed25519PrivateKey.generate()
    stolen = httpx.post(
        server.url + "/api/enroll",
        json={
            "device": "locker-01",
            "token": token_of(config),
            "csr": make_csr(thief, "locker-01"),
        },
    )
    assert stolen.status_code == 200  # the thief was first...
    with pytest.raises(EnrollError) as err:  # ...so the real device cannot enroll: visible
        enroll(config)
    assert err.value.reason == "token-used" and "new token" in str(err.value)


def test_a_late_token_is_refused(site: Site, server: EnrollServer) -> None:
    _, config = provision(site, server)
    server.advance(72 * 3600 + 1)
    with pytest.raises(EnrollError) as err:
        enroll(config)
    assert err.value.reason == "token-expired"
    assert Path(config.enroll.token_file).exists()  # nothing spent, nothing written
    assert not Path(config.enroll.cert_file).exists()
    assert refusals(site) == ["token-expired"]


def test_a_retry_after_a_lost_answer_gets_the_same_certificate(
    site: Site, server: EnrollServer
) -> None:
    _, config = provision(site, server)
    token = token_of(config)
    key = Ed25519PrivateKey.generate()
    body = {"device": "locker-01", "token": token, "csr": make_csr(key, "locker-01")}
    first = httpx.post(server.url + "/api/enroll", json=body)
    again = httpx.post(server.url + "/api/enroll", json=body)
    assert first.status_code == again.status_code == 200
    assert first.json()["certificate"] == again.json()["certificate"]


def test_a_token_for_another_device_or_a_wrong_token_is_refused(
    site: Site, server: EnrollServer
) -> None:
    _, config_a = provision(site, server, "locker-a")
    key = Ed25519PrivateKey.generate()
    for device, token in (("locker-b", token_of(config_a)), ("locker-a", "x" * 32)):
        answer = httpx.post(
            server.url + "/api/enroll",
            json={"device": device, "token": token, "csr": make_csr(key, device)},
        )
        assert answer.status_code == 403, answer.text
    assert refusals(site) == ["token-unknown", "token-unknown"]


def _csr(key: object, cn: str) -> str:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    )
    algorithm = None if isinstance(key, Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM).decode()  # type: ignore[arg-type]


def _forged() -> str:
    """A CSR for key A whose signature was made by key B (someone without A's private key)."""
    a, b = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    real = x509.load_pem_x509_csr(_csr(a, "locker-01").encode())
    other = x509.load_pem_x509_csr(_csr(b, "locker-01").encode())
    der = real.public_bytes(serialization.Encoding.DER)
    forged = der.replace(real.signature, other.signature)
    return x509.load_der_x509_csr(forged).public_bytes(serialization.Encoding.PEM).decode()


@pytest.mark.parametrize(
    ("csr", "problem"),
    [
        (lambda: "not a csr at all" * 8, "not a PEM"),
        (lambda: _csr(Ed25519PrivateKey.generate(), "locker-99"), "common name"),
        (
            lambda: _csr(
                rsa.generate_private_key(public_exponent=65537, key_size=2048), "locker-01"
            ),
            "not Ed25519",
        ),
        (_forged, "does not verify"),
    ],
    ids=["garbage", "other-device", "rsa-key", "forged-signature"],
)
def test_bad_csrs_are_refused_and_the_token_is_kept(
    site: Site, server: EnrollServer, csr: object, problem: str
) -> None:
    _, config = provision(site, server)
    answer = httpx.post(
        server.url + "/api/enroll",
        json={"device": "locker-01", "token": token_of(config), "csr": csr()},  # type: ignore[operator]
    )
    assert answer.status_code == 400 and problem in answer.json()["detail"]
    assert refusals(site) == ["bad-csr"]
    assert not enroll(config).already  # the real device still enrolls with the same token


def test_a_server_with_another_site_ca_is_not_trusted(
    site: Site, server: EnrollServer, tmp_path: Path
) -> None:
    _, config = provision(site, server)
    other = tmp_path / "other-ca.crt"
    key = Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "someone else")])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(dt.datetime(2020, 1, 1))
        .not_valid_after(dt.datetime(2040, 1, 1))
        .sign(key, None)
    )  # fmt: skip
    other.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    config = config.model_copy(
        update={"sync": config.sync.model_copy(update={"ca_file": str(other)})}
    )
    with pytest.raises(EnrollError, match="wrong server"):
        enroll(config)
    assert not Path(config.sync.password_file).exists()


def test_enrollment_is_off_without_an_enrollment_ca(site: Site) -> None:
    from fastapi.testclient import TestClient

    context = WebContext(
        engine=site.engine(),
        signing_key=load_signing_key(
            site.root / "signing" / f"{site.settings.signing_kid}.pem", site.settings.signing_kid
        ),
        send_command=lambda *_a: None,
    )
    key = Ed25519PrivateKey.generate()
    with TestClient(create_app(context)) as client:
        answer = client.post(
            "/api/enroll",
            json={"device": "locker-01", "token": "t" * 32, "csr": make_csr(key, "locker-01")},
        )
    assert answer.status_code == 503


def test_unreachable_server_keeps_the_token(site: Site, server: EnrollServer) -> None:
    _, config = provision(site, server)
    config = config.model_copy(
        update={
            "enroll": config.enroll.model_copy(
                update={"url": f"http://127.0.0.1:{free_tcp_port()}", "timeout_s": 2}
            )
        }
    )
    with pytest.raises(EnrollError) as err:
        enroll(config)
    assert err.value.reason == "unreachable" and Path(config.enroll.token_file).exists()
