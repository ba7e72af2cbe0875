"""The device's sync daemon: the store's outbox, signed commands, documents and rpc over one link.

:class:`SyncDaemon` is what ``linli sync run --config FILE`` runs on a kiosk or locker (the
locker and kiosk daemons embed it the same way): it opens the device store in ``data_dir``, starts
the :class:`~device.sync.agent.SyncAgent` and attaches the :class:`DocumentSync`,
:class:`CommandRunner` (when the server's command keys are provisioned) and :class:`RpcClient`.
Built-in commands: ``sys.ping`` (device time, outbox and document versions) and
``documents.sync`` (ask for newer document versions now).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from device.atrest import DeviceKey
from device.clock import SYSTEM_CLOCK, Clock
from device.config import DeviceConfig
from device.credential import CredentialKeyError, VerifyKey, load_verify_key
from device.errors import ConfigError
from device.store import Store, StoreError, Transaction, open_store
from device.sync.agent import SyncAgent
from device.sync.commands import CommandRunner
from device.sync.documents import DocumentSync
from device.sync.rpc import RpcClient

log = logging.getLogger(__name__)

STORE_FILE = "store.db"
PRUNE_INTERVAL_S = 3600.0
"""How often the inbox forgets command ids whose expiry is long past (they can no longer be
replayed: an expired command is refused on its expiry alone)."""


def load_server_keys(directory: str | Path) -> dict[str, VerifyKey]:
    """Every ``KID.pem`` Ed25519 public key in ``directory`` (missing directory: none)."""
    path = Path(directory)
    if not path.is_dir():
        return {}
    keys: dict[str, VerifyKey] = {}
    for pem in sorted(path.glob("*.pem")):
        try:
            keys[pem.stem] = load_verify_key(pem, pem.stem)
        except CredentialKeyError as err:
            raise ConfigError(f"sync.server_keys_dir: {err}") from err
    return keys


class SyncDaemon:
    """Store + agent + documents + commands + rpc for the device of ``config``."""

    def __init__(
        self,
        config: DeviceConfig,
        *,
        store: Store | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.config = config
        device_id = config.device.id
        data_dir = Path(config.device.data_dir)
        self._own_store = store is None
        self.store = store or open_store(
            data_dir / STORE_FILE, key=DeviceKey.for_data_dir(data_dir), clock=clock
        )
        try:
            self.agent = SyncAgent(config.sync, device_id, self.store, clock=clock)
            self.documents = DocumentSync(self.store, self.agent, clock=clock)
            self.documents.attach()
            self.rpc = RpcClient(self.agent, clock=clock)
            self.rpc.attach()
            keys = load_server_keys(config.sync.server_keys_dir)
            self.commands: CommandRunner | None = None
            if keys:
                self.commands = CommandRunner(
                    self.store, keys, device_id, clock=clock, skew_s=config.sync.command_skew_s
                )
                self.commands.register("sys.ping", self._ping)
                self.commands.register("documents.sync", self._documents_sync)
                self.commands.attach(self.agent)
            else:
                log.warning(
                    "no server command keys in %s: this device takes no commands",
                    config.sync.server_keys_dir,
                )
        except Exception:
            if self._own_store:
                self.store.close()
            raise
        self._clock = clock
        self._stop = threading.Event()

    def __enter__(self) -> SyncDaemon:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.agent.start()

    def run_until(self, stop: threading.Event, *, tick_s: float = 1.0) -> None:
        """Until ``stop`` (or :meth:`stop`): ask for documents every ``documents_interval_s``
        and prune the command inbox every ``PRUNE_INTERVAL_S`` (first at start)."""
        interval = self.config.sync.documents_interval_s
        next_request = self._clock.monotonic() + interval
        next_prune = self._clock.monotonic()
        while True:
            if self._clock.monotonic() >= next_prune:
                self.prune()
                next_prune = self._clock.monotonic() + PRUNE_INTERVAL_S
            if stop.wait(tick_s) or self._stop.is_set():
                return
            if self._clock.monotonic() >= next_request:
                self.documents.request()
                next_request = self._clock.monotonic() + interval

    def prune(self) -> int:
        """Forget expired command ids (see :meth:`~device.store.Inbox.prune`); 0 on a store
        error, which is logged: the daemon keeps running and tries again next time."""
        try:
            return self.store.inbox.prune()
        except StoreError as err:
            log.warning("could not prune the command inbox (will retry): %s", err)
            return 0

    def stop(self) -> None:
        self._stop.set()
        self.agent.stop()
        if self._own_store:
            self.store.close()

    # -- built-in commands (run inside the command's store transaction) ------------------------

    def _ping(self, _tx: Transaction, _args: Mapping[str, Any]) -> Mapping[str, Any]:
        return {
            "time": self._clock.time(),
            "pending": self.store.outbox.count(),
            "documents": self.documents.versions(),
        }

    def _documents_sync(self, _tx: Transaction, args: Mapping[str, Any]) -> Mapping[str, Any]:
        doc = args.get("doc")
        if doc is not None and not isinstance(doc, str):
            raise ValueError("documents.sync: 'doc' must be a document name")
        return {"requested": self.documents.request(doc)}
