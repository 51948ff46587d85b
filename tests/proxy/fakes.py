"""Hand-written fakes for driving `ProxyRole` and `ResponseContext` without sockets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twisted.internet import task

from sipcore.message import Request, Response, make_response, parse
from sipcore.transaction import State, Timers
from sipcore.twisted.transport import Address


class FakeServerTx:
    """Records what the TU sends; state moves like the real server transactions."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.sent: list[Response] = []
        self.final_response: Response | None = None
        self.state = State.PROCEEDING if request.method == "INVITE" else State.TRYING

    def send_response(self, response: Response) -> None:
        if self.final_response is not None and not (
            self.state is State.ACCEPTED and 200 <= response.status < 300
        ):
            return  # discarded, as the real transactions do
        self.sent.append(response)
        if response.status >= 200:
            self.final_response = response
            self.state = State.ACCEPTED if response.status < 300 else State.COMPLETED

    @property
    def statuses(self) -> list[int]:
        return [r.status for r in self.sent]


@dataclass
class FakeClientTx:
    request: Request
    dest: Address
    tu: Any


@dataclass
class FakeEndpoint:
    interface: str = "127.0.0.1"
    port: int = 5060


@dataclass
class FakeStack:
    """What `ProxyRole` uses of `SipStack`."""

    endpoint: FakeEndpoint = field(default_factory=FakeEndpoint)
    requests: list[FakeClientTx] = field(default_factory=list)
    stateless: list[tuple[Any, Any]] = field(default_factory=list)

    def send_request(self, request: Request, dest: Address, tu: Any) -> FakeClientTx:
        tx = FakeClientTx(request, dest, tu)
        self.requests.append(tx)
        return tx

    def send_stateless(self, message: Any, dest: Address) -> None:
        self.stateless.append((message, dest))

    def send_response_stateless(self, response: Response, source: Any = None) -> None:
        self.stateless.append((response, source))

    def sent(self, method: str) -> list[FakeClientTx]:
        return [tx for tx in self.requests if tx.request.method == method]


def request(text: str) -> Request:
    message = parse(text.strip("\n").replace("\n", "\r\n").encode() + b"\r\n\r\n")
    assert isinstance(message, Request)
    return message


def invite(
    uri: str = "sip:bob@a.lab", *, via: str = "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKc1",
    extra: str = "", method: str = "INVITE", to_tag: str = "", from_: str = "sip:alice@a.lab",
) -> Request:
    to = f"<sip:bob@a.lab>{';tag=' + to_tag if to_tag else ''}"
    head = (
        f"{method} {uri} SIP/2.0\nVia: {via}\nFrom: <{from_}>;tag=f1\nTo: {to}\n"
        f"Call-ID: call-1\nCSeq: 1 {method}\nMax-Forwards: 70\n"
        "Contact: <sip:alice@10.0.0.1:5070>\n"
    )
    return request(head + extra)


def answer(tx: FakeClientTx, status: int, to_tag: str = "t1", **headers: str) -> Response:
    """The downstream element's response to a request the proxy sent."""
    response = make_response(tx.request, status, to_tag=to_tag if status > 100 else None)
    for name, value in headers.items():
        response.headers.add(name.replace("_", "-"), value)
    return response


class FakeEnv:
    """A `ForkEnv` recording branches, CANCELs and responses sent upstream."""

    def __init__(self, clock: task.Clock | None = None) -> None:
        self.clock = clock or task.Clock()
        self.timers = Timers()
        self.branches: list[Any] = []
        self.cancelled: list[Any] = []
        self.upstream: list[Response] = []
        # What each branch sent, kept here: a settled context drops its own copies.
        self.sent: dict[Any, Request] = {}

    def send_branch(self, branch: Any) -> None:
        branch.request = branch.context.request.copy()
        branch.request.uri = branch.target.uri
        self.sent[branch] = branch.request
        self.branches.append(branch)
        branch.sent(object())

    def send_cancel(self, branch: Any) -> None:
        self.cancelled.append(branch)

    def forward_response(self, context: Any, response: Response) -> None:
        self.upstream.append(response)

    @property
    def statuses(self) -> list[int]:
        return [r.status for r in self.upstream]
