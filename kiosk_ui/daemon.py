"""The kiosk daemon: what ``linli kiosk run --config FILE`` runs on a community kiosk.

It owns the peripherals (house rule: one coordinator per device): the ID-card reader
(``[idcard]``, polled by :class:`~device.idcard.watcher.IdCardWatcher`), the QR scanner
(``[scanner]``), the A4 printer (``[a4printer]``, CUPS) and the receipt printer (``[receipt]``), the
device store and the sync daemon (``[sync]``; without a ``host`` the kiosk runs offline from its
cache). It builds the :class:`~kiosk_ui.session.KioskSession` the UI draws and feeds it the
reader's and scanner's events. No Kivy here: ``--headless`` runs this alone, and the Kivy app
(:mod:`kiosk_ui.app`) runs it in the background of its window.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from device.a4 import A4Printer
from device.atrest import DeviceKey
from device.clock import SYSTEM_CLOCK, Clock
from device.config import DeviceConfig
from device.credential import CredentialKeyError, SigningKey, load_signing_key
from device.errors import ConfigError
from device.escpos.printer import ReceiptPrinter
from device.idcard.watcher import IdCardWatcher
from device.scanner import ScanRejectedError
from device.scanner.factory import Scanner, open_scanner, read_scans
from device.store import ResidentCache, Store, open_store
from device.sync.daemon import STORE_FILE, SyncDaemon
from kiosk_ui.certificates import load_templates
from kiosk_ui.control import ControlServer
from kiosk_ui.issuing import CertificateDesk
from kiosk_ui.online import OnlineApplications, OnlineResidents
from kiosk_ui.printing import CertificateService
from kiosk_ui.screens import Screen
from kiosk_ui.services import (
    CertificateChecker,
    KioskServices,
    NoticeBoard,
    ServiceGuide,
    SubsidyStatus,
)
from kiosk_ui.session import KioskSession, SessionSettings

log = logging.getLogger(__name__)

SCAN_WAIT_S = 0.2
TICK_S = 0.5


@dataclass(frozen=True)
class Indicators:
    """What the status bar shows: server link and card reader health (not personal)."""

    online: bool
    reader_ok: bool


class KioskDaemon:
    """Reader + scanner + printers + store + sync + session for the kiosk of ``config``.

    ``on_change(screen)`` is the session's callback (the Kivy app schedules a redraw from it).
    A context manager; :meth:`start` runs the device threads in the background, :meth:`run` also
    ticks the session in the calling thread until stopped (headless).
    """

    def __init__(
        self,
        config: DeviceConfig,
        *,
        clock: Clock = SYSTEM_CLOCK,
        on_change: Callable[[Screen], None] | None = None,
        signing_key: SigningKey | None = None,
    ) -> None:
        """``signing_key``: use this key instead of loading ``[certificate] signing_key`` (the
        virtual site and tests pass a generated one)."""
        if config.device.kind != "kiosk":
            raise ConfigError(
                f"device.kind is {config.device.kind!r}: `linli kiosk run` needs a kiosk config"
            )
        self.config = config
        self._clock = clock
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        data_dir = Path(config.device.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        key = DeviceKey.for_data_dir(data_dir)
        self.store: Store = open_store(data_dir / STORE_FILE, key=key, clock=clock)
        self.sync: SyncDaemon | None = None
        self.scanner: Scanner | None = None
        self.watcher: IdCardWatcher | None = None
        self.a4: A4Printer | None = None
        self.receipts: ReceiptPrinter | None = None
        self.control: ControlServer | None = None
        try:
            signing = signing_key or self._signing_key()
            a4 = config.a4printer
            self.a4 = A4Printer(a4, data_dir / "spool" / "a4", clock, a4.server or None, key=key)
            self.receipts = ReceiptPrinter(
                config.receipt, data_dir / "spool" / "receipt", clock, key=key
            )
            if config.sync.host:
                self.sync = SyncDaemon(config, store=self.store, clock=clock)
            else:
                log.warning("sync.host is empty: running offline from the local cache")
            self.desk = CertificateDesk(
                templates=load_templates(config.certificate.templates_dir),
                households=ResidentCache(self.store),
                config=config.certificate,
                signing_key=signing,
                a4=self.a4,
                receipts=self.receipts,
                clock=clock,
            )
            self.session = KioskSession(
                self._services(signing),
                clock=clock,
                settings=SessionSettings(
                    idle_timeout_s=config.kiosk.idle_timeout_s,
                    result_timeout_s=config.kiosk.result_timeout_s,
                ),
                on_change=on_change,
            )
            if config.idcard.backend == "serial":
                self.watcher = IdCardWatcher(
                    config.idcard,
                    self.session.card_placed,
                    on_read_error=self.session.card_placed,
                    on_lifted=self.session.card_lifted,
                    clock=clock,
                )
            else:
                log.warning("idcard.backend is 'none': residents cannot be identified")
            self.scanner = open_scanner(config.scanner, clock, self._rejected)
        except BaseException:
            self._release()
            raise

    def _signing_key(self) -> SigningKey:
        section = self.config.certificate
        kid = section.key_id or self.config.device.id
        try:
            return load_signing_key(section.signing_key, kid)
        except CredentialKeyError as err:
            raise ConfigError(
                f"certificate.signing_key: {err}; a kiosk cannot issue certificates without "
                "its key: provision the device"
            ) from err

    def _services(self, signing: SigningKey) -> KioskServices:
        kiosk = self.config.kiosk
        rpc = self.sync.rpc if self.sync is not None else None
        online = self.online
        desk = self.desk
        return KioskServices(
            households=desk.households,
            certificates=CertificateService(desk, self.store),
            guide=ServiceGuide(self.store),
            notices=NoticeBoard(self.store, community_id=kiosk.community_id or None),
            online=online,
            online_residents=OnlineResidents(rpc, online, timeout_s=kiosk.online_timeout_s),
            applications=OnlineApplications(rpc, online, timeout_s=kiosk.online_timeout_s),
            subsidy=SubsidyStatus(
                min_age=kiosk.subsidy_min_age, deadline=kiosk.subsidy_deadline_md()
            ),
            checker=CertificateChecker(
                {signing.kid: signing.verify_key},
                {t.name: t.title for t in desk.templates.values()},
            ),
        )

    # -- what the UI reads -----------------------------------------------------------------------
    def online(self) -> bool:
        """Whether the sync agent is connected to the server."""
        return self.sync is not None and self.sync.agent.connected

    def indicators(self) -> Indicators:
        reader_ok = self.watcher is not None and self.watcher.available
        return Indicators(online=self.online(), reader_ok=reader_ok)

    # -- running ---------------------------------------------------------------------------------
    def __enter__(self) -> KioskDaemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start the reader, scanner and sync threads; the caller ticks the session (the Kivy
        app from its clock, :meth:`run` from its loop). The control socket (``[kiosk]
        control_socket``) comes first: a path another daemon holds fails before anything runs."""
        if self.config.kiosk.control_socket and self.control is None:
            control = ControlServer(self.config.kiosk.control_socket, self.session, self.indicators)
            control.start()
            self.control = control
        if self.watcher is not None:
            self.watcher.start()
        if self.sync is not None:
            self.sync.start()
            self._spawn("linli-sync-upkeep", self._sync_upkeep)
        if self.scanner is not None:
            self.scanner.open()
            self._spawn("linli-scanner", self._read_scans)
        log.info("kiosk %s running", self.config.device.id)

    def run(self, stop: threading.Event) -> None:
        """:meth:`start`, then tick the session every 0.5 s until ``stop``; then :meth:`stop`."""
        self._stop = stop
        try:
            self.start()
            while not stop.wait(TICK_S):
                self.session.tick()
        finally:
            self.stop()

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _read_scans(self) -> None:
        assert self.scanner is not None
        read_scans(self.scanner, self._stop, self.session.scan, wait_s=SCAN_WAIT_S)

    def _rejected(self, error: ScanRejectedError) -> None:
        log.info("scan refused by the scanner: %s", error.reason)
        self.session.scan_refused()

    def _sync_upkeep(self) -> None:
        assert self.sync is not None
        self.sync.run_until(self._stop, tick_s=TICK_S)

    def stop(self) -> None:
        """End the session (wiping it), stop the threads, release everything (safe twice)."""
        self._stop.set()
        if self.control is not None:  # no touches from outside while the session ends
            self.control.stop()
            self.control = None
        session = getattr(self, "session", None)
        if session is not None:
            session.close(timeout_s=10.0)
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()
        self._release()

    def _release(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None
        if self.scanner is not None:
            self.scanner.close()
            self.scanner = None
        if self.sync is not None:
            self.sync.stop()
            self.sync = None
        if self.receipts is not None:
            self.receipts.close()
        if self.a4 is not None:
            self.a4.close()
        self.store.close()
