"""The command inbox: every command id the device has acted on, for replay protection.

A command is checked with :meth:`Inbox.seen` before it runs and recorded with :meth:`Inbox.record`
in the same transaction as its effect, so a replayed command (same id) is refused even after a
restart. A row is kept until its command's expiry plus :data:`PRUNE_MARGIN`: after that the
expiry check alone refuses the command.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING

from device.store.errors import ReplayedCommandError, StoreError

if TYPE_CHECKING:
    from device.store.db import Store, Transaction

log = logging.getLogger(__name__)

PRUNE_MARGIN = 24 * 3600.0
"""Seconds an expired command's id is still kept: covers clock corrections on a Pi with no RTC."""

MAX_COMMAND_ID_LENGTH = 128


@dataclass(frozen=True)
class InboxEntry:
    cmd_id: str
    received_at: float
    expires_at: float
    outcome: str


class Inbox:
    """Command ids received by a :class:`~device.store.db.Store`."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def seen(self, cmd_id: str) -> bool:
        _check_id(cmd_id)
        with self._store.reading() as conn:
            row = conn.execute("SELECT 1 FROM inbox WHERE cmd_id = ?", (cmd_id,)).fetchone()
        return row is not None

    def get(self, cmd_id: str) -> InboxEntry | None:
        _check_id(cmd_id)
        with self._store.reading() as conn:
            row = conn.execute(
                "SELECT cmd_id, received_at, expires_at, outcome FROM inbox WHERE cmd_id = ?",
                (cmd_id,),
            ).fetchone()
        return None if row is None else InboxEntry(*row)

    def record(
        self,
        cmd_id: str,
        received_at: float,
        expires_at: float,
        outcome: str,
        *,
        tx: Transaction | None = None,
    ) -> None:
        """Remember ``cmd_id``; :class:`ReplayedCommandError` if it was recorded before.

        Pass ``tx`` to record it in the transaction that carries out the command.
        """
        _check_id(cmd_id)
        if not (math.isfinite(received_at) and math.isfinite(expires_at)):
            raise StoreError("command times must be finite numbers")
        with self._store.writing(tx) as joined:
            try:
                joined.conn.execute(
                    "INSERT INTO inbox (cmd_id, received_at, expires_at, outcome) "
                    "VALUES (?, ?, ?, ?)",
                    (cmd_id, received_at, expires_at, outcome),
                )
            except sqlite3.IntegrityError as err:
                raise ReplayedCommandError(
                    f"command {cmd_id} was already received; refusing to run it again"
                ) from err

    def prune(self, now: float | None = None, margin: float = PRUNE_MARGIN) -> int:
        """Forget commands that expired more than ``margin`` seconds ago; returns how many."""
        cutoff = (self._store.clock.time() if now is None else now) - margin
        with self._store.transaction() as tx:
            removed = int(tx.execute("DELETE FROM inbox WHERE expires_at < ?", (cutoff,)).rowcount)
        if removed:
            log.debug("pruned %d expired command ids", removed)
        return removed


def _check_id(cmd_id: str) -> None:
    if not isinstance(cmd_id, str) or not 0 < len(cmd_id) <= MAX_COMMAND_ID_LENGTH:
        raise StoreError(
            f"a command id is a non-empty string of at most {MAX_COMMAND_ID_LENGTH} characters"
        )
