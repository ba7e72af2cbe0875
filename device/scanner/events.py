"""Scan events shared by every QR scanner, and the one validator every payload passes first.

A payload is delivered only if it is valid UTF-8, non-empty, free of control characters (Unicode
category Cc) and at most ``max_length`` bytes long. A refused payload raises
:class:`ScanRejectedError` and is logged with its reason and length only: a payload may be a
personal credential.
"""

from __future__ import annotations

import logging
import unicodedata
from dataclasses import dataclass
from typing import Literal

from device.errors import ProtocolError

log = logging.getLogger(__name__)

RejectReason = Literal["empty", "not_utf8", "control_character", "too_long", "bad_frame", "stalled"]


@dataclass(frozen=True)
class ScanEvent:
    """One code read by a scanner: its text, which scanner (``source``) and when (wall time, s)."""

    text: str
    source: str
    at: float

    def __repr__(self) -> str:
        # The text may be a credential: keep it out of reprs that end up in logs and tracebacks.
        return f"ScanEvent(source={self.source!r}, at={self.at!r}, length={len(self.text)})"


class ScanRejectedError(ProtocolError):
    """A scanned payload was refused; ``reason`` says why, ``length`` how long it was (bytes)."""

    def __init__(self, reason: RejectReason, length: int, detail: str = "") -> None:
        self.reason: RejectReason = reason
        self.length = length
        message = f"scan rejected: {reason} ({length} bytes)"
        super().__init__(f"{message}: {detail}" if detail else message)


def strip_framing(payload: bytes) -> bytes:
    """Drop the CR / LF / CRLF that terminate a line on the wire (framing, not content)."""
    return payload.rstrip(b"\r\n")


def repair_mojibake(text: str) -> str:
    """Undo zbar's wrong charset guess: UTF-8 bytes read as Shift-JIS (or Latin-1) and re-encoded.

    zbar guesses the charset of byte-mode QR codes without ECI; Chinese UTF-8 text is sometimes
    taken for Shift-JIS and comes back as Japanese-looking mojibake. If re-encoding the text with
    the wrong charset gives valid UTF-8 with non-ASCII characters, that was the original text.
    """
    if text.isascii():
        return text
    for wrong in ("shift_jis", "cp932", "latin-1"):
        try:
            original = text.encode(wrong).decode("utf-8")
        except UnicodeError:
            continue
        if original != text and not original.isascii():
            return original
    return text


def validate_text(text: str, max_length: int) -> str:
    """Check decoded text; return it unchanged or raise :class:`ScanRejectedError`."""
    size = len(text.encode("utf-8", errors="surrogatepass"))
    if not text:
        raise ScanRejectedError("empty", 0)
    if size > max_length:
        raise ScanRejectedError("too_long", size, f"limit is {max_length} bytes")
    for index, char in enumerate(text):
        if unicodedata.category(char) in ("Cc", "Cs"):
            raise ScanRejectedError("control_character", size, f"U+{ord(char):04X} at {index}")
    return text


def validate_payload(payload: bytes, max_length: int) -> str:
    """Decode and check a raw payload (a trailing CR/LF is framing and stripped first)."""
    body = strip_framing(payload)
    if len(body) > max_length:
        # Checked before decoding so an enormous payload costs nothing more.
        raise ScanRejectedError("too_long", len(body), f"limit is {max_length} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ScanRejectedError("not_utf8", len(body), f"invalid byte at {err.start}") from err
    return validate_text(text, max_length)


def log_rejection(error: ScanRejectedError, source: str) -> None:
    """Log a refusal with its reason and length only, never the payload."""
    log.warning("%s: scan rejected (%s, %d bytes)", source, error.reason, error.length)


def make_event(payload: bytes | str, source: str, at: float, max_length: int) -> ScanEvent:
    """Validate ``payload`` and wrap it in a :class:`ScanEvent`; a refusal is logged and raised."""
    try:
        if isinstance(payload, bytes):
            text = validate_payload(payload, max_length)
        else:
            text = validate_text(payload, max_length)
    except ScanRejectedError as err:
        log_rejection(err, source)
        raise
    return ScanEvent(text=text, source=source, at=at)
