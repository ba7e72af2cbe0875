"""Mainland mobile numbers: the one definition the server's forms, imports and notifications use.

A resident's or worker's phone is accepted as 11 digits starting 13-19, optionally after +86,
0086 or 86, with spaces, hyphens and brackets allowed between digits; it is stored as the 11
digits. Shown to staff or written to a log it is masked, ``138****5678``.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["MOBILE_PATTERN", "mask_mobile", "normalize_mobile"]

MOBILE_PATTERN: Final = re.compile(r"^(?:\+86|0086|\+?86)?(1[3-9]\d{9})$")
"""A mainland China mobile number: 11 digits starting 13-19, optionally after +86/0086/86."""
_SEPARATORS: Final = re.compile(r"[\s\-()（）]")


def normalize_mobile(value: str) -> str | None:
    """``+86 138-1234-5678`` -> ``13812345678``; None for anything that is not a mainland mobile."""
    match = MOBILE_PATTERN.match(_SEPARATORS.sub("", value))
    return match.group(1) if match else None


def mask_mobile(mobile: str) -> str:
    """``13812345678`` -> ``138****5678`` (give it a number :func:`normalize_mobile` accepted)."""
    return f"{mobile[:3]}****{mobile[-4:]}"
