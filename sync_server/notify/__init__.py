"""Notifications to residents, grid workers and staff behind one interface (docs/notifications.md).

A message is a named template of the catalogue (Simplified Chinese) with its params; a channel
(``sms``, ``wechat``) has an adapter implementing :class:`Notifier`: an HTTP SMS gateway, WeChat
template messages, or the default :class:`RecordingNotifier`, which only records. The
:class:`NotificationService` stores every notification, sends it, and retries what may succeed
later.
"""

from __future__ import annotations

from sync_server.notify.adapters import Notifier, RecordedMessage, RecordingNotifier
from sync_server.notify.catalogue import TEMPLATES, Template, check_params, get_template, render
from sync_server.notify.errors import (
    DeliveryFailedError,
    InvalidRecipientError,
    NotificationError,
    NotificationRequestError,
    NotifyConfigError,
    PermanentDeliveryError,
    TemplateParamsError,
    TemporaryDeliveryError,
    UnknownTemplateError,
)
from sync_server.notify.masking import mask_recipient, normalize_mobile
from sync_server.notify.service import NotificationRecord, NotificationService
from sync_server.notify.settings import (
    CHANNELS,
    NotificationSettings,
    RetrySettings,
    SmsGatewaySettings,
    WeChatTemplateSettings,
    build_notifiers,
    parse_notify_settings,
)
from sync_server.notify.sms import SmsGatewayNotifier
from sync_server.notify.wechat import WeChatTemplateNotifier

__all__ = [
    "CHANNELS",
    "TEMPLATES",
    "DeliveryFailedError",
    "InvalidRecipientError",
    "NotificationError",
    "NotificationRecord",
    "NotificationRequestError",
    "NotificationService",
    "NotificationSettings",
    "Notifier",
    "NotifyConfigError",
    "PermanentDeliveryError",
    "RecordedMessage",
    "RecordingNotifier",
    "RetrySettings",
    "SmsGatewayNotifier",
    "SmsGatewaySettings",
    "Template",
    "TemplateParamsError",
    "TemporaryDeliveryError",
    "UnknownTemplateError",
    "WeChatTemplateNotifier",
    "WeChatTemplateSettings",
    "build_notifiers",
    "check_params",
    "get_template",
    "mask_recipient",
    "normalize_mobile",
    "parse_notify_settings",
    "render",
]
