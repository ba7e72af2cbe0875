"""The resident's side of a locker: the page behind the locker's QR, services, deposit, case.

Flow (DESIGN.md section 1): the locker's printed QR opens ``/l/{locker}``; the resident picks a
service, reads what documents it needs, and asks for a compartment: a ``draft`` case is opened and
a signed ``locker.deposit`` command sent to the locker, which opens a free compartment. The
resident is sent to the case page ``/c/{case}/{token}`` (the token is the resident's only key to
the case; the database keeps its hash). The page follows the case; once the result is stored it
shows the ``collect`` credential QR the locker's scanner reads, offline too.

The JSON API under ``/api/v1`` offers the same for apps (the case token in ``X-Case-Token``).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, cast

import segno
from fastapi import APIRouter, Form, Header, HTTPException, Path, Request, status
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import Connection, Table, select

from sync_server.cases import (
    CaseNotFoundError,
    CaseRecord,
    audit,
    check_access,
    open_case,
)
from sync_server.credentials import COLLECT_VALID_S, issue_credential
from sync_server.domain_models import Compartment, Service, ServicePoint
from sync_server.phones import normalize_mobile
from sync_server.web.api_errors import problem_responses
from sync_server.web.app import html
from sync_server.web.context import WebContext

__all__ = ["STATE_TEXT", "api", "pages"]

log = logging.getLogger(__name__)

pages = APIRouter(include_in_schema=False)
# Every API answer that is not a success has a declared body (docs/web.md, "The JSON API").
api = APIRouter(prefix="/api/v1", tags=["resident"], responses=problem_responses(422))

_services = cast(Table, Service.__table__)
_points = cast(Table, ServicePoint.__table__)
_compartments = cast(Table, Compartment.__table__)

DEVICE_PATH = r"^[A-Za-z0-9_.-]{1,64}$"
SERVICE_PATH = r"^[a-z0-9][a-z0-9_-]{0,31}$"
CASE_PATH = r"^C[2-9A-HJ-NP-Z]{9}$"
TOKEN_PATH = r"^[A-Za-z0-9_-]{16,64}$"  # noqa: S105 -- a pattern, not a secret
DeviceId = Annotated[str, Path(pattern=DEVICE_PATH)]
ServiceId = Annotated[str, Path(pattern=SERVICE_PATH)]
CaseId = Annotated[str, Path(pattern=CASE_PATH)]
Token = Annotated[str, Path(pattern=TOKEN_PATH)]

STATE_TEXT = {
    "draft": "等待存件：请把材料放入打开的格口并关好柜门",
    "deposited": "材料已存入，等待网格员取件",
    "assigned": "已安排网格员取件",
    "collected": "网格员已取走材料，正在办理",
    "processing": "正在办理",
    "result_stored": "办理结果已放入柜中，请凭取件码取件",
    "completed": "已取件，办理完成",
    "overdue": "办理超时，已提醒相关人员",
    "escalated": "已上报社区/街道跟进",
    "cancelled": "已取消",
}


def _ctx(request: Request) -> WebContext:
    return cast(WebContext, request.app.state.context)


def _locker(conn: Connection, device_id: str) -> Any:
    point = conn.execute(
        select(_points).where(_points.c.device_id == device_id, _points.c.kind == "locker")
    ).first()
    if point is None or point.revoked_at is not None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "没有这个柜机，请重新扫描柜机上的二维码。")
    return point


def _active_services(conn: Connection) -> list[Any]:
    return list(
        conn.execute(select(_services).where(_services.c.active).order_by(_services.c.name))
    )


def _service(conn: Connection, service_id: str) -> Any:
    row = conn.execute(
        select(_services).where(_services.c.id == service_id, _services.c.active)
    ).first()
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "没有这项服务，或已停办。")
    return row


def _normal_phone(phone: str | None) -> str | None:
    """A mainland mobile number as 11 digits, None when empty; ``ValueError`` otherwise."""
    if phone is None or not phone.strip():
        return None
    mobile = normalize_mobile(phone)
    if mobile is None:
        raise ValueError("手机号应为11位数字，以1开头")
    return mobile


def _start_case(
    ctx: WebContext, device_id: str, service_id: str, phone: str | None
) -> tuple[CaseRecord, str, bool]:
    now = ctx.clock()
    with ctx.engine.begin() as conn:
        _locker(conn, device_id)
        _service(conn, service_id)
        case, token = open_case(conn, now, service_id=service_id, device_id=device_id, phone=phone)
    sent = _request_compartment(ctx, case)
    return case, token, sent


def _request_compartment(ctx: WebContext, case: CaseRecord) -> bool:
    """Send ``locker.deposit`` for a draft case; False when the locker cannot be reached now."""
    command = ctx.send_command(case.device_id, "locker.deposit", {"case": case.id})
    with ctx.engine.begin() as conn:
        audit(
            conn,
            ctx.clock(),
            "resident",
            "case.compartment_requested",
            case_id=case.id,
            device_id=case.device_id,
            command=command,
            sent=command is not None,
        )
    return command is not None


def _compartment_of(conn: Connection, case: CaseRecord) -> int | None:
    if case.result_compartment is not None and case.effective == "result_stored":
        return case.result_compartment
    if case.compartment is not None:
        return case.compartment
    row = conn.execute(
        select(_compartments.c.number).where(
            _compartments.c.device_id == case.device_id, _compartments.c.case_id == case.id
        )
    ).first()
    return None if row is None else int(row.number)


def _case_view(conn: Connection, case: CaseRecord) -> dict[str, Any]:
    service = conn.execute(select(_services.c.name).where(_services.c.id == case.service_id))
    locker = conn.execute(select(_points.c.name).where(_points.c.device_id == case.device_id))
    return {
        "case": case.id,
        "state": case.effective if case.state == "overdue" else case.state,
        "state_text": STATE_TEXT[case.state],
        "service": service.scalar_one(),
        "locker": locker.scalar_one_or_none() or case.device_id,
        "compartment": _compartment_of(conn, case),
        "due_at": case.due_at,
        "can_collect": case.effective == "result_stored",
    }


# -- pages ---------------------------------------------------------------------------------


@pages.get("/l/{device_id}")
def locker_page(request: Request, device_id: DeviceId) -> Response:
    ctx = _ctx(request)
    with ctx.engine.connect() as conn:
        point = _locker(conn, device_id)
        services = _active_services(conn)
    return html(request, "locker.html", point=point, services=services)


@pages.get("/l/{device_id}/s/{service_id}")
def service_page(request: Request, device_id: DeviceId, service_id: ServiceId) -> Response:
    ctx = _ctx(request)
    with ctx.engine.connect() as conn:
        point = _locker(conn, device_id)
        service = _service(conn, service_id)
    return html(request, "service.html", point=point, service=service, error=None)


@pages.post("/l/{device_id}/s/{service_id}")
def deposit_form(
    request: Request,
    device_id: DeviceId,
    service_id: ServiceId,
    phone: Annotated[str, Form(max_length=32)] = "",
    consent: Annotated[str | None, Form(max_length=8)] = None,
) -> Response:
    ctx = _ctx(request)
    try:
        normal = _normal_phone(phone)
        if consent != "yes":
            raise ValueError("请先确认材料已备齐并同意由网格员代办")
    except ValueError as err:
        with ctx.engine.connect() as conn:
            point, service = _locker(conn, device_id), _service(conn, service_id)
        return html(
            request, "service.html", status=422, point=point, service=service, error=str(err)
        )
    case, token, _sent = _start_case(ctx, device_id, service_id, normal)
    return RedirectResponse(f"/c/{case.id}/{token}", status_code=status.HTTP_303_SEE_OTHER)


def _resident_case(ctx: WebContext, case_id: str, token: str) -> CaseRecord:
    try:
        with ctx.engine.connect() as conn:
            return check_access(conn, case_id, token)
    except CaseNotFoundError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "链接无效或已过期。") from None


@pages.get("/c/{case_id}/{token}")
def case_page(request: Request, case_id: CaseId, token: Token) -> Response:
    ctx = _ctx(request)
    case = _resident_case(ctx, case_id, token)
    with ctx.engine.connect() as conn:
        view = _case_view(conn, case)
    return html(request, "case.html", view=view, base=f"/c/{case_id}/{token}")


@pages.post("/c/{case_id}/{token}/confirm")
def confirm_page(request: Request, case_id: CaseId, token: Token) -> Response:
    ctx = _ctx(request)
    _confirm(ctx, _resident_case(ctx, case_id, token))
    return RedirectResponse(f"/c/{case_id}/{token}", status_code=status.HTTP_303_SEE_OTHER)


@pages.post("/c/{case_id}/{token}/reopen")
def reopen_page(request: Request, case_id: CaseId, token: Token) -> Response:
    ctx = _ctx(request)
    case = _resident_case(ctx, case_id, token)
    if case.state == "draft":
        _request_compartment(ctx, case)
    return RedirectResponse(f"/c/{case_id}/{token}", status_code=status.HTTP_303_SEE_OTHER)


@pages.get("/c/{case_id}/{token}/collect")
def collect_page(request: Request, case_id: CaseId, token: Token) -> Response:
    ctx = _ctx(request)
    case = _resident_case(ctx, case_id, token)
    credential = _collect_credential(ctx, case)
    qr_svg = segno.make(credential["text"], error="m").svg_inline(scale=6, border=4, omitsize=True)
    with ctx.engine.connect() as conn:
        view = _case_view(conn, case)
    return html(
        request,
        "collect.html",
        view=view,
        qr_svg=qr_svg,
        base=f"/c/{case_id}/{token}",
        expires=credential["expires"],
    )


def _confirm(ctx: WebContext, case: CaseRecord) -> None:
    with ctx.engine.begin() as conn:
        audit(
            conn,
            ctx.clock(),
            "resident",
            "case.resident_confirmed",
            case_id=case.id,
            device_id=case.device_id,
            state=case.state,
        )


def _collect_credential(ctx: WebContext, case: CaseRecord) -> dict[str, Any]:
    if case.effective != "result_stored" or case.result_compartment is None:
        raise HTTPException(status.HTTP_409_CONFLICT, "办理结果还没有放入柜中，暂不能取件。")
    with ctx.engine.begin() as conn:
        issued = issue_credential(
            conn,
            ctx.signing_key,
            ctx.clock(),
            kind="collect",
            device_id=case.device_id,
            case_id=case.id,
            compartment=case.result_compartment,
            valid_s=COLLECT_VALID_S,
        )
    return {"text": issued.text, "expires": issued.expires, "cti": issued.cti}


# -- JSON API ------------------------------------------------------------------------------


class DocumentNeeded(BaseModel):
    name: str
    copies: int
    note: str = ""


class ServiceOut(BaseModel):
    id: str
    name: str
    description: str
    documents: list[DocumentNeeded]


class LockerOut(BaseModel):
    device: str
    name: str
    address: str
    services: list[ServiceOut]


class CaseIn(BaseModel):
    service: Annotated[str, Field(pattern=SERVICE_PATH)]
    phone: Annotated[str | None, Field(max_length=32)] = None

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str | None) -> str | None:
        return _normal_phone(value)


class CaseCreated(BaseModel):
    case: str
    token: str
    url: str
    compartment_requested: bool


class CaseOut(BaseModel):
    case: str
    state: str
    state_text: str
    service: str
    locker: str
    compartment: int | None
    due_at: float | None
    can_collect: bool


class CredentialOut(BaseModel):
    text: str
    expires: float


TokenHeader = Annotated[str, Header(alias="X-Case-Token", pattern=TOKEN_PATH)]


def _service_out(row: Any) -> ServiceOut:
    return ServiceOut(
        id=row.id,
        name=row.name,
        description=row.description,
        documents=[DocumentNeeded(**d) for d in row.documents],
    )


@api.get("/lockers/{device_id}", response_model=LockerOut, responses=problem_responses(404))
def api_locker(request: Request, device_id: DeviceId) -> LockerOut:
    """A locker and the services residents can start there."""
    ctx = _ctx(request)
    with ctx.engine.connect() as conn:
        point = _locker(conn, device_id)
        services = [_service_out(row) for row in _active_services(conn)]
    return LockerOut(
        device=point.device_id, name=point.name, address=point.address, services=services
    )


@api.post(
    "/lockers/{device_id}/cases",
    response_model=CaseCreated,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(400, 404),
)
def api_open_case(request: Request, device_id: DeviceId, body: CaseIn) -> CaseCreated:
    """Open a case and ask the locker for a compartment (``locker.deposit``)."""
    ctx = _ctx(request)
    case, token, sent = _start_case(ctx, device_id, body.service, body.phone)
    return CaseCreated(
        case=case.id, token=token, url=f"/c/{case.id}/{token}", compartment_requested=sent
    )


@api.get("/cases/{case_id}", response_model=CaseOut, responses=problem_responses(404))
def api_case(request: Request, case_id: CaseId, token: TokenHeader) -> CaseOut:
    """The case as its resident sees it."""
    ctx = _ctx(request)
    case = _resident_case(ctx, case_id, token)
    with ctx.engine.connect() as conn:
        return CaseOut(**_case_view(conn, case))


@api.post("/cases/{case_id}/confirm", status_code=204, responses=problem_responses(404))
def api_confirm(request: Request, case_id: CaseId, token: TokenHeader) -> Response:
    """The resident says the documents are in and the door is closed (recorded)."""
    ctx = _ctx(request)
    _confirm(ctx, _resident_case(ctx, case_id, token))
    return Response(status_code=204)


@api.post(
    "/cases/{case_id}/credential",
    response_model=CredentialOut,
    responses=problem_responses(404, 409),
)
def api_credential(request: Request, case_id: CaseId, token: TokenHeader) -> CredentialOut:
    """A new ``collect`` credential for the stored result (each single-use at the locker)."""
    ctx = _ctx(request)
    issued = _collect_credential(ctx, _resident_case(ctx, case_id, token))
    return CredentialOut(text=issued["text"], expires=issued["expires"])
