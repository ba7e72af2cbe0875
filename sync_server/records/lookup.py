"""``residents.lookup``: a kiosk asks for a resident its community's cache does not hold (异地通办).

Only a registered, unrevoked kiosk may ask (a locker or an unknown device gets ``forbidden``); the
ID number must be well formed (``bad-id-number``); an unknown resident is ``not-found``. Every
lookup is audited with the device and whether it was found, never the ID number.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

from sqlalchemy import Engine, Table, select

from device.protocol import id_number_problems
from sync_server.cases import audit
from sync_server.domain_models import ServicePoint
from sync_server.records.items import resident_item
from sync_server.rpc import RpcMethodError

__all__ = ["METHOD", "residents_lookup"]

METHOD = "residents.lookup"
_points = cast(Table, ServicePoint.__table__)


def residents_lookup(
    engine: Engine, *, clock: Callable[[], float] = time.time
) -> Callable[[str, dict[str, Any]], dict[str, Any]]:
    """The rpc method for ``RpcServer.register(METHOD, ...)``."""

    def lookup(device: str, params: dict[str, Any]) -> dict[str, Any]:
        raw = params.get("id_number")
        if not isinstance(raw, str) or set(params) != {"id_number"}:
            raise RpcMethodError("bad-request", "params must be {id_number: string}")
        id_number = raw.strip().upper()
        if id_number_problems(id_number):
            raise RpcMethodError("bad-id-number", "the ID number is not well formed")
        with engine.begin() as conn:  # the audit entry commits whatever the answer
            point = conn.execute(
                select(_points.c.kind, _points.c.revoked_at).where(_points.c.device_id == device)
            ).first()
            allowed = point is not None and point.kind == "kiosk" and point.revoked_at is None
            item = resident_item(conn, id_number) if allowed else None
            action = "residents.lookup" if allowed else "residents.lookup_refused"
            audit(
                conn, clock(), f"device:{device}", action, device_id=device, found=item is not None
            )
        if not allowed:
            raise RpcMethodError("forbidden", "only a registered kiosk may look residents up")
        if item is None:
            raise RpcMethodError("not-found", "no such resident on this server")
        return item

    return lookup
