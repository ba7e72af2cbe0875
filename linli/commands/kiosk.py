"""`linli kiosk`: the community kiosk (社区事务一体机) daemon with its touch screen."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import click

from device.config import load_config


@click.group()
def kiosk() -> None:
    """Community kiosk (社区事务一体机): ID card, certificates, status queries, notices."""


@kiosk.command("run")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Device configuration (TOML) of a kiosk: [device], [idcard], [a4printer], [receipt], "
    "[certificate], [scanner], [sync], [kiosk].",
)
@click.option(
    "--headless", is_flag=True, help="Run the daemon without the touch screen (no Kivy window)."
)
@click.option(
    "--duration", type=float, default=None, help="Stop after this many seconds (tests, demos)."
)
def run(*, config_path: Path, headless: bool, duration: float | None) -> None:
    """Run the kiosk until SIGTERM, Ctrl-C or the window closes: card reader, printers, scanner,
    sync, and the Kivy touch screen (full screen per [kiosk] fullscreen)."""
    from kiosk_ui.certificates.fonts import find_cjk_font
    from kiosk_ui.daemon import KioskDaemon

    config = load_config(config_path)
    font = str(find_cjk_font(config.certificate.font))  # fail now, not on the first screen
    kms = os.environ.get("SDL_VIDEODRIVER") == "kmsdrm"  # Kivy straight on the Pi's display
    display = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    if not headless and not (kms or display):
        raise click.UsageError(
            "no display (no DISPLAY, SDL_VIDEODRIVER is not kmsdrm): use --headless, run under X, "
            "or set SDL_VIDEODRIVER=kmsdrm (docs/first-boot.md)"
        )
    daemon = KioskDaemon(config)
    link = f"sync to {config.sync.host}" if config.sync.host else "offline (no sync.host)"
    click.echo(f"linli kiosk: {config.device.id}, {link}", err=True)
    if headless:
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_args: stop.set())
        if duration is not None:
            threading.Timer(duration, stop.set).start()
        try:
            daemon.run(stop)
        except KeyboardInterrupt:
            daemon.stop()
    else:
        os.environ.setdefault("KIVY_NO_ARGS", "1")  # our options, not Kivy's
        from kivy.clock import Clock

        from kiosk_ui.app import KioskApp

        app = KioskApp(daemon, font_name=font)
        signal.signal(signal.SIGTERM, lambda *_args: Clock.schedule_once(lambda _dt: app.stop()))
        if duration is not None:
            Clock.schedule_once(lambda _dt: app.stop(), duration)
        try:
            app.run()
        finally:
            daemon.stop()
    click.echo("linli kiosk: stopped", err=True)
