"""Admin page for workers: load, capacity, shifts and grids; create, deactivate, add a shift.

Load is what the dispatcher counts against a worker's capacity: open assignments (offered or
acknowledged) plus cases whose documents the worker holds (collected, processing). Staff see the
workers of their area; only administrators change anything.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Final, cast

from argon2 import PasswordHasher
from fastapi import APIRouter, Form, HTTPException, Path, Request, status
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy import Connection, Table, delete, func, insert, select, update

from sync_server.cases import audit, get_case, move
from sync_server.dispatcher import HOLDING, worker_load
from sync_server.domain_models import (
    OPEN_ASSIGNMENT_STATUSES,
    Area,
    Assignment,
    Case,
    Shift,
    WebSession,
    Worker,
    WorkerGrid,
)
from sync_server.phones import normalize_mobile
from sync_server.sitedata import WorkerData
from sync_server.web.admin_access import (
    ROLE_TEXT,
    AdminUser,
    Csrf,
    admin_action,
    admin_user,
    area_names,
    areas_of_level,
    ctx_of,
    local_datetime,
    mask_phone,
    page,
    redirect,
    unique,
)

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter()

_workers = cast(Table, Worker.__table__)
_grids = cast(Table, WorkerGrid.__table__)
_shifts = cast(Table, Shift.__table__)
_assignments = cast(Table, Assignment.__table__)
_cases = cast(Table, Case.__table__)
_sessions = cast(Table, WebSession.__table__)
_areas = cast(Table, Area.__table__)

WorkerId = Annotated[int, Path(ge=1)]
MAX_SHIFT_S: Final = 24 * 3600.0
_hasher = PasswordHasher()


def _shifts_ahead(conn: Connection, now: float) -> dict[int, list[Any]]:
    ahead: dict[int, list[Any]] = {}
    for row in conn.execute(
        select(_shifts).where(_shifts.c.end_at > now).order_by(_shifts.c.start_at)
    ):
        ahead.setdefault(int(row.worker_id), []).append(row)
    return ahead


def _visible(admin: AdminUser, row: Any, grids: list[str]) -> bool:
    return admin.is_admin or admin.sees(row.area_id) or any(admin.sees(g) for g in grids)


@router.get("/workers")
def workers(request: Request) -> Response:
    admin = admin_user(request)
    now = ctx_of(request).clock()
    with ctx_of(request).engine.connect() as conn:
        grids: dict[int, list[str]] = {}
        for worker_id, grid_id in conn.execute(
            select(_grids.c.worker_id, _grids.c.grid_id).order_by(_grids.c.grid_id)
        ):
            grids.setdefault(int(worker_id), []).append(grid_id)
        load = worker_load(conn)
        ahead = _shifts_ahead(conn, now)
        rows = []
        for row in conn.execute(select(_workers).order_by(_workers.c.role, _workers.c.username)):
            mine = grids.get(row.id, [])
            if not _visible(admin, row, mine):
                continue
            shifts = ahead.get(row.id, [])
            current = next((s for s in shifts if s.start_at <= now), None)
            upcoming = next((s for s in shifts if s.start_at > now), None)
            rows.append(
                {
                    "w": row,
                    "grids": mine,
                    "load": load.get(row.id, 0),
                    "phone": mask_phone(row.phone),
                    "current": current,
                    "upcoming": upcoming,
                }
            )
        all_grids = areas_of_level(conn, admin, "grid")
        offices = [
            *areas_of_level(conn, admin, "community"),
            *areas_of_level(conn, admin, "street"),
        ]
        names = area_names(conn)
    return page(
        request,
        admin,
        "admin_workers.html",
        rows=rows,
        names=names,
        roles=ROLE_TEXT,
        all_grids=all_grids,
        offices=offices,
    )


def _checked_worker(
    conn: Connection, data: WorkerData, area: str | None, grids: list[str]
) -> str | None:
    """The area the new account answers for; 422 when the area or a grid does not fit."""
    levels = {row.id: row.level for row in conn.execute(select(_areas.c.id, _areas.c.level))}
    if any(levels.get(g) != "grid" for g in grids):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "所选网格不存在。")
    if data.role == "staff":
        if area is None or levels.get(area) not in ("community", "street"):
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT, "社区/街道工作人员须选择所属社区或街道。"
            )
        return area
    if data.role == "worker" and not grids:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "网格员须至少负责一个网格。")
    return None


@router.post("/workers")
def create_worker(
    request: Request,
    *,
    csrf: Csrf,
    username: Annotated[str, Form(min_length=1, max_length=64)],
    display_name: Annotated[str, Form(min_length=1, max_length=64)],
    password: Annotated[str, Form(min_length=8, max_length=256)],
    role: Annotated[str, Form(pattern=r"^(worker|staff|admin)$")],
    capacity: Annotated[int, Form(ge=0, le=100)] = 5,
    area: Annotated[str, Form(max_length=32)] = "",
    phone: Annotated[str, Form(max_length=32)] = "",
    grids: Annotated[list[str] | None, Form()] = None,
) -> Response:
    """A new account; the password is stored as an argon2id hash only."""
    admin = admin_action(request, csrf)
    ctx = ctx_of(request)
    if phone.strip():
        mobile = normalize_mobile(phone)
        if mobile is None:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT, "手机号应为11位数字，以1开头。"
            )
        phone = mobile
    else:
        phone = ""
    chosen = unique(grids or [])
    try:
        data = WorkerData(
            username=username,
            name=display_name,
            role=role,
            password=password,
            capacity=capacity,
            grids=chosen,
        )
    except ValidationError as err:
        where = ".".join(str(p) for p in err.errors()[0]["loc"])
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"输入有误：{where}（用户名只能含字母、数字和 _ . -）。",
        ) from None
    now = ctx.clock()
    with ctx.engine.begin() as conn:
        area_id = _checked_worker(conn, data, area or None, chosen)
        taken = conn.execute(select(_workers.c.id).where(_workers.c.username == username)).first()
        if taken is not None:
            raise HTTPException(status.HTTP_409_CONFLICT, "该用户名已被使用。")
        worker_id = conn.execute(
            insert(_workers)
            .values(
                username=username,
                display_name=display_name,
                phone=phone or None,
                password_hash=_hasher.hash(password),
                role=role,
                area_id=area_id,
                capacity=capacity,
                active=True,
                created=now,
            )
            .returning(_workers.c.id)
        ).scalar_one()
        for grid in chosen:
            conn.execute(insert(_grids).values(worker_id=worker_id, grid_id=grid))
        audit(
            conn,
            now,
            admin.user.actor,
            "worker.created",
            worker=worker_id,
            role=role,
            grids=chosen,
            area=area_id,
        )
    return redirect("/admin/workers", "created")


def _worker(conn: Connection, worker_id: int) -> Any:
    row = conn.execute(select(_workers).where(_workers.c.id == worker_id)).first()
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "没有这个账号。")
    return row


def _release(conn: Connection, worker_id: int, now: float, actor: str) -> int:
    """Give back a deactivated worker's open offers: their cases return to the pool."""
    offers = conn.execute(
        select(_assignments).where(
            _assignments.c.worker_id == worker_id,
            _assignments.c.status.in_(OPEN_ASSIGNMENT_STATUSES),
        )
    ).all()
    for offer in offers:
        conn.execute(
            update(_assignments)
            .where(_assignments.c.id == offer.id)
            .values(status="cancelled", finished_at=now)
        )
        case = get_case(conn, offer.case_id, for_update=True)
        if case.effective == "assigned" and case.worker_id == worker_id:
            move(
                conn,
                case,
                "deposited",
                now,
                actor=actor,
                reason="worker deactivated",
                due_at=case.due_at,
            )
    return len(offers)


@router.post("/workers/{worker_id}/active")
def set_active(
    request: Request,
    worker_id: WorkerId,
    csrf: Csrf,
    active: Annotated[str, Form(pattern=r"^(0|1)$")],
) -> Response:
    """Deactivate (sessions end, open offers go back to the pool) or reactivate an account."""
    admin = admin_action(request, csrf)
    ctx = ctx_of(request)
    now = ctx.clock()
    on = active == "1"
    with ctx.engine.begin() as conn:
        row = _worker(conn, worker_id)
        if not on and row.id == admin.user.id:
            raise HTTPException(status.HTTP_409_CONFLICT, "不能停用自己的账号。")
        conn.execute(update(_workers).where(_workers.c.id == worker_id).values(active=on))
        released = 0
        if not on:
            released = _release(conn, worker_id, now, admin.user.actor)
            conn.execute(delete(_sessions).where(_sessions.c.worker_id == worker_id))
        held = conn.execute(
            select(func.count()).where(_cases.c.worker_id == worker_id, _cases.c.state.in_(HOLDING))
        ).scalar_one()
        audit(
            conn,
            now,
            admin.user.actor,
            "worker.activated" if on else "worker.deactivated",
            worker=worker_id,
            released=released,
            holding=held,
        )
    return redirect("/admin/workers", "activated" if on else "deactivated")


@router.post("/workers/{worker_id}/shifts")
def add_shift(
    request: Request,
    worker_id: WorkerId,
    csrf: Csrf,
    start: Annotated[str, Form(max_length=32)],
    end: Annotated[str, Form(max_length=32)],
) -> Response:
    """A shift (China time); the dispatcher offers work only inside one."""
    admin = admin_action(request, csrf)
    ctx = ctx_of(request)
    now = ctx.clock()
    begin, until = local_datetime(start, "开始时间"), local_datetime(end, "结束时间")
    if until <= begin or until - begin > MAX_SHIFT_S:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "班次须在开始之后结束，且不超过24小时。"
        )
    if until <= now:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "这个班次已经结束了。")
    with ctx.engine.begin() as conn:
        row = _worker(conn, worker_id)
        if row.role != "worker" or not row.active:
            raise HTTPException(status.HTTP_409_CONFLICT, "只能给在职的网格员排班。")
        conn.execute(insert(_shifts).values(worker_id=worker_id, start_at=begin, end_at=until))
        audit(
            conn,
            now,
            admin.user.actor,
            "worker.shift_added",
            worker=worker_id,
            start=begin,
            end=until,
        )
    return redirect("/admin/workers", "shift")
