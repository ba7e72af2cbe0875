"""Child process of the crash test: emits events with a state change until it is killed.

Prints ``ready <boot>`` once open, then ``<seq> <id>`` after each commit returns.
"""

from __future__ import annotations

import sys
from pathlib import Path

from device.atrest import DeviceKey
from device.store import open_store


def main(db_path: str, key_path: str) -> None:
    store = open_store(db_path, key=DeviceKey.load_or_create(Path(key_path)))
    with store.transaction() as tx:
        tx.execute("CREATE TABLE IF NOT EXISTS crash_state (seq INTEGER PRIMARY KEY, boot INT)")
    sys.stdout.write(f"ready {store.boot}\n")
    sys.stdout.flush()
    i = 0
    while True:
        with store.transaction() as tx:
            event = tx.emit("crash.tick", {"i": i}, personal=i % 3 == 0)
            tx.execute("INSERT INTO crash_state VALUES (?, ?)", (event.seq, store.boot))
        sys.stdout.write(f"{event.seq} {event.id}\n")
        sys.stdout.flush()
        i += 1


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
