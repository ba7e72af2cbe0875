"""The grid worker's unlock app (mobile pages, installable as a PWA) under ``/w``.

A worker sees the pickups and returns assigned to them, by deadline and, among tasks due in the
same half hour, by the distance from their home base to the locker; acknowledges an offer (an
offer not acknowledged within the dispatcher's ``ack_timeout_s`` goes to someone else); at the
locker opens the compartment online (signed ``locker.open``) or shows an offline ``worker-open``
credential to the scanner; confirms the collection; marks the case processing; and brings the
result back (``locker.deposit`` with ``content: result``, or an offline ``deposit`` credential).

Access: a worker reaches only cases assigned to them; community/street staff the cases of their
area; an administrator all. Anything else is 404, the same as a case that does not exist.
"""

from __future__ import annotations

import logging
import math
from typing import Annotated, Any, cast

import segno
from fastapi import APIRouter, Form, HTTPException, Path, Request, status
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import Connection, Table, select, update

from sync_server.areas import ancestors
from sync_server.cases import CaseRecord, CaseStateError, audit, get_case, move
from sync_server.credentials import WORKER_OPEN_VALID_S, issue_credential
from sync_server.dispatcher import distance_km
from sync_server.domain_models import (
    OPEN_ASSIGNMENT_STATUSES,
    Assignment,
    Case,
    Service,
    ServicePoint,
    Worker,
)
from sync_server.web.app import html
from sync_server.web.auth import (
    COOKIE,
    IDLE_S,
    LoginRefusedError,
    SessionUser,
    check_csrf,
    current_user,
    log_in,
    log_out,
)
from sync_server.web.context import WebContext
from sync_server.web.resident import CASE_PATH, STATE_TEXT

__all__ = ["pages"]

log = logging.getLogger(__name__)

pages = APIRouter(prefix="/w", include_in_schema=False)

_cases = cast(Table, Case.__table__)
_assignments = cast(Table, Assignment.__table__)
_services = cast(Table, Service.__table__)
_points = cast(Table, ServicePoint.__table__)

_workers = cast(Table, Worker.__table__)

SAME_DEADLINE_S = 1800.0
"""Tasks due within the same half hour (clock half hours) are equally urgent: among them the
nearer locker comes first (DESIGN.md 1: "ordered by deadline and distance")."""

CaseId = Annotated[str, Path(pattern=CASE_PATH)]
Csrf = Annotated[str, Form(max_length=64)]


def _ctx(request: Request) -> WebContext:
    return cast(WebContext, request.app.state.context)


def _user(request: Request) -> SessionUser:
    try:
        return current_user(request)
    except HTTPException as err:
        if err.status_code == status.HTTP_401_UNAUTHORIZED:
            raise HTTPException(
                status.HTTP_303_SEE_OTHER, headers={"Location": "/w/login"}
            ) from None
        raise


def _my_case(conn: Connection, user: SessionUser, case_id: str) -> CaseRecord:
    try:
        case = get_case(conn, case_id)
    except LookupError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "没有这个案件。") from None
    if user.role == "admin":
        return case
    if user.role == "staff" and user.area_id in {a for a, _ in ancestors(conn, case.grid_id)}:
        return case
    if case.worker_id == user.id:
        return case
    log.warning("worker %d refused access to case %s", user.id, case_id)
    raise HTTPException(status.HTTP_404_NOT_FOUND, "没有这个案件。")


def _back(case_id: str | None = None) -> RedirectResponse:
    return RedirectResponse(
        f"/w/c/{case_id}" if case_id else "/w", status_code=status.HTTP_303_SEE_OTHER
    )


# -- login -----------------------------------------------------------------------------------------


@pages.get("/login")
def login_page(request: Request) -> Response:
    return html(request, "login.html", error=None)


@pages.post("/login")
def login(
    request: Request,
    username: Annotated[str, Form(min_length=1, max_length=64)],
    password: Annotated[str, Form(min_length=1, max_length=256)],
) -> Response:
    ctx = _ctx(request)
    client = request.client.host if request.client else "unknown"
    refused: LoginRefusedError | None = None
    with ctx.engine.begin() as conn:
        # The refusal is caught inside the transaction: the failure it recorded must commit.
        try:
            token, user = log_in(conn, username, password, client, ctx.clock())
        except LoginRefusedError as err:
            refused = err
    if refused is not None:
        code = 429 if refused.limited else status.HTTP_401_UNAUTHORIZED
        return html(request, "login.html", status=code, error=str(refused))
    # Staff and administrators work in the admin pages; grid workers in their task list.
    home = "/admin" if user.role in ("staff", "admin") else "/w"
    response = RedirectResponse(home, status_code=status.HTTP_303_SEE_OTHER)
    response.set_cookie(COOKIE, token, max_age=int(IDLE_S * 6), httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/")  # fmt: skip
    return response


@pages.post("/logout")
def logout(request: Request, csrf: Csrf) -> Response:
    user = _user(request)
    check_csrf(user, csrf)
    ctx = _ctx(request)
    with ctx.engine.begin() as conn:
        log_out(conn, request.cookies.get(COOKIE, ""))
    response = RedirectResponse("/w/login", status_code=status.HTTP_303_SEE_OTHER)
    response.delete_cookie(COOKIE, path="/")
    return response


# -- the list --------------------------------------------------------------------------------------


def _work_list(conn: Connection, user: SessionUser) -> list[dict[str, Any]]:
    offers = {
        row.case_id: row
        for row in conn.execute(
            select(_assignments).where(
                _assignments.c.worker_id == user.id,
                _assignments.c.status.in_(OPEN_ASSIGNMENT_STATUSES),
            )
        )
    }
    home = conn.execute(
        select(_workers.c.home_lat, _workers.c.home_lon).where(_workers.c.id == user.id)
    ).first()
    rows = conn.execute(
        select(
            _cases,
            _services.c.name.label("service_name"),
            _points.c.name.label("locker"),
            _points.c.lat.label("locker_lat"),
            _points.c.lon.label("locker_lon"),
        )
        .join(_services, _services.c.id == _cases.c.service_id)
        .join(_points, _points.c.device_id == _cases.c.device_id)
        .where(
            _cases.c.worker_id == user.id,
            _cases.c.state.notin_(("completed", "cancelled", "result_stored")),
        )
    ).all()
    items = []
    for row in rows:
        case = CaseRecord.from_row(row)
        offer = offers.get(case.id)
        km = None
        if home is not None and None not in (*home, row.locker_lat, row.locker_lon):
            km = distance_km(home.home_lat, home.home_lon, row.locker_lat, row.locker_lon)
        items.append(
            {
                "case": case.id,
                "state": case.effective,
                "state_text": STATE_TEXT[case.state],
                "service": row.service_name,
                "locker": row.locker,
                "compartment": case.compartment,
                "due_at": case.due_at,
                "km": km,
                "assignment": None if offer is None else offer.id,
                "offer_status": None if offer is None else offer.status,
                "kind": None if offer is None else offer.kind,
                "ack_due": None if offer is None else offer.ack_due,
            }
        )
    items.sort(key=_urgency)
    return items


def _urgency(item: dict[str, Any]) -> tuple[bool, float, float, float]:
    """By deadline (tasks without one last); within the same half hour, the nearer first."""
    due, km = item["due_at"], item["km"]
    slot = 0.0 if due is None else float(due // SAME_DEADLINE_S)
    return (due is None, slot, math.inf if km is None else km, due or 0.0)


@pages.get("")
def home(request: Request) -> Response:
    user = _user(request)
    ctx = _ctx(request)
    with ctx.engine.connect() as conn:
        items = _work_list(conn, user)
    return html(request, "worker_home.html", user=user, items=items, now=ctx.clock())


@pages.post("/a/{assignment_id}/ack")
def acknowledge(request: Request, assignment_id: int, csrf: Csrf) -> Response:
    user = _user(request)
    check_csrf(user, csrf)
    ctx = _ctx(request)
    now = ctx.clock()
    with ctx.engine.begin() as conn:
        result = conn.execute(
            update(_assignments)
            .where(
                _assignments.c.id == assignment_id,
                _assignments.c.worker_id == user.id,
                _assignments.c.status == "offered",
            )
            .values(status="acknowledged", acknowledged_at=now)
        )
        if result.rowcount != 1:
            raise HTTPException(
                status.HTTP_409_CONFLICT, "这项任务已不再分配给您（可能已超时改派）。"
            )
        case_id = conn.execute(
            select(_assignments.c.case_id).where(_assignments.c.id == assignment_id)
        ).scalar_one()
        audit(conn, now, user.actor, "assignment.acknowledged", case_id=case_id,
              assignment=assignment_id)  # fmt: skip
    return _back()


# -- one case --------------------------------------------------------------------------------------


@pages.get("/c/{case_id}")
def case_page(request: Request, case_id: CaseId) -> Response:
    user = _user(request)
    ctx = _ctx(request)
    with ctx.engine.connect() as conn:
        case = _my_case(conn, user, case_id)
        service = conn.execute(select(_services).where(_services.c.id == case.service_id)).one()
        locker = conn.execute(select(_points).where(_points.c.device_id == case.device_id)).one()
    return html(request, "worker_case.html", user=user, case=case, service=service,
                locker=locker, state_text=STATE_TEXT[case.state])  # fmt: skip


def _act(request: Request, case_id: str, csrf: str) -> tuple[WebContext, SessionUser, CaseRecord]:
    user = _user(request)
    check_csrf(user, csrf)
    ctx = _ctx(request)
    with ctx.engine.connect() as conn:
        return ctx, user, _my_case(conn, user, case_id)


@pages.post("/c/{case_id}/open")
def open_online(request: Request, case_id: CaseId, csrf: Csrf) -> Response:
    """Open the compartment holding the documents now (the locker must be online)."""
    ctx, user, case = _act(request, case_id, csrf)
    if case.effective not in ("deposited", "assigned") or case.compartment is None:
        raise HTTPException(status.HTTP_409_CONFLICT, "材料不在柜中，无法开柜。")
    args = {"compartment": case.compartment, "case": case.id}
    command = ctx.send_command(case.device_id, "locker.open", args)
    with ctx.engine.begin() as conn:
        audit(conn, ctx.clock(), user.actor, "case.open_requested", case_id=case.id,
              device_id=case.device_id, command=command, sent=command is not None)  # fmt: skip
    if command is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            "柜机当前离线，请使用“离线开柜码”。")  # fmt: skip
    return _back(case.id)


def _code_page(request: Request, case_id: str, kind: str) -> Response:
    user = _user(request)
    ctx = _ctx(request)
    now = ctx.clock()
    with ctx.engine.begin() as conn:
        case = _my_case(conn, user, case_id)
        if kind == "worker-open" and (
            case.effective not in ("deposited", "assigned") or case.compartment is None
        ):
            raise HTTPException(status.HTTP_409_CONFLICT, "材料不在柜中。")
        if kind == "deposit" and case.effective not in ("collected", "processing"):
            raise HTTPException(status.HTTP_409_CONFLICT, "该案件现在不能存放结果。")
        issued = issue_credential(
            conn,
            ctx.signing_key,
            now,
            kind=kind,
            device_id=case.device_id,
            case_id=case.id,
            compartment=case.compartment if kind == "worker-open" else None,
            valid_s=WORKER_OPEN_VALID_S,
            worker_id=user.id,
        )
        audit(conn, now, user.actor, f"credential.{kind}", case_id=case.id, cti=issued.cti)
    qr_svg = segno.make(issued.text, error="m").svg_inline(scale=6, border=4, omitsize=True)
    # data-code carries the same text as the QR: for scripted phones (the virtual site) and
    # accessibility tools; whoever sees the page can read the QR anyway.
    return html(request, "worker_code.html", user=user, case=case, kind=kind, qr_svg=qr_svg,
                code=issued.text, expires=issued.expires)  # fmt: skip


@pages.get("/c/{case_id}/offline-open")
def offline_open(request: Request, case_id: CaseId) -> Response:
    """An offline ``worker-open`` credential QR for the compartment holding the documents."""
    return _code_page(request, case_id, "worker-open")


@pages.get("/c/{case_id}/deposit-code")
def deposit_code(request: Request, case_id: CaseId) -> Response:
    """An offline ``deposit`` credential QR: the locker opens its smallest free compartment."""
    return _code_page(request, case_id, "deposit")


def _move(request: Request, case_id: str, csrf: str, to: str, reason: str) -> Response:
    ctx, user, case = _act(request, case_id, csrf)
    try:
        with ctx.engine.begin() as conn:
            move(conn, get_case(conn, case.id, for_update=True), to, ctx.clock(),
                 actor=user.actor, reason=reason, worker_id=case.worker_id or user.id)  # fmt: skip
    except CaseStateError as err:
        raise HTTPException(status.HTTP_409_CONFLICT, f"当前状态不能这样操作（{err}）。") from err
    return _back(case.id)


@pages.post("/c/{case_id}/collected")
def confirm_collected(request: Request, case_id: CaseId, csrf: Csrf) -> Response:
    """The worker has the documents (the locker's report may come later, or already came)."""
    return _move(request, case_id, csrf, "collected", "worker confirmed")


@pages.post("/c/{case_id}/processing")
def mark_processing(request: Request, case_id: CaseId, csrf: Csrf) -> Response:
    return _move(request, case_id, csrf, "processing", "worker started")


@pages.post("/c/{case_id}/ready")
def result_ready(request: Request, case_id: CaseId, csrf: Csrf) -> Response:
    """The result is done but someone must bring it to the locker: the dispatcher assigns the
    return (to whoever of the grid's workers it suits best, perhaps this one)."""
    ctx, user, case = _act(request, case_id, csrf)
    if case.effective != "processing" or case.result_ready_at is not None:
        raise HTTPException(status.HTTP_409_CONFLICT, "该案件不在办理中，或已在等待送回。")
    now = ctx.clock()
    with ctx.engine.begin() as conn:
        conn.execute(
            update(_cases)
            .where(_cases.c.id == case.id, _cases.c.version == case.version)
            .values(result_ready_at=now, updated=now, version=case.version + 1)
        )
        audit(conn, now, user.actor, "case.result_ready", case_id=case.id)
    return _back(case.id)


@pages.post("/c/{case_id}/return")
def return_result(request: Request, case_id: CaseId, csrf: Csrf) -> Response:
    """Ask the locker for a compartment for the result (``locker.deposit``, content result)."""
    ctx, user, case = _act(request, case_id, csrf)
    if case.effective not in ("collected", "processing"):
        raise HTTPException(status.HTTP_409_CONFLICT, "该案件现在不能存放结果。")
    command = ctx.send_command(case.device_id, "locker.deposit",
                               {"case": case.id, "content": "result"})  # fmt: skip
    with ctx.engine.begin() as conn:
        audit(conn, ctx.clock(), user.actor, "case.return_requested", case_id=case.id,
              device_id=case.device_id, command=command, sent=command is not None)  # fmt: skip
    if command is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            "柜机当前离线，请使用“离线存件码”。")  # fmt: skip
    return _back(case.id)


# -- PWA -------------------------------------------------------------------------------------------


@pages.get("/manifest.webmanifest")
def manifest() -> Response:
    body = (
        '{"name":"邻里网格员","short_name":"网格员","start_url":"/w","scope":"/w",'
        '"display":"standalone","background_color":"#f3f5f7","theme_color":"#0b6e4f",'
        '"lang":"zh-CN","icons":[{"src":"/static/icon.svg","sizes":"any",'
        '"type":"image/svg+xml","purpose":"any"}]}'
    )
    return Response(body, media_type="application/manifest+json")


@pages.get("/sw.js")
def service_worker() -> Response:
    """The service worker (served from /w so its scope is the app); it caches the shell only,
    never pages with case data."""
    script = (
        "const SHELL='linli-shell-v1';"
        "self.addEventListener('install',e=>e.waitUntil(caches.open(SHELL).then(c=>"
        "c.addAll(['/static/app.css','/static/icon.svg','/static/worker.js']))));"
        "self.addEventListener('fetch',e=>{const u=new URL(e.request.url);"
        "if(u.pathname.startsWith('/static/')){e.respondWith(caches.match(e.request)"
        ".then(r=>r||fetch(e.request)));}});"
    )
    return Response(script, media_type="text/javascript")
