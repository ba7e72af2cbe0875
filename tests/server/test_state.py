"""up/state and Last Will: a device's online flag follows its newest (boot, at), in any order."""

from __future__ import annotations

import itertools

import pytest
from sqlalchemy import Engine, select

from sync_server.errors import DeviceMismatchError
from sync_server.ingest import record_state
from sync_server.models import Device


def _device(engine: Engine, device_id: str = "locker-01") -> Device:
    with engine.connect() as conn:
        row = conn.execute(select(Device).where(Device.id == device_id)).one()
    return Device(
        online=row.online, boot=row.boot, state_at=row.state_at, last_state=row.last_state
    )


def _state(engine: Engine, online: bool, boot: int, at: float) -> bool:
    payload = {"online": online, "boot": boot, "health": {"doors": "ok"} if online else {}}
    return record_state(engine, "locker-01", online=online, boot=boot, at=at, payload=payload)


def test_online_then_will_of_the_same_boot_goes_offline(engine: Engine) -> None:
    assert _state(engine, True, boot=3, at=100.0)
    assert _device(engine).online is True
    assert _state(engine, False, boot=3, at=100.0)  # the Will carries its connection's at
    device = _device(engine)
    assert (device.online, device.boot, device.last_state) == (False, 3, {
        "online": False, "boot": 3, "health": {}})  # fmt: skip


def test_a_late_will_of_an_older_boot_does_not_mark_the_new_session_offline(
    engine: Engine,
) -> None:
    assert _state(engine, True, boot=4, at=50.0)  # restarted; its clock even went back
    assert not _state(engine, False, boot=3, at=100.0)  # boot 3's Will arrives late
    device = _device(engine)
    assert (device.online, device.boot) == (True, 4)


def test_a_will_of_an_earlier_connection_in_the_same_boot_is_stale(engine: Engine) -> None:
    assert _state(engine, True, boot=3, at=200.0)  # reconnected after a network cut
    assert not _state(engine, False, boot=3, at=100.0)  # the Will of the first connection
    assert _device(engine).online is True


def test_a_delayed_online_of_an_older_boot_is_ignored(engine: Engine) -> None:
    assert _state(engine, False, boot=5, at=10.0)
    assert not _state(engine, True, boot=4, at=99.0)
    assert _device(engine).online is False


def test_an_online_never_undoes_an_offline_with_the_same_at(engine: Engine) -> None:
    assert _state(engine, False, boot=3, at=100.0)
    assert not _state(engine, True, boot=3, at=100.0)
    assert _device(engine).online is False


MESSAGES = [(True, 1, 10.0), (False, 1, 10.0), (True, 2, 5.0), (False, 1, 30.0), (True, 2, 6.0)]


@pytest.mark.parametrize("order", list(itertools.permutations(range(len(MESSAGES))))[::17])
def test_final_state_does_not_depend_on_arrival_order(
    engine: Engine, order: tuple[int, ...]
) -> None:
    for index in order:
        _state(engine, *MESSAGES[index])
    device = _device(engine)
    assert (device.online, device.boot, device.state_at) == (True, 2, 6.0)


def test_invalid_device_id_is_refused(engine: Engine) -> None:
    with pytest.raises(DeviceMismatchError, match="device id is invalid"):
        record_state(engine, "a/+/b", online=True, boot=1, at=1.0, payload={})
