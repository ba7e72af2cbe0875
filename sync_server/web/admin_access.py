"""Who may use the admin pages and what they see: the access rule, labels and page helpers.

An administrator (role ``admin``) sees and changes everything. Community or street staff (role
``staff``) see only their own area — the area named by their ``area_id`` and every area below it
(its communities and grids) — and may act on cases there, nothing else. Grid workers get 403: their
app is ``/w``. A request without a session is sent to the login page, like the worker app.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Final, cast

from fastapi import Form, HTTPException, Request, status
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import ColumnElement, Connection, Table, select, true

from sync_server.areas import descendants
from sync_server.domain_models import Area
from sync_server.phones import mask_mobile, normalize_mobile
from sync_server.web.app import SITE_TZ, html
from sync_server.web.auth import SessionUser, check_csrf, current_user
from sync_server.web.context import WebContext

__all__ = [
    "CASE_LEVEL_TEXT",
    "CASE_STATE_TEXT",
    "COMPARTMENT_STATE_TEXT",
    "CREDENTIAL_KIND_TEXT",
    "ROLE_TEXT",
    "AdminUser",
    "Csrf",
    "admin_action",
    "admin_user",
    "area_names",
    "areas_of_level",
    "ctx_of",
    "date_start",
    "day_text",
    "local_datetime",
    "mask_phone",
    "page",
    "redirect",
    "unique",
]

_areas = cast(Table, Area.__table__)

Csrf = Annotated[str, Form(max_length=64)]

CASE_STATE_TEXT: Final = {
    "draft": "待存件",
    "deposited": "已存件待取",
    "assigned": "已派单",
    "collected": "已取件",
    "processing": "办理中",
    "result_stored": "结果已入柜",
    "completed": "已完成",
    "overdue": "已超时",
    "escalated": "已上报",
    "cancelled": "已取消",
}
CASE_LEVEL_TEXT: Final = {"grid": "网格", "community": "社区", "street": "街道"}
COMPARTMENT_STATE_TEXT: Final = {
    "free": "空闲",
    "reserved": "已预留",
    "open_for_deposit": "存件中",
    "holding": "存有物品",
    "open_for_pickup": "取件中",
    "fault": "故障",
    "disabled": "停用",
}
CREDENTIAL_KIND_TEXT: Final = {
    "collect": "居民取件码",
    "worker-open": "网格员离线开柜码",
    "deposit": "离线存件码",
}
ROLE_TEXT: Final = {"worker": "网格员", "staff": "社区/街道工作人员", "admin": "管理员"}

MESSAGES: Final = {
    "saved": "已保存。",
    "published": "已保存并发布到设备。",
    "deleted": "已删除，设备同步后不再显示。",
    "revoked": "已吊销。",
    "sent": "指令已发送，设备执行结果见下方指令记录。",
    "cancelled": "案件已取消。",
    "reassigned": "已改派，等待网格员接单。",
    "de_escalated": "已撤回上报，案件回到网格处理。",
    "created": "已创建。",
    "deactivated": "已停用，其未完成的派单已退回待派。",
    "activated": "已启用。",
    "shift": "已添加班次。",
}
"""Outcome messages a redirect may name (``?msg=``): a fixed set, so no text is reflected."""


@dataclass(frozen=True)
class AdminUser:
    """The logged-in administrator or staff member and the areas they may see.

    ``areas`` is None for an administrator (everything); for staff it is their area and every
    area below it (empty when a staff account has no area: it then sees nothing).
    """

    user: SessionUser
    areas: frozenset[str] | None

    @property
    def is_admin(self) -> bool:
        return self.areas is None

    @property
    def csrf(self) -> str:
        return self.user.csrf

    def area_filter(self, column: Any) -> ColumnElement[bool]:
        """SQL: ``column`` (an area id) is one this user may see."""
        if self.areas is None:
            return true()
        return cast(ColumnElement[bool], column.in_(sorted(self.areas)))

    def sees(self, area_id: str | None) -> bool:
        return self.areas is None or (area_id is not None and area_id in self.areas)


def ctx_of(request: Request) -> WebContext:
    return cast(WebContext, request.app.state.context)


def admin_user(request: Request) -> AdminUser:
    """The staff member or administrator of the request: 303 to the login page without a
    session, 403 for a grid worker."""
    try:
        user = current_user(request, roles=("staff", "admin"))
    except HTTPException as err:
        if err.status_code == status.HTTP_401_UNAUTHORIZED:
            raise HTTPException(
                status.HTTP_303_SEE_OTHER, headers={"Location": "/w/login"}
            ) from None
        raise
    if user.role == "admin":
        return AdminUser(user, None)
    with ctx_of(request).engine.connect() as conn:
        return AdminUser(user, descendants(conn, user.area_id))


def admin_action(request: Request, csrf: str, *, admins_only: bool = True) -> AdminUser:
    """The user of a POST after the CSRF check; 403 for staff unless ``admins_only`` is False
    (case actions, which staff may take in their own area)."""
    admin = admin_user(request)
    check_csrf(admin.user, csrf)
    if admins_only and not admin.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "只有管理员可以执行此操作。")
    return admin


def area_names(conn: Connection) -> dict[str, str]:
    return {row.id: row.name for row in conn.execute(select(_areas.c.id, _areas.c.name))}


def areas_of_level(conn: Connection, admin: AdminUser, level: str) -> list[Any]:
    """The areas of one level this user may see, by name (for filters and forms)."""
    return list(
        conn.execute(
            select(_areas)
            .where(_areas.c.level == level, admin.area_filter(_areas.c.id))
            .order_by(_areas.c.name)
        )
    )


def mask_phone(phone: str | None) -> str:
    """A phone number as staff may see it: ``138****5678`` (never the whole number)."""
    if not phone:
        return ""
    mobile = normalize_mobile(phone)
    return mask_mobile(mobile) if mobile is not None else "****"


def page(request: Request, admin: AdminUser, name: str, **values: object) -> Response:
    """Render an admin page with the user, the nav and the outcome message of a redirect."""
    message = MESSAGES.get(request.query_params.get("msg", ""))
    return html(
        request,
        name,
        200,
        admin=admin,
        user=admin.user,
        message=message,
        now=ctx_of(request).clock(),
        **values,
    )


def redirect(path: str, msg: str | None = None) -> RedirectResponse:
    """303 to an admin page after a POST (``msg`` must be a key of the message table)."""
    if msg is not None:
        if msg not in MESSAGES:
            raise ValueError(f"no outcome message {msg!r}")
        path += ("&" if "?" in path else "?") + f"msg={msg}"
    return RedirectResponse(path, status_code=status.HTTP_303_SEE_OTHER)


def date_start(text: str, field: str) -> float:
    """``YYYY-MM-DD`` as the unix time of that day's start in China (422 naming ``field``)."""
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"{field}：日期格式应为 年-月-日，如 2025-03-01。",
        ) from None
    return dt.datetime.combine(day, dt.time(), SITE_TZ).timestamp()


def local_datetime(text: str, field: str) -> float:
    """``YYYY-MM-DDTHH:MM`` (an ``<input type=datetime-local>``) in China time, as unix time."""
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"{field}：时间格式应为 年-月-日 时:分，如 2025-03-01 08:30。",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=SITE_TZ)
    return moment.timestamp()


def day_text(value: float) -> str:
    """Unix time as the ``YYYY-MM-DD`` of that day in China (for date inputs)."""
    return dt.datetime.fromtimestamp(value, SITE_TZ).date().isoformat()


def unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))
