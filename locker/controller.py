"""The locker's coordinator: the one owner of the locks, fed by scans and server commands.

Scans (:meth:`Locker.scan`, any thread) and commands (executors run by the sync daemon's
:class:`~device.sync.commands.CommandRunner`) only *journal* an open request together with the
compartment's transition and its event, in one store transaction. The loop thread
(:meth:`Locker.tick`) then carries requests out against the hardware and follows the doors. Its
decisions depend on the journal and the doors' current state, not on remembered edges, so a
restart at any step picks up where the process died (docs/locker.md, "Crash safety").
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from device.clock import SYSTEM_CLOCK, Clock
from device.config import LockerSection
from device.credential import VerifyKey
from device.locks import DoorChange, DoorState, LockController, LockError
from device.scanner import ScanRejectedError
from device.store import Store, Transaction
from locker import crashpoints
from locker.access import (
    ACCEPTED_EVENT,
    REFUSED_EVENT,
    Gatekeeper,
    Lockout,
    Refusal,
    forget_expired_credentials,
)
from locker.compartments import Compartment, Compartments, State
from locker.errors import CompartmentBusyError, CompartmentStateError
from locker.intents import Flow, Intent, Intents, Status

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 2
"""A pulse that does not open the door is retried once; then the compartment is in fault."""
DOOR_SETTLE_S = 1.0
"""How long :meth:`Locker.start` reads the doors for a debounced state (it takes tens of ms)."""

SCAN_REJECTIONS = {
    "too_long": "oversized",
    "stalled": "truncated",
    "not_utf8": "not-a-credential",
    "control_character": "not-a-credential",
    "empty": "not-a-credential",
    "bad_frame": "not-a-credential",
}
"""Scanner-level refusals (device/scanner/events.py) as locker refusal reasons."""


class Indicator(Protocol):
    """The locker's sound and light: a door left open, a refused scan (hardware-specific)."""

    def door_alarm(self, compartment: int, active: bool) -> None: ...

    def remind(self, compartment: int) -> None: ...

    def refused(self, reason: str) -> None: ...


class LogIndicator:
    """An indicator that only logs (lockers without a buzzer or LED, and the simulator)."""

    def __init__(self) -> None:
        self.reminders: list[int] = []

    def door_alarm(self, compartment: int, active: bool) -> None:
        log.warning("door %d alarm %s", compartment, "on" if active else "off")

    def remind(self, compartment: int) -> None:
        self.reminders.append(compartment)
        log.warning("door %d is still open: reminder", compartment)

    def refused(self, reason: str) -> None:
        log.info("scan refused: %s", reason)


@dataclass(frozen=True)
class ScanOutcome:
    """What a scan did: ``opened`` is the compartment it will open, else ``reason`` says why not."""

    accepted: bool
    reason: str | None = None
    compartment: int | None = None


@dataclass
class _Door:
    state: DoorState = DoorState.UNKNOWN
    open_since: float | None = None
    """Monotonic time the door was first seen open in this run."""
    alarmed: bool = False
    next_reminder: float = 0.0


class Locker:
    """Compartments, credentials and doors of the locker ``device_id`` (see the module doc)."""

    def __init__(
        self,
        store: Store,
        locks: LockController,
        *,
        device_id: str,
        keys: Mapping[str, VerifyKey],
        section: LockerSection,
        clock: Clock = SYSTEM_CLOCK,
        indicator: Indicator | None = None,
    ) -> None:
        self.store = store
        self.locks = locks
        self.section = section
        self.compartments = Compartments(store)
        self.intents = Intents(store)
        self.gate = Gatekeeper(store, keys, device_id, section, clock)
        self.lockout = Lockout(section, clock)
        self.indicator: Indicator = indicator or LogIndicator()
        self._clock = clock
        self._wake = threading.Event()
        self._hw = threading.Lock()  # one thread drives the locks at a time
        self._doors = {n: _Door() for n in range(1, locks.lock_count + 1)}
        self._recovering: set[int] = set()
        self._started = False

    @property
    def sizes(self) -> list[str]:
        sizes: list[str] = list(self.section.sizes) or ["M"] * self.locks.lock_count
        if len(sizes) != self.locks.lock_count:
            raise CompartmentStateError(
                f"[locker] sizes lists {len(sizes)} compartments but [locks] has "
                f"{self.locks.lock_count} locks: one size per lock"
            )
        return sizes

    # -- start and recovery ----------------------------------------------------------------------
    def start(self) -> None:
        """Create the compartments, read the doors and sort out what a previous run left:
        requests too old to carry out are dropped, the rest resume in :meth:`tick`."""
        self.compartments.ensure(self.sizes, self._clock.time())
        with self._hw:
            self._read_doors()
        now = self._clock.time()
        for intent in self.intents.active():
            if intent.status is Status.PENDING:
                if now - intent.created_at > self.section.intent_ttl_s:
                    self._abandon(intent)
                else:
                    self._recovering.add(intent.id)
            elif (
                intent.status is Status.PULSED
                and now - (intent.pulsed_at or 0) > self.section.intent_ttl_s
                and self._doors[intent.compartment].state is not DoorState.OPEN
            ):
                # Pulsed long ago and closed now: nobody can say whether the person came.
                self._fail(intent, "outcome-unknown-after-restart")
        with self.store.transaction() as tx:
            forget_expired_credentials(tx, now)
        self._started = True
        log.info("locker ready: %d compartments", len(self._doors))

    def _read_doors(self) -> None:
        """Poll until every door has a debounced state, or :data:`DOOR_SETTLE_S` passes.

        Recovery decides on the doors: an open one is the witness of a pulse the last run did not
        record. A single poll right after the controller starts reads UNKNOWN (the debounce has
        not held yet), and taking that for "not open" pulses the lock a second time.
        """
        deadline = self._clock.monotonic() + DOOR_SETTLE_S
        self._poll()
        while (
            any(door.state is DoorState.UNKNOWN for door in self._doors.values())
            and self._clock.monotonic() < deadline
        ):
            self._clock.sleep(self.section.tick_ms / 1000)
            self._poll()

    def _abandon(self, intent: Intent) -> None:
        with self.store.transaction() as tx:
            self.intents.update(tx, intent, Status.ABANDONED)
            compartment = self.compartments.get(intent.compartment, tx)
            back = State.FREE if intent.flow.deposits else State.HOLDING
            self.compartments.move(tx, intent.compartment, back, reason="request-expired")
            tx.emit(
                "compartment.open_dropped",
                {
                    "compartment": intent.compartment,
                    "intent": intent.id,
                    "flow": str(intent.flow),
                    "case": compartment.case_id,
                    "reason": "too old to carry out after a restart",
                },
            )
        log.warning(
            "open request %d for compartment %d dropped: too old", intent.id, intent.compartment
        )

    # -- scans (any thread) ----------------------------------------------------------------------
    def scan(self, text: str) -> ScanOutcome:
        """Check a scanned text; on success journal the opening (the loop pulses the lock)."""
        try:
            with self.store.transaction() as tx:
                if self.lockout.remaining(tx) > 0:
                    raise Refusal("locked-out", "the scanner is locked out")
                self.lockout.end_if_over(tx)
                access = self.gate.check(tx, text)
                self.journal(
                    tx,
                    access.compartment,
                    access.flow,
                    f"cti:{access.claims.cti_hex}",
                    case=access.claims.sub,
                )
                self.lockout.accepted(tx)
                tx.emit(
                    ACCEPTED_EVENT,
                    {
                        "cti": access.claims.cti_hex,
                        "kind": access.claims.kind,
                        "compartment": access.compartment.number,
                        "case": access.claims.sub,
                    },
                )
        except Refusal as refusal:
            return self._refused(refusal)
        except CompartmentBusyError as err:
            return self._refused(Refusal("compartment-busy", str(err)))
        crashpoints.reached("scan-accepted")
        self._wake.set()
        log.info("scan accepted: opening compartment %d", access.compartment.number)
        return ScanOutcome(True, compartment=access.compartment.number)

    def scan_rejected(self, error: ScanRejectedError) -> ScanOutcome:
        """Audit a payload the scanner itself refused (too long, not text...)."""
        reason = SCAN_REJECTIONS.get(error.reason, "not-a-credential")
        return self._refused(Refusal(reason, str(error)))

    def _refused(self, refusal: Refusal) -> ScanOutcome:
        with self.store.transaction() as tx:
            tx.emit(REFUSED_EVENT, refusal.audit())
            if refusal.reason == "locked-out":
                self.lockout.ignore(tx)  # does not lengthen the lockout
            else:
                self.lockout.end_if_over(tx)
                delay = self.lockout.refused(tx)
                if delay is not None:
                    log.warning("scanner locked out for %.0f s after invalid scans", delay)
        log.warning("scan refused: %s", refusal.reason)
        self.indicator.refused(refusal.reason)
        return ScanOutcome(False, reason=refusal.reason, compartment=refusal.compartment)

    def journal(
        self, tx: Transaction, compartment: Compartment, flow: Flow, source: str, *, case: str
    ) -> Intent:
        """Journal an open request and the compartment's move in ``tx`` (the loop carries it out
        once ``tx`` commits); :class:`CompartmentBusyError` if one is already in progress."""
        if flow.deposits:
            content = "documents" if flow is Flow.DEPOSIT else "result"
            self.compartments.move(
                tx,
                compartment.number,
                State.RESERVED,
                reason=str(flow),
                expect=State.FREE,
                case_id=case,
                content=content,
            )
        else:
            self.compartments.move(
                tx,
                compartment.number,
                State.OPEN_FOR_PICKUP,
                reason=str(flow),
                expect=State.HOLDING,
            )
        return self.intents.add(tx, compartment.number, flow, source)

    # -- the loop (one thread) -------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Tick until ``stop``; scans and commands wake it at once."""
        if not self._started:
            self.start()
        interval = self.section.tick_ms / 1000
        while not stop.is_set():
            self.tick()
            self._wake.wait(interval)
            self._wake.clear()

    def wake(self) -> None:
        self._wake.set()

    def tick(self) -> None:
        """Read the doors, carry open requests forward, raise and clear alarms."""
        with self._hw:
            self._poll()
            for intent in self.intents.active():
                self._advance(intent)
            self._alarms()

    def _poll(self) -> None:
        try:
            changes = self.locks.poll()
        except LockError as err:
            log.warning("cannot read the doors: %s", err)
            return
        for change in changes:
            self._door_changed(change)

    def _door_changed(self, change: DoorChange) -> None:
        number, state = change.lock, change.state
        door = self._doors[number]
        door.state = state
        now = self._clock.monotonic()
        with self.store.transaction() as tx:
            if state is DoorState.OPEN:
                door.open_since = now
            elif state is DoorState.CLOSED:
                self._clear_alarm(tx, number, door, now)
                door.open_since = None
            cursor = tx.execute(
                "UPDATE compartments SET door = ? WHERE number = ? AND door != ?",
                (str(state), number, str(state)),
            )
            if cursor.rowcount == 0:
                return  # as the last run left it (read again after a restart): already reported
            data: dict[str, Any] = {"compartment": number, "state": str(state)}
            if state is DoorState.OPEN and self.intents.active_for(tx, number) is None:
                # A reed wire cut reads "open" exactly like a door forced open: report, never block.
                data["problem"] = "opened-without-pulse"
                log.warning("door %d opened without a pulse: forced, or a broken sensor", number)
            tx.emit("compartment.door", data)

    def _advance(self, intent: Intent) -> None:
        door = self._doors[intent.compartment].state
        if intent.status is Status.PENDING:
            if intent.attempts and self._clock.time() < (intent.pulsed_at or 0) + 1.0:
                return  # the lock board did not answer just now: give it a second
            if intent.id in self._recovering and door is DoorState.OPEN:
                # Killed between the pulse and its record: the open door is the pulse's witness.
                self._recovering.discard(intent.id)
                self._record_pulse(intent, recovered=True)
                return
            self._recovering.discard(intent.id)
            self._pulse(intent)
        elif intent.status is Status.PULSED:
            if door is DoorState.OPEN:
                with self.store.transaction() as tx:
                    self.intents.update(tx, intent, Status.OPENED)
                crashpoints.reached("door-opened")
            elif self._clock.time() >= (intent.pulsed_at or 0) + self.section.open_confirm_s:
                if intent.attempts < MAX_ATTEMPTS:
                    log.warning(
                        "compartment %d did not open after its pulse; retrying", intent.compartment
                    )
                    self._pulse(intent)
                else:
                    self._fail(intent, "lock-did-not-open")
        elif intent.status is Status.OPENED and door is DoorState.CLOSED:
            self._complete(intent)

    def _pulse(self, intent: Intent) -> None:
        crashpoints.reached("before-pulse")
        try:
            self.locks.pulse(intent.compartment)
        except LockError as err:
            self._pulse_failed(intent, err)
            return
        crashpoints.reached("after-pulse")
        self._record_pulse(intent, recovered=False)

    def _record_pulse(self, intent: Intent, *, recovered: bool) -> None:
        with self.store.transaction() as tx:
            now = self._clock.time()
            attempt = intent.attempts + 1
            self.intents.update(tx, intent, Status.PULSED, attempts=attempt, pulsed_at=now)
            compartment = self.compartments.get(intent.compartment, tx)
            if compartment.state is State.RESERVED:
                self.compartments.move(
                    tx, intent.compartment, State.OPEN_FOR_DEPOSIT, reason="unlocked"
                )
            data: dict[str, Any] = {
                "compartment": intent.compartment,
                "intent": intent.id,
                "flow": str(intent.flow),
                "attempt": attempt,
            }
            if recovered:
                data["recovered"] = True
            tx.emit("compartment.unlocked", data)
        crashpoints.reached("pulse-recorded")

    def _pulse_failed(self, intent: Intent, err: LockError) -> None:
        log.warning("compartment %d: pulse failed: %s", intent.compartment, err)
        with self.store.transaction() as tx:
            attempt = intent.attempts + 1
            intent = self.intents.update(
                tx, intent, intent.status, attempts=attempt, pulsed_at=self._clock.time()
            )
            tx.emit(
                "compartment.unlock_failed",
                {
                    "compartment": intent.compartment,
                    "attempt": attempt,
                    "error": type(err).__name__,
                },
            )
        if intent.attempts >= MAX_ATTEMPTS:
            self._fail(intent, "lock-not-answering")

    def _fail(self, intent: Intent, why: str) -> None:
        with self.store.transaction() as tx:
            self.intents.update(tx, intent, Status.FAILED)
            resume = State.FREE if intent.flow.deposits else State.HOLDING
            self.compartments.move(
                tx, intent.compartment, State.FAULT, reason=why, resume_state=resume, fault=why
            )
            tx.emit(
                "compartment.fault",
                {"compartment": intent.compartment, "reason": why, "intent": intent.id},
            )
        log.error("compartment %d is in fault: %s", intent.compartment, why)

    def _complete(self, intent: Intent) -> None:
        with self.store.transaction() as tx:
            self.intents.update(tx, intent, Status.DONE)
            compartment = self.compartments.get(intent.compartment, tx)
            if intent.flow.deposits:
                self.compartments.move(
                    tx,
                    intent.compartment,
                    State.HOLDING,
                    reason="door-closed",
                    expect=State.OPEN_FOR_DEPOSIT,
                )
                event = "compartment.deposited"
            else:
                self.compartments.move(
                    tx,
                    intent.compartment,
                    State.FREE,
                    reason="door-closed",
                    expect=State.OPEN_FOR_PICKUP,
                )
                event = "compartment.emptied"
            tx.emit(
                event,
                {
                    "compartment": intent.compartment,
                    "case": compartment.case_id,
                    "content": compartment.content,
                    "flow": str(intent.flow),
                },
            )
        crashpoints.reached("door-closed")

    # -- alarms ----------------------------------------------------------------------------------
    def _alarms(self) -> None:
        now = self._clock.monotonic()
        for number, door in self._doors.items():
            if door.open_since is None:
                continue
            open_s = now - door.open_since
            if not door.alarmed and open_s >= self.section.door_alarm_s:
                with self.store.transaction() as tx:
                    tx.emit(
                        "compartment.alarm",
                        {"compartment": number, "alarm": "door-open", "open_s": round(open_s, 1)},
                    )
                door.alarmed = True
                door.next_reminder = now + self.section.reminder_interval_s
                self.indicator.door_alarm(number, True)
            elif door.alarmed and now >= door.next_reminder:
                door.next_reminder = now + self.section.reminder_interval_s
                self.indicator.remind(number)

    def _clear_alarm(self, tx: Transaction, number: int, door: _Door, now: float) -> None:
        if not door.alarmed:
            return
        open_s = now - (door.open_since or now)
        tx.emit(
            "compartment.alarm_cleared",
            {"compartment": number, "alarm": "door-open", "open_s": round(open_s, 1)},
        )
        door.alarmed = False
        self.indicator.door_alarm(number, False)

    # -- status ----------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        intents = {i.compartment: i for i in self.intents.active()}
        rows = []
        for compartment in self.compartments.all():
            row = compartment.to_json()
            row["door"] = str(self._doors[compartment.number].state)
            intent = intents.get(compartment.number)
            row["request"] = None if intent is None else str(intent.status)
            rows.append(row)
        return {"compartments": rows, "lockout": self.lockout.snapshot(self.store)}

    def doors(self) -> Sequence[DoorState]:
        return [d.state for d in self._doors.values()]
