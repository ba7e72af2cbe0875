"""Worker and staff login: argon2id passwords, server-side sessions, CSRF tokens, a login limit.

- Passwords are checked with argon2-cffi (``PasswordHasher``); hashes made with older parameters
  are rehashed on the next successful login.
- A session is a random token in an ``HttpOnly``, ``SameSite=Strict`` cookie; the database keeps
  its SHA-256 (``web_sessions``), so a leaked database holds no usable session. Sessions expire
  after ``SESSION_S`` and after ``IDLE_S`` without use.
- Every form of a logged-in page carries the session's CSRF token, checked on every POST (on top
  of the same-origin check of :mod:`sync_server.web.app`).
- Brute force: more than ``MAX_FAILURES`` failed logins in ``FAILURE_WINDOW_S`` for one username,
  or for one client address, refuse further attempts (HTTP 429) until the window has passed.
  Failures are rows in ``login_failures``, so every server process sees them.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from typing import Final, cast

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import HTTPException, Request, status
from sqlalchemy import Connection, Table, delete, func, insert, select, update

from sync_server.cases import audit
from sync_server.domain_models import LoginFailure, WebSession, Worker

__all__ = [
    "COOKIE",
    "LoginRefusedError",
    "SessionUser",
    "check_csrf",
    "current_user",
    "log_in",
    "log_out",
]

log = logging.getLogger(__name__)

COOKIE: Final = "linli_session"
SESSION_S: Final = 12 * 3600.0
IDLE_S: Final = 2 * 3600.0
MAX_FAILURES: Final = 5
FAILURE_WINDOW_S: Final = 15 * 60.0

_workers = cast(Table, Worker.__table__)
_sessions = cast(Table, WebSession.__table__)
_failures = cast(Table, LoginFailure.__table__)
_hasher = PasswordHasher()
_DUMMY_HASH: Final = _hasher.hash(secrets.token_hex(16))
"""Checked against when the username does not exist, so both cases take the same time."""


class LoginRefusedError(Exception):
    """Login refused: ``limited`` when the brute-force limit applies (HTTP 429)."""

    def __init__(self, message: str, *, limited: bool = False) -> None:
        super().__init__(message)
        self.limited = limited


@dataclass(frozen=True)
class SessionUser:
    """The logged-in worker of a request."""

    id: int
    username: str
    display_name: str
    role: str
    area_id: str | None
    csrf: str

    @property
    def actor(self) -> str:
        return f"{'admin' if self.role == 'admin' else 'worker'}:{self.id}"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _limited(conn: Connection, keys: list[str], now: float) -> bool:
    since = now - FAILURE_WINDOW_S
    for key in keys:
        count = conn.execute(
            select(func.count())
            .select_from(_failures)
            .where(_failures.c.key == key, _failures.c.at > since)
        ).scalar_one()
        if count >= MAX_FAILURES:
            return True
    return False


def log_in(
    conn: Connection, username: str, password: str, client: str, now: float
) -> tuple[str, SessionUser]:
    """Check a login; returns the session token (for the cookie) and the user.

    Raises :class:`LoginRefusedError` with one message for a wrong username or password (no
    account enumeration), or the limit message when too many attempts failed.
    """
    keys = [f"user:{username.lower()}", f"addr:{client}"]
    if _limited(conn, keys, now):
        raise LoginRefusedError("尝试次数过多，请15分钟后再试。", limited=True)
    row = conn.execute(
        select(_workers).where(_workers.c.username == username, _workers.c.active)
    ).first()
    try:
        _hasher.verify(row.password_hash if row is not None else _DUMMY_HASH, password)
        ok = row is not None
    except (VerificationError, InvalidHashError):
        ok = False
    if not ok or row is None:
        for key in keys:
            conn.execute(insert(_failures).values(key=key, at=now))
        audit(conn, now, f"addr:{client}", "login.failed")
        log.info("failed login (limit counts per username and address)")
        raise LoginRefusedError("用户名或密码错误。")
    if _hasher.check_needs_rehash(row.password_hash):
        conn.execute(
            update(_workers)
            .where(_workers.c.id == row.id)
            .values(password_hash=_hasher.hash(password))
        )
    conn.execute(delete(_failures).where(_failures.c.key == keys[0]))
    conn.execute(delete(_sessions).where(_sessions.c.expires < now))
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(24)
    conn.execute(
        insert(_sessions).values(
            token_hash=_digest(token),
            worker_id=row.id,
            csrf=csrf,
            created=now,
            expires=now + SESSION_S,
            last_seen=now,
        )
    )
    audit(conn, now, f"worker:{row.id}", "login")
    user = SessionUser(row.id, row.username, row.display_name, row.role, row.area_id, csrf)
    return token, user


def log_out(conn: Connection, token: str) -> None:
    conn.execute(delete(_sessions).where(_sessions.c.token_hash == _digest(token)))


def session_user(conn: Connection, token: str, now: float) -> SessionUser | None:
    """The user of a session token, or None (unknown, expired, idle too long, account off)."""
    row = conn.execute(
        select(_sessions, _workers)
        .join(_workers, _workers.c.id == _sessions.c.worker_id)
        .where(_sessions.c.token_hash == _digest(token))
    ).first()
    if row is None or not row.active or row.expires < now or row.last_seen + IDLE_S < now:
        return None
    if now - row.last_seen > 60:
        conn.execute(
            update(_sessions).where(_sessions.c.token_hash == row.token_hash).values(last_seen=now)
        )
    return SessionUser(row.worker_id, row.username, row.display_name, row.role, row.area_id,
                       row.csrf)  # fmt: skip


def current_user(
    request: Request, *, roles: tuple[str, ...] = ("worker", "staff", "admin")
) -> SessionUser:
    """The logged-in user, or 401 (pages turn it into a redirect to the login page)."""
    from sync_server.web.context import WebContext

    ctx = cast(WebContext, request.app.state.context)
    token = request.cookies.get(COOKIE)
    user = None
    if token:
        with ctx.engine.begin() as conn:
            user = session_user(conn, token, ctx.clock())
    if user is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "请先登录。")
    if user.role not in roles:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "没有权限。")
    return user


def check_csrf(user: SessionUser, submitted: str | None) -> None:
    """403 unless ``submitted`` is the session's CSRF token."""
    if not submitted or not hmac.compare_digest(submitted, user.csrf):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "页面已过期，请刷新后重试。")
