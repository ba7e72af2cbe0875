"""Masking of notification recipients before they reach a log line or a stored error.

The same style as the device's ``device/privacy.py`` (which the server may not import): keep just
enough to tell two recipients apart in a log, e.g. ``138****5678`` for a phone number.
"""

from __future__ import annotations

import re

from sync_server.phones import MOBILE_PATTERN, mask_mobile, normalize_mobile

__all__ = ["MOBILE_PATTERN", "mask_recipient", "normalize_mobile", "scrub"]

_MOBILE_IN_TEXT = re.compile(r"(?<!\d)(?:\+?86)?(1[3-9]\d)(\d{4})(\d{4})(?!\d)")


def mask_recipient(recipient: str) -> str:
    """``13812345678`` -> ``138****5678``; an openid or other address keeps its first and last two
    characters (``oA***yZ``); anything of six characters or fewer is all stars."""
    mobile = normalize_mobile(recipient)
    if mobile is not None:
        return mask_mobile(mobile)
    if len(recipient) <= 6:
        return "*" * len(recipient)
    return f"{recipient[:2]}***{recipient[-2:]}"


def scrub(text: str, recipient: str | None = None) -> str:
    """``text`` with ``recipient`` and anything shaped like a mobile number masked: for reasons
    built from what an upstream answered, which may echo the number it refused."""
    if recipient:
        text = text.replace(recipient, mask_recipient(recipient))
        mobile = normalize_mobile(recipient)
        if mobile is not None:
            text = text.replace(mobile, mask_recipient(mobile))
    return _MOBILE_IN_TEXT.sub(lambda m: f"{m.group(1)}****{m.group(3)}", text)
