"""The server's half of signed commands (docs/commands.md): issue, send, and record results.

:class:`CommandIssuer` signs a command for one device (device/commands.py, the shared envelope),
stores it in ``commands`` with status ``issued`` and publishes it on the device's ``down/cmd`` with
an MQTT message expiry equal to what is left of its lifetime, so a broker drops it when it could
no longer run. :meth:`CommandIssuer.handle_result` is the consumer's ``up/cmd-result`` handler: it
sets a command's outcome once, and only from the device the command was issued to.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, cast

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy import Engine, Table, select, update

from device.commands import (
    MAX_TTL_S,
    CommandResult,
    check_args,
    new_command_id,
    parse_result,
    sign_command,
)
from device.credential import SigningKey
from device.protocol import MessageError, valid_device_id
from sync_server.errors import ServerError
from sync_server.models import Command, Device

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

    from sync_server.consumer import Consumer

__all__ = [
    "DEFAULT_TTL_S",
    "FINAL_STATUSES",
    "OPEN_STATUSES",
    "CommandExpiredError",
    "CommandIssuer",
    "CommandRecord",
    "ForeignResultError",
    "IssuedCommand",
    "UnknownCommandError",
    "UnknownDeviceError",
    "expire_overdue",
    "get_command",
    "record_result",
    "record_result_event",
]

log = logging.getLogger(__name__)

Clock = Callable[[], float]
_commands = cast(Table, Command.__table__)
_devices = cast(Table, Device.__table__)

DEFAULT_TTL_S: Final = 300.0
OPEN_STATUSES: Final = ("issued", "delivered")
"""A command that may still get an outcome from its device."""
FINAL_STATUSES: Final = ("succeeded", "failed", "refused")
"""Outcomes a device reported: set once, never changed by a redelivered or replayed result.
``expired`` is the server's guess (no answer in time) and gives way to a late device report."""


class UnknownDeviceError(ServerError, LookupError):
    """A command for a device this server has no record of."""


class CommandExpiredError(ServerError, ValueError):
    """A command is past its expiry: sending it would only get it refused; issue a new one."""


class UnknownCommandError(MessageError):
    """An ``up/cmd-result`` names a command id this server never issued."""


class ForeignResultError(MessageError):
    """An ``up/cmd-result`` from one device names a command issued to another device."""


@dataclass(frozen=True)
class IssuedCommand:
    """A signed command stored as ``issued``; ``payload`` is the ``down/cmd`` body."""

    id: str
    device: str
    type: str
    payload: bytes = field(repr=False)
    expires: float


@dataclass(frozen=True)
class CommandRecord:
    """A ``commands`` row (``result``: the executor's map, or ``{"reason": ...}``)."""

    id: str
    device: str
    type: str
    status: str
    result: dict[str, Any] | None
    created: float
    expires: float
    completed: float | None


class CommandIssuer:
    """Issues commands signed with ``signing_key`` (its key id goes in every command)."""

    def __init__(
        self, engine: Engine, signing_key: SigningKey, *, clock: Clock = time.time
    ) -> None:
        self._engine = engine
        self._key = signing_key
        self._clock = clock

    def __repr__(self) -> str:
        return f"CommandIssuer(kid={self._key.kid!r})"

    def issue(
        self, device: str, type: str, args: Mapping[str, Any], ttl_s: float = DEFAULT_TTL_S
    ) -> IssuedCommand:
        """Sign a command for ``device`` and store it as ``issued`` (not sent yet: :meth:`send`).

        ``ValueError`` on a bad type, args or ttl; :class:`UnknownDeviceError` for a device with
        no ``devices`` row (registered at provisioning, or created when it first connects).
        """
        if not valid_device_id(device):
            raise ValueError(f"device id {device!r} is invalid: 1 to 64 of A-Z a-z 0-9 _ . -")
        if not 1 <= ttl_s <= MAX_TTL_S:
            raise ValueError(f"ttl_s must be between 1 and {MAX_TTL_S} seconds, got {ttl_s}")
        plain = check_args(args)
        now = self._clock()
        command_id = new_command_id()
        payload = sign_command(
            self._key,
            device_id=device,
            type=type,
            args=plain,
            now=now,
            ttl_s=ttl_s,
            command_id=command_id,
        )
        expires = float(math.floor(now) + math.ceil(ttl_s))  # the signed exp
        with self._engine.begin() as conn:
            known = conn.execute(select(_devices.c.id).where(_devices.c.id == device)).first()
            if known is None:
                raise UnknownDeviceError(
                    f"device {device} is not known to this server; register it (provisioning) "
                    "or wait until it has connected once"
                )
            conn.execute(
                _commands.insert().values(
                    id=command_id,
                    device_id=device,
                    type=type,
                    args=plain,
                    created=now,
                    expires=expires,
                    status="issued",
                )
            )
        log.info("command %s (%s) issued for %s, expires %.0f", command_id, type, device, expires)
        return IssuedCommand(command_id, device, type, payload, expires)

    def send(self, consumer: Consumer, command: IssuedCommand) -> bool:
        """Publish ``command`` on its device's ``down/cmd`` (QoS 1, message expiry = the time
        left); mark it ``delivered`` (handed to the consumer to send). False when the consumer
        is not connected: the command stays ``issued`` and may be sent again until it expires.
        """
        left = math.ceil(command.expires - self._clock())
        if left <= 0:
            raise CommandExpiredError(
                f"command {command.id} expired at {command.expires:.0f}; issue a new one"
            )
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.MessageExpiryInterval = left
        if not consumer.publish(command.device, "down/cmd", command.payload, properties=properties):
            log.warning("command %s not sent: the server is not connected", command.id)
            return False
        with self._engine.begin() as conn:
            conn.execute(
                update(_commands)
                .where(_commands.c.id == command.id, _commands.c.status == "issued")
                .values(status="delivered")
            )
        log.info("command %s sent to %s (expires in %d s)", command.id, command.device, left)
        return True

    def attach(self, consumer: Consumer) -> None:
        """Handle ``consumer``'s ``up/cmd-result`` messages (before ``consumer.start()``)."""
        consumer.add_handler("up/cmd-result", self.handle_result)

    def handle_result(self, device: str, msg: mqtt.MQTTMessage) -> None:
        """The consumer handler of ``up/cmd-result``: validate, then :func:`record_result`.

        Raises a ``MessageError`` to refuse (the consumer logs and acknowledges it): oversize,
        not JSON, wrong schema, an unknown command id, a command of another device.
        """
        result = parse_result(bytes(msg.payload))
        record_result(self._engine, device, result, now=self._clock())


def _stored_result(result: CommandResult) -> dict[str, Any]:
    if result.status == "succeeded":
        return dict(result.result or {})
    return {**(result.result or {}), "reason": result.reason}


def record_result(engine: Engine, device: str, result: CommandResult, *, now: float) -> str:
    """Set the outcome of ``result.id`` from ``device``'s report; returns what happened:
    ``"recorded"``, ``"duplicate"`` (an outcome was already set: redelivery or replay) or
    ``"unattributed"`` (a refusal of something that did not verify: nothing to update).

    :class:`UnknownCommandError` / :class:`ForeignResultError` (both ``MessageError``) leave
    every row untouched.
    """
    if result.id is None:
        log.info("device %s refused an unverified command (%s)", device, result.reason)
        return "unattributed"
    with engine.begin() as conn:
        # Row lock on PostgreSQL (SQLite: BEGIN IMMEDIATE holds the database lock already), so
        # two server processes given the same result cannot both set it.
        row = conn.execute(
            select(_commands.c.device_id, _commands.c.status)
            .where(_commands.c.id == result.id)
            .with_for_update()
        ).first()
        if row is None:
            raise UnknownCommandError(
                f"device {device} reports on command {result.id}, which this server never issued"
            )
        if row.device_id != device:
            raise ForeignResultError(
                f"device {device} reports on command {result.id}, issued to another device; "
                "refused, the command is unchanged"
            )
        if row.status in FINAL_STATUSES:
            log.debug("command %s: %s result again (%s kept)", result.id, result.status, row.status)
            return "duplicate"
        conn.execute(
            update(_commands)
            .where(_commands.c.id == result.id)
            .values(status=result.status, result=_stored_result(result), completed=now)
        )
    log.info(
        "command %s on %s: %s%s",
        result.id,
        device,
        result.status,
        f" ({result.reason})" if result.reason else "",
    )
    return "recorded"


def record_result_event(
    engine: Engine, device: str, event_type: str, data: Mapping[str, Any], *, now: float
) -> str | None:
    """Apply a ``cmd.result`` / ``cmd.refused`` audit event (from ``up/events``) like a result:
    the outbox is the durable copy when the ``up/cmd-result`` publish was lost. Returns what
    :func:`record_result` did, or None for another event type or an event that is not a result.
    """
    if event_type not in ("cmd.result", "cmd.refused"):
        return None
    status = "refused" if event_type == "cmd.refused" else data.get("status")
    raw_result = data.get("result")
    try:
        result = CommandResult.model_validate(
            {
                "id": data.get("id"),
                "status": status,
                "reason": data.get("reason"),
                "result": None if status == "refused" else raw_result,
            }
        )
    except ValueError:
        log.warning("device %s: a %s event is not a command result; ignored", device, event_type)
        return None
    try:
        return record_result(engine, device, result, now=now)
    except MessageError as err:
        log.warning("device %s: %s event not applied: %s", device, event_type, err)
        return None


def expire_overdue(engine: Engine, now: float) -> int:
    """Mark ``issued`` / ``delivered`` commands whose expiry has passed as ``expired``;
    returns how many. A later report from the device still replaces ``expired``."""
    with engine.begin() as conn:
        done = conn.execute(
            update(_commands)
            .where(_commands.c.status.in_(OPEN_STATUSES), _commands.c.expires <= now)
            .values(status="expired", completed=now)
        )
    count = int(done.rowcount or 0)
    if count:
        log.info("%d commands expired without an answer", count)
    return count


def get_command(engine: Engine, command_id: str) -> CommandRecord | None:
    """One command and its outcome, or None."""
    with engine.connect() as conn:
        row = conn.execute(select(_commands).where(_commands.c.id == command_id)).first()
    if row is None:
        return None
    return CommandRecord(
        row.id,
        row.device_id,
        row.type,
        row.status,
        row.result,
        row.created,
        row.expires,
        row.completed,
    )
