"""`linli sim`: the hardware simulator — emulated peripherals on ptys, and the demo."""

from __future__ import annotations

import contextlib
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import click

from device.errors import LinliError
from device.inputs import InputEvent, InputWatch
from hardware_sim.demo import run_visits
from hardware_sim.escpos.server import EscposTcpPrinter
from hardware_sim.lockboard import LockBoardBus
from hardware_sim.printing_kiosk import PrintingKiosk
from hardware_sim.world import World
from linli.commands.sim_site import run, scenarios, site
from linli.commands.watch import EventPrinter


@click.group()
def sim() -> None:
    """Hardware simulator: the virtual site, scenarios, emulated peripherals, the demo."""


sim.add_command(site)
sim.add_command(run)
sim.add_command(scenarios)


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
    help="Where the pty links, device.toml and printed output go (default: a temporary directory).",
)
@click.option(
    "--print/--no-print",
    "printing",
    default=True,
    show_default=True,
    help="Issue a residence certificate for each card (private cupsd + cups-pdf, receipt "
    "emulator; needs root).",
)
def demo(
    duration: float | None,
    visits: int | None,
    interval: float,
    workdir: Path | None,
    printing: bool,
) -> None:
    """Run the simulated kiosk: ID-card reader, QR scanner and printers, driven by the real drivers.

    Residents arrive every --interval seconds: a sample card is placed on the reader and lifted,
    and a code is shown to the scanner. Each card read and code scanned is printed as a JSON line
    (names and ID numbers masked). With --print (the default) each card read also issues a
    residence certificate: the A4 page comes out of a real cupsd's cups-pdf queue as
    WORKDIR/kiosk/printed/SERIAL.pdf and the receipt as WORKDIR/kiosk/receipts/SERIAL.png.
    Ctrl-C stops it.
    """
    stop = threading.Event()
    with World(workdir) as world, contextlib.ExitStack() as stack:
        config_path = world.write_config()
        click.echo(f"simulated ID-card reader on {world.reader.path}", err=True)
        click.echo(f"simulated QR scanner on {world.scanner.path}", err=True)
        click.echo(f"device configuration: {config_path}", err=True)
        printer = EventPrinter()
        kiosk = _start_printing(world.workdir / "kiosk") if printing else None
        if kiosk is not None:
            stack.callback(kiosk.close)

        def on_event(event: InputEvent) -> None:
            printer(event)
            if kiosk is not None and event.idcard is not None:
                kiosk.on_card(event.idcard)

        with InputWatch(world.device_config(), on_event):
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
        if kiosk is not None:
            kiosk.close()  # waits for the pages still printing
            kept = "" if workdir is not None else " (temporary: use --workdir to keep them)"
            click.echo(
                f"certificates issued: {kiosk.issued}, A4 pages out: {kiosk.pages_out}, "
                f"in {kiosk.printed_dir} and {kiosk.receipts_dir}{kept}",
                err=True,
            )


def _start_printing(directory: Path) -> PrintingKiosk | None:
    """The printers of the simulated kiosk, or None (with the reason) when they cannot start."""

    def report(line: dict[str, Any]) -> None:
        click.echo(json.dumps(line, ensure_ascii=False))

    try:
        kiosk = PrintingKiosk(directory, report=report).start()
    except (LinliError, OSError) as err:
        click.echo(f"printing disabled: {err} (run as root with cups installed, or --no-print)",
                   err=True)  # fmt: skip
        return None
    click.echo(f"A4 printer: cups-pdf queue {kiosk.queue.name if kiosk.queue else ''} on "
               f"{kiosk.cupsd.socket}; receipt printer on 127.0.0.1:{kiosk.receipt_printer.port}",
               err=True)  # fmt: skip
    return kiosk


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
@click.option("--printer-port", type=click.IntRange(0, 65535), default=9100, show_default=True,
              help="Serve the ESC/POS receipt printer on this TCP port (0: do not).")  # fmt: skip
@click.option("--locks", type=click.IntRange(0, 24), default=4, show_default=True,
              help="Locks of the 8A lock board served on DIR/locks (0: no board).")  # fmt: skip
def serve(  # noqa: PLR0917  # one parameter per click option
    workdir: Path,
    auto: bool,
    interval: float,
    duration: float | None,
    transcript: Path | None,
    printer_port: int,
    locks: int,
) -> None:
    """Serve the emulated reader, scanner and lock board on ptys and the receipt printer on TCP.

    Point `linli watch --config DIR/device.toml`, `linli idcard read --port DIR/idcard`, minicom,
    `linli escpos status --host 127.0.0.1 --port 9100` or the real drivers on another machine at
    them. With --auto, residents arrive on their own. Each page the printer cuts is reported.
    """
    stop = threading.Event()
    with World(workdir) as world, contextlib.ExitStack() as stack:
        config_path = world.write_config()
        click.echo(f"idcard  {world.reader.path}")
        click.echo(f"scanner {world.scanner.path}")
        if locks:
            bus = LockBoardBus([1], locks, link=world.workdir / "locks")
            bus.start()
            stack.callback(bus.close)
            click.echo(f"locks   {bus.path} (8A board at address 1, {locks} locks)")
        if printer_port:
            try:
                printer = EscposTcpPrinter(host="0.0.0.0", port=printer_port).start()  # noqa: S104
            except OSError as err:
                raise click.ClickException(
                    f"cannot serve the printer on TCP {printer_port}: {err.strerror} "
                    "(another printer emulator? try --printer-port 0 or another port)"
                ) from err
            stack.callback(printer.close)
            click.echo(f"printer tcp://0.0.0.0:{printer.port} (ESC/POS)")
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
