"""Locker credentials the server signs for residents and workers, recorded so they can be revoked.

A credential (docs/credentials.md) is checked by the locker offline, so the server's only hold on
it after issuing is the ``revocations`` document: :func:`revoke` marks the row and publishes the
``cti`` in a new version of that document, which lockers pull on their next sync.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Final, cast

from sqlalchemy import Connection, Engine, Table, insert, select, update

from device.credential import CredentialClaims, SigningKey, issue
from sync_server.documents import publish_version
from sync_server.domain_models import IssuedCredential
from sync_server.errors import ServerError

__all__ = [
    "COLLECT_VALID_S",
    "WORKER_OPEN_VALID_S",
    "CredentialIssueError",
    "IssuedText",
    "issue_credential",
    "revoke",
]

log = logging.getLogger(__name__)

COLLECT_VALID_S: Final = 14 * 24 * 3600.0
"""A resident's collect credential: two weeks, the time a result may wait in a compartment."""
WORKER_OPEN_VALID_S: Final = 4 * 3600.0
"""A worker's offline credential: one working half-day."""

_issued = cast(Table, IssuedCredential.__table__)


class CredentialIssueError(ServerError, ValueError):
    """A credential cannot be issued or revoked as asked."""


@dataclass(frozen=True)
class IssuedText:
    """A freshly signed credential: ``text`` is what the QR code carries (``LQ1:...``)."""

    cti: str
    kind: str
    expires: float
    text: str = field(repr=False)


def issue_credential(
    conn: Connection,
    key: SigningKey,
    now: float,
    *,
    kind: str,
    device_id: str,
    case_id: str,
    compartment: int | None,
    valid_s: float,
    worker_id: int | None = None,
) -> IssuedText:
    """Sign a credential and record it (in the caller's transaction)."""
    if valid_s <= 0:
        raise CredentialIssueError("a credential must be valid for some time")
    nbf = math.floor(now) - 60  # the locker's clock may lag a little behind ours
    claims = CredentialClaims(
        kind=kind,
        sub=case_id,
        nbf=nbf,
        exp=math.floor(now + valid_s),
        aud=device_id,
        compartment=compartment,
        iat=math.floor(now),
    )
    text = issue(claims, key)
    conn.execute(
        insert(_issued).values(
            cti=claims.cti_hex,
            kind=kind,
            device_id=device_id,
            case_id=case_id,
            compartment=compartment,
            worker_id=worker_id,
            issued=now,
            expires=float(claims.exp),
        )
    )
    log.info(
        "credential %s (%s) issued for case %s at %s", claims.cti_hex, kind, case_id, device_id
    )
    return IssuedText(claims.cti_hex, kind, float(claims.exp), text)


def revoke(engine: Engine, ctis: list[str], now: float) -> int:
    """Revoke credentials by ``cti``; publishes one ``revocations`` version. Returns how many were
    newly revoked (already revoked or expired ones are left as they are)."""
    with engine.begin() as conn:
        rows = conn.execute(
            select(_issued.c.cti, _issued.c.expires).where(
                _issued.c.cti.in_(ctis), _issued.c.revoked_at.is_(None)
            )
        ).all()
        unknown = set(ctis) - {
            row.cti for row in conn.execute(select(_issued.c.cti).where(_issued.c.cti.in_(ctis)))
        }
        if unknown:
            raise CredentialIssueError(f"no credential {sorted(unknown)[0]} was issued here")
        live = [row.cti for row in rows if row.expires > now]
        if not live:
            return 0
        conn.execute(update(_issued).where(_issued.c.cti.in_(live)).values(revoked_at=now))
    publish_version(
        engine, "revocations", upserts={cti: {"revoked_at": now} for cti in live}, deletes=[]
    )
    return len(live)
