"""Fakes and message builders shared by the transaction tests.

Hand-written fakes rather than mocks: :class:`Wire` stands for the transport's ``send``
and :class:`RecordingTU` records every callback, so each test can assert exactly what
went on the wire and what the TU saw after each ``clock.advance()``.
"""

from __future__ import annotations

from typing import Any

from sipcore.message import Request, Response, make_response, parse
from sipcore.twisted.stack import SipStack
from sipcore.twisted.transport import SipEndpoint


class Wire:
    """The ``send`` callable: records messages; raises ``fail`` when set."""

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.fail: OSError | None = None

    def __call__(self, message: Any) -> None:
        if self.fail is not None:
            raise self.fail
        self.sent.append(message)

    def take(self) -> list[Any]:
        """The messages sent since the last ``take()``."""
        sent, self.sent = self.sent, []
        return sent


class _UdpPort:
    """Stands in for a `SipEndpoint`'s UDP socket: keeps the responses written to it."""

    def __init__(self, responses: list[Response]) -> None:
        self.responses = responses

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        message = parse(data)
        if isinstance(message, Response):
            self.responses.append(message)


def responses_on_the_wire(stack: SipStack) -> list[Response]:
    """The responses ``stack``'s (unstarted) endpoint sends over UDP from now on, as
    parsed back from the bytes it writes: whether through a transaction or stateless."""
    endpoint = stack.endpoint
    assert isinstance(endpoint, SipEndpoint)
    sent: list[Response] = []
    endpoint.udp = _UdpPort(sent)
    return sent


class RecordingTU:
    """A TU for both client and server transactions that records every callback."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def response_received(self, tx: Any, response: Response) -> None:
        self.events.append(("response_received", response))

    def ack_received(self, tx: Any, ack: Request) -> None:
        self.events.append(("ack_received", ack))

    def timed_out(self, tx: Any) -> None:
        self.events.append(("timed_out", None))

    def transport_failed(self, tx: Any) -> None:
        self.events.append(("transport_failed", None))

    def terminated(self, tx: Any) -> None:
        self.events.append(("terminated", None))

    def take(self) -> list[tuple[str, Any]]:
        events, self.events = self.events, []
        return events

    def names(self) -> list[str]:
        """The callback names since the last ``take()``/``names()``, clearing them."""
        return [name for name, _ in self.take()]


def request(
    method: str = "INVITE",
    *,
    branch: str | None = "z9hG4bK74bf9",
    sent_by: str = "pc33.atlanta.com",
    transport: str = "UDP",
    uri: str = "sip:bob@biloxi.com",
    from_tag: str = "9fxced76sl",
    to_tag: str | None = None,
    call_id: str = "3848276298220188511@atlanta.com",
    cseq: int = 1,
    cseq_method: str | None = None,
    extra: str = "",
) -> Request:
    """A request built from literal bytes (RFC 3261 §24.2 style) through ``parse``."""
    via_params = f";branch={branch}" if branch is not None else ""
    to_params = f";tag={to_tag}" if to_tag is not None else ""
    text = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {sent_by}{via_params}\r\n"
        "Max-Forwards: 70\r\n"
        f"To: Bob <sip:bob@biloxi.com>{to_params}\r\n"
        f"From: Alice <sip:alice@atlanta.com>;tag={from_tag}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {cseq_method or method}\r\n"
        "Contact: <sip:alice@pc33.atlanta.com>\r\n"
        f"{extra}"
        "Content-Length: 0\r\n"
        "\r\n"
    )
    message = parse(text.encode())
    assert isinstance(message, Request)
    return message


def response(req: Request, status: int, to_tag: str | None = None) -> Response:
    """The response a UAS would send to ``req`` (§8.2.6.2)."""
    return make_response(req, status, to_tag=to_tag)


def ack_for(req: Request, final: Response) -> Request:
    """The ACK an RFC 3261 client sends for a non-2xx ``final`` (§17.1.1.3)."""
    from sipcore.transaction import build_non_2xx_ack

    return build_non_2xx_ack(req, final)


def statuses(messages: list[Any]) -> list[Any]:
    """Summaries of sent messages: the status of a response, the method of a request."""
    return [m.status if isinstance(m, Response) else m.method for m in messages]


def advance_to(clock: Any, when: float) -> None:
    """Advance ``clock`` to the absolute time ``when``, one due call at a time.

    ``task.Clock.advance(n)`` moves time first and then runs what is due, so a timer
    re-armed by a call during that advance would count from the *end* of it. Stepping
    through each deadline gives the timing a real reactor would.
    """
    while True:
        due = [c.getTime() for c in clock.getDelayedCalls() if c.getTime() <= when]
        if not due:
            break
        clock.advance(min(due) - clock.seconds())
    clock.advance(when - clock.seconds())
