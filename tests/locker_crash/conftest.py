"""Fixtures of the locker crash tests: the server's signing key, a real Mosquitto for command
flows, set-up lockers to start pickups from, and a rig per test (rig.py).

A missing ``mosquitto`` FAILS the command flows with what to install: a command that survives a
crash is only shown through the real broker, which redelivers what the killed locker never
acknowledged.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from device.credential import SigningKey, generate_signing_key
from hardware_sim.mosquitto import INSTALL_HINT, MosquittoTestBroker
from tests.locker_crash.flows import SETUP_FLOWS, Flow
from tests.locker_crash.rig import DEVICE_ID, LockerRig, ServerSide, SyncLink

KID = "srv-crash-1"


def _mosquitto_or_fail() -> None:
    for tool in ("mosquitto", "mosquitto_passwd"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            pytest.fail(f"{tool} is not installed; {INSTALL_HINT}", pytrace=False)


def _broker() -> MosquittoTestBroker:
    _mosquitto_or_fail()
    broker = MosquittoTestBroker(devices=(DEVICE_ID,))
    broker.start()
    return broker


def _link(broker: MosquittoTestBroker) -> SyncLink:
    return SyncLink(broker.tls_port, broker.ca_cert, broker.credentials[DEVICE_ID].password)


@pytest.fixture(scope="session")
def server_key() -> SigningKey:
    return generate_signing_key(KID)


def run_clean(rig: LockerRig, flow: Flow, key: SigningKey, server: ServerSide | None) -> None:
    """Run ``flow`` from trigger to shut door with no crash point, and stop with SIGTERM."""
    rig.start()
    if server is not None:
        server.wait_online(rig)
    flow.trigger(rig, key, server)
    rig.wait_request(flow.compartment, "opened")
    rig.finish(flow.compartment)
    rig.stop()


class Setups:
    """Data dirs of lockers a clean run of a deposit flow left, made once per session."""

    def __init__(self, root: Path, key: SigningKey) -> None:
        self._root = root
        self._key = key
        self._made: dict[str, Path] = {}

    def data_dir(self, name: str) -> Path:
        if name not in self._made:
            self._made[name] = self._make(name)
        return self._made[name]

    def _make(self, name: str) -> Path:
        flow = SETUP_FLOWS[name]
        broker = _broker() if flow.by_command else None
        server = None if broker is None else ServerSide(broker, self._key)
        rig = LockerRig(
            self._root / name,
            self._key,
            sync=None if broker is None else _link(broker),
        )
        try:
            run_clean(rig, flow, self._key, server)
            state = rig.compartment(flow.compartment)
            assert state["state"] == "holding" and state["content"] == flow.content, state
        finally:
            rig.close()
            if server is not None:
                server.close()
            if broker is not None:
                broker.cleanup()
        return rig.data_dir


@pytest.fixture(scope="session")
def setups(tmp_path_factory: pytest.TempPathFactory, server_key: SigningKey) -> Setups:
    return Setups(tmp_path_factory.mktemp("locker-setups"), server_key)


MakeRig = Callable[..., tuple[LockerRig, ServerSide | None]]


@pytest.fixture
def make_rig(tmp_path: Path, server_key: SigningKey, setups: Setups) -> Iterator[MakeRig]:
    """``make_rig(flow, **locker_keys)``: a locker (from the flow's set-up state) and, for
    command flows, the server's side on a private Mosquitto of its own (no session from before).
    Everything is stopped at teardown: the locker, then the server's client, then the broker."""
    made: list[tuple[LockerRig | None, ServerSide | None, MosquittoTestBroker | None]] = []

    def make(flow: Flow, **locker: float) -> tuple[LockerRig, ServerSide | None]:
        data_from = None if flow.setup is None else setups.data_dir(flow.setup)
        broker = _broker() if flow.by_command else None
        try:
            server = None if broker is None else ServerSide(broker, server_key)
        except BaseException:
            if broker is not None:
                broker.cleanup()
            raise
        made.append((None, server, broker))
        sync = None if broker is None else _link(broker)
        rig = LockerRig(
            tmp_path / "locker", server_key, sync=sync, data_from=data_from, locker=locker
        )
        made[-1] = (rig, server, broker)
        return rig, server

    yield make
    for rig, server, broker in made:
        if rig is not None:
            rig.close()
        if server is not None:
            server.close()
        if broker is not None:
            broker.cleanup()
