"""A complete read session on the wire, byte for byte, against a golden transcript.

Regenerate after an intended protocol change with ``LINLI_UPDATE_GOLDEN=1 pytest tests/idcard``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from device.idcard.reader import SamReader
from hardware_sim.idcards import sample_card
from hardware_sim.sam import SamEmulator
from linli.bench import idcard as idcard_bench

pytestmark = pytest.mark.timeout(30)

GOLDEN = Path(__file__).parent / "golden" / "read_session.txt"


def test_read_session_matches_the_golden_transcript() -> None:
    with SamEmulator() as emulator:
        emulator.insert(sample_card(0))
        with SamReader(port=emulator.path) as reader:
            assert reader.read_card() == sample_card(0)
        transcript = emulator.transcript_text()
    if os.environ.get("LINLI_UPDATE_GOLDEN"):
        GOLDEN.write_text(transcript)
    assert transcript == GOLDEN.read_text()
    lines = transcript.splitlines()
    # Reset, status, find, select, read: each request followed by its reply (HARDWARE.md table).
    assert lines[0] == "> AA AA AA 96 69 00 03 10 FF EC"
    assert lines[1] == "< AA AA AA 96 69 00 04 00 00 90 94"
    assert lines[4] == "> AA AA AA 96 69 00 03 20 01 22"
    assert lines[5] == "< AA AA AA 96 69 00 08 00 00 9F 00 00 00 00 97"
    assert lines[8] == "> AA AA AA 96 69 00 03 30 01 32"
    assert lines[9].startswith("< AA AA AA 96 69 05 08 00 00 90 01 00 04 00")
    assert len(bytes.fromhex(lines[9][2:])) == 1295


def test_benchmark_measures_close_to_the_wire_time() -> None:
    read, wire = idcard_bench.run(n=3)
    assert read["name"] == "idcard_read" and read["n"] == 3
    assert wire["name"] == "idcard_wire_time"
    assert wire["value"] == pytest.approx(1359 * 10 / 115200)
    assert read["reference"] == wire["value"]
    assert 0.95 <= read["ratio"] < 3
