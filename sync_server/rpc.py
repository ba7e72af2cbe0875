"""The server's side of request/response (``up/rpc`` -> ``down/rpc``, docs/rpc.md): run the method a
device asks for and answer on the device's own ``down/rpc`` with the request's correlation data.

Methods run in the consumer's thread: a slow one holds up every device's messages on that
consumer (docs/rpc.md says what to do about it).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from device.protocol import (
    MAX_RPC_BYTES,
    MAX_RPC_ERROR_MESSAGE_LENGTH,
    MAX_RPC_METHOD_LENGTH,
    RPC_ERROR_CODE_PATTERN,
    RPC_METHOD_PATTERN,
    MessageError,
    RpcErrorInfo,
    RpcRequest,
    RpcResponse,
    encode,
    parse_rpc_request,
    parse_rpc_response,
    topic,
)
from sync_server.errors import ServerError

__all__ = [
    "BAD_REQUEST",
    "DEFAULT_ANSWER_EXPIRY_S",
    "INTERNAL",
    "MAX_ANSWER_EXPIRY_S",
    "MAX_CORRELATION_BYTES",
    "RESULT_TOO_LARGE",
    "UNKNOWN_METHOD",
    "Publish",
    "RpcMethod",
    "RpcMethodError",
    "RpcServer",
    "RpcServerStats",
]

log = logging.getLogger(__name__)

BAD_REQUEST = "bad-request"
UNKNOWN_METHOD = "unknown-method"
INTERNAL = "internal"
RESULT_TOO_LARGE = "result-too-large"

MAX_CORRELATION_BYTES = 64
"""The device sends 16 random bytes; the server echoes at most this many."""
DEFAULT_ANSWER_EXPIRY_S = 30
"""Expiry of an answer to a request that carried none."""
MAX_ANSWER_EXPIRY_S = 300
"""An answer never outlives the longest timeout a device may wait (device.sync.rpc)."""

_METHOD = re.compile(RPC_METHOD_PATTERN)
_CODE = re.compile(RPC_ERROR_CODE_PATTERN)

RpcMethod = Callable[[str, dict[str, Any]], Any]
"""``fn(device_id, params) -> result``: ``result`` must be plain JSON (dict, list, str, int,
float, bool, None). Raise :class:`RpcMethodError` to answer ``ok: false`` with a code of its own."""


class Publish(Protocol):
    """``Consumer.publish``: what the server needs to answer."""

    def __call__(
        self,
        device: str,
        suffix: str,
        payload: bytes,
        *,
        properties: Properties | None = None,
        qos: int = 1,
        response_topic: str | None = None,
    ) -> bool: ...


class RpcMethodError(ServerError):
    """Raised by a method to answer ``{ok: false, error: {code, message}}``.

    ``code`` is for the device's program (``not-found``); ``message`` goes to the device's log:
    neither may carry personal data.
    """

    def __init__(self, code: str, message: str) -> None:
        if not (isinstance(code, str) and len(code) <= 64 and _CODE.fullmatch(code)):
            raise ValueError(f"rpc error code {code!r} must match {RPC_ERROR_CODE_PATTERN}")
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message[:MAX_RPC_ERROR_MESSAGE_LENGTH]


@dataclass(frozen=True)
class RpcServerStats:
    """Counters since construction (``errors`` by code), for the server's health."""

    requests: int
    ok: int
    errors: dict[str, int]
    refused: int  # no valid response topic or correlation data: nothing could be answered
    unsent: int  # answers not published (not connected to the broker)


@dataclass(frozen=True)
class _Call:
    device: str
    reply_to: str
    correlation: bytes
    expiry_s: int


class RpcServer:
    """Answers ``up/rpc``: ``consumer.add_handler("up/rpc", server.handle)``.

    ``publish`` is ``consumer.publish``; ``clock`` gives wall time (``sys.ping``). Methods run in
    the consumer's thread, which also answers (``Consumer.publish`` from its own thread).
    """

    def __init__(self, publish: Publish, *, clock: Callable[[], float] = time.time) -> None:
        self._publish = publish
        self._clock = clock
        self._methods: dict[str, RpcMethod] = {}
        self._lock = threading.Lock()
        self._counts = {"requests": 0, "ok": 0, "refused": 0, "unsent": 0}
        self._errors: dict[str, int] = {}
        self.register("sys.ping", self._ping)

    def __repr__(self) -> str:
        return f"RpcServer(methods={sorted(self._methods)})"

    def register(self, method: str, fn: RpcMethod) -> None:
        """Serve ``method`` (``area.name``) with ``fn``; register before the consumer starts."""
        if not (
            isinstance(method, str)
            and len(method) <= MAX_RPC_METHOD_LENGTH
            and _METHOD.fullmatch(method)
        ):
            raise ValueError(
                f"rpc method name {method!r} must be lower-case dotted, like residents.lookup"
            )
        if method in self._methods:
            raise ValueError(f"rpc method {method} is already registered")
        self._methods[method] = fn

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(sorted(self._methods))

    def stats(self) -> RpcServerStats:
        with self._lock:
            return RpcServerStats(errors=dict(self._errors), **self._counts)

    # ----------------------------------------------------------------- the consumer's handler

    def handle(self, device: str, message: mqtt.MQTTMessage) -> None:
        """Answer one ``up/rpc`` message (the consumer's thread).

        Raises ``MessageError`` for a message the consumer must refuse: no usable response topic
        or correlation data (nothing can be answered), or a payload that is not a request (then
        answered ``bad-request`` first, so the device need not wait for its timeout).
        """
        call = self._routing(device, message)
        try:
            request = parse_rpc_request(bytes(message.payload))
        except MessageError as err:
            self._answer(call, _failure(BAD_REQUEST, str(err)), "(unparsed)")
            raise
        with self._lock:
            self._counts["requests"] += 1
        self._run(call, request)

    # ----------------------------------------------------------------- internals

    def _routing(self, device: str, message: mqtt.MQTTMessage) -> _Call:
        properties = message.properties
        reply_to = getattr(properties, "ResponseTopic", None)
        correlation = getattr(properties, "CorrelationData", None)
        own = topic(device, "down/rpc")
        problem = None
        if reply_to is None:
            problem = "has no response topic"
        elif reply_to != own:
            # The ACL lets the server write every down/ topic: answering elsewhere would let a
            # device deliver messages to another device.
            problem = "names a response topic other than the device's own down/rpc"
        elif not isinstance(correlation, bytes) or not correlation:
            problem = "has no correlation data"
        elif len(correlation) > MAX_CORRELATION_BYTES:
            problem = f"has correlation data over {MAX_CORRELATION_BYTES} bytes"
        if problem is not None:
            with self._lock:
                self._counts["refused"] += 1
            raise MessageError(f"up/rpc {problem}; not answered")
        assert isinstance(correlation, bytes)
        expiry = getattr(properties, "MessageExpiryInterval", None)
        expiry_s = DEFAULT_ANSWER_EXPIRY_S if not isinstance(expiry, int) else expiry
        return _Call(device, own, correlation, max(1, min(expiry_s, MAX_ANSWER_EXPIRY_S)))

    def _run(self, call: _Call, request: RpcRequest) -> None:
        method = request.method
        fn = self._methods.get(method)
        if fn is None:
            log.warning("device %s: rpc %s: no such method", call.device, method)
            self._answer(call, _failure(UNKNOWN_METHOD, f"no method {method}"), method)
            return
        started = time.monotonic()
        try:
            response = _success(fn(call.device, dict(request.params)))
        except RpcMethodError as err:
            response = _failure(err.code, err.message)
        except Exception as err:  # noqa: BLE001 -- a method bug is answered, never fatal
            # The exception's text may quote params (an ID number): type and place only.
            log.error(
                "device %s: rpc %s raised %s at %s; answered %r",
                call.device,
                method,
                type(err).__name__,
                _where(err),
                INTERNAL,
            )
            response = _failure(INTERNAL, f"the server failed running {method}; see its log")
        log.debug(
            "device %s: rpc %s %s in %.3f s",
            call.device,
            method,
            "ok" if response.ok else "failed",
            time.monotonic() - started,
        )
        self._answer(call, response, method)

    def _answer(self, call: _Call, response: RpcResponse, method: str) -> None:
        payload, code, problem = _payload(response)
        if payload is None:
            log.error(
                "device %s: the result of rpc %s is %s; answered %r",
                call.device,
                method,
                problem,
                code,
            )
            response = _failure(code, f"the result of {method} is {problem}; see the server log")
            payload = encode(response)
        with self._lock:
            if response.ok:
                self._counts["ok"] += 1
            else:
                assert response.error is not None
                code = response.error.code
                self._errors[code] = self._errors.get(code, 0) + 1
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.CorrelationData = call.correlation
        properties.MessageExpiryInterval = call.expiry_s
        try:
            sent = self._publish(
                call.device,
                "down/rpc",
                payload,
                properties=properties,
                response_topic=call.reply_to,
            )
            why = "not connected to the broker"
        except Exception as err:  # noqa: BLE001 -- the consumer would take it for a storage failure
            sent, why = False, f"{type(err).__name__}: {err}"
        if not sent:
            with self._lock:
                self._counts["unsent"] += 1
            log.warning(
                "device %s: answer to rpc %s not sent (%s); the device will time out",
                call.device,
                method,
                why,
            )

    def _ping(self, _device: str, _params: dict[str, Any]) -> dict[str, float]:
        return {"time": self._clock()}


def _success(result: Any) -> RpcResponse:
    return RpcResponse(ok=True, result=result)


def _failure(code: str, message: str) -> RpcResponse:
    return RpcResponse(
        ok=False, error=RpcErrorInfo(code=code, message=message[:MAX_RPC_ERROR_MESSAGE_LENGTH])
    )


def _payload(response: RpcResponse) -> tuple[bytes | None, str, str]:
    """Plain JSON the device's parser accepts, or ``(None, error code, why not)``."""
    try:
        text = json.dumps(
            response.model_dump(), allow_nan=False, ensure_ascii=False, separators=(",", ":")
        )
    except (TypeError, ValueError):
        return None, INTERNAL, "not plain JSON (dict, list, str, int, float, bool, None; no NaN)"
    payload = text.encode()
    if len(payload) > MAX_RPC_BYTES:
        return None, RESULT_TOO_LARGE, f"over {MAX_RPC_BYTES} bytes"
    try:
        parse_rpc_response(payload)
    except MessageError:
        return None, INTERNAL, "not an answer the device accepts"
    return payload, "", ""


def _where(err: BaseException) -> str:
    """``file.py:line in function`` of the innermost frame: where, without the message's text."""
    frames = traceback.extract_tb(err.__traceback__)
    if not frames:
        return "?"
    last = frames[-1]
    return f"{last.filename.rsplit('/', 1)[-1]}:{last.lineno} in {last.name}"
