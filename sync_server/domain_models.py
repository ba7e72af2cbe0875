"""The server's domain tables: areas, services, workers, service points, cases, dispatch, residents.

DESIGN.md sections 1 and 3: a case moves ``draft -> deposited -> assigned -> collected ->
processing -> result_stored -> completed`` (plus ``overdue``, ``escalated``, ``cancelled``); grid
workers cover grids and are assigned pickups; unassigned or unanswered work escalates grid ->
community -> street. Times are unix seconds (float), as everywhere on the server.

The tables live on :data:`sync_server.models.metadata` (``models`` imports this module), so one
Alembic history covers them all.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from sync_server.models import Base, BigId, DeviceIdColumn

AREA_LEVELS = ("street", "community", "grid")
"""街道 -> 社区 -> 网格: a grid belongs to a community, a community to a street."""
ESCALATION_LEVELS = ("grid", "community", "street")
"""Who answers for a case: its grid's workers, then the community's staff, then the street's."""
CASE_STATES = (
    "draft",
    "deposited",
    "assigned",
    "collected",
    "processing",
    "result_stored",
    "completed",
    "overdue",
    "escalated",
    "cancelled",
)
ROLES = ("worker", "staff", "admin")
"""``worker`` = 网格员 (unlock app); ``staff`` = community/street office; ``admin``."""
ASSIGNMENT_KINDS = ("pickup", "return")
ASSIGNMENT_STATUSES = ("offered", "acknowledged", "done", "timed_out", "declined", "cancelled")
OPEN_ASSIGNMENT_STATUSES = ("offered", "acknowledged")
NOTIFICATION_STATUSES = ("queued", "sent", "failed", "recorded")
CREDENTIAL_KINDS = ("collect", "worker-open", "deposit")
DEVICE_KINDS = ("kiosk", "locker")
APPLICATION_STATUSES = ("submitted", "accepted", "done", "rejected")
"""An online application (网上申请): ``submitted -> accepted -> done``, or ``rejected``."""


def _check_in(column: str, values: tuple[str, ...], name: str) -> CheckConstraint:
    return CheckConstraint(f"{column} IN (" + ", ".join(f"'{v}'" for v in values) + ")", name=name)


class Area(Base):
    """A street (街道), community (社区) or grid (网格), in one tree by ``parent_id``."""

    __tablename__ = "areas"
    __table_args__ = (_check_in("level", AREA_LEVELS, "level"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    level: Mapped[str] = mapped_column(String(16))
    parent_id: Mapped[str | None] = mapped_column(String(32), ForeignKey("areas.id"))


class Service(Base):
    """One service of the catalogue (办事指南): what it needs and how long each step may take.

    ``documents`` is a list of ``{"name", "copies", "note"}``; ``pickup_hours`` is the time a grid
    worker has from deposit to collection, ``process_hours`` from collection to the result being in
    a compartment. The catalogue is also published to devices as the ``catalogue`` document.
    """

    __tablename__ = "services"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(Text, default="")
    documents: Mapped[list[Any]]
    pickup_hours: Mapped[float]
    process_hours: Mapped[float]
    active: Mapped[bool] = mapped_column(default=True)
    updated: Mapped[float]


class Worker(Base):
    """A person who logs in: a grid worker, community/street staff, or an administrator.

    ``password_hash`` is argon2id. ``area_id`` is the community or street a staff member answers
    for (escalations); workers cover grids through ``worker_grids``. ``home_lat``/``home_lon`` is
    where the dispatcher assumes a worker starts from.
    """

    __tablename__ = "workers"
    __table_args__ = (_check_in("role", ROLES, "role"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(64))
    phone: Mapped[str | None] = mapped_column(String(32))
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(16), default="worker")
    area_id: Mapped[str | None] = mapped_column(String(32), ForeignKey("areas.id"))
    home_lat: Mapped[float | None]
    home_lon: Mapped[float | None]
    speed_kmh: Mapped[float] = mapped_column(default=15.0)
    capacity: Mapped[int] = mapped_column(Integer, default=5)
    active: Mapped[bool] = mapped_column(default=True)
    created: Mapped[float]


class WorkerGrid(Base):
    """A grid a worker covers."""

    __tablename__ = "worker_grids"

    worker_id: Mapped[int] = mapped_column(ForeignKey("workers.id"), primary_key=True)
    grid_id: Mapped[str] = mapped_column(String(32), ForeignKey("areas.id"), primary_key=True)


class Shift(Base):
    """A worker's shift; a worker is dispatchable only inside one."""

    __tablename__ = "shifts"
    __table_args__ = (
        CheckConstraint("end_at > start_at", name="order"),
        Index("ix_shifts_worker_end", "worker_id", "end_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    worker_id: Mapped[int] = mapped_column(ForeignKey("workers.id"))
    start_at: Mapped[float]
    end_at: Mapped[float]


class ServicePoint(Base):
    """A registered kiosk or locker: where it is and which area it serves.

    A locker's ``area_id`` is its grid; a kiosk's is its community (it receives that community's
    resident records). ``revoked_at`` is set when the device is revoked by an administrator.
    """

    __tablename__ = "service_points"
    __table_args__ = (_check_in("kind", DEVICE_KINDS, "kind"),)

    device_id: Mapped[str] = mapped_column(DeviceIdColumn, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(128))
    area_id: Mapped[str] = mapped_column(String(32), ForeignKey("areas.id"))
    address: Mapped[str] = mapped_column(String(256), default="")
    lat: Mapped[float | None]
    lon: Mapped[float | None]
    created: Mapped[float]
    revoked_at: Mapped[float | None]


class Compartment(Base):
    """A locker compartment as the locker last reported it (``compartment.*`` events).

    ``seq`` is the device seq of the event that set the row, so an older event arriving late
    (another server process, a redelivery) never overwrites a newer state.
    """

    __tablename__ = "compartments"

    device_id: Mapped[str] = mapped_column(DeviceIdColumn, primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    size: Mapped[str | None] = mapped_column(String(8))
    state: Mapped[str] = mapped_column(String(24))
    case_id: Mapped[str | None] = mapped_column(String(32))
    door: Mapped[str | None] = mapped_column(String(16))
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[float]


class Case(Base):
    """A resident's case at a locker (DESIGN.md section 3, the case state machine).

    The resident follows it through a link that carries a secret; only its SHA-256 is stored
    (``access_hash``), so the database alone does not let anyone act as the resident.
    ``link_hash`` is the hash of a second token, sent in the result notification (the first
    one is in the resident's browser only).
    ``level`` is who answers for it (``ESCALATION_LEVELS``). ``version`` increments on every
    change (optimistic concurrency between server processes).
    """

    __tablename__ = "cases"
    __table_args__ = (
        _check_in("state", CASE_STATES, "state"),
        _check_in("level", ESCALATION_LEVELS, "level"),
        Index("ix_cases_state_due", "state", "due_at"),
        Index("ix_cases_device", "device_id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    service_id: Mapped[str] = mapped_column(String(32), ForeignKey("services.id"))
    device_id: Mapped[str] = mapped_column(DeviceIdColumn)
    grid_id: Mapped[str] = mapped_column(String(32), ForeignKey("areas.id"))
    compartment: Mapped[int | None] = mapped_column(Integer)
    result_compartment: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="draft")
    resumes: Mapped[str | None] = mapped_column(String(16))
    level: Mapped[str] = mapped_column(String(16), default="grid")
    access_hash: Mapped[str] = mapped_column(String(64))
    link_hash: Mapped[str | None] = mapped_column(String(64))
    phone: Mapped[str | None] = mapped_column(String(32))
    wechat_openid: Mapped[str | None] = mapped_column(String(64))
    worker_id: Mapped[int | None] = mapped_column(ForeignKey("workers.id"))
    created: Mapped[float]
    updated: Mapped[float]
    due_at: Mapped[float | None]
    deposited_at: Mapped[float | None]
    collected_at: Mapped[float | None]
    result_ready_at: Mapped[float | None]
    result_at: Mapped[float | None]
    completed_at: Mapped[float | None]
    version: Mapped[int] = mapped_column(Integer, default=1)


class Assignment(Base):
    """A pickup (or result return) offered to a worker, and what became of it.

    At most one open (``offered``/``acknowledged``) assignment per case: a partial unique index
    on both databases, so two dispatcher processes cannot both assign a case.
    """

    __tablename__ = "assignments"
    __table_args__ = (
        _check_in("kind", ASSIGNMENT_KINDS, "kind"),
        _check_in("status", ASSIGNMENT_STATUSES, "status"),
        Index(
            "uq_assignments_open_case",
            "case_id",
            unique=True,
            sqlite_where=text("status IN ('offered', 'acknowledged')"),
            postgresql_where=text("status IN ('offered', 'acknowledged')"),
        ),
        Index("ix_assignments_worker_status", "worker_id", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    case_id: Mapped[str] = mapped_column(String(32), ForeignKey("cases.id"))
    worker_id: Mapped[int] = mapped_column(ForeignKey("workers.id"))
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="offered")
    created: Mapped[float]
    ack_due: Mapped[float]
    acknowledged_at: Mapped[float | None]
    finished_at: Mapped[float | None]
    eta: Mapped[float | None]
    cost: Mapped[int | None] = mapped_column(BigInteger)


class AuditEntry(Base):
    """Who did what, when: every case transition, login, revocation and refusal worth keeping.

    ``actor`` is ``worker:ID``, ``resident``, ``device:ID``, ``system`` or ``admin:ID``; ``detail``
    never holds ID numbers, names, addresses or phone numbers.
    """

    __tablename__ = "audit"
    __table_args__ = (Index("ix_audit_case", "case_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[float]
    actor: Mapped[str] = mapped_column(String(96))
    action: Mapped[str] = mapped_column(String(64))
    case_id: Mapped[str | None] = mapped_column(String(32))
    device_id: Mapped[str | None] = mapped_column(DeviceIdColumn)
    detail: Mapped[dict[str, Any]]


class Notification(Base):
    """One notification to a resident or worker, whichever adapter sent it (or only recorded it).

    ``dedupe`` makes a reminder idempotent: a second attempt with the same key is not sent twice.
    """

    __tablename__ = "notifications"
    __table_args__ = (
        _check_in("status", NOTIFICATION_STATUSES, "status"),
        UniqueConstraint("dedupe", name="uq_notifications_dedupe"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(16))
    recipient: Mapped[str] = mapped_column(String(64))
    template: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]]
    case_id: Mapped[str | None] = mapped_column(String(32))
    dedupe: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created: Mapped[float]
    sent_at: Mapped[float | None]
    error: Mapped[str | None] = mapped_column(String(512))


class WebSession(Base):
    """A logged-in browser: the cookie carries a random token, the table only its SHA-256."""

    __tablename__ = "web_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    worker_id: Mapped[int] = mapped_column(ForeignKey("workers.id"))
    csrf: Mapped[str] = mapped_column(String(64))
    created: Mapped[float]
    expires: Mapped[float]
    last_seen: Mapped[float]


class LoginFailure(Base):
    """A failed login, by a key (username or client address), for the brute-force limit."""

    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_key_at", "key", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(128))
    at: Mapped[float]


class IssuedCredential(Base):
    """A credential the server signed (docs/credentials.md), so it can be listed and revoked."""

    __tablename__ = "issued_credentials"
    __table_args__ = (
        _check_in("kind", CREDENTIAL_KINDS, "kind"),
        Index("ix_issued_credentials_case", "case_id"),
    )

    cti: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    device_id: Mapped[str] = mapped_column(DeviceIdColumn)
    case_id: Mapped[str] = mapped_column(String(32))
    compartment: Mapped[int | None] = mapped_column(Integer)
    worker_id: Mapped[int | None] = mapped_column(ForeignKey("workers.id"))
    issued: Mapped[float]
    expires: Mapped[float]
    revoked_at: Mapped[float | None]


class Household(Base):
    """A household record (一户一档), imported from the community's spreadsheets."""

    __tablename__ = "households"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    community_id: Mapped[str] = mapped_column(String(32), ForeignKey("areas.id"))
    address: Mapped[str] = mapped_column(String(256))
    residence_since: Mapped[str | None] = mapped_column(String(10))
    extra: Mapped[dict[str, Any]]
    import_id: Mapped[int | None] = mapped_column(ForeignKey("record_imports.id"))
    updated: Mapped[float]


class Resident(Base):
    """A resident record, keyed by ID number (18 characters, upper-case ``X``).

    ``subsidy_year`` is the last year the resident completed the elderly-subsidy certification
    (高龄补贴认证), or NULL.
    """

    __tablename__ = "residents"
    __table_args__ = (
        Index("ix_residents_community", "community_id"),
        Index("ix_residents_household", "household_id"),
    )

    id_number: Mapped[str] = mapped_column(String(18), primary_key=True)
    household_id: Mapped[str] = mapped_column(String(64), ForeignKey("households.id"))
    community_id: Mapped[str] = mapped_column(String(32), ForeignKey("areas.id"))
    name: Mapped[str] = mapped_column(String(64))
    gender: Mapped[str | None] = mapped_column(String(4))
    birth_date: Mapped[str] = mapped_column(String(10))
    relation: Mapped[str | None] = mapped_column(String(16))
    phone: Mapped[str | None] = mapped_column(String(32))
    subsidy_year: Mapped[int | None] = mapped_column(Integer)
    extra: Mapped[dict[str, Any]]
    import_id: Mapped[int | None] = mapped_column(ForeignKey("record_imports.id"))
    updated: Mapped[float]


class RecordImport(Base):
    """One spreadsheet import: what was accepted and the report of rejected rows."""

    __tablename__ = "record_imports"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(256))
    community_id: Mapped[str] = mapped_column(String(32), ForeignKey("areas.id"))
    at: Mapped[float]
    accepted: Mapped[int] = mapped_column(Integer)
    rejected: Mapped[int] = mapped_column(Integer)
    report: Mapped[dict[str, Any]]


class CertificateRevocation(Base):
    """A printed certificate (by serial) that no longer verifies on the public page."""

    __tablename__ = "certificate_revocations"

    serial: Mapped[str] = mapped_column(String(64), primary_key=True)
    at: Mapped[float]
    reason: Mapped[str] = mapped_column(String(256))


class Application(Base):
    """An application a resident filed on their phone (网上申请, docs/applications.md).

    ``id`` is the application number (``A`` and 9 characters of the case alphabet). The
    applicant is stored as the resident records store residents (``residents.id_number``,
    ``residents.name``): the ID number in its normalised form, looked up by equality (an index).
    ``data`` is the kind's validated form fields; ``reason`` the office's reason for a
    rejection. The resident's status link carries a token whose SHA-256 is ``access_hash``.
    ``version`` increments on every change (two office clerks acting at once).
    """

    __tablename__ = "applications"
    __table_args__ = (
        _check_in("status", APPLICATION_STATUSES, "status"),
        Index("ix_applications_id_number", "id_number", "submitted_at"),
        Index("ix_applications_community_status", "community_id", "status"),
    )

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    community_id: Mapped[str] = mapped_column(String(32), ForeignKey("areas.id"))
    id_number: Mapped[str] = mapped_column(String(18))
    name: Mapped[str] = mapped_column(String(64))
    phone: Mapped[str] = mapped_column(String(32))
    data: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default="submitted")
    reason: Mapped[str | None] = mapped_column(String(256))
    access_hash: Mapped[str] = mapped_column(String(64))
    submitted_at: Mapped[float]
    updated_at: Mapped[float]
    version: Mapped[int] = mapped_column(Integer, default=1)


class ApplicationCode(Base):
    """An SMS code sent to prove the phone of an application form.

    ``phone_key`` and ``client_key`` are SHA-256 digests of the phone number and of the client
    address (they count sends for the rate limit, like ``login_failures``; no second copy of the
    number in clear). ``code_hash`` is the SHA-256 of the phone and the code. A code is good
    until ``expires`` for a few ``attempts``, and once (``used_at``).
    """

    __tablename__ = "application_codes"
    __table_args__ = (
        Index("ix_application_codes_phone_created", "phone_key", "created"),
        Index("ix_application_codes_client_created", "client_key", "created"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    phone_key: Mapped[str] = mapped_column(String(64))
    client_key: Mapped[str] = mapped_column(String(64))
    code_hash: Mapped[str] = mapped_column(String(64))
    created: Mapped[float]
    expires: Mapped[float]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    used_at: Mapped[float | None]


IDENTITY_STATES = ("pending", "enrolled", "revoked")
"""A device identity: ``pending`` until its key is certified (bundle written, or enrollment
redeemed), ``enrolled`` once it has a certificate, ``revoked`` when taken out of service."""
IDENTITY_MODES = ("bundle", "enroll")
"""``bundle``: the technician's tool made the key; ``enroll``: the device made it (CSR)."""


class DeviceIdentity(Base):
    """A service point's current identity (docs/provisioning.md): which key it signs with, its
    X.509 certificate from the site's enrollment CA, and whether it is still trusted.

    ``generation`` counts rotations; each one gives a new key id (``key_id``) and certificate.
    """

    __tablename__ = "device_identities"
    __table_args__ = (
        _check_in("state", IDENTITY_STATES, "state"),
        _check_in("mode", IDENTITY_MODES, "mode"),
    )

    device_id: Mapped[str] = mapped_column(
        DeviceIdColumn, ForeignKey("service_points.device_id"), primary_key=True
    )
    generation: Mapped[int] = mapped_column(Integer, default=1)
    mode: Mapped[str] = mapped_column(String(8))
    state: Mapped[str] = mapped_column(String(16))
    key_id: Mapped[str] = mapped_column(String(80))
    key_fingerprint: Mapped[str | None] = mapped_column(String(64))
    cert_serial: Mapped[str | None] = mapped_column(String(40))
    cert_pem: Mapped[str | None] = mapped_column(Text)
    cert_not_after: Mapped[float | None]
    created: Mapped[float]
    enrolled_at: Mapped[float | None]
    revoked_at: Mapped[float | None]
    revoke_reason: Mapped[str | None] = mapped_column(String(32))


class EnrollmentToken(Base):
    """A one-time enrollment token: only its SHA-256 is kept. ``wrapped`` is the device's broker
    password sealed with a key derived from the token (AES-GCM), so neither the database nor
    the bundle alone reveals it. Good until ``expires``, once (``used_at``, by the key whose
    fingerprint is ``used_key``: the same device may retry after a lost answer)."""

    __tablename__ = "enrollment_tokens"
    __table_args__ = (Index("ix_enrollment_tokens_device", "device_id"),)

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[str] = mapped_column(DeviceIdColumn, ForeignKey("service_points.device_id"))
    generation: Mapped[int] = mapped_column(Integer)
    created: Mapped[float]
    expires: Mapped[float]
    used_at: Mapped[float | None]
    used_key: Mapped[str | None] = mapped_column(String(64))
    wrapped: Mapped[str] = mapped_column(Text)


class DeviceKey(Base):
    """Every public key a device has signed with, by key id: kiosks sign the verification QR of
    the certificates they print, so a key outlives its device's rotation (``retired_at``: no
    new signatures expected, old ones still genuine) unless it is revoked (``revoked_at``:
    compromised, nothing signed with it is trusted any more)."""

    __tablename__ = "device_keys"
    __table_args__ = (Index("ix_device_keys_device", "device_id"),)

    kid: Mapped[str] = mapped_column(String(80), primary_key=True)
    device_id: Mapped[str] = mapped_column(DeviceIdColumn)
    public_pem: Mapped[str] = mapped_column(Text)
    created: Mapped[float]
    retired_at: Mapped[float | None]
    revoked_at: Mapped[float | None]
