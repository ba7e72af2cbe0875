"""The FastAPI application: security headers, same-origin checks, error pages, and the routers.

``create_app(context)`` builds one app for the given :class:`WebContext`; ``linli server run``
serves it with uvicorn. Pages are server-rendered Jinja2 (they must work on the cheapest phones,
with scripts only for auto-refresh); the JSON API under ``/api/v1`` has an OpenAPI description at
``/api/v1/openapi.json``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from zoneinfo import ZoneInfo

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from sync_server.web.context import WebContext

__all__ = ["create_app"]

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
SITE_TZ = ZoneInfo("Asia/Shanghai")


def timestamp_text(value: float) -> str:
    """Unix seconds as the resident reads them: ``11月23日 14:05`` (China time)."""
    moment = dt.datetime.fromtimestamp(value, SITE_TZ)
    return f"{moment.month}月{moment.day}日 {moment:%H:%M}"


templates.env.filters["timestamp"] = timestamp_text

SECURITY_HEADERS = {
    # Case links carry the resident's access token in the path: never send it to another site.
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
}
_CHINESE = {
    404: "没有这个页面。",
    405: "不支持这种请求方式。",
    400: "请求格式有误。",
}
"""Starlette's own English messages, as residents read them."""
_STARLETTE_TEXT = frozenset(
    {"Not Found", "Method Not Allowed", "There was an error parsing the body", "Bad Request"}
)
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _cross_site(request: Request) -> bool:
    """A browser form post from another site (CSRF), told by ``Sec-Fetch-Site`` or ``Origin``.

    Requests without either header (command-line clients, the API with its token header) are
    not browsers acting for someone else and pass; worker pages also check a CSRF token.
    """
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site not in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin == "null"
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1] != host


def _wants_html(request: Request) -> bool:
    return not request.url.path.startswith("/api/")


def create_app(context: WebContext) -> FastAPI:
    """The whole web app for ``context``."""
    from sync_server.web import admin, applications, enroll, resident, verify, worker

    app = FastAPI(
        title="Linli server API",
        version="1",
        openapi_url="/api/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.context = context
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.middleware("http")
    async def security(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if request.method in UNSAFE_METHODS and _cross_site(request):
            log.warning("refused a cross-site %s to %s", request.method, request.url.path)
            return _error(request, 403, "请求来源不正确，请从本站页面重新操作。")
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.url.path.startswith(("/c/", "/api/")):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 303 and exc.headers:  # a page that needs a login
            return RedirectResponse(exc.headers["Location"], status_code=303)
        message = _CHINESE.get(exc.status_code) if exc.detail in _STARLETTE_TEXT else None
        if message is None:
            message = exc.detail if isinstance(exc.detail, str) else "请求无法处理"
        response = _error(request, exc.status_code, message)
        for name, value in (exc.headers or {}).items():  # e.g. the Allow of a 405 (RFC 9110)
            response.headers.setdefault(name, value)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = [
            f"{'.'.join(str(p) for p in err['loc'][1:]) or 'body'}: {err['msg']}"
            for err in exc.errors()
        ]
        if _wants_html(request):
            return _error(request, 422, "输入有误：" + "；".join(problems))
        return JSONResponse({"detail": problems}, status_code=422)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(resident.pages)
    app.include_router(resident.api)
    app.include_router(worker.pages)
    app.include_router(admin.pages)
    app.include_router(verify.router)
    app.include_router(applications.router)
    app.include_router(enroll.router)
    return app


def _error(request: Request, status: int, message: str) -> Response:
    if _wants_html(request):
        return templates.TemplateResponse(
            request, "error.html", {"status": status, "message": message}, status_code=status
        )
    return JSONResponse({"detail": message}, status_code=status)


def html(request: Request, name: str, status: int = 200, **values: object) -> HTMLResponse:
    """Render a page template with the site name."""
    context: WebContext = request.app.state.context
    return templates.TemplateResponse(
        request, name, {"site_name": context.site_name, **values}, status_code=status
    )
