"""A kiosk on simulated hardware: SAM reader on a pty, real cupsd, ESC/POS emulator on TCP."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from device.a4 import A4Printer
from device.atrest import DeviceKey
from device.config import A4PrinterSection, CertificateSection, ReceiptPrinterSection
from device.credential import SigningKey, generate_signing_key
from device.escpos.printer import ReceiptPrinter
from device.idcard.identity import Identity
from device.idcard.reader import SamReader
from hardware_sim.cups import CupsTestServer, SimQueue
from hardware_sim.escpos.server import EscposTcpPrinter
from hardware_sim.idcards import sample_card
from hardware_sim.sam import SamEmulator
from kiosk_ui.certificates import load_templates
from kiosk_ui.issuing import CertificateDesk, MemoryHouseholds
from tests.certificates.conftest import COMMUNITY, household_record

RESIDENT = sample_card(5)
STRANGER = sample_card(6)


@dataclass
class Kiosk:
    reader: SamReader
    card_slot: SamEmulator
    cupsd: CupsTestServer
    queue: SimQueue
    receipt_model: EscposTcpPrinter
    desk: CertificateDesk
    households: MemoryHouseholds
    signing_key: SigningKey
    spool: Path

    def read(self, card: Identity) -> Identity:
        """Put ``card`` on the reader and read it with the real driver."""
        self.card_slot.insert(card)
        identity = self.reader.read_card()
        assert identity == card
        return identity


@pytest.fixture
def kiosk(
    cupsd: CupsTestServer, queue: SimQueue, device_key: DeviceKey, tmp_path: Path
) -> Iterator[Kiosk]:
    """A kiosk whose A4 printer is a fresh sim queue on the shared private cupsd."""
    signing_key = generate_signing_key("kiosk-0001")
    households = MemoryHouseholds({RESIDENT.id_number: household_record()})
    with (
        EscposTcpPrinter(port=0) as receipt_model,
        SamEmulator(pace=False) as card_slot,
        SamReader(port=card_slot.path, timeout_s=2.0, retries=0) as reader,
    ):
        a4 = A4Printer(
            A4PrinterSection(queue=queue.name, job_timeout_s=20, poll_interval_s=0.05),
            tmp_path / "spool" / "a4",
            server=cupsd.socket,
            key=device_key,
        )
        receipts = ReceiptPrinter(
            ReceiptPrinterSection(backend="network", tcp_port=receipt_model.port, timeout_s=2),
            tmp_path / "spool" / "receipt",
            key=device_key,
        )
        config = CertificateSection(community=COMMUNITY)
        desk = CertificateDesk(
            templates=load_templates(),
            households=households,
            config=config,
            signing_key=signing_key,
            a4=a4,
            receipts=receipts,
        )
        yield Kiosk(
            reader, card_slot, cupsd, queue, receipt_model, desk, households,
            signing_key, tmp_path / "spool",
        )  # fmt: skip
