"""Reminding residents through the notification adapters, once each.

:func:`remind_residents` takes the records a query found and a ``send`` callable with the shape of
``NotificationService.notify(channel, recipient, template, params, case_id=None, dedupe=None)``
(sync_server/notify). Every resident gets a dedupe key made of the caller's prefix and a hash of
the ID number, so running the same reminder twice (a cron job restarted, an operator clicking
again) sends nothing new: the notification service refuses a key it has already stored.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from sync_server.records.errors import RecordsError
from sync_server.records.query import ResidentRecord

__all__ = ["MAX_DEDUPE_PREFIX", "ReminderCounts", "SendFn", "dedupe_key", "remind_residents"]

log = logging.getLogger(__name__)

MAX_DEDUPE_PREFIX: Final = 64
"""``notifications.dedupe`` holds 128 characters: the prefix, a colon and 32 hex digits fit."""


class SendFn(Protocol):
    """``NotificationService.notify`` or anything called the same way (``dedupe`` by keyword)."""

    def __call__(
        self,
        channel: str,
        recipient: str,
        template: str,
        params: Mapping[str, Any],
        *,
        dedupe: str | None = ...,
    ) -> object: ...


@dataclass(frozen=True)
class ReminderCounts:
    """``requested``: handed to ``send`` (the service drops those it already sent);
    ``skipped_no_phone``: residents without a mobile number (call or visit them)."""

    residents: int
    requested: int
    skipped_no_phone: int


def dedupe_key(prefix: str, id_number: str) -> str:
    """``subsidy-2026:`` + 32 hex digits of SHA-256(ID number): one key per resident and
    reminder, without the ID number itself in the notifications table."""
    digest = hashlib.sha256(id_number.encode()).hexdigest()[:32]
    return f"{prefix}:{digest}"


def remind_residents(
    records: Iterable[ResidentRecord],
    send: SendFn,
    *,
    template: str = "subsidy.reminder",
    params: Mapping[str, Any],
    dedupe_prefix: str,
    channel: str = "sms",
) -> ReminderCounts:
    """Send ``template`` with ``params`` to each resident's phone, deduplicated per resident.

    An exception from ``send`` (bad params, a database error) propagates: fix it and run the
    same reminder again; those already sent are not sent twice.
    """
    if not dedupe_prefix or len(dedupe_prefix) > MAX_DEDUPE_PREFIX:
        raise RecordsError(
            f"dedupe_prefix must be 1 to {MAX_DEDUPE_PREFIX} characters, e.g. 'subsidy-2026'"
        )
    residents = requested = skipped = 0
    for record in records:
        residents += 1
        if not record.phone:
            skipped += 1
            continue
        send(
            channel,
            record.phone,
            template,
            dict(params),
            dedupe=dedupe_key(dedupe_prefix, record.id_number),
        )
        requested += 1
    log.info(
        "reminder %s (%s): %d residents, %d requested, %d without a phone",
        template,
        dedupe_prefix,
        residents,
        requested,
        skipped,
    )
    return ReminderCounts(residents=residents, requested=requested, skipped_no_phone=skipped)
