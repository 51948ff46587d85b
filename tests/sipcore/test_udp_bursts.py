"""UDP reads and writes done by sipcore.twisted.transport._Bursts on a real Twisted
port: what the handlers of one read burst write goes out together after it, in
order, and is never lost; reads deliver every waiting datagram with its source.

Real sockets on loopback; the reactor is not run: the test calls the port's
`doRead` as the reactor would once the socket is readable.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from twisted.internet import protocol, reactor
from twisted.internet.task import Clock

from sipcore.twisted import transport
from sipcore.twisted.protection import OverloadGuard
from sipcore.twisted.transport import BURST, SO_TIMESTAMP, _Bursts


class Recorder(protocol.DatagramProtocol):
    def __init__(self) -> None:
        self.handler: Callable[[bytes, tuple[str, int]], None] | None = None
        self.seen: list[tuple[bytes, tuple[str, int]]] = []

    def datagramReceived(self, data: bytes, addr: Any) -> None:  # noqa: N802
        self.seen.append((data, addr))
        if self.handler is not None:
            self.handler(data, addr)


class Rig:
    """A Twisted UDP port under _Bursts, and a peer socket that sends and receives."""

    def __init__(self, host: str, family: int) -> None:
        self.proto = Recorder()
        self.port = reactor.listenUDP(0, self.proto, interface=host)  # type: ignore[attr-defined]
        _Bursts(self.port)
        self.peer = socket.socket(family, socket.SOCK_DGRAM)
        self.peer.bind((host, 0))
        self.peer_addr = self.peer.getsockname()[:2]
        self.addr = (host, self.port.getHost().port)

    def deliver(self, *datagrams: bytes) -> None:
        """The peer sends; once the port's socket is readable, the 'reactor' reads."""
        for data in datagrams:
            self.peer.sendto(data, self.addr)
        select.select([self.port.socket], [], [], 2.0)
        self.port.doRead()

    def received(self, count: int) -> list[bytes]:
        out = []
        while len(out) < count:
            ready, _, _ = select.select([self.peer], [], [], 2.0)
            if not ready:
                break
            out.append(self.peer.recv(65535))
        return out

    def close(self) -> None:
        self.port.stopListening()
        self.peer.close()


@pytest.fixture(params=[("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)],
                ids=["ipv4", "ipv6"])
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    made = Rig(*request.param)
    yield made
    made.close()


def test_reads_deliver_every_waiting_datagram_with_its_source(rig: Rig) -> None:
    rig.deliver(b"a", b"b", b"c")
    assert rig.proto.seen == [(b"a", rig.peer_addr), (b"b", rig.peer_addr),
                              (b"c", rig.peer_addr)]
    rig.port.doRead()  # nothing waiting: returns at once
    assert len(rig.proto.seen) == 3


def test_outside_a_burst_a_write_goes_out_at_once(rig: Rig) -> None:
    rig.port.write(b"a", rig.peer_addr)
    assert rig.received(1) == [b"a"]


def test_writes_during_a_burst_go_out_after_it_in_order(rig: Rig) -> None:
    during: list[list[bytes]] = []

    def handler(data: bytes, addr: tuple[str, int]) -> None:
        rig.peer.setblocking(False)
        try:
            during.append([rig.peer.recv(100)])  # something went out already?
        except BlockingIOError:
            during.append([])
        finally:
            rig.peer.setblocking(True)
        rig.port.write(data.upper(), addr)

    rig.proto.handler = handler
    rig.deliver(b"a", b"b", b"c")
    assert during == [[], [], []]
    assert rig.received(3) == [b"A", b"B", b"C"]
    rig.port.write(b"d", rig.peer_addr)  # the burst is over: at once again
    assert rig.received(1) == [b"d"]


def test_a_long_burst_is_flushed_every_burst_datagrams(rig: Rig) -> None:
    datagrams = [str(n).encode() for n in range(BURST * 2 + 3)]
    rig.proto.handler = lambda data, addr: rig.port.write(data, addr)
    rig.deliver(*datagrams)
    assert rig.received(len(datagrams)) == datagrams


def test_a_failed_write_is_logged_and_the_others_still_go(
    rig: Rig, monkeypatch: pytest.MonkeyPatch,
) -> None:
    warnings: list[dict[str, Any]] = []
    monkeypatch.setattr(transport.log, "warn", lambda fmt, **kw: warnings.append(kw))

    def handler(data: bytes, addr: tuple[str, int]) -> None:
        # A name, not an IP literal: refused rather than resolved (blocking) by sendto.
        rig.port.write(data, ("localhost", addr[1]) if data == b"b" else addr)

    rig.proto.handler = handler
    rig.deliver(b"a", b"b", b"c")
    assert rig.received(2) == [b"a", b"c"]
    assert warnings and warnings[0]["host"] == "localhost"


def test_outside_a_burst_a_name_is_refused_at_once(rig: Rig) -> None:
    with pytest.raises(ValueError, match="not an IP address"):
        rig.port.write(b"x", ("localhost", rig.peer_addr[1]))


def test_a_handler_that_raises_is_logged_and_the_burst_goes_on(
    rig: Rig, monkeypatch: pytest.MonkeyPatch,
) -> None:
    failures: list[str] = []
    monkeypatch.setattr(transport.log, "failure", lambda fmt, *a, **kw: failures.append(fmt))

    def handler(data: bytes, addr: tuple[str, int]) -> None:
        rig.port.write(data, addr)
        if data == b"b":
            raise RuntimeError("a bug below the port")

    rig.proto.handler = handler
    rig.deliver(b"a", b"b", b"c")
    assert rig.received(3) == [b"a", b"b", b"c"]
    assert len(failures) == 1


def test_the_first_datagram_of_a_burst_tells_how_long_the_queue_waited() -> None:
    # The kernel stamps each datagram on arrival (SO_TIMESTAMP); reading 1.5 s "later"
    # (an injected clock, no sleep) the guard learns the queue is 1.5 s behind.
    # (Dropping old requests, max_request_age, is tested below.)
    guard = OverloadGuard(Clock(), max_queue_delay=0.25, max_request_age=0.0)
    proto = Recorder()
    port = reactor.listenUDP(0, proto, interface="127.0.0.1")  # type: ignore[attr-defined]
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        offset = [0.0]
        bursts = _Bursts(port, guard, now=lambda: time.time() + offset[0])
        addr = ("127.0.0.1", port.getHost().port)
        peer.sendto(b"first", addr)
        peer.sendto(b"second", addr)
        select.select([port.socket], [], [], 2.0)
        offset[0] = 1.5
        port.doRead()
        assert [data for data, _ in proto.seen] == [b"first", b"second"]
        assert 1.5 <= guard.queue_delay < 2.5
        assert guard.overloaded(0, new_call=True)
        # Read at once, a datagram has waited next to nothing.
        offset[0] = 0.0
        peer.sendto(b"third", addr)
        select.select([port.socket], [], [], 2.0)
        port.doRead()
        assert proto.seen[-1][0] == b"third" and guard.queue_delay < 0.25
        # A wake-up with nothing to read means nothing is queued.
        guard.queue_delay = 1.0
        bursts.do_read()
        assert guard.queue_delay == 0.0
    finally:
        port.stopListening()
        peer.close()


class Stale:
    """A port under _Bursts with a guard whose clock reads each stamped datagram as
    having waited the next of `waits` seconds (no sleep), and a peer that sends."""

    def __init__(self, waits: list[float], max_request_age: float = 0.4) -> None:
        self.guard = OverloadGuard(Clock(), max_queue_delay=0.25,
                                   max_request_age=max_request_age)
        self.proto = Recorder()
        self.port = reactor.listenUDP(0, self.proto, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.waits = list(waits)
        self.stamped = 0

        def now() -> float:
            self.stamped += 1
            return time.time() + (self.waits.pop(0) if self.waits else 0.0)

        _Bursts(self.port, self.guard, now=now)

    def read(self, *datagrams: bytes) -> list[bytes]:
        """What one burst delivers after the peer sent `datagrams` (loopback queues
        each before `sendto` returns)."""
        addr = ("127.0.0.1", self.port.getHost().port)
        for data in datagrams:
            self.peer.sendto(data, addr)
        select.select([self.port.socket], [], [], 2.0)
        self.proto.seen.clear()
        self.port.doRead()
        return [data for data, _ in self.proto.seen]

    def close(self) -> None:
        self.port.stopListening()
        self.peer.close()


def test_requests_that_waited_past_max_request_age_are_dropped_unread() -> None:
    # Requests that waited 600 ms (over 400): dropped, their senders retransmit them.
    # Responses and ACKs are kept (nothing would send them again).
    rig = Stale([0.6] * 4)
    try:
        seen = rig.read(b"REGISTER sip:a.lab SIP/2.0\r\n", b"SIP/2.0 200 OK\r\n",
                        b"ACK sip:b@a.lab SIP/2.0\r\n", b"OPTIONS sip:a.lab SIP/2.0\r\n")
        assert seen == [b"SIP/2.0 200 OK\r\n", b"ACK sip:b@a.lab SIP/2.0\r\n"]
        assert rig.guard.stale == 2
        assert 0.6 <= rig.guard.queue_delay < 1.6  # the burst's first datagram
        # Read at once, a request is answered.
        assert rig.read(b"REGISTER sip:a.lab SIP/2.0\r\n") == [b"REGISTER sip:a.lab SIP/2.0\r\n"]
        assert rig.guard.stale == 2
    finally:
        rig.close()


def test_once_a_datagram_is_young_the_rest_of_the_burst_is_read_unstamped() -> None:
    # Ages as the clock reports them: stale, young, then "stale" again, which a
    # stamped read would drop; FIFO says the rest is younger, so it is not stamped.
    rig = Stale([0.9, 0.1, 0.9, 0.9])
    try:
        seen = rig.read(b"INVITE sip:a SIP/2.0\r\n", b"INVITE sip:b SIP/2.0\r\n",
                        b"INVITE sip:c SIP/2.0\r\n")
        assert seen == [b"INVITE sip:b SIP/2.0\r\n", b"INVITE sip:c SIP/2.0\r\n"]
        assert rig.guard.stale == 1 and rig.stamped == 2
    finally:
        rig.close()


def test_with_max_request_age_0_nothing_is_dropped() -> None:
    rig = Stale([5.0] * 3, max_request_age=0.0)
    try:
        seen = rig.read(b"INVITE sip:a SIP/2.0\r\n", b"BYE sip:b SIP/2.0\r\n")
        assert seen == [b"INVITE sip:a SIP/2.0\r\n", b"BYE sip:b SIP/2.0\r\n"]
        assert rig.guard.stale == 0 and rig.stamped == 1  # only the queue's age
        assert rig.guard.queue_delay >= 5.0
    finally:
        rig.close()


def test_without_a_queue_delay_limit_the_socket_is_not_stamped() -> None:
    guard = OverloadGuard(Clock(), max_queue_delay=0.0, max_request_age=0.0)
    port = reactor.listenUDP(0, Recorder(), interface="127.0.0.1")  # type: ignore[attr-defined]
    try:
        bursts = _Bursts(port, guard)
        assert bursts.guard is None
        assert port.socket.getsockopt(socket.SOL_SOCKET, SO_TIMESTAMP) == 0
    finally:
        port.stopListening()
