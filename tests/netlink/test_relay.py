"""NetLink against a plain TCP echo server: bytes intact, cut, blackhole, restore, close."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time

import pytest

from device.errors import DeviceClosedError
from hardware_sim.netlink import NetLink, NetLinkError
from hardware_sim.processes import free_tcp_port
from tests.mqtt_helpers import wait_for
from tests.netlink.conftest import EchoServer

MIB = 1024 * 1024


def connect(link: NetLink) -> socket.socket:
    return socket.create_connection(("127.0.0.1", link.port), timeout=2.0)


def connect_or_reset(link: NetLink) -> socket.socket | None:
    """Connect where the link may reset at once: the reset can beat connect()'s own return."""
    try:
        return connect(link)
    except ConnectionResetError:
        return None


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    got = bytearray()
    while len(got) < size:
        chunk = sock.recv(min(65536, size - len(got)))
        if not chunk:
            raise AssertionError(f"EOF after {len(got)} of {size} bytes")
        got += chunk
    return bytes(got)


def echo_ok(sock: socket.socket, data: bytes = b"ping") -> None:
    sock.sendall(data)
    assert recv_exactly(sock, len(data)) == data


def ended_within(sock: socket.socket, timeout_s: float) -> str:
    """Wait for the end of the stream: 'eof' or 'reset'; fails if bytes or nothing arrive."""
    sock.settimeout(timeout_s)
    try:
        data = sock.recv(4096)
    except ConnectionResetError:
        return "reset"
    except TimeoutError:
        raise AssertionError(f"connection still open after {timeout_s}s") from None
    assert data == b"", f"got {len(data)} bytes through a link that should carry nothing"
    return "eof"


def silent_for(sock: socket.socket, timeout_s: float) -> None:
    """Nothing at all arrives (no bytes, no end of stream) for ``timeout_s``."""
    sock.settimeout(timeout_s)
    with pytest.raises(TimeoutError):
        data = sock.recv(4096)
        raise AssertionError(f"expected silence, got {data!r}")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_bytes_pass_both_ways_intact_including_one_mib(link: NetLink, echo: EchoServer) -> None:
    payload = os.urandom(MIB)
    with connect(link) as sock:
        echo_ok(sock, b"hello \x00\xff")
        # Read concurrently: neither side may have to buffer the whole MiB.
        received: list[bytes] = []
        reader = threading.Thread(target=lambda: received.append(recv_exactly(sock, MIB)))
        reader.start()
        sock.sendall(payload)
        reader.join(10)
        assert received == [payload]
        # Half-close travels through: the echo server sees EOF, closes, and so do we.
        sock.sendall(b"last")
        sock.shutdown(socket.SHUT_WR)
        assert recv_exactly(sock, 4) == b"last"
        assert ended_within(sock, 1.0) == "eof"
    total = MIB + len(b"hello \x00\xff") + 4
    wait_for(lambda: link.bytes_down == total, 2.0, "bytes_down counted")
    assert link.bytes_up == total
    assert link.connections_total == 1
    assert echo.connections == 1


def test_cut_drops_open_connections_and_carries_nothing_until_restore(
    link: NetLink, echo: EchoServer
) -> None:
    first, second = connect(link), connect(link)
    echo_ok(first)
    echo_ok(second)
    assert link.is_up
    link.cut()
    assert not link.is_up
    assert link.state == "cut"
    started = time.monotonic()
    for sock in (first, second):
        assert ended_within(sock, 1.0) == "reset"  # abrupt, not a polite FIN
        sock.close()
    assert time.monotonic() - started < 1.0
    wait_for(lambda: link.connections_open == 0, 1.0, "cut connections forgotten")

    # While cut, a new connection is accepted and reset: nothing reaches the target.
    reached = echo.connections
    up_before = link.bytes_up
    sock = connect_or_reset(link)
    if sock is not None:
        with sock:
            try:
                sock.sendall(b"anyone?")
            except OSError:
                pass  # the reset can already be there
            else:
                assert ended_within(sock, 1.0) == "reset"
    assert echo.connections == reached
    assert link.bytes_up == up_before

    link.restore()
    assert link.is_up
    with connect(link) as sock:
        echo_ok(sock, b"back again")
    assert echo.connections == reached + 1


def test_blackhole_swallows_bytes_and_restore_brings_new_connections_back(
    link: NetLink, echo: EchoServer
) -> None:
    old = connect(link)
    echo_ok(old)
    # The relay counts a send just after it: the echo may reach us first.
    wait_for(lambda: link.bytes_down == 4, 1.0, "echo counted")
    counters = (link.bytes_up, link.bytes_down)
    reached = echo.connections

    link.blackhole()
    assert not link.is_up
    assert link.state == "blackhole"
    old.sendall(b"are you there")
    silent_for(old, 0.5)  # no echo, and no end of stream either: a half-dead link
    fresh = connect(link)  # accepted, but it never reaches the target
    fresh.sendall(b"hello?")
    silent_for(fresh, 0.5)
    assert echo.connections == reached
    assert (link.bytes_up, link.bytes_down) == counters
    assert link.connections_open == 2

    link.restore()
    for sock in (old, fresh):  # their streams lost bytes: they cannot carry on
        assert ended_within(sock, 1.0) == "reset"
        sock.close()
    with connect(link) as sock:
        echo_ok(sock, b"through again")
    assert echo.connections == reached + 1


def test_target_down_resets_the_device_connection_and_the_link_stays_up() -> None:
    with NetLink("127.0.0.1", free_tcp_port(), name="nobody-home") as relay:
        sock = connect_or_reset(relay)
        if sock is not None:
            with sock:
                assert ended_within(sock, 2.0) == "reset"
        assert relay.is_up
        assert relay.connections_total == 1
        wait_for(lambda: relay.connections_open == 0, 1.0, "failed connection forgotten")


def test_close_releases_the_port_threads_and_is_safe_twice(echo: EchoServer) -> None:
    threads_before = threading.active_count()
    relay = NetLink("127.0.0.1", echo.port, name="dev-close").start()
    port = relay.port
    left_open = connect(relay)
    echo_ok(left_open)
    relay.close()
    assert relay.state == "closed"
    ended_within(left_open, 1.0)
    left_open.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
    relay.close()  # safe twice
    for action in (relay.cut, relay.blackhole, relay.restore, relay.start):
        with pytest.raises(DeviceClosedError, match="after close"):
            action()
    # The handler and accept threads were joined; echo's daemon handler may linger a moment.
    wait_for(lambda: threading.active_count() <= threads_before, 2.0, "threads joined")
    # The same port can be listened on again at once.
    with NetLink("127.0.0.1", echo.port, listen_port=port) as again, connect(again) as sock:
        echo_ok(sock)


def test_close_before_start_does_not_hang(echo: EchoServer) -> None:
    relay = NetLink("127.0.0.1", echo.port)
    started = time.monotonic()
    relay.close()
    assert time.monotonic() - started < 1.0


def test_listen_port_in_use_is_a_clear_error(link: NetLink, echo: EchoServer) -> None:
    with pytest.raises(NetLinkError, match=f"127.0.0.1:{link.port}.*another port"):
        NetLink("127.0.0.1", echo.port, listen_port=link.port)


def test_fifty_connections_leak_no_file_descriptors(echo: EchoServer) -> None:
    relay = NetLink("127.0.0.1", echo.port, name="dev-fd").start()
    baseline = open_fds()
    for round_ in range(50):
        sock = connect(relay)
        echo_ok(sock, f"round {round_}".encode())
        if round_ % 5 == 4:  # every fifth: the link drops it under the client
            relay.cut()
            ended_within(sock, 1.0)
            relay.restore()
        elif round_ % 5 == 3:  # a blackholed one, reset on restore
            relay.blackhole()
            sock.sendall(b"lost")
            relay.restore()
            ended_within(sock, 1.0)
        sock.close()
    wait_for(lambda: relay.connections_open == 0, 2.0, "every connection forgotten")
    wait_for(lambda: open_fds() <= baseline + 2, 2.0, f"fd count back near {baseline}")
    assert relay.connections_total == 50
    relay.close()
    wait_for(lambda: open_fds() <= baseline, 2.0, "listening socket released")


@pytest.mark.parametrize("how", ["fin", "reset"])
def test_target_hanging_up_during_a_blackhole_is_not_passed_on(how: str) -> None:
    # As a broker whose keepalive expires behind a half-dead link: the device must not learn.
    with (
        socket.create_server(("127.0.0.1", 0)) as target,
        NetLink("127.0.0.1", target.getsockname()[1], name="dev-quiet") as relay,
    ):
        device = connect(relay)
        target.settimeout(2.0)
        broker_side, _ = target.accept()
        device.sendall(b"x")  # the relay is past its connect, copying
        assert broker_side.recv(1) == b"x"
        relay.blackhole()
        if how == "reset":
            broker_side.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        broker_side.close()
        silent_for(device, 0.5)
        assert relay.connections_open == 1
        relay.restore()
        assert ended_within(device, 1.0) == "reset"
        device.close()
