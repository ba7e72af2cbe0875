"""Admin pages for what devices show residents: the service catalogue and community notices.

Both become versioned documents the kiosks pull (docs/documents.md):

- ``catalogue``: one item per active service, keyed by the service id, holding what the kiosk
  shows (name, description, documents, hours). Every save publishes a new version; a deactivated
  service is deleted from the document. "重新发布目录" publishes the whole table (services loaded
  with ``linli server load-site`` are not published until then).
- ``notices``: there is no notices table: the document is the store. A notice is an item keyed by
  a generated id; deleting one publishes a delete.

Staff see both read-only (notices of their own area and those for every community).
"""

from __future__ import annotations

import logging
import secrets
from typing import Annotated, Any, Final, cast

from fastapi import APIRouter, Form, HTTPException, Path, Request, status
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy import Connection, Table, insert, select, update

from sync_server.cases import audit
from sync_server.catalogue import catalogue_item
from sync_server.documents import (
    DocumentConflictError,
    DocumentPublishError,
    NoSuchVersionError,
    publish_version,
    snapshot,
)
from sync_server.domain_models import Area, Service
from sync_server.sitedata import ServiceData
from sync_server.web.admin_access import (
    AdminUser,
    Csrf,
    admin_action,
    admin_user,
    areas_of_level,
    ctx_of,
    date_start,
    page,
    redirect,
)
from sync_server.web.context import WebContext
from sync_server.web.resident import SERVICE_PATH

__all__ = ["catalogue_item", "router"]

log = logging.getLogger(__name__)

router = APIRouter()

_services = cast(Table, Service.__table__)
_areas = cast(Table, Area.__table__)

ServiceId = Annotated[str, Path(pattern=SERVICE_PATH)]
NoticeKey = Annotated[str, Path(pattern=r"^n[0-9a-z-]{1,40}$")]
MAX_DOCUMENT_LINES: Final = 30


# -- the catalogue ---------------------------------------------------------------------------------


def _documents_text(documents: list[Any]) -> str:
    """The documents list as the edit form shows it: ``名称 | 份数 | 备注`` per line."""
    lines = []
    for doc in documents:
        note = doc.get("note") or ""
        lines.append(
            f"{doc.get('name', '')} | {doc.get('copies', 1)}" + (f" | {note}" if note else "")
        )
    return "\n".join(lines)


def _parse_documents(text: str) -> list[dict[str, Any]]:
    """One document per line: ``名称``, ``名称 | 份数`` or ``名称 | 份数 | 备注``."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > MAX_DOCUMENT_LINES:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"所需材料最多 {MAX_DOCUMENT_LINES} 项。"
        )
    documents = []
    for number, line in enumerate(lines, 1):
        parts = [part.strip() for part in line.split("|")]
        copies = parts[1] if len(parts) > 1 and parts[1] else "1"
        if len(parts) > 3 or not copies.isdigit():
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                f"所需材料第 {number} 行应为“名称 | 份数 | 备注”，份数为数字。",
            )
        documents.append(
            {"name": parts[0], "copies": int(copies), "note": parts[2] if len(parts) > 2 else ""}
        )
    return documents


def _publish_catalogue(
    ctx: WebContext,
    upserts: dict[str, Any],
    deletes: list[str],
    *,
    if_version: int | None = None,
) -> int:
    try:
        return publish_version(
            ctx.engine,
            "catalogue",
            upserts=upserts,
            deletes=deletes,
            if_version=if_version,
            clock=ctx.clock,
        )
    except DocumentPublishError as err:
        log.error("catalogue not published: %s", err)
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "服务已保存，但目录未能发布到设备（内容过大或格式不符）；"
            "请精简说明后再保存，或点击“重新发布目录”。",
        ) from err
    except DocumentConflictError as err:
        raise HTTPException(
            status.HTTP_409_CONFLICT, "目录刚被他人修改，请刷新后点击“重新发布目录”。"
        ) from err


def _published_items(ctx: WebContext) -> tuple[int, dict[str, Any]]:
    try:
        current = snapshot(ctx.engine, "catalogue")
    except NoSuchVersionError:
        return 0, {}
    return current.version, dict(current.items)


@router.get("/services")
def services(request: Request) -> Response:
    admin = admin_user(request)
    ctx = ctx_of(request)
    with ctx.engine.connect() as conn:
        rows = conn.execute(
            select(_services).order_by(_services.c.active.desc(), _services.c.name)
        ).all()
    version, items = _published_items(ctx)
    stale = {row.id for row in rows if row.active and items.get(row.id) != catalogue_item(row)}
    stale |= {row.id for row in rows if not row.active and row.id in items}
    return page(
        request,
        admin,
        "admin_services.html",
        rows=rows,
        version=version,
        stale=stale,
        edit=None,
        documents_text="",
    )


@router.get("/services/{service_id}")
def service_page(request: Request, service_id: ServiceId) -> Response:
    admin = admin_user(request)
    with ctx_of(request).engine.connect() as conn:
        row = conn.execute(select(_services).where(_services.c.id == service_id)).first()
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "没有这项服务。")
    return page(
        request,
        admin,
        "admin_service.html",
        edit=row,
        documents_text=_documents_text(row.documents or []),
    )


@router.post("/services")
def save_service(
    request: Request,
    *,
    csrf: Csrf,
    id: Annotated[str, Form(max_length=32)],
    name: Annotated[str, Form(max_length=128)],
    pickup_hours: Annotated[float, Form(gt=0, le=24 * 90)],
    process_hours: Annotated[float, Form(gt=0, le=24 * 365)],
    description: Annotated[str, Form(max_length=2000)] = "",
    documents: Annotated[str, Form(max_length=8000)] = "",
) -> Response:
    """Create or update a service, then publish its item in a new ``catalogue`` version."""
    admin = admin_action(request, csrf)
    ctx = ctx_of(request)
    try:
        data = ServiceData.model_validate(
            {
                "id": id.strip(),
                "name": name.strip(),
                "description": description.strip(),
                "documents": _parse_documents(documents),
                "pickup_hours": pickup_hours,
                "process_hours": process_hours,
            }
        )
    except ValidationError as err:
        where = ".".join(str(p) for p in err.errors()[0]["loc"])
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"输入有误：{where}（编号只能含小写字母、数字、_ 和 -）。",
        ) from None
    now = ctx.clock()
    values = data.model_dump(exclude={"id", "active"})
    with ctx.engine.begin() as conn:
        existing = conn.execute(select(_services).where(_services.c.id == data.id)).first()
        if existing is None:
            conn.execute(insert(_services).values(id=data.id, active=True, updated=now, **values))
        else:
            conn.execute(
                update(_services).where(_services.c.id == data.id).values(updated=now, **values)
            )
        row = conn.execute(select(_services).where(_services.c.id == data.id)).one()
        audit(
            conn, now, admin.user.actor, "service.saved", service=data.id, created=existing is None
        )
    if row.active:
        _publish_catalogue(ctx, {row.id: catalogue_item(row)}, [])
    return redirect(f"/admin/services/{data.id}", "published" if row.active else "saved")


@router.post("/services/{service_id}/active")
def set_service_active(
    request: Request,
    service_id: ServiceId,
    csrf: Csrf,
    active: Annotated[str, Form(pattern=r"^(0|1)$")],
) -> Response:
    """Offer a service again (published) or stop it (deleted from the ``catalogue``); residents
    with open cases of it are not affected."""
    admin = admin_action(request, csrf)
    ctx = ctx_of(request)
    now = ctx.clock()
    on = active == "1"
    with ctx.engine.begin() as conn:
        if conn.execute(select(_services.c.id).where(_services.c.id == service_id)).first() is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "没有这项服务。")
        conn.execute(
            update(_services).where(_services.c.id == service_id).values(active=on, updated=now)
        )
        row = conn.execute(select(_services).where(_services.c.id == service_id)).one()
        audit(
            conn,
            now,
            admin.user.actor,
            "service.activated" if on else "service.deactivated",
            service=service_id,
        )
    if on:
        _publish_catalogue(ctx, {service_id: catalogue_item(row)}, [])
    else:
        _publish_catalogue(ctx, {}, [service_id])
    return redirect("/admin/services", "published")


@router.post("/services/publish")
def republish(request: Request, csrf: Csrf) -> Response:
    """Make the ``catalogue`` document equal the table: one version with whatever differs."""
    admin = admin_action(request, csrf)
    ctx = ctx_of(request)
    with ctx.engine.connect() as conn:
        rows = conn.execute(select(_services)).all()
    published, items = _published_items(ctx)
    upserts = {
        r.id: catalogue_item(r) for r in rows if r.active and items.get(r.id) != catalogue_item(r)
    }
    active = {r.id for r in rows if r.active}
    deletes = sorted(key for key in items if key not in active)
    version = published
    if upserts or deletes:
        version = _publish_catalogue(ctx, upserts, deletes, if_version=published)
    with ctx.engine.begin() as conn:
        audit(
            conn,
            ctx.clock(),
            admin.user.actor,
            "catalogue.published",
            version=version,
            upserts=len(upserts),
            deletes=len(deletes),
        )
    return redirect("/admin/services", "published")


# -- notices ---------------------------------------------------------------------------------------


def _notices(ctx: WebContext) -> dict[str, Any]:
    try:
        return dict(snapshot(ctx.engine, "notices").items)
    except NoSuchVersionError:
        return {}


def _visible_notice(admin: AdminUser, item: Any) -> bool:
    community = item.get("community") if isinstance(item, dict) else None
    return admin.is_admin or community is None or admin.sees(community)


@router.get("/notices")
def notices(request: Request) -> Response:
    admin = admin_user(request)
    ctx = ctx_of(request)
    items = [
        (key, item)
        for key, item in _notices(ctx).items()
        if isinstance(item, dict) and _visible_notice(admin, item)
    ]
    items.sort(key=lambda pair: -float(pair[1].get("published_at") or 0))
    with ctx.engine.connect() as conn:
        communities = areas_of_level(conn, admin, "community")
    return page(request, admin, "admin_notices.html", items=items, communities=communities)


def _community(conn: Connection, community: str) -> str | None:
    if not community:
        return None
    row = conn.execute(
        select(_areas.c.name).where(_areas.c.id == community, _areas.c.level == "community")
    ).first()
    if row is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "没有这个社区。")
    return str(row.name)


@router.post("/notices")
def publish_notice(
    request: Request,
    *,
    csrf: Csrf,
    title: Annotated[str, Form(min_length=1, max_length=64)],
    body: Annotated[str, Form(min_length=1, max_length=2000)],
    valid_until: Annotated[str, Form(max_length=10)],
    community: Annotated[str, Form(max_length=32)] = "",
) -> Response:
    """Publish a notice (for one community, or all when ``community`` is empty) until the end of
    the day ``valid_until`` (China time)."""
    admin = admin_action(request, csrf)
    ctx = ctx_of(request)
    now = ctx.clock()
    until = date_start(valid_until, "有效期") + 86400
    if until <= now:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "有效期不能早于今天。")
    with ctx.engine.connect() as conn:
        community_name = _community(conn, community)
    key = f"n{int(now):x}-{secrets.token_hex(4)}"
    item = {
        "title": title.strip(),
        "body": body.strip(),
        "community": community or None,
        "community_name": community_name,
        "valid_until": until,
        "published_at": now,
    }
    try:
        version = publish_version(ctx.engine, "notices", upserts={key: item}, clock=ctx.clock)
    except DocumentPublishError as err:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "公告未能发布（内容过大）；请删除过期公告或缩短正文。",
        ) from err
    with ctx.engine.begin() as conn:
        audit(
            conn,
            now,
            admin.user.actor,
            "notice.published",
            notice=key,
            version=version,
            community=community or None,
        )
    return redirect("/admin/notices", "published")


@router.post("/notices/{key}/delete")
def delete_notice(request: Request, key: NoticeKey, csrf: Csrf) -> Response:
    admin = admin_action(request, csrf)
    ctx = ctx_of(request)
    if key not in _notices(ctx):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "没有这条公告（可能已删除）。")
    version = publish_version(ctx.engine, "notices", upserts={}, deletes=[key], clock=ctx.clock)
    with ctx.engine.begin() as conn:
        audit(conn, ctx.clock(), admin.user.actor, "notice.deleted", notice=key, version=version)
    return redirect("/admin/notices", "deleted")
