"""Flood protection and resource bounds, driven by `task.Clock` (no sockets, no sleeps)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher

from sipcore.message import Request, Response, parse
from sipcore.twisted.protection import (
    ConnectionLimiter,
    OverloadGuard,
    Protection,
    ProtectionConfig,
    RateLimiter,
    parse_network,
    parse_rate,
)
from sipcore.twisted.stack import SHED_TAG_PREFIX, SipStack
from sipcore.twisted.transport import Address, SipEndpoint, _StreamFactory

from .txhelpers import responses_on_the_wire


@pytest.fixture
def warnings() -> Iterator[list[str]]:
    """Warning lines logged under sipcore.protection while the test runs."""
    lines: list[str] = []

    def observer(event: dict[str, Any]) -> None:
        if event.get("log_namespace") == "sipcore.protection" and (
            event["log_level"].name in ("warn", "error")
        ):
            from twisted.logger import formatEvent

            lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    yield lines
    globalLogPublisher.removeObserver(observer)


# -- option values ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2000/2", (2000, 2.0)), ("100/2s", (100, 2.0)), ("50/s", (50, 1.0)), ("7", (7, 1.0)),
     ("0", (0, 1.0)), ("off", (0, 1.0)), ("10/0.5", (10, 0.5))],
)
def test_parse_rate(text, expected):
    assert parse_rate(text) == expected


@pytest.mark.parametrize("text", ["x/2", "10/0", "-1/2", "10/abc", "1/-3"])
def test_parse_rate_rejects(text):
    with pytest.raises(ValueError, match="bad rate"):
        parse_rate(text)


def test_parse_network():
    assert parse_network("10.1.2.3/8") == ipaddress.ip_network("10.0.0.0/8")
    assert parse_network("2001:db8::1") == ipaddress.ip_network("2001:db8::1/128")
    with pytest.raises(ValueError, match="bad network"):
        parse_network("10.0.0.0/33")


# -- rate limiter (pike) --------------------------------------------------------------


def test_limit_then_ban_then_release(warnings):
    clock = Clock()
    pike = RateLimiter(clock, requests=10, window=2.0, ban=30.0)
    assert all(pike.allow("192.0.2.1") for _ in range(10))
    assert not pike.allow("192.0.2.1")  # the 11th in the same instant
    assert pike.is_banned("192.0.2.1")
    assert not any(pike.allow("192.0.2.1") for _ in range(500))  # dropped, silently
    assert pike.allow("192.0.2.2")  # other sources are not affected
    assert len(warnings) == 1 and "192.0.2.1" in warnings[0] and "30 s" in warnings[0]
    clock.advance(29.9)
    assert not pike.allow("192.0.2.1")
    clock.advance(0.2)
    assert pike.allow("192.0.2.1")  # ban over: a fresh, full bucket
    assert all(pike.allow("192.0.2.1") for _ in range(9))
    assert not pike.allow("192.0.2.1")
    assert pike.bans == 2 and len(warnings) == 2  # one line per ban, not per packet


def test_bucket_refills_at_rate():
    clock = Clock()
    pike = RateLimiter(clock, requests=10, window=2.0, ban=5.0)
    for _ in range(10):
        assert pike.allow("h")
    clock.advance(1.0)  # 5 tokens back (10 per 2 s)
    assert all(pike.allow("h") for _ in range(5))
    assert not pike.allow("h")


def test_steady_rate_at_the_limit_is_never_banned():
    clock = Clock()
    pike = RateLimiter(clock, requests=10, window=1.0, ban=5.0)
    for _ in range(1000):
        assert pike.allow("h")
        clock.advance(0.1)
    assert pike.bans == 0


def test_disabled_limiter_allows_everything():
    pike = RateLimiter(Clock(), requests=0, window=2.0, ban=30.0)
    assert not pike.enabled
    assert all(pike.allow("h") for _ in range(10_000))
    assert len(pike) == 0


def test_table_is_bounded_lru():
    clock = Clock()
    pike = RateLimiter(clock, requests=5, window=1.0, ban=10.0, max_ips=100)
    for i in range(10_000):
        pike.allow(f"10.0.{i // 256}.{i % 256}")
    assert len(pike) <= 100


def test_idle_entries_expire_but_bans_stay():
    clock = Clock()
    pike = RateLimiter(clock, requests=2, window=1.0, ban=60.0)
    for _ in range(3):
        pike.allow("bad")
    pike.allow("idle")
    clock.advance(5.0)
    for i in range(10):
        pike.allow(f"new{i}")
    assert pike.is_banned("bad")  # a banned entry is never expired early
    assert "idle" not in pike._table


def test_trusted_networks_are_exempt():
    config = ProtectionConfig(
        pike_requests=3, pike_window=1.0, trusted=(parse_network("10.0.0.0/8"),)
    )
    protection = Protection(Clock(), config)
    assert all(protection.allow_packet("10.9.8.7") for _ in range(1000))
    assert sum(protection.allow_packet("192.0.2.1") for _ in range(10)) == 3


# -- connection caps -------------------------------------------------------------------


def test_connection_caps_per_ip_and_total(warnings):
    caps = ConnectionLimiter(per_ip=2, total=3)
    assert caps.open("a") and caps.open("a")
    assert not caps.open("a")
    assert not caps.open("a")
    assert caps.open("b")
    assert not caps.open("c")  # global cap
    assert caps.open("a", trusted=True) is False  # the global cap binds trusted ones too
    caps.close("b")
    assert caps.open("a", trusted=True)  # trusted: no per-IP cap
    assert caps.count == 3 and caps.connections_from("a") == 3
    for _ in range(3):
        caps.close("a")
    assert caps.connections_from("a") == 0
    assert caps.open("a")
    # One line per refused source (until its connections drop to zero), not per attempt.
    assert len([w for w in warnings if "from a" in w]) == 1


def test_banned_source_cannot_connect():
    clock = Clock()
    protection = Protection(clock, ProtectionConfig(pike_requests=1, pike_ban=5.0))
    assert protection.allow_packet("h")
    assert not protection.allow_packet("h")
    assert not protection.allow_connection("h")
    clock.advance(6)
    assert protection.allow_connection("h")


# -- the endpoint hooks -----------------------------------------------------------------


class Handler:
    def __init__(self) -> None:
        self.got: list[Any] = []

    def message_received(self, message: Any, source: Address) -> None:
        self.got.append(message)


OPTIONS = (
    "OPTIONS sip:a.lab SIP/2.0\r\nVia: SIP/2.0/{t} 192.0.2.9:5060;branch=z9hG4bK{n}\r\n"
    "From: <sip:x@a.lab>;tag=1\r\nTo: <sip:a.lab>{to_tag}\r\nCall-ID: c{n}\r\n"
    "CSeq: 1 {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)


def request(n: int, transport: str = "UDP", method: str = "OPTIONS", to_tag: str = "") -> bytes:
    text = OPTIONS.format(t=transport, n=n, method=method, to_tag=to_tag)
    return text.replace("OPTIONS sip:", f"{method} sip:", 1).encode()


def make_endpoint(**config: Any) -> tuple[SipEndpoint, Handler, Clock]:
    clock = Clock()
    handler = Handler()
    protection = Protection(clock, ProtectionConfig(**config))
    endpoint = SipEndpoint(clock, handler, log_messages=False, protection=protection)
    return endpoint, handler, clock


def test_udp_flood_dropped_before_parsing():
    endpoint, handler, clock = make_endpoint(pike_requests=5, pike_ban=2.0)
    source = Address("UDP", "192.0.2.9", 5060)
    for n in range(50):
        endpoint.data_received(request(n), source, None)
    assert len(handler.got) == 5
    endpoint.data_received(request(99), Address("UDP", "192.0.2.10", 5060), None)
    assert len(handler.got) == 6
    clock.advance(2.5)
    endpoint.data_received(request(100), source, None)
    assert len(handler.got) == 7


def connect(endpoint: SipEndpoint, host: str, port: int) -> Any:
    factory = _StreamFactory(endpoint, "TCP")
    stream = factory.buildProtocol(IPv4Address("TCP", host, port))
    if stream is not None:
        stream.makeConnection(StringTransport(peerAddress=IPv4Address("TCP", host, port)))
    return stream


def test_tcp_connection_cap_and_release():
    endpoint, _, _ = make_endpoint(max_connections_per_ip=3)
    streams = [connect(endpoint, "192.0.2.9", 4000 + i) for i in range(5)]
    assert [s is not None for s in streams] == [True, True, True, False, False]
    assert connect(endpoint, "192.0.2.10", 4000) is not None
    streams[0].connectionLost(None)
    assert connect(endpoint, "192.0.2.9", 4100) is not None
    assert endpoint.protection.connections.connections_from("192.0.2.9") == 3


def test_idle_timeout_is_configurable():
    endpoint, _, clock = make_endpoint(idle_timeout=7.0)
    stream = connect(endpoint, "192.0.2.9", 4000)
    clock.advance(6.9)
    assert not stream.transport.disconnecting
    clock.advance(0.2)
    assert stream.transport.disconnecting


def test_stream_messages_are_rate_limited_and_connection_dropped():
    endpoint, handler, _ = make_endpoint(pike_requests=3)
    stream = connect(endpoint, "192.0.2.9", 4000)
    stream.dataReceived(b"".join(request(n, "TCP") for n in range(10)))
    assert len(handler.got) == 3
    assert stream.transport.disconnecting


# -- overload: 503 + Retry-After ------------------------------------------------------


def test_overload_guard_by_transactions_and_lag(warnings):
    clock = Clock()
    guard = OverloadGuard(clock, max_transactions=10, max_lag=1.0, retry_after=7)
    guard.start()
    assert not guard.overloaded(9)
    assert guard.overloaded(10)
    assert not guard.overloaded(19, in_dialog=True)
    assert guard.overloaded(20, in_dialog=True)
    clock.advance(0.5)
    assert guard.lag == 0.0
    clock.advance(3.0)  # the reactor was blocked: the tick ran 2.5 s late
    assert guard.lag == pytest.approx(2.5)
    assert guard.overloaded(0)
    clock.advance(0.5)
    assert not guard.overloaded(0)
    guard.stop()
    assert not clock.getDelayedCalls()
    assert len(warnings) == 1  # at most one line per 10 s while overloaded


def test_overload_guard_by_queue_delay(warnings):
    guard = OverloadGuard(Clock(), max_transactions=0, max_lag=0.0, max_queue_delay=0.25)
    guard.queue_delay = 0.25
    assert not guard.overloaded(0, new_call=True)
    guard.queue_delay = 0.3  # the transport saw a datagram that waited 300 ms
    assert guard.overloaded(0, new_call=True)
    # Only new calls: refusing a REGISTER costs what answering it does, and calls in
    # progress (in-dialog requests) must still be able to end.
    assert not guard.overloaded(0)
    assert not guard.overloaded(0, in_dialog=True, new_call=True)
    guard.queue_delay = 0.01
    assert not guard.overloaded(0, new_call=True)
    off = OverloadGuard(Clock(), max_transactions=0, max_lag=0.0, max_queue_delay=0.0)
    off.queue_delay = 10.0
    assert not off.overloaded(0, new_call=True)
    assert "datagrams queued 300 ms" in warnings[0]


def test_dropped_requests_are_logged_at_most_every_10_s(warnings: list[str]) -> None:
    clock = Clock()
    guard = OverloadGuard(clock, max_request_age=0.5)
    for _ in range(3):
        guard.dropped_stale(0.7)
    clock.advance(9.9)
    guard.dropped_stale(0.8)
    assert len(warnings) == 1
    clock.advance(0.1)
    guard.dropped_stale(1.2)
    assert guard.stale == 5
    assert len(warnings) == 2
    assert ("dropped 4 UDP request(s) that waited over 500 ms unread (the latest 1200 ms)"
            in warnings[1])


def test_new_calls_get_503_while_datagrams_queue_too_long():
    stack, role, sent = make_stack(max_queue_delay=0.2)
    source = Address("UDP", "192.0.2.9", 5060)
    assert stack.endpoint.protection is not None
    stack.endpoint.protection.overload.queue_delay = 0.5
    stack.message_received(parse(request(1, method="INVITE")), source)
    stack.message_received(parse(request(2, method="BYE", to_tag=";tag=d")), source)
    stack.message_received(parse(request(3, method="REGISTER")), source)
    stack.message_received(parse(request(4, method="INVITE", to_tag=";tag=d")), source)
    assert [r.status for r in sent] == [503]
    assert [r.method for r in role.requests] == ["BYE", "REGISTER", "INVITE"]
    stack.endpoint.protection.overload.queue_delay = 0.05
    stack.message_received(parse(request(5, method="INVITE")), source)
    assert len(role.requests) == 4 and len(sent) == 1


class Role:
    """Takes requests and never answers, so their server transactions stay live."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.acks: list[Request] = []
        self.cancels: list[Request] = []

    def request_received(self, request: Request, tx: Any, source: Address) -> None:
        self.requests.append(request)

    def ack_received(self, ack: Request, source: Address) -> None:
        self.acks.append(ack)

    def cancel_received(self, cancel: Request, invite_tx: Any, source: Address) -> None:
        self.cancels.append(cancel)

    def stray_response(self, response: Response, source: Address) -> None:
        pass

    def server_ack_received(self, tx: Any, ack: Request) -> None:
        pass

    def server_tx_ended(self, tx: Any, reason: str) -> None:
        pass


def make_stack(**config: Any) -> tuple[SipStack, Role, list[Response]]:
    clock = Clock()
    role = Role()
    config.setdefault("max_lag", 0.0)
    stack = SipStack(
        clock, role, log_messages=False, protection=Protection(clock, ProtectionConfig(**config))
    )
    sent = responses_on_the_wire(stack)
    return stack, role, sent


def test_new_requests_get_503_with_retry_after_over_the_cap():
    stack, role, sent = make_stack(max_transactions=3, retry_after=9)
    source = Address("UDP", "192.0.2.9", 5060)
    for n in range(5):
        stack.message_received(parse(request(n)), source)
    assert len(role.requests) == 3 and len(stack.table) == 3
    assert [r.status for r in sent] == [503, 503]
    assert sent[0].headers.get("Retry-After") == "9"
    assert sent[0].to.tag.startswith(SHED_TAG_PREFIX)
    # The ACK a client sends for that 503 is absorbed, not handed to the role.
    ack = request(3, method="ACK", to_tag=f";tag={sent[0].to.tag}")
    stack.message_received(parse(ack), source)
    assert role.acks == []
    # In-dialog requests (BYE ...) still pass until twice the cap, so calls can end.
    for n in range(10, 14):
        stack.message_received(parse(request(n, method="BYE", to_tag=";tag=d")), source)
    assert len(role.requests) == 6
    assert len(sent) == 3 and sent[-1].status == 503


def test_no_protection_means_no_shedding():
    clock = Clock()
    role = Role()
    stack = SipStack(clock, role, log_messages=False)
    for n in range(50):
        stack.message_received(parse(request(n)), Address("UDP", "192.0.2.9", 5060))
    assert len(role.requests) == 50
