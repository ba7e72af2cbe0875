"""Small helpers shared by the private daemons the simulator runs (cupsd, Mosquitto, PostgreSQL)."""

from __future__ import annotations

import random
import socket
import subprocess
from pathlib import Path
from typing import Any

PORT_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# Ports reserved_tcp_port gave out in this process: two daemons asked for ports before either binds
# (a broker's TLS and plain listeners) must not be handed the same one.
_HANDED_OUT: set[int] = set()


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def reserved_tcp_port() -> int:
    """A free TCP port on 127.0.0.1 below the kernel's ephemeral range, for a daemon that binds
    it later: neither a listener bound to port 0 in the meantime (an emulator, a relay) nor a
    client socket (which may linger in TIME_WAIT) can take it, which :func:`free_tcp_port` cannot
    promise. A port is handed out once per process."""
    try:
        low = int(PORT_RANGE.read_text(encoding="ascii").split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    below = range(10000, low)
    for port in random.sample(below, min(200, len(below))):
        if port not in _HANDED_OUT and port_is_free(port):
            _HANDED_OUT.add(port)
            return port
    return free_tcp_port()


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a TCP socket could bind ``host``:``port`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def accepts(port: int, timeout_s: float = 0.2) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port`` (a daemon is up)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def stop_process(
    process: subprocess.Popen[Any], timeout_s: float = 10.0, *, terminate: bool = True
) -> None:
    """SIGTERM ``process`` (unless ``terminate`` is False: the caller already asked it to end),
    wait up to ``timeout_s``, then SIGKILL it and reap it."""
    if terminate:
        process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
