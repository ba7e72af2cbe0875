"""The kiosk daemon's local control socket: press the touch screen's buttons and read which
screen is shown, without Kivy (docs/kiosk-ui.md, "Control socket").

A technician on the kiosk (``linli kiosk touch`` / ``linli kiosk screen``) and the virtual site's
scenario runner (the kiosk in a process of its own) drive the same :class:`KioskSession` a
resident drives through the screen. The socket is off unless ``[kiosk] control_socket`` names a
path; it is a Unix socket of mode 0600, so only the daemon's user (root on a kiosk) can connect:
whoever can press the buttons this way could as well be standing at the kiosk, but nobody else
on the machine should.

Protocol: one JSON object per line in, one JSON object per line out (blank lines are skipped).

- ``{"op": "screen"}`` -> ``{"ok": true, "screen": S, "online": bool, "reader_ok": bool}``
- ``{"op": "touch", "action": "template", "args": {"name": "residence"}}`` ->
  ``{"ok": <the session's touch result>, "screen": S}`` (``ok`` false: the screen does not offer
  that action with those args; ``error`` says so)
- ``{"op": "wait", "screen": "printed", "timeout_s": 20}`` -> ``{"ok": <reached in time>,
  "screen": S}``

``S`` is ``{"id", "state", "actions": [action ids], "busy", "revision"}``: never the title, the
body, list texts, action args or the preview image, which carry the resident's personal data.
A bad request gets ``{"ok": false, "error": "..."}`` and the connection stays usable.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import socketserver
import stat
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from device.errors import ConfigError, LinliError

if TYPE_CHECKING:
    from kiosk_ui.daemon import Indicators
    from kiosk_ui.session import KioskSession

log = logging.getLogger(__name__)

MAX_LINE = 4096
"""Bytes of one request line (without its newline); a longer line is refused and skipped."""
MAX_REPLY = 65536
"""Bytes of one reply line the client accepts (replies are a few hundred bytes)."""
MAX_WAIT_S = 600.0
DEFAULT_WAIT_S = 10.0
POLL_S = 0.05
"""How often ``wait`` looks at the session's revision (the session has one ``on_change``
listener, which the Kivy view takes, so the control socket polls)."""
SUN_PATH_MAX = 107
"""Bytes of a Unix socket path on Linux (``sun_path`` is 108 with its NUL)."""
_NAME_MAX = 64
_ARGS_MAX = 8


class ControlError(LinliError):
    """Base of the control client's errors (the CLI turns these into exit status 2)."""


class ControlUnavailableError(ControlError, ConnectionError):
    """The control socket is missing, refuses connections, or is not ours to open."""


class ControlReplyError(ControlError, ValueError):
    """The daemon closed the connection, did not answer in time, or answered something that is
    not one JSON object."""


class RequestError(LinliError, ValueError):
    """A control request the daemon refuses; the message goes back to the client as ``error``."""


# -- the server ---------------------------------------------------------------------------------


class ControlServer:
    """Serves the control protocol on the Unix socket ``path`` for ``session``.

    ``indicators()`` gives the status bar's online and reader flags. :meth:`start` replaces a
    stale socket file left by a killed run (nothing listening on it) and refuses a live one or a
    file that is not a socket; :meth:`stop` closes open connections and removes the socket file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        session: KioskSession,
        indicators: Callable[[], Indicators],
    ) -> None:
        self.path = Path(path)
        self._session = session
        self._indicators = indicators
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._connections: dict[threading.Thread, socket.socket] = {}
        self._server: _UnixServer | None = None
        self._thread: threading.Thread | None = None
        self._inode: tuple[int, int] | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Bind (mode 0600 before listening), then serve in a background thread."""
        if self._server is not None:
            return
        self._prepare_path()
        self._closing.clear()
        try:
            server = _UnixServer(str(self.path), self)
        except OSError as err:
            raise ConfigError(
                f"kiosk.control_socket: cannot listen on {self.path}: {err.strerror or err}"
            ) from err
        st = os.stat(self.path)
        self._inode = (st.st_dev, st.st_ino)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="kiosk-control"
        )
        self._thread.daemon = True
        self._thread.start()
        log.info("kiosk control socket listening on %s", self.path)

    def stop(self) -> None:
        """Stop accepting, end open connections (a ``wait`` under way returns), remove the socket
        file if it is still ours. Safe twice."""
        server, self._server = self._server, None
        if server is None:
            return
        self._closing.set()
        server.shutdown()
        with self._lock:
            open_now = dict(self._connections)
        for conn in open_now.values():
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in open_now:
            thread.join(timeout=2.0)
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        self._remove_socket_file()
        log.info("kiosk control socket closed")

    def _prepare_path(self) -> None:
        size = len(os.fsencode(self.path))
        if size > SUN_PATH_MAX:
            raise ConfigError(
                f"kiosk.control_socket: {size} bytes long; a Unix socket path may have at most "
                f"{SUN_PATH_MAX}: choose a shorter path"
            )
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise ConfigError(
                f"kiosk.control_socket: {self.path} exists and is not a socket: "
                "remove it or choose another path"
            )
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            try:
                probe.connect(str(self.path))
            except (ConnectionRefusedError, FileNotFoundError):
                log.info("replacing the stale kiosk control socket %s", self.path)
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                return
            except OSError as err:
                raise ConfigError(
                    f"kiosk.control_socket: cannot check the existing socket {self.path}: "
                    f"{err.strerror or err}"
                ) from err
        raise ConfigError(
            f"kiosk.control_socket: a process is already listening on {self.path}: "
            "is another kiosk daemon running?"
        )

    def _remove_socket_file(self) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if (st.st_dev, st.st_ino) == self._inode:  # not one a later daemon bound meanwhile
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def _register(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections[threading.current_thread()] = conn

    def _unregister(self) -> None:
        with self._lock:
            self._connections.pop(threading.current_thread(), None)

    # -- requests ----------------------------------------------------------------------------
    def handle_line(self, line: bytes) -> dict[str, Any]:
        """The reply to one request line (without its newline); never raises."""
        try:
            request = _parse(line)
            op = request.get("op")
            if op == "screen":
                _only(request, "op")
                flags = self._indicators()
                return {
                    "ok": True,
                    "screen": self._snapshot(),
                    "online": flags.online,
                    "reader_ok": flags.reader_ok,
                }
            if op == "touch":
                return self._touch(request)
            if op == "wait":
                return self._wait(request)
            if not isinstance(op, str):
                raise RequestError('"op" must be a string: "screen", "touch" or "wait"')
            raise RequestError(f'unknown op {_short(op)}: use "screen", "touch" or "wait"')
        except RequestError as err:
            return {"ok": False, "error": str(err)}
        except Exception as err:  # noqa: BLE001 -- nothing a client sends may crash the daemon
            # The type only: a message could carry what the session holds.
            log.error("kiosk control request failed: %s", type(err).__name__)
            return {"ok": False, "error": "internal error in the kiosk daemon (see its log)"}

    def _touch(self, request: Mapping[str, Any]) -> dict[str, Any]:
        _only(request, "op", "action", "args")
        action = _name(request, "action")
        raw_args = request.get("args", {})
        if not isinstance(raw_args, dict):
            raise RequestError('"args" must be an object of strings, e.g. {"name": "residence"}')
        if len(raw_args) > _ARGS_MAX:
            raise RequestError(f'"args" has {len(raw_args)} keys; at most {_ARGS_MAX}')
        args: dict[str, str] = {}
        for key, value in raw_args.items():
            if not key.isidentifier() or key == "action" or len(key) > _NAME_MAX:
                raise RequestError(f"args key {_short(key)} is not a valid argument name")
            if not isinstance(value, str):
                raise RequestError(f"args value of {_short(key)} must be a string")
            args[key] = value
        touched = self._session.touch(action, **args)
        reply: dict[str, Any] = {"ok": touched, "screen": self._snapshot()}
        if not touched:
            reply["error"] = (
                f"the screen {reply['screen']['id']!r} does not offer {_short(action)}"
                + (" with these args" if args else "")
                + " (ignored, as a stale touch would be)"
            )
        log.debug("control touch %s on %s: %s", action, reply["screen"]["id"], touched)
        return reply

    def _wait(self, request: Mapping[str, Any]) -> dict[str, Any]:
        _only(request, "op", "screen", "timeout_s")
        want = _name(request, "screen")
        timeout = request.get("timeout_s", DEFAULT_WAIT_S)
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not math.isfinite(timeout)
            or not 0 <= timeout <= MAX_WAIT_S
        ):
            raise RequestError(f'"timeout_s" must be a number of seconds from 0 to {MAX_WAIT_S:g}')
        deadline = time.monotonic() + float(timeout)
        while True:
            snapshot = self._snapshot()
            if snapshot["id"] == want:
                return {"ok": True, "screen": snapshot}
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._closing.is_set():
                why = "the daemon is stopping" if self._closing.is_set() else f"{timeout:g} s"
                return {
                    "ok": False,
                    "screen": snapshot,
                    "error": f"screen {_short(want)} not reached ({why}); "
                    f"showing {snapshot['id']!r}",
                }
            self._closing.wait(min(POLL_S, remaining))

    def _snapshot(self) -> dict[str, Any]:
        """What a client may know of the screen: ids and flags, no text, no image, no args."""
        revision = self._session.revision  # first: a change in between shows as a later one
        screen = self._session.screen
        actions: list[str] = []
        for offered in screen.offered():
            if offered.id not in actions:
                actions.append(offered.id)
        if screen.entry is not None and screen.entry.submit.id not in actions:
            actions.append(screen.entry.submit.id)
        return {
            "id": screen.id,
            "state": screen.state.value,
            "actions": actions,
            "busy": screen.busy,
            "revision": revision,
        }


def _parse(line: bytes) -> dict[str, Any]:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError("the line is not UTF-8: send one JSON object per line") from None
    try:
        request = json.loads(text)
    except (ValueError, RecursionError):
        raise RequestError("the line is not JSON: send one JSON object per line") from None
    if not isinstance(request, dict):
        raise RequestError('the request must be a JSON object, e.g. {"op": "screen"}')
    if "op" not in request:
        raise RequestError('the request has no "op": use "screen", "touch" or "wait"')
    return request


def _only(request: Mapping[str, Any], *keys: str) -> None:
    extra = sorted(set(request) - set(keys))
    if extra:
        raise RequestError(
            f"unknown key {_short(extra[0])} for op {request['op']!r}; it takes: {', '.join(keys)}"
        )


def _name(request: Mapping[str, Any], key: str) -> str:
    value = request.get(key)
    if not isinstance(value, str) or not 0 < len(value) <= _NAME_MAX:
        raise RequestError(f'"{key}" must be a non-empty string of at most {_NAME_MAX} characters')
    return value


def _short(value: object) -> str:
    """A client's value quoted in an error, cut short."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class _UnixServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True  # ControlServer.stop ends and joins them itself
    block_on_close = False

    def __init__(self, path: str, control: ControlServer) -> None:
        self.control = control
        self.path = path
        super().__init__(path, _Handler)

    def server_bind(self) -> None:
        super().server_bind()
        # Before listen(): until then a connect is refused, so nobody gets in through the
        # umask's mode.
        os.chmod(self.path, 0o600)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The default prints a traceback to stderr; the type is enough and carries no data.
        log.warning("kiosk control connection ended by an error")


class _Handler(socketserver.StreamRequestHandler):
    server: _UnixServer

    def setup(self) -> None:
        super().setup()
        control = self.server.control
        control._register(self.connection)
        if control._closing.is_set():  # accepted while stopping, after stop() looked: end it
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

    def handle(self) -> None:
        control = self.server.control
        while True:
            try:
                line = self.rfile.readline(MAX_LINE + 1)
            except OSError:
                return
            if not line:
                return
            if not line.endswith(b"\n") and len(line) > MAX_LINE:
                if not self._skip_rest_of_line():
                    return
                reply: dict[str, Any] = {
                    "ok": False,
                    "error": f"line longer than {MAX_LINE} bytes: refused",
                }
            elif not line.strip():
                continue
            else:
                reply = control.handle_line(line.rstrip(b"\r\n"))
            try:
                self.wfile.write(json.dumps(reply).encode("ascii") + b"\n")
                self.wfile.flush()
            except OSError:
                return

    def _skip_rest_of_line(self) -> bool:
        """Read up to the end of an over-long line; False if the connection ended first."""
        while True:
            try:
                chunk = self.rfile.readline(MAX_LINE)
            except OSError:
                return False
            if not chunk:
                return False
            if chunk.endswith(b"\n"):
                return True

    def finish(self) -> None:
        self.server.control._unregister()
        with contextlib.suppress(OSError):
            super().finish()


# -- the client ---------------------------------------------------------------------------------


class ControlClient:
    """Talks to a kiosk daemon's control socket; one connection per request.

    Each method returns the daemon's reply as a dict (``ok`` false is a normal reply: a touch the
    screen does not offer, a wait that timed out). :class:`ControlUnavailableError` when the
    socket cannot be reached, :class:`ControlReplyError` when no proper reply comes.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout_s: float = 10.0) -> None:
        self.path = Path(path)
        self.timeout_s = timeout_s

    def screen(self) -> dict[str, Any]:
        """The current screen (ids and flags only) and the status bar's indicators."""
        return self.request({"op": "screen"})

    def touch(self, action: str, /, **args: str) -> dict[str, Any]:
        """Press ``action`` (with ``args``, e.g. ``name="residence"``) on the current screen."""
        return self.request({"op": "touch", "action": action, "args": args})

    def wait(self, screen_id: str, timeout_s: float = DEFAULT_WAIT_S) -> dict[str, Any]:
        """Wait until the screen ``screen_id`` is shown (``ok`` false after ``timeout_s``)."""
        return self.request(
            {"op": "wait", "screen": screen_id, "timeout_s": timeout_s},
            timeout_s=timeout_s + self.timeout_s,
        )

    def request(
        self, request: Mapping[str, Any], *, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """Send one request object, return the reply object."""
        line = json.dumps(dict(request)).encode("utf-8") + b"\n"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(self.timeout_s if timeout_s is None else timeout_s)
            self._connect(conn)
            try:
                conn.sendall(line)
                reply = self._read_line(conn)
            except TimeoutError:
                raise ControlReplyError(
                    f"no reply from the kiosk daemon on {self.path} in time"
                ) from None
            except OSError as err:
                raise ControlReplyError(
                    f"the connection to {self.path} failed: {err.strerror or err}"
                ) from err
        try:
            answer = json.loads(reply)
        except ValueError:
            raise ControlReplyError(f"the reply on {self.path} is not JSON") from None
        if not isinstance(answer, dict):
            raise ControlReplyError(f"the reply on {self.path} is not a JSON object")
        return answer

    def _connect(self, conn: socket.socket) -> None:
        where = self.path
        try:
            conn.connect(str(where))
        except FileNotFoundError:
            raise ControlUnavailableError(
                f"no control socket at {where}: is the kiosk daemon running with "
                "[kiosk] control_socket set to this path?"
            ) from None
        except ConnectionRefusedError:
            raise ControlUnavailableError(
                f"nothing listens on {where} (a stale socket): the kiosk daemon is not running"
            ) from None
        except PermissionError:
            raise ControlUnavailableError(
                f"permission denied on {where}: the control socket is for root only (use sudo)"
            ) from None
        except OSError as err:
            raise ControlUnavailableError(
                f"cannot connect to {where}: {err.strerror or err}"
            ) from err

    def _read_line(self, conn: socket.socket) -> bytes:
        data = bytearray()
        while not data.endswith(b"\n"):
            chunk = conn.recv(4096)
            if not chunk:
                raise ControlReplyError(
                    f"the kiosk daemon on {self.path} closed the connection without a reply"
                )
            data += chunk
            if len(data) > MAX_REPLY:
                raise ControlReplyError(f"the reply on {self.path} is longer than {MAX_REPLY}")
        return bytes(data)
