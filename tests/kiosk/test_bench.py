"""`linli bench kiosk`: the whole simulated kiosk path, reporting the figures issue 3 asks for."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from linli.cli import cli


def test_bench_kiosk_reports_visit_times_beside_the_wire_time() -> None:
    result = CliRunner().invoke(cli, ["bench", "kiosk", "--runs", "3", "--json"])
    assert result.exit_code == 0, result.output
    figures = {r["name"]: r for r in json.loads(result.output)}
    visit = figures["kiosk_visit"]
    wire = figures["idcard_wire_time"]["value"]
    assert visit["n"] == 3 and visit["unit"] == "s"
    assert visit["reference"] == wire and visit["ratio"] == pytest.approx(visit["p50"] / wire)
    assert visit["budget_p95"] == 0.5
    assert visit["within_budget"] == (visit["p95"] <= 0.5)
    # A visit includes the card read, so it cannot be shorter than the bytes on the wire.
    assert visit["p50"] >= figures["kiosk_card_read"]["p50"] >= wire
    assert figures["kiosk_issue"]["n"] == 3
    polled = figures["kiosk_visit_polled"]
    assert polled["n"] == 3 and polled["reference"] == wire
    assert polled["p50"] >= wire  # the watcher's read is in it too


def test_bench_kiosk_rejects_zero_runs() -> None:
    result = CliRunner().invoke(cli, ["bench", "kiosk", "--runs", "0", "--json"])
    assert result.exit_code != 0
    assert result.exit_code == 2 and "Invalid value for '--runs'" in result.output
