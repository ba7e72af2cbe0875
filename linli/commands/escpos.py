"""`linli escpos`: the receipt printer — render ESC/POS streams, serve the emulator, ask status."""

from __future__ import annotations

import json
import tempfile
import threading
from pathlib import Path

import click


def _page_paths(out: Path, count: int) -> list[Path]:
    """One page keeps the name; several become OUT-1.png, OUT-2.png, ..."""
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{i}{out.suffix or '.png'}") for i in range(1, count + 1)]


@click.group()
def escpos() -> None:
    """ESC/POS receipt printer: render byte streams to PNG, run the emulator, query status."""


@escpos.command("render")
@click.argument("stream", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--png", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output PNG; several pages (cuts) become OUT-1.png, OUT-2.png, ...")  # fmt: skip
@click.option("--paper", type=click.Choice(["80", "58"]), default="80", show_default=True,
              help="Paper width in mm (576 or 384 dots).")  # fmt: skip
def render(stream: Path, out: Path, paper: str) -> None:
    """Render the ESC/POS byte stream in STREAM (for example from python-escpos) as PNG pages.

    Prints one JSON object: the files written and the text of each page. A malformed stream
    exits with status 1 and the offset of the bad command.
    """
    from hardware_sim.escpos.interpreter import interpret
    from hardware_sim.escpos.render import render_pages

    document = interpret(stream.read_bytes())
    pages = document.printed_pages
    if not pages:
        raise click.ClickException(f"{stream}: nothing printed in this stream")
    images = render_pages(pages, int(paper))
    paths = _page_paths(out, len(images))
    for image, path in zip(images, paths, strict=True):
        image.save(path)
    summary = {"files": [str(p) for p in paths], "pages": [p.lines for p in pages]}
    click.echo(json.dumps(summary, ensure_ascii=False))


@escpos.command("serve")
@click.option("--port", type=click.IntRange(0, 65535), default=9100, show_default=True,
              help="TCP port (0: any free port).")  # fmt: skip
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--pty", "use_pty", is_flag=True, help="Serve on a pty (serial printer) instead.")
@click.option("--link", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --pty: a stable symlink to the pty (like a udev rule).")  # fmt: skip
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write each cut page as PNG here (default: a temporary directory).")  # fmt: skip
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
def serve(  # noqa: PLR0917  # one parameter per click option
    port: int, host: str, use_pty: bool, link: Path | None, out: Path | None,
    duration: float | None,
) -> None:  # fmt: skip
    """Run the emulated receipt printer on TCP (default port 9100) or a pty until Ctrl-C.

    Each cut page is written as page-N.png to --out and announced on stdout as a JSON line.
    """
    from hardware_sim.escpos.render import render_page
    from hardware_sim.escpos.server import EscposPrinterModel, EscposPtyPrinter, EscposTcpPrinter

    out = out or Path(tempfile.mkdtemp(prefix="linli-escpos-"))
    out.mkdir(parents=True, exist_ok=True)
    front: EscposTcpPrinter | EscposPtyPrinter
    if use_pty:
        front = EscposPtyPrinter(link=link).start()
        model: EscposPrinterModel = front.model
        click.echo(f"emulated receipt printer on {front.path}", err=True)
    else:
        front = model = EscposTcpPrinter(host, port).start()
        click.echo(f"emulated receipt printer on {host}:{model.port}", err=True)
    click.echo(f"pages go to {out}", err=True)
    stop, written = threading.Event(), 0
    try:
        waited = 0.0
        while not stop.wait(0.2) and (duration is None or waited < duration):
            waited += 0.2
            with model.lock:
                cut = model.cut_pages
                for page in cut[written:]:
                    written += 1
                    path = out / f"page-{written}.png"
                    render_page(page, model.paper_width_mm).save(path)
                    click.echo(json.dumps({"page": str(path), "lines": page.lines},
                                          ensure_ascii=False))  # fmt: skip
    except KeyboardInterrupt:
        pass
    finally:
        front.close()


@escpos.command("status")
@click.option("--host", default=None, help="Network printer address (backend network).")
@click.option("--port", type=click.IntRange(1, 65535), default=9100, show_default=True)
@click.option("--serial", "serial_port", default=None, help="Serial port (backend serial).")
@click.option("--baudrate", type=int, default=9600, show_default=True)
@click.option("--timeout", type=float, default=3.0, show_default=True, help="Seconds per reply.")
def status(host: str | None, port: int, serial_port: str | None, baudrate: int,
           timeout: float) -> None:  # fmt: skip
    """Ask a receipt printer for its real-time status (DLE EOT 1, 2, 4) and print it as JSON.

    Exit status 1 when the printer cannot print (paper out, cover open, offline, unreachable).
    """
    from device.atrest import DeviceKey
    from device.config import ReceiptPrinterSection
    from device.escpos.printer import ReceiptPrinter
    from device.escpos.status import problem

    if (host is None) == (serial_port is None):
        raise click.UsageError("give exactly one of --host or --serial")
    if host is not None:
        section = ReceiptPrinterSection(backend="network", host=host, tcp_port=port,
                                        timeout_s=timeout)  # fmt: skip
    else:
        section = ReceiptPrinterSection(backend="serial", port=str(serial_port),
                                        baudrate=baudrate, timeout_s=timeout)  # fmt: skip
    # Only a status query: a throwaway spool, sealed with a throwaway key.
    with (
        tempfile.TemporaryDirectory() as spool,
        ReceiptPrinter(section, Path(spool), key=DeviceKey.generate()) as printer,
    ):
        report = printer.status()
    click.echo(json.dumps(report.to_dict(), ensure_ascii=False))
    if problem(report) is not None:
        raise SystemExit(1)
