"""Errors of the notification area: one root to catch, and delivery failures that say whether a
later attempt may succeed (the service retries only those)."""

from __future__ import annotations

from collections.abc import Iterable

from sync_server.errors import ServerError

__all__ = [
    "DeliveryFailedError",
    "InvalidRecipientError",
    "NotificationError",
    "NotificationRequestError",
    "NotifyConfigError",
    "PermanentDeliveryError",
    "TemplateParamsError",
    "TemporaryDeliveryError",
    "UnknownTemplateError",
]


class NotificationError(ServerError):
    """Base of every error raised by ``sync_server.notify``."""


class NotifyConfigError(NotificationError, ValueError):
    """The ``[notify]`` settings are invalid or a secret file cannot be read."""


class UnknownTemplateError(NotificationError, LookupError):
    """A template name that is not in the message catalogue."""


class TemplateParamsError(NotificationError, ValueError):
    """Params that do not fit a template: some required ones missing, unknown ones given, or a
    value that is not a plain string or number. Raised before anything is stored or sent."""

    def __init__(
        self,
        template: str,
        *,
        missing: Iterable[str] = (),
        unknown: Iterable[str] = (),
        bad_values: Iterable[str] = (),
    ) -> None:
        self.template = template
        self.missing = tuple(sorted(missing))
        self.unknown = tuple(sorted(unknown))
        self.bad_values = tuple(sorted(bad_values))
        problems = []
        if self.missing:
            problems.append("missing " + ", ".join(self.missing))
        if self.unknown:
            problems.append("unknown " + ", ".join(self.unknown))
        if self.bad_values:
            problems.append("not a string or number: " + ", ".join(self.bad_values))
        super().__init__(
            f"template {template}: params do not fit ({'; '.join(problems)}); "
            "see docs/notifications.md for each template's params"
        )


class DeliveryFailedError(NotificationError):
    """An adapter could not deliver a notification.

    ``reason`` is short, names no recipient and no secret (it is stored in ``notifications.error``
    and logged). ``retryable`` says whether the same message may go through later (timeouts, 5xx,
    connection refused, a busy upstream) or never will as it is (4xx, bad recipient, the user
    has not subscribed): raise :class:`TemporaryDeliveryError` or :class:`PermanentDeliveryError`.
    """

    retryable: bool = False

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class TemporaryDeliveryError(DeliveryFailedError):
    """Not delivered now; the service tries again after its backoff."""

    retryable = True


class PermanentDeliveryError(DeliveryFailedError):
    """Not delivered and retrying would not change that."""

    retryable = False


class InvalidRecipientError(PermanentDeliveryError):
    """The recipient is not an address the channel can deliver to (e.g. not a mobile number)."""


class NotificationRequestError(NotificationError, ValueError):
    """A notification request the service cannot store: a bad channel name, an empty or
    over-long recipient, case id or dedupe key."""
