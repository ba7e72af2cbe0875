"""Benchmark: ID card placed on the simulated reader -> identity parsed, against the pure wire time.

The emulator (pty, replies paced at the line rate) and the real :class:`SamReader` run unchanged;
each sample times one find/select/read exchange and the parse. The reference is the time the bytes
of that exchange (requests and replies) take on an 8N1 line, so ``ratio`` shows the driver overhead.
"""

from __future__ import annotations

import time
from typing import Any

from device.idcard.codec import Command, build_read_reply, build_reply, build_request
from device.idcard.errors import SW3_FIND_OK, SW3_OK
from device.idcard.reader import SamReader
from hardware_sim.idcards import sample_card
from hardware_sim.sam import SamEmulator
from hardware_sim.serial_pty import wire_time
from linli.bench import summarize, value


def exchange_bytes() -> int:
    """Bytes on the wire for one find/select/read of text+photo (both directions)."""
    requests = sum(
        len(build_request(c))
        for c in (Command.FIND_CARD, Command.SELECT_CARD, Command.READ_TEXT_PHOTO)
    )
    replies = (
        len(build_reply(SW3_FIND_OK, bytes(4)))
        + len(build_reply(SW3_OK, bytes(8)))
        + len(build_read_reply(sample_card(0)))
    )
    return requests + replies


def run(n: int = 50, baudrate: int = 115200) -> list[dict[str, Any]]:
    """Time ``n`` reads of a freshly placed card; return the measurements."""
    if n < 1:
        raise ValueError("the ID-card benchmark needs at least one read")
    cards = [sample_card(i) for i in range(8)]
    samples: list[float] = []
    with (
        SamEmulator(baudrate=baudrate, pace=True) as emulator,
        SamReader(port=emulator.path, baudrate=baudrate, timeout_s=2.0, retries=0) as reader,
    ):
        for i in range(n):
            emulator.insert(cards[i % len(cards)])
            start = time.perf_counter()
            identity = reader.read_card()
            samples.append(time.perf_counter() - start)
            if identity is None or identity != cards[i % len(cards)]:
                raise RuntimeError(f"read {i}: the simulated card was not read back intact")
            emulator.lift()
    n_bytes = exchange_bytes()
    wire = wire_time(n_bytes, baudrate)
    return [
        summarize("idcard_read", "s", samples, reference=wire, baudrate=baudrate),
        value("idcard_wire_time", "s", 1, wire, bytes=n_bytes, baudrate=baudrate),
    ]
