"""A simulated UDP network for user-agent tests: real SipStacks, fake sockets, one Clock.

Every role sits on a real :class:`SipStack` (so transactions, matching and timers are the
production code) whose endpoint is swapped for a :class:`FakeEndpoint`. A datagram is
serialised, delivered 10 ms later on the shared ``task.Clock`` and parsed again, so what
the peer sees is exactly what went on the wire. Tests can look at ``net.wire`` and drop
messages with ``net.drop``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.task import Clock

from client.media_hook import MediaOptions
from client.ua import UAConfig, UserAgent
from sipcore.message import Message, Request, Response, parse
from sipcore.twisted.stack import SipStack
from sipcore.twisted.transport import Address, response_destination, stamp_received

LATENCY = 0.01


class FakeNet:
    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.endpoints: dict[tuple[str, int], FakeEndpoint] = {}
        #: (source, destination, message as parsed at the receiver) in delivery order.
        self.wire: list[tuple[Address, Address, Message]] = []
        #: Return True to lose a datagram (decided when it is sent).
        self.drop: Callable[[Message], bool] | None = None

    def attach(self, role: Any, host: str, port: int) -> SipStack:
        stack = SipStack(self.clock, role)
        endpoint = FakeEndpoint(self, stack, host, port)
        stack.endpoint = endpoint  # an `Endpoint` (sipcore.twisted.stack)
        self.endpoints[(host, port)] = endpoint
        role.stack = stack
        return stack

    def send(self, src: Address, dst: Address, message: Message) -> None:
        if self.drop is not None and self.drop(message):
            return
        self.clock.callLater(LATENCY, self._arrive, src, dst, message.serialise())

    def _arrive(self, src: Address, dst: Address, data: bytes) -> None:
        endpoint = self.endpoints.get((dst.host, dst.port))
        message = parse(data)
        self.wire.append((src, dst, message))
        if endpoint is None:
            return
        if isinstance(message, Request):
            stamp_received(message, src)
        endpoint.stack.message_received(message, src)

    def run(self, seconds: float, step: float = LATENCY) -> None:
        """Advance the clock in small steps so chains of messages can play out."""
        steps = int(round(seconds / step))
        for _ in range(steps):
            self.clock.advance(step)

    # -- inspection ------------------------------------------------------------------------
    def requests(self, method: str) -> list[Request]:
        return [m for _, _, m in self.wire if isinstance(m, Request) and m.method == method]

    def responses(self, status: int | None = None, method: str | None = None) -> list[Response]:
        return [
            m for _, _, m in self.wire
            if isinstance(m, Response)
            and (status is None or m.status == status)
            and (method is None or m.cseq.method == method)
        ]


class FakeEndpoint:
    def __init__(self, net: FakeNet, stack: SipStack, host: str, port: int) -> None:
        self.net = net
        self.stack = stack
        self.interface = host
        self.port = port
        self.tls_port: int | None = None
        self.protection = None  # no overload shedding in these tests

    def local_address(self, transport: str = "UDP") -> Address:
        return Address("UDP", self.interface, self.port)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def send(self, message: Message, dest: Address, on_error: Any = None) -> None:
        self.net.send(self.local_address(), dest, message)

    def send_response(self, response: Response, source: Address | None = None) -> None:
        self.send(response, response_destination(response.top_via))


class FakeMedia:
    """Records what the UA asks of its media session."""

    next_port = 40000

    def __init__(self, reactor: Any, interface: str, options: MediaOptions) -> None:
        FakeMedia.next_port += 2
        self.local_port = FakeMedia.next_port
        self.calls: list[tuple[str, Any]] = []
        self.direction: str | None = None
        self.stopped = False

    def start(self, local_rtp_port: int, remote_addr: str, remote_port: int, codec: Any,
              direction: str, **kw: Any) -> None:
        self.direction = direction
        self.calls.append(("start", (remote_addr, remote_port, codec.name, direction)))

    def update(self, direction: str | None = None, remote_addr: str | None = None,
               remote_port: int | None = None, codec: Any = None) -> None:
        if direction is not None:
            self.direction = direction
        self.calls.append(("update", direction))

    def stop(self) -> None:
        self.stopped = True

    def stats(self) -> dict[str, Any]:
        return {}


class Phone:
    """A UserAgent on the fake network with the lines it printed."""

    def __init__(self, net: FakeNet, user: str, port: int, proxy_port: int,
                 rng: Any = None, **config: Any) -> None:
        self.lines: list[str] = []
        config.setdefault("register", False)
        self.ua = UserAgent(
            UAConfig(domain="a.lab", user=user,
                     proxy=Address("UDP", "127.0.0.1", proxy_port), **config),
            net.clock, self.lines.append, media_factory=FakeMedia, rng=rng,
        )
        self.stack = net.attach(self.ua, "127.0.0.1", port)
        self.address = Address("UDP", "127.0.0.1", port)

    def has(self, line: str) -> bool:
        return line in self.lines
