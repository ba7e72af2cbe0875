"""Fixtures of the notification tests: a local HTTP server standing in for the SMS gateway and
the WeChat API (real sockets, real httpx), and the server database on SQLite and PostgreSQL.

:class:`HttpSim` records every request and answers what a test scripts per path: a status, a
body, a delay (slower than the client's timeout), or a function of the request.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.server import conftest as server_fixtures

# The server storage fixtures: every service test runs on SQLite and a private PostgreSQL.
backend = server_fixtures.backend
migrated_url = server_fixtures.migrated_url
engine = server_fixtures.engine


@dataclass(frozen=True)
class Seen:
    """One request the simulator received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}


@dataclass
class Reply:
    """What the simulator answers: ``body`` as JSON (dict/list) or raw (str/bytes)."""

    status: int = 200
    body: Any = field(default_factory=lambda: {"code": "0", "msg": "ok"})
    delay_s: float = 0.0

    def encoded(self) -> tuple[bytes, str]:
        if isinstance(self.body, bytes):
            return self.body, "application/octet-stream"
        if isinstance(self.body, str):
            return self.body.encode(), "text/plain; charset=utf-8"
        return json.dumps(self.body, ensure_ascii=False).encode(), "application/json"


Answer = Reply | Callable[[Seen], Reply]


class HttpSim:
    """A threaded HTTP server on 127.0.0.1 with scripted replies per path."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: list[Seen] = []
        self._scripted: dict[str, deque[Answer]] = defaultdict(deque)
        self._defaults: dict[str, Answer] = {}
        sim = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                parts = urlsplit(self.path)
                seen = Seen(
                    self.command,
                    parts.path,
                    {k: v[0] for k, v in parse_qs(parts.query).items()},
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length),
                )
                reply = sim._record(seen)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                body, content_type = reply.encoded()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up (timeout test)

            do_GET = _handle
            do_POST = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        # A short poll interval: shutdown() waits for it, once per test.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def script(self, path: str, *answers: Answer) -> None:
        """Answer the next requests to ``path`` with ``answers``, in order."""
        with self._lock:
            self._scripted[path].extend(answers)

    def default(self, path: str, answer: Answer) -> None:
        """Answer every unscripted request to ``path`` with ``answer``."""
        with self._lock:
            self._defaults[path] = answer

    def requests(self, path: str | None = None) -> list[Seen]:
        with self._lock:
            return [s for s in self._seen if path is None or s.path == path]

    def _record(self, seen: Seen) -> Reply:
        with self._lock:
            self._seen.append(seen)
            queue = self._scripted[seen.path]
            answer = queue.popleft() if queue else self._defaults.get(seen.path, Reply())
        return answer(seen) if callable(answer) else answer


@pytest.fixture
def http_sim() -> Iterator[HttpSim]:
    sim = HttpSim()
    sim.start()
    yield sim
    sim.stop()


class WeChatSim:
    """The two WeChat endpoints on an :class:`HttpSim`: tokens ``TOKEN-1``, ``TOKEN-2``...
    (each valid until the next is issued); sends answer errcode 0 unless scripted."""

    TOKEN = "/cgi-bin/token"
    SEND = "/cgi-bin/message/template/send"

    def __init__(self, sim: HttpSim, expires_in: int = 7200) -> None:
        self.sim = sim
        self.expires_in = expires_in
        self.issued = 0
        sim.default(self.TOKEN, self._token)
        sim.default(self.SEND, lambda _seen: Reply(body={"errcode": 0, "errmsg": "ok", "msgid": 1}))

    def _token(self, _seen: Seen) -> Reply:
        self.issued += 1
        return Reply(body={"access_token": f"TOKEN-{self.issued}", "expires_in": self.expires_in})

    def sends(self) -> list[Seen]:
        return self.sim.requests(self.SEND)

    def token_requests(self) -> list[Seen]:
        return self.sim.requests(self.TOKEN)


@pytest.fixture
def wechat_sim(http_sim: HttpSim) -> WeChatSim:
    return WeChatSim(http_sim)


class FakeClock:
    """A clock tests move by hand (CONVENTIONS rule 6: tests move time instead of sleeping)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
