"""`linli scan`: QR scanners: decode image files, listen to a serial or camera scanner.

Every command prints JSON lines, one per file or per scan, so a technician can pipe them to ``jq``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import cv2
import numpy as np
from pydantic import ValidationError

from device.config import ScannerSection, load_config
from device.errors import ConfigError, ProtocolError
from device.scanner.camera import CameraScanner, decode_image
from device.scanner.events import ScanEvent
from device.scanner.serial_scanner import SerialScanner


def _emit(record: dict[str, Any]) -> None:
    click.echo(json.dumps(record, ensure_ascii=False))


def _section(config: str | None, **overrides: Any) -> ScannerSection:
    """The ``[scanner]`` section of ``config`` (or the defaults), with command-line overrides."""
    base = load_config(config).scanner if config else ScannerSection()
    values = {**base.model_dump(), **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return ScannerSection.model_validate(values)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"scanner options: {problems}") from err


def _print_events(events: Iterator[ScanEvent], count: int | None) -> None:
    for seen, event in enumerate(events, start=1):
        _emit({"text": event.text, "source": event.source, "at": event.at})
        sys.stdout.flush()
        if count is not None and seen >= count:
            return


config_option = click.option(
    "--config",
    type=click.Path(dir_okay=False),
    help="Device config (TOML) whose [scanner] section gives the defaults.",
)
count_option = click.option(
    "--count",
    type=click.IntRange(min=1),
    help="Stop after this many scans (default: until Ctrl-C).",
)


@click.group()
def scan() -> None:
    """QR scanners: decode image files, listen to a serial or camera scanner."""


@scan.command("image")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--no-fallback", is_flag=True, help="Use zbar only, not OpenCV's second decoder.")
@config_option
def scan_image(files: tuple[str, ...], no_fallback: bool, config: str | None) -> None:
    """Decode the QR codes in image FILES: one JSON line per file, {"file", "text"}.

    "text" is null when no code is found. A missing or unreadable file gives a line with an "error"
    key; the other files are still decoded and the exit status is 1 at the end.
    """
    section = _section(config)
    failed = 0
    for name in files:
        try:
            texts = decode_image(_read_image(name), section.max_length, fallback=not no_fallback)
        except (OSError, ProtocolError) as err:
            failed += 1
            _emit({"file": name, "text": None, "error": str(err)})
            continue
        record: dict[str, Any] = {"file": name, "text": texts[0] if texts else None}
        if len(texts) > 1:
            record["texts"] = texts
        _emit(record)
    if failed:
        # A ClickException (not Exit): linli.cli.main turns it into the exit status.
        raise click.ClickException(f"{failed} of {len(files)} files could not be read")


def _read_image(name: str) -> np.ndarray[Any, np.dtype[np.uint8]]:
    data = Path(name).read_bytes()  # a clear FileNotFoundError / PermissionError message
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise ProtocolError(f"{name}: not an image OpenCV can read")
    return np.asarray(image, dtype=np.uint8)


@scan.command("listen")
@click.option("--port", help="Serial port of the scanner module (default: from --config).")
@click.option("--baudrate", type=int, help="Line rate (GM65 default 9600).")
@click.option("--trigger", is_flag=True, help="Send the scan trigger command once at start.")
@count_option
@config_option
def scan_listen(
    port: str | None, baudrate: int | None, trigger: bool, count: int | None, config: str | None
) -> None:
    """Print scans from a GM65-family serial scanner as JSON lines until Ctrl-C (or --count)."""
    section = _section(config, port=port, baudrate=baudrate, backend="serial")
    with SerialScanner(section) as scanner:
        if trigger:
            scanner.trigger()
        _print_events(scanner.events(), count)


@scan.command("camera")
@click.option("--source", help='Camera index ("0"), device path, video file or stream URL.')
@click.option("--max-fps", type=float, help="Frames decoded per second at most.")
@click.option("--dedupe", "dedupe_s", type=float, help="Report the same code once per this many s.")
@count_option
@config_option
def scan_camera(
    source: str | None,
    max_fps: float | None,
    dedupe_s: float | None,
    count: int | None,
    config: str | None,
) -> None:
    """Print scans from a camera as JSON lines until Ctrl-C (or --count)."""
    section = _section(
        config, camera_source=source, max_fps=max_fps, dedupe_s=dedupe_s, backend="camera"
    )
    with CameraScanner(section) as scanner:
        _print_events(scanner.events(), count)
