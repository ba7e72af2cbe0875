"""The server's command storage (sync_server/commands.py) on SQLite and PostgreSQL: issuing stores a
row, a result is set once and only by the command's own device, bad payloads change nothing."""

from __future__ import annotations

import threading
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import Engine

from device.commands import CommandResult, encode_result, verify_command
from device.credential import SigningKey, generate_signing_key
from device.protocol import MessageError, NotJSONError, OversizeError, SchemaError
from sync_server.commands import (
    CommandIssuer,
    ForeignResultError,
    IssuedCommand,
    UnknownCommandError,
    UnknownDeviceError,
    expire_overdue,
    get_command,
    record_result,
    record_result_event,
)
from sync_server.ingest import register_device

NOW = 1_790_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return generate_signing_key("srv-2026-01")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def issuer(engine: Engine, key: SigningKey, clock: Clock) -> CommandIssuer:
    for device in ("dev-a", "dev-b"):
        register_device(engine, device, "locker", clock=clock)
    return CommandIssuer(engine, key, clock=clock)


def message(payload: bytes) -> mqtt.MQTTMessage:
    msg = mqtt.MQTTMessage(topic=b"linli/v1/dev/dev-a/up/cmd-result")
    msg.payload = payload
    return msg


def result(command: IssuedCommand, status: str = "succeeded", **fields: Any) -> bytes:
    values: dict[str, Any] = {"id": command.id, "status": status}
    values.update(fields)
    return encode_result(CommandResult.model_validate(values))


def test_issue_stores_a_signed_command_the_device_accepts(
    engine: Engine, issuer: CommandIssuer, key: SigningKey
) -> None:
    issued = issuer.issue("dev-a", "locker.open", {"compartment": 4}, ttl_s=90)
    row = get_command(engine, issued.id)
    assert row is not None
    assert (row.device, row.type, row.status) == ("dev-a", "locker.open", "issued")
    assert (row.created, row.expires, row.completed) == (NOW, NOW + 90, None)
    verified = verify_command(issued.payload, {key.kid: key.verify_key}, device_id="dev-a", now=NOW)
    assert verified.id == issued.id and dict(verified.args) == {"compartment": 4}
    assert verified.exp == issued.expires


def test_issue_refuses_an_unknown_device_and_bad_arguments(issuer: CommandIssuer) -> None:
    with pytest.raises(UnknownDeviceError, match="dev-z"):
        issuer.issue("dev-z", "locker.open", {})
    with pytest.raises(ValueError, match="bytes"):
        issuer.issue("dev-a", "locker.open", {"blob": b"x"})
    with pytest.raises(ValueError, match="ttl_s"):
        issuer.issue("dev-a", "locker.open", {}, ttl_s=0)


def test_a_result_is_set_once_and_redelivery_changes_nothing(
    engine: Engine, issuer: CommandIssuer, clock: Clock
) -> None:
    issued = issuer.issue("dev-a", "locker.open", {"compartment": 4})
    clock.now += 5
    issuer.handle_result("dev-a", message(result(issued, result={"door": "open"})))
    first = get_command(engine, issued.id)
    assert first is not None
    assert (first.status, first.result, first.completed) == ("succeeded", {"door": "open"}, NOW + 5)
    clock.now += 5
    issuer.handle_result("dev-a", message(result(issued, result={"door": "open"})))
    issuer.handle_result("dev-a", message(result(issued, "refused", reason="replayed")))
    assert get_command(engine, issued.id) == first


def test_failed_and_refused_results_keep_their_reason(
    engine: Engine, issuer: CommandIssuer
) -> None:
    failed = issuer.issue("dev-a", "locker.open", {})
    refused = issuer.issue("dev-a", "locker.open", {})
    issuer.handle_result(
        "dev-a", message(result(failed, "failed", reason="failed", result={"error": "OSError"}))
    )
    issuer.handle_result("dev-a", message(result(refused, "refused", reason="expired")))
    row = get_command(engine, failed.id)
    assert row is not None and row.status == "failed"
    assert row.result == {"error": "OSError", "reason": "failed"}
    row = get_command(engine, refused.id)
    assert row is not None and (row.status, row.result) == ("refused", {"reason": "expired"})


def test_a_result_from_another_device_is_refused_and_the_row_untouched(
    engine: Engine, issuer: CommandIssuer
) -> None:
    issued = issuer.issue("dev-b", "locker.open", {"compartment": 1})
    before = get_command(engine, issued.id)
    with pytest.raises(ForeignResultError, match="another device"):
        issuer.handle_result("dev-a", message(result(issued, "refused", reason="wrong-device")))
    assert get_command(engine, issued.id) == before


def test_a_result_for_a_command_never_issued_is_refused(issuer: CommandIssuer) -> None:
    with pytest.raises(UnknownCommandError):
        issuer.handle_result(
            "dev-a", message(b'{"id":"' + b"0" * 32 + b'","status":"succeeded","result":{}}')
        )


def test_a_refusal_of_an_unverified_command_touches_nothing(
    engine: Engine, issuer: CommandIssuer
) -> None:
    issued = issuer.issue("dev-a", "locker.open", {})
    before = get_command(engine, issued.id)
    payload = encode_result(CommandResult(id=None, status="refused", reason="forged"))
    issuer.handle_result("dev-a", message(payload))
    assert get_command(engine, issued.id) == before


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"\x93\xff random", NotJSONError),
        (b'{"command": "done"}', SchemaError),
        (b'{"id": null, "status": "refused", "reason": "x"}' + b" " * 20_000, OversizeError),
    ],
)
def test_bad_payloads_raise_message_errors_and_change_nothing(
    engine: Engine, issuer: CommandIssuer, payload: bytes, error: type[MessageError]
) -> None:
    issued = issuer.issue("dev-a", "locker.open", {})
    before = get_command(engine, issued.id)
    with pytest.raises(error):
        issuer.handle_result("dev-a", message(payload))
    assert get_command(engine, issued.id) == before


def test_overdue_commands_expire_and_a_late_report_still_wins(
    engine: Engine, issuer: CommandIssuer, clock: Clock
) -> None:
    late = issuer.issue("dev-a", "locker.open", {}, ttl_s=60)
    answered = issuer.issue("dev-a", "locker.open", {}, ttl_s=60)
    fresh = issuer.issue("dev-a", "locker.open", {}, ttl_s=600)
    issuer.handle_result("dev-a", message(result(answered)))
    assert expire_overdue(engine, NOW + 61) == 1
    statuses = {c.id: get_command(engine, c.id).status for c in (late, answered, fresh)}  # type: ignore[union-attr]
    assert statuses == {late.id: "expired", answered.id: "succeeded", fresh.id: "issued"}
    assert expire_overdue(engine, NOW + 62) == 0
    # The device ran it within its clock-skew margin: its report replaces the server's guess.
    issuer.handle_result("dev-a", message(result(late, result={"door": "open"})))
    row = get_command(engine, late.id)
    assert row is not None and row.status == "succeeded"


def test_audit_events_from_the_outbox_set_the_outcome_too(
    engine: Engine, issuer: CommandIssuer
) -> None:
    ran = issuer.issue("dev-a", "locker.open", {})
    refused = issuer.issue("dev-a", "locker.open", {})
    data = {"id": ran.id, "type": "locker.open", "status": "succeeded", "result": {"ok": True}}
    assert record_result_event(engine, "dev-a", "cmd.result", data, now=NOW) == "recorded"
    refusal = {"id": refused.id, "type": "locker.open", "reason": "expired"}
    assert record_result_event(engine, "dev-a", "cmd.refused", refusal, now=NOW) == "recorded"
    assert record_result_event(engine, "dev-b", "cmd.result", data, now=NOW) is None  # foreign
    assert record_result_event(engine, "dev-a", "test.tick", {}, now=NOW) is None
    assert record_result_event(engine, "dev-a", "cmd.result", {"id": 5}, now=NOW) is None
    assert get_command(engine, ran.id).status == "succeeded"  # type: ignore[union-attr]
    assert get_command(engine, refused.id).status == "refused"  # type: ignore[union-attr]


def test_two_servers_recording_the_same_result_set_it_once(
    engine: Engine, issuer: CommandIssuer
) -> None:
    issued = issuer.issue("dev-a", "locker.open", {})
    report = CommandResult(id=issued.id, status="succeeded", result={})
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def record() -> None:
        barrier.wait()
        outcomes.append(record_result(engine, "dev-a", report, now=NOW))

    threads = [threading.Thread(target=record) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["duplicate", "duplicate", "duplicate", "recorded"]
