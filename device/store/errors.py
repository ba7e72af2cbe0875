"""Errors of the device store: one root (:class:`StoreError`) for everything the store refuses."""

from __future__ import annotations

from device.errors import DeviceClosedError, LinliError


class StoreError(LinliError, RuntimeError):
    """The local store failed or refused an operation; the message says which and why."""


class StoreBusyError(StoreError, TimeoutError):
    """Another process held the store's write lock for longer than the busy timeout."""


class StoreClosedError(StoreError, DeviceClosedError):
    """The store was used after ``close()``."""


class MigrationError(StoreError):
    """A schema migration failed; it was rolled back and the store stays at ``version - 1``."""

    def __init__(self, message: str, version: int, name: str) -> None:
        super().__init__(message)
        self.version = version
        self.name = name


class SchemaTooNewError(StoreError):
    """The database was written by a newer build (higher schema version) than this one."""

    def __init__(self, message: str, found: int, supported: int) -> None:
        super().__init__(message)
        self.found = found
        self.supported = supported


class ReplayedCommandError(StoreError, ValueError):
    """A command id was recorded in the inbox before: the command must not run again."""


class UnknownDocumentError(StoreError, ValueError):
    """A document name that the store does not keep."""


class DocumentError(StoreError, ValueError):
    """A document delta or snapshot is malformed (bad versions, a record without its key...)."""


class DocumentVersionError(DocumentError):
    """A delta does not start at the version the device has: ask the server for a snapshot."""

    def __init__(self, message: str, doc: str, current: int, from_version: int) -> None:
        super().__init__(message)
        self.doc = doc
        self.current = current
        self.from_version = from_version


class StaleDocumentError(DocumentVersionError):
    """A delta or snapshot older than (or equal to) what the device has: ignore it."""


class UnreadableEventError(StoreError):
    """A sealed outbox event does not open with this device's key (damaged, or another key)."""

    def __init__(self, message: str, seq: int) -> None:
        super().__init__(message)
        self.seq = seq
