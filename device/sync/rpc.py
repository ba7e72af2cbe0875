"""Request/response over ``up/rpc`` / ``down/rpc`` (docs/rpc.md): the device asks the server an
online question (a resident not in the local cache) and waits, with a timeout, for the answer
carrying its MQTT v5 correlation data. Offline is said at once, so the kiosk can say it plainly.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import ValidationError

from device.clock import SYSTEM_CLOCK, Clock
from device.protocol import (
    MessageError,
    RpcRequest,
    RpcResponse,
    parse_rpc_request,
    parse_rpc_response,
    topic,
)
from device.sync.agent import SyncAgent
from device.sync.errors import SyncError

__all__ = [
    "CORRELATION_BYTES",
    "DEFAULT_TIMEOUT_S",
    "MAX_TIMEOUT_S",
    "RpcClient",
    "RpcError",
    "RpcRemoteError",
    "RpcRequestError",
    "RpcStats",
    "RpcTimeoutError",
    "RpcUnavailableError",
]

log = logging.getLogger(__name__)

CORRELATION_BYTES = 16
"""Random, so no other call (nor a guess) can take this call's answer."""
DEFAULT_TIMEOUT_S = 5.0
MAX_TIMEOUT_S = 300.0
WAIT_SLICE_S = 0.05
"""A waiting call looks at the injected clock this often (a fake clock moves between looks)."""


class RpcError(SyncError):
    """A request/response call failed; the subclass says why."""


class RpcRequestError(RpcError, ValueError):
    """The call cannot be sent as asked: bad method name or timeout, params not JSON, too large."""


class RpcUnavailableError(RpcError, ConnectionError):
    """The device is not connected to the broker: the server cannot be asked now (offline)."""


class RpcTimeoutError(RpcError, TimeoutError):
    """No answer within the call's timeout (server down, slow or unreachable)."""


class RpcRemoteError(RpcError):
    """The server answered ``ok: false``: ``code`` is stable (docs/rpc.md), ``message`` for logs."""

    def __init__(self, method: str, code: str, message: str) -> None:
        super().__init__(f"the server refused {method}: {code}: {message}")
        self.method = method
        self.code = code
        self.message = message


@dataclass(frozen=True)
class RpcStats:
    """Counters since construction, for the device's status page."""

    calls: int
    answered: int  # ok answers
    remote_errors: int  # ok: false answers
    timeouts: int
    unavailable: int
    dropped: int  # answers for no waiting call: late (after the timeout) or unknown
    malformed: int  # down/rpc payloads or properties refused


@dataclass
class _Pending:
    method: str
    done: threading.Event = field(default_factory=threading.Event)
    response: RpcResponse | None = None


class RpcClient:
    """Calls server methods through ``agent``; :meth:`call` is safe from any thread but the
    agent's own (the answer arrives in that thread).

    ``clock`` gives the monotonic time of the timeouts.
    """

    def __init__(self, agent: SyncAgent, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._agent = agent
        self._clock = clock
        self._reply_topic = topic(agent.device_id, "down/rpc")
        self._lock = threading.Lock()
        self._pending: dict[bytes, _Pending] = {}
        self._attached = False
        self._agent_thread: int | None = None
        self._counts = dict.fromkeys(
            (
                "calls",
                "answered",
                "remote_errors",
                "timeouts",
                "unavailable",
                "dropped",
                "malformed",
            ),
            0,
        )

    def __repr__(self) -> str:
        return f"RpcClient({self._agent.device_id!r}, pending={len(self._pending)})"

    def attach(self) -> None:
        """Handle ``down/rpc`` answers; call once, before ``agent.start()``."""
        if self._attached:
            raise RpcError("this RpcClient is already attached to its agent")
        self._agent.add_handler("down/rpc", self._on_message)
        self._agent.add_connect_hook(self._note_agent_thread)
        self._attached = True

    def call(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> Any:
        """Call ``method`` on the server with ``params`` and return its result.

        Raises :class:`RpcUnavailableError` at once when offline, :class:`RpcTimeoutError` after
        ``timeout_s`` without an answer, :class:`RpcRemoteError` when the server answers
        ``ok: false``, :class:`RpcRequestError` when the request itself is invalid.
        """
        payload = _request_payload(method, params or {})
        _check_timeout(timeout_s)
        if not self._attached:
            raise RpcError("RpcClient.attach() was not called before agent.start()")
        if self._agent_thread == threading.get_ident():
            raise RpcError(
                "call() from the sync agent's thread (a handler or hook) would wait for an "
                "answer only that thread can receive; call from another thread"
            )
        self._count("calls")
        if not self._agent.connected:
            self._count("unavailable")
            raise RpcUnavailableError(f"cannot call {method}: the device is offline")
        correlation = secrets.token_bytes(CORRELATION_BYTES)
        pending = _Pending(method)
        with self._lock:
            self._pending[correlation] = pending
        try:
            if not self._agent.publish(
                "up/rpc", payload, properties=self._properties(correlation, timeout_s)
            ):
                self._count("unavailable")
                raise RpcUnavailableError(f"cannot call {method}: the device went offline")
            response = self._wait(correlation, pending, timeout_s)
        finally:
            with self._lock:
                self._pending.pop(correlation, None)
        if response.ok:
            self._count("answered")
            return response.result
        self._count("remote_errors")
        assert response.error is not None  # RpcResponse's validator guarantees it
        raise RpcRemoteError(method, response.error.code, response.error.message)

    def stats(self) -> RpcStats:
        with self._lock:
            return RpcStats(**self._counts)

    # ----------------------------------------------------------------- internals

    def _properties(self, correlation: bytes, timeout_s: float) -> Properties:
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.ResponseTopic = self._reply_topic
        properties.CorrelationData = correlation
        # The broker drops a request nobody took in time: a server starting late must not
        # answer (and run) a call the kiosk has given up on.
        properties.MessageExpiryInterval = max(1, math.ceil(timeout_s))
        return properties

    def _wait(self, correlation: bytes, pending: _Pending, timeout_s: float) -> RpcResponse:
        deadline = self._clock.monotonic() + timeout_s
        while True:
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                with self._lock:  # from now on an answer is "late" and dropped
                    self._pending.pop(correlation, None)
                if pending.response is not None:  # it came in at the last moment
                    return pending.response
                self._count("timeouts")
                raise RpcTimeoutError(
                    f"no answer to {pending.method} within {timeout_s:g} s; the server may be "
                    "down or slow"
                )
            if pending.done.wait(min(remaining, WAIT_SLICE_S)):
                assert pending.response is not None
                return pending.response

    def _on_message(self, message: mqtt.MQTTMessage) -> None:
        """In the agent's thread: hand an answer to the call waiting for its correlation data."""
        correlation = getattr(message.properties, "CorrelationData", None)
        if not isinstance(correlation, bytes) or not correlation:
            self._count("malformed")
            log.warning("ignoring a down/rpc answer without correlation data")
            return
        try:
            response = parse_rpc_response(bytes(message.payload))
        except MessageError as err:  # the message names the problem, never the payload
            self._count("malformed")
            log.warning("ignoring a malformed down/rpc answer: %s", err)
            return
        with self._lock:
            pending = self._pending.pop(correlation, None)
            if pending is not None:
                pending.response = response
                pending.done.set()
        if pending is None:
            self._count("dropped")
            log.debug("dropping a down/rpc answer no call waits for (late or unknown)")

    def _note_agent_thread(self) -> None:
        self._agent_thread = threading.get_ident()

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1


def _request_payload(method: str, params: Mapping[str, Any]) -> bytes:
    """The ``up/rpc`` payload, checked by the parser the server runs (so it cannot refuse it)."""
    name = method[:64] if isinstance(method, str) else type(method).__name__
    try:
        request = RpcRequest(method=method, params=dict(params))
    except (ValidationError, TypeError, ValueError) as err:
        raise RpcRequestError(
            f"rpc call {name!r} is not a valid request: {_problems(err)}"
        ) from err
    try:
        # Plain JSON only: pydantic would quietly turn NaN into null and a set into a list.
        text = json.dumps(
            {"method": request.method, "params": request.params},
            allow_nan=False,
            ensure_ascii=False,
            separators=(",", ":"),
        )
    except (TypeError, ValueError) as err:
        raise RpcRequestError(
            f"rpc call {name!r}: params must be plain JSON (dict, list, str, int, float, bool, "
            f"None; no NaN): {type(err).__name__}"
        ) from err
    payload = text.encode()
    try:
        parse_rpc_request(payload)
    except MessageError as err:
        raise RpcRequestError(f"rpc call {name!r} cannot be sent: {err}") from err
    return payload


def _problems(err: Exception) -> str:
    if not isinstance(err, ValidationError):
        return type(err).__name__
    return "; ".join(
        ".".join(str(p) for p in problem["loc"]) + ": " + problem["msg"]
        for problem in err.errors(include_url=False, include_input=False)[:3]
    )


def _check_timeout(timeout_s: float) -> None:
    if not (isinstance(timeout_s, int | float) and 0 < timeout_s <= MAX_TIMEOUT_S):
        raise RpcRequestError(f"timeout_s must be > 0 and at most {MAX_TIMEOUT_S:g} s")
