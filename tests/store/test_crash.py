"""A process emitting events is killed with SIGKILL at seeded random times; nothing is lost.

After every kill the store reopens cleanly, every event whose commit returned is there (or was
acked), seqs are contiguous, a seq is never handed to a second event, and each event's state
change is there with it.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from device.atrest import DeviceKey
from device.store import open_store

ITERATIONS = 30
SEED = 20240604
ROOT = Path(__file__).resolve().parents[2]


def run_and_kill(db: Path, key_file: Path, delay: float) -> tuple[int, dict[int, str]]:
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.store.crash_child", str(db), str(key_file)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert child.stdout is not None
    ready = child.stdout.readline().split()
    assert ready and ready[0] == "ready", f"child did not start: {ready}"
    committed: dict[int, str] = {}
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(child.stdout or []), daemon=True)
    reader.start()
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    reader.join(10)
    for line in lines:
        parts = line.split()
        if len(parts) == 2:  # the last line may be cut by the kill
            committed[int(parts[0])] = parts[1]
    return int(ready[1]), committed


def test_sigkill_at_random_points_loses_and_repeats_nothing(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    db = tmp_path / "store.db"
    key_file = tmp_path / "keys" / "device.key"
    key = DeviceKey.load_or_create(key_file)
    ids: dict[int, str] = {}  # every seq ever reported committed -> its event id
    acked = 0
    for iteration in range(ITERATIONS):
        boot, committed = run_and_kill(db, key_file, rng.uniform(0.0, 0.25))
        for seq, event_id in committed.items():
            assert ids.setdefault(seq, event_id) == event_id, f"seq {seq} was issued twice"
        with open_store(db, key=key) as store:
            assert store.boot == boot + 1
            last = store.outbox.last_seq
            pending = store.outbox.pending(1_000_000)
            seqs = [e.seq for e in pending]
            assert seqs == list(range(acked + 1, last + 1)), f"gap after kill {iteration}"
            assert all(e.data is not None for e in pending)  # sealed ones still open
            for event in pending:
                assert ids.setdefault(event.seq, event.id) == event.id
            assert max(committed, default=0) <= last, "a committed event was lost"
            with store.reading() as conn:
                state = [
                    r[0]
                    for r in conn.execute(
                        "SELECT seq FROM crash_state WHERE seq > ? ORDER BY seq", (acked,)
                    )
                ]
            assert state == seqs, "an event and its state change were split"
            if rng.random() < 0.5 and last > acked:
                acked = rng.randint(acked, last)
                store.outbox.acked(acked)
    assert len(ids) > ITERATIONS  # the children did real work
