"""The kiosk's household directory backed by the ``residents`` document of the store.

Records are found by the keyed hash of the ID number and opened with the device key; a record
that does not open (tampered, another device's key) is an :class:`~device.atrest.AtRestError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from device.store.db import Store


class HasIdNumber(Protocol):
    @property
    def id_number(self) -> str: ...


class ResidentCache:
    """Implements ``kiosk_ui.issuing.HouseholdDirectory`` over the local store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def record_for(self, id_number: str) -> Mapping[str, Any] | None:
        """The whole resident record ``{"id_number": ..., "household": {...}}``, or None."""
        record = self._store.documents.get("residents", id_number)
        return record if isinstance(record, Mapping) else None

    def household_for(self, identity: HasIdNumber) -> Mapping[str, Any] | None:
        record = self.record_for(identity.id_number)
        if record is None:
            return None
        household = record.get("household")
        return household if isinstance(household, Mapping) else None

    def __len__(self) -> int:
        return self._store.documents.count("residents")
