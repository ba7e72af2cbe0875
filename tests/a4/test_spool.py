"""The A4 spool's metadata parser and quarantine: corrupt files are reported, never crash."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from device.a4 import Spool, SpoolEntry, parse_metadata
from device.errors import ProtocolError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=10,
)


@given(st.text())
def test_parser_never_crashes_on_text(text: str) -> None:
    try:
        entry = parse_metadata(text)
    except ProtocolError:
        return
    assert isinstance(entry, SpoolEntry)


@given(st.dictionaries(st.sampled_from(["key", "title", "created", "attempts"]), json_values))
def test_parser_on_json_objects(raw: dict[str, object]) -> None:
    try:
        entry = parse_metadata(json.dumps(raw))
    except ProtocolError:
        return
    assert entry.key == raw["key"] and entry.attempts >= 0


@given(st.text(max_size=40), st.integers(min_value=0, max_value=99))
def test_round_trip(title: str, attempts: int) -> None:
    entry = SpoolEntry("abc123", title, 1.5, attempts, "PaperOutError: x", 7)
    from dataclasses import asdict

    assert parse_metadata(json.dumps(asdict(entry))) == entry


def test_corrupt_file_is_quarantined(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    good = spool.add(b"%PDF-1.4", "居住证明", 1.0)
    bad = spool.add(b"%PDF-1.4", "x", 2.0)
    (tmp_path / f"{bad.key}.json").write_bytes(b"{not json\xff")
    assert [e.key for e in spool.entries()] == [good.key]
    assert (tmp_path / "quarantine" / f"{bad.key}.json").exists()
    assert (tmp_path / "quarantine" / f"{bad.key}.pdf").exists()
