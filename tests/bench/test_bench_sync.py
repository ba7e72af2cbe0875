"""`linli bench sync` in a small configuration: the JSON it prints and its exactly-once check.

Speed is not tested here; the real broker, server process and agents are, so a missing
``mosquitto`` fails these tests with what to install.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from device.atrest import DeviceKey
from device.store import open_store
from hardware_sim.mosquitto import INSTALL_HINT
from linli.bench.sync import Device, _storage_floor, _verify
from linli.cli import cli
from sync_server.db import open_database, upgrade
from sync_server.ingest import store_events_payload
from sync_server.models import Event


@pytest.fixture(autouse=True)
def _mosquitto() -> None:
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        pytest.fail(f"mosquitto is not installed; {INSTALL_HINT}", pytrace=False)


def test_small_run_prints_the_three_measurements() -> None:
    args = [
        "bench",
        "sync",
        "--devices",
        "3",
        "--events",
        "150",
        "--drain-events",
        "300",
        "--repeat",
        "2",
        "--heartbeat-devices",
        "12",
        "--hold",
        "5",
        "--workers",
        "2",
        "--json",
    ]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    figures = {r["name"]: r for r in json.loads(result.stdout)}  # progress goes to stderr
    assert set(figures) == {"sync_ingest", "sync_drain", "sync_server_rss"}

    ingest = figures["sync_ingest"]
    assert ingest["unit"] == "events/s"
    assert ingest["n"] == 2 and len(ingest["reference_samples"]) == 2
    assert ingest["events"] == 450 and ingest["devices"] == 3 and ingest["messages"] == 6
    assert 0 < ingest["p50"] <= ingest["p95"] and ingest["reference"] > 0
    assert ingest["ratio"] == pytest.approx(ingest["p50"] / ingest["reference"])
    assert ingest["budget_ratio"] == 0.7
    assert ingest["within_budget"] == (ingest["ratio"] >= 0.7)
    assert ingest["qos"] == 1 and ingest["tls"] is True

    drain = figures["sync_drain"]
    assert drain["unit"] == "s" and drain["n"] == 2
    assert drain["events"] == 300 and drain["messages"] == 3
    assert drain["ratio"] == pytest.approx(drain["p50"] / drain["reference"])
    assert drain["budget_ratio"] == 2.0
    assert drain["within_budget"] == (drain["ratio"] <= 2.0)
    assert drain["verified"] == "exactly once, in order"
    assert len(drain["storage_floor_samples"]) == 2 and drain["storage_floor_s"] > 0

    rss = figures["sync_server_rss"]
    assert rss["unit"] == "MiB" and rss["n"] == 5 and rss["devices"] == 12
    assert rss["idle_mib"] > 10 and 10 < rss["value"] <= rss["max"] < 2048
    assert 0 < rss["broker_rss_mib"] < 2048


def test_help_names_the_options() -> None:
    result = CliRunner().invoke(cli, ["bench", "sync", "--help"])
    assert result.exit_code == 0
    for option in ("--devices", "--events", "--drain-events", "--heartbeat-devices", "--json"):
        assert option in result.output


def _device_with_events(tmp_path: Path, count: int) -> Device:
    device = Device("dev-a", open_store(tmp_path / "dev-a.db", key=DeviceKey.generate()))
    device.fill(count)
    return device


def test_verify_fails_a_run_that_lost_an_event(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'server.db'}"
    upgrade(url)
    engine = open_database(url)
    device = _device_with_events(tmp_path, 250)
    payloads = device.payloads()
    assert len(payloads) == 3
    for payload in (payloads[0], payloads[2]):  # the middle batch never arrived
        store_events_payload(engine, device.id, payload)
    device.store.outbox.acked(250)  # even with the device believing all was acked
    with pytest.raises(RuntimeError, match="lost or doubled"):
        _verify(engine, [device])
    store_events_payload(engine, device.id, payloads[1])
    _verify(engine, [device])  # complete, once each, in order
    device.store.close()
    engine.dispose()


def test_verify_fails_when_the_outbox_did_not_drain(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'server.db'}"
    upgrade(url)
    engine = open_database(url)
    device = _device_with_events(tmp_path, 10)
    store_events_payload(engine, device.id, device.payloads()[0])
    with pytest.raises(RuntimeError, match="outbox not empty"):
        _verify(engine, [device])
    device.store.close()
    engine.dispose()


def test_storage_floor_stores_every_row_it_times(tmp_path: Path) -> None:
    """The floor is a real insert of the drain's events, not a timing of nothing."""
    device = _device_with_events(tmp_path, 250)
    floor = _storage_floor(tmp_path / "floor.db", device.payloads())
    assert floor > 0
    engine = open_database(f"sqlite:///{tmp_path / 'floor.db'}")
    with engine.connect() as conn:
        rows = conn.execute(select(Event.seq, Event.data).order_by(Event.seq)).all()
    assert [(seq, data["i"]) for seq, data in rows] == [(s, s - 1) for s in range(1, 251)]
    device.store.close()
    engine.dispose()
