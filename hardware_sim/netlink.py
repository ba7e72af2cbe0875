"""A device's network link to the broker, as a TCP relay the simulator can unplug.

Each simulated device reaches the broker through its own :class:`NetLink` on 127.0.0.1, so a test
or a technician's scenario can cut that one device's network (:meth:`NetLink.cut`), make it
half-dead (:meth:`NetLink.blackhole`) and bring it back (:meth:`NetLink.restore`) while the device
process keeps running, as if its Ethernet cable were pulled. Bytes pass untouched (TLS included),
so the device verifies the broker's certificate exactly as it would without the relay.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import socketserver
import struct
import threading
from typing import Any, Literal

from device.errors import DeviceClosedError, LinliError

__all__ = ["LinkState", "NetLink", "NetLinkError"]

log = logging.getLogger(__name__)

LinkState = Literal["up", "cut", "blackhole", "closed"]

_CHUNK = 64 * 1024
_HIGH_WATER = 4 * _CHUNK
"""Stop reading one side while this much is waiting for the other: TCP backpressure end to end."""
_CONNECT_TIMEOUT_S = 5.0
_ACCEPT_POLL_S = 0.05
"""How often the accept loop looks for close(): bounds how long close() waits for it."""
_RST = struct.pack("ii", 1, 0)
"""SO_LINGER on, 0 s: close() sends a TCP reset instead of a FIN (as a dead route ends up)."""


class NetLinkError(LinliError, OSError):
    """The relay cannot listen on the requested port."""


def _close_socket(sock: socket.socket, *, reset: bool) -> None:
    if reset:
        with contextlib.suppress(OSError):  # already dead: close() is all that is left to do
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST)
    sock.close()


class _Connection:
    """One relayed connection, pumped by the server thread that accepted it.

    Only that thread touches the sockets and buffers; other threads flip :attr:`mode`, set
    :attr:`dropped` and :meth:`wake` it, always under the link's lock while the connection is
    still registered (so a wake never reaches a closed socket).
    """

    def __init__(
        self, link: NetLink, client: socket.socket, mode: Literal["forward", "blackhole"]
    ) -> None:
        self.link = link
        self.client = client
        self.upstream: socket.socket | None = None
        self.mode: Literal["forward", "blackhole"] = mode
        self.dropped = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)
        self._to_up = bytearray()
        self._to_down = bytearray()
        self._client_eof = self._upstream_eof = False  # FIN received from that side
        self._up_shut = self._down_shut = False  # FIN passed on to that side

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # a wake already pending is enough
            self._wake_w.send(b"\0")

    def drop(self) -> None:
        self.dropped = True
        self.wake()

    def run(self) -> None:
        """Connect to the target (unless blackholed) and copy both ways until either side ends."""
        reset = True
        try:
            if self.mode == "forward":
                self._connect_upstream()
            reset = self._pump()
        except OSError as err:
            # A reset or refusal on one side is passed on to the other as a reset.
            log.debug("link %s: connection ended by %s", self.link.name, type(err).__name__)
        finally:
            self.link._forget(self)
            for sock in (self.client, self.upstream):
                if sock is not None:
                    _close_socket(sock, reset=reset)
            self._wake_r.close()
            self._wake_w.close()

    def _connect_upstream(self) -> None:
        try:
            self.upstream = socket.create_connection(
                (self.link.target_host, self.link.target_port), timeout=_CONNECT_TIMEOUT_S
            )
        except OSError:
            if self.mode != "blackhole":
                raise  # the device sees a reset, as when the target refuses outright
            # Blackholed while connecting: whatever the target did, the device must not learn.

    def _pump(self) -> bool:
        """The copy loop; True when the connection must end with a reset (dropped by the link)."""
        for sock in (self.client, self.upstream):
            if sock is not None:
                sock.setblocking(False)
                # Bytes leave as they came: Nagle plus delayed ACKs would add 40 ms stalls.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with selectors.DefaultSelector() as sel:
            sel.register(self._wake_r, selectors.EVENT_READ)
            while not self.dropped:
                if self._finished():
                    return False
                upstream = self.upstream
                _want(
                    sel,
                    self.client,
                    self._readable(self._client_eof, self._to_up),
                    bool(self._to_down),
                )
                if upstream is not None:
                    _want(
                        sel,
                        upstream,
                        self._readable(self._upstream_eof, self._to_down),
                        bool(self._to_up),
                    )
                for key, events in sel.select():
                    if key.fileobj is self._wake_r:
                        self._wake_r.recv(_CHUNK)
                    elif key.fileobj is self.client:
                        self._client_eof |= self._step(
                            self.client, events, self._to_down, self._to_up, sends_up=False
                        )
                    elif key.fileobj is upstream:
                        self._upstream_step(upstream, events)
                if self._upstream_eof and self.mode == "blackhole" and upstream is not None:
                    # The target hung up during a blackhole: the device must not learn of it.
                    sel.unregister(upstream)
                    upstream.close()
                    self.upstream = None
        return True

    @staticmethod
    def _readable(eof: bool, waiting: bytearray) -> bool:
        return not eof and len(waiting) < _HIGH_WATER

    def _finished(self) -> bool:
        """Apply the mode, pass on half-closes; True once the connection has ended cleanly."""
        if self.mode == "blackhole":
            self._to_up.clear()
            self._to_down.clear()
            return self._client_eof
        assert self.upstream is not None  # forward mode always has one (see run)
        # Half-close: pass a FIN on once everything sent before it has been delivered.
        if self._client_eof and not self._to_up and not self._up_shut:
            self.upstream.shutdown(socket.SHUT_WR)
            self._up_shut = True
        if self._upstream_eof and not self._to_down and not self._down_shut:
            self.client.shutdown(socket.SHUT_WR)
            self._down_shut = True
        return self._up_shut and self._down_shut

    def _upstream_step(self, upstream: socket.socket, events: int) -> None:
        try:
            self._upstream_eof |= self._step(
                upstream, events, self._to_up, self._to_down, sends_up=True
            )
        except OSError:
            if self.mode != "blackhole":
                raise
            self._upstream_eof = True  # dropped quietly by _pump: the device must not know

    def _step(
        self,
        sock: socket.socket,
        events: int,
        outgoing: bytearray,
        incoming: bytearray,
        *,
        sends_up: bool,
    ) -> bool:
        """Send what waits for ``sock`` (the target if ``sends_up``), read what it has;
        True at its end of stream."""
        if events & selectors.EVENT_WRITE and outgoing:
            sent = sock.send(outgoing)
            del outgoing[:sent]
            self.link._count(sent, upward=sends_up)
        if not events & selectors.EVENT_READ:
            return False
        try:
            data = sock.recv(_CHUNK)
        except (BlockingIOError, InterruptedError):
            return False
        if self.mode == "forward":
            incoming += data  # blackhole: read and forgotten, the link swallows it
        return not data


def _want(sel: selectors.BaseSelector, sock: socket.socket, read: bool, write: bool) -> None:
    """Register ``sock`` for exactly the events wanted now (none: unregister)."""
    events = (selectors.EVENT_READ if read else 0) | (selectors.EVENT_WRITE if write else 0)
    key = sel.get_map().get(sock)
    if key is None:
        if events:
            sel.register(sock, events)
    elif not events:
        sel.unregister(sock)
    elif key.events != events:
        sel.modify(sock, events)


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        self.server.link._accepted(self.request)


class _Server(socketserver.ThreadingTCPServer):
    # Handler threads are not daemons and block_on_close stays True: server_close() joins them.
    allow_reuse_address = True

    def __init__(self, link: NetLink, port: int) -> None:
        self.link = link
        super().__init__(("127.0.0.1", port), _Handler)

    def shutdown_request(self, request: Any) -> None:
        # The connection closed its sockets itself (with a reset or a FIN, as it chose).
        request.close()


class NetLink:
    """A TCP relay 127.0.0.1:``port`` -> ``target_host:target_port`` that can be cut and restored.

    The port is bound at construction, so :attr:`port` can go into the device's configuration
    before :meth:`start`; connections made before it wait in the listen backlog.

    States: ``up`` forwards every connection. ``cut`` is an unplugged cable: open connections are
    reset at once, and new ones are accepted and reset immediately. A real dead route would let the
    device's connect time out instead; but the kernel completes the handshake for any listening
    socket, and an immediate reset lets the device's reconnect loop run at its own pace without
    waiting out connect timeouts, while nothing ever reaches the broker. ``blackhole`` is a
    half-dead link: connections stay open and bytes are silently discarded both ways (even the
    target hanging up is not passed on), new connections are accepted but never reach the
    target; only keepalive can notice. :meth:`restore` goes back to ``up``; connections that
    lived through a blackhole are reset then, since bytes were lost from their streams (a real
    TCP would have given up on them too).

    Counters (for a technician's summary): :attr:`connections_total` accepted connections,
    :attr:`bytes_up` delivered to the target, :attr:`bytes_down` delivered to the device.
    Thread-safe; :meth:`close` joins every thread and closes every socket.
    """

    def __init__(
        self, target_host: str, target_port: int, *, listen_port: int = 0, name: str = ""
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.name = name or f"{target_host}:{target_port}"
        self._lock = threading.Lock()
        self._state: LinkState = "up"
        self._connections: set[_Connection] = set()
        self._thread: threading.Thread | None = None
        self.connections_total = 0
        self.bytes_up = 0
        self.bytes_down = 0
        try:
            self._server = _Server(self, listen_port)
        except OSError as err:
            raise NetLinkError(
                f"link {self.name}: cannot listen on 127.0.0.1:{listen_port} ({err}); "
                "choose another port, or 0 for a free one"
            ) from err
        self.port: int = self._server.server_address[1]

    def __repr__(self) -> str:
        target = f"{self.target_host}:{self.target_port}"
        return f"<NetLink {self.name!r} 127.0.0.1:{self.port} -> {target} {self._state}>"

    def __enter__(self) -> NetLink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> NetLink:
        """Start accepting (safe twice); connections made before queue in the listen backlog."""
        with self._lock:
            self._check_open("start")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._server.serve_forever,
                    args=(_ACCEPT_POLL_S,),
                    name=f"netlink-{self.name}",
                    daemon=True,
                )
                self._thread.start()
        return self

    @property
    def state(self) -> LinkState:
        return self._state

    @property
    def is_up(self) -> bool:
        """True while bytes get through (not cut, not blackholed, not closed)."""
        return self._state == "up"

    @property
    def connections_open(self) -> int:
        with self._lock:
            return len(self._connections)

    def cut(self) -> None:
        """Unplug: reset every open connection; new ones are accepted and reset at once."""
        with self._lock:
            self._check_open("cut")
            self._state = "cut"
            dropped = len(self._connections)
            for conn in self._connections:
                conn.drop()
        log.info("link %s: cut (%d connections reset)", self.name, dropped)

    def blackhole(self) -> None:
        """Half-dead link: connections stay open, every byte from now on is silently discarded."""
        with self._lock:
            self._check_open("blackhole")
            self._state = "blackhole"
            for conn in self._connections:
                conn.mode = "blackhole"
                conn.wake()
        log.info("link %s: blackhole", self.name)

    def restore(self) -> None:
        """Plug back in: new connections forward again; blackholed ones are reset."""
        with self._lock:
            self._check_open("restore")
            self._state = "up"
            for conn in self._connections:
                if conn.mode == "blackhole":
                    conn.drop()
        log.info("link %s: restored", self.name)

    def close(self) -> None:
        """Stop accepting, reset every connection, join every thread (safe twice)."""
        with self._lock:
            if self._state == "closed":
                return
            self._state = "closed"
            for conn in self._connections:
                conn.drop()
            thread = self._thread
        if thread is not None:
            self._server.shutdown()
            thread.join()
        self._server.server_close()  # closes the listening socket, joins the handler threads
        log.debug("link %s: closed", self.name)

    def _check_open(self, what: str) -> None:
        if self._state == "closed":
            raise DeviceClosedError(f"link {self.name}: {what}() after close(); make a new NetLink")

    # Called from the handler threads.
    def _accepted(self, client: socket.socket) -> None:
        with self._lock:
            self.connections_total += 1
            if self._state in ("cut", "closed"):
                conn = None
            else:
                conn = _Connection(
                    self, client, "blackhole" if self._state == "blackhole" else "forward"
                )
                self._connections.add(conn)
        if conn is None:
            _close_socket(client, reset=True)
        else:
            conn.run()

    def _forget(self, conn: _Connection) -> None:
        with self._lock:
            self._connections.discard(conn)

    def _count(self, sent: int, *, upward: bool) -> None:
        with self._lock:
            if upward:
                self.bytes_up += sent
            else:
                self.bytes_down += sent
