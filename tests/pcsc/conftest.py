"""A real pcscd with the vpcd driver for the PC/SC tests, and a virtual card plugged into it.

If pcscd already runs (with the vpcd reader), it is used as is, on vpcd's installed port 35963;
otherwise the session starts ``pcscd --foreground`` and stops it at the end. The session's own pcscd
reads a private copy of ``/etc/reader.conf.d/vpcd`` with a port below the kernel's ephemeral range:
35963 lies inside it, so any client socket of an earlier test (a broker or web connection in
TIME_WAIT) could hold it and pcscd would fail with "Address already in use", as it once did in CI.
A missing pcscd or vpcd driver FAILS the tests with what to install: these tests are the only proof
the reader works through the real daemon.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from smartcard import scard

from device.config import PcscSection
from device.pcsc.profile import CardKind, CardRecord, luhn_check_digit
from device.pcsc.reader import PcscReader
from hardware_sim.processes import port_is_free, reserved_tcp_port
from hardware_sim.vpcd import VPCD_PORT_SLOT0, VirtualCard

READER_SLOT0 = "Virtual PCD 00 00"
VPCD_CONF = Path("/etc/reader.conf.d/vpcd")
INSTALL_HINT = "install with: apt-get install pcscd vsmartcard-vpcd (scripts/bootstrap.sh does)"


def list_readers() -> list[str] | None:
    """Readers pcscd knows; None when pcscd does not answer."""
    hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if hresult != scard.SCARD_S_SUCCESS:
        return None
    try:
        hresult, names = scard.SCardListReaders(context, [])
        if hresult == scard.SCARD_E_NO_READERS_AVAILABLE:
            return []
        return list(names) if hresult == scard.SCARD_S_SUCCESS else None
    finally:
        scard.SCardReleaseContext(context)


class Pcscd:
    """The pcscd the tests talk to; ``owned`` when this session started it (and may restart it)."""

    def __init__(self, workdir: Path) -> None:
        self.log_path = workdir / "pcscd.log"
        self.config_dir = workdir / "reader.conf.d"
        self.process: subprocess.Popen[bytes] | None = None
        self.owned = False
        # Slot 0's port, where a VirtualCard connects; slot 1 is the next one.
        self.port = VPCD_PORT_SLOT0

    def start(self) -> None:
        binary = shutil.which("pcscd") or "/usr/sbin/pcscd"
        if not Path(binary).exists():
            pytest.fail(f"pcscd is not installed; {INSTALL_HINT}", pytrace=False)
        if not self.owned:
            # Chosen once: a restart (test_pcscd_restart...) keeps the port the card reconnects to.
            self.port = self._write_config()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [binary, "--foreground", "--error", "--config", str(self.config_dir)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.owned = True
        self.wait_for_reader()

    def _write_config(self) -> int:
        """The installed vpcd entry with its port moved below the ephemeral range."""
        port = reserved_tcp_port()
        while not port_is_free(port + 1, host="0.0.0.0"):  # slot 1; pcscd binds all addresses
            port = reserved_tcp_port()
        text = VPCD_CONF.read_text(encoding="utf-8")
        text, n = re.subn(r"(?m)^(DEVICENAME\s+\S+?):\S+$", rf"\g<1>:{port}", text)
        if n != 1:
            pytest.fail(f"{VPCD_CONF} has no 'DEVICENAME path:port' line to move", pytrace=False)
        text = re.sub(r"(?m)^CHANNELID\s+\S+$", f"CHANNELID    {port}", text)
        self.config_dir.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "vpcd").write_text(text, encoding="utf-8")
        return port

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
            self.process = None
        deadline = time.monotonic() + 5
        while list_readers() is not None and time.monotonic() < deadline:
            time.sleep(0.05)

    def ensure_running(self) -> None:
        """Start pcscd again if a test stopped it (so one failing test cannot break the rest)."""
        if self.owned and (self.process is None or self.process.poll() is not None):
            self.start()

    def wait_for_reader(self, timeout_s: float = 15) -> None:
        deadline = time.monotonic() + timeout_s
        names = list_readers()
        while time.monotonic() < deadline:
            names = list_readers()
            if names and READER_SLOT0 in names:
                return
            if self.process is not None and self.process.poll() is not None:
                break
            time.sleep(0.1)
        log = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
        pytest.fail(
            f"pcscd did not show the {READER_SLOT0!r} reader within {timeout_s:g} s "
            f"(readers: {names}); is vsmartcard-vpcd installed ({VPCD_CONF})? {INSTALL_HINT}\n"
            f"pcscd output:\n{log}",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def pcscd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pcscd]:
    if not VPCD_CONF.exists():
        pytest.fail(f"the vpcd driver is not installed ({VPCD_CONF} missing); {INSTALL_HINT}")
    daemon = Pcscd(tmp_path_factory.mktemp("pcscd"))
    names = list_readers()
    if names is None:
        daemon.start()
    elif READER_SLOT0 not in names:
        pytest.fail(
            f"a pcscd is running but shows no {READER_SLOT0!r} reader (readers: {names}); "
            "restart it after installing vsmartcard-vpcd",
            pytrace=False,
        )
    yield daemon
    if daemon.owned:
        daemon.stop()


def make_number(prefix: str = "621098520000123456") -> str:
    return prefix + luhn_check_digit(prefix)


@pytest.fixture
def record() -> CardRecord:
    return CardRecord(make_number(), CardKind.SOCIAL_SECURITY, "310115", dt.date(2030, 12, 31))


@pytest.fixture
def section() -> PcscSection:
    return PcscSection(reader=READER_SLOT0, timeout_s=3)


@pytest.fixture
def reader(pcscd: Pcscd, section: PcscSection) -> Iterator[PcscReader]:
    with PcscReader(section) as r:
        yield r


@pytest.fixture
def card(pcscd: Pcscd, record: CardRecord) -> Iterator[VirtualCard]:
    """A virtual card (not yet inserted) on slot 0; taken away and seen gone after the test."""
    virtual = VirtualCard(record, port=pcscd.port).start()
    yield virtual
    virtual.close()
    if list_readers() is not None:
        with PcscReader(PcscSection(reader=READER_SLOT0)) as r:
            assert r.wait_for_removal(3), "the virtual card was still seen after the test"
