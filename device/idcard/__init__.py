"""Resident ID-card (二代身份证) reader over a serial SAM module: codec, transport, watcher.

``codec`` is pure (frames, status codes, the text block); ``reader`` is the pyserial transport;
``watcher`` is the polling loop a daemon runs. See docs/idcard.md.
"""

from __future__ import annotations

from device.idcard.codec import Command, FrameScan, Reply, parse_read_reply, scan_frame
from device.idcard.errors import (
    CardReadError,
    FrameError,
    NoCardError,
    SamStatusError,
    UnknownStatusError,
)
from device.idcard.identity import LONG_TERM, Identity, id_check_digit, id_number_problems
from device.idcard.reader import SamReader
from device.idcard.watcher import IdCardWatcher

__all__ = [
    "LONG_TERM",
    "CardReadError",
    "Command",
    "FrameError",
    "FrameScan",
    "IdCardWatcher",
    "Identity",
    "NoCardError",
    "Reply",
    "SamReader",
    "SamStatusError",
    "UnknownStatusError",
    "id_check_digit",
    "id_number_problems",
    "parse_read_reply",
    "scan_frame",
]
