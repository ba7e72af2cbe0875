"""Signed commands end to end: server issuer -> real Mosquitto -> device sync agent and runner ->
``up/cmd-result`` and the audit events -> server database.

What an operator cares about: a valid command runs exactly once and the server sees its result;
a forged, unknown-key, expired, misrouted or replayed command never runs and leaves an audit
event on the server; junk on ``down/cmd`` or ``up/cmd-result`` stops neither side.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import cbor2
import pytest
from cwt import COSE
from sqlalchemy import Engine, select

from device.commands import CONTENT_TYPE, MAX_COMMAND_BYTES, verify_command
from device.credential import SigningKey, VerifyKey, generate_signing_key
from device.protocol import topic
from device.sync.commands import CommandRunner
from hardware_sim.mosquitto import MosquittoTestBroker
from sync_server.commands import CommandExpiredError, CommandIssuer, IssuedCommand, get_command
from sync_server.consumer import Consumer
from sync_server.ingest import register_device
from sync_server.models import Device

from ..e2e.conftest import Device_, MakeConsumer, MakeDevice, wait_for
from .conftest import KID, SECRET_ARG, Locker, all_server_event_text, args, server_events

JUNK_MARKER = b"JUNK-MARKER-5e1d"
"""In every junk payload: it must never reach a log line."""


@dataclass
class Site:
    consumer: Consumer
    issuer: CommandIssuer
    device: Device_
    runner: CommandRunner


def online(engine: Engine, device: str) -> bool:
    with engine.connect() as conn:
        row = conn.execute(select(Device.online).where(Device.id == device)).first()
    return row is not None and bool(row[0])


@pytest.fixture
def site(
    engine: Engine,
    make_consumer: MakeConsumer,
    make_device: MakeDevice,
    server_key: SigningKey,
    keys: dict[str, VerifyKey],
    locker: Locker,
) -> Site:
    issuer = CommandIssuer(engine, server_key)
    consumer = make_consumer(start=False)
    issuer.attach(consumer)
    consumer.start()
    wait_for(lambda: consumer.connected, what="the consumer to connect")
    device = make_device("dev-a", start=False)
    runner = CommandRunner(device.store, keys, "dev-a", skew_s=60)
    locker.register(runner)
    runner.attach(device.agent)
    device.agent.start()
    # up/state online is published after the down/cmd SUBSCRIBE on the same connection: once
    # the server has it, the broker routes commands to the device.
    wait_for(lambda: online(engine, "dev-a"), what="dev-a to be online")
    return Site(consumer, issuer, device, runner)


def status(engine: Engine, command_id: str) -> str | None:
    row = get_command(engine, command_id)
    return None if row is None else row.status


def refusals(engine: Engine, device: str = "dev-a") -> list[dict[str, Any]]:
    return server_events(engine, device, "cmd.refused")


def test_a_valid_command_runs_exactly_once_and_the_server_records_its_result(
    site: Site, engine: Engine, locker: Locker
) -> None:
    issued = site.issuer.issue("dev-a", "locker.open", args(5), ttl_s=60)
    assert site.issuer.send(site.consumer, issued)
    wait_for(lambda: status(engine, issued.id) == "succeeded", what="the succeeded result")
    row = get_command(engine, issued.id)
    assert row is not None and row.result == {"compartment": 5, "door": "open"}
    assert locker.opened == [5]
    wait_for(lambda: bool(server_events(engine, "dev-a", "cmd.result")), what="the audit event")
    [audit] = server_events(engine, "dev-a", "cmd.result")
    assert audit == {
        "id": issued.id,
        "type": "locker.open",
        "status": "succeeded",
        "result": {"compartment": 5, "door": "open"},
    }
    assert server_events(engine, "dev-a", "compartment.opened") == [{"compartment": 5}]
    assert SECRET_ARG not in all_server_event_text(engine)  # args are never audited
    wait_for(site.device.drained, what="the device outbox to drain")


def test_commands_sent_from_other_threads_while_results_flow_all_run_once(
    site: Site, engine: Engine, locker: Locker
) -> None:
    # The server sends from its API threads while the consumer thread acknowledges results:
    # the connection must survive them all writing at once.
    issued = [site.issuer.issue("dev-a", "locker.open", args(n)) for n in range(60)]
    refused: list[str] = []

    def send(commands: list[IssuedCommand]) -> None:
        refused.extend(c.id for c in commands if not site.issuer.send(site.consumer, c))

    senders = [threading.Thread(target=send, args=(issued[i::2],)) for i in range(2)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(30)
    assert refused == [], site.consumer.health().last_error
    wait_for(lambda: all(status(engine, c.id) == "succeeded" for c in issued), what="60 results")
    assert sorted(locker.opened) == list(range(60))


def test_the_same_bytes_again_are_refused_as_replayed_and_do_not_run(
    site: Site, engine: Engine, locker: Locker
) -> None:
    issued = site.issuer.issue("dev-a", "locker.open", args(2))
    assert site.issuer.send(site.consumer, issued)
    wait_for(lambda: status(engine, issued.id) == "succeeded", what="the first run")
    before = get_command(engine, issued.id)
    # A compromised broker (or the server account) publishes the captured bytes again.
    assert site.consumer.publish("dev-a", "down/cmd", issued.payload)
    wait_for(lambda: bool(refusals(engine)), what="the replay's audit event")
    assert refusals(engine) == [{"reason": "replayed", "id": issued.id, "type": "locker.open"}]
    assert locker.opened == [2]
    assert get_command(engine, issued.id) == before  # still succeeded, completed unchanged


@pytest.mark.parametrize("way", ["forged", "unknown-key", "expired", "wrong-device"])
def test_bad_commands_never_run_and_are_audited_on_the_server(
    way: str,
    site: Site,
    engine: Engine,
    server_key: SigningKey,
    locker: Locker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    target = "dev-a"
    if way == "forged":  # the right key id, another private key
        issuer = CommandIssuer(engine, generate_signing_key(KID))
    elif way == "unknown-key":
        issuer = CommandIssuer(engine, generate_signing_key("srv-1999-01"))
    elif way == "expired":  # issued an hour ago with a 60 s lifetime
        issuer = CommandIssuer(engine, server_key, clock=lambda: time.time() - 3600)
    else:  # validly signed for dev-b, published on dev-a's down/cmd by the server account
        register_device(engine, "dev-b", "locker")
        issuer, target = site.issuer, "dev-b"
    issued = issuer.issue(target, "locker.open", args(1), ttl_s=60)
    rejected = site.consumer.health().rejected
    assert site.consumer.publish("dev-a", "down/cmd", issued.payload)
    wait_for(lambda: bool(refusals(engine)), what=f"the {way} refusal on the server")
    [audit] = refusals(engine)
    assert audit["reason"] == way
    assert locker.opened == []
    verified = way in ("expired", "wrong-device")
    assert audit["id"] == (issued.id if verified else None)  # unverified ids are never trusted
    row = get_command(engine, issued.id)
    assert row is not None
    if way == "expired":
        assert (row.status, row.result) == ("refused", {"reason": "expired"})
    else:
        # Forged / unknown key: no verified id, so no row can be touched. Wrong device: the
        # server refuses dev-a's report on dev-b's command.
        assert row.status == "issued" and row.result is None
    if way == "wrong-device":
        assert site.consumer.health().rejected == rejected + 1
        assert "issued to another device" in caplog.text
    assert f"refused: {way}" in caplog.text
    assert SECRET_ARG not in caplog.text and SECRET_ARG not in all_server_event_text(engine)


def test_send_sets_the_mqtt_message_expiry_and_the_broker_drops_a_stale_command(
    broker: MosquittoTestBroker, engine: Engine, make_consumer: MakeConsumer, server_key: SigningKey
) -> None:
    register_device(engine, "dev-c", "locker")
    issuer = CommandIssuer(engine, server_key)
    consumer = make_consumer()
    down = topic("dev-c", "down/cmd")
    probe = broker.client("dev-c", client_id="dev-c-probe", clean_start=True, session_expiry_s=60)
    assert probe.subscribe(down).value == 1
    issued = issuer.issue("dev-c", "locker.open", args(), ttl_s=120)
    assert issuer.send(consumer, issued)
    got = probe.expect_message()
    assert got.qos == 1 and bytes(got.payload) == issued.payload
    assert 118 <= getattr(got.properties, "MessageExpiryInterval", 0) <= 120
    assert status(engine, issued.id) == "delivered"
    keys = {KID: server_key.verify_key}
    assert (
        verify_command(bytes(got.payload), keys, device_id="dev-c", now=time.time()).id == issued.id
    )
    # Offline with a kept session: a command that expires meanwhile is never handed over.
    probe.disconnect()
    short = issuer.issue("dev-c", "locker.open", args(), ttl_s=1)
    assert issuer.send(consumer, short)
    time.sleep(2.2)
    with pytest.raises(CommandExpiredError):
        issuer.send(consumer, short)
    probe = broker.client("dev-c", client_id="dev-c-probe", clean_start=False, session_expiry_s=60)
    try:
        assert probe.drain(0.5) == []
    finally:
        probe.disconnect()


def signed_without_claims(key: SigningKey) -> bytes:
    """Validly signed by the server's key, but not a command's claims: a wrong-schema payload."""
    cose = COSE.new(alg_auto_inclusion=False, kid_auto_inclusion=False)
    protected = {1: -8, 3: CONTENT_TYPE, 4: key.kid.encode()}
    payload = cbor2.dumps({"open": 3, "note": JUNK_MARKER.decode()})
    out = cose.encode_and_sign(payload, key.cose_key, protected=protected)
    assert isinstance(out, bytes)
    return out


def test_junk_on_both_command_topics_is_refused_and_logged_while_syncing_goes_on(
    site: Site,
    engine: Engine,
    broker: MosquittoTestBroker,
    server_key: SigningKey,
    locker: Locker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    down_junk = [
        JUNK_MARKER + os.urandom(64),  # random bytes
        json.dumps({"type": "locker.open", "note": JUNK_MARKER.decode()}).encode(),  # JSON
        signed_without_claims(server_key),  # signed, wrong schema
        JUNK_MARKER * (MAX_COMMAND_BYTES // len(JUNK_MARKER) + 1),  # oversize
    ]
    for payload in down_junk:
        assert site.consumer.publish("dev-a", "down/cmd", payload)
    wait_for(lambda: len(refusals(engine)) == 4, what="four refusals on the server")
    assert [r["reason"] for r in refusals(engine)] == [
        "malformed",
        "malformed",
        "malformed",
        "oversize",
    ]
    assert all(r["id"] is None for r in refusals(engine))

    rejected = site.consumer.health().rejected
    up_junk = [
        JUNK_MARKER + os.urandom(64),
        json.dumps({"command": "done", "note": JUNK_MARKER.decode()}).encode(),
        b'{"id":null,"status":"refused","reason":"forged","n":"' + JUNK_MARKER * 1500 + b'"}',
    ]
    with broker.client("dev-c", client_id="dev-c-junk") as other:
        for payload in up_junk:
            reason = other.publish(topic("dev-c", "up/cmd-result"), payload)
            assert reason is not None and reason.value in (0, 16)  # 16: no subscriber matched
    wait_for(
        lambda: caplog.text.count("message refused (up/cmd-result)") == 3,
        what="three refused results in the server log",
    )
    assert site.consumer.health().rejected == rejected + 3

    # Both sides go on: an event from the device reaches the server, a new command runs.
    site.device.emit(1)
    wait_for(lambda: server_events(engine, "dev-a", "test.tick") == [{"i": 0}], what="an event")
    issued = site.issuer.issue("dev-a", "locker.open", args(7))
    assert site.issuer.send(site.consumer, issued)
    wait_for(lambda: status(engine, issued.id) == "succeeded", what="a command after the junk")
    assert locker.opened == [7]
    assert site.consumer.connected and site.device.agent.connected
    assert JUNK_MARKER.decode() not in caplog.text  # payloads are never logged
    assert caplog.text.count("refused: malformed") == 3
