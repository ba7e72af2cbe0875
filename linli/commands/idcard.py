"""`linli idcard`: ID-card (二代身份证) reader: read cards and decode SAM frames."""

from __future__ import annotations

import click


@click.group()
def idcard() -> None:
    """ID-card (二代身份证) reader: read cards and decode SAM frames."""
