"""Child process of the Last Will test: runs a sync agent until it is killed.

argv: a JSON file with the ``[sync]`` values, the device id and the store path. Prints
``connected <boot>`` once the agent is connected.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from device.atrest import DeviceKey
from device.config import SyncSection
from device.store import open_store
from device.sync import SyncAgent


def main(settings_path: str) -> None:
    settings = json.loads(Path(settings_path).read_text(encoding="utf-8"))
    store = open_store(settings["store"], key=DeviceKey.generate())
    agent = SyncAgent(SyncSection(**settings["sync"]), settings["device"], store)
    agent.start()
    while not agent.connected:
        time.sleep(0.02)
    sys.stdout.write(f"connected {store.boot}\n")
    sys.stdout.flush()
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main(sys.argv[1])
