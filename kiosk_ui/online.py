"""The kiosk's online questions over ``up/rpc``: a resident not in the local cache, and the
applications a resident submitted on their phone.

Both are asked only while the sync agent is connected (``online()``), from a worker thread of the
session (a call may wait for its timeout), and both may fail: every failure is one of the typed
:class:`OnlineError` subclasses so the screen can say plainly what happened. Nothing fetched here
is stored on the kiosk: a record found online lives in the session and is wiped with it.

The server methods (docs/kiosk-session.md, "Server methods"): ``residents.lookup``
``{"id_number"}`` -> a ``residents`` item ``{"id_number", "household"}`` or error ``not-found``;
``applications.list`` ``{"id_number"}`` -> ``{"applications": [{"id", "title", "status",
"submitted_at", "template", "data"}]}``; ``applications.status`` ``{"number"}`` -> ``{"number",
"title", "status", "updated_at"}`` (no personal data: anyone at the kiosk may ask) or
``not-found``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from device.errors import LinliError
from device.idcard.identity import Identity
from device.store.documents import normalise_id_number
from device.sync.rpc import RpcError, RpcRemoteError, RpcTimeoutError, RpcUnavailableError

log = logging.getLogger(__name__)

RESIDENTS_LOOKUP = "residents.lookup"
APPLICATIONS_LIST = "applications.list"
APPLICATIONS_STATUS = "applications.status"
DEFAULT_TIMEOUT_S = 4.0


class RpcCaller(Protocol):
    """What the kiosk needs of :class:`device.sync.rpc.RpcClient`."""

    def call(
        self, method: str, params: Mapping[str, Any] | None = None, *, timeout_s: float = ...
    ) -> Any: ...


class OnlineError(LinliError):
    """An online question got no usable answer; ``words`` is what the screen says."""

    words = "服务器暂时不能回答"


class OfflineError(OnlineError, ConnectionError):
    """The kiosk is not connected to the server: nothing was asked."""

    words = "本机现在连不上服务器"


class ServerTimeoutError(OnlineError, TimeoutError):
    """The server did not answer in time."""

    words = "服务器没有及时答复"


class NotOfferedError(OnlineError):
    """The server does not offer this method (``unknown-method``): an older server."""

    words = "服务器暂未开通这项查询"


class BadAnswerError(OnlineError, ValueError):
    """The server answered something the kiosk cannot use (wrong shape, another resident)."""

    words = "服务器的答复无法使用"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_M = TypeVar("_M", bound=BaseModel)


class _OnlineService:
    """One rpc link to the server, with its failures translated into :class:`OnlineError`s."""

    def __init__(
        self,
        rpc: RpcCaller | None,
        online: Callable[[], bool],
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self._rpc = rpc
        self._online = online
        self.timeout_s = timeout_s

    def _answer(
        self, method: str, params: Mapping[str, Any], model: type[_M], *, absent_ok: bool = False
    ) -> _M | None:
        """``method``'s answer validated as ``model``; None for ``not-found`` when
        ``absent_ok``. Offline, timeouts, refusals and bad answers raise an OnlineError."""
        if self._rpc is None or not self._online():
            raise OfflineError(f"{method}: the kiosk is offline")
        try:
            result = self._rpc.call(method, params, timeout_s=self.timeout_s)
        except RpcUnavailableError as err:
            raise OfflineError(f"{method}: {err}") from err
        except RpcTimeoutError as err:
            raise ServerTimeoutError(f"{method}: no answer within {self.timeout_s} s") from err
        except RpcRemoteError as err:
            if err.code == "unknown-method":
                raise NotOfferedError(f"the server has no method {method}") from err
            if err.code == "not-found" and absent_ok:
                return None
            raise OnlineError(f"{method} answered {err.code}") from err
        except RpcError as err:
            raise OnlineError(f"{method} failed: {type(err).__name__}") from err
        try:
            return model.model_validate(result)
        except ValidationError as err:
            raise BadAnswerError(f"{method}: {err.error_count()} schema errors") from err


class _ResidentItem(_Strict):
    id_number: str
    household: dict[str, Any]


class OnlineResidents(_OnlineService):
    """Looks up a resident the local cache does not have (异地通办) with ``residents.lookup``."""

    def household_for(self, identity: Identity) -> Mapping[str, Any] | None:
        """The household record, or None when the server has none (``not-found``).

        Raises an :class:`OnlineError` when the server cannot be asked or gives no usable answer.
        """
        wanted = normalise_id_number(identity.id_number)
        item = self._answer(RESIDENTS_LOOKUP, {"id_number": wanted}, _ResidentItem, absent_ok=True)
        if item is None:
            return None
        if normalise_id_number(item.id_number) != wanted:
            raise BadAnswerError(f"{RESIDENTS_LOOKUP} answered for another resident")
        log.info("resident %s found online", identity.masked())
        return item.household


class _Application(_Strict):
    id: Annotated[str, Field(min_length=1, max_length=64)]
    title: Annotated[str, Field(min_length=1, max_length=64)]
    status: Annotated[str, Field(max_length=64)] = ""
    submitted_at: float | None = None
    template: str | None = None
    data: dict[str, Any] = {}


class _Applications(_Strict):
    applications: list[_Application]


class _Progress(_Strict):
    number: Annotated[str, Field(min_length=1, max_length=16)]
    title: Annotated[str, Field(min_length=1, max_length=64)]
    status: Annotated[str, Field(min_length=1, max_length=120)]
    updated_at: float | None = None


@dataclass(frozen=True)
class Progress:
    """How far an application or a locker case got (``applications.status``); not personal."""

    number: str
    title: str
    status: str
    updated_at: float | None


@dataclass(frozen=True, repr=False)
class Application:
    """One application the resident submitted online. ``template`` names the kiosk template that
    prints it (None: the server keeps it, there is nothing to print here); ``data`` fills that
    template's household fields, laid over the resident's household record."""

    id: str
    title: str
    status: str
    submitted_at: float | None
    template: str | None
    data: Mapping[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"Application(id={self.id!r}, template={self.template!r})"


class OnlineApplications(_OnlineService):
    """The resident's online applications (``applications.list``), to see and to print."""

    def list_for(self, identity: Identity) -> list[Application]:
        """The resident's applications, newest first; raises an :class:`OnlineError`."""
        params = {"id_number": normalise_id_number(identity.id_number)}
        answer = self._answer(APPLICATIONS_LIST, params, _Applications)
        assert answer is not None  # absent_ok is False: not-found raised
        found = [
            Application(a.id, a.title, a.status, a.submitted_at, a.template, a.data)
            for a in answer.applications
        ]
        found.sort(key=lambda a: -(a.submitted_at or 0.0))
        log.info("%d online applications for %s", len(found), identity.masked())
        return found

    def progress(self, number: str) -> Progress | None:
        """The progress of application or case ``number``; None when the server knows no such
        number. Raises an :class:`OnlineError`."""
        answer = self._answer(APPLICATIONS_STATUS, {"number": number}, _Progress, absent_ok=True)
        if answer is None:
            return None
        if answer.number != number:
            raise BadAnswerError(f"{APPLICATIONS_STATUS} answered for another number")
        return Progress(answer.number, answer.title, answer.status, answer.updated_at)
