"""The A4 printer through a CUPS queue (pycups): submit, follow each job to the end, keep failures.

Cheap printers do not report paper-out and CUPS stops a queue after an error (HARDWARE.md 4), so
 success is only what CUPS reports as ``completed``; everything else is a typed error and the job
stays in the spool (:mod:`device.a4.spool`) until a retry prints it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cups

from device.a4.spool import Spool, SpoolEntry
from device.clock import SYSTEM_CLOCK, Clock
from device.config import A4PrinterSection
from device.errors import DeviceClosedError, DeviceError, DeviceTimeoutError

log = logging.getLogger(__name__)

JOB_STATES = {3: "pending", 4: "held", 5: "processing", 6: "stopped", 7: "canceled"}
JOB_STATES |= {8: "aborted", 9: "completed"}
PRINTER_STATES = {3: "idle", 4: "processing", 5: "stopped"}
_IPP_NOT_FOUND = 0x0406
_JOB_ATTRS = ["job-state", "job-state-reasons", "job-printer-state-message"]
_PRINTER_ATTRS = [
    "printer-state",
    "printer-state-reasons",
    "printer-state-message",
    "printer-is-accepting-jobs",
]


class A4PrinterError(DeviceError):
    """The A4 job did not print; it is kept in the spool (``key``) for a retry."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class QueueNotFoundError(A4PrinterError):
    """CUPS has no queue of the configured name."""


class QueueStoppedError(A4PrinterError):
    """The queue is stopped or rejecting jobs (CUPS's reason in the message); run cupsenable."""


class PaperOutError(QueueStoppedError):
    """The printer reported media-empty / media-needed."""


class JobFailedError(A4PrinterError):
    """CUPS aborted or canceled the job."""


class JobTimeoutError(A4PrinterError, DeviceTimeoutError):
    """The job did not complete within job_timeout_s (stuck printer, silent paper-out)."""


class CupsUnavailableError(A4PrinterError):
    """cupsd does not answer."""


def _reasons(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value or []]


class A4Printer:
    """Prints PDFs on ``config.queue``; ``server`` is a cupsd socket/host (None: libcups)."""

    def __init__(
        self,
        config: A4PrinterSection,
        spool_dir: Path,
        clock: Clock = SYSTEM_CLOCK,
        server: str | None = None,
    ) -> None:
        self.config = config
        self.spool = Spool(spool_dir)
        self.clock = clock
        self.server = server
        self._closed = False

    def __enter__(self) -> A4Printer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise DeviceClosedError("A4Printer used after close()")

    def _connect(self, key: str | None = None) -> cups.Connection:
        try:
            return cups.Connection(host=self.server) if self.server else cups.Connection()
        except RuntimeError as err:
            raise CupsUnavailableError(
                f"cupsd not reachable ({err}); is cups running?", key
            ) from err

    def queue_status(self) -> tuple[bool, str, list[str]]:
        """(accepting jobs, idle/processing/stopped, CUPS's printer-state-reasons)."""
        self._check_open()
        attrs = self._printer(self._connect(), None)
        state = PRINTER_STATES.get(int(attrs.get("printer-state", 0)), "unknown")
        return (
            bool(attrs.get("printer-is-accepting-jobs")),
            state,
            _reasons(attrs.get("printer-state-reasons")),
        )

    def submit(self, pdf: bytes | Path, title: str) -> str:
        """Spool, print and follow the job; returns its key. Raises A4PrinterError (job kept)."""
        self._check_open()
        data = pdf.read_bytes() if isinstance(pdf, Path) else pdf
        entry = self.spool.add(data, title, self.clock.time())
        self._attempt(entry)
        return entry.key

    def pending(self) -> list[SpoolEntry]:
        """Jobs kept because they have not been confirmed printed."""
        return self.spool.entries()

    def retry(self, key: str) -> None:
        """Print a kept job again (or follow the CUPS job still holding it: never twice)."""
        self._check_open()
        self._attempt(self.spool.load(key))

    def enable_queue(self) -> None:
        """``cupsenable`` + accept jobs: what a technician does after fixing the printer."""
        conn = self._connect()
        try:
            conn.enablePrinter(self.config.queue)
            conn.acceptJobs(self.config.queue)
        except cups.IPPError as err:
            raise QueueStoppedError(f"cannot enable {self.config.queue}: {err}") from err

    def _attempt(self, entry: SpoolEntry) -> None:
        entry.attempts += 1
        try:
            conn = self._connect(entry.key)
            self._follow(conn, entry)
        except A4PrinterError as err:
            err.key = entry.key
            entry.last_error = f"{type(err).__name__}: {err}"
            self.spool.save(entry)
            log.warning("A4 job %s kept in spool: %s", entry.key, entry.last_error)
            raise
        self.spool.remove(entry.key)
        log.info("A4 job %s printed (CUPS job %s)", entry.key, entry.cups_job_id)

    def _printer(self, conn: cups.Connection, key: str | None) -> dict[str, Any]:
        queue = self.config.queue
        try:
            attrs: dict[str, Any] = conn.getPrinterAttributes(
                queue, requested_attributes=_PRINTER_ATTRS
            )
        except cups.IPPError as err:
            status = err.args[0] if err.args else None
            if status == _IPP_NOT_FOUND:
                raise QueueNotFoundError(f"CUPS has no queue {queue!r} (lpstat -p)", key) from err
            raise CupsUnavailableError(f"CUPS error on {queue!r}: {err}", key) from err
        except cups.HTTPError as err:
            raise CupsUnavailableError(f"cupsd not reachable: {err}", key) from err
        return attrs

    def _job(self, conn: cups.Connection, job_id: int, key: str) -> dict[str, Any] | None:
        try:
            attrs: dict[str, Any] = conn.getJobAttributes(job_id, requested_attributes=_JOB_ATTRS)
        except cups.IPPError as err:
            if err.args and err.args[0] == _IPP_NOT_FOUND:
                return None
            raise CupsUnavailableError(f"CUPS error on job {job_id}: {err}", key) from err
        except cups.HTTPError as err:
            raise CupsUnavailableError(f"cupsd not reachable: {err}", key) from err
        return attrs

    def _submit_or_resume(self, conn: cups.Connection, entry: SpoolEntry) -> None:
        if entry.cups_job_id is not None:
            attrs = self._job(conn, entry.cups_job_id, entry.key)
            held = attrs is not None and int(attrs["job-state"]) == 4
            if attrs is not None and int(attrs["job-state"]) not in (4, 7, 8):
                return  # CUPS still has (or already printed) it: follow that one
            if held:
                self._cancel(conn, entry.cups_job_id)  # a held job never prints by itself
        printer = self._printer(conn, entry.key)
        if not printer.get("printer-is-accepting-jobs"):
            raise QueueStoppedError(self._stop_message(printer, "rejecting jobs"), entry.key)
        try:
            entry.cups_job_id = int(
                conn.printFile(
                    self.config.queue, str(self.spool.pdf_path(entry.key)), entry.title, {}
                )
            )
        except (cups.IPPError, cups.HTTPError) as err:
            raise CupsUnavailableError(f"CUPS refused the job: {err}", entry.key) from err
        self.spool.save(entry)

    def _stop_message(self, printer: dict[str, Any], what: str) -> str:
        reasons = ",".join(_reasons(printer.get("printer-state-reasons")))
        message = printer.get("printer-state-message") or ""
        return f"queue {self.config.queue!r} {what}: {message} [{reasons}]; fix it, then cupsenable"

    def _follow(self, conn: cups.Connection, entry: SpoolEntry) -> None:
        self._submit_or_resume(conn, entry)
        assert entry.cups_job_id is not None
        job_id = entry.cups_job_id
        deadline = self.clock.monotonic() + self.config.job_timeout_s
        state = "pending"
        while True:
            attrs = self._job(conn, job_id, entry.key)
            if attrs is None:
                raise JobFailedError(f"CUPS job {job_id} disappeared", entry.key)
            state = JOB_STATES.get(int(attrs["job-state"]), "unknown")
            if state == "completed":
                return
            if state in ("canceled", "aborted", "held"):
                why = attrs.get("job-printer-state-message") or attrs.get("job-state-reasons")
                raise JobFailedError(f"CUPS job {job_id} {state}: {why}", entry.key)
            printer = self._printer(conn, entry.key)
            if int(printer.get("printer-state", 0)) == 5 or state == "stopped":
                reasons = _reasons(printer.get("printer-state-reasons"))
                if any(r.startswith(("media-empty", "media-needed")) for r in reasons):
                    raise PaperOutError(self._stop_message(printer, "out of paper"), entry.key)
                raise QueueStoppedError(self._stop_message(printer, "stopped"), entry.key)
            if self.clock.monotonic() >= deadline:
                self._cancel(conn, job_id)
                raise JobTimeoutError(
                    f"CUPS job {job_id} still {state} after {self.config.job_timeout_s} s "
                    "(printer stuck or silently out of paper); canceled, kept for retry",
                    entry.key,
                )
            self.clock.sleep(self.config.poll_interval_s)

    def _cancel(self, conn: cups.Connection, job_id: int) -> None:
        try:
            conn.cancelJob(job_id)
        except (cups.IPPError, cups.HTTPError) as err:
            log.warning("could not cancel stuck CUPS job %s: %s", job_id, err)
