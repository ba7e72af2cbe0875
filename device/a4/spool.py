"""Durable spool of A4 jobs not yet confirmed printed, sealed with the device key.

Per job: ``KEY.pdf.sealed`` (the PDF, associated data = the job key) and ``KEY.json.sealed`` (title,
attempts, last error, CUPS job id). Nothing personal is on disk in clear (DESIGN.md section 4). A
job leaves the spool only when CUPS says it completed; files that are corrupt or do not decrypt are
moved to ``quarantine/`` and reported, never crash the kiosk.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from device.atrest import DeviceKey
from device.errors import ProtocolError

log = logging.getLogger(__name__)

PDF_SUFFIX = ".pdf.sealed"
META_SUFFIX = ".json.sealed"
_LEGACY_SUFFIXES = (".json", ".pdf")  # plaintext spools written before sealing existed


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
    """Parse a job's (decrypted) metadata JSON; a ProtocolError for anything malformed."""
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
    if not isinstance(key, str) or not _valid_key(key):
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


def _valid_key(key: str) -> bool:
    return key.isascii() and key.isalnum()


def _pdf_aad(key: str) -> bytes:
    return key.encode("ascii")


def _meta_aad(key: str) -> bytes:
    return f"{key}.json".encode("ascii")


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class Spool:
    """The directory of kept jobs (``data_dir/spool/a4``); ``key`` seals every file in it."""

    def __init__(self, directory: Path, *, key: DeviceKey) -> None:
        self.directory = directory
        self.key = key
        directory.mkdir(parents=True, exist_ok=True)
        self._seal_legacy()

    def add(self, pdf: bytes, title: str, now: float) -> SpoolEntry:
        """Store a new job before it is submitted, so a crash cannot lose it."""
        entry = SpoolEntry(key=uuid.uuid4().hex, title=title, created=now)
        self._write_pdf(entry.key, pdf)
        self.save(entry)
        return entry

    def save(self, entry: SpoolEntry) -> None:
        """Write a job's metadata (sealed, atomically)."""
        data = json.dumps(asdict(entry), ensure_ascii=False).encode("utf-8")
        sealed = self.key.seal(data, _meta_aad(entry.key))
        _atomic_write(self.directory / f"{entry.key}{META_SUFFIX}", sealed)

    def read_pdf(self, key: str) -> bytes:
        """A kept job's PDF; ProtocolError (job quarantined) if it is missing or does not open."""
        path = self.directory / f"{key}{PDF_SUFFIX}"
        if not _valid_key(key):
            raise KeyError(key)
        try:
            if not path.exists():
                raise ProtocolError(f"spool job {key} has no PDF")
            return self.key.open(path.read_bytes(), _pdf_aad(key))
        except ProtocolError:
            self._quarantine(key)
            raise

    def load(self, key: str) -> SpoolEntry:
        """One entry; KeyError if unknown, ProtocolError (and quarantine) if corrupt."""
        path = self.directory / f"{key}{META_SUFFIX}"
        if not _valid_key(key) or not path.exists():
            raise KeyError(key)
        try:
            text = self.key.open(path.read_bytes(), _meta_aad(key)).decode("utf-8", "replace")
            entry = parse_metadata(text)
            if entry.key != key:
                raise ProtocolError(f"spool metadata of {key} names job {entry.key}")
        except ProtocolError:
            self._quarantine(key)
            raise
        return entry

    def entries(self) -> list[SpoolEntry]:
        """Kept jobs, oldest first; corrupt or undecryptable ones are quarantined and logged."""
        found: list[SpoolEntry] = []
        for path in sorted(self.directory.glob(f"*{META_SUFFIX}")):
            key = path.name.removesuffix(META_SUFFIX)
            try:
                entry = self.load(key)
                self.read_pdf(key)  # a job whose PDF does not open cannot print: report it now
            except (KeyError, ProtocolError) as err:
                log.warning("A4 spool: job %s quarantined: %s", key, err)
                continue
            found.append(entry)
        return sorted(found, key=lambda e: e.created)

    def remove(self, key: str) -> None:
        """Forget a job (it printed)."""
        for suffix in (META_SUFFIX, PDF_SUFFIX):
            (self.directory / f"{key}{suffix}").unlink(missing_ok=True)

    def _write_pdf(self, key: str, pdf: bytes) -> None:
        _atomic_write(self.directory / f"{key}{PDF_SUFFIX}", self.key.seal(pdf, _pdf_aad(key)))

    def _quarantine(self, key: str, suffixes: tuple[str, ...] = (META_SUFFIX, PDF_SUFFIX)) -> None:
        target = self.directory / "quarantine"
        target.mkdir(exist_ok=True)
        for suffix in suffixes:
            source = self.directory / f"{key}{suffix}"
            if source.exists():
                os.replace(source, target / source.name)

    def _seal_legacy(self) -> None:
        """Seal jobs kept in clear by an older version, so no plaintext stays in the spool."""
        for path in sorted(self.directory.glob("*.json")):
            key = path.stem
            pdf = self.directory / f"{key}.pdf"
            try:
                entry = parse_metadata(path.read_text(encoding="utf-8", errors="replace"))
                if entry.key != key or not pdf.exists():
                    raise ProtocolError(f"plaintext spool job {key} is incomplete")
            except ProtocolError as err:
                self._quarantine(key, _LEGACY_SUFFIXES)
                log.warning("A4 spool: plaintext job %s quarantined: %s", key, err)
                continue
            self._write_pdf(key, pdf.read_bytes())
            self.save(entry)
            for suffix in _LEGACY_SUFFIXES:
                (self.directory / f"{key}{suffix}").unlink()
            log.info("A4 spool: plaintext job %s sealed", key)
