"""Certificates for a kiosk session: preview exactly what will print, print it, audit it, and
turn printer problems into plain words and a staff event.

:class:`CertificateService` wraps the :class:`~kiosk_ui.issuing.CertificateDesk` (its templates,
key, printers and clock). It does not call ``desk.issue()``, which renders afresh: the resident
confirmed a preview carrying one serial number, so the very PDF previewed is what is handed to the
A4 queue, with the desk's own receipt (:func:`~kiosk_ui.issuing.receipt_for`) and the same order
of steps and failure rules as ``issue()`` (docs/kiosk.md). The household record is passed in, so
a record found online prints like a cached one.

Audit: before the PDF goes anywhere, one outbox event ``certificate.issued`` is committed with
``personal=True`` (it names the resident's ID number, so the office can answer "who received
serial X", and carries the digest's salt, which lets the server confirm a paper's printed text).
If that commit fails nothing is printed: no certificate leaves the kiosk unaudited. Printer
trouble is a non-personal ``kiosk.printer_problem`` event for staff; the job is kept in the spool
by the printer drivers, as ever.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from device.a4 import (
    A4PrinterError,
    CupsUnavailableError,
    JobFailedError,
    JobTimeoutError,
    PaperOutError,
    QueueNotFoundError,
    QueueStoppedError,
)
from device.errors import LinliError
from device.escpos.errors import PrinterError
from device.idcard.identity import Identity
from device.store import Store
from kiosk_ui.certificates import RenderedCertificate, Template, render_certificate, render_page
from kiosk_ui.certificates.render import CHINA_TZ
from kiosk_ui.issuing import CertificateDesk, UnknownTemplateError, receipt_for

log = logging.getLogger(__name__)

ISSUED_EVENT = "certificate.issued"
PROBLEM_EVENT = "kiosk.printer_problem"

_A4_WORDS: tuple[tuple[type[A4PrinterError], str], ...] = (
    (PaperOutError, "A4打印机缺纸"),
    (QueueStoppedError, "A4打印机已暂停工作"),
    (QueueNotFoundError, "找不到A4打印机"),
    (JobTimeoutError, "A4打印机长时间没有出纸"),
    (JobFailedError, "A4打印机没能完成打印"),
    (CupsUnavailableError, "打印服务没有响应"),
)


def a4_words(err: A4PrinterError) -> str:
    """What an A4 printer error means, in plain words for the screen."""
    for kind, words in _A4_WORDS:
        if isinstance(err, kind):
            return words
    return "A4打印机出现故障"


@dataclass(frozen=True, repr=False)
class Prepared:
    """A rendered certificate and its screen preview (both personal: never logged)."""

    certificate: RenderedCertificate
    preview_png: bytes

    @property
    def serial(self) -> str:
        return self.certificate.serial

    @property
    def title(self) -> str:
        return self.certificate.template.title

    def __repr__(self) -> str:
        return f"Prepared({self.certificate!r})"


@dataclass(frozen=True)
class PrinterProblem:
    """One printer problem of a print job (no personal data: it goes to staff as is)."""

    printer: Literal["a4", "receipt"]
    problem: str
    """The error's class name (``PaperOutError``)."""
    words: str
    """Plain Chinese for the screen and staff."""
    job: str | None
    """The A4 spool key of the kept job (None for the receipt, kept in its own spool)."""


@dataclass(frozen=True)
class PrintOutcome:
    """What one print job achieved; no personal data."""

    serial: str
    title: str
    handed_over: bool
    """The A4 queue accepted the PDF (else it is kept in the spool, or nothing was sent)."""
    page_out: bool
    """CUPS reported the A4 job completed."""
    receipt_printed: bool
    problems: tuple[PrinterProblem, ...] = ()
    audited: bool = True
    """False only when the audit event could not be stored: then nothing was printed."""


class AuditError(RuntimeError):
    """The ``certificate.issued`` event could not be stored; nothing was printed."""


class CertificateService:
    """Preview and print certificates for a session (see the module docstring).

    ``follow``: wait for CUPS to report the page out before the job ends (the resident is at the
    printer; a paper-out is found and shown while they are still there). False only for tests
    and benchmarks of the hand-over alone.
    """

    def __init__(
        self,
        desk: CertificateDesk,
        store: Store,
        *,
        preview_width_px: int = 800,
        follow: bool = True,
    ) -> None:
        self.desk = desk
        self.store = store
        self.preview_width_px = preview_width_px
        self.follow = follow

    def templates(self) -> list[Template]:
        """The certificates this kiosk offers, in the order they were loaded."""
        return list(self.desk.templates.values())

    def title_of(self, template_name: str) -> str:
        template = self.desk.templates.get(template_name)
        return template.title if template is not None else template_name

    def prepare(
        self, identity: Identity, household: Mapping[str, Any], template_name: str
    ) -> Prepared:
        """Render the certificate and its preview; nothing is printed.

        Raises :class:`~kiosk_ui.issuing.UnknownTemplateError`,
        :class:`~kiosk_ui.certificates.CertificateDataError` (``MissingFieldError`` for data the
        template needs and the record lacks), ``LayoutError``, ``FontNotFoundError``.
        """
        template = self.desk.templates.get(template_name)
        if template is None:
            known = ", ".join(sorted(self.desk.templates)) or "none"
            raise UnknownTemplateError(f"no certificate template {template_name!r} (have: {known})")
        now = self.desk.clock.time()
        certificate = render_certificate(
            template,
            identity,
            household,
            config=self.desk.config,
            key=self.desk.signing_key,
            today=dt.datetime.fromtimestamp(now, CHINA_TZ).date(),
            now=now,
        )
        png = render_page(certificate.pdf, width_px=self.preview_width_px)
        return Prepared(certificate, png)

    def print(self, identity: Identity, prepared: Prepared) -> PrintOutcome:
        """Audit, hand the previewed PDF to the A4 queue, print the receipt, follow the page.

        Never raises for printer trouble (it is in the outcome, with a staff event per problem);
        raises :class:`AuditError` when the audit event cannot be stored (nothing printed).
        """
        certificate = prepared.certificate
        serial, title = certificate.serial, certificate.template.title
        issued_at = dt.datetime.fromtimestamp(self.desk.clock.time(), CHINA_TZ)
        self._audit(identity, certificate, issued_at)
        problems: list[PrinterProblem] = []
        try:
            job = self.desk.a4.hand_over(certificate.pdf, f"{title} {serial}")
        except A4PrinterError as err:  # kept in the spool (err.key) when it got that far
            problems.append(self._problem("a4", err, a4_words(err), err.key, serial))
            return PrintOutcome(serial, title, False, False, False, tuple(problems))
        receipt = receipt_for(certificate, identity, issued_at, self.desk.config.community)
        receipt_printed = True
        try:
            self.desk.receipts.print_receipt(receipt)
        except PrinterError as err:  # kept in the receipt spool, printed whole later
            receipt_printed = False
            problems.append(self._problem("receipt", err, err.zh, None, serial))
        page_out = False
        if self.follow:
            try:
                self.desk.a4.follow(job)
                page_out = True
            except A4PrinterError as err:
                problems.append(self._problem("a4", err, a4_words(err), job, serial))
        log.info(
            "certificate %s printed (A4 job %s, page out: %s, receipt: %s)",
            serial,
            job,
            page_out,
            receipt_printed,
        )
        return PrintOutcome(serial, title, True, page_out, receipt_printed, tuple(problems))

    def _audit(
        self, identity: Identity, certificate: RenderedCertificate, issued_at: dt.datetime
    ) -> None:
        data = {
            "serial": certificate.serial,
            "template": certificate.template.name,
            "issued_at": issued_at.timestamp(),
            "community": self.desk.config.community,
            "key_id": self.desk.signing_key.kid,
            "id_number": identity.id_number,
            "digest": certificate.digest.hex(),
            "salt": certificate.salt.hex(),
        }
        try:
            with self.store.transaction() as tx:
                tx.emit(ISSUED_EVENT, data, personal=True)
        except LinliError as err:  # StoreError and kin: print nothing unaudited
            log.error(
                "certificate %s not printed: audit event not stored (%s)",
                certificate.serial,
                type(err).__name__,
            )
            raise AuditError(f"certificate {certificate.serial}: audit event not stored") from err

    def _problem(
        self,
        printer: Literal["a4", "receipt"],
        err: Exception,
        words: str,
        job: str | None,
        serial: str,
    ) -> PrinterProblem:
        problem = PrinterProblem(printer, type(err).__name__, words, job)
        log.warning(
            "certificate %s: %s printer problem %s (job %s kept)",
            serial,
            printer,
            problem.problem,
            job,
        )
        data = {
            "printer": printer,
            "problem": problem.problem,
            "words": words,
            "job": job,
            "serial": serial,
        }
        try:
            with self.store.transaction() as tx:
                tx.emit(PROBLEM_EVENT, data)
        except LinliError:  # the resident still gets the screen; the log line above remains
            log.exception("printer problem event for certificate %s not stored", serial)
        return problem
