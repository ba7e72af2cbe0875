"""The locker's server commands (docs/locker.md): executors for the sync daemon's command runner.

Each runs inside the command's store transaction (device/sync/commands.py): the compartment's
move, the journaled open request and the command's record commit together, and the loop pulses
the lock after the commit. Arguments are checked here; a bad one fails the command, nothing moves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from device.store import Transaction
from device.sync.commands import CommandRunner
from locker import crashpoints
from locker.compartments import SIZES, State
from locker.controller import Locker
from locker.errors import CompartmentStateError, NoFreeCompartmentError
from locker.intents import Flow

MAX_CASE_LENGTH = 64


class CommandArgumentError(CompartmentStateError):
    """A command's arguments are missing or of the wrong kind."""


def _case(args: Mapping[str, Any]) -> str:
    case = args.get("case")
    if not isinstance(case, str) or not 0 < len(case) <= MAX_CASE_LENGTH:
        raise CommandArgumentError(f"'case' must be a case id of 1..{MAX_CASE_LENGTH} characters")
    return case


def _compartment(args: Mapping[str, Any]) -> int:
    number = args.get("compartment")
    if not isinstance(number, int) or isinstance(number, bool):
        raise CommandArgumentError("'compartment' must be a compartment number")
    return number


class LockerCommands:
    """``locker.*`` commands of one :class:`Locker`."""

    def __init__(self, locker: Locker) -> None:
        self._locker = locker

    def register(self, runner: CommandRunner) -> None:
        runner.register("locker.deposit", self.deposit)
        runner.register("locker.open", self.open)
        runner.register("locker.disable", self.disable)
        runner.register("locker.enable", self.enable)
        runner.register("locker.clear_fault", self.clear_fault)
        runner.register("locker.status", self.status)

    def deposit(self, tx: Transaction, args: Mapping[str, Any]) -> Mapping[str, Any]:
        """``{case, size?: S|M|L, content?: documents|result}``: open the smallest free
        compartment that fits, for a resident's documents or a worker's result."""
        case = _case(args)
        size = args.get("size", "S")
        if size not in SIZES:
            raise CommandArgumentError(f"'size' must be one of {SIZES}")
        content = args.get("content", "documents")
        if content not in ("documents", "result"):
            raise CommandArgumentError("'content' must be 'documents' or 'result'")
        compartment = self._locker.compartments.free_of_size(tx, str(size))
        if compartment is None:
            raise NoFreeCompartmentError(f"no free compartment of size {size} or larger")
        flow = Flow.DEPOSIT if content == "documents" else Flow.RESULT
        self._locker.journal(tx, compartment, flow, "command", case=case)
        self._accepted()
        return {"compartment": compartment.number, "size": compartment.size}

    def open(self, tx: Transaction, args: Mapping[str, Any]) -> Mapping[str, Any]:
        """``{compartment, case}``: a grid worker collects a case's documents (online)."""
        number, case = _compartment(args), _case(args)
        compartment = self._locker.compartments.get(number, tx)
        if compartment.state is not State.HOLDING or compartment.case_id != case:
            raise CompartmentStateError(f"compartment {number} does not hold that case", number)
        self._locker.journal(tx, compartment, Flow.WORKER_OPEN, "command", case=case)
        self._accepted()
        return {"compartment": number}

    def disable(self, tx: Transaction, args: Mapping[str, Any]) -> Mapping[str, Any]:
        """``{compartment}``: out of service (free or holding only); remembers where it was."""
        number = _compartment(args)
        before = self._locker.compartments.get(number, tx)
        self._locker.compartments.move(
            tx, number, State.DISABLED, reason="disabled", resume_state=before.state
        )
        return {"compartment": number, "state": str(State.DISABLED)}

    def enable(self, tx: Transaction, args: Mapping[str, Any]) -> Mapping[str, Any]:
        """``{compartment}``: back in service, in the state it was disabled from."""
        number = _compartment(args)
        back = self._locker.compartments.get(number, tx).resume_state or State.FREE
        self._locker.compartments.move(
            tx, number, back, reason="enabled", expect=State.DISABLED, resume_state=None
        )
        return {"compartment": number, "state": str(back)}

    def clear_fault(self, tx: Transaction, args: Mapping[str, Any]) -> Mapping[str, Any]:
        """``{compartment}``: a technician fixed the lock or door; back to free or holding."""
        number = _compartment(args)
        back = self._locker.compartments.get(number, tx).resume_state or State.FREE
        self._locker.compartments.move(
            tx,
            number,
            back,
            reason="fault-cleared",
            expect=State.FAULT,
            resume_state=None,
            fault=None,
        )
        return {"compartment": number, "state": str(back)}

    def status(self, tx: Transaction, _args: Mapping[str, Any]) -> Mapping[str, Any]:
        """Every compartment's state and door (no case ids: the server has them)."""
        rows = tx.execute("SELECT number, state, door FROM compartments ORDER BY number")
        return {"compartments": [{"number": n, "state": s, "door": d} for n, s, d in rows]}

    def _accepted(self) -> None:
        # The runner commits after this returns; the loop then waits for the store lock, so
        # waking it now cannot make it miss the request.
        crashpoints.reached("command-accepted")
        self._locker.wake()
