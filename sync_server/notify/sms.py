"""SMS through an HTTP gateway, configured rather than coded per vendor.

Chinese SMS gateways differ in shape but not in kind: a POST (or GET) carrying the number, the
text with its signature (【签名】) and an account key, answered by JSON with a status code such as
``{"code": "0"}``. :class:`SmsGatewayNotifier` takes the request as a template with placeholders
and the success test as a field and a value, so a new gateway is a config change.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import httpx
import jinja2
from jinja2.sandbox import SandboxedEnvironment

from sync_server.notify.errors import (
    InvalidRecipientError,
    NotifyConfigError,
    PermanentDeliveryError,
    TemporaryDeliveryError,
)
from sync_server.notify.masking import normalize_mobile, scrub
from sync_server.notify.transport import check_status, json_body, make_client, request

__all__ = ["DEFAULT_BODY", "PLACEHOLDERS", "SmsGatewayNotifier"]

WHAT = "the SMS gateway"
PLACEHOLDERS = ("phone", "phone_e164", "text", "sign", "template")
"""Placeholders every request template may use, besides the names of the configured secrets:
``{phone}`` is 11 digits, ``{phone_e164}`` ``+86`` and the 11 digits."""
DEFAULT_BODY: Mapping[str, Any] = {"phone": "{phone}", "text": "{sign}{text}"}
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SECRET_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
MAX_DETAIL_CHARS = 120


def _placeholders_in(value: Any) -> set[str]:
    if isinstance(value, str):
        return set(_PLACEHOLDER.findall(value))
    if isinstance(value, Mapping):
        return set().union(*(_placeholders_in(v) for v in value.values())) if value else set()
    if isinstance(value, list | tuple):
        return set().union(*(_placeholders_in(v) for v in value)) if value else set()
    return set()


def _fill(value: Any, values: Mapping[str, str]) -> Any:
    """``value`` with every ``{name}`` in its strings replaced, recursively (lists, tables)."""
    if isinstance(value, str):
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], value)
    if isinstance(value, Mapping):
        return {k: _fill(v, values) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_fill(v, values) for v in value]
    return value


def _lookup(data: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    """``data["a"]["b"]`` for ``path="a.b"``; (False, None) when a step is missing."""
    current: Any = data
    for step in path.split("."):
        if not isinstance(current, Mapping) or step not in current:
            return False, None
        current = current[step]
    return True, current


class SmsGatewayNotifier:
    """Sends SMS through one HTTP gateway (channel ``sms``).

    ``body_template`` is either a table (JSON object or form fields) whose strings hold
    ``{phone}`` ``{text}`` ``{sign}``... placeholders, or a jinja2 template string rendered with
    the same names as variables (plus ``params``) for gateways that want another shape; in a
    jinja2 JSON body write ``{{ text|tojson }}``. ``url``, ``query`` and ``headers`` take the same
    placeholders; ``secrets`` (e.g. ``{"api_key": ...}``) are placeholders too, and never logged.

    Success: a 2xx answer and, when ``success_field`` is set (a dotted path into the JSON answer),
    that field equal to ``success_value`` (compared as text, so ``0`` and ``"0"`` both match);
    with ``success_field`` empty and ``success_value`` set, the whole answer body is compared
    (gateways that answer a bare ``0``). Other values are permanent failures unless listed in
    ``retryable_values`` (e.g. a rate-limit code). ``message_field`` names the gateway's own
    explanation, copied (masked, shortened) into the failure reason.
    """

    def __init__(
        self,
        url: str,
        body_template: Mapping[str, Any] | str | None = None,
        *,
        method: Literal["POST", "GET"] = "POST",
        body_format: Literal["json", "form"] = "json",
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        sign: str = "",
        timeout_s: float = 5.0,
        success_field: str = "code",
        success_value: str = "0",
        retryable_values: Collection[str] = (),
        message_field: str = "",
        secrets: Mapping[str, str] | None = None,
        proxy: str | None = None,
        channel: str = "sms",
    ) -> None:
        secrets = dict(secrets or {})
        for name in secrets:
            if not _SECRET_NAME.match(name) or name in PLACEHOLDERS:
                raise NotifyConfigError(f"SMS gateway secret name {name!r} is not allowed")
        known = set(PLACEHOLDERS) | set(secrets)
        if not url.startswith(("http://", "https://")):
            raise NotifyConfigError("SMS gateway url must start with http:// or https://")
        if timeout_s <= 0:
            raise NotifyConfigError(f"SMS gateway timeout_s must be > 0, got {timeout_s}")
        self._jinja: jinja2.Template | None = None
        if isinstance(body_template, str):
            env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
            try:
                self._jinja = env.from_string(body_template)
            except jinja2.TemplateSyntaxError as err:
                raise NotifyConfigError(
                    f"SMS gateway body_template is not a valid jinja2 template: line "
                    f"{err.lineno}: {err.message}"
                ) from err
            self._body: Mapping[str, Any] | None = None
        else:
            self._body = dict(DEFAULT_BODY if body_template is None else body_template)
        templated = [url, dict(query or {}), dict(headers or {}), self._body or {}]
        unknown = set().union(*(_placeholders_in(t) for t in templated)) - known
        if unknown:
            raise NotifyConfigError(
                f"SMS gateway request uses unknown placeholders {sorted(unknown)}; "
                f"known: {sorted(known)}"
            )
        if method == "GET" and (self._body or self._jinja):
            if body_template is not None:
                raise NotifyConfigError("SMS gateway method GET takes query, not body_template")
            self._body = None
        self._url = url
        self._method = method
        self._body_format = body_format
        self._query = dict(query or {})
        self._headers = dict(headers or {})
        self._sign = sign
        self._success_field = success_field
        self._success_value = success_value
        self._retryable = frozenset(retryable_values)
        self._message_field = message_field
        self._secrets = secrets
        self._channel = channel
        self._client = make_client(timeout_s, proxy)

    def __repr__(self) -> str:
        # The URL's host only: its path or query may carry an account key.
        return f"SmsGatewayNotifier(host={urlsplit(self._url).hostname!r})"

    @property
    def channel(self) -> str:
        return self._channel

    def close(self) -> None:
        self._client.close()

    def send(self, recipient: str, template: str, text: str, params: Mapping[str, str]) -> None:
        phone = normalize_mobile(recipient)
        if phone is None:
            raise InvalidRecipientError(
                "recipient is not a mainland mobile number (11 digits starting with 1, "
                "optionally after +86); not sent"
            )
        values = {
            **self._secrets,
            "phone": phone,
            "phone_e164": f"+86{phone}",
            "text": text,
            "sign": self._sign,
            "template": template,
        }
        kwargs: dict[str, Any] = {
            "params": _fill(self._query, values) or None,
            "headers": _fill(self._headers, values),
        }
        if self._jinja is not None:
            kwargs["content"] = self._render_jinja(values, params).encode("utf-8")
            if not any(k.lower() == "content-type" for k in self._headers):
                kwargs["headers"]["Content-Type"] = "application/json; charset=utf-8"
        elif self._body is not None:
            body = _fill(self._body, values)
            kwargs["json" if self._body_format == "json" else "data"] = body
        # Values in the URL itself are percent-encoded (query values are encoded by httpx).
        url = _PLACEHOLDER.sub(lambda m: quote(values[m.group(1)], safe=""), self._url)
        response = request(self._client, WHAT, self._method, url, **kwargs)
        check_status(WHAT, response)
        self._check_answer(response, recipient)

    def _render_jinja(self, values: Mapping[str, str], params: Mapping[str, str]) -> str:
        assert self._jinja is not None
        try:
            return self._jinja.render(**values, params=dict(params))
        except (jinja2.TemplateError, TypeError, ValueError, LookupError) as err:
            # e.g. a template name missing from a mapping written in the template. Jinja's own
            # messages name the template's variables; other errors may quote values: type only.
            detail = f": {err}" if isinstance(err, jinja2.TemplateError) else ""
            raise PermanentDeliveryError(
                f"SMS gateway body_template failed: {type(err).__name__}{detail}"
            ) from err

    def _check_answer(self, response: httpx.Response, recipient: str) -> None:
        if self._success_field:
            data = json_body(WHAT, response)
            found, value = _lookup(data, self._success_field)
            if not found:
                raise PermanentDeliveryError(
                    f"{WHAT} answer has no field {self._success_field!r}; outcome unknown, "
                    "check success_field"
                )
            code = str(value)
            detail = ""
            if self._message_field:
                _, message = _lookup(data, self._message_field)
                detail = "" if message is None else str(message)
        elif self._success_value:
            code = response.text.strip()[:32]
            detail = ""
        else:
            return  # a 2xx answer is all this gateway says
        if code == self._success_value:
            return
        reason = f"{WHAT} refused the message: code {code}"
        if detail:
            reason += f" ({scrub(detail, recipient)[:MAX_DETAIL_CHARS]})"
        if code in self._retryable:
            raise TemporaryDeliveryError(reason)
        raise PermanentDeliveryError(reason)
