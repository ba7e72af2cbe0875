"""Runs signed commands from ``down/cmd`` exactly once and reports them (docs/commands.md).

Every message is verified (device/commands.py), checked against the store's inbox for replay, and
run by the executor registered for its type inside one store transaction that also records the
command id and queues the audit event: the effect, "this id was used" and the audit record commit
together or not at all. The result is then published on ``up/cmd-result``; if that publish is
lost, the ``cmd.result`` / ``cmd.refused`` event in the outbox is the durable record.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from device.clock import SYSTEM_CLOCK, Clock
from device.commands import (
    COMMAND_TYPE,
    MAX_RESULT_BYTES,
    Command,
    CommandError,
    CommandResult,
    ResultStatus,
    check_args,
    encode_result,
    verify_command,
)
from device.credential import VerifyKey
from device.store import ReplayedCommandError, Store, StoreError, Transaction
from device.sync.errors import SyncError

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

    from device.sync.agent import SyncAgent

__all__ = ["CommandOutcome", "CommandRunner", "Executor"]

log = logging.getLogger(__name__)

Executor = Callable[[Transaction, Mapping[str, Any]], Mapping[str, Any]]
"""``fn(tx, args) -> result``: carries out a command inside the store transaction ``tx``.

Raising anything rolls the transaction back (the command is then recorded as failed in a second
one). The result map goes to the server and into the audit event: JSON values, no personal data
unless the type is registered with ``personal=True``.
"""

RESULT_EVENT = "cmd.result"
REFUSED_EVENT = "cmd.refused"
RESULT_ROOM = 512
"""Bytes of ``up/cmd-result`` kept for ``id``, ``status`` and ``reason`` around the result map."""


@dataclass(frozen=True)
class CommandOutcome:
    """What became of one ``down/cmd`` message (what was published on ``up/cmd-result``)."""

    status: ResultStatus
    id: str | None
    type: str | None
    reason: str | None = None
    result: Mapping[str, Any] | None = field(default=None, repr=False)

    def message(self) -> CommandResult:
        return CommandResult(
            id=self.id,
            status=self.status,
            reason=self.reason,
            result=None if self.result is None else dict(self.result),
        )


@dataclass(frozen=True)
class _Registered:
    fn: Executor
    personal: bool


class _BadResult(SyncError, ValueError):
    """An executor returned something that cannot be reported (not a JSON map, too large)."""


class CommandRunner:
    """Verifies, de-duplicates, runs and audits the commands of ``device_id``.

    ``keys`` are the server's public keys by key id; ``skew_s`` is the clock-skew margin for
    ``iat`` and ``exp``; ``clock`` gives the wall time commands are checked against.
    """

    def __init__(
        self,
        store: Store,
        keys: Mapping[str, VerifyKey],
        device_id: str,
        *,
        clock: Clock = SYSTEM_CLOCK,
        skew_s: float = 60.0,
    ) -> None:
        if not keys:
            raise SyncError(
                "a command runner needs at least one server public key; provision the server's "
                "key on this device, or do not run commands"
            )
        self._store = store
        self._keys = dict(keys)
        self._device_id = device_id
        self._clock = clock
        self._skew_s = skew_s
        self._executors: dict[str, _Registered] = {}
        self._agent: SyncAgent | None = None
        # Messages arrive on the agent thread; a direct handle() from a test or another
        # transport must not interleave the seen() check and the record of the same id.
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"CommandRunner({self._device_id!r}, types={sorted(self._executors)})"

    def register(self, type: str, fn: Executor, *, personal: bool = False) -> None:
        """Run ``fn`` for commands of ``type`` (``personal=True``: its results are personal data,
        so their audit event is sealed at rest)."""
        if not COMMAND_TYPE.fullmatch(type):
            raise ValueError(f"command type {type!r} must be a dotted lower-case name")
        if type in self._executors:
            raise ValueError(f"command type {type!r} already has an executor")
        self._executors[type] = _Registered(fn, personal)

    def attach(self, agent: SyncAgent) -> None:
        """Receive ``agent``'s ``down/cmd`` messages and answer on its ``up/cmd-result``
        (call before ``agent.start()``)."""
        if agent.device_id != self._device_id:
            raise SyncError(
                f"the agent is device {agent.device_id}, this runner is {self._device_id}"
            )
        agent.add_handler("down/cmd", self.on_message)
        self._agent = agent

    def on_message(self, msg: mqtt.MQTTMessage) -> None:
        """The ``down/cmd`` handler: :meth:`handle` the payload, publish the outcome, and have
        the agent send the new audit event now rather than at its next poll."""
        outcome = self.handle(bytes(msg.payload))
        self.publish(outcome)
        if self._agent is not None:
            self._agent.notify()

    def publish(self, outcome: CommandOutcome) -> bool:
        """Send ``outcome`` on ``up/cmd-result``; False when offline (the outbox event remains)."""
        agent = self._agent
        if agent is None:
            return False
        if agent.publish("up/cmd-result", encode_result(outcome.message())):
            return True
        log.info(
            "command %s: result not published (offline); the %s event in the outbox records it",
            outcome.id or "-",
            REFUSED_EVENT if outcome.status == "refused" else RESULT_EVENT,
        )
        return False

    # ----------------------------------------------------------------- one command

    def handle(self, raw: bytes) -> CommandOutcome:
        """Verify, check replay, run and audit one ``down/cmd`` payload; never raises for what
        is in ``raw`` (only a broken store raises: ``StoreError``)."""
        now = self._clock.time()
        try:
            command = verify_command(
                raw, self._keys, device_id=self._device_id, now=now, skew_s=self._skew_s
            )
        except CommandError as err:
            return self._refuse(err.reason, err.command_id, err.command_type, str(err), now=now)
        with self._lock:
            if self._store.inbox.seen(command.id):
                return self._refuse(
                    "replayed", command.id, command.type, "command id already received", now=now
                )
            registered = self._executors.get(command.type)
            if registered is None:
                return self._refuse(
                    "unknown-type",
                    command.id,
                    command.type,
                    "no executor on this device",
                    now=now,
                    record=command,
                )
            return self._run(command, registered, now)

    def _run(self, command: Command, registered: _Registered, now: float) -> CommandOutcome:
        try:
            with self._store.transaction() as tx:
                result = _checked_result(registered.fn(tx, command.args))
                self._store.inbox.record(command.id, now, command.exp, "succeeded", tx=tx)
                tx.emit(
                    RESULT_EVENT,
                    {
                        "id": command.id,
                        "type": command.type,
                        "status": "succeeded",
                        "result": result,
                    },
                    personal=registered.personal,
                )
        except ReplayedCommandError:
            # Another process on this store recorded the id between seen() and record().
            return self._refuse("replayed", command.id, command.type, "recorded meanwhile", now=now)
        except Exception as err:  # noqa: BLE001 -- any executor failure is audited, never fatal
            return self._failed(command, err, now)
        log.info("command %s (%s) succeeded", command.id, command.type)
        return CommandOutcome("succeeded", command.id, command.type, result=result)

    def _failed(self, command: Command, err: Exception, now: float) -> CommandOutcome:
        # Only the class name: an exception message may quote personal data.
        error = {"error": type(err).__name__}
        log.warning(
            "command %s (%s) failed with %s; its effect was rolled back",
            command.id,
            command.type,
            error["error"],
        )
        try:
            with self._store.transaction() as tx:
                self._store.inbox.record(command.id, now, command.exp, "failed", tx=tx)
                tx.emit(
                    RESULT_EVENT,
                    {
                        "id": command.id,
                        "type": command.type,
                        "status": "failed",
                        "reason": "failed",
                        "result": error,
                    },
                )
        except StoreError as store_err:
            log.error(
                "command %s: could not record its failure (%s); it may run again if redelivered",
                command.id,
                type(store_err).__name__,
            )
        return CommandOutcome("failed", command.id, command.type, reason="failed", result=error)

    def _refuse(
        self,
        reason: str,
        command_id: str | None,
        command_type: str | None,
        why: str,
        *,
        now: float,
        record: Command | None = None,
    ) -> CommandOutcome:
        """Audit a refusal (reason, id and type when verified; never args or bytes) and log it.

        ``record``: also put the id in the inbox, so the command is never retried.
        """
        log.warning(
            "command %s (%s) refused: %s (%s)",
            command_id or "-",
            command_type or "-",
            reason,
            why,
        )
        data: dict[str, Any] = {"reason": reason, "id": command_id, "type": command_type}
        try:
            with self._store.transaction() as tx:
                if record is not None:
                    self._store.inbox.record(record.id, now, record.exp, "refused", tx=tx)
                tx.emit(REFUSED_EVENT, data)
        except StoreError as err:
            # Still answer on up/cmd-result: a refusal the server hears of beats none.
            log.error("command refusal not audited: the store failed (%s)", type(err).__name__)
        return CommandOutcome("refused", command_id, command_type, reason=reason)


def _checked_result(result: Any) -> dict[str, Any]:
    """The executor's result as a JSON map that fits ``up/cmd-result``, or :class:`_BadResult`
    (raised inside the transaction, so the effect rolls back)."""
    try:
        plain = check_args(result, "command result")
    except ValueError as err:
        raise _BadResult(str(err)) from err
    size = len(json.dumps(plain, separators=(",", ":")).encode())
    if size > MAX_RESULT_BYTES - RESULT_ROOM:
        raise _BadResult(f"command result is {size} bytes; it must fit up/cmd-result")
    return plain
