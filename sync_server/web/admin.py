"""The admin pages under ``/admin`` (docs/admin.md): overview, devices, cases, workers, statistics,
the service catalogue, notices and credentials, in Simplified Chinese.

Administrators see and change everything; community/street staff see their own area and may act
on its cases only (:mod:`sync_server.web.admin_access`). Every POST checks the session's CSRF token
(on top of the app's same-origin check) and writes an audit entry.

This module holds the overview, the devices, the credentials and the statistics; the cases, the
workers and the catalogue/notices live in ``admin_cases``, ``admin_workers`` and
``admin_content``, whose routers are included here, so the app includes one router.

Revoking a device here only stops the server from serving it (its resident page, new cases,
commands); removing its MQTT account from the broker is provisioning's job (``linli provision``).
"""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any, Final, cast

from fastapi import APIRouter, Form, HTTPException, Path, Query, Request, status
from fastapi.responses import Response
from sqlalchemy import Connection, Table, and_, func, select, update

from sync_server.case_stats import case_stats
from sync_server.cases import audit
from sync_server.credentials import CredentialIssueError, revoke
from sync_server.domain_models import (
    AuditEntry,
    Case,
    Compartment,
    IssuedCredential,
    ServicePoint,
    Worker,
)
from sync_server.models import Command, Device
from sync_server.web import admin_cases, admin_content, admin_workers
from sync_server.web.admin_access import (
    CASE_LEVEL_TEXT,
    CASE_STATE_TEXT,
    COMPARTMENT_STATE_TEXT,
    CREDENTIAL_KIND_TEXT,
    AdminUser,
    Csrf,
    admin_action,
    admin_user,
    area_names,
    ctx_of,
    date_start,
    day_text,
    page,
    redirect,
)
from sync_server.web.resident import CASE_PATH, DEVICE_PATH

__all__ = ["pages"]

log = logging.getLogger(__name__)

pages = APIRouter(prefix="/admin", include_in_schema=False)

_cases = cast(Table, Case.__table__)
_points = cast(Table, ServicePoint.__table__)
_devices = cast(Table, Device.__table__)
_compartments = cast(Table, Compartment.__table__)
_commands = cast(Table, Command.__table__)
_issued = cast(Table, IssuedCredential.__table__)
_audit = cast(Table, AuditEntry.__table__)
_workers = cast(Table, Worker.__table__)

DeviceId = Annotated[str, Path(pattern=DEVICE_PATH)]
Cti = Annotated[str, Path(pattern=r"^[0-9a-f]{2,64}$")]
STATE_KEYS: Final = frozenset({"online", "boot", "at"})
"""The keys every ``up/state`` carries; anything else a device adds is shown as health."""
DEVICE_COMMANDS: Final = {
    "clear_fault": "locker.clear_fault",
    "disable": "locker.disable",
    "enable": "locker.enable",
    "ping": "sys.ping",
}
"""The commands the device page may send (form value -> command type)."""
MAX_ROWS: Final = 300
STATS_DEFAULT_DAYS: Final = 30


# -- overview --------------------------------------------------------------------------------------


@pages.get("")
def dashboard(request: Request) -> Response:
    admin = admin_user(request)
    with ctx_of(request).engine.connect() as conn:
        by_state: dict[str, int] = dict(
            conn.execute(
                select(_cases.c.state, func.count())
                .where(admin.area_filter(_cases.c.grid_id))
                .group_by(_cases.c.state)
            ).all()
        )
        attention = conn.execute(
            select(_cases)
            .where(
                admin.area_filter(_cases.c.grid_id),
                _cases.c.state.in_(("overdue", "escalated")),
            )
            .order_by(_cases.c.due_at)
            .limit(50)
        ).all()
        points = _points_with_devices(conn, admin)
        faults = conn.execute(
            select(func.count())
            .select_from(
                _compartments.join(_points, _points.c.device_id == _compartments.c.device_id)
            )
            .where(_compartments.c.state == "fault", admin.area_filter(_points.c.area_id))
        ).scalar_one()
        names = area_names(conn)
    active = [p for p in points if p.revoked_at is None]
    return page(
        request,
        admin,
        "admin_home.html",
        by_state=by_state,
        states=CASE_STATE_TEXT,
        levels=CASE_LEVEL_TEXT,
        attention=attention,
        online=sum(1 for p in active if p.online),
        offline=sum(1 for p in active if not p.online),
        revoked=len(points) - len(active),
        faults=faults,
        names=names,
    )


# -- devices ---------------------------------------------------------------------------------------


def _points_with_devices(conn: Connection, admin: AdminUser) -> list[Any]:
    return list(
        conn.execute(
            select(
                _points,
                _devices.c.online,
                _devices.c.last_seen,
                _devices.c.boot,
                _devices.c.state_at,
                _devices.c.last_state,
            )
            .outerjoin(_devices, _devices.c.id == _points.c.device_id)
            .where(admin.area_filter(_points.c.area_id))
            .order_by(_points.c.kind, _points.c.name)
        )
    )


def _health(last_state: dict[str, Any] | None) -> dict[str, str]:
    """What a device's ``up/state`` says beyond online/boot/at, as short text."""
    return {
        str(key)[:40]: str(value)[:80]
        for key, value in (last_state or {}).items()
        if key not in STATE_KEYS
    }


def _backlogs(conn: Connection) -> dict[str, tuple[Any, float]]:
    """Each device's outbox backlog from its newest answered ``sys.ping`` (``pending``)."""
    newest = (
        select(_commands.c.device_id, func.max(_commands.c.completed).label("at"))
        .where(_commands.c.type == "sys.ping", _commands.c.status == "succeeded")
        .group_by(_commands.c.device_id)
        .subquery()
    )
    rows = conn.execute(
        select(_commands.c.device_id, _commands.c.result, _commands.c.completed).join(
            newest,
            and_(_commands.c.device_id == newest.c.device_id, _commands.c.completed == newest.c.at),
        )
    )
    return {
        row.device_id: (row.result.get("pending"), float(row.completed))
        for row in rows
        if isinstance(row.result, dict)
    }


@pages.get("/devices")
def devices(request: Request) -> Response:
    admin = admin_user(request)
    with ctx_of(request).engine.connect() as conn:
        points = _points_with_devices(conn, admin)
        backlogs = _backlogs(conn)
        faults: dict[str, int] = dict(
            conn.execute(
                select(_compartments.c.device_id, func.count())
                .where(_compartments.c.state == "fault")
                .group_by(_compartments.c.device_id)
            ).all()
        )
        names = area_names(conn)
    rows = [
        {
            "point": p,
            "health": _health(p.last_state),
            "backlog": backlogs.get(p.device_id),
            "faults": faults.get(p.device_id, 0),
        }
        for p in points
    ]
    return page(request, admin, "admin_devices.html", rows=rows, names=names)


def _point(conn: Connection, admin: AdminUser, device_id: str) -> Any:
    point = conn.execute(select(_points).where(_points.c.device_id == device_id)).first()
    if point is None or not admin.sees(point.area_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "没有这台设备。")
    return point


def _fault_reasons(conn: Connection, device_id: str) -> dict[int, str]:
    """The reason of each compartment's newest ``compartment.fault`` report."""
    reasons: dict[int, str] = {}
    for row in conn.execute(
        select(_audit.c.detail)
        .where(_audit.c.device_id == device_id, _audit.c.action == "compartment.fault")
        .order_by(_audit.c.id.desc())
        .limit(200)
    ):
        number = row.detail.get("compartment") if isinstance(row.detail, dict) else None
        if isinstance(number, int) and number not in reasons:
            reasons[number] = str(row.detail.get("reason") or "")
    return reasons


@pages.get("/devices/{device_id}")
def device_page(request: Request, device_id: DeviceId) -> Response:
    admin = admin_user(request)
    with ctx_of(request).engine.connect() as conn:
        point = _point(conn, admin, device_id)
        device = conn.execute(select(_devices).where(_devices.c.id == device_id)).first()
        compartments = conn.execute(
            select(_compartments)
            .where(_compartments.c.device_id == device_id)
            .order_by(_compartments.c.number)
        ).all()
        commands = conn.execute(
            select(_commands)
            .where(_commands.c.device_id == device_id)
            .order_by(_commands.c.created.desc())
            .limit(20)
        ).all()
        open_cases = conn.execute(
            select(func.count()).where(
                _cases.c.device_id == device_id, _cases.c.state.notin_(("completed", "cancelled"))
            )
        ).scalar_one()
        reasons = _fault_reasons(conn, device_id)
        names = area_names(conn)
        backlog = _backlogs(conn).get(device_id)
    return page(
        request,
        admin,
        "admin_device.html",
        point=point,
        device=device,
        health=_health(device.last_state if device else None),
        backlog=backlog,
        compartments=compartments,
        reasons=reasons,
        commands=commands,
        open_cases=open_cases,
        names=names,
        compartment_states=COMPARTMENT_STATE_TEXT,
    )


@pages.post("/devices/{device_id}/command")
def device_command(
    request: Request,
    device_id: DeviceId,
    csrf: Csrf,
    action: Annotated[str, Form(pattern=r"^(clear_fault|disable|enable|ping)$")],
    compartment: Annotated[int | None, Form(ge=1, le=999)] = None,
) -> Response:
    """Send ``locker.clear_fault``/``disable``/``enable`` for one compartment, or ``sys.ping``."""
    admin = admin_action(request, csrf)
    ctx = ctx_of(request)
    kind = DEVICE_COMMANDS[action]
    with ctx.engine.connect() as conn:
        point = _point(conn, admin, device_id)
        known = (
            compartment is not None
            and conn.execute(
                select(_compartments.c.number).where(
                    _compartments.c.device_id == device_id, _compartments.c.number == compartment
                )
            ).first()
            is not None
        )
    if point.revoked_at is not None:
        raise HTTPException(status.HTTP_409_CONFLICT, "该设备已吊销，不能再向它发送指令。")
    args: dict[str, Any] = {}
    if kind.startswith("locker."):
        if point.kind != "locker" or not known:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT, "请选择这台柜机已上报的格口。"
            )
        args["compartment"] = compartment
    command = ctx.send_command(device_id, kind, args)
    with ctx.engine.begin() as conn:
        audit(
            conn,
            ctx.clock(),
            admin.user.actor,
            "device.command",
            device_id=device_id,
            type=kind,
            compartment=compartment,
            command=command,
            sent=command is not None,
        )
    if command is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "设备当前离线，指令未发送；请待设备上线后重试。"
        )
    return redirect(f"/admin/devices/{device_id}", "sent")


@pages.post("/devices/{device_id}/revoke")
def revoke_device(request: Request, device_id: DeviceId, csrf: Csrf) -> Response:
    """Mark the device revoked: its pages, new cases and commands stop here. Its MQTT account
    on the broker is provisioning's to remove (``linli provision``), not this page's."""
    admin = admin_action(request, csrf)
    ctx = ctx_of(request)
    now = ctx.clock()
    with ctx.engine.begin() as conn:
        point = _point(conn, admin, device_id)
        if point.revoked_at is None:
            conn.execute(
                update(_points).where(_points.c.device_id == device_id).values(revoked_at=now)
            )
        audit(
            conn,
            now,
            admin.user.actor,
            "device.revoked",
            device_id=device_id,
            already=point.revoked_at is not None,
        )
    log.warning("device %s revoked by %s", device_id, admin.user.actor)
    return redirect(f"/admin/devices/{device_id}", "revoked")


# -- credentials -----------------------------------------------------------------------------------


@pages.get("/credentials")
def credentials(
    request: Request,
    case: Annotated[str | None, Query(pattern=CASE_PATH)] = None,
    live: Annotated[str | None, Query(pattern=r"^1?$")] = None,
) -> Response:
    admin = admin_user(request)
    now = ctx_of(request).clock()
    query = (
        select(_issued, _workers.c.display_name.label("worker_name"))
        .join(_points, _points.c.device_id == _issued.c.device_id)
        .outerjoin(_workers, _workers.c.id == _issued.c.worker_id)
        .where(admin.area_filter(_points.c.area_id))
    )
    if case:
        query = query.where(_issued.c.case_id == case)
    if live:
        query = query.where(_issued.c.revoked_at.is_(None), _issued.c.expires > now)
    with ctx_of(request).engine.connect() as conn:
        rows = conn.execute(query.order_by(_issued.c.issued.desc()).limit(MAX_ROWS)).all()
    return page(
        request,
        admin,
        "admin_credentials.html",
        rows=rows,
        kinds=CREDENTIAL_KIND_TEXT,
        case=case,
        live=bool(live),
        max_rows=MAX_ROWS,
    )


@pages.post("/credentials/{cti}/revoke")
def revoke_credential(request: Request, cti: Cti, csrf: Csrf) -> Response:
    """Revoke one credential: the ``revocations`` document gets its ``cti`` (lockers pull it)."""
    admin = admin_action(request, csrf)
    ctx = ctx_of(request)
    now = ctx.clock()
    with ctx.engine.connect() as conn:
        row = conn.execute(select(_issued).where(_issued.c.cti == cti)).first()
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "没有这个凭证。")
        _point(conn, admin, row.device_id)
    try:
        count = revoke(ctx.engine, [cti], now)
    except CredentialIssueError as err:
        raise HTTPException(status.HTTP_409_CONFLICT, f"无法吊销：{err}") from err
    with ctx.engine.begin() as conn:
        audit(
            conn,
            now,
            admin.user.actor,
            "credential.revoked",
            case_id=row.case_id,
            device_id=row.device_id,
            cti=cti,
            published=count == 1,
        )
    return redirect(f"/admin/credentials?case={row.case_id}", "revoked")


# -- statistics ------------------------------------------------------------------------------------


@pages.get("/stats")
def stats(
    request: Request,
    start: Annotated[str | None, Query(max_length=10)] = None,
    end: Annotated[str | None, Query(max_length=10)] = None,
) -> Response:
    """决策分析: the cases deposited from ``start`` to ``end`` (both days included, China time)."""
    admin = admin_user(request)
    now = ctx_of(request).clock()
    end_text = end or day_text(now)
    start_text = start or day_text(
        date_start(end_text, "结束日期") - (STATS_DEFAULT_DAYS - 1) * 86400
    )
    begin = date_start(start_text, "开始日期")
    until = date_start(end_text, "结束日期") + 86400  # the end day is included
    if until <= begin:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "结束日期不能早于开始日期。")
    started = time.perf_counter()
    with ctx_of(request).engine.connect() as conn:
        report = case_stats(conn, start=begin, end=until, now=now, grids=admin.areas)
    log.debug("stats computed in %.3f s", time.perf_counter() - started)
    return page(request, admin, "admin_stats.html", report=report, start=start_text, end=end_text)


pages.include_router(admin_cases.router)
pages.include_router(admin_workers.router)
pages.include_router(admin_content.router)
