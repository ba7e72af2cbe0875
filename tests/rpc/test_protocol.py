"""The ``up/rpc`` / ``down/rpc`` schemas (device.protocol): pure parsers, no broker."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device.protocol import (
    MAX_RPC_BYTES,
    MessageError,
    NotJSONError,
    OversizeError,
    RpcErrorInfo,
    RpcRequest,
    RpcResponse,
    SchemaError,
    encode,
    parse_rpc_request,
    parse_rpc_response,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
methods = st.from_regex(r"\A[a-z][a-z0-9_]{0,8}(\.[a-z][a-z0-9_]{0,8}){1,3}\Z")


def as_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()


def test_a_request_and_both_kinds_of_answer_parse() -> None:
    request = parse_rpc_request(b'{"method": "residents.lookup", "params": {"q": "x"}}')
    assert request == RpcRequest(method="residents.lookup", params={"q": "x"})
    assert parse_rpc_request(b'{"method": "sys.ping"}').params == {}
    assert parse_rpc_response(b'{"ok": true, "result": [1, 2]}').result == [1, 2]
    failed = parse_rpc_response(b'{"ok": false, "error": {"code": "not-found", "message": "m"}}')
    assert failed.error == RpcErrorInfo(code="not-found", message="m")


@pytest.mark.parametrize(
    "payload",
    [
        {"method": "ping"},  # not dotted
        {"method": "Sys.Ping"},
        {"method": "sys.ping", "params": [1]},
        {"method": "sys.ping", "extra": 1},
        {"method": "a." + "b" * 70},
        {"params": {}},
        [],
    ],
)
def test_requests_of_the_wrong_shape_are_schema_errors(payload: Any) -> None:
    with pytest.raises(SchemaError, match="up/rpc payload has the wrong shape"):
        parse_rpc_request(as_bytes(payload))


@pytest.mark.parametrize(
    "payload",
    [
        {"ok": True, "error": {"code": "x", "message": ""}},
        {"ok": False},
        {"ok": False, "result": 1, "error": {"code": "x", "message": ""}},
        {"ok": False, "error": {"code": "Bad Code", "message": ""}},
        {"ok": False, "error": {"code": "x", "message": "m" * 513}},
        {"ok": "yes"},
    ],
)
def test_answers_of_the_wrong_shape_are_schema_errors(payload: Any) -> None:
    with pytest.raises(SchemaError, match="down/rpc payload has the wrong shape"):
        parse_rpc_response(as_bytes(payload))


def test_oversize_and_non_json_are_refused_without_echoing_the_payload() -> None:
    secret = "110101199003077777"
    big = as_bytes({"method": "a.b", "params": {"id": secret, "pad": "x" * MAX_RPC_BYTES}})
    with pytest.raises(OversizeError) as oversize:
        parse_rpc_request(big)
    with pytest.raises(NotJSONError) as not_json:
        parse_rpc_response(b"\xff" + secret.encode())
    with pytest.raises(SchemaError) as schema:
        parse_rpc_request(as_bytes({"method": secret}))
    for err in (oversize, not_json, schema):
        assert secret not in str(err.value)


@given(methods, st.dictionaries(st.text(max_size=8), json_values, max_size=4))
def test_every_valid_request_round_trips(method: str, params: dict[str, Any]) -> None:
    request = RpcRequest(method=method, params=params)
    assert parse_rpc_request(encode(request)) == request


@given(json_values)
def test_every_ok_answer_round_trips(result: Any) -> None:
    response = RpcResponse(ok=True, result=result)
    assert parse_rpc_response(encode(response)) == response


@given(st.binary(max_size=300))
def test_random_bytes_are_a_message_error_or_a_model(payload: bytes) -> None:
    for parse in (parse_rpc_request, parse_rpc_response):
        with contextlib.suppress(MessageError):
            parse(payload)


@given(json_values)
def test_random_json_is_a_schema_error_or_a_model(value: Any) -> None:
    for parse in (parse_rpc_request, parse_rpc_response):
        with contextlib.suppress(SchemaError):
            parse(as_bytes(value))
