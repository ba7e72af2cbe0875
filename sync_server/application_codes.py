"""SMS codes that prove the phone of an online application form (docs/applications.md).

A code is 6 random digits, good for ``CODE_VALID_S`` and ``MAX_ATTEMPTS`` wrong tries, and once.
Sends are limited per phone and per client address, counted as rows of ``application_codes``
(the pattern of ``login_failures``: every server process sees them). The code goes out through
the notification service's ``sms`` adapter; it is not stored as a ``notifications`` row, whose
params are kept in clear and retried later, which a short-lived secret must not be.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Callable, Mapping
from typing import Final, cast

from sqlalchemy import Engine, Table, func, insert, select, update

from sync_server.applications import ApplicationError
from sync_server.cases import audit, hash_token
from sync_server.domain_models import ApplicationCode
from sync_server.notify.errors import DeliveryFailedError
from sync_server.notify.service import NotificationService
from sync_server.phones import mask_mobile

__all__ = [
    "CODE_TEMPLATE",
    "CODE_VALID_S",
    "CodeError",
    "CodeInvalidError",
    "CodeRateLimitedError",
    "SendSms",
    "SmsUnavailableError",
    "consume_code",
    "issue_code",
    "sms_sender",
]

log = logging.getLogger(__name__)

CODE_TEMPLATE: Final = "application.code"
"""The name the SMS adapter is given for a code message (a gateway may map it to its own id)."""
CODE_VALID_S: Final = 300.0
MAX_ATTEMPTS: Final = 5
RESEND_AFTER_S: Final = 60.0
PHONE_WINDOW_S: Final = 3600.0
MAX_PER_PHONE: Final = 5
MAX_PER_CLIENT: Final = 20
"""Codes per client address in ``PHONE_WINDOW_S``: one page cannot text a whole street."""

_codes = cast(Table, ApplicationCode.__table__)

SendSms = Callable[[str, str, Mapping[str, str]], None]
"""``send(phone, text, params)``: deliver one SMS now, or raise ``DeliveryFailedError``."""


class CodeError(ApplicationError):
    """An SMS code could not be sent or did not prove the phone."""


class CodeRateLimitedError(CodeError):
    """Too many codes for this phone or address lately; ``retry_after_s`` says when to retry."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class CodeInvalidError(CodeError, PermissionError):
    """The code is wrong, expired, used up, or none was sent to this phone."""


class SmsUnavailableError(CodeError):
    """The SMS could not be delivered (the gateway refused or is down)."""


def sms_sender(service: NotificationService) -> SendSms:
    """Codes through ``service``'s ``sms`` adapter (a recording one when none is configured)."""

    def send(phone: str, text: str, params: Mapping[str, str]) -> None:
        service.notifier("sms").send(phone, CODE_TEMPLATE, text, params)

    return send


def _key(value: str) -> str:
    return hash_token(value)


def _wait(engine: Engine, phone_key: str, client_key: str, now: float) -> float:
    """Seconds until another code may be sent (0: now)."""
    since = now - PHONE_WINDOW_S
    with engine.connect() as conn:
        phone = conn.execute(
            select(func.count(), func.max(_codes.c.created), func.min(_codes.c.created)).where(
                _codes.c.phone_key == phone_key, _codes.c.created > since
            )
        ).one()
        client = conn.execute(
            select(func.count(), func.min(_codes.c.created)).where(
                _codes.c.client_key == client_key, _codes.c.created > since
            )
        ).one()
    count, newest, oldest = phone
    waits = [0.0]
    if newest is not None:
        waits.append(newest + RESEND_AFTER_S - now)
    if count >= MAX_PER_PHONE and oldest is not None:
        waits.append(oldest + PHONE_WINDOW_S - now)
    if client[0] >= MAX_PER_CLIENT and client[1] is not None:
        waits.append(client[1] + PHONE_WINDOW_S - now)
    return max(waits)


def issue_code(
    engine: Engine, send: SendSms, phone: str, client: str, now: float, *, site_name: str
) -> None:
    """Send a new code to ``phone`` (11 digits) for a form opened from ``client``.

    Raises :class:`CodeRateLimitedError` before anything is sent when the limits apply, and
    :class:`SmsUnavailableError` when the SMS adapter fails (the code still counts).
    """
    phone_key, client_key = _key(phone), _key(f"addr:{client}")
    wait = _wait(engine, phone_key, client_key, now)
    if wait > 0:
        log.info("application code for %s refused: rate limit", mask_mobile(phone))
        raise CodeRateLimitedError("too many codes lately", wait)
    code = f"{secrets.randbelow(10**6):06d}"
    with engine.begin() as conn:
        conn.execute(
            insert(_codes).values(
                phone_key=phone_key,
                client_key=client_key,
                code_hash=_key(f"{phone}:{code}"),
                created=now,
                expires=now + CODE_VALID_S,
                attempts=0,
                used_at=None,
            )
        )
        audit(conn, now, "resident", "application.code_sent")
    minutes = int(CODE_VALID_S // 60)
    text = (
        f"验证码{code}，{minutes}分钟内有效，用于{site_name}网上申请。如非本人操作，请忽略本短信。"
    )
    try:
        send(phone, text, {"code": code, "minutes": str(minutes)})
    except DeliveryFailedError as err:
        log.warning(
            "application code to %s not delivered (%s)",
            mask_mobile(phone),
            "temporary" if err.retryable else "permanent",
        )
        raise SmsUnavailableError("the SMS was not delivered") from err
    log.info("application code sent to %s", mask_mobile(phone))


def consume_code(engine: Engine, phone: str, code: str, now: float) -> None:
    """Use up the live code of ``phone`` that equals ``code``; :class:`CodeInvalidError` when none
    does (each live code of the phone then counts one wrong attempt, committed here)."""
    phone_key = _key(phone)
    digest = _key(f"{phone}:{code.strip()}")
    live = (
        _codes.c.phone_key == phone_key,
        _codes.c.used_at.is_(None),
        _codes.c.expires > now,
        _codes.c.attempts < MAX_ATTEMPTS,
    )
    with engine.begin() as conn:
        rows = conn.execute(select(_codes.c.id, _codes.c.code_hash).where(*live)).all()
        ids = [row.id for row in rows]
        matched = any(hmac.compare_digest(row.code_hash, digest) for row in rows)
        if matched:
            conn.execute(update(_codes).where(_codes.c.id.in_(ids)).values(used_at=now))
            return
        if ids:
            conn.execute(
                update(_codes).where(_codes.c.id.in_(ids)).values(attempts=_codes.c.attempts + 1)
            )
        audit(conn, now, "resident", "application.code_refused", live=len(ids))
    raise CodeInvalidError("wrong, expired or used-up code" if ids else "no live code")
