"""The device's command runner on a real store, without MQTT: a command runs once, its effect, the
inbox record and the audit event commit together, and every refusal is audited without args."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from device.atrest import DeviceKey
from device.clock import FakeClock
from device.commands import MAX_RESULT_BYTES, encode_result, parse_result, sign_command
from device.credential import SigningKey, VerifyKey, generate_signing_key
from device.store import Store, Transaction, open_store
from device.sync.commands import CommandRunner
from device.sync.errors import SyncError

from .conftest import KID, SECRET_ARG, Locker, args, outbox_events


def command(key: SigningKey, clock: FakeClock, **overrides: Any) -> bytes:
    values: dict[str, Any] = {
        "device_id": "dev-a",
        "type": "locker.open",
        "args": args(),
        "now": clock.time(),
        "ttl_s": 120,
    }
    values.update(overrides)
    return sign_command(key, **values)


def test_a_valid_command_runs_once_with_its_effect_inbox_and_audit_together(
    runner: CommandRunner, store: Store, server_key: SigningKey, clock: FakeClock, locker: Locker
) -> None:
    raw = command(server_key, clock)
    outcome = runner.handle(raw)
    assert outcome.status == "succeeded"
    assert dict(outcome.result or {}) == {"compartment": 3, "door": "open"}
    assert locker.opened == [3]
    entry = store.inbox.get(outcome.id or "")
    assert entry is not None and entry.outcome == "succeeded"
    events = outbox_events(store)
    assert [t for t, _ in events] == ["compartment.opened", "cmd.result"]
    assert events[1][1] == {
        "id": outcome.id,
        "type": "locker.open",
        "status": "succeeded",
        "result": {"compartment": 3, "door": "open"},
    }
    # The same bytes again (broker redelivery, or an attacker's replay) do not run again.
    again = runner.handle(raw)
    assert (again.status, again.reason, again.id) == ("refused", "replayed", outcome.id)
    assert locker.opened == [3]
    assert outbox_events(store, "cmd.refused")[-1][1] == {
        "reason": "replayed",
        "id": outcome.id,
        "type": "locker.open",
    }


def test_replay_protection_survives_a_restart(
    tmp_path: Path, keys: dict[str, VerifyKey], server_key: SigningKey, clock: FakeClock
) -> None:
    key = DeviceKey.generate()
    raw = command(server_key, clock)
    runs: list[int] = []

    def run(path: Path) -> str:
        with open_store(path, key=key, clock=clock) as store:
            made = CommandRunner(store, keys, "dev-a", clock=clock)

            def count(_tx: Transaction, _a: Mapping[str, Any]) -> dict[str, Any]:
                runs.append(1)
                return {}

            made.register("locker.open", count)
            return made.handle(raw).status

    assert run(tmp_path / "d.db") == "succeeded"
    assert run(tmp_path / "d.db") == "refused"
    assert runs == [1]


def test_a_failing_executor_rolls_its_effect_back_and_is_recorded_as_failed(
    store: Store, keys: dict[str, VerifyKey], server_key: SigningKey, clock: FakeClock
) -> None:
    made = CommandRunner(store, keys, "dev-a", clock=clock)

    def jammed(tx: Transaction, a: Mapping[str, Any]) -> dict[str, Any]:
        tx.emit("compartment.opened", {"compartment": a["compartment"]})
        raise OSError(f"lock of compartment {a['compartment']} jammed for {SECRET_ARG}")

    made.register("locker.open", jammed)
    raw = command(server_key, clock)
    outcome = made.handle(raw)
    assert (outcome.status, outcome.reason) == ("failed", "failed")
    assert dict(outcome.result or {}) == {"error": "OSError"}
    events = outbox_events(store)
    assert [t for t, _ in events] == ["cmd.result"]  # the effect's event was rolled back
    assert events[0][1]["status"] == "failed" and events[0][1]["result"] == {"error": "OSError"}
    assert SECRET_ARG not in json.dumps(events)  # the exception message is not kept
    entry = store.inbox.get(outcome.id or "")
    assert entry is not None and entry.outcome == "failed"
    assert made.handle(raw).reason == "replayed"  # a failed command is not retried either


@pytest.mark.parametrize(
    "bad", [{"blob": b"\x00"}, ["not", "a", "map"], {"text": "x" * MAX_RESULT_BYTES}]
)
def test_an_unreportable_result_counts_as_a_failure(
    store: Store, keys: dict[str, VerifyKey], server_key: SigningKey, clock: FakeClock, bad: Any
) -> None:
    made = CommandRunner(store, keys, "dev-a", clock=clock)

    def odd(tx: Transaction, _a: Mapping[str, Any]) -> Any:
        tx.emit("compartment.opened", {"compartment": 1})
        return bad

    made.register("locker.open", odd)
    outcome = made.handle(command(server_key, clock))
    assert outcome.status == "failed"
    assert [t for t, _ in outbox_events(store)] == ["cmd.result"]


def test_an_unknown_type_is_refused_and_never_retried(
    runner: CommandRunner, store: Store, server_key: SigningKey, clock: FakeClock
) -> None:
    raw = command(server_key, clock, type="kiosk.reboot")
    outcome = runner.handle(raw)
    assert (outcome.status, outcome.reason) == ("refused", "unknown-type")
    assert outcome.type == "kiosk.reboot"
    entry = store.inbox.get(outcome.id or "")
    assert entry is not None and entry.outcome == "refused"
    assert runner.handle(raw).reason == "replayed"


@pytest.mark.parametrize(
    ("make", "reason", "verified"),
    [
        (lambda k, c: command(generate_signing_key(KID), c), "forged", False),
        (lambda k, c: command(generate_signing_key("srv-old"), c), "unknown-key", False),
        (lambda k, c: command(k, c, device_id="dev-b"), "wrong-device", True),
        (lambda k, c: command(k, c, now=c.time() - 600), "expired", True),
        (lambda k, c: command(k, c, now=c.time() + 600), "not-yet-valid", True),
        (lambda k, c: b"\x00garbage " + SECRET_ARG.encode(), "malformed", False),
        (lambda k, c: SECRET_ARG.encode() * 2000, "oversize", False),
    ],
)
def test_refusals_do_not_run_and_are_audited_without_args_or_bytes(
    runner: CommandRunner,
    store: Store,
    server_key: SigningKey,
    clock: FakeClock,
    locker: Locker,
    caplog: pytest.LogCaptureFixture,
    make: Any,
    reason: str,
    verified: bool,
) -> None:
    caplog.set_level(logging.DEBUG)
    outcome = runner.handle(make(server_key, clock))
    assert (outcome.status, outcome.reason) == ("refused", reason)
    assert locker.opened == []
    [(_, data)] = outbox_events(store)
    assert data["reason"] == reason
    if verified:
        assert data["id"] == outcome.id and len(data["id"]) == 32
        assert data["type"] == "locker.open"
        assert store.inbox.get(data["id"]) is None  # a refused valid command may come again
    else:
        assert data["id"] is None and data["type"] is None
    assert set(data) == {"reason", "id", "type"}
    assert SECRET_ARG not in json.dumps(data)
    assert SECRET_ARG not in caplog.text
    assert f"refused: {reason}" in caplog.text
    message = parse_result(encode_result(outcome.message()))  # what goes on up/cmd-result
    assert message.status == "refused" and message.reason == reason
    assert message.id == (outcome.id if verified else None)


def test_personal_results_are_sealed_in_the_outbox(
    store: Store, keys: dict[str, VerifyKey], server_key: SigningKey, clock: FakeClock
) -> None:
    made = CommandRunner(store, keys, "dev-a", clock=clock)
    made.register("resident.lookup", lambda _tx, _a: {"name": "Wang Fang"}, personal=True)
    made.handle(command(server_key, clock, type="resident.lookup"))
    [event] = store.outbox.pending()
    assert event.personal
    raw = store.db.conn.execute("SELECT data FROM outbox WHERE seq = ?", (event.seq,)).fetchone()
    assert b"Wang Fang" not in bytes(raw[0])


def test_registration_mistakes_are_caught_at_once(
    store: Store, keys: dict[str, VerifyKey], clock: FakeClock
) -> None:
    made = CommandRunner(store, keys, "dev-a", clock=clock)
    made.register("locker.open", lambda _tx, _a: {})
    with pytest.raises(ValueError, match="already"):
        made.register("locker.open", lambda _tx, _a: {})
    with pytest.raises(ValueError, match="dotted"):
        made.register("Open", lambda _tx, _a: {})
    with pytest.raises(SyncError, match="public key"):
        CommandRunner(store, {}, "dev-a")
