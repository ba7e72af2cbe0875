"""`linli bench kiosk`: the whole simulated kiosk path, reporting the figures issues 3 and 7 ask
for."""

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
    # Issue 7: the same path through the session controller (a resident with zero think time).
    on_screen = figures["kiosk_identity_on_screen"]
    printed = figures["kiosk_certificate_printed"]
    assert on_screen["n"] == printed["n"] == figures["kiosk_preview"]["n"] == 3
    assert figures["kiosk_print"]["n"] == 3
    assert on_screen["unit"] == printed["unit"] == "s"
    assert on_screen["reference"] == wire and on_screen["p50"] >= wire
    assert printed["budget_p95"] == 0.5
    assert printed["within_budget"] == (printed["p95"] <= 0.5)
    # Each visit's printed screen comes after its menu, its preview and its print.
    assert printed["p50"] > on_screen["p50"]
    assert printed["p50"] > figures["kiosk_preview"]["p50"] > 0
    assert printed["p50"] > figures["kiosk_print"]["p50"] > 0


def test_bench_kiosk_rejects_zero_runs() -> None:
    result = CliRunner().invoke(cli, ["bench", "kiosk", "--runs", "0", "--json"])
    assert result.exit_code != 0
    assert result.exit_code == 2 and "Invalid value for '--runs'" in result.output
