"""`linli sim`: Hardware simulator: serve emulated peripherals and run the demo."""

from __future__ import annotations

import click


@click.group()
def sim() -> None:
    """Hardware simulator: serve emulated peripherals and run the demo."""
