"""The notification service on SQLite and on a private PostgreSQL: rows and outcomes, dedupe
(also racing threads), retries with backoff and a limit, the recording default, privacy."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from sqlalchemy import Engine, func, insert, select

from sync_server.domain_models import Notification
from sync_server.notify import (
    NotificationError,
    NotificationRequestError,
    NotificationService,
    RecordingNotifier,
    RetrySettings,
    SmsGatewayNotifier,
    TemplateParamsError,
    UnknownTemplateError,
)
from tests.notify.conftest import FakeClock, HttpSim, Reply

PHONE = "13812345678"
RESULT = {
    "service": "高龄津贴申领",
    "locker": "幸福里3号柜",
    "case_no": "C20240001",
    "link": "https://l.example.cn/c/Ab3",
}
REMINDER = {"deadline": "6月30日", "place": "幸福里社区服务中心"}
RETRY = RetrySettings(max_attempts=3, backoff_s=60, backoff_max_s=3600, stale_after_s=600)
MakeService = Callable[..., NotificationService]


@pytest.fixture
def make_service(engine: Engine, clock: FakeClock, http_sim: HttpSim) -> Iterator[MakeService]:
    made: list[NotificationService] = []

    def make(
        notifiers: Mapping[str, Any] | None = None, retry: RetrySettings = RETRY
    ) -> NotificationService:
        if notifiers is None:
            notifiers = {"sms": SmsGatewayNotifier(http_sim.url + "/sms", timeout_s=2)}
        service = NotificationService(engine, notifiers, retry=retry, clock=clock)
        made.append(service)
        return service

    yield make
    for service in made:
        service.close()


def row_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Notification)).scalar_one())


def test_sent_through_the_gateway(
    make_service: MakeService, http_sim: HttpSim, clock: FakeClock
) -> None:
    service = make_service()
    row_id = service.notify("sms", PHONE, "case.result_ready", RESULT, case_id="C20240001")
    (seen,) = http_sim.requests("/sms")
    assert RESULT["link"] in seen.json()["text"]
    record = service.get(row_id)
    assert record is not None
    assert (record.status, record.attempts, record.error) == ("sent", 1, None)
    assert record.sent_at == clock.now
    assert record.params == RESULT
    assert [r.id for r in service.for_case("C20240001")] == [row_id]
    assert PHONE not in repr(record)


def test_recording_default_masks_the_recipient_in_the_log(
    make_service: MakeService, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = RecordingNotifier("sms")
    service = make_service({"sms": recorder})
    with caplog.at_level(logging.DEBUG):
        row_id = service.notify("sms", PHONE, "subsidy.reminder", REMINDER)
    record = service.get(row_id)
    assert record is not None
    assert record.status == "recorded"
    assert record.recipient == PHONE  # the database keeps it; the log does not
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("138****5678" in line and "subsidy.reminder" in line for line in lines)
    assert PHONE not in caplog.text
    (message,) = recorder.recent
    assert "高龄津贴资格认证" in message.text
    assert message.recipient == PHONE


def test_a_channel_without_adapter_is_recorded_and_said_once(
    make_service: MakeService, caplog: pytest.LogCaptureFixture
) -> None:
    service = make_service({})
    with caplog.at_level(logging.WARNING):
        first = service.notify(
            "wechat",
            "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
            "notice.published",
            {"community": "幸福里社区", "title": "停水通知"},
        )
        second = service.notify(
            "wechat",
            "oUpF8uAbCdE_M2pxb1Q9zNjWeS7p",
            "notice.published",
            {"community": "幸福里社区", "title": "停电通知"},
        )
    assert [service.get(i).status for i in (first, second)] == ["recorded", "recorded"]  # type: ignore[union-attr]
    warnings = [r for r in caplog.records if "no notifier configured" in r.getMessage()]
    assert len(warnings) == 1
    assert "MuAJO" not in caplog.text


def test_missing_params_fail_before_anything_is_stored(
    make_service: MakeService, engine: Engine, http_sim: HttpSim
) -> None:
    service = make_service()
    with pytest.raises(TemplateParamsError, match="missing case_no, link, locker"):
        service.notify("sms", PHONE, "case.result_ready", {"service": "x"})
    with pytest.raises(UnknownTemplateError):
        service.notify("sms", PHONE, "case.ready", {})
    with pytest.raises(NotificationRequestError, match="channel"):
        service.notify("SMS!", PHONE, "subsidy.reminder", REMINDER)
    with pytest.raises(NotificationRequestError, match="dedupe"):
        service.notify("sms", PHONE, "subsidy.reminder", REMINDER, dedupe="x" * 129)
    assert row_count(engine) == 0
    assert http_sim.requests() == []


def test_a_bad_phone_is_a_permanent_failure_never_retried(
    make_service: MakeService, http_sim: HttpSim, clock: FakeClock
) -> None:
    service = make_service()
    row_id = service.notify("sms", "1381234567", "subsidy.reminder", REMINDER)
    record = service.get(row_id)
    assert record is not None
    assert record.status == "failed"
    assert record.error is not None
    assert record.error.startswith("permanent: recipient is not a mainland mobile")
    assert "1381234567" not in record.error
    clock.advance(10 * 86400)
    assert service.retry_due() == 0
    assert http_sim.requests() == []


def test_dedupe_sends_once(make_service: MakeService, http_sim: HttpSim, engine: Engine) -> None:
    service = make_service()
    key = "subsidy:2024:110105194912310021"
    first = service.notify("sms", PHONE, "subsidy.reminder", REMINDER, dedupe=key)
    again = service.notify("sms", PHONE, "subsidy.reminder", REMINDER, dedupe=key)
    other = service.notify("sms", PHONE, "subsidy.reminder", REMINDER, dedupe=key + ":b")
    assert again == first
    assert other != first
    found = service.by_dedupe(key)
    assert found is not None
    assert found.id == first
    assert service.by_dedupe("never-used") is None
    assert len(http_sim.requests()) == 2
    assert row_count(engine) == 2


def test_dedupe_holds_when_threads_race(
    make_service: MakeService, http_sim: HttpSim, engine: Engine
) -> None:
    """Eight threads (own connections, one engine) send the same reminder at the same moment."""
    service = make_service()
    barrier = threading.Barrier(8)
    ids: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        barrier.wait(timeout=10)
        try:
            ids.append(service.notify("sms", PHONE, "subsidy.reminder", REMINDER, dedupe="race-1"))
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert len(ids) == 8
    assert len(set(ids)) == 1
    assert row_count(engine) == 1
    assert len(http_sim.requests()) == 1


def test_retryable_failure_waits_for_its_backoff(
    make_service: MakeService, http_sim: HttpSim, clock: FakeClock
) -> None:
    service = make_service()
    http_sim.script("/sms", Reply(503, "busy"))
    row_id = service.notify("sms", PHONE, "case.result_ready", RESULT)
    record = service.get(row_id)
    assert record is not None
    assert (record.status, record.attempts) == ("failed", 1)
    assert record.error == "retryable: the SMS gateway answered HTTP 503"
    clock.advance(59)
    assert service.retry_due() == 0
    clock.advance(1)
    assert service.retry_due() == 1
    record = service.get(row_id)
    assert record is not None
    assert (record.status, record.attempts, record.error) == ("sent", 2, None)
    assert len(http_sim.requests()) == 2
    assert service.retry_due(clock.now + 86400) == 0  # sent rows are left alone


def test_backoff_doubles_and_attempts_stop_at_the_limit(
    make_service: MakeService, http_sim: HttpSim, clock: FakeClock
) -> None:
    service = make_service()
    http_sim.default("/sms", Reply(500, "down"))
    row_id = service.notify("sms", PHONE, "case.result_ready", RESULT)
    clock.advance(60)
    assert service.retry_due() == 1  # attempt 2, after 60 s
    clock.advance(119)
    assert service.retry_due() == 0  # attempt 3 waits 120 s
    clock.advance(1)
    assert service.retry_due() == 1
    record = service.get(row_id)
    assert record is not None
    assert (record.status, record.attempts) == ("failed", 3)
    assert record.error == "gave up after 3 attempts: the SMS gateway answered HTTP 500"
    clock.advance(30 * 86400)
    assert service.retry_due() == 0
    assert len(http_sim.requests()) == 3


def test_timeouts_and_refused_connections_are_retried(
    make_service: MakeService, http_sim: HttpSim, clock: FakeClock, engine: Engine
) -> None:
    from hardware_sim.processes import free_tcp_port

    closed = SmsGatewayNotifier(f"http://127.0.0.1:{free_tcp_port()}/sms", timeout_s=2)
    service = make_service({"sms": closed})
    row_id = service.notify("sms", PHONE, "case.result_ready", RESULT)
    record = service.get(row_id)
    assert record is not None
    assert record.error is not None
    assert record.error.startswith("retryable: the SMS gateway unreachable")
    # The gateway comes back: a service configured with it resends the row.
    http_sim.script("/sms", Reply(delay_s=1.0))
    slow = make_service({"sms": SmsGatewayNotifier(http_sim.url + "/sms", timeout_s=0.3)})
    clock.advance(60)
    assert slow.retry_due() == 1
    record = service.get(row_id)
    assert record is not None
    assert record.error is not None
    assert record.error.startswith("retryable: the SMS gateway did not answer within 0.3 s")
    clock.advance(120)
    assert slow.retry_due() == 1
    assert service.get(row_id).status == "sent"  # type: ignore[union-attr]


def test_a_row_left_queued_by_a_stopped_process_is_sent_again(
    make_service: MakeService, http_sim: HttpSim, clock: FakeClock, engine: Engine
) -> None:
    with engine.begin() as conn:
        row_id = conn.execute(
            insert(Notification)
            .values(
                channel="sms",
                recipient=PHONE,
                template="subsidy.reminder",
                params=REMINDER,
                status="queued",
                attempts=1,
                created=clock.now,
            )
            .returning(Notification.id)
        ).scalar_one()
    service = make_service()
    clock.advance(599)
    assert service.retry_due() == 0  # may still be in flight
    clock.advance(1)
    assert service.retry_due() == 1
    record = service.get(row_id)
    assert record is not None
    assert (record.status, record.attempts) == ("sent", 2)
    assert "高龄" in http_sim.requests()[0].json()["text"]


def test_two_services_retrying_at_once_send_each_row_once(
    make_service: MakeService, http_sim: HttpSim, clock: FakeClock
) -> None:
    first = make_service()
    http_sim.script("/sms", *[Reply(500, "down")] * 6)
    for n in range(6):
        first.notify("sms", PHONE, "case.result_ready", RESULT, dedupe=f"r{n}")
    assert len(http_sim.requests()) == 6
    services = [first, make_service(), make_service()]
    clock.advance(60)
    barrier = threading.Barrier(len(services))
    counts: list[int] = []

    def worker(service: NotificationService) -> None:
        barrier.wait(timeout=10)
        counts.append(service.retry_due())

    threads = [threading.Thread(target=worker, args=(s,)) for s in services]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sum(counts) == 6
    assert len(http_sim.requests()) == 12


class _BrokenAdapter:
    """An adapter with a bug: its exception message carries the recipient."""

    channel = "sms"

    def send(self, recipient: str, template: str, text: str, params: Mapping[str, str]) -> None:
        raise RuntimeError(f"boom for {recipient}")

    def close(self) -> None:
        pass


def test_an_adapter_bug_is_a_retryable_failure_without_personal_data(
    make_service: MakeService, caplog: pytest.LogCaptureFixture
) -> None:
    service = make_service({"sms": _BrokenAdapter()})
    with caplog.at_level(logging.DEBUG):
        row_id = service.notify("sms", PHONE, "case.result_ready", RESULT)
    record = service.get(row_id)
    assert record is not None
    assert (record.status, record.error) == ("failed", "retryable: adapter error RuntimeError")
    assert PHONE not in caplog.text


def test_failure_reason_stored_and_logged_without_the_number(
    make_service: MakeService, http_sim: HttpSim, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = SmsGatewayNotifier(http_sim.url + "/sms", message_field="msg")
    service = make_service({"sms": notifier})
    http_sim.script("/sms", Reply(body={"code": "15", "msg": f"号码{PHONE}已退订"}))
    with caplog.at_level(logging.DEBUG):
        row_id = service.notify("sms", "+86" + PHONE, "case.result_ready", RESULT)
    record = service.get(row_id)
    assert record is not None
    assert (
        record.error
        == "permanent: the SMS gateway refused the message: code 15 (号码138****5678已退订)"
    )
    assert PHONE not in caplog.text


def test_close_is_safe_twice_and_refuses_later_use(
    make_service: MakeService, engine: Engine
) -> None:
    service = make_service()
    service.close()
    service.close()
    with pytest.raises(NotificationError, match="closed"):
        service.notify("sms", PHONE, "subsidy.reminder", REMINDER)
    assert row_count(engine) == 0
