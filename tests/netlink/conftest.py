"""Fixtures of the network-link tests: a plain TCP echo server (socketserver) as the target."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from hardware_sim.netlink import NetLink


class _EchoHandler(socketserver.BaseRequestHandler):
    server: EchoServer

    def handle(self) -> None:
        with self.server.lock:
            self.server.connections += 1
        sock: socket.socket = self.request
        try:
            while data := sock.recv(65536):
                sock.sendall(data)
        except OSError:
            return  # reset by the relay: that is what the tests provoke


class EchoServer(socketserver.ThreadingTCPServer):
    """Echoes every byte back; counts the connections that reached it."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _EchoHandler)
        self.lock = threading.Lock()
        self.connections = 0

    @property
    def port(self) -> int:
        return int(self.server_address[1])


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def link(echo: EchoServer) -> Iterator[NetLink]:
    with NetLink("127.0.0.1", echo.port, name="dev-1") as relay:
        yield relay
