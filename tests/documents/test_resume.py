"""A device process SIGKILLed while it applies a big snapshot or a stream of deltas reopens at a
whole version (the old one or the new one, never a mix), with that version's ``doc.applied``
event, and catches up after a restart."""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from device.atrest import DeviceKey
from device.store import Store, open_store
from device.sync import SyncAgent
from device.sync.documents import DocumentSync
from hardware_sim.mosquitto import MosquittoTestBroker
from sync_server.consumer import Consumer
from sync_server.documents import latest_version, publish_version, snapshot
from sync_server.models import Event

from .conftest import add_areas, register, resident, sync_config, wait_for

ROOT = Path(__file__).resolve().parents[2]
SEED = 20250611
DEVICE = "dev-c"
RESIDENTS = 4000
CHANGED = 1500
C01 = "C01"


def id_number(i: int) -> str:
    return f"{110101194001010000 + i}"


def publish_changes(engine: Engine, rng: random.Random, alive: set[int]) -> None:
    """One version: CHANGED residents rewritten (new phone), 100 removed, 100 new."""
    version = latest_version(engine, "residents", scope=C01) + 1
    changed = rng.sample(sorted(alive), CHANGED)
    gone = [i for i in rng.sample(sorted(alive), 200) if i not in changed][:100]
    new = [max(alive) + 1 + k for k in range(100)]
    upserts = {id_number(i): resident(id_number(i), phone=f"139{version:08d}") for i in changed}
    upserts.update({id_number(i): resident(id_number(i)) for i in new})
    publish_version(
        engine, "residents", upserts=upserts, deletes=[id_number(i) for i in gone], scope=C01
    )
    alive.difference_update(gone)
    alive.update(new)


class Child:
    """The device process; its stdout lines are collected by a thread."""

    def __init__(self, settings: Path) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.documents.sync_child", str(settings)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def wait_begin(self, at_least: int, timeout_s: float = 30.0) -> int:
        """Wait until the device starts applying a version >= ``at_least``; return it."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(line)
            word, _, version = line.split()
            if word == "begin" and int(version) >= at_least:
                return int(version)
        raise AssertionError(f"the device never began version {at_least}+; saw {self.seen}")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        time.sleep(0.05)  # let the reader thread take the last lines
        while not self.lines.empty():
            self.seen.append(self.lines.get())


def applied_versions(engine: Engine, store: Store) -> set[int]:
    """Versions with a doc.applied event: stored by the server or still in the outbox."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(Event.data).where(Event.device_id == DEVICE, Event.type == "doc.applied")
        ).all()
    found = {int(data["version"]) for (data,) in rows}
    pending = store.outbox.pending(1_000_000)
    found |= {int(e.data["version"]) for e in pending if e.type == "doc.applied"}
    return found


def check_whole_version(engine: Engine, store: Store) -> int:
    """The store holds exactly the server's document at the store's version; returns it."""
    version = store.documents.version("residents")
    if version == 0:
        assert store.documents.count("residents") == 0
        return 0
    want = snapshot(engine, "residents", version, scope=C01).items
    docs = store.documents
    have = dict(docs.items("residents"))
    assert have == {docs.lookup_hash(k): v for k, v in want.items()}, f"partial {version}"
    assert version in applied_versions(engine, store), f"version {version} without its event"
    return version


def test_killed_while_applying_reopens_whole_and_catches_up(
    engine: Engine, server: Consumer, broker: MosquittoTestBroker, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    alive = set(range(RESIDENTS))
    add_areas(engine)
    register(engine, DEVICE, C01)
    publish_version(
        engine,
        "residents",
        upserts={id_number(i): resident(id_number(i)) for i in alive},
        scope=C01,
    )
    key_file = tmp_path / "device.key"
    settings: dict[str, Any] = {
        "store": str(tmp_path / "device.db"),
        "key": str(key_file),
        "device": DEVICE,
        "docs": ["residents"],
        "sync": sync_config(broker, DEVICE).model_dump(),
    }
    settings_file = tmp_path / "child.json"
    settings_file.write_text(json.dumps(settings), encoding="utf-8")
    key = DeviceKey.load_or_create(key_file)
    rolled_back = 0
    before = 0
    for iteration in range(4):
        if iteration:  # the first run takes the 4000-resident snapshot; later ones deltas too
            publish_changes(engine, rng, alive)
            publish_changes(engine, rng, alive)
        # Messages queued for the killed process come first; kill inside one of the new ones.
        target = (
            before + 1 if iteration == 0 else latest_version(engine, "residents", scope=C01) - 1
        )
        child = Child(settings_file)
        child.wait_begin(target)
        time.sleep(rng.uniform(0.0, 0.15 if iteration == 0 else 0.03))
        child.kill()
        with open_store(settings["store"], key=key) as store:
            version = check_whole_version(engine, store)
        begins = [int(line.split()[2]) for line in child.seen if line.startswith("begin")]
        done = [int(line.split()[2]) for line in child.seen if line.startswith("done")]
        # Nothing reported done is lost; nothing beyond what was started is there.
        assert max(done, default=before) <= version <= max(begins), (iteration, child.seen)
        if max(begins) not in done and version < max(begins):
            rolled_back += 1  # killed inside that apply: the store kept the version before it
        before = version
    assert rolled_back >= 1, "no kill landed inside an apply; the test proved nothing"
    # Restart: the device asks from the version it kept and reaches the newest, whole.
    with open_store(settings["store"], key=key) as store:
        agent = SyncAgent(sync_config(broker, DEVICE), DEVICE, store)
        sync = DocumentSync(store, agent, docs=("residents",))
        sync.attach()
        agent.start()
        try:
            latest = latest_version(engine, "residents", scope=C01)
            wait_for(lambda: store.documents.version("residents") == latest, what="catch-up")
            assert check_whole_version(engine, store) == latest
        finally:
            agent.stop()
