"""WeChat Official Account (公众号) template messages to residents who follow the account.

The real API: ``GET /cgi-bin/token`` gives an access token (valid ``expires_in`` seconds, cached
here until shortly before that), ``POST /cgi-bin/message/template/send?access_token=...`` sends
``{touser, template_id, url, data: {key: {value}}}`` and answers ``{errcode, errmsg, msgid}``.
A token refused as invalid or expired (40001, 40014, 42001: another process fetched a new one,
or it lapsed) is fetched again once and the message resent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from sync_server.notify.catalogue import TEMPLATES
from sync_server.notify.errors import (
    InvalidRecipientError,
    NotifyConfigError,
    PermanentDeliveryError,
    TemporaryDeliveryError,
)
from sync_server.notify.masking import scrub
from sync_server.notify.transport import check_status, json_body, make_client, request

__all__ = [
    "DEFAULT_BASE_URL",
    "PERMANENT_ERRCODES",
    "TEMPORARY_ERRCODES",
    "TOKEN_ERRCODES",
    "WeChatTemplateNotifier",
]

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.weixin.qq.com"
WHAT = "the WeChat API"
TOKEN_ERRCODES = frozenset({40001, 40014, 42001})
"""The access token is invalid or expired: fetch a new one and resend, once."""
TEMPORARY_ERRCODES: Mapping[int, str] = {
    -1: "WeChat system busy",
    45009: "daily API quota reached",
    45011: "API called too often",
}
PERMANENT_ERRCODES: Mapping[int, str] = {
    40003: "not an openid of this account",
    40013: "invalid appid",
    40037: "invalid template_id",
    40125: "invalid app secret",
    40164: "this server's IP is not on the account's whitelist",
    43004: "the recipient does not follow the official account",
    43101: "the recipient refused messages from this account",
    47003: "a template field value is invalid (too long, or the wrong kind)",
}
_OPENID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
TOKEN_MARGIN_S = 300.0
"""A cached token is replaced this long before WeChat says it expires (or at half its life)."""
MAX_ERRMSG_CHARS = 100


def _errcode(data: Mapping[str, Any]) -> int:
    try:
        return int(data.get("errcode", 0))
    except (TypeError, ValueError):
        raise PermanentDeliveryError(
            f"{WHAT} answered an errcode that is not a number; outcome unknown"
        ) from None


def _failure(errcode: int, data: Mapping[str, Any], doing: str, recipient: str = "") -> Exception:
    meaning = TEMPORARY_ERRCODES.get(errcode) or PERMANENT_ERRCODES.get(errcode)
    errmsg = scrub(str(data.get("errmsg", "")), recipient)[:MAX_ERRMSG_CHARS]
    reason = f"{WHAT} refused {doing}: errcode {errcode} ({meaning or errmsg or 'unknown'})"
    if errcode in TEMPORARY_ERRCODES:
        return TemporaryDeliveryError(reason)
    if errcode == 40003:
        return InvalidRecipientError(reason)
    return PermanentDeliveryError(reason)


class WeChatTemplateNotifier:
    """Template messages through one official account (channel ``wechat``; recipient = openid).

    ``template_ids`` maps catalogue names to the account's template ids (a template without one
    fails permanently). ``fields`` maps, per catalogue name, the WeChat template's keys to our
    params (``{"thing1": "service", "time2": "deadline"}``); without it every param is sent
    under its own name. ``link_param`` (default ``link``) becomes the message's ``url``.
    ``client_msg_id`` (a hash of recipient, template and params) lets WeChat drop a resend of
    the same message within its ten-minute window, e.g. after a timeout that hid a success.
    Thread-safe: one token fetch at a time, shared by every sender.
    """

    def __init__(
        self,
        appid: str,
        secret: str,
        template_ids: Mapping[str, str],
        *,
        fields: Mapping[str, Mapping[str, str]] | None = None,
        link_param: str = "link",
        base_url: str = DEFAULT_BASE_URL,
        timeout_s: float = 5.0,
        client_msg_id: bool = True,
        proxy: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        channel: str = "wechat",
    ) -> None:
        if not appid or not secret:
            raise NotifyConfigError("WeChat appid and secret must both be set")
        if not base_url.startswith(("http://", "https://")):
            raise NotifyConfigError("WeChat base_url must start with http:// or https://")
        fields = {name: dict(keys) for name, keys in (fields or {}).items()}
        _check_mapping(template_ids, fields)
        self._appid = appid
        self._secret = secret
        self._template_ids = dict(template_ids)
        self._fields = fields
        self._link_param = link_param
        self._base = base_url.rstrip("/")
        self._client_msg_id = client_msg_id
        self._clock = clock
        self._channel = channel
        self._client = make_client(timeout_s, proxy)
        self._lock = threading.Lock()
        self._token: str | None = None
        self._token_until = 0.0
        self.token_fetches = 0
        """How many access tokens were fetched (a test and a health page read it)."""

    def __repr__(self) -> str:
        return f"WeChatTemplateNotifier(appid={self._appid!r})"

    @property
    def channel(self) -> str:
        return self._channel

    def close(self) -> None:
        self._client.close()

    def send(self, recipient: str, template: str, text: str, params: Mapping[str, str]) -> None:
        if not _OPENID.match(recipient):
            raise InvalidRecipientError("recipient is not a WeChat openid; not sent")
        template_id = self._template_ids.get(template)
        if template_id is None:
            raise PermanentDeliveryError(
                f"no WeChat template id configured for {template}; add it to "
                "notify.wechat_template.template_ids"
            )
        message = self._message(recipient, template, template_id, params)
        for attempt in (1, 2):
            token = self._access_token()
            response = request(
                self._client,
                WHAT,
                "POST",
                f"{self._base}/cgi-bin/message/template/send",
                params={"access_token": token},
                json=message,
            )
            check_status(WHAT, response)
            data = json_body(WHAT, response)
            errcode = _errcode(data)
            if errcode == 0:
                return
            if errcode in TOKEN_ERRCODES and attempt == 1:
                log.info(
                    "WeChat refused the access token (errcode %d); fetching a new one", errcode
                )
                self._forget(token)
                continue
            if errcode in TOKEN_ERRCODES:
                raise TemporaryDeliveryError(
                    f"{WHAT} refused a freshly fetched access token (errcode {errcode}); "
                    "another system may be fetching tokens for this appid"
                )
            raise _failure(errcode, data, "the template message", recipient)

    def _message(
        self, recipient: str, template: str, template_id: str, params: Mapping[str, str]
    ) -> dict[str, Any]:
        keys = self._fields.get(template) or {name: name for name in params}
        message: dict[str, Any] = {
            "touser": recipient,
            "template_id": template_id,
            "data": {key: {"value": params[param]} for key, param in keys.items()},
        }
        link = params.get(self._link_param)
        if link:
            message["url"] = link
        if self._client_msg_id:
            digest = hashlib.sha256(
                json.dumps([recipient, template, dict(params)], sort_keys=True).encode()
            )
            message["client_msg_id"] = digest.hexdigest()[:32]
        return message

    def _access_token(self) -> str:
        with self._lock:
            if self._token is not None and self._clock() < self._token_until:
                return self._token
            started = self._clock()
            response = request(
                self._client,
                WHAT,
                "GET",
                f"{self._base}/cgi-bin/token",
                params={
                    "grant_type": "client_credential",
                    "appid": self._appid,
                    "secret": self._secret,
                },
            )
            check_status(WHAT, response)
            data = json_body(WHAT, response)
            errcode = _errcode(data)
            token, expires_in = data.get("access_token"), data.get("expires_in")
            if errcode != 0 or not isinstance(token, str) or not token:
                raise _failure(errcode, data, "the access-token request")
            if not isinstance(expires_in, int | float) or expires_in <= 0:
                raise TemporaryDeliveryError(f"{WHAT} gave an access token without expires_in")
            self._token = token
            self._token_until = started + expires_in - min(TOKEN_MARGIN_S, expires_in / 2)
            self.token_fetches += 1
            log.info("WeChat access token fetched, valid for %d s", int(expires_in))
            return token

    def _forget(self, token: str) -> None:
        """Drop ``token`` unless another thread already replaced it."""
        with self._lock:
            if self._token == token:
                self._token = None


def _check_mapping(
    template_ids: Mapping[str, str], fields: Mapping[str, Mapping[str, str]]
) -> None:
    """Refuse template names not in the catalogue and fields naming params a template lacks."""
    for name, template_id in template_ids.items():
        if name not in TEMPLATES:
            raise NotifyConfigError(
                f"WeChat template_ids names {name!r}, not a catalogue template; "
                f"known: {', '.join(sorted(TEMPLATES))}"
            )
        if not template_id:
            raise NotifyConfigError(f"WeChat template id for {name} is empty")
    for name, keys in fields.items():
        if name not in template_ids:
            raise NotifyConfigError(f"WeChat fields given for {name}, which has no template id")
        unknown = set(keys.values()) - set(TEMPLATES[name].params)
        if unknown:
            raise NotifyConfigError(
                f"WeChat fields for {name} name params it does not have: {sorted(unknown)}; "
                f"its params: {', '.join(TEMPLATES[name].params)}"
            )
