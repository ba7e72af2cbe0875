"""The domain projection of device events, run inside the ingest transaction (``Projector``).

Only lockers' events move cases and compartments; an event of the right type from a device that
is not a registered locker is stored like any other and left alone (it cannot move a case: the
case's ``device_id`` must match).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection

from sync_server.cases import LOCKER_EVENT_TYPES, LockerEffect, LockerEvent, apply_locker_event

__all__ = ["DomainProjector"]

log = logging.getLogger(__name__)


class DomainProjector:
    """Applies locker events to ``compartments`` and ``cases`` (sync_server/cases.py)."""

    types = LOCKER_EVENT_TYPES

    def project(
        self, conn: Connection, device: str, events: Sequence[tuple[int, str, Any]], now: float
    ) -> Sequence[LockerEffect]:
        effects: list[LockerEffect] = []
        for seq, type, data in events:
            if not isinstance(data, Mapping):
                continue  # the protocol requires an object; ingest already refused others
            effects.extend(apply_locker_event(conn, LockerEvent(device, seq, type, data), now))
        return effects
