"""Who may open what: credentials scanned at the locker, checked offline, and the scanner lockout.

:class:`Gatekeeper` runs DESIGN.md's checks (signature, key id, device, validity with the skew
margin, revocation list, single use) through :func:`device.credential.verify`, then the locker's
own (kind, compartment, case), and records the credential as used in the caller's transaction:
the use and the opening it authorises commit together. :class:`Lockout` counts invalid scans and
locks the scanner out for a growing delay. Refusal reasons are listed in :data:`REASONS`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from device.clock import Clock
from device.config import LockerSection
from device.credential import CredentialClaims, CredentialError, VerifyKey, verify
from device.store import Store, Transaction
from locker.compartments import Compartment, Compartments, State
from locker.errors import LockerError, UnknownCompartmentError
from locker.intents import Flow

REASONS: Final = (
    "not-a-credential",
    "truncated",
    "oversized",
    "malformed",
    "unknown-key",
    "bad-signature",
    "wrong-audience",
    "not-yet-valid",
    "expired",
    "revoked",
    "already-used",
    "wrong-kind",
    "wrong-compartment",
    "compartment-unavailable",
    "compartment-busy",
    "no-free-compartment",
    "locked-out",
)
"""Every reason a scan is refused with (``credential.refused`` events, docs/locker.md)."""

KIND_FLOWS: Final = {
    "collect": Flow.COLLECT,
    "worker-open": Flow.WORKER_OPEN,
    "deposit": Flow.RESULT,
}
REFUSED_EVENT: Final = "credential.refused"
ACCEPTED_EVENT: Final = "credential.accepted"
LOCKOUT_EVENT: Final = "scanner.lockout"
LOCKOUT_ENDED_EVENT: Final = "scanner.lockout_ended"


class Refusal(LockerError, ValueError):
    """A scan that opens nothing; ``reason`` is one of :data:`REASONS`."""

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        cti: str | None = None,
        kind: str | None = None,
        compartment: int | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.cti = cti
        self.kind = kind
        self.compartment = compartment

    def audit(self) -> dict[str, Any]:
        """The ``credential.refused`` event data: never the scanned text."""
        data = {
            "reason": self.reason,
            "cti": self.cti,
            "kind": self.kind,
            "compartment": self.compartment,
        }
        return {k: v for k, v in data.items() if v is not None}


@dataclass(frozen=True)
class Access:
    """An accepted credential: what it opens and why."""

    claims: CredentialClaims
    flow: Flow
    compartment: Compartment


class _Revoked:
    """The ``revocations`` document as a container of ``cti`` hex values."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __contains__(self, cti: object) -> bool:
        return isinstance(cti, str) and self._store.documents.get("revocations", cti) is not None


class _Used:
    """The credentials this locker has accepted, as a container of ``cti`` hex values."""

    def __init__(self, tx: Transaction) -> None:
        self._tx = tx

    def __contains__(self, cti: object) -> bool:
        row = self._tx.execute("SELECT 1 FROM used_credentials WHERE cti = ?", (cti,)).fetchone()
        return row is not None


class Gatekeeper:
    """Checks credentials scanned at locker ``device_id`` against the server's ``keys``."""

    def __init__(
        self,
        store: Store,
        keys: Mapping[str, VerifyKey],
        device_id: str,
        section: LockerSection,
        clock: Clock,
    ) -> None:
        self._store = store
        self._keys = dict(keys)
        self._device_id = device_id
        self._section = section
        self._clock = clock
        self._compartments = Compartments(store)
        self._revoked = _Revoked(store)

    def check(self, tx: Transaction, text: str) -> Access:
        """Verify ``text``, find the compartment it opens and mark it used, or raise
        :class:`Refusal`."""
        now = self._clock.time()
        try:
            claims = verify(
                text,
                self._keys,
                audience=self._device_id,
                now=now,
                skew_s=self._section.credential_skew_s,
                revoked=self._revoked,
                seen=_Used(tx),
                max_length=self._section.max_credential_chars,
            )
        except CredentialError as err:
            raise Refusal(err.reason, str(err), cti=err.cti) from err
        flow = KIND_FLOWS.get(claims.kind)
        cti = claims.cti_hex
        if flow is None:
            raise Refusal(
                "wrong-kind",
                f"a {claims.kind} credential opens nothing here",
                cti=cti,
                kind=claims.kind,
            )
        compartment = self._compartment_for(tx, claims, flow)
        tx.execute(
            "INSERT INTO used_credentials (cti, used_at, expires_at) VALUES (?, ?, ?)",
            (cti, now, claims.exp + self._section.credential_skew_s),
        )
        return Access(claims, flow, compartment)

    def _compartment_for(
        self, tx: Transaction, claims: CredentialClaims, flow: Flow
    ) -> Compartment:
        number = claims.compartment
        refuse = _Refuser(claims)
        if number is None:
            if flow is not Flow.RESULT:
                raise refuse("wrong-compartment", "the credential names no compartment")
            free = self._compartments.free_of_size(tx, "S")
            if free is None:
                raise refuse("no-free-compartment", "no compartment is free for the result")
            return free
        try:
            compartment = self._compartments.get(number, tx)
        except UnknownCompartmentError as err:
            raise refuse("wrong-compartment", str(err), number) from err
        if compartment.state in (State.FAULT, State.DISABLED):
            raise refuse(
                "compartment-unavailable", f"compartment {number} is {compartment.state}", number
            )
        if flow is Flow.RESULT:
            if compartment.state is not State.FREE:
                raise refuse("wrong-compartment", f"compartment {number} is not free", number)
            return compartment
        if compartment.state is not State.HOLDING or compartment.case_id != claims.sub:
            raise refuse(
                "wrong-compartment", f"compartment {number} does not hold this case", number
            )
        if flow is Flow.COLLECT and compartment.content != "result":
            raise refuse(
                "wrong-compartment", f"compartment {number} holds no result to collect", number
            )
        return compartment


@dataclass(frozen=True)
class _Refuser:
    claims: CredentialClaims

    def __call__(self, reason: str, message: str, number: int | None = None) -> Refusal:
        return Refusal(
            reason,
            message,
            cti=self.claims.cti_hex,
            kind=self.claims.kind,
            compartment=number,
        )


def forget_expired_credentials(tx: Transaction, now: float) -> int:
    """Drop used-credential records past their expiry: an expired credential is refused on its
    ``exp`` alone, so its use no longer needs remembering."""
    cursor = tx.execute("DELETE FROM used_credentials WHERE expires_at < ?", (now,))
    return int(cursor.rowcount)


class Lockout:
    """Invalid scans in a row lock the scanner out: ``lockout_base_s``, doubling at each further
    lockout up to ``lockout_max_s``, until a valid scan. Kept in the store, so a restart (or a
    power cut made on purpose) does not lift it."""

    def __init__(self, section: LockerSection, clock: Clock) -> None:
        self._section = section
        self._clock = clock

    def remaining(self, tx: Transaction) -> float:
        """Seconds left of the current lockout (0 when there is none)."""
        return max(0.0, self._row(tx)[2] - self._clock.time())

    def ignore(self, tx: Transaction) -> None:
        """Count a scan refused during the lockout (reported when the lockout ends)."""
        tx.execute("UPDATE scanner_lockout SET ignored = ignored + 1")

    def end_if_over(self, tx: Transaction) -> None:
        """Audit the end of a lockout that is over (at the first scan after it)."""
        _failures, level, until, ignored = self._row(tx)
        if 0 < until <= self._clock.time():
            tx.emit(LOCKOUT_ENDED_EVENT, {"level": level, "ignored_scans": ignored})
            tx.execute("UPDATE scanner_lockout SET until = 0, ignored = 0")

    def refused(self, tx: Transaction) -> float | None:
        """Count an invalid scan; start a lockout (and audit it) at the threshold. Returns the
        lockout's length in seconds when one starts."""
        failures, level, _until, _ignored = self._row(tx)
        failures += 1
        if failures < self._section.lockout_after:
            tx.execute("UPDATE scanner_lockout SET failures = ?", (failures,))
            return None
        level += 1
        delay = min(self._section.lockout_base_s * 2.0 ** (level - 1), self._section.lockout_max_s)
        until = self._clock.time() + delay
        tx.execute(
            "UPDATE scanner_lockout SET failures = 0, level = ?, until = ?, ignored = 0",
            (level, until),
        )
        tx.emit(
            LOCKOUT_EVENT,
            {"level": level, "delay_s": delay, "until": until, "invalid_scans": failures},
        )
        return delay

    def accepted(self, tx: Transaction) -> None:
        tx.execute("UPDATE scanner_lockout SET failures = 0, level = 0")

    def snapshot(self, store: Store) -> dict[str, Any]:
        """The lockout as it stands (a read: no write transaction)."""
        with store.reading() as conn:
            failures, level, until, ignored = self._row(conn)
        return {"invalid_scans": failures, "level": level, "until": until, "ignored": ignored}

    @staticmethod
    def _row(db: Transaction | sqlite3.Connection) -> tuple[int, int, float, int]:
        row = db.execute(
            "SELECT failures, level, until, ignored FROM scanner_lockout WHERE id = 1"
        ).fetchone()
        return int(row[0]), int(row[1]), float(row[2]), int(row[3])
