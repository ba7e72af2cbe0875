"""`linli bench dispatch` in a small configuration: the JSON it prints and what it compares.

Speed is not asserted (budgets are benchmarks, not timed tests); the test shows the benchmark
reports every figure the issue asks for, that the production solver matches the reference, and
that the instances are not trivial (some pickups assigned, some escalated, greedy not optimal).
"""

from __future__ import annotations

import json

from click.testing import CliRunner

from linli.cli import cli

NAMES = [
    "dispatch_solve",
    "dispatch_gap",
    "dispatch_reference_solve",
    "dispatch_greedy_solve",
    "dispatch_greedy_gap_mean",
    "dispatch_greedy_gap_max",
    "dispatch_eligible_pairs",
    "dispatch_assigned",
    "dispatch_escalated",
]


def test_cli_prints_every_measurement_as_json() -> None:
    args = ["bench", "dispatch", "--pickups", "150", "--workers", "30", "--cities", "3"]
    result = CliRunner().invoke(cli, [*args, "--repeats", "2", "--seed", "5", "--json"])
    assert result.exit_code == 0, result.output
    results = {r["name"]: r for r in json.loads(result.stdout)}
    assert list(results) == NAMES
    for name in ("dispatch_solve", "dispatch_reference_solve", "dispatch_greedy_solve"):
        r = results[name]
        assert r["unit"] == "ms" and r["n"] == 6
        assert 0 < r["p50"] <= r["p95"]
        assert (r["pickups"], r["workers"], r["cities"], r["seed"]) == (150, 30, 3, 5)
    assert results["dispatch_solve"]["budget_ms"] == 50
    assert isinstance(results["dispatch_solve"]["within_budget"], bool)

    gap = results["dispatch_gap"]
    assert (gap["unit"], gap["n"], gap["value"], gap["ratio"]) == ("%", 3, 0.0, 1.0)
    assert gap["reference"] == gap["cost"] > 0
    assert gap["cities_at_optimum"] == 3

    greedy_max = results["dispatch_greedy_gap_max"]
    assert greedy_max["value"] >= results["dispatch_greedy_gap_mean"]["value"] > 0
    assert greedy_max["ratio"] == greedy_max["cost"] / greedy_max["reference"] > 1

    assigned, escalated = results["dispatch_assigned"], results["dispatch_escalated"]
    assert assigned["value"] + escalated["value"] == 150
    assert assigned["value"] > 0 and escalated["value"] > 0
    assert 0 < escalated["unreachable"] <= escalated["value"]
    assert results["dispatch_eligible_pairs"]["value"] > 150


def test_cli_prints_a_readable_table_without_json() -> None:
    args = ["bench", "dispatch", "--pickups", "20", "--workers", "5", "--cities", "1"]
    result = CliRunner().invoke(cli, [*args, "--repeats", "1"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == NAMES
    assert lines[1].startswith("dispatch_gap: 0 % over n=1, reference ")


def test_cli_refuses_zero_cities() -> None:
    result = CliRunner().invoke(cli, ["bench", "dispatch", "--cities", "0"])
    assert result.exit_code != 0
    assert "--cities" in result.output
