"""SMS codes: sent through the notification service's sms adapter, limited per phone and per
address, good once, for five minutes and five wrong tries; on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from sqlalchemy import Engine, func, select

from sync_server.application_codes import (
    CODE_TEMPLATE,
    CodeInvalidError,
    CodeRateLimitedError,
    SmsUnavailableError,
    consume_code,
    issue_code,
    sms_sender,
)
from sync_server.domain_models import ApplicationCode, Notification
from sync_server.notify import NotificationService, RecordingNotifier, TemporaryDeliveryError

from .conftest import PHONE, Clock, last_code


def send(engine: Engine, service: NotificationService, clock: Clock, phone: str = PHONE,
         client: str = "10.1.1.1") -> None:  # fmt: skip
    issue_code(engine, sms_sender(service), phone, client, clock(), site_name="邻里社区服务")


def test_a_code_goes_by_sms_and_works_once(
    town: Engine, notifications: NotificationService, sms: RecordingNotifier, clock: Clock
) -> None:
    send(town, notifications, clock)
    (message,) = sms.recent
    assert message.recipient == PHONE and message.template == CODE_TEMPLATE
    assert "邻里社区服务" in message.text and "5分钟" in message.text
    code = last_code(sms)
    with town.connect() as conn:
        stored = conn.execute(select(ApplicationCode)).one()
        # Neither the code nor the phone in clear; no notifications row holding the code.
        assert code not in str(stored) and PHONE not in str(stored)
        assert conn.execute(select(func.count()).select_from(Notification)).scalar_one() == 0
    consume_code(town, PHONE, code, clock())
    with pytest.raises(CodeInvalidError):
        consume_code(town, PHONE, code, clock())


def test_a_code_expires_after_five_minutes(
    town: Engine, notifications: NotificationService, sms: RecordingNotifier, clock: Clock
) -> None:
    send(town, notifications, clock)
    clock.advance(301)
    with pytest.raises(CodeInvalidError):
        consume_code(town, PHONE, last_code(sms), clock())


def test_five_wrong_codes_use_a_code_up(
    town: Engine, notifications: NotificationService, sms: RecordingNotifier, clock: Clock
) -> None:
    send(town, notifications, clock)
    code = last_code(sms)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(5):
        with pytest.raises(CodeInvalidError):
            consume_code(town, PHONE, wrong, clock())
    with pytest.raises(CodeInvalidError):
        consume_code(town, PHONE, code, clock())


def test_a_code_is_for_its_own_phone(
    town: Engine, notifications: NotificationService, sms: RecordingNotifier, clock: Clock
) -> None:
    send(town, notifications, clock)
    with pytest.raises(CodeInvalidError):
        consume_code(town, "13900139000", last_code(sms), clock())


def test_codes_are_limited_per_phone(
    town: Engine, notifications: NotificationService, clock: Clock
) -> None:
    send(town, notifications, clock)
    with pytest.raises(CodeRateLimitedError) as err:
        send(town, notifications, clock, client="10.9.9.9")
    assert 0 < err.value.retry_after_s <= 60
    for _ in range(4):
        clock.advance(61)
        send(town, notifications, clock)
    clock.advance(61)
    with pytest.raises(CodeRateLimitedError) as err:  # the sixth in an hour
        send(town, notifications, clock)
    assert err.value.retry_after_s > 60
    clock.advance(err.value.retry_after_s + 1)
    send(town, notifications, clock)


def test_codes_are_limited_per_address(
    town: Engine, notifications: NotificationService, clock: Clock
) -> None:
    for i in range(20):
        send(town, notifications, clock, phone=f"1390000{i:04d}")
    with pytest.raises(CodeRateLimitedError):
        send(town, notifications, clock, phone="13700000000")
    send(town, notifications, clock, phone="13700000000", client="10.2.2.2")


class Failing:
    """An sms adapter whose gateway is down."""

    channel = "sms"

    def send(self, recipient: str, template: str, text: str, params: Mapping[str, str]) -> None:
        raise TemporaryDeliveryError("gateway answered 503")

    def close(self) -> None:
        pass


def test_a_failed_sms_is_said(town: Engine, clock: Clock) -> None:
    service = NotificationService(town, {"sms": Failing()})
    try:
        with pytest.raises(SmsUnavailableError):
            send(town, service, clock)
    finally:
        service.close()
