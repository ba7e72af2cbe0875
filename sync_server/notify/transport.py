"""HTTP plumbing shared by the SMS and WeChat adapters: one httpx client per adapter, transport
failures and status codes mapped to temporary or permanent delivery errors, and a log filter
that keeps query strings (access tokens, secrets, phone numbers) out of httpx's request log."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import httpx

from sync_server.notify.errors import PermanentDeliveryError, TemporaryDeliveryError

__all__ = [
    "QueryRedactingFilter",
    "check_status",
    "install_query_redaction",
    "json_body",
    "make_client",
    "request",
]

MAX_RESPONSE_BYTES = 64 * 1024
"""An answer larger than this is not a gateway's status JSON; refused without parsing."""


class QueryRedactingFilter(logging.Filter):
    """Drops the query string of the URL httpx logs with every request at INFO: the WeChat token
    request carries the app secret there, every send the access token, some SMS gateways the
    phone number and the API key."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, httpx.URL) for a in record.args):
            record.args = tuple(
                a.copy_with(query=None) if isinstance(a, httpx.URL) and a.query else a
                for a in record.args
            )
        return True


def install_query_redaction() -> None:
    """Attach :class:`QueryRedactingFilter` to the ``httpx`` logger (once)."""
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, QueryRedactingFilter) for f in logger.filters):
        logger.addFilter(QueryRedactingFilter())


def make_client(timeout_s: float, proxy: str | None = None) -> httpx.Client:
    """A client that follows no redirects and ignores proxy environment variables: where a
    notification goes is decided by the configuration alone."""
    install_query_redaction()
    return httpx.Client(
        timeout=httpx.Timeout(timeout_s),
        follow_redirects=False,
        trust_env=False,
        proxy=proxy,
    )


def request(
    client: httpx.Client, what: str, method: str, url: str, **kwargs: Any
) -> httpx.Response:
    """``client.request(...)`` with transport failures as delivery errors naming ``what``
    (e.g. "the SMS gateway"); never the URL, which may carry secrets."""
    try:
        response = client.request(method, url, **kwargs)
    except httpx.TimeoutException as err:
        timeout = client.timeout.read
        raise TemporaryDeliveryError(
            f"{what} did not answer within {timeout} s ({type(err).__name__})"
        ) from err
    except httpx.TransportError as err:  # connection refused, reset, DNS, protocol errors
        raise TemporaryDeliveryError(f"{what} unreachable ({type(err).__name__})") from err
    if len(response.content) > MAX_RESPONSE_BYTES:
        raise PermanentDeliveryError(
            f"{what} answered HTTP {response.status_code} with {len(response.content)} bytes; "
            "that is not a status reply, check the URL"
        )
    return response


def check_status(what: str, response: httpx.Response) -> None:
    """5xx, 408 and 429 are temporary; other non-2xx answers permanent (a 3xx is not followed:
    configure the final URL)."""
    status = response.status_code
    if 200 <= status < 300:
        return
    if status >= 500 or status in (408, 429):
        raise TemporaryDeliveryError(f"{what} answered HTTP {status}")
    hint = "; configure the final URL" if 300 <= status < 400 else ""
    raise PermanentDeliveryError(f"{what} refused the request: HTTP {status}{hint}")


def json_body(what: str, response: httpx.Response) -> Mapping[str, Any]:
    """The response as a JSON object, or a permanent error: the upstream answered 2xx, so the
    message may have gone out, and trying again could deliver it twice."""
    try:
        data = response.json()
    except ValueError as err:
        raise PermanentDeliveryError(
            f"{what} answered HTTP {response.status_code} with a body that is not JSON; "
            "outcome unknown, not retried (it may have been delivered)"
        ) from err
    if not isinstance(data, dict):
        raise PermanentDeliveryError(
            f"{what} answered a JSON {type(data).__name__}, not an object; outcome unknown"
        )
    return data
