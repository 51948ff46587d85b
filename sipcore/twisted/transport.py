# -*- test-case-name: tests.sipcore.test_transport -*-
"""The transport layer: UDP, TCP and TLS sockets for one SIP endpoint (RFC 3261 §18).

This is the only place where SIP bytes meet Twisted. Everything above it sees parsed
messages and `Address` tuples; everything below it is a socket. Roles (proxy,
registrar, user agent) hand a `MessageHandler` to a `SipEndpoint` and call
`send()`/`send_response()`; they never touch a Twisted transport.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import time
from collections.abc import Callable
from typing import Any, Final, NamedTuple, Protocol

from twisted.internet import protocol
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from sipcore.errors import ParseError
from sipcore.headers import Via
from sipcore.malformed import error_response_for
from sipcore.message import Message, Request, Response, StreamParser, parse
from sipcore.twisted.protection import OverloadGuard, Protection
from sipcore.twisted.reuseport import spread_by_source_port

log = Logger(namespace="sipcore.transport")

RELIABLE: Final = frozenset({"TCP", "TLS"})
DEFAULT_PORTS: Final = {"UDP": 5060, "TCP": 5060, "TLS": 5061}
# RFC 3261 §18.1.1: a request within 200 bytes of the path MTU (1500) goes over TCP.
# We keep UDP for anything that fits a datagram, since lab peers (sipp) often listen on
# UDP only, and only refuse what cannot be sent at all.
MAX_DATAGRAM: Final = 65507
# Idle TCP/TLS connections are closed after this long (seconds): bounded memory.
IDLE_TIMEOUT = 300.0
#: Tries at a UDP and TCP pair on one free port when the port asked for is 0.
PORT_PAIR_ATTEMPTS: Final = 5


class Address(NamedTuple):
    """Where a message came from or goes to: transport name, IP literal, port."""

    transport: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport} {host}:{self.port}"


_tuple_new: Final = tuple.__new__


def address(transport: str, host: str, port: int) -> Address:
    """`Address(transport, host, port)` for the per-message path: a NamedTuple's own
    constructor is an interpreted function (collections.namedtuple writes it), where
    this is one C call from compiled code."""
    return _tuple_new(Address, (transport, host, port))  # type: ignore[no-any-return]


class MessageHandler(Protocol):
    """What a role implements to receive messages from a `SipEndpoint`."""

    def message_received(self, message: Message, source: Address) -> None: ...


class Tracer(Protocol):
    """Observer of every message on the wire (the trace files of the status tooling)."""

    def __call__(
        self, direction: str, data: bytes, local: Address, remote: Address
    ) -> None: ...


def _same_host(a: str, b: str) -> bool:
    # Fast path (every request): identical spellings are the same host. Only when they
    # differ does it take ipaddress to tell `::1` from `0:0::1` or a name from an IP.
    if a == b:
        return True
    try:
        return ipaddress.ip_address(a.strip("[]")) == ipaddress.ip_address(b.strip("[]"))
    except ValueError:
        return a.lower() == b.lower()


def stamp_received(request: Request, source: Address) -> None:
    """Add `received` and fill `rport` in the top Via (RFC 3261 §18.2.1, RFC 3581 §4)."""
    via = request.top_via
    changed = False
    if not _same_host(via.host, source.host) or via.rport is not None:
        via.params["received"] = source.host
        changed = True
    if via.rport is not None:
        via.params["rport"] = str(source.port)
        changed = True
    if changed:
        request.set_top_via(via)


def response_destination(via: Via, default_transport: str = "UDP") -> Address:
    """Where a response goes when there is no connection to reuse (RFC 3261 §18.2.2)."""
    transport = (via.transport or default_transport).upper()
    if via.maddr:
        return address(transport, via.maddr, via.port or DEFAULT_PORTS.get(transport, 5060))
    host = via.received or via.host
    if via.rport:
        port = int(via.rport)
    else:
        port = via.port or DEFAULT_PORTS.get(transport, 5060)
    return address(transport, host.strip("[]"), port)


class _Datagram(protocol.DatagramProtocol):
    def __init__(self, endpoint: SipEndpoint) -> None:
        self.endpoint = endpoint

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:  # noqa: N802
        self.endpoint.data_received(data, address("UDP", addr[0], addr[1]), None)


class _Stream(protocol.Protocol):
    """One TCP or TLS connection; framing by Content-Length (RFC 3261 §18.3)."""

    # Twisted's stub (ITransport | None, zope-style methods) does not fit; in practice
    # a connected ITCPTransport.
    transport: Any

    def __init__(self, endpoint: SipEndpoint, transport_name: str) -> None:
        self.endpoint = endpoint
        self.transport_name = transport_name
        self.parser = StreamParser()
        self.peer: Address | None = None
        self._idle: object | None = None
        # Set when the connection was counted against the inbound connection caps.
        self.admitted_host: str | None = None

    def connectionMade(self) -> None:  # noqa: N802
        peer = self.transport.getPeer()
        self.peer = Address(self.transport_name, peer.host, peer.port)
        self.endpoint.connection_made(self)
        self._touch()

    def _touch(self) -> None:
        clock = self.endpoint.clock
        timeout = self.endpoint.idle_timeout
        if self._idle is not None and self._idle.active():  # type: ignore[attr-defined]
            self._idle.reset(timeout)  # type: ignore[attr-defined]
        else:
            self._idle = clock.callLater(timeout, self.transport.loseConnection)  # type: ignore[arg-type]

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self._touch()
        try:
            messages = self.parser.feed(data)
        except ParseError as err:
            # The framing is lost: answer if we can, then drop the connection (§18.3).
            assert self.peer is not None
            self.endpoint.reject(data, err, self.peer, self)
            self.transport.loseConnection()
            return
        assert self.peer is not None
        for message in messages:
            self.endpoint.message_parsed(message, self.peer, self)

    def write(self, data: bytes) -> None:
        self._touch()
        self.transport.write(data)

    def connectionLost(self, reason: object = None) -> None:  # noqa: N802
        if self._idle is not None and self._idle.active():  # type: ignore[attr-defined]
            self._idle.cancel()  # type: ignore[attr-defined]
        self.endpoint.connection_lost(self)


class _StreamFactory(protocol.Factory):
    def __init__(self, endpoint: SipEndpoint, transport_name: str) -> None:
        self.endpoint = endpoint
        self.transport_name = transport_name

    def buildProtocol(self, addr: object) -> _Stream | None:  # noqa: N802
        # Returning None makes Twisted close the connection at once: over a cap, or
        # from a banned source (sipcore.twisted.protection).
        protection = self.endpoint.protection
        host = getattr(addr, "host", "")
        if protection is not None and not protection.allow_connection(host):
            return None
        stream = _Stream(self.endpoint, self.transport_name)
        if protection is not None:
            stream.admitted_host = host
        return stream


class _ClientStreamFactory(protocol.ClientFactory):
    """Outgoing connection; messages queued until it is up, dropped on failure."""

    def __init__(self, endpoint: SipEndpoint, dest: Address) -> None:
        self.endpoint = endpoint
        self.dest = dest
        self.pending: list[bytes] = []
        self.on_failure: list[Callable[[], None]] = []

    def buildProtocol(self, addr: object) -> _Stream:  # noqa: N802
        stream = _Stream(self.endpoint, self.dest.transport)
        pending, self.pending = self.pending, []
        original = stream.connectionMade

        def made() -> None:
            original()
            for data in pending:
                stream.write(data)

        stream.connectionMade = made  # type: ignore[method-assign]
        return stream

    def clientConnectionFailed(self, connector: object, reason: object) -> None:  # noqa: N802
        log.warn("connection to {dest} failed: {reason}", dest=str(self.dest), reason=reason)
        self.endpoint.connecting.pop(self.dest, None)
        for callback in self.on_failure:
            callback()


class SipEndpoint:
    """UDP, TCP and (optionally) TLS listeners on one interface, and the send API.

    `handler.message_received(message, source)` gets every well-formed message.
    Malformed requests are answered here with the status their `ParseError` carries
    (when enough of the request survives to address a response) and never reach the
    handler; undecodable garbage is logged and dropped.
    """

    def __init__(
        self,
        reactor: object,
        handler: MessageHandler,
        interface: str = "127.0.0.1",
        port: int = 5060,
        tls_port: int | None = None,
        tls_context: object | None = None,
        transports: tuple[str, ...] = ("UDP", "TCP"),
        tracer: Tracer | None = None,
        log_messages: bool = True,
        protection: Protection | None = None,
        reuse_port: bool = False,
        send_port: int | None = None,
        reuse_group: int = 0,
    ) -> None:
        self.reactor = reactor
        # `--workers N` (proxy.workers): N processes bind the same port with
        # SO_REUSEPORT, and each sends its requests from its own `send_port`, so the
        # responses come back to the process that holds the client transaction.
        self.reuse_port = reuse_port
        self.send_port = send_port
        # How many workers share the UDP port: with 2 or more, a hash of each
        # datagram's source port picks the socket (sipcore.twisted.reuseport).
        self.reuse_group = reuse_group
        self.udp_send: Any = None
        self.clock: IReactorTime = reactor  # type: ignore[assignment]
        self.handler = handler
        self.interface = interface
        self.port = port
        self.tls_port = tls_port
        self.tls_context = tls_context
        self.transports = transports
        self.tracer = tracer
        # Called with (error, source) for each malformed message, answered or dropped:
        # such messages never reach the tracer (they are not SIP), but metrics count them.
        self.parse_error_observers: list[Callable[[ParseError, Address], None]] = []
        self.log_messages = log_messages
        # Flood and resource limits; None (the default) means none, as in unit tests.
        self.protection = protection
        self.idle_timeout = protection.idle_timeout if protection is not None else IDLE_TIMEOUT
        self.udp: Any = None
        self.listeners: list[object] = []
        # Open connections by remote address: responses and new requests reuse them.
        self.connections: dict[Address, _Stream] = {}
        self.connecting: dict[Address, _ClientStreamFactory] = {}

    # -- life cycle ---------------------------------------------------------------

    def start(self) -> None:
        if self.protection is not None:
            self.protection.start()
        # Port 0 asks for any free port: UDP picks one, then TCP needs that same number,
        # which a TCP socket elsewhere may hold already. Then drop both and try again.
        pair = self.port == 0 and "UDP" in self.transports and "TCP" in self.transports
        attempts = PORT_PAIR_ATTEMPTS if pair else 1
        send_port = self.send_port
        for attempt in range(attempts):
            opened = len(self.listeners)
            try:
                self._listen_udp_tcp()
                break
            except CannotListenError:
                if attempt == attempts - 1:
                    raise
                for listener in self.listeners[opened:]:
                    listener.stopListening()  # type: ignore[attr-defined]
                del self.listeners[opened:]
                self.udp = self.udp_send = None
                self.port, self.send_port = 0, send_port
        if self.tls_context is not None and self.tls_port is not None:
            tls = self.reactor.listenSSL(  # type: ignore[attr-defined]
                self.tls_port, _StreamFactory(self, "TLS"), self.tls_context,
                interface=self.interface,
            )
            self.tls_port = tls.getHost().port
            self.listeners.append(tls)

    def _listen_udp_tcp(self) -> None:
        reactor = self.reactor
        if "UDP" in self.transports:
            if self.reuse_port:
                self.udp = _adopt_udp(
                    reactor, self.interface, self.port, _Datagram(self), self.reuse_group
                )
            else:
                self.udp = reactor.listenUDP(  # type: ignore[attr-defined]
                    self.port, _Datagram(self), interface=self.interface
                )
                _grow_buffers(self.udp)
            guard = self.protection.overload if self.protection is not None else None
            _Bursts(self.udp, guard)
            self.port = self.udp.getHost().port  # type: ignore[attr-defined]
            self.listeners.append(self.udp)
            if self.send_port is not None:
                self.udp_send = reactor.listenUDP(  # type: ignore[attr-defined]
                    self.send_port, _Datagram(self), interface=self.interface
                )
                _grow_buffers(self.udp_send)
                # Responses to our own requests: never shed, so not measured either.
                _Bursts(self.udp_send)
                self.send_port = self.udp_send.getHost().port  # type: ignore[attr-defined]
                self.listeners.append(self.udp_send)
        if "TCP" in self.transports:
            if self.reuse_port:
                tcp = _adopt_tcp(reactor, self.interface, self.port, _StreamFactory(self, "TCP"))
            else:
                tcp = reactor.listenTCP(  # type: ignore[attr-defined]
                    self.port, _StreamFactory(self, "TCP"), interface=self.interface
                )
            self.port = tcp.getHost().port
            self.listeners.append(tcp)

    def stop(self) -> object:
        from twisted.internet.defer import gatherResults, maybeDeferred

        if self.protection is not None:
            self.protection.stop()
        for stream in list(self.connections.values()):
            stream.transport.loseConnection()
        return gatherResults(
            [maybeDeferred(lst.stopListening) for lst in self.listeners]  # type: ignore[attr-defined,call-overload]
        )

    def local_address(self, transport: str = "UDP") -> Address:
        port = self.tls_port if transport == "TLS" and self.tls_port else self.port
        return Address(transport, self.interface, port)

    # -- receiving ------------------------------------------------------------------

    def data_received(self, data: bytes, source: Address, stream: _Stream | None) -> None:
        if self.protection is not None and not self.protection.allow_packet(source.host):
            return  # rate-limited source: dropped before parsing, which is the point
        if not data.strip(b"\r\n"):
            return  # RFC 5626 keep-alive (CRLF ping) or an empty datagram
        try:
            message = parse(data)
        except ParseError as err:
            self.reject(data, err, source, stream)
            return
        self.message_parsed(message, source, stream)

    def message_parsed(self, message: Message, source: Address, stream: _Stream | None) -> None:
        protection = self.protection
        if stream is not None and protection is not None:
            # Stream messages are counted one by one (datagrams in data_received).
            if not protection.allow_packet(source.host):
                stream.transport.loseConnection()
                return
        if self.tracer is not None:
            self.tracer("in", message.serialise(), self.local_address(source.transport), source)
        try:
            if isinstance(message, Request):
                stamp_received(message, source)
            elif len(message.vias) == 0:
                raise ParseError("Missing Via")
        except ParseError as err:
            self.reject(message.serialise(), err, source, stream)
            return
        if self.log_messages:
            log.info("<- {source} {line}", source=str(source), line=_first_line(message))
        try:
            self.handler.message_received(message, source)
        except ParseError as err:
            # A lazily parsed header turned out to be malformed inside the role.
            if isinstance(message, Request):
                self.reject(message.serialise(), err, source, stream)
        except Exception:
            # A bug in a role must not take the endpoint down with it.
            log.failure("handler failed on {line}", line=_first_line(message))

    def reject(self, data: bytes, err: ParseError, source: Address, stream: _Stream | None) -> None:
        """Answer a malformed request if it can be addressed; drop anything else."""
        for observer in self.parse_error_observers:
            observer(err, source)
        log.warn(
            "malformed message from {source}: {status} {reason}",
            source=str(source), status=err.status, reason=err.reason,
        )
        response = error_response_for(data, err)
        if response is None:
            return
        if stream is not None:
            self._write(stream, response.serialise(), source)
        else:
            # Back to the packet's source, as with rport (RFC 3581): the Via of a
            # malformed request is not trusted to name a reachable address.
            self._send_udp(response.serialise(), source)

    # -- connections ----------------------------------------------------------------

    def connection_made(self, stream: _Stream) -> None:
        assert stream.peer is not None
        self.connections[stream.peer] = stream
        self.connecting.pop(stream.peer, None)

    def connection_lost(self, stream: _Stream) -> None:
        if stream.admitted_host is not None and self.protection is not None:
            self.protection.connection_closed(stream.admitted_host)
            stream.admitted_host = None
        if stream.peer is not None and self.connections.get(stream.peer) is stream:
            del self.connections[stream.peer]

    # -- sending --------------------------------------------------------------------

    def send(
        self, message: Message, dest: Address, on_error: Callable[[], None] | None = None
    ) -> None:
        """Send a request (or a response to an explicit address) to `dest`."""
        data = message.serialise()
        if self.log_messages:
            log.info("-> {dest} {line}", dest=str(dest), line=_first_line(message))
        if dest.transport == "UDP":
            if self.udp_send is not None and isinstance(message, Request):
                self._send_udp(data, dest, self.udp_send)
            else:
                self._send_udp(data, dest)
            return
        stream = self.connections.get(dest)
        if stream is not None:
            self._write(stream, data, dest)
            return
        pending = self.connecting.get(dest)
        if pending is None:
            pending = _ClientStreamFactory(self, dest)
            self.connecting[dest] = pending
            if dest.transport == "TLS":
                from twisted.internet import ssl

                self.reactor.connectSSL(  # type: ignore[attr-defined]
                    dest.host, dest.port, pending, ssl.optionsForClientTLS(dest.host)
                )
            else:
                self.reactor.connectTCP(dest.host, dest.port, pending)  # type: ignore[attr-defined]
        pending.pending.append(data)
        if on_error is not None:
            pending.on_failure.append(on_error)
        if self.tracer is not None:
            self.tracer("out", data, self.local_address(dest.transport), dest)

    def send_response(self, response: Response, source: Address | None = None) -> None:
        """Send a response back the way the request came (RFC 3261 §18.2.2, RFC 3581)."""
        via = response.top_via
        transport = (via.transport or "UDP").upper()
        if transport in RELIABLE and source is not None:
            stream = self.connections.get(source)
            if stream is not None:
                if self.log_messages:
                    log.info("-> {dest} {line}", dest=str(source), line=_first_line(response))
                self._write(stream, response.serialise(), source)
                return
        self.send(response, response_destination(via, transport))

    def _send_udp(self, data: bytes, dest: Address, port: Any = None) -> None:
        if port is None:
            port = self.udp
        if port is None:
            log.warn("no UDP socket to send to {dest}", dest=str(dest))
            return
        if len(data) > MAX_DATAGRAM:
            log.warn("message of {size} bytes does not fit a datagram", size=len(data))
            return
        try:
            port.write(data, (dest.host, dest.port))
        except (OSError, ValueError) as err:
            # ValueError: a host name where an IP literal is needed; names are resolved
            # above this layer (RFC 3263), so this is a routing bug, not a crash.
            log.warn("UDP send to {dest} failed: {err}", dest=str(dest), err=err)
            return
        if self.tracer is not None:
            self.tracer("out", data, self.local_address("UDP"), dest)

    def _write(self, stream: _Stream, data: bytes, dest: Address) -> None:
        stream.write(data)
        if self.tracer is not None:
            self.tracer("out", data, self.local_address(stream.transport_name), dest)


#: Socket buffers asked for (the kernel caps them at net.core.[rw]mem_max): a burst
#: of datagrams waits in the kernel instead of being dropped while a callback runs.
UDP_BUFFER = 4 * 1024 * 1024


#: Most datagrams held back during one read burst (see _Bursts): at ~40 µs of work per
#: request this delays a response by at most about 1 ms.
BURST = 24
#: Linux's value (asm-generic, x86, arm): Python 3.11's socket module does not name it.
SO_TIMESTAMP: int = getattr(socket, "SO_TIMESTAMP", 29)
#: SO_TIMESTAMP's control message: a struct timeval (SCM_TIMESTAMP == SO_TIMESTAMP).
_TIMEVAL = struct.Struct("@ll")
_STAMP_SPACE = socket.CMSG_SPACE(_TIMEVAL.size)
#: Datagrams a stale read never drops: responses, and ACKs (nothing retransmits an ACK
#: on its own; a lost one costs the far end a round of final-response retransmissions).
_NEVER_STALE = (b"SIP/", b"ACK ")


#: Host texts known to be IP literals, per address family (bounded: they come from
#: Via headers and bindings).
_LITERALS: dict[int, dict[str, bool]] = {socket.AF_INET: {}, socket.AF_INET6: {}}
_LITERALS_MAX = 4096


def _check_literal(host: str, family: int) -> None:
    """ValueError unless `host` is an IP literal of `family`: `sendto` would otherwise
    resolve a name, blocking the reactor (names are resolved above, RFC 3263)."""
    known = _LITERALS[family]
    if host in known:
        return
    try:
        socket.inet_pton(family, host.split("%", 1)[0] if family == socket.AF_INET6 else host)
    except (OSError, ValueError):
        raise ValueError(f"{host!r} is not an IP address of this socket's family") from None
    if len(known) >= _LITERALS_MAX:
        known.clear()
    known[host] = True


class _Bursts:
    """The UDP port's reads and writes, done here (compiled) rather than by Twisted's
    `udp.Port`; what the handlers of one read burst send goes out after it.

    Twisted's `Port.doRead` and `Port.write` are interpreted Python, and `write`
    checks the address with three more Python calls: measured, 10.2 against 6.1 µs per
    datagram for the socket's own `sendto`. Here the reactor's `doRead` reads every
    datagram waiting on the socket (up to the port's `maxThroughput` bytes, as
    Twisted does) and hands each to the port's protocol; what our handlers write to
    that port meanwhile is held (up to `BURST` datagrams) and written when the burst
    ends. Why hold: on loopback, and in VMs, `sendto` runs the receiver's wake-up; a
    peer woken by the first datagram of a burst is still awake for the rest. Measured
    (perf, one worker at 12,000 REGISTER/s): the wake-ups were a fifth of the proxy's
    CPU. Outside a burst (timers, other transports), writes go out at once.

    With an overload guard that wants it, the first datagram of each burst is read with
    its kernel receive time (SO_TIMESTAMP): how long it waited is how far behind the
    socket's queue is (`OverloadGuard.queue_delay`). One `recvmsg` per burst, unless
    that datagram waited longer than the guard's `max_request_age`: then each
    datagram is read with its time until one is younger, and the older requests are
    dropped unread (`OverloadGuard.dropped_stale`; their senders have retransmitted
    them, and the copies are queued behind).
    """

    __slots__ = ("port", "sock", "family", "held", "guard", "now")

    def __init__(
        self, port: Any, guard: OverloadGuard | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.port = port
        self.sock: socket.socket = port.socket
        self.family: int = self.sock.family
        self.held: list[tuple[bytes, tuple[str, int]]] | None = None
        self.guard: OverloadGuard | None = None
        #: The clock of the kernel's timestamps (CLOCK_REALTIME); tests pass their own.
        self.now = now
        if guard is not None and (guard.max_queue_delay > 0 or guard.max_request_age > 0):
            self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMP, 1)
            self.guard = guard
        # The reactor calls port.doRead() and we call port.write(): both go through here.
        port.doRead = self.do_read
        port.write = self.send

    def do_read(self) -> None:
        self.held = []
        try:
            self.read()
        finally:
            held, self.held = self.held, None
            self.flush(held)

    def read(self) -> None:
        port = self.port
        sock = self.sock
        deliver = port.protocol.datagramReceived
        size: int = port.maxPacketSize
        budget: int = port.maxThroughput
        trim = self.family == socket.AF_INET6
        done = 0
        guard = self.guard
        # Stamped reads: the burst's first datagram, then every one while they are
        # older than max_request_age (FIFO: once one is younger, so is the rest).
        stamp = guard is not None
        first = True
        max_age = guard.max_request_age if guard is not None else 0.0
        while done < budget:
            try:
                if stamp and guard is not None:
                    data, ancillary, _flags, addr = sock.recvmsg(size, _STAMP_SPACE)
                    waited = self._waited(ancillary)
                    if first:
                        first = False
                        guard.queue_delay = waited
                    if 0.0 < max_age < waited:
                        if not data.startswith(_NEVER_STALE):
                            done += len(data)
                            guard.dropped_stale(waited)
                            continue
                    else:
                        stamp = False
                else:
                    data, addr = sock.recvfrom(size)
            except BlockingIOError:
                if first and guard is not None:
                    guard.queue_delay = 0.0  # nothing queued at all
                return  # all read
            except InterruptedError:
                continue
            except ConnectionRefusedError:
                return  # an ICMP error for an earlier send: nothing to read
            done += len(data)
            if trim:
                addr = addr[:2]  # without flow info and scope id
            try:
                deliver(data, addr)
            except Exception:
                log.failure("UDP datagram handler failed")

    def _waited(self, ancillary: list[tuple[int, int, bytes]]) -> float:
        """Seconds the datagram with this ancillary data waited in the kernel."""
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMP:
                seconds, micro = _TIMEVAL.unpack_from(payload)
                return max(0.0, self.now() - (seconds + micro / 1e6))
        return 0.0

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        held = self.held
        if held is None:
            self.write(data, addr)
            return
        held.append((data, addr))
        if len(held) >= BURST:
            self.held = []
            self.flush(held)

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        _check_literal(addr[0], self.family)
        try:
            self.sock.sendto(data, addr)
        except InterruptedError:
            self.sock.sendto(data, addr)
        except ConnectionRefusedError:
            pass  # an ICMP error for an earlier datagram; an unconnected socket ignores it

    def flush(self, held: list[tuple[bytes, tuple[str, int]]] | None) -> None:
        for data, addr in held or ():
            try:
                self.write(data, addr)
            except (OSError, ValueError) as err:
                # As _send_udp would have logged it, had the write not been held.
                log.warn("UDP send to {host}:{port} failed: {err}", host=addr[0],
                         port=addr[1], err=err)


def _grow_buffers(port: object) -> None:
    sock = getattr(port, "socket", None)
    if sock is None:
        return
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, UDP_BUFFER)
        except OSError:
            pass  # a smaller buffer still works


def _reuse_socket(kind: int, interface: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setblocking(False)
        sock.bind((interface, port))
    except OSError:
        sock.close()
        raise
    return sock


def _adopt_udp(
    reactor: object, interface: str, port: int, proto: object, group: int = 0
) -> Any:
    """A UDP port shared with the other workers (SO_REUSEPORT): the kernel spreads
    datagrams over them by source address, so one client's retransmissions and its
    CANCEL reach the worker holding its transaction. With `group` (how many share it)
    the spread is by source port, even over few flows (sipcore.twisted.reuseport)."""
    sock = _reuse_socket(socket.SOCK_DGRAM, interface, port)
    try:
        if group > 1:
            try:
                spread_by_source_port(sock, group)
            except OSError as err:
                log.warn("UDP port {port}: spread over workers by the kernel's hash "
                         "({err})", port=port, err=err)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, UDP_BUFFER)
            except OSError:
                pass
        return reactor.adoptDatagramPort(  # type: ignore[attr-defined]
            sock.fileno(), sock.family, proto
        )
    finally:
        sock.close()  # Twisted holds its own duplicate of the descriptor


def _adopt_tcp(reactor: object, interface: str, port: int, factory: object) -> Any:
    sock = _reuse_socket(socket.SOCK_STREAM, interface, port)
    try:
        sock.listen(1024)
        return reactor.adoptStreamPort(  # type: ignore[attr-defined]
            sock.fileno(), sock.family, factory
        )
    finally:
        sock.close()


def _first_line(message: Message) -> str:
    if isinstance(message, Request):
        return f"{message.method} {message.uri} cseq={message.headers.get('CSeq')}"
    response: Any = message
    return f"{response.status} {response.reason} cseq={message.headers.get('CSeq')}"
