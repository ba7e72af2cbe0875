"""Reliability of device -> broker -> server delivery under faults (issue 4, "Reliability tests").

Real Mosquitto, the real consumer on a SQLite file database, real device stores and sync agents.
Faults: the agent SIGKILLed at seeded random moments (a fresh process per life, same store file),
the broker stopped, restarted and killed mid-stream, and the TCP connection cut (RST) or silently
frozen (half-open) by a proxy. After each, every event the device committed is on the server
exactly once, with its id, seqs 1..N without a gap, and the device's outbox is empty.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import select
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import pytest
from sqlalchemy import Engine
from sqlalchemy import select as sql_select

from device.atrest import DeviceKey
from device.store import Store, open_store
from device.sync import SyncAgent
from hardware_sim.mosquitto import MosquittoTestBroker
from sync_server.ingest import acked_seq
from sync_server.models import Event

from .conftest import ROOT, MakeConsumer, sync_config, wait_for

SEED = 20260401
KILL_ITERATIONS = 120


# ----------------------------------------------------------------------------- verification


def _ranges(seqs: Sequence[int], limit: int = 12) -> str:
    """``[1, 2, 3, 7]`` -> ``"1-3, 7"`` (the first ``limit`` runs)."""
    runs: list[str] = []
    ordered = sorted(seqs)
    start = prev = ordered[0] if ordered else 0
    for seq in [*ordered[1:], None]:
        if seq is not None and seq == prev + 1:
            prev = seq
            continue
        runs.append(str(start) if start == prev else f"{start}-{prev}")
        if seq is not None:
            start = prev = seq
    more = f" ... ({len(runs) - limit} more runs)" if len(runs) > limit else ""
    return ", ".join(runs[:limit]) + more


def server_events(engine: Engine, device: str) -> list[tuple[int, str]]:
    """``(seq, event_id)`` of every stored event of ``device``, duplicates included."""
    with engine.connect() as conn:
        rows = conn.execute(
            sql_select(Event.seq, Event.event_id)
            .where(Event.device_id == device)
            .order_by(Event.seq, Event.id)
        ).all()
    return [(int(seq), str(event_id)) for seq, event_id in rows]


def assert_exactly_once(
    engine: Engine,
    device: str,
    committed: Sequence[tuple[int, str]],
    outbox_left: int,
    context: str,
) -> None:
    """Every committed ``(seq, id)`` is on the server once, nothing else is, the outbox is empty."""
    expected = dict(committed)
    on_server = server_events(engine, device)
    counts = Counter(seq for seq, _ in on_server)
    problems: list[str] = []
    if sorted(expected) != list(range(1, len(expected) + 1)):
        gaps = sorted(set(range(1, max(expected, default=0) + 1)) - set(expected))
        problems.append(f"the device committed seqs with gaps: missing {_ranges(gaps)}")
    if missing := sorted(set(expected) - set(counts)):
        problems.append(
            f"{len(missing)} committed events missing on the server: {_ranges(missing)}"
        )
    if doubled := sorted(seq for seq, n in counts.items() if n > 1):
        problems.append(f"{len(doubled)} seqs stored more than once: {_ranges(doubled)}")
    if unexpected := sorted(set(counts) - set(expected)):
        problems.append(
            f"{len(unexpected)} seqs on the server never committed: {_ranges(unexpected)}"
        )
    if wrong := sorted({s for s, i in on_server if s in expected and expected[s] != i}):
        problems.append(f"{len(wrong)} seqs stored with another event id: {_ranges(wrong)}")
    if outbox_left:
        problems.append(f"{outbox_left} events still in the device outbox")
    if acked_seq(engine, device) != len(expected):
        problems.append(f"server ack is {acked_seq(engine, device)}, expected {len(expected)}")
    assert not problems, f"{context}; {len(expected)} events committed: " + "; ".join(problems)


# ----------------------------------------------------------------------------- in-process stream


class Stream:
    """A device emitting continuously in a thread: one event per transaction, like a real device.

    ``committed`` holds ``(seq, id)`` of every event whose transaction returned (committed).
    """

    def __init__(self, broker: MosquittoTestBroker, path: Path, device: str, **cfg: Any) -> None:
        self.device = device
        self.store: Store = open_store(path, key=DeviceKey.generate())
        self.agent = SyncAgent(sync_config(broker, device, **cfg), device, self.store)
        self.committed: list[tuple[int, str]] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._emit, name=f"emit-{device}", daemon=True)

    def start(self) -> Stream:
        self.agent.start()
        self._thread.start()
        return self

    def _emit(self) -> None:
        try:
            while not self._stop.is_set():
                with self.store.transaction() as tx:
                    event = tx.emit("test.tick", {"n": len(self.committed)})
                self.committed.append((event.seq, event.id))
                self.agent.notify()
                self._stop.wait(0.004)
        except BaseException as err:  # reported by stop_emitting()
            self.error = err

    def stop_emitting(self) -> None:
        self._stop.set()
        self._thread.join(5)
        assert self.error is None, f"emitting failed: {self.error!r}"

    def acked(self) -> int:
        return self.store.outbox.acked_seq

    def drain(self, timeout_s: float, context: str) -> None:
        try:
            wait_for(lambda: self.store.outbox.count() == 0, timeout_s, "the outbox to drain")
        except AssertionError as err:
            raise AssertionError(f"{context}: {err}; agent {self.agent.health()}") from None

    def close(self) -> None:
        self._stop.set()
        self.agent.stop()
        self.store.close()


def _acks_beyond(stream: Stream, seq: int) -> Callable[[], bool]:
    return lambda: stream.acked() > seq


@pytest.fixture
def make_stream(broker: MosquittoTestBroker, tmp_path: Path) -> Iterator[Any]:
    streams: list[Stream] = []

    def make(device: str = "dev-a", **cfg: Any) -> Stream:
        stream = Stream(broker, tmp_path / f"{device}-stream.db", device, **cfg)
        streams.append(stream)
        return stream.start()

    yield make
    for stream in streams:
        stream.close()


# ----------------------------------------------------------------------------- 1. agent SIGKILL


class ForkServer:
    """``tests/e2e/emitter_child.py``: forks one process per device life (see its docstring)."""

    def __init__(self, settings: dict[str, Any], tmp_path: Path) -> None:
        settings_path = tmp_path / "emitter.json"
        settings_path.write_text(json.dumps(settings), encoding="utf-8")
        self.log_path = tmp_path / "emitter.log"
        with self.log_path.open("wb") as log:
            self.process = self._spawn(settings_path, log)

    @staticmethod
    def _spawn(settings_path: Path, log: IO[bytes]) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "e2e" / "emitter_child.py"), str(settings_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            text=True,
        )

    def ask(self, command: str) -> list[str]:
        stdin, stdout = self._pipes()
        stdin.write(command + "\n")
        stdin.flush()
        answer = stdout.readline().split()
        assert answer and answer[0] != "error", (
            f"fork server: {command!r} -> {answer}; {self.log()}"
        )
        return answer

    def _pipes(self) -> tuple[IO[str], IO[str]]:
        assert self.process.stdin is not None and self.process.stdout is not None
        return self.process.stdin, self.process.stdout

    def life(self, command: str) -> int:
        return int(self.ask(command)[1])

    def reap(self, pid: int) -> int:
        return int(self.ask(f"reap {pid}")[2])

    def log(self) -> str:
        return "emitter log tail:\n" + self.log_path.read_text(errors="replace")[-3000:]

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def _store_ledger(path: Path) -> tuple[list[tuple[int, str, int]], int, int]:
    """``(seq, id, boot)`` of every committed tick, the outbox count and the store's boot."""
    conn = sqlite3.connect(path)
    try:
        ticks = conn.execute("SELECT seq, event_id, boot FROM ticks ORDER BY seq").fetchall()
        outbox = int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])
        boot = int(conn.execute("SELECT value FROM meta WHERE key = 'boot'").fetchone()[0])
    finally:
        conn.close()
    return [(int(s), str(i), int(b)) for s, i, b in ticks], outbox, boot


def test_agent_killed_at_random_points_loses_and_doubles_nothing(
    broker: MosquittoTestBroker, engine: Engine, make_consumer: MakeConsumer, tmp_path: Path
) -> None:
    make_consumer()
    rng = random.Random(SEED)
    store_path = tmp_path / "dev-a-lives.db"
    key_path = tmp_path / "device.key"
    DeviceKey.load_or_create(key_path)  # enrollment made the key; lives only read it
    cfg = sync_config(broker, "dev-a", batch_size=20, ack_timeout_s=0.5, backoff_max_s=0.2)
    settings = {
        "sync": cfg.model_dump(),
        "device": "dev-a",
        "store": str(store_path),
        "key": str(key_path),
    }
    forks = ForkServer(settings, tmp_path)
    context = f"seed {SEED}, {KILL_ITERATIONS} SIGKILLed lives"
    deaths: Counter[int] = Counter()
    started = time.monotonic()
    try:
        for _ in range(KILL_ITERATIONS):
            pid = forks.life(f"emit {rng.randint(5, 60)} {rng.choice([0.0, 0.002, 0.005])}")
            time.sleep(rng.uniform(0.01, 0.3))
            os.kill(pid, signal.SIGKILL)
            deaths[forks.reap(pid)] += 1
        killed_s = time.monotonic() - started
        drain_code = forks.reap(forks.life("drain"))
    finally:
        forks.close()
    ticks, outbox_left, boot = _store_ledger(store_path)
    context += f" in {killed_s:.1f} s; {forks.log()}"
    assert deaths == {-signal.SIGKILL: KILL_ITERATIONS}, f"{context}: lives ended {dict(deaths)}"
    assert drain_code == 0, f"{context}: the last life did not drain its outbox (code {drain_code})"
    boots = [b for _, _, b in ticks]
    assert boots == sorted(boots) and boot > KILL_ITERATIONS // 2, f"{context}: boots {boots}"
    assert_exactly_once(engine, "dev-a", [(s, i) for s, i, _ in ticks], outbox_left, context)
    # The kills must have hit lives that were sending: many lives had events stored by the
    # server while they ran (the batch's boot is the sending process's).
    with engine.connect() as conn:
        sending_boots = set(
            conn.execute(sql_select(Event.boot).where(Event.device_id == "dev-a")).scalars()
        )
    emitting_boots = {b for _, _, b in ticks}
    assert len(sending_boots & emitting_boots) >= KILL_ITERATIONS // 4, (
        f"{context}: only {len(sending_boots & emitting_boots)} of {len(emitting_boots)} "
        "emitting lives got events to the server before being killed"
    )


# ----------------------------------------------------------------------------- 2. broker restart


def test_broker_restarted_and_killed_mid_stream_loses_and_doubles_nothing(
    broker: MosquittoTestBroker, engine: Engine, make_consumer: MakeConsumer, make_stream: Any
) -> None:
    make_consumer()
    stream = make_stream("dev-a", batch_size=20)
    faults = [("stop", broker.stop), ("stop", broker.stop), ("kill", broker.kill)]
    for name, fault in faults:
        wait_for(_acks_beyond(stream, stream.acked() + 50), 20, f"acks before broker {name}")
        fault()
        time.sleep(0.3)  # the device keeps committing while the broker is away
        broker.start()
    wait_for(lambda: stream.acked() > len(stream.committed) // 2, 20, "acks after the restarts")
    stream.stop_emitting()
    context = "broker stop/start x2 and kill/start x1 mid-stream"
    stream.drain(30, context)
    assert_exactly_once(engine, "dev-a", stream.committed, stream.store.outbox.count(), context)


# ----------------------------------------------------------------------------- 3. TCP cut


class FaultProxy:
    """A TCP proxy from a loopback port to the broker's TLS port, that cuts or freezes links.

    Hand-written on purpose: it IS the fault injector. It forwards bytes only (TLS passes
    through untouched), and offers the two failures a site network causes: :meth:`cut` resets
    every proxied connection (SO_LINGER 0 -> RST to both ends), and :meth:`freeze` stops
    forwarding on every current connection without closing it (a half-open link: a dead NAT
    entry, a pulled cable upstream), while new connections work.
    """

    def __init__(self, upstream_port: int) -> None:
        self._upstream = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._links: list[_Link] = []
        self._frozen: list[_Link] = []
        self.accepted = 0
        self._closed = False
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                continue  # the listener was closed: the loop ends
            try:
                upstream = socket.create_connection(("127.0.0.1", self._upstream), timeout=5)
            except OSError:
                client.close()  # broker down: the client sees a closed connection and retries
                continue
            link = _Link(client, upstream)
            with self._lock:
                self._links.append(link)
                self.accepted += 1
            link.start()

    def cut(self) -> int:
        """Reset every link, frozen ones too; returns how many."""
        with self._lock:
            links, self._links, self._frozen = self._links + self._frozen, [], []
        for link in links:
            link.reset()
        return len(links)

    def freeze(self) -> int:
        """Stop forwarding on every open link without closing it; returns how many."""
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.frozen.set()
        with self._lock:
            self._frozen.extend(links)
        return len(links)

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            links = self._links + self._frozen
        for link in links:
            link.reset()


class _Link:
    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.sockets = (client, upstream)
        self.frozen = threading.Event()

    def start(self) -> None:
        client, upstream = self.sockets
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                if self.frozen.is_set():  # leave the bytes unread: nothing passes, nothing closes
                    time.sleep(0.05)
                    continue
                readable, _, _ = select.select([src], [], [], 0.05)
                if not readable:
                    continue
                data = src.recv(65536)
                if self.frozen.is_set():
                    return
                if not data:  # one end closed normally: close the other end normally too
                    break
                dst.sendall(data)
        except (OSError, ValueError):  # reset or closed by cut(): the link is gone
            self.reset()
            return
        for sock in self.sockets:
            sock.close()

    def reset(self) -> None:
        for sock in self.sockets:
            with contextlib.suppress(OSError):  # already closed by the other pump
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()


def _reconnected(proxy: FaultProxy, accepted: int) -> Callable[[], bool]:
    return lambda: proxy.accepted > accepted


@pytest.fixture
def proxy(broker: MosquittoTestBroker) -> Iterator[FaultProxy]:
    made = FaultProxy(broker.tls_port)
    yield made
    made.close()


def test_tcp_connection_reset_mid_stream_loses_and_doubles_nothing(
    engine: Engine, make_consumer: MakeConsumer, proxy: FaultProxy, make_stream: Any
) -> None:
    make_consumer()
    stream = make_stream("dev-a", port=proxy.port, batch_size=20)
    for cut in range(5):
        accepted = proxy.accepted
        wait_for(_acks_beyond(stream, stream.acked() + 30), 20, f"acks before cut {cut + 1}")
        assert proxy.cut() >= 1, "no proxied connection to cut"
        wait_for(_reconnected(proxy, accepted), 10, f"the agent to reconnect after cut {cut + 1}")
    wait_for(lambda: stream.acked() > len(stream.committed) // 2, 20, "acks after the cuts")
    stream.stop_emitting()
    context = "5 TCP resets (RST) through the proxy mid-stream"
    stream.drain(30, context)
    assert_exactly_once(engine, "dev-a", stream.committed, stream.store.outbox.count(), context)


def test_half_open_connection_is_noticed_by_keepalive_and_recovered(
    engine: Engine, make_consumer: MakeConsumer, proxy: FaultProxy, make_stream: Any
) -> None:
    make_consumer()
    keepalive_s = 5  # the smallest [sync] keepalive_s allows
    stream = make_stream("dev-a", port=proxy.port, batch_size=20, keepalive_s=keepalive_s)
    wait_for(lambda: stream.acked() > 50, 20, "acks before the freeze")
    accepted = proxy.accepted
    assert proxy.freeze() >= 1, "no proxied connection to freeze"
    frozen_at = time.monotonic()
    time.sleep(1.0)  # an ack already past the proxy may still be applied; none after this
    frozen_ack = stream.acked()
    # paho pings after keepalive_s without incoming bytes and drops the link after another
    # keepalive_s without an answer; the agent then reconnects through a fresh connection.
    wait_for(_reconnected(proxy, accepted), 4 * keepalive_s, "the agent to notice and reconnect")
    noticed_s = time.monotonic() - frozen_at
    assert stream.acked() == frozen_ack, "acks arrived through a frozen link"
    assert noticed_s >= keepalive_s, f"reconnected after {noticed_s:.1f} s: was the link frozen?"
    wait_for(lambda: stream.acked() > frozen_ack + 50, 20, "acks after the reconnect")
    stream.stop_emitting()
    context = f"half-open link noticed after {noticed_s:.1f} s (keepalive {keepalive_s} s)"
    stream.drain(30, context)
    assert_exactly_once(engine, "dev-a", stream.committed, stream.store.outbox.count(), context)


def test_stop_while_the_link_dies_ends_the_agent_cleanly(
    make_consumer: MakeConsumer,
    proxy: FaultProxy,
    make_stream: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    make_consumer()
    stream = make_stream("dev-a", port=proxy.port)
    wait_for(_acks_beyond(stream, 20), 20, "acks before stopping")
    stream.stop_emitting()
    stream.drain(20, "before stopping")
    time.sleep(0.3)  # no ack left in flight: the agent's next store access is its send step
    stopper = threading.Thread(target=stream.agent.stop)
    # The race made certain: a device transaction holds the store while the agent wants to read
    # the outbox, so the agent is not in paho's select() when the RST arrives and stop() comes.
    with stream.store.transaction():
        stream.agent.notify()
        time.sleep(0.3)  # the agent thread now waits for the store in its send step
        assert proxy.cut() == 1
        time.sleep(0.2)  # the RST has reached the agent's socket, unread
        stopper.start()
        time.sleep(0.1)
    stopper.join(15)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], "stop() during a dying link logged errors"
