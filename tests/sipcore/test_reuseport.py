"""sipcore.twisted.reuseport: datagrams to a shared port go to socket `source port mod N`.

Real sockets on loopback: a group of N receivers bound with SO_REUSEPORT in order
(index 0 first), senders bound to chosen source ports, and where each datagram landed.
"""

from __future__ import annotations

import select
import socket
import sys

import pytest

from sipcore.twisted.reuseport import source_port_program, spread_by_source_port

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
def test_each_source_port_reaches_socket_port_mod_n(family: int, host: str, size: int) -> None:
    group = _group(family, host, size)
    senders = _senders(family, host, 4 * size)
    try:
        spread_by_source_port(group[0], size)
        dest = group[0].getsockname()[:2]
        for _round in range(3):  # the same flow keeps reaching the same socket
            for sender in senders:
                sender.sendto(b"OPTIONS", dest)
            landed = _landed(group, len(senders))
            assert landed == {s.getsockname()[1]: s.getsockname()[1] % size for s in senders}
        counts = [list(landed.values()).count(i) for i in range(size)]
        assert counts == [4] * size
    finally:
        for sock in group + senders:
            sock.close()


def test_program_shape_and_bad_arguments() -> None:
    assert len(source_port_program(socket.AF_INET, 2)) == 4 * 8
    assert len(source_port_program(socket.AF_INET6, 2)) == 3 * 8
    with pytest.raises(ValueError):
        source_port_program(socket.AF_INET, 0)
    with pytest.raises(ValueError):
        source_port_program(socket.AF_UNIX, 2)
