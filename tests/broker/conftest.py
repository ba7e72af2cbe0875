"""A real Mosquitto (hardware_sim.mosquitto) provisioned by provisioning.broker for these tests.

A missing ``mosquitto`` FAILS the tests with what to install: the real broker's ACL and TLS are
what they prove, a fake broker would prove nothing.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from hardware_sim.mosquitto import INSTALL_HINT, MosquittoTestBroker, MqttTestClient


def require_mosquitto() -> None:
    for tool in ("mosquitto", "mosquitto_passwd"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            pytest.fail(f"{tool} is not installed; {INSTALL_HINT}", pytrace=False)


@pytest.fixture(scope="session")
def broker() -> Iterator[MosquittoTestBroker]:
    """One broker for the ACL/TLS tests: devices dev-a and dev-b, TLS plus loopback plain."""
    require_mosquitto()
    test_broker = MosquittoTestBroker(devices=("dev-a", "dev-b"), plain=True)
    test_broker.start()
    yield test_broker
    test_broker.cleanup()


@pytest.fixture
def fresh_broker() -> Iterator[MosquittoTestBroker]:
    """A broker of its own, for tests that stop, kill or re-provision it."""
    require_mosquitto()
    test_broker = MosquittoTestBroker(devices=("dev-a", "dev-b"))
    test_broker.start()
    yield test_broker
    test_broker.cleanup()


@pytest.fixture
def server(broker: MosquittoTestBroker) -> Iterator[MqttTestClient]:
    """The sync server's account, consuming every device's up/ through the shared subscription."""
    with broker.server_client() as client:
        assert client.subscribe("$share/linli/linli/v1/dev/+/up/#").value == 1
        yield client


@pytest.fixture
def dev_a(broker: MosquittoTestBroker) -> Iterator[MqttTestClient]:
    with broker.client("dev-a") as client:
        yield client


@pytest.fixture
def dev_b(broker: MosquittoTestBroker) -> Iterator[MqttTestClient]:
    with broker.client("dev-b") as client:
        yield client
