"""The sync agent against a real Mosquitto: order, acks, offline, Last Will, backoff, clock."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from device.clock import FakeClock
from device.store import Store
from device.sync import SyncAgent
from hardware_sim.mosquitto import MosquittoTestBroker
from tests.mqtt_helpers import wait_for
from tests.sync.conftest import DEVICE, StandInServer, emit, sync_config

MakeAgent = Callable[..., SyncAgent]
ROOT = Path(__file__).resolve().parents[2]


def drained(store: Store) -> bool:
    return store.outbox.count() == 0


def test_events_emitted_before_connect_arrive_in_order_and_the_outbox_drains(
    broker: MosquittoTestBroker, store: Store, make_agent: MakeAgent
) -> None:
    emit(store, 250)
    with StandInServer(broker) as server:
        agent = make_agent(batch_size=40)
        agent.start()
        wait_for(lambda: drained(store), what="the outbox to drain")
        assert server.seqs() == list(range(1, 251))
        assert [e["data"]["i"] for e in server.stored()] == list(range(250))
        assert all(len(b["events"]) <= 40 for b in server.batches)
        assert all(b["boot"] == store.boot and b["device"] == DEVICE for b in server.batches)
        emit(store, 5, start=250)
        agent.notify()
        wait_for(lambda: drained(store) and len(server.seqs()) == 255, what="new events")
        health = agent.health()
        assert health.connected and health.last_ack == 255 and health.pending == 0


def test_offline_queueing_delivers_everything_in_order_after_the_broker_returns(
    broker: MosquittoTestBroker, store: Store, clock: FakeClock, make_agent: MakeAgent
) -> None:
    agent = make_agent()
    agent.start()
    wait_for(lambda: agent.connected, what="the first connection")
    broker.stop()
    emit(store, 200)
    agent.notify()
    wait_for(lambda: not agent.connected, what="the agent to notice")
    time.sleep(0.5)
    assert store.outbox.count() == 200
    broker.start()
    with StandInServer(broker) as server:
        # The agent may have reconnected and published before the server subscribed (PUBACK
        # 0x10: dropped by the broker); then only its ack timeout sends them again.
        wait_for(lambda: agent.connected, what="the reconnection")
        clock.advance(31)
        wait_for(lambda: drained(store), timeout_s=20, what="the outbox to drain")
        assert server.seqs() == list(range(1, 201))
        for batch in server.batches:
            seqs = [e["seq"] for e in batch["events"]]
            assert seqs == sorted(seqs)
        # A resend repeats events (the server dedupes); first arrivals are still in seq order.
        first_seen = list(dict.fromkeys(e["seq"] for b in server.batches for e in b["events"]))
        assert first_seen == sorted(first_seen)


def test_no_delete_without_ack_when_the_server_is_not_listening(
    broker: MosquittoTestBroker,
    store: Store,
    clock: FakeClock,
    make_agent: MakeAgent,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="device.sync")
    emit(store, 10)
    agent = make_agent(ack_timeout_s=30)
    agent.start()
    wait_for(lambda: agent.health().sent == 10, what="the events to be published")
    wait_for(lambda: "PUBACK 0x10" in caplog.text, what="the no-subscriber warning")
    time.sleep(0.3)
    assert store.outbox.count() == 10  # the broker took them; nobody stored them
    with StandInServer(broker) as server:
        time.sleep(0.3)
        assert store.outbox.count() == 10
        clock.advance(31)  # the ack timeout: everything unacked is published again
        wait_for(lambda: drained(store), what="the resend to be acked")
        assert server.seqs() == list(range(1, 11))


def test_window_and_acks_beyond_what_was_sent_are_ignored(
    broker: MosquittoTestBroker,
    store: Store,
    make_agent: MakeAgent,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="device.sync")
    emit(store, 5)
    with StandInServer(broker, auto_ack=False) as server:
        agent = make_agent(batch_size=1, max_inflight=1)
        agent.start()
        wait_for(lambda: server.seqs() == [1], what="the first batch")
        time.sleep(0.3)
        assert server.seqs() == [1]  # one batch in flight until the server acks
        server.ack(DEVICE, 4)  # issued on the device, but never sent: a forged or wrong ack
        server.ack(DEVICE, 10**6)
        time.sleep(0.3)
        assert store.outbox.count() == 5
        assert "only up to seq 1" in caplog.text
        server.ack(DEVICE, 1)
        wait_for(lambda: server.seqs() == [1, 2], what="the next batch after the ack")
        assert store.outbox.count() == 4
        server.auto_ack = True
        server.ack(DEVICE, 2)
        wait_for(lambda: drained(store), what="the rest")
        assert server.seqs() == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    "payload",
    [
        b"\x00\xff garbage",
        b"{}",
        b'{"seq": -1}',
        b'{"seq": "3"}',
        b'{"seq": 1, "extra": true}',
        b'{"seq": 1' + b" " * 2000 + b"}",
        b"[1, 2, 3]",
    ],
    ids=["bytes", "empty", "negative", "string", "extra", "oversize", "list"],
)
def test_garbage_on_down_ack_is_logged_and_the_agent_keeps_working(
    payload: bytes,
    broker: MosquittoTestBroker,
    store: Store,
    make_agent: MakeAgent,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="device.sync")
    emit(store, 3)
    with StandInServer(broker, auto_ack=False) as server:
        agent = make_agent()
        agent.start()
        wait_for(lambda: server.seqs() == [1, 2, 3], what="the batch")
        server.send_ack(DEVICE, payload)
        wait_for(lambda: "malformed down/ack" in caplog.text, what="the warning")
        assert store.outbox.count() == 3
        assert "garbage" not in caplog.text  # payloads are never echoed
        server.auto_ack = True
        emit(store, 2, start=3)
        agent.notify()
        wait_for(lambda: drained(store), what="the agent to carry on")
        assert agent.health().connected


def test_last_will_says_offline_with_the_same_boot_when_the_agent_dies(
    broker: MosquittoTestBroker, tmp_path: Path
) -> None:
    settings = {
        "sync": sync_config(broker).model_dump(),
        "device": DEVICE,
        "store": str(tmp_path / "child.db"),
    }
    settings_path = tmp_path / "child.json"
    settings_path.write_text(json.dumps(settings), encoding="utf-8")
    child = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("agent_child.py")), str(settings_path)],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline().decode()
        assert line.startswith("connected "), line
        boot = int(line.split()[1])
        with broker.server_client(client_id="watcher") as watcher:
            watcher.subscribe(f"linli/v1/dev/{DEVICE}/up/state")
            online = json.loads(watcher.expect_message().payload)
            assert online["online"] is True and online["boot"] == boot
            child.send_signal(signal.SIGKILL)
            child.wait(5)
            will = watcher.expect_message()
            # The Will ends exactly the session the online state began: same boot, same at.
            assert json.loads(will.payload) == {"online": False, "boot": boot, "at": online["at"]}
        with broker.server_client(client_id="later") as later:
            later.subscribe(f"linli/v1/dev/{DEVICE}/up/state")
            retained = later.expect_message()
            assert retained.retain
            assert json.loads(retained.payload) == {
                "online": False,
                "boot": boot,
                "at": online["at"],
            }
    finally:
        child.kill()
        child.wait(5)


def test_stop_publishes_offline_state(
    broker: MosquittoTestBroker, store: Store, make_agent: MakeAgent
) -> None:
    agent = make_agent()
    agent.start()
    wait_for(lambda: agent.connected, what="the connection")
    agent.stop()
    agent.stop()  # safe twice
    with broker.server_client(client_id="watcher") as watcher:
        watcher.subscribe(f"linli/v1/dev/{DEVICE}/up/state")
        state = json.loads(watcher.expect_message().payload)
    assert state["online"] is False and state["boot"] == store.boot
    assert isinstance(state["at"], float)
    assert agent.health().state == "stopped"


def test_reconnects_with_backoff_after_the_broker_is_killed(
    broker: MosquittoTestBroker, store: Store, make_agent: MakeAgent
) -> None:
    agent = make_agent()
    agent.start()
    wait_for(lambda: agent.connected, what="the first connection")
    broker.kill()
    emit(store, 20)
    wait_for(lambda: agent.health().failures >= 3, what="several failed attempts")
    health = agent.health()
    assert not health.connected and health.last_error
    broker.start()
    with StandInServer(broker) as server:
        wait_for(lambda: drained(store), timeout_s=20, what="the outbox to drain")
        assert server.seqs() == list(range(1, 21))
    assert agent.health().failures == 0


def test_insane_clock_means_no_connection_attempt_until_it_is_set(
    broker: MosquittoTestBroker, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="device.sync")
    clock = FakeClock(start=1_000.0, wall=5.0)  # a Pi without RTC, just booted: 1970
    emit(store, 3)
    agent = SyncAgent(sync_config(broker), DEVICE, store, clock=clock)
    with StandInServer(broker) as server:
        agent.start()
        try:
            time.sleep(0.6)
            health = agent.health()
            assert health.state == "waiting_for_clock" and health.attempts == 0
            log_text = broker.log_file.read_text(encoding="utf-8", errors="replace")
            assert f"as {DEVICE} " not in log_text
            assert caplog.text.count("not connecting to the broker: the clock reads") == 1
            assert "1970-01-01" in caplog.text
            clock.advance(1_790_000_000.0)
            wait_for(lambda: drained(store), what="delivery once the clock is set")
            assert server.seqs() == [1, 2, 3]
        finally:
            agent.stop()


def test_wrong_password_is_logged_clearly_and_retried_with_backoff(
    broker: MosquittoTestBroker,
    store: Store,
    make_agent: MakeAgent,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="device.sync")
    agent = make_agent(password="not-the-password")
    agent.start()
    wait_for(lambda: agent.health().attempts >= 3, what="retries")
    health = agent.health()
    assert not health.connected and health.state in {"backoff", "connecting"}
    assert health.last_error is not None and "Not authorized" in health.last_error
    assert "refused device dev-a" in caplog.text and "password" in caplog.text
    assert caplog.text.count("refused device") == 1  # logged once, not every attempt
    assert "not-the-password" not in caplog.text


def test_backoff_delays_grow_with_jitter_and_stay_under_the_maximum() -> None:
    from device.sync import Backoff

    backoff = Backoff(1.0, 30.0, random.Random(7))
    delays = [backoff.next_delay() for _ in range(10)]
    for n, delay in enumerate(delays):
        step = min(30.0, 2.0**n)
        assert step / 2 <= delay <= step
    assert len({round(d, 6) for d in delays[-4:]}) == 4  # jittered even at the cap
    backoff.reset()
    assert backoff.next_delay() <= 1.0
