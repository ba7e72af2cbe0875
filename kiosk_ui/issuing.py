"""The kiosk's certificate desk: ID card read -> household record -> certificate on A4 + receipt.

:class:`CertificateDesk` is the one path the kiosk screen calls once a card has been read. Its
order is chosen so that a problem never leaves a resident with half a result:

1. the household record is looked up and the certificate is rendered *before* anything is sent to a
   printer, so missing data (a household without an address) is a clear
   :class:`~kiosk_ui.certificates.MissingFieldError` and nothing prints;
2. the PDF is handed to the CUPS queue (:meth:`device.a4.A4Printer.hand_over`): it is sealed in the
   spool first, so a printer or cupsd that vanishes keeps the job for a retry
   (:class:`~device.a4.A4PrinterError` carries its key) and no receipt is printed for it;
3. the receipt goes to the ESC/POS printer (status checked first). If that printer is out of paper
   or gone, the certificate is already on its way; the receipt stays in the spool and prints when
   the printer is back, and :attr:`IssuedCertificate.receipt_problem` tells the screen why.

Following the A4 job to completion (:meth:`CertificateDesk.follow`) is separate: the resident
does not wait for the page to come out before the screen moves on, and a failure found then is
still a kept job.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from device.a4 import A4Printer
from device.clock import SYSTEM_CLOCK, Clock
from device.config import CertificateSection
from device.credential import SigningKey
from device.errors import LinliError
from device.escpos.errors import PaperNearEndWarning, PrinterError
from device.escpos.printer import ReceiptPrinter
from device.escpos.receipt import Receipt
from device.idcard.identity import Identity
from device.privacy import mask_id_number, mask_name
from kiosk_ui.certificates import RenderedCertificate, Template, render_certificate
from kiosk_ui.certificates.render import CHINA_TZ

log = logging.getLogger(__name__)


class HouseholdNotFoundError(LinliError, LookupError):
    """No household record for this resident on the kiosk (and none online); nothing printed."""


class UnknownTemplateError(LinliError, KeyError):
    """The screen asked for a certificate the kiosk has no template for."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class HouseholdDirectory(Protocol):
    """Where household records come from (the kiosk's local cache, later an online lookup)."""

    def household_for(self, identity: Identity) -> Mapping[str, Any] | None:
        """The resident's household record, or None when the kiosk has none."""


class MemoryHouseholds:
    """Household records held in memory, keyed by ID number (the simulator and tests use this).

    The kiosk's own cache (encrypted SQLite, looked up by keyed hash) implements the same
    :class:`HouseholdDirectory` protocol.
    """

    def __init__(self, records: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self._records: dict[str, Mapping[str, Any]] = dict(records or {})

    def add(self, id_number: str, record: Mapping[str, Any]) -> None:
        self._records[id_number] = record

    def household_for(self, identity: Identity) -> Mapping[str, Any] | None:
        return self._records.get(identity.id_number)

    def __len__(self) -> int:
        return len(self._records)


@dataclass(frozen=True, repr=False)
class IssuedCertificate:
    """What one visit produced. ``receipt_problem`` is None when the receipt printed."""

    certificate: RenderedCertificate
    a4_job: str
    """The A4 spool key: pass it to :meth:`CertificateDesk.follow` (or ``linli a4 retry``)."""
    receipt_problem: PrinterError | None = None
    warnings: list[PaperNearEndWarning] = field(default_factory=list)
    stages_s: dict[str, float] = field(default_factory=dict)
    """Seconds spent in ``render``, ``hand_over`` and ``receipt`` (for the log and benchmarks)."""

    @property
    def serial(self) -> str:
        return self.certificate.serial

    @property
    def receipt_printed(self) -> bool:
        return self.receipt_problem is None

    def __repr__(self) -> str:
        receipt = "printed" if self.receipt_printed else type(self.receipt_problem).__name__
        return f"IssuedCertificate(serial={self.serial!r}, a4_job={self.a4_job!r}, {receipt})"


def receipt_for(certificate: RenderedCertificate, identity: Identity, issued_at: dt.datetime,
                community: str) -> Receipt:  # fmt: skip
    """The resident's slip: masked name and ID number only (a slip can be left on the kiosk)."""
    return Receipt(
        title=f"{certificate.template.title}回执",
        lines=(
            f"证明编号: {certificate.serial}",
            f"姓名: {mask_name(identity.name)}",
            f"证件号码: {mask_id_number(identity.id_number)}",
            f"打印时间: {issued_at:%Y-%m-%d %H:%M}",
            "证明已送A4打印机, 请在出纸口取件",
        ),
        qr=certificate.qr_text,
        footer=community,
    )


class CertificateDesk:
    """Issues certificates for residents whose card was read; see the module docstring."""

    def __init__(
        self,
        *,
        templates: Mapping[str, Template],
        households: HouseholdDirectory,
        config: CertificateSection,
        signing_key: SigningKey,
        a4: A4Printer,
        receipts: ReceiptPrinter,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.templates = dict(templates)
        self.households = households
        self.config = config
        self.signing_key = signing_key
        self.a4 = a4
        self.receipts = receipts
        self.clock = clock

    def render(self, identity: Identity, template_name: str) -> RenderedCertificate:
        """The certificate for ``identity``, nothing printed yet (also the screen's preview)."""
        template = self.templates.get(template_name)
        if template is None:
            known = ", ".join(sorted(self.templates)) or "none"
            raise UnknownTemplateError(f"no certificate template {template_name!r} (have: {known})")
        household = self.households.household_for(identity)
        if household is None:
            raise HouseholdNotFoundError(
                f"no household record for {identity.masked()} on this kiosk; "
                f"{template.title} cannot be issued here, please ask at the community office"
            )
        now = self.clock.time()
        return render_certificate(
            template,
            identity,
            household,
            config=self.config,
            key=self.signing_key,
            today=dt.datetime.fromtimestamp(now, CHINA_TZ).date(),
            now=now,
        )

    def issue(self, identity: Identity, template_name: str = "residence") -> IssuedCertificate:
        """Render, hand the PDF to CUPS, print the receipt (failures: see the module docstring)."""
        t0 = time.perf_counter()
        certificate = self.render(identity, template_name)
        t1 = time.perf_counter()
        title = f"{certificate.template.title} {certificate.serial}"
        a4_job = self.a4.hand_over(certificate.pdf, title)
        t2 = time.perf_counter()
        issued_at = dt.datetime.fromtimestamp(self.clock.time(), CHINA_TZ)
        receipt = receipt_for(certificate, identity, issued_at, self.config.community)
        problem: PrinterError | None = None
        warnings: list[PaperNearEndWarning] = []
        try:
            warnings = self.receipts.print_receipt(receipt).warnings
        except PrinterError as err:
            problem = err
        stages = {"render": t1 - t0, "hand_over": t2 - t1, "receipt": time.perf_counter() - t2}
        if problem is not None:
            log.warning(
                "certificate %s handed to A4 (job %s); receipt kept for later: %s",
                certificate.serial,
                a4_job,
                type(problem).__name__,
            )
        else:
            log.info(
                "certificate %s issued (A4 job %s, receipt printed) in %.3f s",
                certificate.serial,
                a4_job,
                sum(stages.values()),
            )
        return IssuedCertificate(certificate, a4_job, problem, warnings, stages)

    def follow(self, issued: IssuedCertificate) -> None:
        """Wait until the A4 page is out; an :class:`~device.a4.A4PrinterError` keeps the job."""
        self.a4.follow(issued.a4_job)
