"""`linli kiosk`: the community kiosk (社区事务一体机) daemon with its touch screen."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


_SOCKET_HELP = (
    "The kiosk daemon's control socket: its [kiosk] control_socket (root only: use sudo)."
)


def _control_reply(call: Callable[[], dict[str, Any]]) -> None:
    """Print the daemon's JSON reply; exit 1 when it says ``ok`` false, 2 when the socket cannot
    be reached (one line on stderr)."""
    from kiosk_ui.control import ControlError

    try:
        reply = call()
    except ControlError as err:
        click.echo(f"error: {err}", err=True)
        raise click.exceptions.Exit(2) from None
    click.echo(json.dumps(reply, ensure_ascii=False))
    if reply.get("ok") is not True:
        raise click.exceptions.Exit(1)


_socket_option = click.option(
    "--socket",
    "socket_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help=_SOCKET_HELP,
)


@kiosk.command("touch")
@_socket_option
@click.option(
    "--arg",
    "args",
    multiple=True,
    metavar="KEY=VALUE",
    help="An argument of the action, e.g. --arg name=residence for the template action "
    "(repeat for more).",
)
@click.argument("action")
def touch(*, socket_path: Path, args: tuple[str, ...], action: str) -> None:
    """Press the button ACTION (an action id: certificate, template, confirm, end...) on the
    kiosk's current screen, as a resident would, and print the reply with the new screen (ids
    only, no personal text). Exit 1 when the screen does not offer ACTION, 2 when the daemon
    cannot be reached."""
    from kiosk_ui.control import ControlClient

    kwargs: dict[str, str] = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{arg!r} is not KEY=VALUE", param_hint="--arg")
        kwargs[key] = value
    client = ControlClient(socket_path)
    _control_reply(lambda: client.touch(action, **kwargs))


@kiosk.command("screen")
@_socket_option
@click.option(
    "--wait",
    "wait_for",
    metavar="SCREEN_ID",
    default=None,
    help="Wait until this screen (e.g. printed, idle, menu) is shown; exit 1 if it is not "
    "within --timeout.",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(0, 600),
    default=20.0,
    show_default=True,
    help="Seconds --wait waits.",
)
def screen(*, socket_path: Path, wait_for: str | None, timeout_s: float) -> None:
    """Print which screen the kiosk shows (id, state, action ids, busy, revision) and the status
    bar's online and card-reader flags, as JSON; no personal text. Exit 2 when the daemon cannot
    be reached."""
    from kiosk_ui.control import ControlClient

    client = ControlClient(socket_path)
    if wait_for is None:
        _control_reply(client.screen)
    else:
        wanted = wait_for
        _control_reply(lambda: client.wait(wanted, timeout_s))
