"""Masking of personal data before it reaches a log line (DESIGN.md section 4, house rule 3).

Callers mask explicitly with :func:`mask_id_number` / :func:`mask_name`;
:class:`RedactingFilter` is a second line of defence that scrubs anything shaped like an ID
number from every log record.
"""

from __future__ import annotations

import logging
import re

_ID_NUMBER = re.compile(r"(?<!\d)(\d{6})(\d{8})(\d{3}[\dXx])(?![\dXx])")


def mask_id_number(id_number: str) -> str:
    """``11010519491231002X`` -> ``110105********002X`` style: region and last four only."""
    if len(id_number) <= 8:
        return "*" * len(id_number)
    return id_number[:6] + "*" * (len(id_number) - 10) + id_number[-4:]


def mask_name(name: str) -> str:
    """Keep the family name's first character only: ``张三丰`` -> ``张**``."""
    if not name:
        return ""
    return name[0] + "*" * (len(name) - 1)


def redact(text: str) -> str:
    """Mask every 18-character ID number found in free text."""
    return _ID_NUMBER.sub(lambda m: m.group(1) + "********" + m.group(3), text)


class RedactingFilter(logging.Filter):
    """Rewrites records so that nothing shaped like an ID number is emitted."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg = cleaned
            record.args = None
        return True


def install_redaction(logger: logging.Logger | None = None) -> None:
    """Attach the redacting filter to every handler of ``logger`` (root by default)."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
