"""An SMS gateway emulator: the mobile network of the virtual site.

The server sends SMS through an HTTP gateway (:mod:`sync_server.notify.sms`, configured per
vendor). This emulator is such a gateway on a local port: it accepts the JSON body the default
``[notify.sms_gateway]`` template sends (``{"phone": "13800138000", "text": "【邻里】..."}``),
answers ``{"code": "0", "msg": "ok"}``, and delivers the text to the number's inbox, where the
virtual site's phones read their verification codes, pickup links and task messages. A person
trying the pages in a browser reads a number's inbox at ``GET /sms/inbox/13800000002`` (JSON).

Messages are kept in memory only; they hold what a real SMS holds (codes and links), so the
emulator logs numbers masked and never the text.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from device.errors import LinliError

log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024
PATH = "/sms/send"
INBOX = "/sms/inbox/"
_MOBILE = re.compile(r"^1[3-9]\d{9}$")


class SmsTimeoutError(LinliError, TimeoutError):
    """No message matching what was awaited reached the number in time."""


@dataclass(frozen=True)
class Sms:
    """One delivered message."""

    phone: str
    text: str
    at: float


class SmsGatewayEmulator:
    """The gateway on ``127.0.0.1:port`` (0: a free port); :attr:`url` is what the server's
    ``[notify.sms_gateway] url`` names."""

    def __init__(self, port: int = 0) -> None:
        self._messages: list[Sms] = []
        self._cond = threading.Condition()
        handler = _handler(self)
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PATH}"

    @property
    def inbox_url(self) -> str:
        """Where a person reads a number's messages: append the number."""
        return f"http://127.0.0.1:{self.port}{INBOX}"

    def start(self) -> SmsGatewayEmulator:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="sms-gateway", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:  # shutdown() would wait forever for a loop never started
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> SmsGatewayEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the phones' side ------------------------------------------------------------------------
    def inbox(self, phone: str) -> list[Sms]:
        with self._cond:
            return [m for m in self._messages if m.phone == phone]

    def count(self) -> int:
        with self._cond:
            return len(self._messages)

    def wait_for(
        self,
        phone: str,
        match: Callable[[Sms], bool],
        timeout_s: float = 20.0,
        *,
        after: float = 0.0,
    ) -> Sms:
        """The newest message to ``phone`` delivered at or after ``after`` (a time.time()) for
        which ``match`` holds, waiting up to ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for message in reversed(self._messages):
                    if message.phone == phone and message.at >= after and match(message):
                        return message
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    masked = phone[:3] + "****" + phone[-4:]
                    raise SmsTimeoutError(
                        f"no matching SMS reached {masked} within {timeout_s:g} s "
                        f"({len(self.inbox(phone))} messages to that number)"
                    )
                self._cond.wait(min(remaining, 0.5))

    # -- the server's side -----------------------------------------------------------------------
    def _receive(self, body: bytes) -> tuple[HTTPStatus, dict[str, Any]]:
        try:
            request = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return HTTPStatus.BAD_REQUEST, {"code": "400", "msg": "body is not JSON"}
        phone, text = request.get("phone"), request.get("text")
        if not isinstance(phone, str) or not _MOBILE.fullmatch(phone):
            return HTTPStatus.OK, {"code": "2001", "msg": "invalid mobile number"}
        if not isinstance(text, str) or not text.strip():
            return HTTPStatus.OK, {"code": "2002", "msg": "empty text"}
        with self._cond:
            self._messages.append(Sms(phone, text, time.time()))
            self._cond.notify_all()
        log.debug("SMS delivered to %s****%s", phone[:3], phone[-4:])
        return HTTPStatus.OK, {"code": "0", "msg": "ok"}


def _handler(gateway: SmsGatewayEmulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            phone = self.path.removeprefix(INBOX)
            if not self.path.startswith(INBOX) or not _MOBILE.fullmatch(phone):
                self._answer(HTTPStatus.NOT_FOUND, {"code": "404", "msg": "GET /sms/inbox/NUMBER"})
                return
            messages = [{"text": m.text, "at": m.at} for m in gateway.inbox(phone)]
            self._answer(HTTPStatus.OK, {"phone": phone, "messages": messages})

        def do_POST(self) -> None:
            if self.path.split("?", 1)[0] != PATH:
                self._answer(HTTPStatus.NOT_FOUND, {"code": "404", "msg": "no such path"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_BODY:
                self._answer(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"code": "413", "msg": "size"})
                return
            status, answer = gateway._receive(self.rfile.read(length))
            self._answer(status, answer)

        def _answer(self, status: HTTPStatus, answer: dict[str, Any]) -> None:
            body = json.dumps(answer, ensure_ascii=False).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the request line carries nothing useful and the default writes stderr."""

    return Handler
