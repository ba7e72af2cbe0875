"""`linli bench NAME --json`: the benchmarks that produce every figure the issues ask for."""

from __future__ import annotations

import json
from typing import Any

import click


def emit(results: list[dict[str, Any]], as_json: bool) -> None:
    """Print measurements as a JSON list, or as a readable table."""
    if as_json:
        click.echo(json.dumps(results, ensure_ascii=False, indent=2))
        return
    for r in results:
        if "value" in r:
            figure = f"{r['value']:.4g} {r['unit']}"
        else:
            figure = f"p50 {r['p50']:.4g} {r['unit']}, p95 {r['p95']:.4g} {r['unit']}"
        ref = ""
        if "reference" in r:
            ref = f", reference {r['reference']:.4g} (ratio {r['ratio']:.3g})"
        click.echo(f"{r['name']}: {figure} over n={r['n']}{ref}")


@click.group()
def bench() -> None:
    """Run a benchmark and print its measurements (p50/p95 or a value, with references)."""


@bench.command("idcard")
@click.option("--reads", "n", default=50, show_default=True, help="Number of card reads to time.")
@click.option("--baudrate", default=115200, show_default=True, help="Simulated line rate.")
@click.option("--json", "as_json", is_flag=True, help="Print the measurements as a JSON list.")
def bench_idcard(n: int, baudrate: int, as_json: bool) -> None:
    """Card placed on the simulated reader (pty, real driver) -> identity parsed, vs wire time."""
    from linli.bench import idcard as idcard_bench

    emit(idcard_bench.run(n=n, baudrate=baudrate), as_json)


@bench.command("camera")
@click.option("--codes", "n_codes", default=500, show_default=True, help="Distorted codes.")
@click.option("--frames", "n_frames", default=200, show_default=True, help="Frames timed.")
@click.option("--seed", default=20261123, show_default=True, help="Seed of the generated set.")
@click.option("--json", "as_json", is_flag=True, help="Print the measurements as a JSON list.")
def bench_camera(n_codes: int, n_frames: int, seed: int, as_json: bool) -> None:
    """Camera scanner: frames/s at 640x480 and decode success rate on generated distorted codes."""
    from linli.bench import camera as camera_bench

    emit(camera_bench.run(n_codes=n_codes, n_frames=n_frames, seed=seed), as_json)


@bench.command("print")
@click.option("--runs", default=50, show_default=True, help="Certificates to render and preview.")
@click.option("--json", "as_json", is_flag=True, help="Print the measurements as a JSON list.")
def bench_print(runs: int, as_json: bool) -> None:
    """Residence certificate: PDF render time and PNG preview time (p50/p95)."""
    from linli.bench import print as print_bench

    emit(print_bench.run(runs), as_json)


@bench.command("kiosk")
@click.option(
    "--runs",
    type=click.IntRange(min=1),
    default=30,
    show_default=True,
    help="Kiosk visits to time per measurement (after 1 warm-up).",
)
@click.option("--baudrate", default=115200, show_default=True, help="Simulated reader line rate.")
@click.option("--seed", default=20261123, show_default=True, help="Seed of card placement times.")
@click.option("--json", "as_json", is_flag=True, help="Print the measurements as a JSON list.")
def bench_kiosk(runs: int, baudrate: int, seed: int, as_json: bool) -> None:
    """Card placed -> certificate handed to CUPS + receipt sent (simulated hardware, real cupsd).

    Measured three ways: reading right after the card is placed; through the polling IdCardWatcher
    with cards placed at random moments of its cycle; and through the KioskSession controller
    (same watcher and placements), a resident with zero think time touching 打印证明, the residence
    template and 确认打印 the instant each screen appears: card -> identity on screen, card ->
    printed screen, and the preview render on the way. Needs root (it starts a private cupsd and
    installs the linli-sim CUPS backend).
    """
    from linli.bench import kiosk as kiosk_bench

    emit(kiosk_bench.run(runs, baudrate=baudrate, seed=seed), as_json)


@bench.command("sync")
@click.option(
    "--devices",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Devices (store + SyncAgent each) sending at once for sync_ingest.",
)
@click.option(
    "--events",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Events queued per device per round for sync_ingest.",
)
@click.option(
    "--drain-events",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="Events queued offline on the one device of sync_drain.",
)
@click.option(
    "--repeat",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Rounds of ingest and drain (reference and real each round) for p50/p95.",
)
@click.option(
    "--heartbeat-devices",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Devices connected and sending retained up/state for sync_server_rss.",
)
@click.option(
    "--heartbeat-interval",
    type=click.FloatRange(min=0.1),
    default=3.0,
    show_default=True,
    help="Seconds between two heartbeats of one device.",
)
@click.option(
    "--hold",
    "hold_s",
    type=click.FloatRange(min=5),
    default=10.0,
    show_default=True,
    help="Seconds the heartbeat devices stay connected; RSS is sampled in the last 5.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Processes that drive the heartbeat clients (one select loop each).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the measurements as a JSON list.")
def bench_sync(
    *,
    devices: int,
    events: int,
    drain_events: int,
    repeat: int,
    heartbeat_devices: int,
    heartbeat_interval: float,
    hold_s: float,
    workers: int,
    as_json: bool,
) -> None:
    """Device -> Mosquitto -> server: ingest rate, offline drain, server RSS (real broker, TLS).

    Starts a private Mosquitto and `linli server run` processes on a SQLite file database; the
    references (raw paho -> Mosquitto -> paho, QoS 1, same payloads) run in the same run. A run
    that loses or doubles an event fails instead of reporting.
    """
    from linli.bench import sync as sync_bench

    emit(
        sync_bench.run(
            devices=devices,
            events=events,
            drain_events=drain_events,
            repeat=repeat,
            heartbeat_devices=heartbeat_devices,
            heartbeat_interval_s=heartbeat_interval,
            hold_s=hold_s,
            workers=workers,
            progress=lambda message: click.echo(f"linli bench sync: {message}", err=True),
        ),
        as_json,
    )


@bench.command("locker")
@click.option(
    "--scans",
    type=click.IntRange(min=2),
    default=200,
    show_default=True,
    help="Credentials scanned per run (offline, then network down).",
)
@click.option(
    "--backlog",
    type=click.IntRange(min=0),
    default=10_000,
    show_default=True,
    help="Events waiting in the outbox during the network-down run.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the measurements as a JSON list.")
def bench_locker(scans: int, backlog: int, as_json: bool) -> None:
    """Credential scanned -> relay energised on a simulated locker (budget p95 <= 50 ms).

    The real locker daemon with its serial scanner (GM65 emulator, 9600 baud pty) and GPIO locks
    on the simulated RPi.GPIO: offline, then with the broker unreachable and BACKLOG events queued.
    """
    from linli.bench import locker as locker_bench

    emit(locker_bench.run(scans, backlog=backlog), as_json)


@bench.command("dispatch")
@click.option(
    "--pickups",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Pickups waiting in each synthetic city's batch.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=200,
    show_default=True,
    help="Grid workers in each city (a few off shift).",
)
@click.option(
    "--cities",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Seeded cities (seed, seed+1, ...); gaps are reported over them.",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Timed solves per city and solver (after one untimed warm-up).",
)
@click.option("--seed", default=20261123, show_default=True, help="Seed of the first city.")
@click.option("--json", "as_json", is_flag=True, help="Print the measurements as a JSON list.")
def bench_dispatch(
    *, pickups: int, workers: int, cities: int, repeats: int, seed: int, as_json: bool
) -> None:
    """Dispatch engine: solve time and gap to a min-cost-flow reference (budget 0 % in <= 50 ms).

    The production solver (sparse assignment), the OR-Tools min-cost-flow reference and a greedy
    baseline on the same seeded cities; every plan is checked against the hard rules.
    """
    from linli.bench import dispatch as dispatch_bench

    emit(
        dispatch_bench.run(
            pickups=pickups, workers=workers, cities=cities, repeats=repeats, seed=seed
        ),
        as_json,
    )
