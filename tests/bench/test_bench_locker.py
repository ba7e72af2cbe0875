"""`linli bench locker` runs the real locker daemon on simulated hardware and reports both runs.

Speed is not asserted (budgets are benchmarks, not timed tests); the test shows the benchmark
measures what it says: every scan energised a relay, the network-down run kept its backlog (plus
the scans' own events) because nothing could be sent, and the JSON has the fields the issue asks.
"""

from __future__ import annotations

import json

from click.testing import CliRunner

from linli.bench import locker as locker_bench
from linli.cli import cli


def test_both_runs_measure_every_scan_and_keep_the_backlog() -> None:
    results = {r["name"]: r for r in locker_bench.run(scans=4, backlog=50)}
    for name in ("locker_scan_to_relay_offline", "locker_scan_to_relay_network_down"):
        assert results[name]["n"] == 4
        assert results[name]["unit"] == "s"
        assert 0 < results[name]["p50"] <= results[name]["p95"]
        assert results[name]["budget_p95_s"] == 0.05
    assert results["locker_scan_to_relay_network_down"]["outbox_backlog"] == 50
    # 50 queued + the scans' own events, none sent: the broker was unreachable throughout.
    assert results["locker_outbox_after_network_down"]["value"] > 50


def test_cli_prints_a_json_list() -> None:
    result = CliRunner().invoke(
        cli, ["bench", "locker", "--scans", "2", "--backlog", "0", "--json"]
    )
    assert result.exit_code == 0, result.output
    names = [r["name"] for r in json.loads(result.stdout)]
    assert names == [
        "locker_scan_to_relay_offline",
        "locker_scan_to_relay_network_down",
        "locker_outbox_after_network_down",
    ]
