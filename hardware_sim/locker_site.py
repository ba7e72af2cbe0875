"""A simulated cloud locker in one process: GPIO locks and doors, the device store, the locker
controller, and the server's signing key to issue credentials and commands with.

Tests and ``linli bench locker`` use it; the crash tests run the real daemon in a child process
instead (tests/locker/test_crash.py). The world is a :class:`~hardware_sim.gpio.SimGpio`: a test
opens and closes doors, jams locks and cuts sensor wires through ``site.gpio``.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device.atrest import DeviceKey
from device.clock import Clock, FakeClock
from device.commands import sign_command
from device.config import LockerSection, LocksSection
from device.credential import CredentialClaims, SigningKey, generate_signing_key, issue
from device.locks.gpio import GpioLockController
from device.store import Store, open_store
from device.sync.commands import CommandOutcome, CommandRunner
from hardware_sim.gpio import SimGpio
from locker.commands import LockerCommands
from locker.controller import Locker, LogIndicator

SERVER_KID = "srv-sim-1"
RELAY_PINS = (5, 6, 13, 19, 26, 12, 16, 20)
DOOR_PINS = (17, 27, 22, 23, 24, 25, 4, 18)


def locks_section(count: int = 4, **overrides: Any) -> LocksSection:
    """A GPIO ``[locks]`` wiring for ``count`` compartments (up to 8)."""
    return LocksSection(
        backend="gpio",
        relay_pins=list(RELAY_PINS[:count]),
        door_pins=list(DOOR_PINS[:count]),
        **overrides,
    )


@dataclass
class _Process:
    """What one run of the locker daemon holds: rebuilt by :meth:`LockerSite.restart`."""

    locks: GpioLockController
    store: Store
    locker: Locker
    runner: CommandRunner
    indicator: LogIndicator


def _start_process(
    path: Path,
    clock: Clock,
    gpio: SimGpio,
    locks_config: LocksSection,
    section: LockerSection,
    *,
    server_key: SigningKey,
    device_id: str,
    device_key: DeviceKey,
) -> _Process:
    """Open the locks on ``gpio``, the store file under ``path``, and start a locker on them."""
    locks = GpioLockController(locks_config, gpio=gpio, clock=clock)
    store = open_store(path / "store.db", key=device_key, clock=clock)
    keys = {server_key.kid: server_key.verify_key}
    indicator = LogIndicator()
    locker = Locker(
        store,
        locks,
        device_id=device_id,
        keys=keys,
        section=section,
        clock=clock,
        indicator=indicator,
    )
    runner = CommandRunner(store, keys, device_id, clock=clock)
    LockerCommands(locker).register(runner)
    locker.start()
    return _Process(locks, store, locker, runner, indicator)


def locker_credential(
    key: SigningKey,
    aud: str,
    kind: str,
    case: str,
    compartment: int | None = None,
    *,
    valid_from: float,
    valid_s: float = 3600,
    cti: bytes | None = None,
) -> str:
    """A locker credential for ``aud`` as the server issues it: ``LQ1:...`` valid from
    ``valid_from`` (wall time) for ``valid_s`` seconds."""
    claims = CredentialClaims(
        kind=kind,
        sub=case,
        nbf=int(valid_from),
        exp=int(valid_from + valid_s),
        cti=cti or secrets.token_bytes(8),
        aud=aud,
        compartment=compartment,
    )
    return issue(claims, key)


@dataclass
class LockerSite:
    """One simulated locker; ``close()`` releases everything, ``restart()`` starts it again."""

    path: Path
    clock: Clock
    gpio: SimGpio
    locks: GpioLockController
    store: Store
    locker: Locker
    runner: CommandRunner
    server_key: SigningKey
    device_id: str
    indicator: LogIndicator = field(default_factory=LogIndicator)
    device_key: DeviceKey = field(default_factory=DeviceKey.generate)
    locks_config: LocksSection = field(default_factory=locks_section)

    @classmethod
    def build(
        cls,
        path: str | Path,
        *,
        clock: Clock | None = None,
        sizes: Sequence[str] = ("S", "M", "M", "L"),
        device_id: str = "locker-sim-1",
        server_key: SigningKey | None = None,
        key: DeviceKey | None = None,
        **locker_options: Any,
    ) -> LockerSite:
        path = Path(path)
        clock = clock if clock is not None else FakeClock()
        server_key = server_key or generate_signing_key(SERVER_KID)
        key = key or DeviceKey.generate()
        locks_cfg = locks_section(len(sizes))
        gpio = SimGpio.for_section(locks_cfg, clock)
        section = LockerSection(sizes=list(sizes), **locker_options)
        p = _start_process(
            path,
            clock,
            gpio,
            locks_cfg,
            section,
            server_key=server_key,
            device_id=device_id,
            device_key=key,
        )
        return cls(
            path,
            clock,
            gpio,
            p.locks,
            p.store,
            p.locker,
            p.runner,
            server_key,
            device_id,
            p.indicator,
            key,
            locks_cfg,
        )

    def restart(self, **locker_options: Any) -> None:
        """Stop this locker process and start a new one (``start()`` and its recovery included)
        on the same store file, the same simulated wiring and the same clock; ``locker_options``
        change its ``[locker]`` config.

        Nothing in memory survives, as after a power cut: the new process knows what the store
        and the doors tell it. Doors, jams and cut wires stay as they are in ``gpio``.
        """
        section = LockerSection.model_validate(
            {**self.locker.section.model_dump(), **locker_options}
        )
        self.close()
        p = _start_process(
            self.path,
            self.clock,
            self.gpio,
            self.locks_config,
            section,
            server_key=self.server_key,
            device_id=self.device_id,
            device_key=self.device_key,
        )
        self.locks, self.store, self.locker = p.locks, p.store, p.locker
        self.runner, self.indicator = p.runner, p.indicator

    def credential(
        self,
        kind: str,
        case: str,
        compartment: int | None = None,
        *,
        valid_from: float | None = None,
        valid_s: float = 3600,
        aud: str | None = None,
        cti: bytes | None = None,
        key: SigningKey | None = None,
    ) -> str:
        """A credential as the server would issue it (``LQ1:...``)."""
        return locker_credential(
            key or self.server_key,
            aud or self.device_id,
            kind,
            case,
            compartment,
            valid_from=self.clock.time() if valid_from is None else valid_from,
            valid_s=valid_s,
            cti=cti,
        )

    def command(self, type_: str, args: dict[str, Any]) -> CommandOutcome:
        """Sign a command as the server and hand it to the device's runner (as ``down/cmd``
        would); then let the locker act on it."""
        now = self.clock.time()
        raw = sign_command(
            self.server_key, device_id=self.device_id, type=type_, args=args, now=now, ttl_s=300
        )
        return self.runner.handle(raw)

    def settle(self, seconds: float = 0.2, step: float = 0.01) -> None:
        """Run the locker's loop for ``seconds`` of simulated time (debounce, pulses, timers)."""
        assert isinstance(self.clock, FakeClock), "settle() moves a FakeClock"
        end = self.clock.monotonic() + seconds
        while self.clock.monotonic() < end:
            self.locker.tick()
            self.clock.advance(step)
        self.locker.tick()

    def events(self, type_: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        """``(type, data)`` of queued events (optionally one type), oldest first."""
        return [
            (e.type, dict(e.data))
            for e in self.store.outbox.pending(100_000)
            if type_ is None or e.type == type_
        ]

    def close(self) -> None:
        self.locks.close()
        self.store.close()
