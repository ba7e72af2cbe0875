"""`linli card`: PC/SC card reader: list readers, wait for a card, read its number."""

from __future__ import annotations

import click


@click.group()
def card() -> None:
    """PC/SC card reader: list readers, wait for a card, read its number."""
