"""The server's tables (SQLAlchemy 2.0 typed ORM): devices, events, acks, commands, documents.

Times are unix seconds (float), as in the device protocol, so an injected clock drives them in
tests. JSON columns use the portable ``JSON`` type (``json`` on PostgreSQL, not ``jsonb``):
``jsonb`` refuses ``\\u0000`` in strings, which the protocol allows,
and one such event would block a device's queue.
"""

from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from device.protocol import DOCUMENT_NAMES, MAX_DEVICE_ID_LENGTH

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite auto-increments only a column declared exactly INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")

COMMAND_STATUSES = ("issued", "delivered", "succeeded", "failed", "refused", "expired")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSON,
        list[Any]: JSON,
        float: Double,
    }


DeviceIdColumn = String(MAX_DEVICE_ID_LENGTH)


class Device(Base):
    """One kiosk or locker; ``online``/``boot``/``state_at`` follow its newest ``up/state``."""

    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(DeviceIdColumn, primary_key=True)
    kind: Mapped[str | None] = mapped_column(String(16))
    first_seen: Mapped[float]
    last_seen: Mapped[float]
    online: Mapped[bool] = mapped_column(default=False)
    boot: Mapped[int | None] = mapped_column(BigInteger)
    state_at: Mapped[float | None]
    last_state: Mapped[dict[str, Any] | None]


class Event(Base):
    """An event from a device's outbox, stored once per ``(device_id, seq)``.

    ``id`` is the arrival order on this server (for consumers reading "events after N");
    ``event_id`` is the device's uuid4 hex; ``boot`` is the sending process's boot count.
    """

    __tablename__ = "events"
    __table_args__ = (UniqueConstraint("device_id", "seq", name="uq_events_device_seq"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(DeviceIdColumn, ForeignKey("devices.id"))
    seq: Mapped[int] = mapped_column(BigInteger)
    event_id: Mapped[str] = mapped_column(String(32))
    type: Mapped[str] = mapped_column(String(64))
    at: Mapped[float]
    data: Mapped[dict[str, Any]]
    boot: Mapped[int] = mapped_column(BigInteger)
    received_at: Mapped[float]


class DeviceAck(Base):
    """The highest seq up to which every event of the device is stored (what ``down/ack`` says)."""

    __tablename__ = "device_acks"

    device_id: Mapped[str] = mapped_column(
        DeviceIdColumn, ForeignKey("devices.id"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[float]


class Command(Base):
    """A signed command issued on ``down/cmd`` and its audit trail (``up/cmd-result``)."""

    __tablename__ = "commands"
    __table_args__ = (
        CheckConstraint(
            "status IN (" + ", ".join(f"'{s}'" for s in COMMAND_STATUSES) + ")", name="status"
        ),
        Index("ix_commands_device_created", "device_id", "created"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    device_id: Mapped[str] = mapped_column(DeviceIdColumn, ForeignKey("devices.id"))
    type: Mapped[str] = mapped_column(String(64))
    args: Mapped[dict[str, Any]]
    created: Mapped[float]
    expires: Mapped[float]
    status: Mapped[str] = mapped_column(String(16), default="issued")
    result: Mapped[dict[str, Any] | None]
    completed: Mapped[float | None]


class Document(Base):
    """One version of a versioned document (``down/sync``): a delta or a snapshot as ``payload``.

    ``scope`` names the history: ``""`` for a global document, the community id for
    ``residents``. A version number is unique per document across its scopes
    (``uq_documents_doc_version``), so it names one community's version (docs/documents.md).
    """

    __tablename__ = "documents"
    __table_args__ = (
        CheckConstraint("doc IN (" + ", ".join(f"'{d}'" for d in DOCUMENT_NAMES) + ")", name="doc"),
        UniqueConstraint("doc", "version", name="uq_documents_doc_version"),
    )

    doc: Mapped[str] = mapped_column(String(16), primary_key=True)
    scope: Mapped[str] = mapped_column(String(32), primary_key=True, default="", server_default="")
    version: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    payload: Mapped[dict[str, Any]]
    created: Mapped[float]


# The domain tables (cases, workers, lockers, residents...) live in their own module on the same
# metadata; importing it here registers them, so ``metadata`` below is the whole schema.
from sync_server import domain_models as _domain_models  # noqa: E402, F401

metadata = Base.metadata
"""What the migrations must produce (tests compare them with alembic's ``compare_metadata``)."""
