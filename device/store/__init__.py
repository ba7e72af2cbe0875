"""The device's local store (SQLite, WAL): outbox, command inbox and versioned documents.

See docs/store.md.
"""

from __future__ import annotations

from device.store.db import DEFAULT_BUSY_TIMEOUT, Store, Transaction, open_store
from device.store.documents import DOCUMENTS, SEALED_DOCUMENTS, Documents
from device.store.errors import (
    DocumentError,
    DocumentVersionError,
    MigrationError,
    ReplayedCommandError,
    SchemaTooNewError,
    StaleDocumentError,
    StoreBusyError,
    StoreClosedError,
    StoreError,
    UnknownDocumentError,
    UnreadableEventError,
)
from device.store.inbox import Inbox, InboxEntry
from device.store.migrations import MIGRATIONS, Migrations, migration
from device.store.outbox import Event, Outbox, WireEvent
from device.store.residents import ResidentCache

__all__ = [
    "DEFAULT_BUSY_TIMEOUT",
    "DOCUMENTS",
    "MIGRATIONS",
    "SEALED_DOCUMENTS",
    "DocumentError",
    "DocumentVersionError",
    "Documents",
    "Event",
    "Inbox",
    "InboxEntry",
    "MigrationError",
    "Migrations",
    "Outbox",
    "ReplayedCommandError",
    "ResidentCache",
    "SchemaTooNewError",
    "StaleDocumentError",
    "Store",
    "StoreBusyError",
    "StoreClosedError",
    "StoreError",
    "Transaction",
    "UnknownDocumentError",
    "UnreadableEventError",
    "WireEvent",
    "migration",
    "open_store",
]
