"""Benchmark: device -> Mosquitto -> sync server, next to the raw paho pipe of the same run.

Everything is real: a private Mosquitto (TLS, password file, ACL, from ``hardware_sim.mosquitto``);
the server as a separate ``linli server run`` process (the real
:class:`~sync_server.consumer.Consumer`) on a SQLite *file* database (WAL) migrated by Alembic;
devices that are real SQLite stores, each with its real :class:`~device.sync.SyncAgent` (its own
thread, TLS connection and credentials; all of them in this process). The reference for ingest
and drain is the very payloads the agents send — the ``up/events`` batches ``next_batch`` makes
from those outboxes, as the agent does: same count, sizes and batch shapes — published by raw
paho clients (one per device, its own credentials, TLS, QoS 1, the agent's in-flight window)
to a plain paho subscriber process that only acks (no database). The reference runs while the
server process is down, so the two never compete for the two cores.

Ingest and drain repeat ``repeat`` times (reference then real, interleaved, fresh events each
round) and report p50/p95 over the rounds. After all rounds every device's events are checked on
the server: seq 1..N exactly once, in order, each carrying its own payload, outboxes empty — a
run that lost or doubled anything fails instead of reporting. Server memory is sampled from
``/proc/PID/status`` while heartbeat clients (retained ``up/state``) stay connected, driven by a
few worker processes with one ``selectors`` loop each.
"""

from __future__ import annotations

import contextlib
import json
import resource
import selectors
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select

from device.atrest import DeviceKey
from device.config import SyncSection
from device.protocol import topic
from device.store import Store, open_store
from device.sync import SyncAgent
from device.sync.batches import next_batch
from hardware_sim.mosquitto import MosquittoTestBroker
from hardware_sim.processes import stop_process
from linli.bench import summarize, value
from sync_server.db import open_database, upgrade
from sync_server.ingest import insert_event_rows, register_device
from sync_server.models import DeviceAck, Event

BUDGET_INGEST_RATIO = 0.7
"""DESIGN.md: durable ingest >= 70 % of the raw paho -> Mosquitto -> paho QoS 1 rate."""
BUDGET_DRAIN_RATIO = 2.0
"""DESIGN.md: 10,000 queued events drain in <= 2x the raw pipe time."""
BATCH_SIZE = SyncSection().batch_size
MAX_INFLIGHT = SyncSection().max_inflight
EVENT_TYPE = "bench.tick"
PROBE_DEVICE = "bench-probe"
SHARE_RAW = "$share/bench-raw/linli/v1/dev/+/up/events"
WAIT_S = 120.0


def _tls(ca_file: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _client(client_id: str, user: str, password: str, ca_file: str) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.username_pw_set(user, password)
    client.tls_set_context(_tls(ca_file))
    return client


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"process {pid} has no VmRSS (exited?)")


def _wait(predicate: Any, what: str, timeout_s: float = WAIT_S, step: float = 0.005) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(step)
    raise RuntimeError(f"sync benchmark: timed out after {timeout_s:.0f}s waiting for {what}")


# --- the pieces: broker, server process, raw subscriber process --------------------------------


@dataclass
class Site:
    broker: MosquittoTestBroker
    db_url: str
    tmp: Path

    def password(self, user: str) -> str:
        return self.broker.credentials[user].password

    @property
    def ca(self) -> str:
        return str(self.broker.ca_cert)


@contextlib.contextmanager
def _server(site: Site, name: str) -> Iterator[subprocess.Popen[bytes]]:
    """``linli server run`` as its own process; yields once its shared subscription is live."""
    pw_file = site.tmp / "server-password"
    pw_file.write_text(site.password(site.broker.server_user), encoding="utf-8")
    pw_file.chmod(0o600)
    log = (site.tmp / f"server-{name}.log").open("ab")
    proc = subprocess.Popen(  # noqa: S603 -- fixed arguments, no shell
        [
            sys.executable,
            "-m",
            "linli",
            "server",
            "run",
            "--db",
            site.db_url,
            "--ca",
            site.ca,
            "--user",
            site.broker.server_user,
            "--broker-host",
            "127.0.0.1",
            "--broker-port",
            str(site.broker.tls_port),
            "--password-file",
            str(pw_file),
            "--client-id",
            f"bench-server-{name}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        with site.broker.client(PROBE_DEVICE) as probe:
            # PUBACK 0x10 "no matching subscribers" until the server has subscribed.
            def subscribed() -> bool:
                if proc.poll() is not None:
                    raise RuntimeError(f"linli server run exited {proc.returncode}; {log.name}")
                state = json.dumps({"online": True, "boot": 1, "at": time.time()})
                reason = probe.publish(topic(PROBE_DEVICE, "up/state"), state)
                return reason is not None and reason.value == 0

            _wait(subscribed, "the server process to subscribe", 30, 0.1)
        yield proc
    finally:
        stop_process(proc, 15)
        log.close()


@contextlib.contextmanager
def _raw_subscriber(site: Site, expected: int) -> Iterator[subprocess.Popen[str]]:
    """A plain paho subscriber process (QoS 1, acks, no DB); prints the time of message N."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "linli.bench.sync", "subscriber"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    user = site.broker.server_user
    config = {
        "port": site.broker.tls_port,
        "ca": site.ca,
        "user": user,
        "password": site.password(user),
        "expected": expected,
    }
    proc.stdin.write(json.dumps(config) + "\n")
    proc.stdin.flush()
    try:
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the raw subscriber process did not subscribe")
        yield proc
    finally:
        proc.stdin.close()
        stop_process(proc, terminate=False)


def _subscriber_main() -> None:
    config = json.loads(sys.stdin.readline())
    expected = int(config["expected"])
    got = 0
    done = threading.Event()
    last = 0.0

    def on_message(_c: mqtt.Client, _u: Any, _m: mqtt.MQTTMessage) -> None:
        nonlocal got, last
        got += 1
        if got == expected:
            last = time.monotonic()
            done.set()

    subscribed = threading.Event()
    client = _client("bench-raw-sub", config["user"], config["password"], config["ca"])
    client.on_message = on_message
    client.on_subscribe = lambda *_a: subscribed.set()
    client.connect("127.0.0.1", int(config["port"]), keepalive=30)
    client.loop_start()
    client.subscribe(SHARE_RAW, qos=1)
    if not subscribed.wait(10):
        raise SystemExit("raw subscriber: no SUBACK")
    print("ready", flush=True)
    if not done.wait(WAIT_S):
        raise SystemExit(f"raw subscriber: {got} of {expected} messages")
    print(json.dumps({"last": last, "got": got}), flush=True)
    sys.stdin.readline()  # until the benchmark closes stdin
    client.disconnect()
    client.loop_stop()


# --- devices -----------------------------------------------------------------------------------


@dataclass
class Device:
    id: str
    store: Store
    emitted: int = 0

    def fill(self, count: int) -> None:
        """Queue ``count`` events offline (the agent is not running), one transaction."""
        with self.store.transaction() as tx:
            for _ in range(count):
                tx.emit(EVENT_TYPE, {"i": self.emitted, "compartment": self.emitted % 24})
                self.emitted += 1

    def payloads(self) -> list[bytes]:
        """The ``up/events`` batches the agent will send for what is queued (same slicing)."""
        boot, out, after = self.store.meta("boot"), [], 0
        while found := next_batch(self.store.outbox, self.id, boot, limit=BATCH_SIZE, after=after):
            payload, _first, after = found
            out.append(payload)
        return out


def _agent(site: Site, device: Device) -> SyncAgent:
    config = SyncSection(
        host="127.0.0.1",
        port=site.broker.tls_port,
        ca_file=site.ca,
        password=site.password(device.id),
        keepalive_s=30,
        ack_timeout_s=20.0,
        backoff_min_s=0.05,
        backoff_max_s=0.5,
        poll_interval_s=0.1,
    )
    return SyncAgent(config, device.id, device.store)


def _acked_total(engine: Any, devices: Sequence[Device]) -> int:
    """Sum of the server's acks over ``devices``: a 50-row read where counting events would
    scan a growing table every poll and steal CPU from the pipeline being measured."""
    with engine.connect() as conn:
        found = conn.execute(
            select(func.coalesce(func.sum(DeviceAck.seq), 0)).where(
                DeviceAck.device_id.in_([d.id for d in devices])
            )
        ).scalar_one()
    return int(found)


def _raw_publish(site: Site, batches: dict[str, list[bytes]]) -> tuple[float, float, float]:
    """Each device's payloads through its own raw paho client, at most MAX_INFLIGHT unacked.

    Like the agents, each client connects and publishes at once; returns (connect started, first
    publish, last message received by the subscriber) on the monotonic clock, which is the same
    clock in both processes (CLOCK_MONOTONIC).
    """
    total = sum(len(b) for b in batches.values())
    firsts: list[float] = []
    errors: list[str] = []

    def publisher(device: str, payloads: list[bytes]) -> None:
        window = threading.Semaphore(MAX_INFLIGHT)
        acked = threading.Semaphore(0)

        def on_publish(*_a: Any) -> None:
            window.release()
            acked.release()

        client = _client(device, device, site.password(device), site.ca)
        client.on_publish = on_publish
        try:
            client.connect("127.0.0.1", site.broker.tls_port, keepalive=30)
            client.loop_start()
            name = topic(device, "up/events")
            for i, payload in enumerate(payloads):
                window.acquire()
                if i == 0:
                    firsts.append(time.monotonic())
                client.publish(name, payload, qos=1)
            for _ in payloads:
                if not acked.acquire(timeout=WAIT_S):
                    raise RuntimeError("no PUBACK")
            client.disconnect()
            client.loop_stop()
        except Exception as err:  # noqa: BLE001  # reported by the caller, which raises
            errors.append(f"{device}: {err}")

    with _raw_subscriber(site, total) as sub:
        threads = [threading.Thread(target=publisher, args=item) for item in batches.items()]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise RuntimeError(f"raw publishers failed: {errors[:3]}")
        assert sub.stdout is not None
        report = json.loads(sub.stdout.readline() or "{}")
    if report.get("got") != total:
        raise RuntimeError(f"raw subscriber got {report.get('got')} of {total} messages")
    return started, min(firsts), float(report["last"])


def _real_run(site: Site, devices: Sequence[Device], engine: Any) -> float:
    """Start every device's agent; seconds from the first publish to the last event stored
    (every device's server ack at its last seq: all stored, contiguous)."""
    expected = sum(d.store.outbox.last_seq for d in devices)
    agents = [_agent(site, d) for d in devices]
    try:
        for agent in agents:
            agent.start()
        t0 = _wait(lambda: any(a.health().sent for a in agents), "a first publish", step=0.002)
        t1 = _wait(
            lambda: _acked_total(engine, devices) >= expected, "every event stored", step=0.02
        )
        _wait(lambda: all(d.store.outbox.count() == 0 for d in devices), "outboxes to drain")
    finally:
        for agent in agents:
            agent.stop()
    return t1 - t0


def _drain_run(site: Site, device: Device) -> float:
    """Start the agent of a device with a full outbox; seconds until the outbox is empty."""
    agent = _agent(site, device)
    try:
        t0 = time.monotonic()
        agent.start()
        last = device.store.outbox.last_seq
        t1 = _wait(lambda: device.store.outbox.acked_seq >= last, "the drain to finish", step=0.005)
    finally:
        agent.stop()
    return t1 - t0


def _storage_floor(path: Path, payloads: Sequence[bytes]) -> float:
    """Seconds SQLite takes to insert the rows of ``payloads`` into a fresh server database in
    ONE commit, with the server's pragmas and INSERT, the rows built before the clock starts:
    what storing these events costs with no MQTT, parsing or acking at all (a floor for the
    drain; the raw pipe stores nothing)."""
    url = f"sqlite:///{path}"
    upgrade(url)
    engine = open_database(url)
    rows: list[tuple[Any, ...]] = []
    for payload in payloads:
        batch = json.loads(payload)
        for event in batch["events"]:
            data = json.dumps(event["data"], separators=(",", ":"), ensure_ascii=False)
            at, boot = event["at"], batch["boot"]
            row = (batch["device"], event["seq"], event["id"], event["type"], at, data, boot, at)
            rows.append(row)
    try:
        register_device(engine, rows[0][0], "bench")
        with engine.begin() as conn:
            started = time.monotonic()
            insert_event_rows(conn, rows)
        return time.monotonic() - started  # the commit included: engine.begin() ends in it
    finally:
        engine.dispose()


def _verify(engine: Any, devices: Sequence[Device]) -> None:
    """Every event of every device stored exactly once, in seq order, with its own payload."""
    with engine.connect() as conn:
        for device in devices:
            rows = conn.execute(
                select(Event.seq, Event.data)
                .where(Event.device_id == device.id)
                .order_by(Event.seq)
            ).all()
            got = [(int(seq), int(data["i"])) for seq, data in rows]
            if got != [(s, s - 1) for s in range(1, device.emitted + 1)]:
                raise RuntimeError(
                    f"{device.id}: {device.emitted} events emitted, the server holds {len(got)} "
                    "that are not seq 1..N exactly once in order: the benchmark lost or doubled "
                    "data"
                )
            if device.store.outbox.count():
                raise RuntimeError(f"{device.id}: outbox not empty after the run")


# --- heartbeats: many light clients per worker process, one selectors loop each ---------------


def _heartbeat_main() -> None:
    config = json.loads(sys.stdin.readline())
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    interval = float(config["interval"])
    connected: set[str] = set()
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()  # type: ignore[func-returns-value]
    selector = selectors.DefaultSelector()
    clients: list[tuple[str, mqtt.Client]] = []
    for device, password in config["clients"]:
        client = _client(device, device, password, config["ca"])
        client.on_connect = lambda *_a, d=device: connected.add(d)
        client.connect("127.0.0.1", int(config["port"]), keepalive=60)
        sock = client.socket()
        assert isinstance(sock, ssl.SSLSocket)
        selector.register(sock, selectors.EVENT_READ, client)
        clients.append((device, client))
    announced = False
    next_beat = {
        d: time.monotonic() + interval * i / len(clients) for i, (d, _) in enumerate(clients)
    }
    next_misc = time.monotonic() + 1
    while not stop.is_set():
        for key, _ in selector.select(timeout=0.05):
            client = key.data
            client.loop_read()
            sock = client.socket()
            while isinstance(sock, ssl.SSLSocket) and sock.pending():
                client.loop_read()
        now = time.monotonic()
        for device, client in clients:
            if device in connected and now >= next_beat[device]:
                state = json.dumps({"online": True, "boot": 1, "at": time.time()})
                client.publish(topic(device, "up/state"), state, qos=1, retain=True)
                next_beat[device] = now + interval
            if client.want_write():
                client.loop_write()
        if now >= next_misc:
            for _, client in clients:
                client.loop_misc()
            next_misc = now + 1
        if not announced and len(connected) == len(clients):
            print(f"connected {len(clients)}", flush=True)
            announced = True
    for _, client in clients:
        client.disconnect()
        client.loop_write()


def _heartbeats(
    site: Site,
    *,
    names: Sequence[str],
    workers: int,
    interval_s: float,
    hold_s: float,
    server_pid: int,
) -> tuple[float, list[float], list[float]]:
    """Server RSS with no device; then connect every device, hold, sample (server, broker) RSS."""
    procs: list[subprocess.Popen[str]] = []
    idle = _rss_mib(server_pid)
    try:
        for w in range(workers):
            mine = names[w::workers]
            if not mine:
                continue
            proc = subprocess.Popen(
                [sys.executable, "-m", "linli.bench.sync", "heartbeat"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert proc.stdin is not None
            proc.stdin.write(
                json.dumps(
                    {
                        "port": site.broker.tls_port,
                        "ca": site.ca,
                        "interval": interval_s,
                        "clients": [[n, site.password(n)] for n in mine],
                    }
                )
                + "\n"
            )
            proc.stdin.flush()
            procs.append(proc)
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line.startswith("connected"):
                raise RuntimeError(f"a heartbeat worker failed to connect its clients ({line!r})")
        time.sleep(max(0.0, hold_s - 5))
        server, broker = [], []
        assert site.broker.process is not None
        for _ in range(5):
            time.sleep(1)
            for proc in procs:
                if proc.poll() is not None:
                    raise RuntimeError("a heartbeat worker exited while the devices were held")
            server.append(_rss_mib(server_pid))
            broker.append(_rss_mib(site.broker.process.pid))
        return idle, server, broker
    finally:
        for proc in procs:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in procs:
            stop_process(proc, terminate=False)


# --- the benchmark -----------------------------------------------------------------------------


def _round(
    site: Site,
    engine: Any,
    *,
    fleet: Sequence[Device],
    drainer: Device,
    events: int,
    drain_events: int,
) -> tuple[float, float, float, float, float]:
    """One round on fresh events: (raw ingest s, real ingest s, raw drain s, real drain s,
    storage floor of the drain s)."""
    for device in fleet:
        device.fill(events)
    batches = {d.id: d.payloads() for d in fleet}
    _, t0, t1 = _raw_publish(site, batches)
    drainer.fill(drain_events)
    drain_batches = {drainer.id: drainer.payloads()}
    d0, _, d1 = _raw_publish(site, drain_batches)  # connect included, as for the agent
    floor = _storage_floor(site.tmp / f"floor-{drainer.emitted}.db", drain_batches[drainer.id])
    with _server(site, "sync"):
        ingest = _real_run(site, fleet, engine)
        drain = _drain_run(site, drainer)
    return t1 - t0, ingest, d1 - d0, drain, floor


def run(
    *,
    devices: int = 50,
    events: int = 1000,
    drain_events: int = 10_000,
    repeat: int = 3,
    heartbeat_devices: int = 1000,
    heartbeat_interval_s: float = 3.0,
    hold_s: float = 10.0,
    workers: int = 4,
    progress: Callable[[str], None] = lambda _message: None,
) -> list[dict[str, Any]]:
    """Ingest from ``devices`` devices, drain of ``drain_events``, server RSS under heartbeats."""
    if min(devices, events, drain_events, repeat, heartbeat_devices, workers) < 1:
        raise ValueError("the sync benchmark needs at least one of everything")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the broker inherits it
    fleet_ids = [f"bench-{i:03d}" for i in range(devices)]
    beat_ids = [f"beat-{i:04d}" for i in range(heartbeat_devices)]
    with tempfile.TemporaryDirectory(prefix="linli-bench-sync-") as tmp_name:
        tmp = Path(tmp_name)
        broker = MosquittoTestBroker(devices=[*fleet_ids, "bench-drain", PROBE_DEVICE, *beat_ids])
        db_url = f"sqlite:///{tmp / 'server.db'}"
        upgrade(db_url)
        engine = open_database(db_url)
        stores: list[Store] = []
        try:
            broker.start()
            site = Site(broker, db_url, tmp)
            for name in [*fleet_ids, "bench-drain"]:
                stores.append(open_store(tmp / f"{name}.db", key=DeviceKey.generate()))
            fleet = [Device(n, s) for n, s in zip(fleet_ids, stores, strict=False)]
            drainer = Device("bench-drain", stores[-1])
            rounds = []
            for i in range(repeat):
                progress(f"round {i + 1}/{repeat}: ingest and drain, reference then real")
                rounds.append(
                    _round(
                        site,
                        engine,
                        fleet=fleet,
                        drainer=drainer,
                        events=events,
                        drain_events=drain_events,
                    )
                )
            progress("checking every event on the server: exactly once, in order")
            _verify(engine, [*fleet, drainer])
            progress(f"{heartbeat_devices} heartbeat devices: connecting, holding {hold_s:g} s")
            with _server(site, "heartbeats") as server:
                idle_rss, server_rss, broker_rss = _heartbeats(
                    site,
                    names=beat_ids,
                    workers=workers,
                    interval_s=heartbeat_interval_s,
                    hold_s=hold_s,
                    server_pid=server.pid,
                )
        finally:
            for store in stores:
                store.close()
            engine.dispose()
            broker.cleanup()
    return _report(
        rounds,
        devices=devices,
        events=events,
        drain_events=drain_events,
        idle_rss=idle_rss,
        server_rss=server_rss,
        broker_rss=broker_rss,
        heartbeat_devices=heartbeat_devices,
        interval_s=heartbeat_interval_s,
    )


def _report(
    rounds: list[tuple[float, float, float, float, float]],
    *,
    devices: int,
    events: int,
    drain_events: int,
    idle_rss: float,
    server_rss: list[float],
    broker_rss: list[float],
    heartbeat_devices: int,
    interval_s: float,
) -> list[dict[str, Any]]:
    total = devices * events
    raw_ingest, real_ingest, raw_drain, real_drain, floor = (
        list(x) for x in zip(*rounds, strict=True)
    )
    raw_rate = [total / s for s in raw_ingest]
    real_rate = [total / s for s in real_ingest]
    rate_ref = float(np.median(raw_rate))
    drain_ref = float(np.median(raw_drain))
    messages = devices * -(-events // BATCH_SIZE)
    shape = {"batch_size": BATCH_SIZE, "max_inflight": MAX_INFLIGHT, "qos": 1, "tls": True}
    ingest = summarize(
        "sync_ingest",
        "events/s",
        real_rate,
        reference=rate_ref,
        reference_name="raw paho -> Mosquitto -> paho QoS 1, same messages",
        reference_samples=raw_rate,
        devices=devices,
        events=total,
        messages=messages,
        database="SQLite file (WAL), linli server run",
        budget_ratio=BUDGET_INGEST_RATIO,
        **shape,
    )
    ingest["within_budget"] = ingest["ratio"] >= BUDGET_INGEST_RATIO
    drain = summarize(
        "sync_drain",
        "s",
        real_drain,
        reference=drain_ref,
        reference_name="raw pipe time, same batches",
        reference_samples=raw_drain,
        events=drain_events,
        messages=-(-drain_events // BATCH_SIZE),
        budget_ratio=BUDGET_DRAIN_RATIO,
        verified="exactly once, in order",
        storage_floor_s=float(np.median(floor)),
        storage_floor_samples=floor,
        storage_floor_name="SQLite alone: the same rows in one INSERT and commit, no MQTT",
        **shape,
    )
    drain["within_budget"] = drain["ratio"] <= BUDGET_DRAIN_RATIO
    rss = value(
        "sync_server_rss",
        "MiB",
        len(server_rss),
        float(np.median(server_rss)),
        max=max(server_rss),
        idle_mib=idle_rss,
        devices=heartbeat_devices,
        heartbeat_s=interval_s,
        broker_rss_mib=float(np.median(broker_rss)),
        process="linli server run",
    )
    return [ingest, drain, rss]


if __name__ == "__main__":
    if sys.argv[1:] == ["subscriber"]:
        _subscriber_main()
    elif sys.argv[1:] == ["heartbeat"]:
        _heartbeat_main()
    else:
        raise SystemExit("usage: python -m linli.bench.sync subscriber|heartbeat (internal)")
