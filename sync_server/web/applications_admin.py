"""The office's pages for online applications under ``/admin/applications``: the list, one
application with its audit trail, and the actions accept / done / reject (with a reason the
resident reads).

Like cases (:mod:`sync_server.web.admin_cases`): administrators see every application, staff
those of their own area, and both may act on what they see. The applicant's ID number and phone
are shown masked; the name is shown whole on the application's own page only (lists mask it).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Final, cast

from fastapi import APIRouter, Form, HTTPException, Path, Query, Request, status
from fastapi.responses import Response
from sqlalchemy import Connection, Table, select

from sync_server.applications import (
    APPLICATION_PATH,
    KINDS,
    STATUS_TEXT,
    TRANSITIONS,
    ApplicationInputError,
    ApplicationNotFoundError,
    ApplicationRecord,
    ApplicationStateError,
    get_application,
    transition,
)
from sync_server.domain_models import APPLICATION_STATUSES, Application, AuditEntry
from sync_server.web.admin_access import (
    AdminUser,
    Csrf,
    admin_action,
    admin_user,
    area_names,
    ctx_of,
    page,
    redirect,
)

__all__ = ["ACTIONS", "router"]

log = logging.getLogger(__name__)

router = APIRouter(prefix="/admin/applications")

_applications = cast(Table, Application.__table__)
_audit = cast(Table, AuditEntry.__table__)

ApplicationId = Annotated[str, Path(pattern=APPLICATION_PATH)]
ACTIONS: Final = {"accept": "accepted", "done": "done", "reject": "rejected"}
"""Form action -> the status it moves to."""
ACTION_TEXT: Final = {"accepted": "受理", "done": "办结", "rejected": "不予通过"}
STATUS_FILTER: Final = r"^(open|" + "|".join(APPLICATION_STATUSES) + r")?$"
KIND_FILTER: Final = r"^(" + "|".join(KINDS) + r")?$"
MAX_ROWS: Final = 300


@router.get("")
def application_list(
    request: Request,
    state: Annotated[str, Query(pattern=STATUS_FILTER)] = "open",
    kind: Annotated[str, Query(pattern=KIND_FILTER)] = "",
) -> Response:
    admin = admin_user(request)
    query = select(_applications).where(admin.area_filter(_applications.c.community_id))
    if state == "open":
        query = query.where(_applications.c.status.in_(("submitted", "accepted")))
    elif state:
        query = query.where(_applications.c.status == state)
    if kind:
        query = query.where(_applications.c.kind == kind)
    query = query.order_by(_applications.c.submitted_at.desc()).limit(MAX_ROWS)
    with ctx_of(request).engine.connect() as conn:
        rows = [ApplicationRecord.from_row(row) for row in conn.execute(query)]
        names = area_names(conn)
    return page(
        request,
        admin,
        "applications_admin_list.html",
        rows=rows,
        filters={"state": state, "kind": kind},
        kinds=KINDS,
        statuses=STATUS_TEXT,
        names=names,
        max_rows=MAX_ROWS,
    )


def _scoped(
    conn: Connection, admin: AdminUser, application_id: str, *, for_update: bool = False
) -> ApplicationRecord:
    try:
        application = get_application(conn, application_id, for_update=for_update)
    except ApplicationNotFoundError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "没有这份申请。") from None
    if not admin.sees(application.community_id):
        log.warning("%s refused an application outside their area", admin.user.actor)
        raise HTTPException(status.HTTP_404_NOT_FOUND, "没有这份申请。")
    return application


def _fields(application: ApplicationRecord) -> list[tuple[str, Any]]:
    """The kind's form fields as (label, value) for the page."""
    kind = KINDS.get(application.kind)
    if kind is None:
        return [(key, value) for key, value in application.data.items()]
    return [(spec.label, application.data.get(spec.name, "")) for spec in kind.fields]


@router.get("/{application_id}")
def application_page(request: Request, application_id: ApplicationId) -> Response:
    admin = admin_user(request)
    with ctx_of(request).engine.connect() as conn:
        application = _scoped(conn, admin, application_id)
        trail = conn.execute(
            select(_audit)
            .where(
                _audit.c.action.like("application.%"),
                _audit.c.detail["application"].as_string() == application.id,
            )
            .order_by(_audit.c.at, _audit.c.id)
        ).all()
        names = area_names(conn)
    actions = [
        (action, ACTION_TEXT[to])
        for action, to in ACTIONS.items()
        if to in TRANSITIONS[application.status]
    ]
    return page(
        request,
        admin,
        "applications_admin_item.html",
        application=application,
        masked=application.masked,
        fields=_fields(application),
        trail=trail,
        actions=actions,
        statuses=STATUS_TEXT,
        names=names,
    )


@router.post("/{application_id}/{action}")
def act(
    request: Request,
    application_id: ApplicationId,
    action: Annotated[str, Path(pattern=r"^(accept|done|reject)$")],
    csrf: Csrf,
    reason: Annotated[str, Form(max_length=400)] = "",
) -> Response:
    """Accept, finish or reject an application of the user's area (reject needs a reason)."""
    admin = admin_action(request, csrf, admins_only=False)
    ctx = ctx_of(request)
    now = ctx.clock()
    try:
        with ctx.engine.begin() as conn:
            application = _scoped(conn, admin, application_id, for_update=True)
            transition(
                conn,
                application,
                ACTIONS[action],
                now,
                actor=admin.user.actor,
                reason=reason if action == "reject" else None,
            )
    except ApplicationInputError as err:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "；".join(err.problems.values())
        ) from err
    except ApplicationStateError as err:
        raise HTTPException(
            status.HTTP_409_CONFLICT, "申请刚被更新或当前状态不允许此操作，请刷新后重试。"
        ) from err
    return redirect(f"/admin/applications/{application_id}", "saved")
