"""Durable spool of A4 jobs not yet confirmed printed: ``KEY.pdf`` + ``KEY.json`` per job.

A job leaves the spool only when CUPS says it completed; corrupt metadata files are moved to
``quarantine/`` and reported, never crash the kiosk.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from device.errors import ProtocolError

log = logging.getLogger(__name__)


@dataclass
class SpoolEntry:
    """What the spool remembers about one job."""

    key: str
    title: str
    created: float
    attempts: int = 0
    last_error: str | None = None
    cups_job_id: int | None = None


def parse_metadata(text: str) -> SpoolEntry:
    """Parse a ``KEY.json`` file; a ProtocolError for anything malformed."""
    try:
        raw: Any = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        raise ProtocolError(f"spool metadata is not JSON: {err}") from err
    if not isinstance(raw, dict):
        raise ProtocolError("spool metadata is not a JSON object")
    key, title, created = raw.get("key"), raw.get("title"), raw.get("created")
    attempts, last_error, job_id = (
        raw.get("attempts", 0),
        raw.get("last_error"),
        raw.get("cups_job_id"),
    )
    if not isinstance(key, str) or not key.isalnum():
        raise ProtocolError("spool metadata: bad key")
    if not isinstance(title, str):
        raise ProtocolError("spool metadata: bad title")
    if isinstance(created, bool) or not isinstance(created, int | float):
        raise ProtocolError("spool metadata: bad created")
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 0:
        raise ProtocolError("spool metadata: bad attempts")
    if last_error is not None and not isinstance(last_error, str):
        raise ProtocolError("spool metadata: bad last_error")
    if job_id is not None and (isinstance(job_id, bool) or not isinstance(job_id, int)):
        raise ProtocolError("spool metadata: bad cups_job_id")
    return SpoolEntry(key, title, float(created), attempts, last_error, job_id)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class Spool:
    """The directory of kept jobs (``data_dir/spool/a4``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def add(self, pdf: bytes, title: str, now: float) -> SpoolEntry:
        """Store a new job before it is submitted, so a crash cannot lose it."""
        entry = SpoolEntry(key=uuid.uuid4().hex, title=title, created=now)
        _atomic_write(self.directory / f"{entry.key}.pdf", pdf)
        self.save(entry)
        return entry

    def save(self, entry: SpoolEntry) -> None:
        data = json.dumps(asdict(entry), ensure_ascii=False).encode("utf-8")
        _atomic_write(self.directory / f"{entry.key}.json", data)

    def pdf_path(self, key: str) -> Path:
        return self.directory / f"{key}.pdf"

    def load(self, key: str) -> SpoolEntry:
        """One entry; KeyError if unknown, ProtocolError (and quarantine) if corrupt."""
        path = self.directory / f"{key}.json"
        if not key.isalnum() or not path.exists():
            raise KeyError(key)
        try:
            return parse_metadata(path.read_text(encoding="utf-8", errors="replace"))
        except ProtocolError:
            self._quarantine(key)
            raise

    def entries(self) -> list[SpoolEntry]:
        """Kept jobs, oldest first; corrupt ones are quarantined and logged."""
        found: list[SpoolEntry] = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                found.append(self.load(path.stem))
            except (KeyError, ProtocolError) as err:
                log.warning("A4 spool: %s quarantined: %s", path.name, err)
        return sorted(found, key=lambda e: e.created)

    def remove(self, key: str) -> None:
        for suffix in (".json", ".pdf"):
            (self.directory / f"{key}{suffix}").unlink(missing_ok=True)

    def _quarantine(self, key: str) -> None:
        target = self.directory / "quarantine"
        target.mkdir(exist_ok=True)
        for suffix in (".json", ".pdf"):
            source = self.directory / f"{key}{suffix}"
            if source.exists():
                os.replace(source, target / source.name)
