"""Benchmark: credential scanned -> relay energised, on a simulated locker (DESIGN.md budget:
p95 <= 50 ms, offline).

The real :class:`~locker.daemon.LockerDaemon` runs with its scanner thread reading a GM65
emulator through a pty at 9600 baud, and GPIO locks on the simulated RPi.GPIO (system clock). A
sample starts when the emulator has written the code's last byte (the scan is complete on the
wire) and ends at the relay's energising edge in the simulator's pin history. Scans alternate a
worker's ``deposit`` credential (a free compartment opens) and the resident's ``collect``
credential for it, each door closed again by the simulated person before the next scan. Two runs:
offline (no sync host), and with the network down (the sync agent retrying an unreachable broker)
and ``backlog`` events waiting in the outbox.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from device.clock import SYSTEM_CLOCK
from device.config import DeviceConfig, LockerSection, ScannerSection, SyncSection
from device.credential import (
    SigningKey,
    generate_signing_key,
    save_verify_key,
)
from device.locks.gpio import GpioLockController
from hardware_sim.gpio import SimGpio
from hardware_sim.locker_site import locker_credential, locks_section
from hardware_sim.processes import free_tcp_port
from hardware_sim.scanner import Gm65Emulator
from linli.bench import summarize, value
from locker.compartments import State
from locker.daemon import LockerDaemon

DEVICE = "locker-bench-1"
KID = "srv-bench-1"
COMPARTMENTS = 4
STEP_TIMEOUT_S = 10.0


class _Rig:
    """One daemon on simulated hardware in ``root``."""

    def __init__(self, root: Path, key: SigningKey, sync: SyncSection) -> None:
        self.key = key
        keys_dir = root / "keys"
        keys_dir.mkdir(parents=True)
        save_verify_key(key.verify_key, keys_dir / f"{KID}.pem")
        self.scanner = Gm65Emulator(baudrate=9600)
        self.scanner.start()
        section = locks_section(COMPARTMENTS)
        self.gpio = SimGpio.for_section(section, SYSTEM_CLOCK)
        self.relay_pins = section.relay_pins
        config = DeviceConfig.model_validate(
            {
                "device": {"id": DEVICE, "kind": "locker", "data_dir": str(root / "data")},
                "locks": section.model_dump(),
                "locker": LockerSection(sizes=["M"] * COMPARTMENTS, tick_ms=20).model_dump(),
                "scanner": ScannerSection(port=self.scanner.path, baudrate=9600).model_dump(),
                "sync": sync.model_copy(update={"server_keys_dir": str(keys_dir)}).model_dump(),
            }
        )
        locks = GpioLockController(section, gpio=self.gpio, clock=SYSTEM_CLOCK)
        self.daemon = LockerDaemon(config, locks=locks)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.daemon.run, args=(self.stop,), daemon=True)

    def start(self) -> None:
        self.thread.start()
        self._wait(lambda: all(str(d) == "closed" for d in self.daemon.locker.doors()), "doors")

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.scanner.close()

    def credential(self, kind: str, case: str, compartment: int | None) -> str:
        now = time.time()
        return locker_credential(
            self.key, DEVICE, kind, case, compartment, valid_from=now - 5, valid_s=605
        )

    def scan_to_relay(self, text: str) -> tuple[float, int]:
        """Show ``text``; return (seconds from its last byte to a relay energising, lock)."""
        before = {pin: len(self.gpio.history(pin)) for pin in self.relay_pins}
        self.scanner.show(text)
        scanned = time.monotonic()
        deadline = scanned + STEP_TIMEOUT_S
        while time.monotonic() < deadline:
            for lock, pin in enumerate(self.relay_pins, start=1):
                for at, level in self.gpio.history(pin)[before[pin] :]:
                    if level == self.gpio.LOW:  # active-low relay board: LOW energises
                        return at - scanned, lock
            time.sleep(0.0005)
        raise RuntimeError("a valid credential did not energise any relay within 10 s")

    def finish(self, lock: int, state: State) -> None:
        """The person closes the door; wait until the compartment reached ``state``."""
        self._wait(lambda: self.gpio.door_is_open(lock), f"door {lock} to spring open")
        # A person takes seconds; the locker must at least have seen the door open (debounced).
        self._wait(
            lambda: str(self.daemon.locker.doors()[lock - 1]) == "open", f"door {lock} seen open"
        )
        self.gpio.close_door(lock)
        self._wait(
            lambda: (
                self.daemon.locker.compartments.get(lock).state is state
                and not self.daemon.locker.intents.active()
            ),
            f"compartment {lock} to be {state}",
        )

    @staticmethod
    def _wait(condition: Any, what: str) -> None:
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while not condition():
            if time.monotonic() > deadline:
                raise RuntimeError(f"locker benchmark: timed out waiting for {what}")
            time.sleep(0.005)


def _fill_outbox(rig: _Rig, backlog: int) -> None:
    store = rig.daemon.store
    with store.transaction() as tx:
        for i in range(backlog):
            tx.emit("bench.backlog", {"i": i, "note": "queued while the network is down"})


def _scans(rig: _Rig, scans: int) -> list[float]:
    samples: list[float] = []
    for i in range(0, scans, 2):
        case = f"BENCH-{i:05d}"
        seconds, lock = rig.scan_to_relay(rig.credential("deposit", case, None))
        samples.append(seconds)
        rig.finish(lock, State.HOLDING)
        if len(samples) >= scans:
            break
        seconds, lock_again = rig.scan_to_relay(rig.credential("collect", case, lock))
        if lock_again != lock:
            raise RuntimeError(f"collect opened lock {lock_again}, not {lock}")
        samples.append(seconds)
        rig.finish(lock, State.FREE)
    return samples


def _network_down(root: Path) -> SyncSection:
    from provisioning.broker import provision_broker

    site = provision_broker(root / "site", [DEVICE])
    return SyncSection(
        host="127.0.0.1",
        port=free_tcp_port(),  # nothing listens there: every connect is refused
        ca_file=str(site.files.ca_cert),
        password=site.created[DEVICE].password,
        backoff_min_s=0.5,
        backoff_max_s=2.0,
    )


def run(scans: int = 200, backlog: int = 10_000) -> list[dict[str, Any]]:
    """Time ``scans`` scans offline, then ``scans`` more with the network down and ``backlog``
    events queued; return the measurements."""
    if scans < 2:
        raise ValueError("the locker benchmark needs at least two scans")
    key = generate_signing_key(KID)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="linli-bench-locker-") as tmp:
        offline = _Rig(Path(tmp) / "offline", key, SyncSection())
        try:
            offline.start()
            samples = _scans(offline, scans)
        finally:
            offline.close()
        results.append(summarize("locker_scan_to_relay_offline", "s", samples, budget_p95_s=0.05))
        down_root = Path(tmp) / "down"
        down_root.mkdir()
        down = _Rig(down_root / "locker", key, _network_down(down_root))
        try:
            _fill_outbox(down, backlog)
            down.start()
            samples = _scans(down, scans)
            queued = down.daemon.store.outbox.count()
            connected = down.daemon.sync is not None and down.daemon.sync.agent.connected
        finally:
            down.close()
        if connected:
            raise RuntimeError("the 'network down' run reached a broker; nothing should listen")
        results.append(
            summarize(
                "locker_scan_to_relay_network_down",
                "s",
                samples,
                budget_p95_s=0.05,
                outbox_backlog=backlog,
            )
        )
        results.append(value("locker_outbox_after_network_down", "events", 1, float(queued)))
    return results
