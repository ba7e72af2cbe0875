"""Child process of the agent SIGKILL test: a fork server whose children are device "lives".

The interpreter and its imports cost ~0.7 s of CPU, longer than the lives the test wants (tens to
hundreds of ms), so this process imports once and forks a fresh process per life; each life opens
the store (one more boot), starts a real :class:`SyncAgent` and emits events until the test
SIGKILLs it. No store, socket or thread exists here before a fork.

argv: a JSON file with ``sync`` (the ``[sync]`` values), ``device``, ``store`` and ``key``.
stdin commands, one per line, each answered with one line on stdout:

- ``emit N INTERVAL`` -> ``pid P``: a life that emits N events, one transaction each (the event
  and its ``ticks`` row, the state change), INTERVAL s apart, then keeps sending until killed;
- ``drain`` -> ``pid P``: a life that emits nothing, exits 0 once the outbox is empty (2 after
  60 s);
- ``reap P`` -> ``reaped P CODE``: waits for life P; CODE as ``Popen.returncode`` (-9 = SIGKILL).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from device.atrest import DeviceKey
from device.config import SyncSection
from device.store import Store, open_store
from device.sync import SyncAgent

TICKS = (
    "CREATE TABLE IF NOT EXISTS ticks "
    "(seq INTEGER PRIMARY KEY, event_id TEXT NOT NULL, boot INTEGER NOT NULL)"
)
DRAIN_TIMEOUT_S = 60.0


def _open(settings: dict[str, Any]) -> tuple[Store, SyncAgent]:
    store = open_store(settings["store"], key=DeviceKey.load_or_create(Path(settings["key"])))
    with store.transaction() as tx:
        tx.execute(TICKS)
    agent = SyncAgent(SyncSection(**settings["sync"]), settings["device"], store)
    agent.start()
    return store, agent


def _emit_life(settings: dict[str, Any], count: int, interval_s: float) -> None:
    store, agent = _open(settings)
    for n in range(count):
        with store.transaction() as tx:
            event = tx.emit("test.tick", {"boot": store.boot, "n": n}, personal=n % 3 == 0)
            tx.execute("INSERT INTO ticks VALUES (?, ?, ?)", (event.seq, event.id, store.boot))
        agent.notify()
        time.sleep(interval_s)
    while True:  # keep sending (and being acked) until the test kills this life
        time.sleep(1)


def _drain_life(settings: dict[str, Any]) -> int:
    store, agent = _open(settings)
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while store.outbox.count() and time.monotonic() < deadline:
        time.sleep(0.05)
    left = store.outbox.count()
    agent.stop()
    store.close()
    return 0 if left == 0 else 2


def _life(settings: dict[str, Any], words: list[str]) -> int:
    if words[0] == "emit":
        _emit_life(settings, int(words[1]), float(words[2]))
    return _drain_life(settings)


def _fork(settings: dict[str, Any], words: list[str]) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        code = _life(settings, words)
    except BaseException:  # a life must never fall back into the fork server's loop
        traceback.print_exc()
    finally:
        logging.shutdown()
        os._exit(code)


def _reap(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def main(settings_path: str) -> None:
    settings = json.loads(Path(settings_path).read_text(encoding="utf-8"))
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
    )
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] in ("emit", "drain"):
            answer = f"pid {_fork(settings, words)}"
        elif words[0] == "reap":
            answer = f"reaped {words[1]} {_reap(int(words[1]))}"
        else:
            answer = f"error unknown command {words[0]!r}"
        sys.stdout.write(answer + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1])
