"""One server process: HTTP, the MQTT consumer and the dispatcher, wired together.

``linli server run --config FILE`` runs all three; ``--role`` picks some of them, so a site may
run them as separate processes (several of each: everything they share is in the database).
A process with the ``http`` role also runs a consumer, because it sends commands to devices over
the broker; the shared subscription spreads the ingest load over every consumer anyway.

After each commit, what the projection and the dispatcher report is acted on in a small thread
pool (notifications may wait on an SMS gateway; the consumer and the dispatcher must not).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, cast

import uvicorn
from sqlalchemy import Engine, Table, select, update

from device.credential import SigningKey, load_signing_key, load_verify_key
from sync_server.applications_rpc import applications_list, applications_status
from sync_server.cases import LockerEffect, hash_token
from sync_server.commands import CommandIssuer, UnknownDeviceError, expire_overdue
from sync_server.config import ServerConfig
from sync_server.consumer import BrokerSettings, Consumer
from sync_server.db import open_database
from sync_server.dispatcher import Dispatcher, DispatchSettings, Notice
from sync_server.documents import DocumentServer
from sync_server.domain_models import Case, Service, ServicePoint, Shift, Worker, WorkerGrid
from sync_server.enrollment import EnrollmentCA
from sync_server.notify.service import NotificationService
from sync_server.notify.settings import build_notifiers
from sync_server.projection import DomainProjector
from sync_server.records.lookup import METHOD as LOOKUP_METHOD
from sync_server.records.lookup import residents_lookup
from sync_server.rpc import RpcServer
from sync_server.web.app import create_app, timestamp_text
from sync_server.web.context import WebContext

__all__ = ["ROLES", "ServerRuntime"]

log = logging.getLogger(__name__)

ROLES: Final = ("http", "consumer", "dispatcher")
HOUSEKEEPING_S: Final = 60.0
ALARM_PROBLEMS: Final = {
    "compartment.alarm": "柜门长时间未关闭",
    "compartment.fault": "开锁故障",
    "compartment.open_dropped": "开柜请求已失效",
}

_cases = cast(Table, Case.__table__)
_services = cast(Table, Service.__table__)
_points = cast(Table, ServicePoint.__table__)
_workers = cast(Table, Worker.__table__)
_grids = cast(Table, WorkerGrid.__table__)
_shifts = cast(Table, Shift.__table__)


class ServerRuntime:
    """The parts of one server process for ``config`` and ``roles``; :meth:`run` serves."""

    def __init__(self, config: ServerConfig, roles: Sequence[str] = ROLES) -> None:
        unknown = set(roles) - set(ROLES)
        if unknown or not roles:
            raise ValueError(f"roles must be some of {ROLES}, got {sorted(roles)}")
        self.config = config
        self.roles = tuple(roles)
        self.engine: Engine = open_database(config.database.url)
        self.key: SigningKey = load_signing_key(config.signing.key, config.signing.kid)
        self.enrollment_ca: EnrollmentCA | None = None
        if config.enrollment is not None:
            self.enrollment_ca = EnrollmentCA.load(
                config.enrollment.ca_cert, config.enrollment.ca_key, config.enrollment.chain
            )
        self.notifications = NotificationService(
            self.engine, build_notifiers(config.notify), retry=config.notify.retry
        )
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="linli-effects")
        self.issuer = CommandIssuer(self.engine, self.key)
        self.consumer: Consumer | None = None
        self.dispatcher: Dispatcher | None = None
        self.server: uvicorn.Server | None = None
        if "dispatcher" in self.roles:
            d = config.dispatch
            self.dispatcher = Dispatcher(
                self.engine,
                DispatchSettings(
                    interval_s=d.interval_s,
                    ack_timeout_s=d.ack_timeout_s,
                    escalate_margin_s=d.escalate_margin_s,
                    escalate_after_s=d.escalate_after_s,
                    remind_before_s=d.remind_before_s,
                    collect_remind_after_s=d.collect_remind_after_s,
                ),
                notify=self._later(self._send_notices),
            )
        if "consumer" in self.roles or "http" in self.roles:
            self.consumer = self._make_consumer()

    def _later(self, fn: Callable[[Sequence[Any]], None]) -> Callable[[Sequence[Any]], None]:
        """``fn`` run in the effects pool, so the caller's thread never waits on it."""

        def submit(items: Sequence[Any]) -> None:
            self._pool.submit(fn, list(items))

        return submit

    # -- parts ------------------------------------------------------------------------------------
    def _make_consumer(self) -> Consumer:
        b = self.config.broker
        password = b.password_file.read_text(encoding="utf-8").strip()
        consumer = Consumer(
            self.engine,
            BrokerSettings(host=b.host, port=b.port, keepalive_s=b.keepalive_s),
            user=b.user,
            password=password,
            ca_file=b.ca,
            client_id=b.client_id,
            projector=DomainProjector(),
            on_effects=self._later(self._on_effects),
        )
        consumer.add_handler(
            "up/sync-req", DocumentServer(self.engine, publish=consumer.publish).handle_request
        )
        rpc = RpcServer(consumer.publish)
        rpc.register(LOOKUP_METHOD, residents_lookup(self.engine))
        rpc.register("applications.list", applications_list(self.engine))
        rpc.register("applications.status", applications_status(self.engine))
        consumer.add_handler("up/rpc", rpc.handle)
        self.issuer.attach(consumer)
        return consumer

    def send_command(self, device: str, type: str, args: Mapping[str, Any]) -> str | None:
        """Sign, store and publish a command; None when the device cannot be reached now."""
        if self.consumer is None:
            return None
        try:
            command = self.issuer.issue(device, type, args)
        except UnknownDeviceError:
            log.warning("command %s for %s not sent: it has never connected", type, device)
            return None
        return command.id if self.issuer.send(self.consumer, command) else None

    def web_app(self) -> Any:
        context = WebContext(
            engine=self.engine,
            signing_key=self.key,
            send_command=self.send_command,
            site_name=self.config.site_name,
            extra={
                "ack_timeout_s": self.config.dispatch.ack_timeout_s,
                "notifications": self.notifications,  # SMS codes of online applications
                "verify_keys": {
                    kid: load_verify_key(path, kid)
                    for kid, path in self.config.signing.verify_keys.items()
                },
                "enrollment_ca": self.enrollment_ca,
            },
        )
        return create_app(context)

    # -- effects ----------------------------------------------------------------------------------
    def _on_effects(self, effects: Sequence[Any]) -> None:
        for effect in effects:
            if not isinstance(effect, LockerEffect):
                continue
            try:
                if effect.kind in ALARM_PROBLEMS:
                    self._alarm(effect)
                    continue
                if effect.case_id is None:
                    continue
                if effect.kind == "case.deposited":
                    self._notify_resident(effect.case_id, "case.deposited")
                    if self.dispatcher is not None:
                        self.dispatcher.wake()
                elif effect.kind == "case.result_stored":
                    self._notify_resident(effect.case_id, "case.result_ready")
            except Exception:  # one failed notification must not stop the others
                log.exception("acting on %s for case %s failed", effect.kind, effect.case_id)

    def _alarm(self, effect: LockerEffect) -> None:
        """A door left open, a lock in fault, a dropped opening: the grid's workers on shift go
        and look (DESIGN.md section 3: the server escalates a door alarm to the grid worker)."""
        now = time.time()
        with self.engine.connect() as conn:
            point = conn.execute(select(_points).where(_points.c.device_id == effect.device_id))
            locker = point.first()
            if locker is None:
                return
            phones = [
                p
                for (p,) in conn.execute(
                    select(_workers.c.phone)
                    .join(_grids, _grids.c.worker_id == _workers.c.id)
                    .join(_shifts, _shifts.c.worker_id == _workers.c.id)
                    .where(
                        _grids.c.grid_id == locker.area_id,
                        _workers.c.active,
                        _shifts.c.start_at <= now,
                        _shifts.c.end_at > now,
                    )
                    .distinct()
                )
                if p
            ]
        params = {
            "locker": locker.name,
            "compartment": str(effect.compartment or "?"),
            "problem": ALARM_PROBLEMS[effect.kind],
        }
        for phone in phones:
            self.notifications.notify("sms", phone, "locker.alarm", params, case_id=effect.case_id)

    def _case_names(self, case_id: str) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(
                select(
                    _cases,
                    _services.c.name.label("service_name"),
                    _points.c.name.label("locker_name"),
                )
                .join(_services, _services.c.id == _cases.c.service_id)
                .join(_points, _points.c.device_id == _cases.c.device_id)
                .where(_cases.c.id == case_id)
            ).one()

    def _notify_resident(self, case_id: str, template: str) -> None:
        row = self._case_names(case_id)
        if not row.phone:
            return
        params = {"service": row.service_name, "locker": row.locker_name, "case_no": case_id}
        dedupe = f"{template}:{case_id}"
        if self.notifications.by_dedupe(dedupe) is not None:
            return  # a redelivered effect: the resident was told (and has the link) already
        if template == "case.result_ready":
            # The resident's own link holds a token we only keep the hash of: the SMS carries
            # a second token, whose hash the case also accepts.
            token = secrets.token_urlsafe(24)
            with self.engine.begin() as conn:
                conn.execute(
                    update(_cases).where(_cases.c.id == case_id).values(link_hash=hash_token(token))
                )
            params["link"] = f"{self.config.public_url.rstrip('/')}/c/{case_id}/{token}"
        self.notifications.notify(
            "sms", row.phone, template, params, case_id=case_id, dedupe=f"{template}:{case_id}"
        )

    def _send_notices(self, notices: Sequence[Notice]) -> None:
        for notice in notices:
            try:
                self._send_notice(notice)
            except Exception:
                log.exception("notice %s for case %s failed", notice.template, notice.case_id)

    def _send_notice(self, notice: Notice) -> None:
        row = self._case_names(notice.case_id)
        params: dict[str, Any] = {"service": row.service_name, "case_no": notice.case_id}
        deadline = _when(row.due_at)
        if notice.template == "case.assigned":
            params.update(locker=row.locker_name, deadline=deadline)
        elif notice.template in ("case.overdue", "case.reminder"):
            params.update(deadline=deadline)
        elif notice.template == "case.collect_reminder":
            if row.phone:
                self.notifications.notify(
                    "sms",
                    row.phone,
                    notice.template,
                    {"service": row.service_name, "locker": row.locker_name},
                    case_id=notice.case_id,
                    dedupe=f"{notice.template}:{notice.case_id}",
                )
            return
        elif notice.template == "case.escalated":
            level = notice.params.get("level", "community")
            params.update(
                level={"community": "社区", "street": "街道"}.get(level, level),
                reason=str(notice.params.get("reason", "")),
            )
        with self.engine.connect() as conn:
            if notice.worker_id is not None:
                query = select(_workers.c.phone).where(_workers.c.id == notice.worker_id)
            else:
                query = select(_workers.c.phone).where(
                    _workers.c.role == "staff", _workers.c.area_id == notice.area_id
                )
            phones = [p for (p,) in conn.execute(query) if p]
        for phone in phones:
            self.notifications.notify("sms", phone, notice.template, params, case_id=notice.case_id)

    # -- serving ----------------------------------------------------------------------------------
    def start_background(self) -> None:
        """Start the consumer and the dispatcher threads (HTTP is :meth:`run`'s)."""
        if self.consumer is not None:
            self.consumer.start()
        if self.dispatcher is not None:
            self.dispatcher.start()

    def run(self, stop: threading.Event | None = None) -> None:
        """Serve until ``stop`` is set (or SIGTERM/Ctrl-C when HTTP runs in this thread)."""
        self.start_background()
        stop = stop or threading.Event()
        threading.Thread(
            target=self._housekeeping, args=(stop,), name="linli-housekeeping", daemon=True
        ).start()
        try:
            if "http" in self.roles:
                config = uvicorn.Config(
                    self.web_app(),
                    host=self.config.http.host,
                    port=self.config.http.port,
                    access_log=False,  # paths carry case tokens: never log them
                    log_level="warning",
                )
                self.server = uvicorn.Server(config)
                threading.Thread(target=self._stop_on, args=(stop,), daemon=True).start()
                self.server.run()
                stop.set()  # uvicorn returned (SIGTERM, Ctrl-C): stop the housekeeping too
            else:
                stop.wait()
        finally:
            self.close()

    def _housekeeping(self, stop: threading.Event) -> None:
        """Once a minute: resend notifications that failed and may be retried; mark commands
        nobody answered in time ``expired``. A database hiccup is logged and tried again."""
        while not stop.wait(HOUSEKEEPING_S):
            try:
                self.notifications.retry_due()
                expire_overdue(self.engine, time.time())
            except Exception:
                log.exception("housekeeping failed; trying again in %.0f s", HOUSEKEEPING_S)

    def _stop_on(self, stop: threading.Event) -> None:
        stop.wait()
        if self.server is not None:
            self.server.should_exit = True

    def close(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.stop()
        if self.consumer is not None:
            self.consumer.stop()
        self._pool.shutdown(wait=True)
        self.notifications.close()
        self.engine.dispose()


def _when(at: float | None) -> str:
    if at is None:
        return "尽快"
    return timestamp_text(at)
