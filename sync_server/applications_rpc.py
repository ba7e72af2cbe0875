"""The kiosk's rpc methods for online applications (docs/applications.md, docs/kiosk-session.md):

- ``applications.list`` ``{"id_number"}`` -> ``{"applications": [...]}``: the resident's own
  applications, newest first, at most :data:`~sync_server.applications.MAX_LISTED`, each with
  exactly the keys ``kiosk_ui/online.py`` accepts;
- ``applications.status`` ``{"number"}`` -> ``{"number", "title", "status", "updated_at"}`` for an
  application number (``A...``) or a locker case number (``C...``), with no personal data.

As for ``residents.lookup`` (:mod:`sync_server.records.lookup`), only a registered, unrevoked
kiosk may ask (others: ``forbidden``), and every call is audited with the device and the outcome,
never the ID number.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any, Final, cast

from sqlalchemy import Connection, Engine, Table, select

from device.protocol import id_number_problems
from sync_server.applications import (
    APPLICATION_PATH,
    ApplicationNotFoundError,
    get_application,
    kiosk_item,
    list_for_resident,
    status_text,
)
from sync_server.cases import audit
from sync_server.domain_models import Case, Service, ServicePoint
from sync_server.rpc import BAD_REQUEST, RpcMethodError
from sync_server.web.resident import CASE_PATH, STATE_TEXT

__all__ = ["LIST_METHOD", "STATUS_METHOD", "applications_list", "applications_status"]

LIST_METHOD: Final = "applications.list"
STATUS_METHOD: Final = "applications.status"
_points = cast(Table, ServicePoint.__table__)
_cases = cast(Table, Case.__table__)
_services = cast(Table, Service.__table__)
_APPLICATION = re.compile(APPLICATION_PATH)
_CASE = re.compile(CASE_PATH)

RpcMethod = Callable[[str, dict[str, Any]], dict[str, Any]]


def _is_kiosk(conn: Connection, device: str) -> bool:
    point = conn.execute(
        select(_points.c.kind, _points.c.revoked_at).where(_points.c.device_id == device)
    ).first()
    return point is not None and point.kind == "kiosk" and point.revoked_at is None


def _forbidden(method: str) -> RpcMethodError:
    return RpcMethodError("forbidden", f"only a registered kiosk may call {method}")


def applications_list(engine: Engine, *, clock: Callable[[], float] = time.time) -> RpcMethod:
    """The rpc method for ``RpcServer.register(LIST_METHOD, ...)``."""

    def list_(device: str, params: dict[str, Any]) -> dict[str, Any]:
        raw = params.get("id_number")
        if not isinstance(raw, str) or set(params) != {"id_number"}:
            raise RpcMethodError(BAD_REQUEST, "params must be {id_number: string}")
        id_number = raw.strip().upper()
        if id_number_problems(id_number):
            raise RpcMethodError("bad-id-number", "the ID number is not well formed")
        with engine.begin() as conn:  # the audit entry commits whatever the answer
            allowed = _is_kiosk(conn, device)
            found = list_for_resident(conn, id_number) if allowed else []
            audit(
                conn,
                clock(),
                f"device:{device}",
                LIST_METHOD if allowed else f"{LIST_METHOD}_refused",
                device_id=device,
                count=len(found),
            )
        if not allowed:
            raise _forbidden(LIST_METHOD)
        return {"applications": [kiosk_item(application) for application in found]}

    return list_


def applications_status(engine: Engine, *, clock: Callable[[], float] = time.time) -> RpcMethod:
    """The rpc method for ``RpcServer.register(STATUS_METHOD, ...)``."""

    def status(device: str, params: dict[str, Any]) -> dict[str, Any]:
        raw = params.get("number")
        if not isinstance(raw, str) or set(params) != {"number"}:
            raise RpcMethodError(BAD_REQUEST, "params must be {number: string}")
        asked = raw.strip()  # echoed as asked: the kiosk checks the answer is for its question
        number = asked.upper()
        kind = "application" if _APPLICATION.match(number) else "case"
        if kind == "case" and not _CASE.match(number):
            raise RpcMethodError(BAD_REQUEST, "number must be an application (A...) or case (C...)")
        with engine.begin() as conn:
            allowed = _is_kiosk(conn, device)
            answer = _status_of(conn, kind, number, asked) if allowed else None
            audit(
                conn,
                clock(),
                f"device:{device}",
                STATUS_METHOD if allowed else f"{STATUS_METHOD}_refused",
                device_id=device,
                kind=kind,
                found=answer is not None,
            )
        if not allowed:
            raise _forbidden(STATUS_METHOD)
        if answer is None:
            raise RpcMethodError("not-found", f"no such {kind} on this server")
        return answer

    return status


def _status_of(conn: Connection, kind: str, number: str, asked: str) -> dict[str, Any] | None:
    if kind == "application":
        try:
            application = get_application(conn, number)
        except ApplicationNotFoundError:
            return None
        # No reason: it is the office's free text and may name someone.
        return {
            "number": asked,
            "title": application.title,
            "status": status_text(application.status),
            "updated_at": application.updated_at,
        }
    row = conn.execute(
        select(_cases.c.state, _cases.c.updated, _services.c.name)
        .join(_services, _services.c.id == _cases.c.service_id)
        .where(_cases.c.id == number)
    ).first()
    if row is None:
        return None
    return {
        "number": asked,
        "title": row.name,
        "status": STATE_TEXT.get(row.state, row.state),
        "updated_at": row.updated,
    }
