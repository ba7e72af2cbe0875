"""The service catalogue as devices see it: the ``catalogue`` document, kept equal to ``services``.

Kiosks show the service guide (办事指南) from it, offline. :func:`sync_catalogue` publishes one
version with exactly what changed (active services upserted, others deleted), or nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

from sqlalchemy import Engine, Table, select

from sync_server.documents import latest_version, publish_version, snapshot
from sync_server.domain_models import Service

__all__ = ["catalogue_item", "sync_catalogue"]

_services = cast(Table, Service.__table__)


def catalogue_item(row: Any) -> dict[str, Any]:
    """What a kiosk shows of one service (the ``catalogue`` document's item)."""
    return {
        "name": row.name,
        "description": row.description,
        "documents": list(row.documents or []),
        "pickup_hours": float(row.pickup_hours),
        "process_hours": float(row.process_hours),
    }


def sync_catalogue(engine: Engine, *, clock: Callable[[], float] = time.time) -> int | None:
    """Publish the differences between ``services`` and the ``catalogue`` document; the new
    version, or None when they already agree."""
    with engine.connect() as conn:
        wanted = {
            row.id: catalogue_item(row)
            for row in conn.execute(select(_services).where(_services.c.active))
        }
    newest = latest_version(engine, "catalogue")
    have = dict(snapshot(engine, "catalogue").items) if newest else {}
    upserts = {key: item for key, item in wanted.items() if have.get(key) != item}
    deletes = [key for key in have if key not in wanted]
    if not upserts and not deletes:
        return None
    return publish_version(
        engine,
        "catalogue",
        upserts=upserts,
        deletes=deletes,
        if_version=newest,
        clock=clock,
    )
