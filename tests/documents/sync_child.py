"""Child process of the resume test: a device syncing its documents until it is killed.

argv: a JSON file ``{store, key, device, docs, sync: {...}}``. Prints ``begin <doc> <version>``
when the store starts applying a version (inside the store call, so a kill after this line
lands in or after the transaction) and ``done <doc> <version>`` once the call has returned.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

from device.atrest import DeviceKey
from device.config import SyncSection
from device.store import open_store
from device.store.documents import Documents
from device.sync import SyncAgent
from device.sync.documents import DocumentSync

_out = threading.Lock()


def say(line: str) -> None:
    with _out:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def trace(documents: Documents) -> None:
    """Report each apply around the real store call (which still does all the work)."""
    delta, snap = documents.apply_delta, documents.apply_snapshot

    def apply_delta(doc: str, from_version: int, to_version: int, *args: Any, **kw: Any) -> None:
        say(f"begin {doc} {to_version}")
        delta(doc, from_version, to_version, *args, **kw)
        say(f"done {doc} {to_version}")

    def apply_snapshot(doc: str, version: int, *args: Any, **kw: Any) -> None:
        say(f"begin {doc} {version}")
        snap(doc, version, *args, **kw)
        say(f"done {doc} {version}")

    documents.apply_delta = apply_delta  # type: ignore[method-assign]
    documents.apply_snapshot = apply_snapshot  # type: ignore[method-assign]


def main(settings_path: str) -> None:
    settings = json.loads(Path(settings_path).read_text(encoding="utf-8"))
    store = open_store(settings["store"], key=DeviceKey.load_or_create(Path(settings["key"])))
    agent = SyncAgent(SyncSection(**settings["sync"]), settings["device"], store)
    sync = DocumentSync(store, agent, docs=settings["docs"])
    trace(store.documents)
    sync.attach()
    agent.start()
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main(sys.argv[1])
