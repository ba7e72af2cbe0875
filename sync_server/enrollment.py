"""The site's enrollment CA: X.509 certificates for device keys, checked CSRs and the CRL.

A device's identity is an Ed25519 key pair; the enrollment CA (an intermediate of the site CA,
kept by the server, docs/provisioning.md) certifies it. Two ways lead there:

- pre-generated bundle: ``linli provision device add --bundle`` makes the key on the
  technician's machine and calls :meth:`EnrollmentCA.certify` directly;
- enrollment: the device makes its key on first boot and sends a certificate signing request
  with a one-time token; the server checks it with :func:`check_csr` and certifies it.

The certificate says which device (``CN``), which kind (``OU``) and which site (``O``); the
device's key id (``key_id``, the ``kid`` its signatures carry) is in a URI SAN
``urn:linli:key:KID`` so the certificate alone tells a verifier which key id it vouches for.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sync_server.errors import ServerError

__all__ = [
    "DEVICE_CERT_DAYS",
    "CsrError",
    "EnrollmentCA",
    "EnrollmentCAError",
    "check_csr",
    "key_fingerprint",
    "key_uri",
]

DEVICE_CERT_DAYS: Final = 1825
"""Five years: a locker lives in a stairwell for years; ``rotate`` renews it earlier."""
KEY_URI_PREFIX: Final = "urn:linli:key:"
MAX_CSR_BYTES: Final = 4096


class EnrollmentCAError(ServerError, ValueError):
    """The enrollment CA's files are missing or do not belong together."""


class CsrError(ServerError, ValueError):
    """A certificate signing request is malformed, badly signed or names another device."""


def key_fingerprint(public: Ed25519PublicKey) -> str:
    """SHA-256 of the raw 32-byte public key, hex: how records name a key without storing it."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def key_uri(kid: str) -> str:
    """The SAN that binds a certificate to the key id the device signs with."""
    return KEY_URI_PREFIX + kid


def check_csr(pem: str | bytes, device_id: str) -> Ed25519PublicKey:
    """The CSR's Ed25519 public key, if the CSR is well formed, self-signed by that key (proof
    the requester holds the private key) and names ``device_id`` as its common name."""
    data = pem.encode("ascii", "replace") if isinstance(pem, str) else pem
    if len(data) > MAX_CSR_BYTES:
        raise CsrError(f"the CSR is {len(data)} bytes; at most {MAX_CSR_BYTES} are accepted")
    try:
        csr = x509.load_pem_x509_csr(data)
    except (ValueError, UnsupportedAlgorithm) as err:
        raise CsrError("not a PEM certificate signing request") from err
    try:
        public = csr.public_key()
    except (ValueError, UnsupportedAlgorithm) as err:
        raise CsrError("the CSR's public key cannot be read") from err
    if not isinstance(public, Ed25519PublicKey):
        raise CsrError("the CSR's key is not Ed25519; devices enroll Ed25519 keys only")
    try:
        valid = csr.is_signature_valid
    except (InvalidSignature, UnsupportedAlgorithm, ValueError):
        valid = False
    if not valid:
        raise CsrError("the CSR's signature does not verify with its own key")
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1 or names[0].value != device_id:
        raise CsrError(f"the CSR's common name must be the device id {device_id!r}")
    return public


@dataclass(frozen=True)
class EnrollmentCA:
    """The intermediate CA that certifies device keys (EC P-256, signed by the site CA)."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    chain: tuple[x509.Certificate, ...] = ()
    """Issuers above ``cert`` (the site CA), for the chain handed to devices."""

    def __repr__(self) -> str:
        return f"EnrollmentCA(subject={self.cert.subject.rfc4514_string()!r})"

    @classmethod
    def load(cls, cert_path: Path, key_path: Path, chain: Iterable[Path] = ()) -> EnrollmentCA:
        """Read the CA certificate and key (PEM); refuse a key that does not match."""
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            above = tuple(x509.load_pem_x509_certificate(p.read_bytes()) for p in chain)
        except OSError as err:
            raise EnrollmentCAError(f"{err.filename}: cannot read ({err.strerror})") from err
        except (ValueError, TypeError, UnsupportedAlgorithm) as err:
            raise EnrollmentCAError(f"{cert_path} / {key_path}: not PEM certificate/key") from err
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise EnrollmentCAError(f"{key_path}: the enrollment CA key must be EC")
        own = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        theirs = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if own != theirs:
            raise EnrollmentCAError(f"{key_path} is not the key of {cert_path}")
        return cls(cert, key, above)

    def chain_pem(self) -> str:
        """This CA and the ones above it, PEM, nearest first."""
        return "".join(
            c.public_bytes(serialization.Encoding.PEM).decode("ascii")
            for c in (self.cert, *self.chain)
        )

    def certify(  # every field of the certificate is a parameter
        self,
        public: Ed25519PublicKey,
        *,
        device_id: str,
        kind: str,
        kid: str,
        site: str,
        now: float,
        days: int = DEVICE_CERT_DAYS,
    ) -> x509.Certificate:
        """A device certificate for ``public``: client authentication and signatures only."""
        start = dt.datetime.fromtimestamp(now, dt.UTC) - dt.timedelta(minutes=5)
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, site[:64]),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, kind),
                x509.NameAttribute(NameOID.COMMON_NAME, device_id),
            ]
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(key_uri(kid))]),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        return builder.sign(self.key, hashes.SHA256())

    def crl(self, revoked: Iterable[tuple[int, float]], now: float, days: int = 30) -> bytes:
        """A CRL (PEM) of the device certificates revoked so far: ``(serial, revoked_at)``."""
        at = dt.datetime.fromtimestamp(now, dt.UTC)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(at)
            .next_update(at + dt.timedelta(days=days))
        )
        for serial, when in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(dt.datetime.fromtimestamp(when, dt.UTC))
                .build()
            )
        return builder.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
