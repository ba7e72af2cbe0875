"""`linli sim`: the hardware simulator — emulated peripherals on ptys, and the demo."""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import click

from device.inputs import InputWatch
from hardware_sim.demo import run_visits
from hardware_sim.world import World
from linli.commands.watch import EventPrinter


@click.group()
def sim() -> None:
    """Hardware simulator: serve emulated peripherals and run the demo."""


def _wait(stop: threading.Event, duration: float | None) -> None:
    try:
        if duration is None:
            while not stop.wait(0.2):
                pass
        else:
            stop.wait(duration)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()


@sim.command()
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@click.option("--visits", type=int, default=None, help="Stop after this many residents.")
@click.option("--interval", type=float, default=3.0, show_default=True, help="Seconds between.")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the pty links and device.toml go (default: a temporary directory).",
)
def demo(duration: float | None, visits: int | None, interval: float, workdir: Path | None) -> None:
    """Run the simulated ID-card reader and QR scanner, driven by the real drivers.

    Residents arrive every --interval seconds: a sample card is placed on the reader and lifted,
    and a code is shown to the scanner. Each card read and code scanned is printed as a JSON line
    (names and ID numbers masked). Ctrl-C stops it.
    """
    stop = threading.Event()
    with World(workdir) as world:
        config_path = world.write_config()
        click.echo(f"simulated ID-card reader on {world.reader.path}", err=True)
        click.echo(f"simulated QR scanner on {world.scanner.path}", err=True)
        click.echo(f"device configuration: {config_path}", err=True)
        printer = EventPrinter()
        with InputWatch(world.device_config(), printer):
            script = threading.Thread(
                target=run_visits,
                args=(world, stop),
                kwargs={"interval_s": interval, "visits": visits},
                daemon=True,
            )
            script.start()
            if visits is not None and duration is None:
                # Wait for the script, then let the last scan arrive.
                while script.is_alive() and not stop.is_set():
                    script.join(0.2)
                time.sleep(1.0)
            else:
                _wait(stop, duration)
            stop.set()
            script.join(timeout=5)
        counts = printer.counts
        click.echo(
            f"cards read: {counts.get('idcard', 0)}, codes scanned: {counts.get('scan', 0)}",
            err=True,
        )


@sim.command()
@click.option(
    "--dir",
    "workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(tempfile.gettempdir()) / "linli-sim",
    show_default=True,
    help="Where the stable pty links (idcard, scanner) and device.toml are made.",
)
@click.option("--auto", is_flag=True, help="Place sample cards and show codes every --interval s.")
@click.option("--interval", type=float, default=3.0, show_default=True, help="Seconds between.")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@click.option("--transcript", type=click.Path(path_type=Path), help="Write the byte transcripts.")
def serve(
    workdir: Path, auto: bool, interval: float, duration: float | None, transcript: Path | None
) -> None:
    """Serve the emulated reader and scanner on ptys for other tools or another process.

    Point `linli watch --config DIR/device.toml`, `linli idcard read --port DIR/idcard`, minicom or
    the real drivers at them. With --auto, residents arrive on their own.
    """
    stop = threading.Event()
    with World(workdir) as world:
        config_path = world.write_config()
        click.echo(f"idcard  {world.reader.path}")
        click.echo(f"scanner {world.scanner.path}")
        click.echo(f"config  {config_path}")
        if auto:
            threading.Thread(
                target=run_visits, args=(world, stop), kwargs={"interval_s": interval}, daemon=True
            ).start()
        _wait(stop, duration)
        if transcript is not None:
            transcript.write_text(
                "# idcard\n"
                + world.reader.transcript_text()
                + "# scanner\n"
                + world.scanner.transcript_text(),
                encoding="utf-8",
            )
