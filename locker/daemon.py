"""The locker daemon: what ``linli locker run --config FILE`` runs on a cloud locker.

It owns the peripherals (house rule: one coordinator per device): the locks from ``[locks]``, the
QR scanner from ``[scanner]``, the device store, and the sync daemon (``[sync]``; without a
``host`` the locker runs offline and keeps everything in its outbox). Three threads: the
:class:`~locker.controller.Locker` loop (this one), the scanner reader, and the sync daemon's
upkeep (plus paho's network thread).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from device.atrest import DeviceKey
from device.clock import SYSTEM_CLOCK, Clock
from device.config import DeviceConfig
from device.errors import ConfigError, LinliError
from device.locks import LockController
from device.locks.factory import open_locks
from device.scanner import ScanRejectedError
from device.scanner.factory import Scanner, open_scanner, read_scans
from device.store import Store, open_store
from device.sync.daemon import STORE_FILE, SyncDaemon, load_server_keys
from locker.commands import LockerCommands
from locker.controller import Indicator, Locker

log = logging.getLogger(__name__)

SCAN_WAIT_S = 0.2


class LockerDaemon:
    """Locks + scanner + store + sync for the locker of ``config`` (a context manager)."""

    def __init__(
        self,
        config: DeviceConfig,
        *,
        clock: Clock = SYSTEM_CLOCK,
        indicator: Indicator | None = None,
        locks: LockController | None = None,
    ) -> None:
        """``locks``: a controller to use instead of the one ``[locks]`` names (the benchmark
        passes GPIO locks on a simulated RPi.GPIO); the daemon closes it either way."""
        if config.device.kind != "locker":
            raise ConfigError(
                f"device.kind is {config.device.kind!r}: `linli locker run` needs a locker config"
            )
        keys = load_server_keys(config.sync.server_keys_dir)
        if not keys:
            raise ConfigError(
                f"sync.server_keys_dir ({config.sync.server_keys_dir}) holds no server public key: "
                "a locker cannot check any credential or command without one; provision the device"
            )
        self.config = config
        self._clock = clock
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        data_dir = Path(config.device.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.store: Store = open_store(
            data_dir / STORE_FILE, key=DeviceKey.for_data_dir(data_dir), clock=clock
        )
        self.locks: LockController | None = None
        self.sync: SyncDaemon | None = None
        self.scanner: Scanner | None = None
        try:
            self.locks = locks or open_locks(config.locks, clock=clock)
            if self.locks is None:
                raise ConfigError(
                    "locks.backend is 'none': a locker needs its locks (gpio or rs485)"
                )
            self.locker = Locker(
                self.store,
                self.locks,
                device_id=config.device.id,
                keys=keys,
                section=config.locker,
                clock=clock,
                indicator=indicator,
            )
            if config.sync.host:
                self.sync = SyncDaemon(config, store=self.store, clock=clock)
                if self.sync.commands is not None:
                    LockerCommands(self.locker).register(self.sync.commands)
            else:
                log.warning("sync.host is empty: running offline, events stay in the outbox")
            self.scanner = self._open_scanner()
        except BaseException:
            self._release()
            raise

    def _open_scanner(self) -> Scanner | None:
        scanner = open_scanner(self.config.scanner, self._clock, self._rejected)
        if scanner is None:
            log.warning("scanner.backend is 'none': only server commands open compartments")
        return scanner

    def __enter__(self) -> LockerDaemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- running ---------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Start everything and run the locker loop in this thread until ``stop`` is set (also by
        :meth:`stop`); then stop the other threads and release the hardware."""
        self._stop = stop
        self.locker.start()
        if self.sync is not None:
            self.sync.start()
            self._spawn("linli-sync-upkeep", self._sync_upkeep)
        if self.scanner is not None:
            self.scanner.open()
            self._spawn("linli-scanner", self._read_scans)
        log.info("locker %s running", self.config.device.id)
        try:
            self._loop(stop)
        finally:
            self.stop()

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _loop(self, stop: threading.Event) -> None:
        failing = False
        while not stop.is_set():
            try:
                self.locker.run(stop)
            except LinliError as err:
                # A store or lock error must not end the locker: log it once, retry every second.
                if not failing:
                    log.error("locker loop failed (%s); retrying", err)
                failing = True
                stop.wait(1.0)

    def _read_scans(self) -> None:
        assert self.scanner is not None
        read_scans(self.scanner, self._stop, self.locker.scan, wait_s=SCAN_WAIT_S)

    def _sync_upkeep(self) -> None:
        assert self.sync is not None
        self.sync.run_until(self._stop, tick_s=0.5)

    def _rejected(self, error: ScanRejectedError) -> None:
        try:
            self.locker.scan_rejected(error)
        except LinliError as err:
            log.error("scanner refusal not audited: %s", err)

    def stop(self) -> None:
        """Stop the threads, then release scanner, sync, locks and store (safe twice)."""
        self._stop.set()
        self.locker.wake()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()
        self._release()

    def _release(self) -> None:
        if self.scanner is not None:
            self.scanner.close()
        if self.sync is not None:
            self.sync.stop()
        if self.locks is not None:
            self.locks.close()
        self.store.close()
