"""Two server processes (or threads) storing batches of the same devices at the same moment.

Each writer has its own engine on the same database and both start each batch together (a
barrier). Afterwards every event is stored exactly once and each device is acked to its end:
without the per-device lock, two disjoint batches committed together each miss the other's
events and the ack stops short (checked: the test fails when the lock is removed).
"""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import Engine

from sync_server.ingest import acked_seq
from tests.server.helpers import event_count, store_in_order, stored_seqs

Plan = list[tuple[str, int, int]]
DEVICES = [f"locker-{n:02d}" for n in range(12)]
ROUNDS = (((1, 50), (51, 100)), ((101, 130), (131, 160)), ((141, 175), (161, 190)))
"""Per device: a new device stored by both at once; disjoint batches of a known device (the
case only the per-device lock gets right); overlapping batches (redelivery)."""
LAST = 190


def _plans() -> tuple[Plan, Plan]:
    first: Plan = []
    second: Plan = []
    for device in DEVICES:
        for (a1, b1), (a2, b2) in ROUNDS:
            first.append((device, a1, b1))
            second.append((device, a2, b2))
    return first, second


@pytest.mark.parametrize("how", ["processes", "threads"])
def test_simultaneous_writers_store_each_event_once_and_ack_to_the_end(
    engine: Engine, migrated_url: str, how: str
) -> None:
    first, second = _plans()
    pool: Executor
    barrier: Any
    manager = None
    if how == "processes":
        context = multiprocessing.get_context("spawn")
        manager = context.Manager()
        barrier = manager.Barrier(2)
        pool = ProcessPoolExecutor(max_workers=2, mp_context=context)
    else:
        barrier = threading.Barrier(2)
        pool = ThreadPoolExecutor(max_workers=2)
    try:
        with pool:
            futures = [
                pool.submit(store_in_order, migrated_url, p, barrier) for p in (first, second)
            ]
            acks = [f.result(timeout=110) for f in futures]
    finally:
        if manager is not None:
            manager.shutdown()

    for device in DEVICES:
        assert stored_seqs(engine, device) == list(range(1, LAST + 1))
        assert acked_seq(engine, device) == LAST, device
    assert event_count(engine) == LAST * len(DEVICES)
    for plan, got in zip((first, second), acks, strict=True):
        by_device: dict[str, list[int]] = {}
        for (device, _first, _last), ack in zip(plan, got, strict=True):
            by_device.setdefault(device, []).append(ack)
        for device_acks in by_device.values():
            assert device_acks == sorted(device_acks), "an ack went backwards"
    # Whichever writer committed second in a round saw both batches and acked the round's end.
    for index, (_device, _first, last) in enumerate(second):
        assert max(acks[0][index], acks[1][index]) == last


def test_groups_naming_the_same_devices_in_opposite_orders_do_not_deadlock(
    engine: Engine, migrated_url: str
) -> None:
    """Two consumers' group commits over the same twelve devices, handed over in opposite
    orders, at the same moment, five times: on PostgreSQL row locks taken in the given order
    would deadlock (one transaction aborted); sorted, both commit and every event is stored once."""
    from sync_server.db import make_engine
    from sync_server.ingest import ingest_batches
    from tests.server.helpers import batch

    barrier = threading.Barrier(2)
    failures: list[BaseException] = []

    def writer(order: list[str]) -> None:
        own = make_engine(migrated_url)
        try:
            for round_ in range(5):
                seqs = range(round_ * 20 + 1, round_ * 20 + 21)
                group = [batch(device, seqs) for device in order]
                barrier.wait(timeout=30)
                ingest_batches(own, group)
        except BaseException as err:
            failures.append(err)
            barrier.abort()
        finally:
            own.dispose()

    threads = [threading.Thread(target=writer, args=(order,)) for order in (DEVICES, DEVICES[::-1])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    for device in DEVICES:
        assert stored_seqs(engine, device) == list(range(1, 101))
        assert acked_seq(engine, device) == 100
