"""sipcore.twisted.reuseport: a datagram to a shared port goes to `socket_index(port, N)`.

Real sockets on loopback: a group of N receivers bound with SO_REUSEPORT in order
(index 0 first), senders bound to chosen source ports, and where each datagram landed.
"""

from __future__ import annotations

import select
import socket
import sys

import pytest

from sipcore.twisted.reuseport import (
    socket_index,
    source_port_program,
    spread_by_source_port,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")


def _group(family: int, host: str, size: int) -> list[socket.socket]:
    first = socket.socket(family, socket.SOCK_DGRAM)
    first.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    first.bind((host, 0))
    port = first.getsockname()[1]
    group = [first]
    for _ in range(size - 1):
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        group.append(sock)
    return group


def _senders(family: int, host: str, count: int) -> list[socket.socket]:
    """`count` sockets on consecutive source ports (a block that was free)."""
    for _ in range(50):
        probe = socket.socket(family, socket.SOCK_DGRAM)
        probe.bind((host, 0))
        base = probe.getsockname()[1]
        probe.close()
        if base + count > 65535:
            continue
        socks: list[socket.socket] = []
        try:
            for offset in range(count):
                sock = socket.socket(family, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind((host, base + offset))
            return socks
        except OSError:
            for sock in socks:
                sock.close()
    pytest.skip("no block of free consecutive UDP ports")


def _landed(group: list[socket.socket], expected: int) -> dict[int, int]:
    """source port -> index of the socket that received its datagram (bounded wait)."""
    out: dict[int, int] = {}
    while len(out) < expected:
        ready, _, _ = select.select(group, [], [], 2.0)
        if not ready:
            return out
        for sock in ready:
            _, addr = sock.recvfrom(2048)
            out[addr[1]] = group.index(sock)
    return out


@pytest.mark.parametrize(("family", "host"), [(socket.AF_INET, "127.0.0.1"),
                                              (socket.AF_INET6, "::1")])
@pytest.mark.parametrize("size", [2, 3])
def test_each_source_port_reaches_its_socket_index(family: int, host: str, size: int) -> None:
    group = _group(family, host, size)
    senders = _senders(family, host, 4 * size)
    try:
        spread_by_source_port(group[0], size)
        dest = group[0].getsockname()[:2]
        for _round in range(3):  # the same flow keeps reaching the same socket
            for sender in senders:
                sender.sendto(b"OPTIONS", dest)
            landed = _landed(group, len(senders))
            assert landed == {s.getsockname()[1]: socket_index(s.getsockname()[1], size)
                              for s in senders}
    finally:
        for sock in group + senders:
            sock.close()


def test_ports_of_one_parity_still_spread() -> None:
    # Linux hands bind(0) ephemeral ports of one parity: `port mod 2` would put every
    # such client on one worker. The hash's high bits do not care.
    for parity in (0, 1):
        ports = range(32768 + parity, 60999, 2)
        for size in (2, 3, 4):
            counts = [0] * size
            for port in ports:
                counts[socket_index(port, size)] += 1
            assert min(counts) > 0.9 * len(ports) / size, (parity, size, counts)


def test_program_shape_and_bad_arguments() -> None:
    assert len(source_port_program(socket.AF_INET, 2)) == 6 * 8
    assert len(source_port_program(socket.AF_INET6, 2)) == 5 * 8
    with pytest.raises(ValueError):
        source_port_program(socket.AF_INET, 0)
    with pytest.raises(ValueError):
        source_port_program(socket.AF_UNIX, 2)
