"""The resident's pages for online applications (网上申请, docs/applications.md).

``/apply`` lists the kinds; ``/apply/{kind}`` is the form: name, ID number, mobile phone, the
kind's fields, and an SMS code that proves the phone (the form's "获取验证码" button sends it,
the same form then submits it, so the page needs no script). The name and ID number must be a
resident of the records; a refusal does not say whether the ID number is known. A filed
application is shown at ``/a/{number}/{token}``: the token is the resident's key, the database
keeps its hash (like a case page).

The office's pages are in :mod:`sync_server.web.applications_admin`, included in :data:`router`
so the app includes one router.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Annotated, Any, Final, cast
from urllib.parse import parse_qsl

from fastapi import APIRouter, HTTPException, Path, Request, status
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from sync_server.application_codes import (
    CodeInvalidError,
    CodeRateLimitedError,
    SmsUnavailableError,
    consume_code,
    issue_code,
    sms_sender,
)
from sync_server.applications import (
    APPLICATION_PATH,
    KINDS,
    ApplicationInputError,
    ApplicationNotFoundError,
    ApplicationRecord,
    IdentityMismatchError,
    Kind,
    check_access,
    check_phone,
    file_application,
    status_text,
    validate_submission,
)
from sync_server.cases import audit
from sync_server.notify.service import NotificationService
from sync_server.phones import mask_mobile
from sync_server.web import applications_admin
from sync_server.web.app import html
from sync_server.web.context import WebContext
from sync_server.web.resident import TOKEN_PATH

__all__ = ["MAX_FORM_BYTES", "router"]

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

KIND_PATH: Final = r"^[a-z][a-z_]{1,31}$"
MAX_FORM_BYTES: Final = 8192
"""A form is a few short fields; anything larger is refused before it is parsed."""
KindName = Annotated[str, Path(pattern=KIND_PATH)]
ApplicationId = Annotated[str, Path(pattern=APPLICATION_PATH)]
Token = Annotated[str, Path(pattern=TOKEN_PATH)]
FORM_KEYS: Final = ("name", "id_number", "phone", "code", "consent")
MISMATCH: Final = (
    "姓名与身份证号码未能通过社区登记信息核验。请核对后重新获取验证码再提交；"
    "如信息无误，请到社区居委会办理。"
)
NO_STORE: Final = {"Cache-Control": "no-store"}


def _ctx(request: Request) -> WebContext:
    return cast(WebContext, request.app.state.context)


def _kind(name: str) -> Kind:
    kind = KINDS.get(name)
    if kind is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "没有这类申请，请从申请列表中选择。")
    return kind


def _notifications(ctx: WebContext) -> NotificationService:
    service = ctx.extra.get("notifications")
    if not isinstance(service, NotificationService):
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "短信服务暂未开通，暂不能网上申请，请到社区办理。"
        )
    return service


def _form_page(
    request: Request,
    kind: Kind,
    values: Mapping[str, str],
    *,
    status_code: int = 200,
    problems: Mapping[str, str] | None = None,
    error: str | None = None,
    notice: str | None = None,
) -> Response:
    response = html(
        request,
        "applications_form.html",
        status_code,
        kind=kind,
        values={k: v[:256] for k, v in values.items()},
        problems=problems or {},
        error=error,
        notice=notice,
    )
    response.headers.update(NO_STORE)
    return response


async def _read_form(request: Request) -> dict[str, str]:
    """The posted form (``application/x-www-form-urlencoded``), at most MAX_FORM_BYTES."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, "请从本站页面提交表单。")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise HTTPException(
                status.HTTP_413_CONTENT_TOO_LARGE, "填写的内容过长，请精简后再提交。"
            )
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=40)
    except (UnicodeDecodeError, ValueError):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "请求格式有误。") from None
    return dict(pairs)


# -- pages ---------------------------------------------------------------------------------------


@router.get("/apply")
def kinds_page(request: Request) -> Response:
    return html(request, "applications_kinds.html", kinds=list(KINDS.values()))


@router.get("/apply/{kind_name}")
def form_page(request: Request, kind_name: KindName) -> Response:
    return _form_page(request, _kind(kind_name), {})


@router.post("/apply/{kind_name}")
async def form_post(request: Request, kind_name: KindName) -> Response:
    kind = _kind(kind_name)
    form = await _read_form(request)
    client = request.client.host if request.client else "unknown"
    if form.get("action") == "code":
        return await run_in_threadpool(_send_code, request, kind, form, client)
    return await run_in_threadpool(_submit, request, kind, form)


def _send_code(request: Request, kind: Kind, form: dict[str, str], client: str) -> Response:
    ctx = _ctx(request)
    try:
        phone = check_phone(form.get("phone", ""))
    except ApplicationInputError as err:
        return _form_page(request, kind, form, status_code=422, problems=err.problems)
    send = sms_sender(_notifications(ctx))
    try:
        issue_code(ctx.engine, send, phone, client, ctx.clock(), site_name=ctx.site_name)
    except CodeRateLimitedError as err:
        wait = max(1, int(err.retry_after_s + 59) // 60)
        return _form_page(
            request,
            kind,
            form,
            status_code=429,
            error=f"获取验证码过于频繁，请{wait}分钟后再试。",
        )
    except SmsUnavailableError:
        return _form_page(
            request, kind, form, status_code=503, error="短信暂时发送失败，请稍后再试。"
        )
    form = {**form, "phone": phone, "code": ""}
    notice = f"验证码已发送至{mask_mobile(phone)}，5分钟内有效。"
    return _form_page(request, kind, form, notice=notice)


def _submit(request: Request, kind: Kind, form: dict[str, str]) -> Response:
    ctx = _ctx(request)
    problems: dict[str, str] = {}
    try:
        submission = validate_submission(
            kind.name,
            form.get("name", ""),
            form.get("id_number", ""),
            form.get("phone", ""),
            {k: v for k, v in form.items() if k not in FORM_KEYS},
        )
    except ApplicationInputError as err:
        problems.update(err.problems)
        submission = None
    code = form.get("code", "").strip()
    if not (code.isdigit() and len(code) == 6):
        problems["code"] = "请填写短信中的6位验证码"
    if form.get("consent") != "yes":
        problems["consent"] = "请确认所填信息真实"
    if problems or submission is None:
        return _form_page(request, kind, form, status_code=422, problems=problems)
    now = ctx.clock()
    try:
        consume_code(ctx.engine, submission.phone, code, now)
    except CodeInvalidError:
        return _form_page(
            request,
            kind,
            {**form, "code": ""},
            status_code=422,
            problems={"code": "验证码不正确或已过期，请重新获取"},
        )
    try:
        with ctx.engine.begin() as conn:
            application, token = file_application(conn, now, submission)
    except IdentityMismatchError:
        log.info("application %s refused: name and ID number do not match", kind.name)
        # The refusal's audit entry must stay although the filing failed.
        with ctx.engine.begin() as conn:
            audit(conn, now, "resident", "application.refused", kind=kind.name)
        return _form_page(request, kind, {**form, "code": ""}, status_code=403, error=MISMATCH)
    log.info("application %s (%s) filed", application.id, kind.name)
    return RedirectResponse(
        f"/a/{application.id}/{token}", status_code=status.HTTP_303_SEE_OTHER, headers=NO_STORE
    )


def _view(application: ApplicationRecord) -> dict[str, Any]:
    kind = KINDS.get(application.kind)
    printable = kind is not None and kind.template is not None and application.status == "done"
    return {
        "id": application.id,
        "title": application.title,
        "status": application.status,
        "status_text": status_text(application.status, printable=printable),
        "reason": application.reason if application.status == "rejected" else None,
        "submitted_at": application.submitted_at,
        "updated_at": application.updated_at,
        "printable": printable,
        "prints": kind is not None and kind.template is not None,
    }


@router.get("/a/{application_id}/{token}")
def status_page(request: Request, application_id: ApplicationId, token: Token) -> Response:
    ctx = _ctx(request)
    try:
        with ctx.engine.connect() as conn:
            application = check_access(conn, application_id, token)
    except ApplicationNotFoundError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "链接无效或已过期。") from None
    response = html(request, "applications_status.html", view=_view(application))
    response.headers.update(NO_STORE)
    return response


router.include_router(applications_admin.router)
