"""`linli scan`: QR scanners: decode image files, listen to a serial or camera scanner."""

from __future__ import annotations

import click


@click.group()
def scan() -> None:
    """QR scanners: decode image files, listen to a serial or camera scanner."""
