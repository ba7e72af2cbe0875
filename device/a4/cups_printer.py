"""The A4 printer through a CUPS queue (pycups): hand a job over, follow it, keep failures.

Cheap printers do not report paper-out and CUPS stops a queue after an error (HARDWARE.md 4), so
success is only what CUPS reports as ``completed``; everything else is a typed error and the job
stays in the sealed spool (:mod:`device.a4.spool`) until a retry prints it. The PDF is streamed to
cupsd from memory under a neutral title: no plaintext copy is written by this driver.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cups

from device.a4.spool import Spool, SpoolEntry
from device.atrest import DeviceKey
from device.clock import SYSTEM_CLOCK, Clock
from device.config import A4PrinterSection
from device.errors import DeviceClosedError, DeviceError, DeviceTimeoutError

log = logging.getLogger(__name__)

JOB_STATES = {3: "pending", 4: "held", 5: "processing", 6: "stopped", 7: "canceled"}
JOB_STATES |= {8: "aborted", 9: "completed"}
PRINTER_STATES = {3: "idle", 4: "processing", 5: "stopped"}
_IPP_NOT_FOUND = 0x0406
_HTTP_CONTINUE = 100  # what cupsStartDocument / cupsWriteRequestData answer while a body streams
_PDF = "application/pdf"
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


def cups_title(key: str) -> str:
    """The job title cupsd sees (and logs): never the human title, which may be personal."""
    return f"linli-{key[:8]}"


class A4Printer:
    """Prints PDFs on ``config.queue``; ``server`` is a cupsd socket/host (None: libcups).

    ``key`` seals the spool (:class:`~device.atrest.DeviceKey`, usually
    ``DeviceKey.for_data_dir(data_dir)``).
    """

    def __init__(
        self,
        config: A4PrinterSection,
        spool_dir: Path,
        clock: Clock = SYSTEM_CLOCK,
        server: str | None = None,
        *,
        key: DeviceKey,
    ) -> None:
        self.config = config
        self.spool = Spool(spool_dir, key=key)
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

    def hand_over(self, pdf: bytes | Path, title: str) -> str:
        """Spool the job (sealed) and send it to CUPS; returns its key once CUPS accepted it.

        Does not wait for the page: :meth:`follow` does. Raises A4PrinterError (job kept).
        """
        self._check_open()
        data = pdf.read_bytes() if isinstance(pdf, Path) else pdf
        entry = self.spool.add(data, title, self.clock.time())
        self._hand_over(entry)
        return entry.key

    def follow(self, key: str) -> None:
        """Wait until CUPS completed the job handed over as ``key``; then it leaves the spool.

        Raises A4PrinterError (job kept; :meth:`retry` prints it), KeyError for an unknown key,
        ProtocolError if the kept job no longer decrypts (it is quarantined).
        """
        self._check_open()
        entry = self.spool.load(key)
        if entry.cups_job_id is None:
            raise A4PrinterError(
                f"job {key} was never accepted by CUPS ({entry.last_error}); retry it", key
            )
        self._follow_to_end(entry)

    def submit(self, pdf: bytes | Path, title: str) -> str:
        """Spool, print and follow the job; returns its key. Raises A4PrinterError (job kept)."""
        key = self.hand_over(pdf, title)
        self.follow(key)
        return key

    def pending(self) -> list[SpoolEntry]:
        """Jobs kept because they have not been confirmed printed."""
        return self.spool.entries()

    def retry(self, key: str) -> None:
        """Print a kept job again (or follow the CUPS job still holding it: never twice).

        Raises A4PrinterError (job kept), KeyError for an unknown key, ProtocolError if the kept
        job no longer decrypts (it is quarantined).
        """
        self._check_open()
        entry = self.spool.load(key)
        self._hand_over(entry)
        self._follow_to_end(entry)

    def enable_queue(self) -> None:
        """``cupsenable`` + accept jobs: what a technician does after fixing the printer."""
        conn = self._connect()
        try:
            conn.enablePrinter(self.config.queue)
            conn.acceptJobs(self.config.queue)
        except cups.IPPError as err:
            raise QueueStoppedError(f"cannot enable {self.config.queue}: {err}") from err

    def _hand_over(self, entry: SpoolEntry) -> None:
        entry.attempts += 1
        with self._keeping(entry):
            self._submit_or_resume(self._connect(entry.key), entry)

    def _follow_to_end(self, entry: SpoolEntry) -> None:
        with self._keeping(entry):
            self._wait(self._connect(entry.key), entry)
        self.spool.remove(entry.key)
        log.info("A4 job %s printed (CUPS job %s)", entry.key, entry.cups_job_id)

    @contextlib.contextmanager
    def _keeping(self, entry: SpoolEntry) -> Iterator[None]:
        """Record an A4PrinterError on the kept job before it propagates."""
        try:
            yield
        except A4PrinterError as err:
            err.key = entry.key
            entry.last_error = f"{type(err).__name__}: {err}"
            self.spool.save(entry)
            log.warning("A4 job %s kept in spool: %s", entry.key, entry.last_error)
            raise

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
        pdf = self.spool.read_pdf(entry.key)
        title = cups_title(entry.key)
        try:
            job_id = int(conn.createJob(self.config.queue, title, {}))
        except (cups.IPPError, cups.HTTPError) as err:
            raise CupsUnavailableError(f"CUPS refused the job: {err}", entry.key) from err
        # Recorded before the upload: after a crash mid-upload CUPS holds the job (job-incoming)
        # and a retry cancels it and sends the job again.
        entry.cups_job_id = job_id
        self.spool.save(entry)
        try:
            self._stream(conn, job_id, title, pdf)
        except (cups.IPPError, cups.HTTPError, CupsUnavailableError) as err:
            self._cancel(conn, job_id)
            raise CupsUnavailableError(f"CUPS did not take the PDF: {err}", entry.key) from err

    def _stream(self, conn: cups.Connection, job_id: int, title: str, pdf: bytes) -> None:
        """Send the PDF as the job's only document, from memory (no plaintext file anywhere)."""
        queue = self.config.queue
        status = conn.startDocument(queue, job_id, f"{title}.pdf", _PDF, 1)
        if status != _HTTP_CONTINUE:
            raise CupsUnavailableError(f"Send-Document answered HTTP {status}")
        status = conn.writeRequestData(pdf, len(pdf))
        if status != _HTTP_CONTINUE:
            raise CupsUnavailableError(f"writing the PDF answered HTTP {status}")
        conn.finishDocument(queue)  # raises IPPError when CUPS refuses the document

    def _stop_message(self, printer: dict[str, Any], what: str) -> str:
        reasons = ",".join(_reasons(printer.get("printer-state-reasons")))
        message = printer.get("printer-state-message") or ""
        return f"queue {self.config.queue!r} {what}: {message} [{reasons}]; fix it, then cupsenable"

    def _wait(self, conn: cups.Connection, entry: SpoolEntry) -> None:
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
