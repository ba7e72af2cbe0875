"""Device store -> sync agent -> real Mosquitto -> server consumer -> SQLite, end to end.

Every test asserts what an operator cares about: each event stored exactly once, in order per
device, and the device's outbox empty afterwards (acks reached it).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine

from device.protocol import MAX_EVENTS_BATCH_BYTES, topic
from hardware_sim.mosquitto import MosquittoTestBroker
from sync_server.ingest import acked_seq

from .conftest import (
    ROOT,
    MakeConsumer,
    MakeDevice,
    device_row,
    exactly_once,
    json_bytes,
    stored,
    sync_config,
    wait_for,
)


def event(seq: int, i: int) -> dict[str, object]:
    return {
        "seq": seq,
        "id": f"{seq:032x}",
        "type": "test.tick",
        "at": 1.0e9 + seq,
        "data": {"i": i},
    }


def test_events_are_stored_exactly_once_in_order_and_the_outbox_drains(
    engine: Engine, make_consumer: MakeConsumer, make_device: MakeDevice
) -> None:
    consumer = make_consumer()
    device = make_device("dev-a", batch_size=50)
    device.emit(120)
    device.emit(130)
    wait_for(device.drained, what="the outbox to drain")
    assert exactly_once(engine, "dev-a", 250)
    assert acked_seq(engine, "dev-a") == 250
    health = consumer.health()
    assert health.stored == 250 and health.connected and health.state == "connected"


def test_a_duplicate_batch_is_acked_again(
    broker: MosquittoTestBroker, engine: Engine, make_consumer: MakeConsumer
) -> None:
    make_consumer()
    batch = json_bytes({"device": "dev-b", "boot": 1, "events": [event(1, 0), event(2, 1)]})
    with broker.client("dev-b") as device:
        device.subscribe(topic("dev-b", "down/ack"))
        for _ in range(3):  # the device lost the ack: each resend is acked again
            assert device.publish(topic("dev-b", "up/events"), batch).value == 0
            assert json.loads(device.expect_message().payload) == {"seq": 2}
    assert exactly_once(engine, "dev-b", 2)


def test_two_consumers_in_one_share_group_store_each_event_once(
    engine: Engine, db_url: str, make_consumer: MakeConsumer, make_device: MakeDevice
) -> None:
    from sync_server.db import open_database

    other_engine = open_database(db_url)
    try:
        first = make_consumer("server-1")
        second = make_consumer("server-2", engine_=other_engine)
        devices = [make_device(name, batch_size=20) for name in ("dev-a", "dev-b", "dev-c")]
        for _ in range(3):
            for device in devices:
                device.emit(100)
        for device in devices:
            wait_for(device.drained, timeout_s=60, what=f"{device.id} to drain")
            assert exactly_once(engine, device.id, 300)
        total = first.health().stored + second.health().stored
        assert total == 900
        assert first.health().batches > 0 and second.health().batches > 0  # the share was shared
    finally:
        other_engine.dispose()


def _agent_child(
    broker: MosquittoTestBroker, tmp_path: Path, device: str
) -> subprocess.Popen[bytes]:
    settings = {
        "sync": sync_config(broker, device).model_dump(),
        "device": device,
        "store": str(tmp_path / f"{device}-child.db"),
    }
    settings_path = tmp_path / f"{device}-child.json"
    settings_path.write_text(json.dumps(settings), encoding="utf-8")
    return subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "sync" / "agent_child.py"), str(settings_path)],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_last_will_marks_the_device_offline_with_its_boot_and_old_wills_lose(
    broker: MosquittoTestBroker, engine: Engine, make_consumer: MakeConsumer, tmp_path: Path
) -> None:
    make_consumer()
    child = _agent_child(broker, tmp_path, "dev-a")
    try:
        assert child.stdout is not None
        line = child.stdout.readline().decode()
        assert line.startswith("connected "), line
        boot = int(line.split()[1])
        wait_for(lambda: device_row(engine, "dev-a") == (True, boot), what="online state")
        child.send_signal(signal.SIGKILL)
        child.wait(5)
        wait_for(lambda: device_row(engine, "dev-a") == (False, boot), what="the Last Will")
    finally:
        child.kill()
        child.wait(5)
    with broker.client("dev-a") as device:
        state = topic("dev-a", "up/state")
        newer = {"online": True, "boot": boot + 1, "at": 2.0e9}
        device.publish(state, json_bytes(newer))
        wait_for(lambda: device_row(engine, "dev-a") == (True, boot + 1), what="the new boot")
        device.publish(state, json_bytes({"online": False, "boot": boot}))  # a late old Will
        device.publish(state, json_bytes({"online": True, "boot": boot, "at": 3.0e9}))
        device.publish(state, json_bytes({"online": True, "boot": boot + 1, "at": 2.5e9}))
        wait_for(
            lambda: _state_at(engine, "dev-a") == 2.5e9, what="the newest state of the new boot"
        )
    assert device_row(engine, "dev-a") == (True, boot + 1)


def _state_at(engine: Engine, device: str) -> float | None:
    from sqlalchemy import select

    from sync_server.models import Device

    with engine.connect() as conn:
        return conn.execute(select(Device.state_at).where(Device.id == device)).scalar()


def test_malformed_payloads_are_refused_and_logged_and_the_consumer_carries_on(
    broker: MosquittoTestBroker,
    engine: Engine,
    make_consumer: MakeConsumer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    consumer = make_consumer()
    secret = "SECRET-110101199003077777"
    garbage = [
        ("up/events", os.urandom(300)),
        ("up/events", b"\xff\xfe" + secret.encode()),
        ("up/events", json_bytes({"device": "dev-b", "secret": secret})),
        ("up/events", json_bytes({"device": "dev-b", "boot": 1, "events": [{"seq": 0}]})),
        ("up/events", b"[" * 100_000),
        ("up/events", b" " * (MAX_EVENTS_BATCH_BYTES + 1)),
        ("up/events", json_bytes({"device": "dev-a", "boot": 1, "events": [event(1, 0)]})),
        ("up/state", os.urandom(50)),
        ("up/state", json_bytes({"online": "yes", "boot": secret})),
        ("up/state", b"x" * 10_000),
        ("up/rubbish", json_bytes({"secret": secret})),
    ]
    with broker.client("dev-b") as device:
        device.subscribe(topic("dev-b", "down/ack"))
        for suffix, payload in garbage:
            device.paho.publish(f"linli/v1/dev/dev-b/{suffix}", payload, qos=1)
        good = json_bytes({"device": "dev-b", "boot": 1, "events": [event(1, 0)]})
        assert device.publish(topic("dev-b", "up/events"), good).value == 0
        assert json.loads(device.expect_message(10).payload) == {"seq": 1}
        assert device.drain(0.3) == []  # nothing else was acked
    assert exactly_once(engine, "dev-b", 1)
    assert stored(engine, "dev-a") == []  # the batch claiming dev-a was refused
    assert consumer.health().rejected == len(garbage)
    assert consumer.connected
    assert "names another device" in caplog.text
    assert secret not in caplog.text


@pytest.mark.parametrize("same_client_id", [True, False])
def test_server_stopped_and_replaced_mid_stream_loses_and_doubles_nothing(
    engine: Engine, make_consumer: MakeConsumer, make_device: MakeDevice, same_client_id: bool
) -> None:
    first = make_consumer("server-1")
    device = make_device("dev-a", batch_size=10)
    device.emit(100)
    wait_for(lambda: acked_seq(engine, "dev-a") >= 30, what="some events stored")
    first.stop()
    device.emit(100)  # the server is away: the broker says no subscriber or holds the session
    make_consumer("server-1" if same_client_id else "server-2")
    device.emit(100)
    wait_for(device.drained, timeout_s=30, what="the outbox to drain")
    assert exactly_once(engine, "dev-a", 300)


def test_a_database_failure_acks_nothing_and_everything_arrives_after_it(
    engine: Engine, make_consumer: MakeConsumer, make_device: MakeDevice
) -> None:
    from sqlalchemy import event as sa_event
    from sqlalchemy.exc import OperationalError

    down = {"on": False}

    def fail(*_args: object, **_kwargs: object) -> None:
        if down["on"]:
            raise OperationalError("database is down (test)", {}, Exception("down"))

    consumer = make_consumer()
    device = make_device("dev-a", batch_size=10)
    device.emit(30)
    wait_for(device.drained, what="the first events")
    sa_event.listen(engine, "before_cursor_execute", fail)
    try:
        down["on"] = True
        device.emit(50)
        wait_for(lambda: consumer.health().state == "waiting_for_database", what="the failure")
        assert device.store.outbox.count() == 50  # nothing acked while nothing was stored
        down["on"] = False
        wait_for(device.drained, timeout_s=30, what="the outbox to drain after the database")
    finally:
        sa_event.remove(engine, "before_cursor_execute", fail)
    assert exactly_once(engine, "dev-a", 80)
    assert consumer.health().storage_errors >= 1


def test_publishing_from_other_threads_while_consuming_keeps_the_link(
    broker: MosquittoTestBroker,
    engine: Engine,
    make_consumer: MakeConsumer,
    make_device: MakeDevice,
) -> None:
    """Two threads call ``Consumer.publish`` every 2 ms while a device syncs: paho's publish from
    a foreign thread used to write the TLS socket concurrently with the consumer's loop and
    break the connection; now the consumer's thread sends them and the link survives."""
    import threading

    consumer = make_consumer()
    device = make_device("dev-a", batch_size=20)
    with broker.client("dev-b") as listener:
        listener.subscribe(topic("dev-b", "down/sync"))
        stop = threading.Event()
        sent: list[int] = []

        def publisher(n: int) -> None:
            count = 0
            while not stop.is_set():
                payload = json_bytes({"probe": n, "count": count})
                assert consumer.publish("dev-b", "down/sync", payload)
                count += 1
                time.sleep(0.002)
            sent.append(count)

        threads = [threading.Thread(target=publisher, args=(n,)) for n in (1, 2)]
        for thread in threads:
            thread.start()
        for _ in range(10):
            device.emit(30)
            time.sleep(0.2)
        stop.set()
        for thread in threads:
            thread.join(5)
        wait_for(device.drained, what="the outbox to drain")
        first = json.loads(listener.expect_message().payload)
    assert exactly_once(engine, "dev-a", 300)
    assert sum(sent) > 100 and "probe" in first
    assert consumer.health().connects == 1, "the consumer lost its broker connection"
