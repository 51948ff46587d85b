"""The transport boundary on real loopback sockets, and its pure helpers."""

from __future__ import annotations

import socket

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.error import CannotListenError

from sipcore.errors import ParseError
from sipcore.headers import Via
from sipcore.message import Request, Response, make_response, parse
from sipcore.twisted.transport import (
    Address,
    SipEndpoint,
    address,
    response_destination,
    stamp_received,
)

OPTIONS = (
    "OPTIONS sip:a.lab SIP/2.0\r\n"
    "Via: SIP/2.0/{transport} {sent_by};branch=z9hG4bKt1{extra}\r\n"
    "From: <sip:x@a.lab>;tag=1\r\nTo: <sip:a.lab>\r\nCall-ID: c1\r\n"
    "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)


def options(transport: str = "UDP", sent_by: str = "127.0.0.1:5070", extra: str = "") -> bytes:
    return OPTIONS.format(transport=transport, sent_by=sent_by, extra=extra).encode()


class Recorder:
    """A MessageHandler that keeps what it got and answers requests 200."""

    def __init__(self) -> None:
        self.got: list[tuple[object, Address]] = []
        self.endpoint: SipEndpoint | None = None
        self.waiting: defer.Deferred[None] | None = None

    def message_received(self, message, source):
        self.got.append((message, source))
        if isinstance(message, Request) and self.endpoint is not None:
            self.endpoint.send_response(make_response(message, 200), source)
        if self.waiting is not None:
            d, self.waiting = self.waiting, None
            d.callback(None)


# -- pure helpers ---------------------------------------------------------------------


@pytest.mark.parametrize("args", [("UDP", "127.0.0.1", 5060), ("TLS", "::1", 5061)])
def test_address_is_an_address(args: tuple[str, str, int]) -> None:
    made, plain = address(*args), Address(*args)
    assert type(made) is Address
    assert made == plain and hash(made) == hash(plain) and str(made) == str(plain)
    assert (made.transport, made.host, made.port) == args
    assert made._replace(port=1) == Address(args[0], args[1], 1)


def test_received_added_when_sent_by_differs():
    request = parse(options(sent_by="client.example.com:5070"))
    stamp_received(request, Address("UDP", "192.0.2.7", 5070))
    assert request.top_via.received == "192.0.2.7"
    assert request.top_via.rport is None


def test_received_not_added_when_sent_by_matches():
    request = parse(options(sent_by="192.0.2.7:5070"))
    stamp_received(request, Address("UDP", "192.0.2.7", 5070))
    assert request.top_via.received is None


def test_rport_filled_and_received_added_rfc3581():
    request = parse(options(sent_by="192.0.2.7:5070", extra=";rport"))
    stamp_received(request, Address("UDP", "192.0.2.7", 40000))
    via = request.top_via
    assert via.rport == "40000"
    assert via.received == "192.0.2.7"
    assert b";rport=40000" in request.serialise()


@pytest.mark.parametrize(
    ("via", "expected"),
    [
        ("SIP/2.0/UDP 192.0.2.1", Address("UDP", "192.0.2.1", 5060)),
        ("SIP/2.0/UDP 192.0.2.1:5070;received=198.51.100.2", Address("UDP", "198.51.100.2", 5070)),
        ("SIP/2.0/UDP h.example;received=198.51.100.2;rport=4000",
         Address("UDP", "198.51.100.2", 4000)),
        ("SIP/2.0/UDP h.example:5070;maddr=239.1.1.1;ttl=1", Address("UDP", "239.1.1.1", 5070)),
        ("SIP/2.0/TLS 192.0.2.1", Address("TLS", "192.0.2.1", 5061)),
        ("SIP/2.0/UDP [2001:db8::1]:5062", Address("UDP", "2001:db8::1", 5062)),
    ],
)
def test_response_destination_rfc3261_18_2_2(via, expected):
    assert response_destination(Via.parse(via)) == expected


# -- real sockets -----------------------------------------------------------------------


@pytest.fixture
def endpoint():
    handler = Recorder()
    ep = SipEndpoint(reactor, handler, interface="127.0.0.1", port=0, log_messages=False)
    handler.endpoint = ep
    ep.start()
    yield ep
    pytest_twisted.blockon(ep.stop())


def _tcp_port_held() -> tuple[socket.socket, int]:
    """A listening TCP socket on a free loopback port, and that port."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    return holder, holder.getsockname()[1]


class FirstUdpOnTakenPort:
    """The reactor, except that the first UDP port asked for as 0 is `taken`: a number
    whose TCP side a socket already holds (what the kernel may pick by chance)."""

    def __init__(self, taken: int) -> None:
        self.taken: int | None = taken

    def listenUDP(self, port: int, proto, interface: str = "", **kw):  # noqa: N802
        if port == 0 and self.taken is not None:
            port, self.taken = self.taken, None
        return reactor.listenUDP(port, proto, interface=interface, **kw)

    def __getattr__(self, name: str):
        return getattr(reactor, name)


@pytest_twisted.inlineCallbacks
def test_port_zero_gets_a_pair_free_for_udp_and_tcp():
    holder, taken = _tcp_port_held()
    ep = SipEndpoint(FirstUdpOnTakenPort(taken), Recorder(), interface="127.0.0.1",
                     port=0, log_messages=False)
    try:
        ep.start()
        udp_port = ep.udp.getHost().port
        tcp_port = [lst for lst in ep.listeners if lst is not ep.udp][0].getHost().port
        assert udp_port == tcp_port == ep.port != taken
        assert len(ep.listeners) == 2  # the first try's UDP port was let go
    finally:
        yield ep.stop()
        holder.close()


@pytest_twisted.inlineCallbacks
def test_a_fixed_port_taken_for_tcp_is_an_error():
    holder, taken = _tcp_port_held()
    ep = SipEndpoint(reactor, Recorder(), interface="127.0.0.1", port=taken,
                     log_messages=False)
    try:
        with pytest.raises(CannotListenError):
            ep.start()
    finally:
        yield ep.stop()
        holder.close()


@pytest_twisted.inlineCallbacks
def test_udp_request_answered_to_rport(endpoint):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0)
    # A wrong sent-by port: only rport gets the answer back to us.
    sock.sendto(options(sent_by="127.0.0.1:9", extra=";rport"), ("127.0.0.1", endpoint.port))
    answer = yield _poll(sock)
    response = parse(answer)
    assert isinstance(response, Response) and response.status == 200
    assert response.top_via.rport == str(sock.getsockname()[1])
    sock.close()


@pytest_twisted.inlineCallbacks
def test_udp_malformed_request_answered_with_parse_status(endpoint):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0)
    bad = options().replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1)
    sock.sendto(bad, ("127.0.0.1", endpoint.port))
    answer = yield _poll(sock)
    assert answer.startswith(b"SIP/2.0 505 ")
    assert endpoint.handler.got == []
    sock.close()


@pytest_twisted.inlineCallbacks
def test_tcp_request_and_response_on_same_connection(endpoint):
    sock = socket.create_connection(("127.0.0.1", endpoint.port))
    sock.settimeout(0)
    # Two requests in one segment and a keep-alive: framing by Content-Length.
    sock.sendall(options("TCP") + b"\r\n\r\n" + options("TCP").replace(b"t1", b"t2"))
    data = b""
    for _ in range(2):
        data += yield _poll(sock, until=lambda d: d.count(b"SIP/2.0 200") >= 2, seed=data)
        if data.count(b"SIP/2.0 200") >= 2:
            break
    assert data.count(b"SIP/2.0 200 OK") == 2
    assert len(endpoint.handler.got) == 2
    assert endpoint.handler.got[0][1].transport == "TCP"
    sock.close()


@pytest_twisted.inlineCallbacks
def test_tcp_outgoing_connection_is_reused(endpoint):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0)
    dest = Address("TCP", "127.0.0.1", listener.getsockname()[1])
    endpoint.send(parse(options("TCP")), dest)
    endpoint.send(parse(options("TCP").replace(b"t1", b"t2")), dest)
    conn = yield _accept(listener)
    got = yield _poll(conn, until=lambda d: d.count(b"OPTIONS sip") >= 2)
    assert got.count(b"OPTIONS sip:a.lab") == 2
    assert len(endpoint.connections) == 1
    conn.close()
    listener.close()


def test_parse_error_is_the_only_error_type():
    with pytest.raises(ParseError):
        parse(b"\x00garbage")


# -- helpers: bounded polling on the real reactor ------------------------------------------


def _sleep(seconds: float) -> defer.Deferred[None]:
    d: defer.Deferred[None] = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


@defer.inlineCallbacks
def _poll(sock: socket.socket, until=None, seed: bytes = b"", limit: float = 5.0):
    data = seed
    waited = 0.0
    while waited < limit:
        try:
            chunk = sock.recv(65535)
        except BlockingIOError:
            chunk = b""
        data += chunk
        if data and (until is None or until(data)):
            return data
        yield _sleep(0.01)
        waited += 0.01
    raise TimeoutError(f"nothing within {limit}s: {data!r}")


@defer.inlineCallbacks
def _accept(listener: socket.socket, limit: float = 5.0):
    waited = 0.0
    while waited < limit:
        try:
            conn, _ = listener.accept()
            conn.setblocking(False)
            return conn
        except BlockingIOError:
            yield _sleep(0.01)
            waited += 0.01
    raise TimeoutError("no connection")
