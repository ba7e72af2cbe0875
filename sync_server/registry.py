"""The server's device registry: service points, their identities, enrollment tokens, keys.

This is the registration API ``provisioning`` uses (DESIGN.md section 2) and the enrollment
endpoint redeems tokens through. Every function takes an open :class:`~sqlalchemy.Connection`
inside the caller's transaction, except :func:`revoke_device`, which also revokes the device's
outstanding locker credentials (a ``revocations`` document version of its own).

Nothing here holds a secret in clear: tokens are stored as SHA-256, the broker password only
sealed under the token (docs/provisioning.md).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from typing import Final, cast

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Connection, Engine, Table, insert, select, update

from device.credential import VerifyKey
from sync_server.cases import audit
from sync_server.credentials import revoke as revoke_credentials
from sync_server.domain_models import (
    Area,
    DeviceIdentity,
    DeviceKey,
    EnrollmentToken,
    IssuedCredential,
    ServicePoint,
)
from sync_server.enrollment import key_fingerprint
from sync_server.errors import ServerError
from sync_server.models import Device

__all__ = [
    "Identity",
    "InventoryRow",
    "RegistryError",
    "RevokeSummary",
    "active_device_keys",
    "add_token",
    "certify_identity",
    "identity",
    "inventory",
    "key_id_for",
    "new_identity",
    "record_refusal",
    "redeem_token",
    "register_point",
    "revoke_device",
    "revoked_serials",
    "token_hash",
]

log = logging.getLogger(__name__)

_points = cast(Table, ServicePoint.__table__)
_areas = cast(Table, Area.__table__)
_identities = cast(Table, DeviceIdentity.__table__)
_tokens = cast(Table, EnrollmentToken.__table__)
_keys = cast(Table, DeviceKey.__table__)
_issued = cast(Table, IssuedCredential.__table__)
_devices = cast(Table, Device.__table__)

ACTOR: Final = "provisioning"


class RegistryError(ServerError, ValueError):
    """A registration, enrollment or revocation cannot be done as asked.

    ``reason`` is a stable code (``unknown-area``, ``kind-mismatch``, ``revoked``,
    ``not-registered``, ``token-unknown``, ``token-used``, ``token-expired``, ``not-pending``);
    ``status`` the HTTP status the enrollment endpoint answers it with.
    """

    def __init__(self, message: str, reason: str, status: int = 400) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class Identity:
    """A device's current identity record."""

    device_id: str
    kind: str
    generation: int
    mode: str
    state: str
    key_id: str
    cert_serial: str | None
    cert_not_after: float | None
    enrolled_at: float | None
    revoked_at: float | None
    key_fingerprint: str | None = None
    cert_pem: str | None = None


@dataclass(frozen=True)
class InventoryRow:
    """One line of ``linli provision list``: no secret, no personal data."""

    device_id: str
    kind: str
    name: str
    area_id: str
    state: str
    """``pending``/``enrolled``/``revoked`` or ``unprovisioned`` (loaded by ``load-site``)."""
    generation: int | None
    key_id: str | None
    online: bool
    last_contact: float | None
    cert_not_after: float | None
    token_expires: float | None
    """When the newest unused enrollment token stops working (None: no token pending)."""


@dataclass(frozen=True)
class RevokeSummary:
    """What :func:`revoke_device` did."""

    device_id: str
    already: bool
    credentials: int
    """Outstanding credentials for the device newly put on the ``revocations`` document."""
    key_revoked: bool
    """The device's signing key was revoked (compromised), not just retired."""


def key_id_for(device_id: str, generation: int) -> str:
    """The ``kid`` a device's signatures carry: its id and identity generation."""
    return f"{device_id}-g{generation}"


def token_hash(token: str) -> str:
    """SHA-256 hex of a token (192 random bits, so a plain hash is enough)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def register_point(  # one parameter per field of a service point
    conn: Connection,
    *,
    device_id: str,
    kind: str,
    name: str,
    area_id: str,
    now: float,
    address: str = "",
    lat: float | None = None,
    lon: float | None = None,
) -> bool:
    """Create the service point, or update where it is; True when it is new.

    A point registered before (``linli server load-site``) keeps its row; its kind cannot
    change (a kiosk's id never becomes a locker's: their events and documents differ).
    """
    if conn.execute(select(_areas.c.id).where(_areas.c.id == area_id)).first() is None:
        raise RegistryError(
            f"area {area_id!r} is not in the server database; load the site's areas first "
            "(linli server load-site)",
            "unknown-area",
        )
    row = conn.execute(select(_points).where(_points.c.device_id == device_id)).first()
    values = {"name": name, "area_id": area_id, "address": address, "lat": lat, "lon": lon}
    if row is None:
        conn.execute(
            insert(_points).values(
                device_id=device_id, kind=kind, created=now, revoked_at=None, **values
            )
        )
        return True
    if row.kind != kind:
        raise RegistryError(
            f"{device_id} is registered as a {row.kind}, not a {kind}", "kind-mismatch"
        )
    conn.execute(update(_points).where(_points.c.device_id == device_id).values(**values))
    return False


def identity(conn: Connection, device_id: str) -> Identity | None:
    """The device's identity record, or None before its first ``device add``."""
    row = conn.execute(
        select(_identities, _points.c.kind)
        .join(_points, _points.c.device_id == _identities.c.device_id)
        .where(_identities.c.device_id == device_id)
    ).first()
    if row is None:
        return None
    return Identity(
        device_id=row.device_id,
        kind=row.kind,
        generation=row.generation,
        mode=row.mode,
        state=row.state,
        key_id=row.key_id,
        cert_serial=row.cert_serial,
        cert_not_after=row.cert_not_after,
        enrolled_at=row.enrolled_at,
        revoked_at=row.revoked_at,
        key_fingerprint=row.key_fingerprint,
        cert_pem=row.cert_pem,
    )


def new_identity(conn: Connection, device_id: str, *, mode: str, now: float) -> Identity:
    """Start the device's next identity generation (first ``add``, or ``rotate``).

    The previous key is retired (what it signed stays genuine), unused tokens stop working,
    and a revoked device is reinstated: rotation is how a replacement board takes over a
    cabinet. The new identity is ``pending`` until :func:`certify_identity`.
    """
    point = conn.execute(select(_points).where(_points.c.device_id == device_id)).first()
    if point is None:
        raise RegistryError(f"{device_id} is not registered", "not-registered")
    old = identity(conn, device_id)
    generation = 1 if old is None else old.generation + 1
    kid = key_id_for(device_id, generation)
    values = {
        "generation": generation,
        "mode": mode,
        "state": "pending",
        "key_id": kid,
        "key_fingerprint": None,
        "cert_serial": None,
        "cert_pem": None,
        "cert_not_after": None,
        "created": now,
        "enrolled_at": None,
        "revoked_at": None,
        "revoke_reason": None,
    }
    if old is None:
        conn.execute(insert(_identities).values(device_id=device_id, **values))
    else:
        conn.execute(
            update(_identities).where(_identities.c.device_id == device_id).values(**values)
        )
        conn.execute(
            update(_keys)
            .where(
                _keys.c.device_id == device_id,
                _keys.c.retired_at.is_(None),
                _keys.c.revoked_at.is_(None),
            )
            .values(retired_at=now)
        )
        _expire_tokens(conn, device_id, now)
    if point.revoked_at is not None:
        conn.execute(
            update(_points).where(_points.c.device_id == device_id).values(revoked_at=None)
        )
    audit(
        conn,
        now,
        ACTOR,
        "device.identity" if old is None else "device.rotated",
        device_id=device_id,
        generation=generation,
        mode=mode,
        reinstated=point.revoked_at is not None,
    )
    log.info("device %s: identity generation %d (%s)", device_id, generation, mode)
    result = identity(conn, device_id)
    assert result is not None  # just written in this transaction
    return result


def _expire_tokens(conn: Connection, device_id: str, now: float) -> None:
    conn.execute(
        update(_tokens)
        .where(_tokens.c.device_id == device_id, _tokens.c.used_at.is_(None))
        .values(expires=now)
    )


def add_token(
    conn: Connection, device_id: str, *, token: str, wrapped: str, ttl_s: float, now: float
) -> float:
    """Record a one-time enrollment token for the device's pending identity; returns its
    expiry. Only the hash is stored, with the sealed broker password."""
    ident = identity(conn, device_id)
    if ident is None or ident.state != "pending":
        raise RegistryError(f"{device_id} has no pending identity to enroll", "not-pending")
    expires = now + ttl_s
    conn.execute(
        insert(_tokens).values(
            token_hash=token_hash(token),
            device_id=device_id,
            generation=ident.generation,
            created=now,
            expires=expires,
            used_at=None,
            used_key=None,
            wrapped=wrapped,
        )
    )
    return expires


def redeem_token(
    conn: Connection, device_id: str, token: str, public: Ed25519PublicKey, now: float
) -> str:
    """Spend the token for ``public``; returns the sealed broker password.

    Refused (:class:`RegistryError`; the caller audits it with :func:`record_refusal` after
    rolling back): a token that is unknown or for another device (403), expired or for an
    identity that moved on (410), or already spent by another key (409). The same key may
    redeem again (its first answer was lost), as long as the identity has not moved on. The
    spend is one conditional UPDATE, so two concurrent redemptions cannot both win.
    """
    digest = token_hash(token)
    row = conn.execute(select(_tokens).where(_tokens.c.token_hash == digest)).first()
    if row is None or not hmac.compare_digest(row.device_id, device_id):
        raise RegistryError("enrollment token not valid for this device", "token-unknown", 403)
    fingerprint = key_fingerprint(public)
    ident = identity(conn, device_id)
    current = ident is not None and ident.generation == row.generation
    if row.used_at is not None:
        if row.used_key == fingerprint and current:
            return str(row.wrapped)
        raise RegistryError("enrollment token already used", "token-used", 409)
    if row.expires <= now or not current or ident is None or ident.state != "pending":
        raise RegistryError(
            "enrollment token expired; ask for a new one (linli provision device rotate)",
            "token-expired",
            410,
        )
    spent = conn.execute(
        update(_tokens)
        .where(_tokens.c.token_hash == digest, _tokens.c.used_at.is_(None))
        .values(used_at=now, used_key=fingerprint)
    )
    if spent.rowcount != 1:
        raise RegistryError("enrollment token already used", "token-used", 409)
    audit(conn, now, f"device:{device_id}", "device.enroll-token", device_id=device_id)
    return str(row.wrapped)


def record_refusal(engine: Engine, device_id: str, reason: str, now: float) -> None:
    """Audit a refused enrollment in a transaction of its own (the request's was rolled back)."""
    with engine.begin() as conn:
        audit(conn, now, "enrollment", "device.enroll-refused", device_id=device_id, reason=reason)
    log.warning("enrollment for %s refused: %s", device_id, reason)


def certify_identity(conn: Connection, device_id: str, cert: x509.Certificate, now: float) -> None:
    """Record the certificate of the device's pending (or re-requested) identity and register
    its public key under the identity's key id."""
    ident = identity(conn, device_id)
    if ident is None or ident.state == "revoked":
        raise RegistryError(f"{device_id} has no identity to certify", "not-pending", 409)
    public = cert.public_key()
    if not isinstance(public, Ed25519PublicKey):
        raise RegistryError("device certificates certify Ed25519 keys only", "bad-key")
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")
    conn.execute(
        update(_identities)
        .where(_identities.c.device_id == device_id)
        .values(
            state="enrolled",
            key_fingerprint=key_fingerprint(public),
            cert_serial=format(cert.serial_number, "x"),
            cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
            cert_not_after=cert.not_valid_after_utc.timestamp(),
            enrolled_at=now,
        )
    )
    existing = conn.execute(select(_keys.c.kid).where(_keys.c.kid == ident.key_id)).first()
    if existing is None:
        conn.execute(
            insert(_keys).values(
                kid=ident.key_id,
                device_id=device_id,
                public_pem=pem,
                created=now,
                retired_at=None,
                revoked_at=None,
            )
        )
    else:
        conn.execute(update(_keys).where(_keys.c.kid == ident.key_id).values(public_pem=pem))
    audit(
        conn,
        now,
        ACTOR,
        "device.enrolled",
        device_id=device_id,
        generation=ident.generation,
        serial=format(cert.serial_number, "x"),
    )


def revoke_device(
    engine: Engine, device_id: str, *, now: float, reason: str, compromised: bool
) -> RevokeSummary:
    """Take the device out of service on the server side.

    Its service point and identity are marked revoked (pages, new cases, commands and rpc stop;
    its certificate goes on the CRL), its unused tokens expire, its key is retired — or revoked
    when ``compromised``, so the verification page refuses what it signed — and every
    unexpired credential issued for it goes on the ``revocations`` document, so whatever board
    is later enrolled under this id (``rotate``) refuses QR codes that were out at revocation.
    Running it again finishes a revocation interrupted between its two transactions.
    """
    with engine.begin() as conn:
        ident = identity(conn, device_id)
        if ident is None:
            raise RegistryError(f"{device_id} has no identity on this site", "not-registered")
        already = ident.state == "revoked"
        if not already:
            conn.execute(
                update(_identities)
                .where(_identities.c.device_id == device_id)
                .values(state="revoked", revoked_at=now, revoke_reason=reason[:32])
            )
            conn.execute(
                update(_points)
                .where(_points.c.device_id == device_id, _points.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            _expire_tokens(conn, device_id, now)
        mine = update(_keys).where(_keys.c.device_id == device_id, _keys.c.revoked_at.is_(None))
        if compromised:
            conn.execute(mine.values(revoked_at=now))
        else:
            conn.execute(mine.where(_keys.c.retired_at.is_(None)).values(retired_at=now))
        live = [
            row.cti
            for row in conn.execute(
                select(_issued.c.cti).where(
                    _issued.c.device_id == device_id,
                    _issued.c.revoked_at.is_(None),
                    _issued.c.expires > now,
                )
            )
        ]
        audit(
            conn,
            now,
            ACTOR,
            "device.revoked",
            device_id=device_id,
            reason=reason[:32],
            compromised=compromised,
            already=already,
            credentials=len(live),
        )
    count = revoke_credentials(engine, live, now) if live else 0
    log.warning("device %s revoked (%s); %d credential(s) revoked", device_id, reason[:32], count)
    return RevokeSummary(device_id, already, count, compromised)


def revoked_serials(conn: Connection) -> list[tuple[int, float]]:
    """``(serial, revoked_at)`` of every revoked device certificate, for the CRL."""
    rows = conn.execute(
        select(_identities.c.cert_serial, _identities.c.revoked_at).where(
            _identities.c.state == "revoked", _identities.c.cert_serial.is_not(None)
        )
    )
    return [(int(row.cert_serial, 16), float(row.revoked_at)) for row in rows]


def active_device_keys(conn: Connection) -> dict[str, VerifyKey]:
    """Every registered device key not revoked, by key id (retired keys included: what a kiosk
    signed before its rotation is still genuine)."""
    keys: dict[str, VerifyKey] = {}
    for row in conn.execute(select(_keys).where(_keys.c.revoked_at.is_(None))):
        public = serialization.load_pem_public_key(row.public_pem.encode("ascii"))
        if isinstance(public, Ed25519PublicKey):
            keys[row.kid] = VerifyKey(row.kid, public)
    return keys


def inventory(conn: Connection) -> list[InventoryRow]:
    """Every service point with its identity state and last contact, by device id."""
    pending = {
        row.device_id: row.expires
        for row in conn.execute(
            select(_tokens.c.device_id, _tokens.c.expires)
            .where(_tokens.c.used_at.is_(None))
            .order_by(_tokens.c.expires)
        )
    }
    rows = conn.execute(
        select(
            _points.c.device_id,
            _points.c.kind,
            _points.c.name,
            _points.c.area_id,
            _points.c.revoked_at,
            _identities.c.state,
            _identities.c.generation,
            _identities.c.key_id,
            _identities.c.cert_not_after,
            _devices.c.online,
            _devices.c.last_seen,
        )
        .select_from(_points)
        .outerjoin(_identities, _identities.c.device_id == _points.c.device_id)
        .outerjoin(_devices, _devices.c.id == _points.c.device_id)
        .order_by(_points.c.device_id)
    )
    out = []
    for row in rows:
        state = row.state or ("revoked" if row.revoked_at is not None else "unprovisioned")
        expires = pending.get(row.device_id) if state == "pending" else None
        out.append(
            InventoryRow(
                device_id=row.device_id,
                kind=row.kind,
                name=row.name,
                area_id=row.area_id,
                state=state,
                generation=row.generation,
                key_id=row.key_id,
                online=bool(row.online) and state != "revoked",
                last_contact=row.last_seen,
                cert_not_after=row.cert_not_after,
                token_expires=expires,
            )
        )
    return out
