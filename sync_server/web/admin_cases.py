"""Admin pages for cases: the filtered list, one case with its audit trail, and the case actions
(cancel before collection, reassign to a chosen worker, de-escalate).

Staff may take these actions on the cases of their own area; administrators on every case. The
resident's phone number is never shown whole (``138****5678``).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Final, cast

from fastapi import APIRouter, Form, HTTPException, Path, Query, Request, status
from fastapi.responses import Response
from sqlalchemy import Connection, Table, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from sync_server.cases import FINAL_STATES, CaseRecord, CaseStateError, audit, get_case, move
from sync_server.dispatcher import DispatchSettings
from sync_server.domain_models import (
    CASE_STATES,
    OPEN_ASSIGNMENT_STATUSES,
    Assignment,
    AuditEntry,
    Case,
    IssuedCredential,
    Service,
    ServicePoint,
    Worker,
    WorkerGrid,
)
from sync_server.web.admin_access import (
    CASE_LEVEL_TEXT,
    CASE_STATE_TEXT,
    CREDENTIAL_KIND_TEXT,
    AdminUser,
    Csrf,
    admin_action,
    admin_user,
    area_names,
    areas_of_level,
    ctx_of,
    mask_phone,
    page,
    redirect,
)
from sync_server.web.resident import CASE_PATH

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter()

_cases = cast(Table, Case.__table__)
_services = cast(Table, Service.__table__)
_points = cast(Table, ServicePoint.__table__)
_workers = cast(Table, Worker.__table__)
_grids = cast(Table, WorkerGrid.__table__)
_assignments = cast(Table, Assignment.__table__)
_audit = cast(Table, AuditEntry.__table__)
_issued = cast(Table, IssuedCredential.__table__)

CaseId = Annotated[str, Path(pattern=CASE_PATH)]
CANCELLABLE: Final = ("draft", "deposited", "assigned")
"""Flow states a case may be cancelled from: before a worker has collected the documents."""
REASSIGNABLE: Final = ("deposited", "assigned")
"""Flow states a pickup may be given to another worker in."""
CANCEL_REASONS: Final = {
    "resident_request": "居民要求取消",
    "duplicate": "重复案件",
    "wrong_service": "选错服务",
    "other": "其他原因",
}
"""Fixed reasons (no free text: the audit trail must hold no personal data)."""
STATE_FILTER = r"^(open|" + "|".join(CASE_STATES) + r")?$"
MAX_ROWS: Final = 300


# -- the list --------------------------------------------------------------------------------------


@router.get("/cases")
def case_list(
    request: Request,
    state: Annotated[str, Query(pattern=STATE_FILTER)] = "",
    level: Annotated[str, Query(pattern=r"^(grid|community|street)?$")] = "",
    grid: Annotated[str, Query(max_length=32)] = "",
    overdue: Annotated[str, Query(pattern=r"^1?$")] = "",
) -> Response:
    admin = admin_user(request)
    now = ctx_of(request).clock()
    query = (
        select(
            _cases,
            _services.c.name.label("service_name"),
            _workers.c.display_name.label("worker_name"),
            _points.c.name.label("locker"),
        )
        .join(_services, _services.c.id == _cases.c.service_id)
        .join(_points, _points.c.device_id == _cases.c.device_id)
        .outerjoin(_workers, _workers.c.id == _cases.c.worker_id)
        .where(admin.area_filter(_cases.c.grid_id))
    )
    if state == "open":
        query = query.where(_cases.c.state.notin_(FINAL_STATES))
    elif state:
        query = query.where(_cases.c.state == state)
    if level:
        query = query.where(_cases.c.level == level)
    if grid:
        query = query.where(_cases.c.grid_id == grid)
    if overdue:
        query = query.where(
            or_(_cases.c.state.in_(("overdue", "escalated")), _cases.c.due_at < now)
        )
    query = query.order_by(_cases.c.due_at.is_(None), _cases.c.due_at, _cases.c.created.desc())
    with ctx_of(request).engine.connect() as conn:
        rows = conn.execute(query.limit(MAX_ROWS)).all()
        grids = areas_of_level(conn, admin, "grid")
        names = area_names(conn)
    filters = {"state": state, "level": level, "grid": grid, "overdue": overdue}
    return page(
        request,
        admin,
        "admin_cases.html",
        rows=rows,
        filters=filters,
        grids=grids,
        names=names,
        states=CASE_STATE_TEXT,
        levels=CASE_LEVEL_TEXT,
        max_rows=MAX_ROWS,
    )


# -- one case --------------------------------------------------------------------------------------


def _scoped_case(
    conn: Connection, admin: AdminUser, case_id: str, *, for_update: bool = False
) -> CaseRecord:
    try:
        case = get_case(conn, case_id, for_update=for_update)
    except LookupError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "没有这个案件。") from None
    if not admin.sees(case.grid_id):
        log.warning("%s refused a case outside their area", admin.user.actor)
        raise HTTPException(status.HTTP_404_NOT_FOUND, "没有这个案件。")
    return case


def _person(actor: str) -> int | None:
    """The worker id in an audit actor ``worker:7``/``admin:7`` (None for others)."""
    kind, _, number = actor.partition(":")
    return int(number) if kind in ("worker", "admin") and number.isdigit() else None


def _actor_names(conn: Connection, actors: list[str]) -> dict[str, str]:
    """Audit actors that are people -> their display names, for the audit trail."""
    ids = {actor: person for actor in actors if (person := _person(actor)) is not None}
    if not ids:
        return {}
    names = {
        row.id: row.display_name
        for row in conn.execute(
            select(_workers.c.id, _workers.c.display_name).where(
                _workers.c.id.in_(sorted(set(ids.values())))
            )
        )
    }
    return {actor: names.get(person, "") for actor, person in ids.items()}


def _candidates(conn: Connection, admin: AdminUser, case: CaseRecord) -> list[dict[str, Any]]:
    """Active grid workers this user may hand the case to, those covering its grid first."""
    grids: dict[int, set[str]] = {}
    for worker_id, grid_id in conn.execute(select(_grids.c.worker_id, _grids.c.grid_id)):
        grids.setdefault(int(worker_id), set()).add(grid_id)
    held: dict[int, int] = dict(
        conn.execute(
            select(_assignments.c.worker_id, func.count())
            .where(_assignments.c.status.in_(OPEN_ASSIGNMENT_STATUSES))
            .group_by(_assignments.c.worker_id)
        ).all()
    )
    found = []
    for row in conn.execute(select(_workers).where(_workers.c.role == "worker", _workers.c.active)):
        covered = grids.get(row.id, set())
        if not admin.is_admin and not any(admin.sees(g) for g in covered):
            continue
        found.append(
            {
                "id": row.id,
                "name": row.display_name,
                "local": case.grid_id in covered,
                "open": held.get(row.id, 0),
                "capacity": row.capacity,
            }
        )
    found.sort(key=lambda w: (not w["local"], w["open"], w["name"]))
    return found


@router.get("/cases/{case_id}")
def case_page(request: Request, case_id: CaseId) -> Response:
    admin = admin_user(request)
    with ctx_of(request).engine.connect() as conn:
        case = _scoped_case(conn, admin, case_id)
        service = conn.execute(select(_services).where(_services.c.id == case.service_id)).one()
        locker = conn.execute(select(_points).where(_points.c.device_id == case.device_id)).one()
        trail = conn.execute(
            select(_audit).where(_audit.c.case_id == case.id).order_by(_audit.c.at, _audit.c.id)
        ).all()
        offers = conn.execute(
            select(_assignments, _workers.c.display_name.label("worker_name"))
            .join(_workers, _workers.c.id == _assignments.c.worker_id)
            .where(_assignments.c.case_id == case.id)
            .order_by(_assignments.c.created, _assignments.c.id)
        ).all()
        issued = conn.execute(
            select(_issued).where(_issued.c.case_id == case.id).order_by(_issued.c.issued)
        ).all()
        actors = _actor_names(conn, [row.actor for row in trail])
        worker = None
        if case.worker_id is not None:
            worker = conn.execute(
                select(_workers.c.display_name).where(_workers.c.id == case.worker_id)
            ).scalar_one_or_none()
        candidates = _candidates(conn, admin, case) if _may_reassign(case) else []
        names = area_names(conn)
    return page(
        request,
        admin,
        "admin_case.html",
        case=case,
        service=service,
        locker=locker,
        trail=trail,
        offers=offers,
        issued=issued,
        actors=actors,
        worker=worker,
        candidates=candidates,
        names=names,
        phone=mask_phone(case.phone),
        states=CASE_STATE_TEXT,
        levels=CASE_LEVEL_TEXT,
        kinds=CREDENTIAL_KIND_TEXT,
        may_cancel=_may_cancel(case),
        may_de_escalate=_may_de_escalate(case),
        reasons=CANCEL_REASONS,
    )


def _may_cancel(case: CaseRecord) -> bool:
    return case.state not in FINAL_STATES and case.effective in CANCELLABLE


def _may_reassign(case: CaseRecord) -> bool:
    return case.state not in FINAL_STATES and case.effective in REASSIGNABLE


def _may_de_escalate(case: CaseRecord) -> bool:
    return case.state not in FINAL_STATES and (case.state == "escalated" or case.level != "grid")


# -- actions ---------------------------------------------------------------------------------------


def _conflict(err: Exception) -> HTTPException:
    return HTTPException(
        status.HTTP_409_CONFLICT, f"案件刚被更新或当前状态不允许此操作，请刷新后重试（{err}）。"
    )


def _withdraw_offers(conn: Connection, case: CaseRecord, now: float) -> int:
    """End the case's open assignment (before it is cancelled or given to someone else)."""
    return conn.execute(
        update(_assignments)
        .where(
            _assignments.c.case_id == case.id,
            _assignments.c.status.in_(OPEN_ASSIGNMENT_STATUSES),
        )
        .values(status="cancelled", finished_at=now)
    ).rowcount


def _back_to_pool(
    conn: Connection, case: CaseRecord, now: float, actor: str, why: str
) -> CaseRecord:
    """An ``assigned`` case back to ``deposited``, keeping its deadline (the flow allows no
    direct ``assigned -> cancelled`` or ``assigned -> assigned``)."""
    if case.effective != "assigned":
        return case
    return move(conn, case, "deposited", now, actor=actor, reason=why, due_at=case.due_at)


@router.post("/cases/{case_id}/cancel")
def cancel(
    request: Request,
    case_id: CaseId,
    csrf: Csrf,
    reason: Annotated[str, Form(pattern=r"^(resident_request|duplicate|wrong_service|other)$")],
) -> Response:
    """Cancel a case whose documents no worker has collected yet."""
    admin = admin_action(request, csrf, admins_only=False)
    ctx = ctx_of(request)
    now = ctx.clock()
    try:
        with ctx.engine.begin() as conn:
            case = _scoped_case(conn, admin, case_id, for_update=True)
            if not _may_cancel(case):
                raise HTTPException(
                    status.HTTP_409_CONFLICT, "材料已被网格员取走（或案件已结束），不能再取消。"
                )
            _withdraw_offers(conn, case, now)
            case = _back_to_pool(conn, case, now, admin.user.actor, "cancel")
            move(conn, case, "cancelled", now, actor=admin.user.actor, reason=reason)
    except CaseStateError as err:
        raise _conflict(err) from err
    return redirect(f"/admin/cases/{case_id}", "cancelled")


@router.post("/cases/{case_id}/reassign")
def reassign(
    request: Request, case_id: CaseId, csrf: Csrf, worker: Annotated[int, Form(ge=1)]
) -> Response:
    """Offer the pickup to a chosen worker (an ``offered`` assignment; the case ``assigned``).

    The worker acknowledges it in the app like a dispatcher's offer; if they do not, the
    dispatcher's offer timeout puts the case back in the pool.
    """
    admin = admin_action(request, csrf, admins_only=False)
    ctx = ctx_of(request)
    now = ctx.clock()
    ack_s = float(ctx.extra.get("ack_timeout_s", DispatchSettings().ack_timeout_s))
    try:
        with ctx.engine.begin() as conn:
            case = _scoped_case(conn, admin, case_id, for_update=True)
            if not _may_reassign(case):
                raise HTTPException(status.HTTP_409_CONFLICT, "只有等待取件的案件可以改派。")
            if worker not in {w["id"] for w in _candidates(conn, admin, case)}:
                raise HTTPException(
                    status.HTTP_422_UNPROCESSABLE_CONTENT, "请选择本辖区内在职的网格员。"
                )
            withdrawn = _withdraw_offers(conn, case, now)
            case = _back_to_pool(conn, case, now, admin.user.actor, "reassign")
            conn.execute(
                insert(_assignments).values(
                    case_id=case.id,
                    worker_id=worker,
                    kind="pickup",
                    status="offered",
                    created=now,
                    ack_due=now + ack_s,
                )
            )
            move(
                conn,
                case,
                "assigned",
                now,
                actor=admin.user.actor,
                reason="reassigned",
                worker_id=worker,
            )
            audit(
                conn,
                now,
                admin.user.actor,
                "case.reassigned",
                case_id=case.id,
                device_id=case.device_id,
                worker=worker,
                withdrawn=withdrawn,
            )
    except (CaseStateError, IntegrityError) as err:
        raise _conflict(err) from err
    return redirect(f"/admin/cases/{case_id}", "reassigned")


@router.post("/cases/{case_id}/de-escalate")
def de_escalate(request: Request, case_id: CaseId, csrf: Csrf) -> Response:
    """Hand an escalated case back to its grid: the overlay is lifted, the level is ``grid``.

    A deadline already passed is renewed by the service's hours for the step the case is in, so
    the SLA does not escalate it again at once.
    """
    admin = admin_action(request, csrf, admins_only=False)
    ctx = ctx_of(request)
    now = ctx.clock()
    with ctx.engine.begin() as conn:
        case = _scoped_case(conn, admin, case_id, for_update=True)
        if not _may_de_escalate(case):
            raise HTTPException(status.HTTP_409_CONFLICT, "该案件没有上报，无需撤回。")
        values: dict[str, Any] = {"level": "grid", "updated": now, "version": case.version + 1}
        if case.state == "escalated":
            values.update(state=case.effective, resumes=None)
        if case.due_at is None or case.due_at <= now:
            values["due_at"] = _renewed_deadline(conn, case, now)
        result = conn.execute(
            update(_cases)
            .where(_cases.c.id == case.id, _cases.c.version == case.version)
            .values(**values)
        )
        if result.rowcount != 1:
            raise _conflict(CaseStateError(f"case {case.id} changed meanwhile"))
        audit(
            conn,
            now,
            admin.user.actor,
            "case.de_escalated",
            case_id=case.id,
            device_id=case.device_id,
            **{"from": case.state, "level": case.level},
        )
    return redirect(f"/admin/cases/{case_id}", "de_escalated")


def _renewed_deadline(conn: Connection, case: CaseRecord, now: float) -> float | None:
    hours = conn.execute(
        select(_services.c.pickup_hours, _services.c.process_hours).where(
            _services.c.id == case.service_id
        )
    ).one()
    if case.effective in REASSIGNABLE:
        return now + float(hours.pickup_hours) * 3600
    if case.effective in ("collected", "processing"):
        return now + float(hours.process_hours) * 3600
    return case.due_at
