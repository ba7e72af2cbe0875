"""Helpers shared by the scanner tests."""

from __future__ import annotations

import numpy as np
import segno


def qr_image(text: str, scale: int = 4) -> np.ndarray:
    """A clean grayscale QR image of ``text`` as segno draws it (never Micro QR)."""
    modules = np.array([list(row) for row in segno.make(text, micro=False).matrix], np.uint8)
    modules = np.pad(modules, 4)
    return np.kron(np.where(modules == 1, 0, 255), np.ones((scale, scale))).astype(np.uint8)
