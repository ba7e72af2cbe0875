"""Batches and stored-row queries shared by the server storage tests (and their child processes)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func, select

from device.protocol import EventBatch, EventMessage
from sync_server.models import Event


def event_id(seq: int, salt: int = 0) -> str:
    return f"{salt:08x}{seq:024x}"


def batch(device: str, seqs: range | list[int], *, boot: int = 1, salt: int = 0) -> EventBatch:
    """A valid up/events batch with deterministic ids and data that name the seq."""
    return EventBatch(
        device=device,
        boot=boot,
        events=[
            EventMessage(
                seq=seq,
                id=event_id(seq, salt),
                type="compartment.opened",
                at=1_700_000_000.0 + seq,
                data={"seq": seq, "no": seq % 12},
            )
            for seq in seqs
        ],
    )


def stored_seqs(engine: Engine, device: str) -> list[int]:
    """Every stored seq of ``device`` in order, duplicates included (there must be none)."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(Event.seq).where(Event.device_id == device).order_by(Event.seq)
            ).scalars()
        )


def event_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Event)).scalar_one())


def store_in_order(url: str, plan: list[tuple[str, int, int]], barrier: Any) -> list[int]:
    """Store ``(device, first, last)`` batches in order through an engine of our own, each when
    every writer is ready for its own next one; return the acks. Runs in a child process too."""
    from sync_server.db import make_engine
    from sync_server.ingest import store_batch

    engine = make_engine(url)
    try:
        # Connect before the barrier, so writers collide on storing and not on connecting.
        engine.connect().close()
        acks = []
        for device, first, last in plan:
            barrier.wait(timeout=60)
            acks.append(store_batch(engine, batch(device, range(first, last + 1))))
        return acks
    finally:
        engine.dispose()
