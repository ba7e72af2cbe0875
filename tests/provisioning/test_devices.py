"""`device add / rotate / revoke` and `list` against the site's real server database (SQLite),
its real broker files (hashed by the real mosquitto_passwd) and its real enrollment CA."""

from __future__ import annotations

import math
import stat
import time
import tomllib
from pathlib import Path

import pytest
from cryptography import x509
from sqlalchemy import select

from device.config import load_config, parse_config
from device.credential import (
    CredentialClaims,
    RevokedCredentialError,
    issue,
    load_signing_key,
    load_verify_key,
    verify,
)
from provisioning.broker import read_accounts
from provisioning.devices import (
    DeviceRequest,
    add_device,
    install_bundle,
    list_devices,
    revoke_device,
    rotate_device,
)
from provisioning.site import Site, SiteError
from sync_server import registry
from sync_server.credentials import issue_credential
from sync_server.documents.history import snapshot
from sync_server.domain_models import AuditEntry, ServicePoint
from sync_server.enrollment import key_uri


def locker(device_id: str = "locker-01", **kw: object) -> DeviceRequest:
    return DeviceRequest(
        device_id=device_id,
        kind="locker",
        area_id="g1",
        name="幸福社区1号柜",
        **kw,  # type: ignore[arg-type]
    )


def kiosk(device_id: str = "kiosk-01", **kw: object) -> DeviceRequest:
    return DeviceRequest(
        device_id=device_id,
        kind="kiosk",
        area_id="c1",
        name="社区服务中心一体机",
        **kw,  # type: ignore[arg-type]
    )


def rootfs(result_dir: Path, device_path: str) -> Path:
    return result_dir / "rootfs" / device_path.lstrip("/")


def files_of(bundle: Path) -> dict[str, bytes]:
    return {str(p.relative_to(bundle)): p.read_bytes() for p in bundle.rglob("*") if p.is_file()}


def test_bundle_mode_writes_a_complete_valid_bundle(site: Site) -> None:
    result = add_device(site, kiosk(mode="bundle"))
    assert result.generation == 1 and result.key_id == "kiosk-01-g1"
    install = site.settings.devices.install_dir
    config_path = rootfs(result.bundle_dir, f"{install}/device.toml")
    raw = tomllib.loads(config_path.read_text(encoding="utf-8"))
    config = parse_config(raw)  # the device's own schema accepts it
    assert config.device.id == "kiosk-01" and config.device.kind == "kiosk"
    assert config.kiosk.community_id == "c1"
    assert config.certificate.key_id == "kiosk-01-g1"
    assert config.sync.port == site.settings.broker.tls_port and config.enroll.url == ""
    # key + certificate: the certificate is the enrollment CA's, for this key and key id
    key = load_signing_key(rootfs(result.bundle_dir, config.enroll.key_file), "kiosk-01-g1")
    cert = x509.load_pem_x509_certificate(
        rootfs(result.bundle_dir, config.enroll.cert_file).read_bytes()
    )
    cert.verify_directly_issued_by(site.enrollment_ca().cert)
    assert cert.public_key() == key.private.public_key()
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert key_uri("kiosk-01-g1") in san.get_values_for_type(x509.UniformResourceIdentifier)
    # server public keys and the site CA are there, the password is the broker's account
    server_key = rootfs(result.bundle_dir, f"{install}/keys/server/{site.settings.signing_kid}.pem")
    assert load_verify_key(server_key, site.settings.signing_kid)
    assert rootfs(result.bundle_dir, config.sync.ca_file).read_bytes() == (
        site.files.ca_cert.read_bytes()
    )
    assert read_accounts(site.root)["kiosk-01"] == "device"
    # registered on the server: enrolled, and its key verifies the certificates it prints
    engine = site.engine()
    with engine.connect() as conn:
        ident = registry.identity(conn, "kiosk-01")
        keys = registry.active_device_keys(conn)
    assert ident is not None and ident.state == "enrolled" and ident.mode == "bundle"
    assert ident.cert_serial == format(cert.serial_number, "x")
    assert keys["kiosk-01-g1"].public == key.private.public_key()


def test_secrets_are_0600_and_the_bundle_dir_0700(site: Site) -> None:
    result = add_device(site, locker(mode="bundle"))
    assert stat.S_IMODE(result.bundle_dir.stat().st_mode) == 0o700
    secret = [f for f in result.files if f.secret]
    assert {Path(f.path).name for f in secret} >= {"device-ed25519.pem", "broker-password"}
    for f in result.files:
        mode = stat.S_IMODE(rootfs(result.bundle_dir, f.path).stat().st_mode)
        assert mode == (0o600 if f.secret else mode), f.path
        if f.secret:
            assert mode == 0o600, f.path
        assert not (mode & 0o022), f"{f.path} is writable by group or others"
    for name in ("ca.key", "enroll-ca.key", "passwd", "server-broker-password"):
        assert stat.S_IMODE((site.root / name).stat().st_mode) == 0o600, name
    assert (
        stat.S_IMODE((site.root / "signing" / f"{site.settings.signing_kid}.pem").stat().st_mode)
        == 0o600
    )
    assert stat.S_IMODE(site.root.stat().st_mode) == 0o700


@pytest.mark.parametrize("mode", ["bundle", "enroll"])
def test_a_bundle_never_holds_another_devices_secrets(site: Site, mode: str) -> None:
    a = add_device(site, locker("locker-a", mode=mode))
    b = add_device(site, locker("locker-b", mode=mode))
    secrets_b = [f.content.strip() for f in b.files if f.secret]
    assert secrets_b
    for path, content in files_of(a.bundle_dir).items():
        for secret in secrets_b:
            assert secret not in content, f"{path} of locker-a holds a secret of locker-b"
    # ...nor the site's own secrets
    site_secrets = [
        (site.root / name).read_bytes().strip()
        for name in ("ca.key", "enroll-ca.key", "server-broker-password")
    ] + [(site.root / "signing" / f"{site.settings.signing_kid}.pem").read_bytes().strip()]
    for bundle in (a, b):
        for path, content in files_of(bundle.bundle_dir).items():
            for secret in site_secrets:
                assert secret not in content, f"{path} holds a site secret"


def test_enroll_mode_ships_a_token_not_a_key_or_password(site: Site) -> None:
    result = add_device(site, locker(mode="enroll"))
    names = {Path(f.path).name for f in result.files}
    assert "enroll-token" in names
    assert not names & {"device-ed25519.pem", "device.crt", "broker-password"}
    assert result.token_expires is not None
    assert result.token_expires == pytest.approx(time.time() + 72 * 3600, abs=60)
    with site.engine().connect() as conn:
        ident = registry.identity(conn, "locker-01")
    assert ident is not None and ident.state == "pending" and ident.mode == "enroll"


def test_refusals_name_the_problem(site: Site) -> None:
    add_device(site, locker())
    with pytest.raises(SiteError, match="already provisioned"):
        add_device(site, locker())
    with pytest.raises(registry.RegistryError, match="area 'nowhere'"):
        add_device(site, DeviceRequest(device_id="x1", kind="locker", area_id="nowhere", name="x"))
    with pytest.raises(registry.RegistryError, match="registered as a locker"):
        add_device(site, kiosk("locker-01"))
    with pytest.raises(SiteError, match="never provisioned"):
        rotate_device(site, locker("ghost"))
    with pytest.raises(SiteError, match=r"locks\.backend"):
        add_device(site, locker("locker-02", template={"locks": {"backend": "teleport"}}))
    with pytest.raises(registry.RegistryError, match="no identity"):
        revoke_device(site, "ghost")


def test_a_config_template_is_merged_under_provisionings_keys(site: Site) -> None:
    template = {
        "locks": {"backend": "rs485", "port": "/dev/linli-locks", "boards": [1, 2]},
        "device": {"id": "forged", "kind": "locker"},
        "sync": {"host": "evil.example"},
    }
    result = add_device(site, locker(template=template))
    install = site.settings.devices.install_dir
    config = parse_config(
        tomllib.loads(rootfs(result.bundle_dir, f"{install}/device.toml").read_text("utf-8"))
    )
    assert config.locks.backend == "rs485" and config.locks.boards == [1, 2]
    assert config.device.id == "locker-01" and config.sync.host == "localhost"


def test_rotate_makes_a_new_identity_and_retires_the_old_key(site: Site) -> None:
    first = add_device(site, kiosk(mode="bundle"))
    old_password = rootfs(first.bundle_dir, f"{site.settings.devices.install_dir}/broker-password")
    old = old_password.read_bytes()
    old_hash = (site.root / "passwd").read_text()
    second = rotate_device(site, kiosk(mode="bundle"))
    assert second.generation == 2 and second.key_id == "kiosk-01-g2"
    new = rootfs(second.bundle_dir, f"{site.settings.devices.install_dir}/broker-password")
    assert new.read_bytes() != old
    assert (site.root / "passwd").read_text() != old_hash
    with site.engine().connect() as conn:
        keys = registry.active_device_keys(conn)
    # the old key still verifies what the kiosk printed before; the new one is registered
    assert {"kiosk-01-g1", "kiosk-01-g2"} <= set(keys)


def test_revoke_takes_the_device_out_everywhere(site: Site) -> None:
    add_device(site, locker(mode="bundle"))
    engine = site.engine()
    now = time.time()
    signing = load_signing_key(
        site.root / "signing" / f"{site.settings.signing_kid}.pem", site.settings.signing_kid
    )
    with engine.begin() as conn:
        issued = issue_credential(
            conn, signing, now, kind="collect", device_id="locker-01", case_id="C1",
            compartment=3, valid_s=3600,
        )  # fmt: skip
    result = revoke_device(site, "locker-01", reason="stolen")
    assert result.summary.credentials == 1 and not result.summary.already
    assert result.broker_account_removed and "locker-01" not in read_accounts(site.root)
    assert "locker-01:" not in (site.root / "passwd").read_text()
    with engine.connect() as conn:
        ident = registry.identity(conn, "locker-01")
        point = conn.execute(
            select(ServicePoint.revoked_at).where(ServicePoint.device_id == "locker-01")
        ).scalar()
        audit = conn.execute(
            select(AuditEntry.detail).where(AuditEntry.action == "device.revoked")
        ).scalar()
    revoked_items = snapshot(engine, "revocations").items
    assert ident is not None and ident.state == "revoked" and point is not None
    assert audit is not None and audit["reason"] == "stolen" and audit["credentials"] == 1
    assert issued.cti in revoked_items
    # the locker's own check refuses it once the document reached it
    with pytest.raises(RevokedCredentialError):
        verify(issued.text, {signing.kid: signing.verify_key}, audience="locker-01",
               now=now, revoked=set(revoked_items))  # fmt: skip
    # the certificate is on the CRL signed by the enrollment CA
    crl = x509.load_pem_x509_crl(result.crl.read_bytes())
    assert crl.is_signature_valid(site.enrollment_ca().cert.public_key())  # type: ignore[arg-type]
    assert crl.get_revoked_certificate_by_serial_number(int(ident.cert_serial or "0", 16))
    assert not (site.bundles_dir / "locker-01").exists()
    # again: nothing new, reported as already done
    assert revoke_device(site, "locker-01").summary.already


def test_compromised_revokes_the_key_so_its_signatures_stop_verifying(site: Site) -> None:
    add_device(site, kiosk(mode="bundle"))
    revoke_device(site, "kiosk-01")
    with site.engine().connect() as conn:
        assert "kiosk-01-g1" in registry.active_device_keys(conn)  # retired: old prints stay
    revoke_device(site, "kiosk-01", compromised=True)
    with site.engine().connect() as conn:
        assert "kiosk-01-g1" not in registry.active_device_keys(conn)


def test_rotate_reinstates_a_revoked_device(site: Site) -> None:
    add_device(site, locker(mode="bundle"))
    revoke_device(site, "locker-01")
    result = rotate_device(site, locker(mode="enroll"))
    assert result.generation == 2
    rows = {d.row.device_id: d for d in list_devices(site)}
    assert rows["locker-01"].row.state == "pending" and rows["locker-01"].broker_account
    with site.engine().connect() as conn:
        point = conn.execute(
            select(ServicePoint.revoked_at).where(ServicePoint.device_id == "locker-01")
        ).scalar()
    assert point is None


def test_list_shows_every_state(site: Site) -> None:
    add_device(site, locker("l-pending"))
    add_device(site, locker("l-enrolled", mode="bundle"))
    add_device(site, locker("l-revoked", mode="bundle"))
    revoke_device(site, "l-revoked")
    rows = {d.row.device_id: d for d in list_devices(site)}
    assert {k: (v.row.state, v.broker_account) for k, v in rows.items()} == {
        "l-pending": ("pending", True),
        "l-enrolled": ("enrolled", True),
        "l-revoked": ("revoked", False),
    }
    assert rows["l-pending"].row.token_expires is not None
    assert rows["l-enrolled"].row.token_expires is None
    assert all(not d.row.online and d.row.last_contact is None for d in rows.values())


def test_install_bundle_puts_files_where_the_config_says(site: Site, tmp_path: Path) -> None:
    result = add_device(site, locker(mode="bundle"))
    install = site.settings.devices.install_dir
    written = install_bundle(result.bundle_dir, under=install)
    config = load_config(Path(install) / "device.toml")
    assert Path(config.sync.password_file) in written
    assert stat.S_IMODE(Path(config.sync.password_file).stat().st_mode) == 0o600
    assert all(str(p).startswith(install) for p in written)
    assert math.isfinite(Path(config.enroll.cert_file).stat().st_mtime)


def test_the_certificate_page_trusts_a_kiosks_registered_key_until_compromised(site: Site) -> None:
    from sync_server.web.context import WebContext
    from sync_server.web.verify import check_certificate

    result = add_device(site, kiosk(mode="bundle"))
    config = parse_config(
        tomllib.loads(
            rootfs(result.bundle_dir, f"{site.settings.devices.install_dir}/device.toml").read_text(
                "utf-8"
            )
        )
    )
    key = load_signing_key(rootfs(result.bundle_dir, config.certificate.signing_key), "kiosk-01-g1")
    now = time.time()
    text = issue(
        CredentialClaims(
            kind="certificate", sub="JZ-2026-000123", nbf=int(now) - 60, exp=int(now) + 90 * 86400,
            iss="kiosk-01", digest=bytes(16), template="residence",
        ),
        key,
    )  # fmt: skip
    server_key = load_signing_key(
        site.root / "signing" / f"{site.settings.signing_kid}.pem", site.settings.signing_kid
    )
    context = WebContext(engine=site.engine(), signing_key=server_key, send_command=lambda *a: None)
    # no verify_keys configured: the page found the kiosk's key in the registry
    assert check_certificate(context, text).valid
    revoke_device(site, "kiosk-01")  # retired: what it printed stays genuine
    assert check_certificate(context, text).valid
    revoke_device(site, "kiosk-01", compromised=True)
    check = check_certificate(context, text)
    assert not check.valid and check.reason != "valid"
