"""The notification service: every notification is a row of ``notifications``, then a delivery.

:meth:`NotificationService.notify` renders the message (a bad template or params fail before
anything is stored), stores the row as ``queued``, sends it through the channel's adapter with no
database transaction open, and stores the outcome: ``sent``, ``recorded`` (the recording adapter)
or ``failed`` with a reason that names no recipient. A ``dedupe`` key makes a call idempotent
across processes (the table's unique constraint decides the race). :meth:`retry_due` resends
failed-but-retryable rows once their backoff has passed, and rows a stopped process left behind.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, cast

from sqlalchemy import Engine, Table, and_, false, func, insert, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from sync_server.domain_models import Notification
from sync_server.notify.adapters import Notifier, RecordingNotifier
from sync_server.notify.catalogue import check_params, render
from sync_server.notify.errors import (
    DeliveryFailedError,
    NotificationError,
    NotificationRequestError,
)
from sync_server.notify.masking import mask_recipient, scrub
from sync_server.notify.settings import RetrySettings

__all__ = ["NotificationRecord", "NotificationService"]

log = logging.getLogger(__name__)

Clock = Callable[[], float]
_n = cast(Table, Notification.__table__)

_CHANNEL = re.compile(r"^[a-z][a-z0-9_]{0,15}$")
RETRYABLE: Final = "retryable: "
"""Prefix of ``error`` on a failed row that :meth:`NotificationService.retry_due` may resend."""
PERMANENT: Final = "permanent: "
MAX_ERROR_CHARS = 300
RETRY_BATCH = 100


@dataclass(frozen=True)
class NotificationRecord:
    """A ``notifications`` row (``recipient`` and ``params`` stay out of ``repr``: logs)."""

    id: int
    channel: str
    recipient: str = field(repr=False)
    template: str
    params: Mapping[str, Any] = field(repr=False)
    case_id: str | None
    dedupe: str | None
    status: str
    attempts: int
    created: float
    sent_at: float | None
    error: str | None


@dataclass(frozen=True)
class _Message:
    """What one delivery attempt sends (a row's fields plus its rendered text)."""

    row_id: int
    channel: str
    recipient: str = field(repr=False)
    template: str
    text: str = field(repr=False)
    params: Mapping[str, str] = field(repr=False)


def _record(row: Row[Any]) -> NotificationRecord:
    return NotificationRecord(
        row.id,
        row.channel,
        row.recipient,
        row.template,
        row.params,
        row.case_id,
        row.dedupe,
        row.status,
        row.attempts,
        row.created,
        row.sent_at,
        row.error,
    )


def _check_request(channel: str, recipient: str, case_id: str | None, dedupe: str | None) -> None:
    if not _CHANNEL.match(channel):
        raise NotificationRequestError(
            f"channel {channel!r} is not a channel name (a-z, 0-9, _; at most 16)"
        )
    if not recipient or len(recipient) > 64:
        raise NotificationRequestError("recipient must be 1 to 64 characters")
    if case_id is not None and not 1 <= len(case_id) <= 32:
        raise NotificationRequestError("case_id must be 1 to 32 characters")
    if dedupe is not None and not 1 <= len(dedupe) <= 128:
        raise NotificationRequestError("dedupe must be 1 to 128 characters")


class NotificationService:
    """Stores, sends and retries notifications on ``engine`` through ``notifiers`` (by channel).

    A channel without an adapter is recorded (``RecordingNotifier``), with one warning per
    channel. The service owns the adapters from now on: :meth:`close` closes them.
    """

    def __init__(
        self,
        engine: Engine,
        notifiers: Mapping[str, Notifier],
        *,
        retry: RetrySettings | None = None,
        clock: Clock = time.time,
    ) -> None:
        self._engine = engine
        self._notifiers: dict[str, Notifier] = dict(notifiers)
        self._retry = retry or RetrySettings()
        self._clock = clock
        self._lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"NotificationService(channels={sorted(self._notifiers)})"

    def close(self) -> None:
        """Close every adapter (safe twice)."""
        with self._lock:
            notifiers, self._notifiers, self._closed = list(self._notifiers.values()), {}, True
        for notifier in notifiers:
            notifier.close()

    def notifier(self, channel: str) -> Notifier:
        """The adapter of ``channel``; a recording one (said once in the log) when none is set."""
        with self._lock:
            if self._closed:
                raise NotificationError("the notification service is closed")
            found = self._notifiers.get(channel)
            if found is None:
                log.warning(
                    "no notifier configured for channel %s: its notifications are recorded in "
                    "the database, not sent",
                    channel,
                )
                found = self._notifiers[channel] = RecordingNotifier(channel)
            return found

    def notify(
        self,
        channel: str,
        recipient: str,
        template: str,
        params: Mapping[str, Any],
        *,
        case_id: str | None = None,
        dedupe: str | None = None,
    ) -> int:
        """Store and send one notification; returns its row id.

        Raises before storing anything for an unknown template or params that do not fit it
        (``TemplateParamsError``) and a bad channel, recipient, case id or dedupe key
        (``NotificationRequestError``). A delivery failure does not raise: it is stored on the
        row (and retried by :meth:`retry_due` when retryable). A ``dedupe`` key already used
        returns that row's id and sends nothing.
        """
        _check_request(channel, recipient, case_id, dedupe)
        if self._closed:
            raise NotificationError("the notification service is closed")
        text = render(template, params)
        values = check_params(template, params)
        now = self._clock()
        try:
            with self._engine.begin() as conn:
                done = conn.execute(
                    insert(_n).values(
                        channel=channel,
                        recipient=recipient,
                        template=template,
                        params=values,
                        case_id=case_id,
                        dedupe=dedupe,
                        status="queued",
                        attempts=1,
                        created=now,
                    )
                )
                key = done.inserted_primary_key
                assert key is not None
                row_id = int(key[0])
        except IntegrityError:
            existing = self.by_dedupe(dedupe) if dedupe is not None else None
            if existing is None:
                raise
            if (existing.channel, existing.recipient, existing.template) != (
                channel,
                recipient,
                template,
            ):
                log.warning(
                    "dedupe key of notification %d reused for another message (%s); not sent",
                    existing.id,
                    template,
                )
            else:
                log.info(
                    "%s notification %s: already row %d, not sent again",
                    channel,
                    template,
                    existing.id,
                )
            return existing.id
        self._deliver(_Message(row_id, channel, recipient, template, text, values), 1, now)
        return row_id

    def retry_due(self, now: float | None = None, *, limit: int = RETRY_BATCH) -> int:
        """Resend up to ``limit`` rows that are due; returns how many were attempted.

        Due: ``failed`` with a retryable reason, fewer than ``max_attempts`` attempts and the
        backoff since the last attempt passed; or ``queued`` for longer than ``stale_after_s``
        (its process stopped mid-send). Each row is claimed with a conditional update, so two
        processes running this at once never send the same row twice.
        """
        now = self._clock() if now is None else now
        retry = self._retry
        backoff_passed = or_(
            *(
                and_(_n.c.attempts == k, _n.c.sent_at <= now - retry.delay(k))
                for k in range(1, retry.max_attempts)
            ),
            false(),
        )
        due = or_(
            and_(_n.c.status == "failed", _n.c.error.like(RETRYABLE + "%"), backoff_passed),
            and_(
                _n.c.status == "queued",
                func.coalesce(_n.c.sent_at, _n.c.created) <= now - retry.stale_after_s,
            ),
        )
        with self._engine.connect() as conn:
            rows = conn.execute(select(_n).where(due).order_by(_n.c.id).limit(limit)).all()
        attempted = 0
        for row in rows:
            if self._retry_one(row, now):
                attempted += 1
        return attempted

    def get(self, row_id: int) -> NotificationRecord | None:
        """One notification row, or None."""
        with self._engine.connect() as conn:
            row = conn.execute(select(_n).where(_n.c.id == row_id)).first()
        return None if row is None else _record(row)

    def for_case(self, case_id: str) -> list[NotificationRecord]:
        """Every notification about ``case_id``, oldest first (for a case's history page)."""
        with self._engine.connect() as conn:
            rows = conn.execute(select(_n).where(_n.c.case_id == case_id).order_by(_n.c.id)).all()
        return [_record(r) for r in rows]

    def by_dedupe(self, dedupe: str) -> NotificationRecord | None:
        """The row holding ``dedupe``, or None (to check before work that must not repeat)."""
        with self._engine.connect() as conn:
            row = conn.execute(select(_n).where(_n.c.dedupe == dedupe)).first()
        return None if row is None else _record(row)

    def _retry_one(self, row: Row[Any], now: float) -> bool:
        """Claim ``row`` (still as it was read) and send it again; False when another process
        claimed it first or its attempts are used up."""
        claimed = and_(_n.c.id == row.id, _n.c.status == row.status, _n.c.attempts == row.attempts)
        if row.attempts >= self._retry.max_attempts:  # only a stale queued row gets here
            self._finish(
                claimed,
                "failed",
                now,
                f"gave up after {row.attempts} attempts: the sending process stopped "
                "mid-delivery; outcome unknown",
            )
            return False
        with self._engine.begin() as conn:
            won = conn.execute(
                update(_n)
                .where(claimed)
                .values(status="queued", attempts=row.attempts + 1, sent_at=now)
            ).rowcount
        if won != 1:
            return False
        attempts = row.attempts + 1
        try:
            text = render(row.template, row.params)
        except NotificationError as err:  # the catalogue changed since the row was stored
            self._finish(self._mine(row.id, attempts), "failed", now, PERMANENT + str(err))
            return True
        message = _Message(row.id, row.channel, row.recipient, row.template, text, row.params)
        self._deliver(message, attempts, now)
        return True

    def _deliver(self, message: _Message, attempts: int, started: float) -> None:
        notifier = self.notifier(message.channel)
        masked = mask_recipient(message.recipient)
        error: str | None = None
        try:
            notifier.send(message.recipient, message.template, message.text, message.params)
        except DeliveryFailedError as err:
            reason = scrub(err.reason, message.recipient)
            error = self._failure_text(err.retryable, reason, attempts)
        except Exception as err:  # noqa: BLE001 -- an adapter bug must not lose the row
            # Type only: the message of an unexpected error could hold the recipient.
            log.error(
                "%s adapter raised %s on notification %d",
                message.channel,
                type(err).__name__,
                message.row_id,
            )
            error = self._failure_text(True, f"adapter error {type(err).__name__}", attempts)
        now = max(self._clock(), started)
        mine = self._mine(message.row_id, attempts)
        if error is not None:
            self._finish(mine, "failed", now, error)
            log.warning(
                "%s notification %d (%s) to %s failed, attempt %d of %d: %s",
                message.channel,
                message.row_id,
                message.template,
                masked,
                attempts,
                self._retry.max_attempts,
                error,
            )
            return
        status = "recorded" if isinstance(notifier, RecordingNotifier) else "sent"
        self._finish(mine, status, now, None)
        if status == "sent":
            log.info(
                "%s notification %d (%s) sent to %s",
                message.channel,
                message.row_id,
                message.template,
                masked,
            )

    def _failure_text(self, retryable: bool, reason: str, attempts: int) -> str:
        if not retryable:
            text = PERMANENT + reason
        elif attempts < self._retry.max_attempts:
            text = RETRYABLE + reason
        else:
            text = f"gave up after {attempts} attempts: {reason}"
        return text[:MAX_ERROR_CHARS]

    @staticmethod
    def _mine(row_id: int, attempts: int) -> Any:
        """The row while this attempt still owns it (a stale-row retry may have taken over)."""
        return and_(_n.c.id == row_id, _n.c.status == "queued", _n.c.attempts == attempts)

    def _finish(self, where: Any, status: str, now: float, error: str | None) -> None:
        with self._engine.begin() as conn:
            done = conn.execute(
                update(_n).where(where).values(status=status, sent_at=now, error=error)
            )
        if done.rowcount != 1:
            log.warning(
                "a notification outcome (%s) was not stored: the row changed meanwhile", status
            )
