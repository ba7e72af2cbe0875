"""The PC/SC card reader transport: pyscard over pcscd, with the profile logic from ``profile.py``.

Thin by design: find the reader, wait for a card, open a session and hand its ``transmit`` to
:func:`device.pcsc.profile.read_card`. pyscard's exceptions and PC/SC result codes are translated
here into :mod:`device.errors` / :mod:`device.pcsc.errors` classes, once, at this boundary.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import TracebackType

from smartcard import scard
from smartcard.Exceptions import SmartcardException
from smartcard.pcsc.PCSCReader import PCSCReader

from device.clock import SYSTEM_CLOCK, Clock
from device.config import PcscSection
from device.errors import DeviceClosedError, DeviceError, DeviceTimeoutError, DeviceUnavailableError
from device.pcsc.apdu import command_name
from device.pcsc.errors import CardRemovedError, NoCardError
from device.pcsc.profile import DEFAULT_CHUNK, CardRecord, parse_aid, read_card

log = logging.getLogger(__name__)

_SERVICE_GONE = frozenset(
    {scard.SCARD_E_NO_SERVICE, scard.SCARD_E_SERVICE_STOPPED, scard.SCARD_F_COMM_ERROR}
)
_READER_GONE = frozenset(
    {
        scard.SCARD_E_NO_READERS_AVAILABLE,
        scard.SCARD_E_READER_UNAVAILABLE,
        scard.SCARD_E_UNKNOWN_READER,
    }
)
_CARD_GONE = frozenset(
    {
        scard.SCARD_W_REMOVED_CARD,
        scard.SCARD_E_NO_SMARTCARD,
        scard.SCARD_E_NOT_TRANSACTED,
        scard.SCARD_W_UNPOWERED_CARD,
        scard.SCARD_W_UNRESPONSIVE_CARD,
        scard.SCARD_W_RESET_CARD,
    }
)
# A context that pcscd no longer knows (it restarted) must be dropped and established again.
_CONTEXT_LOST = _SERVICE_GONE | {scard.SCARD_E_INVALID_HANDLE}


def _scard_message(hresult: int) -> str:
    return str(scard.SCardGetErrorMessage(hresult)).rstrip(". ")


def pcsc_error(hresult: int, action: str, reader: str | None = None) -> DeviceError:
    """The Linli error for a PC/SC result code; ``action`` says what was being done."""
    code = f"{_scard_message(hresult)}, 0x{hresult & 0xFFFFFFFF:08X}"
    where = f" on reader {reader!r}" if reader else ""
    if hresult in _SERVICE_GONE:
        return DeviceUnavailableError(
            f"pcscd is not running (or stopped) while {action} ({code}); start it "
            "(systemctl start pcscd, or pcscd --foreground) and check that it is installed"
        )
    if hresult in _READER_GONE:
        return DeviceUnavailableError(
            f"card reader{where} is not available while {action} ({code}); check its cable"
        )
    if hresult in _CARD_GONE:
        return CardRemovedError(
            f"card removed or lost contact while {action}{where} ({code}); present it again"
        )
    if hresult == scard.SCARD_E_TIMEOUT:
        return DeviceTimeoutError(f"PC/SC timed out while {action}{where} ({code})")
    if hresult == scard.SCARD_E_SHARING_VIOLATION:
        return DeviceError(f"reader{where} is held exclusively by another program ({code})")
    return DeviceError(f"PC/SC error while {action}{where} ({code})")


def _translate(err: SmartcardException, action: str, reader: str) -> DeviceError:
    hresult = int(getattr(err, "hresult", -1))
    if hresult in (-1, scard.SCARD_S_SUCCESS):
        # pyscard raises with no PC/SC code when the R-APDU is empty: the vpcd or CCID driver lost
        # the card between command and answer.
        return CardRemovedError(
            f"card stopped answering while {action} on reader {reader!r} (removed mid-exchange?); "
            "present it again"
        )
    return pcsc_error(hresult, action, reader)


class CardSession:
    """One connection to the card in ``reader``; ``transmit`` sends a C-APDU, returns the R-APDU."""

    def __init__(self, reader: str) -> None:
        self.reader = reader
        self._open = False
        try:
            self._connection = PCSCReader(reader).createConnection()
        except SmartcardException as err:
            raise _translate(err, "connecting to the card", reader) from err
        try:
            self._connection.connect(disposition=scard.SCARD_LEAVE_CARD)
            self.atr = bytes(self._connection.getATR())
        except SmartcardException as err:
            self._release()
            raise _translate(err, "connecting to the card", reader) from err
        self._open = True

    def transmit(self, apdu: bytes) -> bytes:
        if not self._open:
            raise DeviceClosedError(f"card session on {self.reader!r} used after close()")
        try:
            data, sw1, sw2 = self._connection.transmit(list(apdu))
        except SmartcardException as err:
            raise _translate(err, f"sending {command_name(apdu)}", self.reader) from err
        return bytes(data) + bytes((sw1, sw2))

    def _release(self) -> None:
        try:
            self._connection.release()
        except SmartcardException as err:
            # The card or pcscd already went away; nothing is left to release.
            log.debug("releasing the card connection on %s: %s", self.reader, err)

    def close(self) -> None:
        if self._open:
            self._open = False
            self._release()

    def __enter__(self) -> CardSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class CardRead:
    """A successful read: where, which card (ATR) and what its record says."""

    reader: str
    atr: bytes
    record: CardRecord


class PcscReader:
    """The community / social-security card reader (config ``[pcsc]``): a context manager.

    ``clock`` measures the waiting deadlines; pcscd itself is waited on in slices of ``slice_s``.
    """

    def __init__(
        self,
        config: PcscSection | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        chunk: int = DEFAULT_CHUNK,
        slice_s: float = 0.25,
    ) -> None:
        self.config = config or PcscSection()
        self.aid = parse_aid(self.config.aid)
        self.clock = clock
        self.chunk = chunk
        self.slice_s = slice_s
        self._context: int | None = None
        self._states: dict[str, int] = {}
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        """Release the PC/SC context; safe twice."""
        self._closed = True
        self._drop_context()

    def __enter__(self) -> PcscReader:
        self._check_open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise DeviceClosedError("PcscReader used after close()")

    def _get_context(self) -> int:
        self._check_open()
        if self._context is None:
            hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
            if hresult != scard.SCARD_S_SUCCESS:
                raise pcsc_error(hresult, "connecting to pcscd")
            self._context = int(context)
        return self._context

    def _drop_context(self) -> None:
        context, self._context = self._context, None
        self._states.clear()
        if context is not None:
            hresult = scard.SCardReleaseContext(context)
            if hresult != scard.SCARD_S_SUCCESS:
                log.debug("releasing PC/SC context: %s", _scard_message(hresult))

    def _fail(self, hresult: int, action: str, reader: str | None = None) -> DeviceError:
        if hresult in _CONTEXT_LOST:
            self._drop_context()
        return pcsc_error(hresult, action, reader)

    # -- readers ---------------------------------------------------------------------------------
    def list_readers(self) -> list[str]:
        """Names of the PC/SC readers pcscd knows (empty when none)."""
        hresult, names = scard.SCardListReaders(self._get_context(), [])
        if hresult == scard.SCARD_E_NO_READERS_AVAILABLE:
            return []
        if hresult != scard.SCARD_S_SUCCESS:
            raise self._fail(hresult, "listing readers")
        return [str(name) for name in names]

    def find_reader(self) -> str:
        """The first reader whose name contains ``pcsc.reader`` (case-insensitive)."""
        names = self.list_readers()
        wanted = self.config.reader
        for name in names:
            if wanted.lower() in name.lower():
                return name
        present = ", ".join(repr(n) for n in names) if names else "none"
        raise DeviceUnavailableError(
            f"no PC/SC reader matches pcsc.reader={wanted!r}; readers present: {present}"
        )

    def _state(self, reader: str, timeout_s: float) -> int:
        """Wait up to ``timeout_s`` for the reader's state to change from the last one seen."""
        current = self._states.get(reader, scard.SCARD_STATE_UNAWARE)
        timeout_ms = max(0, int(timeout_s * 1000))
        hresult, states = scard.SCardGetStatusChange(
            self._get_context(), timeout_ms, [(reader, current)]
        )
        if hresult == scard.SCARD_E_TIMEOUT:
            return int(current)
        if hresult != scard.SCARD_S_SUCCESS:
            raise self._fail(hresult, "waiting for a card", reader)
        state = int(states[0][1])
        if state & (scard.SCARD_STATE_UNKNOWN | scard.SCARD_STATE_UNAVAILABLE):
            self._states.pop(reader, None)
            raise DeviceUnavailableError(f"card reader {reader!r} went away; check its cable")
        self._states[reader] = state
        return state

    def card_present(self, reader: str | None = None) -> bool:
        """Whether a card is in ``reader`` (the configured one by default), without waiting."""
        name = reader or self.find_reader()
        self._states.pop(name, None)
        return bool(self._state(name, 0) & scard.SCARD_STATE_PRESENT)

    def wait_for_change(self, reader: str, timeout_s: float) -> bool:
        """Block up to ``timeout_s`` for an insert/remove on ``reader``; True when a card is in."""
        return bool(self._state(reader, timeout_s) & scard.SCARD_STATE_PRESENT)

    def _wait(self, want_present: bool, timeout_s: float | None) -> str | None:
        timeout = self.config.timeout_s if timeout_s is None else timeout_s
        deadline = self.clock.monotonic() + timeout
        wait_s = 0.0  # first look without blocking: the state may already be the wanted one
        while True:
            name = self.find_reader()
            if self.wait_for_change(name, wait_s) == want_present:
                return name
            wait_s = min(self.slice_s, max(0.0, deadline - self.clock.monotonic()))
            if self.clock.monotonic() >= deadline:
                return None

    def wait_for_card(self, timeout_s: float | None = None) -> str:
        """Wait (``pcsc.timeout_s`` by default) for a card; return the reader's name."""
        name = self._wait(True, timeout_s)
        if name is None:
            timeout = self.config.timeout_s if timeout_s is None else timeout_s
            raise NoCardError(f"no card presented within {timeout:g} s; present the card")
        return name

    def wait_for_removal(self, timeout_s: float | None = None) -> bool:
        """Wait for the card to be taken away; False when it is still there at the deadline."""
        return self._wait(False, timeout_s) is not None

    # -- cards -----------------------------------------------------------------------------------
    def session(self, reader: str | None = None) -> CardSession:
        """Connect to the card in ``reader`` (the configured one by default)."""
        self._check_open()
        return CardSession(reader or self.find_reader())

    def read(self, timeout_s: float | None = None) -> CardRead:
        """Wait for a card, SELECT the application and read its record."""
        name = self.wait_for_card(timeout_s)
        with self.session(name) as card:
            record = read_card(card.transmit, self.aid, self.chunk)
            atr = card.atr
        log.info("read %s %s from %s", record.kind.slug, record.masked_number, name)
        return CardRead(name, atr, record)

    def read_record(self, timeout_s: float | None = None) -> CardRecord:
        return self.read(timeout_s).record

    def read_card_number(self, timeout_s: float | None = None) -> str:
        """The card number (personal data: mask it before logging, see ``mask_card_number``)."""
        return self.read(timeout_s).record.number
