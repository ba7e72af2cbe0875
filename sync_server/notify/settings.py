"""The ``[notify]`` section of the server configuration and the factory of its adapters.

Validated once at start (CONVENTIONS: Klipper): an unknown key, a missing adapter section or an
unreadable secret file is an error naming the key. Secrets (the SMS API key, the WeChat app
secret) are best given as ``*_file`` paths so they stay out of the configuration file; they are
never part of an error message or a log line.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sync_server.notify.adapters import Notifier, RecordingNotifier
from sync_server.notify.errors import NotifyConfigError
from sync_server.notify.sms import SmsGatewayNotifier
from sync_server.notify.wechat import DEFAULT_BASE_URL, WeChatTemplateNotifier

__all__ = [
    "CHANNELS",
    "NotificationSettings",
    "RetrySettings",
    "SmsGatewaySettings",
    "WeChatTemplateSettings",
    "build_notifiers",
    "parse_notify_settings",
]

CHANNELS = ("sms", "wechat")
_SECRET_KEYS = frozenset({"api_key", "api_secret", "secret"})
MAX_SECRET_BYTES = 4096
STALE_PER_TIMEOUT = 12


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetrySettings(_Section):
    """When failed-but-retryable notifications are sent again (``NotificationService.retry_due``).

    Attempt n+1 comes ``backoff_s * 2**(n-1)`` seconds (at most ``backoff_max_s``) after attempt
    n failed; after ``max_attempts`` attempts in all the failure is final. A row still ``queued``
    ``stale_after_s`` after its attempt began belongs to a process that stopped mid-send; it is
    sent again (the message may then arrive twice, rather than never).
    """

    max_attempts: Annotated[int, Field(ge=1, le=20)] = 5
    backoff_s: Annotated[float, Field(gt=0, le=86_400)] = 60.0
    backoff_max_s: Annotated[float, Field(gt=0, le=7 * 86_400)] = 3600.0
    stale_after_s: Annotated[float, Field(ge=60, le=86_400)] = 600.0

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th attempt failed."""
        return float(min(self.backoff_s * 2 ** max(attempts - 1, 0), self.backoff_max_s))


class SmsGatewaySettings(_Section):
    """:class:`~sync_server.notify.sms.SmsGatewayNotifier` options (docs/notifications.md).

    ``api_key`` / ``api_secret`` (inline) or ``api_key_file`` / ``api_secret_file`` are the
    ``{api_key}`` / ``{api_secret}`` placeholders of url, query, headers and body_template.
    """

    url: Annotated[str, Field(min_length=8, max_length=2048, pattern=r"^https?://")]
    method: Literal["POST", "GET"] = "POST"
    body_format: Literal["json", "form"] = "json"
    body_template: dict[str, Any] | str | None = None
    query: dict[str, str] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    sign: Annotated[str, Field(max_length=32)] = ""
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    success_field: Annotated[str, Field(max_length=128)] = "code"
    success_value: Annotated[str, Field(max_length=64)] = "0"
    retryable_values: list[str] = Field(default_factory=list)
    message_field: Annotated[str, Field(max_length=128)] = ""
    api_key: Annotated[str, Field(repr=False)] = ""
    api_key_file: str = ""
    api_secret: Annotated[str, Field(repr=False)] = ""
    api_secret_file: str = ""
    proxy: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> SmsGatewaySettings:
        for name in ("api_key", "api_secret"):
            if getattr(self, name) and getattr(self, f"{name}_file"):
                raise ValueError(f"set {name}_file or {name}, not both")
        return self


class WeChatTemplateSettings(_Section):
    """:class:`~sync_server.notify.wechat.WeChatTemplateNotifier` options."""

    appid: Annotated[str, Field(min_length=1, max_length=64)]
    secret: Annotated[str, Field(repr=False)] = ""
    secret_file: str = ""
    template_ids: dict[str, str] = Field(default_factory=dict)
    fields: dict[str, dict[str, str]] = Field(default_factory=dict)
    link_param: str = "link"
    base_url: Annotated[str, Field(pattern=r"^https?://")] = DEFAULT_BASE_URL
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    client_msg_id: bool = True
    proxy: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> WeChatTemplateSettings:
        if bool(self.secret) == bool(self.secret_file):
            raise ValueError("set exactly one of secret_file (preferred) or secret")
        return self


class NotificationSettings(_Section):
    """The ``[notify]`` section: an adapter per channel (``record`` by default) and retries."""

    sms: Literal["record", "gateway"] = "record"
    wechat: Literal["record", "template"] = "record"
    retry: RetrySettings = Field(default_factory=RetrySettings)
    sms_gateway: SmsGatewaySettings | None = None
    wechat_template: WeChatTemplateSettings | None = None

    @model_validator(mode="after")
    def _sections_present(self) -> NotificationSettings:
        if self.sms == "gateway" and self.sms_gateway is None:
            raise ValueError('sms = "gateway" needs a [notify.sms_gateway] section')
        if self.wechat == "template" and self.wechat_template is None:
            raise ValueError('wechat = "template" needs a [notify.wechat_template] section')
        timeouts = [s.timeout_s for s in (self.sms_gateway, self.wechat_template) if s]
        # A WeChat send is up to four requests (token, send, token, send), each of which may
        # take a connect, a write and a read timeout: a row younger than that may be in flight.
        if timeouts and self.retry.stale_after_s < STALE_PER_TIMEOUT * max(timeouts):
            raise ValueError(
                f"retry.stale_after_s must be at least {STALE_PER_TIMEOUT} times the longest "
                "adapter timeout_s, or a slow send still in flight would be sent again"
            )
        return self


def _describe(error: Mapping[str, Any], source: str) -> str:
    key = ".".join([source, *(str(part) for part in error["loc"])])
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{key}: unknown key (misspelled?)"
    if kind == "missing":
        return f"{key}: required key is missing"
    given = error.get("input")
    if _SECRET_KEYS & {str(part) for part in error["loc"]} or not isinstance(
        given, str | int | float
    ):
        return f"{key}: {error['msg']}"  # never echo a secret, nor a table that may hold one
    given = repr(given)
    return f"{key}: {error['msg']} (got {given[:80]})"


def parse_notify_settings(data: Mapping[str, Any], source: str = "notify") -> NotificationSettings:
    """Validate the parsed ``[notify]`` table; :class:`NotifyConfigError` names every bad key."""
    try:
        return NotificationSettings.model_validate(dict(data))
    except ValidationError as err:
        problems = "; ".join(_describe(e, source) for e in err.errors())
        raise NotifyConfigError(f"invalid notification settings: {problems}") from None


def _secret(inline: str, path: str, key: str) -> str:
    if not path:
        return inline
    try:
        raw = Path(path).read_bytes()[: MAX_SECRET_BYTES + 1]
    except OSError as err:
        raise NotifyConfigError(
            f"{key}: cannot read {path} ({err.strerror}); it must hold the secret alone"
        ) from None
    try:
        value = raw.decode("utf-8").strip() if len(raw) <= MAX_SECRET_BYTES else ""
    except UnicodeDecodeError:
        value = ""
    if not value:
        raise NotifyConfigError(f"{key}: {path} is empty, not UTF-8 or too long to be a secret")
    return value


def build_notifiers(settings: NotificationSettings) -> dict[str, Notifier]:
    """One adapter per channel of :data:`CHANNELS`, as configured (``record`` by default).

    Secret files are read here; the caller closes the adapters (``NotificationService.close``).
    """
    notifiers: dict[str, Notifier] = {}
    try:
        notifiers["sms"] = _build_sms(settings)
        notifiers["wechat"] = _build_wechat(settings)
    except BaseException:
        for built in notifiers.values():
            built.close()
        raise
    return notifiers


def _build_sms(settings: NotificationSettings) -> Notifier:
    sms = settings.sms_gateway
    if settings.sms != "gateway" or sms is None:
        return RecordingNotifier("sms")
    secrets = {}
    for name in ("api_key", "api_secret"):
        key = f"sms_gateway.{name}_file"
        if value := _secret(getattr(sms, name), getattr(sms, f"{name}_file"), key):
            secrets[name] = value
    return SmsGatewayNotifier(
        sms.url,
        sms.body_template,
        method=sms.method,
        body_format=sms.body_format,
        query=sms.query,
        headers=sms.headers,
        sign=sms.sign,
        timeout_s=sms.timeout_s,
        success_field=sms.success_field,
        success_value=sms.success_value,
        retryable_values=sms.retryable_values,
        message_field=sms.message_field,
        secrets=secrets,
        proxy=sms.proxy,
    )


def _build_wechat(settings: NotificationSettings) -> Notifier:
    wx = settings.wechat_template
    if settings.wechat != "template" or wx is None:
        return RecordingNotifier("wechat")
    return WeChatTemplateNotifier(
        wx.appid,
        _secret(wx.secret, wx.secret_file, "wechat_template.secret_file"),
        wx.template_ids,
        fields=wx.fields,
        link_param=wx.link_param,
        base_url=wx.base_url,
        timeout_s=wx.timeout_s,
        client_msg_id=wx.client_msg_id,
        proxy=wx.proxy,
    )
