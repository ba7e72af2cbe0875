"""The port helpers the private daemons use (real sockets on this machine)."""

from __future__ import annotations

import socket

import pytest

from hardware_sim.processes import PORT_RANGE, reserved_tcp_port


def test_reserved_ports_lie_below_the_ephemeral_range_are_free_and_are_never_repeated() -> None:
    low = int(PORT_RANGE.read_text(encoding="ascii").split()[0])
    ports = [reserved_tcp_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    assert all(1024 <= port < low for port in ports)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", ports[-1]))  # still free: nothing was left bound to it


def test_a_port_in_use_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    """The random pick is steered to the held port first, so the bind check is what skips it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            other = probe.getsockname()[1]
        monkeypatch.setattr("random.sample", lambda population, k: [taken, other])
        assert reserved_tcp_port() == other
