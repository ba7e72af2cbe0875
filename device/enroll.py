"""First-boot enrollment: the device makes its own key, proves it holds it, gets a certificate.

``linli sync enroll --config FILE`` (run once by ``linli-enroll.service``, docs/provisioning.md):

1. read the one-time token the bundle put in ``[enroll] token_file``;
2. make the Ed25519 identity key in ``[enroll] key_file`` (0600) — or reuse the one a previous,
   interrupted attempt made — and a CSR for it with the device id as common name;
3. ``POST {url}/api/enroll``; the server spends the token and answers with the certificate, its
   CA chain and the broker password sealed under the token (:func:`seal_for_enrollment`);
4. check the answer (the certificate is for this key and this device, issued by the chain's first
   certificate, and the chain ends at the site CA this device already trusts for the broker),
   open the password with the token, write it to ``[sync] password_file`` (0600) and the
   certificate to ``[enroll] cert_file``, then delete the token.

Retrying after a lost answer is safe: the server answers the same key again. The private key
never leaves the device; nothing secret is logged.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import NameOID

from device.atrest import AtRestError, DeviceKey
from device.config import DeviceConfig
from device.credential import CredentialKeyError, load_signing_key
from device.errors import LinliError

__all__ = [
    "EnrollError",
    "EnrollResult",
    "enroll",
    "make_csr",
    "open_enrollment",
    "seal_for_enrollment",
]

log = logging.getLogger(__name__)

_SEAL_INFO: Final = b"linli enrollment broker password v1"


class EnrollError(LinliError):
    """Enrollment did not complete; the message says what to do. ``reason`` is a stable code."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class EnrollResult:
    """What enrollment left on the device."""

    device_id: str
    key_id: str
    cert_file: Path
    serial: str
    already: bool
    """The device was enrolled before this run (nothing was sent)."""


def _token_key(token: str, device_id: str) -> DeviceKey:
    raw = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=device_id.encode("utf-8"), info=_SEAL_INFO
    ).derive(token.encode("utf-8"))
    return DeviceKey(raw)


def seal_for_enrollment(token: str, device_id: str, secret: str) -> str:
    """The broker password sealed under a key derived from the token (AES-GCM, base64): kept by
    the server, opened only by whoever holds the token."""
    blob = _token_key(token, device_id).seal(secret.encode("utf-8"), device_id.encode("utf-8"))
    return base64.b64encode(blob).decode("ascii")


def open_enrollment(token: str, device_id: str, wrapped: str) -> str:
    """The inverse of :func:`seal_for_enrollment`."""
    try:
        blob = base64.b64decode(wrapped, validate=True)
        return _token_key(token, device_id).open(blob, device_id.encode("utf-8")).decode("utf-8")
    except (ValueError, AtRestError) as err:
        raise EnrollError(
            "the server's sealed broker password does not open with this token", "bad-answer"
        ) from err


def make_csr(key: Ed25519PrivateKey, device_id: str) -> str:
    """A PEM PKCS#10 request for ``key`` with the device id as common name."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
        .sign(key, None)
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, 0600 from the first byte (parent made 0700)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _identity_key(path: Path) -> Ed25519PrivateKey:
    if path.exists():
        try:
            return load_signing_key(path, "device").private
        except CredentialKeyError as err:
            raise EnrollError(f"{err}; remove it to make a new key", "bad-key") from err
    key = Ed25519PrivateKey.generate()
    write_private(
        path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    log.info("made the device identity key %s", path)
    return key


def _same_key(cert: x509.Certificate, key: Ed25519PrivateKey) -> bool:
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    return bool(cert.public_key().public_bytes(*raw) == key.public_key().public_bytes(*raw))


def _already(config: DeviceConfig, key_path: Path, cert_path: Path) -> EnrollResult | None:
    if not (cert_path.exists() and key_path.exists()):
        return None
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = load_signing_key(key_path, "device").private
    except (ValueError, CredentialKeyError):
        return None
    if not _same_key(cert, key):
        return None
    kid = _kid_of(cert)
    return EnrollResult(
        config.device.id, kid, cert_path, format(cert.serial_number, "x"), already=True
    )


def _kid_of(cert: x509.Certificate) -> str:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ""
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith("urn:linli:key:"):
            return uri.removeprefix("urn:linli:key:")
    return ""


def _post(config: DeviceConfig, body: dict[str, str]) -> dict[str, Any]:
    section = config.enroll
    verify: Any = section.ca_file or True
    url = section.url.rstrip("/") + "/api/enroll"
    try:
        with httpx.Client(timeout=section.timeout_s, verify=verify) as client:
            response = client.post(url, json=body)
    except httpx.HTTPError as err:
        raise EnrollError(
            f"cannot reach {section.url} ({type(err).__name__}); check the network and "
            "[enroll] url, then run again (the token is not spent)",
            "unreachable",
        ) from err
    try:
        answer: Any = response.json()
    except ValueError:
        answer = None
    if response.status_code != 200:
        detail = answer.get("detail") if isinstance(answer, dict) else None
        reason = {403: "token-unknown", 409: "token-used", 410: "token-expired"}.get(
            response.status_code, "refused"
        )
        raise EnrollError(
            f"the server refused enrollment (HTTP {response.status_code}: {detail}); "
            "ask the technician for a new token (linli provision device rotate)",
            reason,
        )
    if not isinstance(answer, dict):
        raise EnrollError("the server's answer is not a JSON object", "bad-answer")
    return answer


def _check_answer(
    config: DeviceConfig, key: Ed25519PrivateKey, answer: dict[str, Any]
) -> tuple[x509.Certificate, str]:
    device_id = config.device.id
    try:
        cert = x509.load_pem_x509_certificate(str(answer["certificate"]).encode("ascii"))
        chain = x509.load_pem_x509_certificates(str(answer["chain"]).encode("ascii"))
        kid = str(answer["key_id"])
    except (KeyError, ValueError, UnicodeEncodeError) as err:
        raise EnrollError("the server's answer lacks a readable certificate", "bad-answer") from err
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not _same_key(cert, key) or [n.value for n in names] != [device_id]:
        raise EnrollError("the certificate is not for this device's key", "bad-answer")
    try:
        cert.verify_directly_issued_by(chain[0])
        for lower, upper in itertools.pairwise(chain):
            lower.verify_directly_issued_by(upper)
    except (IndexError, ValueError, TypeError, InvalidSignature) as err:
        raise EnrollError("the certificate chain does not verify", "bad-answer") from err
    site_ca = Path(config.sync.ca_file)
    if site_ca.is_file():
        trusted = x509.load_pem_x509_certificate(site_ca.read_bytes())
        if chain[-1] != trusted:
            raise EnrollError(
                f"the answer's chain does not end at the site CA {site_ca}: wrong server?",
                "bad-answer",
            )
    if _kid_of(cert) != kid:
        raise EnrollError(
            "the certificate does not name the key id it was issued for", "bad-answer"
        )
    return cert, kid


def enroll(config: DeviceConfig) -> EnrollResult:
    """Enroll this device (see the module docstring); a no-op when already enrolled."""
    section = config.enroll
    key_path, cert_path = Path(section.key_file), Path(section.cert_file)
    done = _already(config, key_path, cert_path)
    if done is not None:
        return done
    if not section.url:
        raise EnrollError(
            "[enroll] url is not set: this device was provisioned with a pre-generated bundle",
            "not-configured",
        )
    if not config.sync.password_file:
        raise EnrollError("[sync] password_file must name where the password goes", "config")
    token_path = Path(section.token_file)
    try:
        token = token_path.read_text(encoding="utf-8").strip()
    except OSError as err:
        raise EnrollError(
            f"{token_path}: cannot read the enrollment token ({err.strerror})", "no-token"
        ) from err
    key = _identity_key(key_path)
    body = {"device": config.device.id, "token": token, "csr": make_csr(key, config.device.id)}
    answer = _post(config, body)
    cert, kid = _check_answer(config, key, answer)
    password = open_enrollment(token, config.device.id, str(answer.get("wrapped_password", "")))
    write_private(Path(config.sync.password_file), password.encode("utf-8"))
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    with contextlib.suppress(FileNotFoundError):
        token_path.unlink()
    serial = format(cert.serial_number, "x")
    log.info("enrolled as %s (key %s, certificate %s)", config.device.id, kid, serial)
    return EnrollResult(config.device.id, kid, cert_path, serial, already=False)
