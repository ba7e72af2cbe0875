"""Line breaking for mixed Chinese/ASCII text on a certificate.

Chinese breaks between any two characters, but an ID number or a house number must not be split
across lines, and closing punctuation (，。）) must not start a line (the usual 避头 rule), so it
hangs at the end of the previous line instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# Runs of ASCII letters/digits (and the few symbols inside numbers) stay together; anything else
# is its own token.
_TOKEN = re.compile(r"[A-Za-z0-9.\-/#]+|\s+|.", re.DOTALL)
NO_LINE_START = frozenset("，。、；：？！）》」』”’%·…,.;:?!)]")


def tokens(text: str) -> list[str]:
    """Breakable units of ``text``."""
    return _TOKEN.findall(text)


def wrap_text(text: str, width_of: Callable[[str], float], width: float) -> list[str]:
    """Break ``text`` into lines no wider than ``width`` (same unit as ``width_of``).

    A token wider than a whole line is split by character; closing punctuation may hang past
    ``width`` by one character.
    """
    lines: list[str] = []
    current = ""
    for token in tokens(text):
        if width_of(current + token) <= width or (current and token in NO_LINE_START):
            current += token
            continue
        if token.isspace():
            lines.append(current.rstrip())
            current = ""
            continue
        if current.strip():
            lines.append(current.rstrip())
            current = ""
        if width_of(current + token) <= width:
            current += token
            continue
        # A single unbreakable run longer than the line: split it by character.
        for char in token:
            if current.strip() and width_of(current + char) > width:
                lines.append(current)
                current = ""
            current += char
    if current.strip():
        lines.append(current.rstrip())
    return lines
