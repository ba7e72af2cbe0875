"""`linli watch --config FILE`: run the configured input peripherals and print what they report."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import click

from device.config import load_config
from device.inputs import InputEvent, InputWatch
from device.privacy import mask_id_number, mask_name


def describe(event: InputEvent, show_personal: bool = False) -> dict[str, Any]:
    """A JSON-able line for the terminal; names and ID numbers masked unless ``show_personal``."""
    line: dict[str, Any] = {"event": event.kind, "at": round(event.at, 3)}
    if event.idcard is not None:
        card = event.idcard
        line.update(
            name=card.name if show_personal else mask_name(card.name),
            id_number=card.id_number if show_personal else mask_id_number(card.id_number),
            id_number_valid=card.id_number_valid,
        )
    if event.scan is not None:
        line.update(source=event.scan.source, text=event.scan.text)
    if event.card is not None:
        line.update(change=event.card.kind, reader=event.card.reader)
        if event.card.record is not None:
            line.update(event.card.record.as_dict(mask=not show_personal))
        if event.card.error is not None:
            line.update(error=event.card.error)
    return line


class EventPrinter:
    """Prints events as JSON lines and counts them, so a caller can wait for a number of them."""

    def __init__(self, show_personal: bool = False) -> None:
        self.show_personal = show_personal
        self.counts: dict[str, int] = {}
        self.changed = threading.Condition()

    def __call__(self, event: InputEvent) -> None:
        click.echo(json.dumps(describe(event, self.show_personal), ensure_ascii=False))
        with self.changed:
            self.counts[event.kind] = self.counts.get(event.kind, 0) + 1
            self.changed.notify_all()


@click.command()
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Device configuration (TOML) naming the peripherals; see docs/config.md.",
)
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@click.option(
    "--show-personal",
    is_flag=True,
    help="Print names and ID numbers in clear (terminal only; never logged).",
)
def watch(config_path: Path, duration: float | None, show_personal: bool) -> None:
    """Watch the configured ID-card reader, QR scanner and card reader; print events as JSON.

    Runs until Ctrl-C (or --duration). A peripheral that is missing, stalls or sends garbage is
    reported in the log and reopened; it does not stop the watch.
    """
    config = load_config(config_path)
    printer = EventPrinter(show_personal)
    with InputWatch(config, printer):
        deadline = None if duration is None else time.monotonic() + duration
        try:
            while deadline is None or time.monotonic() < deadline:
                time.sleep(0.1)
        except KeyboardInterrupt:
            pass
