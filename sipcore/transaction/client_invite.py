# -*- test-case-name: tests.sipcore.test_transaction_client -*-
"""INVITE client transaction: RFC 3261 §17.1.1 (Figure 5) as updated by RFC 6026 §8.4.

State table (every transition of this machine is in this file):

=========== ============================= ============ ====================================
state       event                         next         actions
=========== ============================= ============ ====================================
Calling     start()                       Calling      send INVITE; start A (unreliable), B
Calling     Timer A                       Calling      resend INVITE; A = 2*A
Calling     Timer B                       Terminated   tu.timed_out
Calling     1xx                           Proceeding   stop A, B; tu.response_received
Calling/    2xx                           Accepted     stop A, B; tu.response_received;
Proceeding                                             start M (RFC 6026)
Calling/    300-699                       Completed    stop A, B; tu.response_received;
Proceeding                                             send ACK; start D
Proceeding  1xx                           Proceeding   tu.response_received
Completed   300-699 (retransmission)      Completed    resend ACK (not passed up)
Completed   Timer D                       Terminated
Accepted    2xx (retransmission or fork)  Accepted     tu.response_received (RFC 6026 §8.4)
Accepted    Timer M                       Terminated
Accepted    (retired by a proxy's table)  Terminated   the table passes 2xx to its owner
any         transport error               Terminated   tu.transport_failed
=========== ============================= ============ ====================================

Anything not in the table (a 1xx after a final response, a non-2xx in Accepted, any
response in Terminated) is discarded.

Timer B only runs in Calling: once a provisional arrives the INVITE may legitimately stay
unanswered for minutes; bounding that is the TU's job (Timer C, §16.6 step 11, or the
UAC's own patience).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sipcore.message import Headers, Request

from .base import State, Transaction
from .keys import client_key

if TYPE_CHECKING:
    from sipcore.message import Response

__all__ = ["ClientInviteTransaction", "build_non_2xx_ack"]


def build_non_2xx_ack(request: Request, response: Response) -> Request:
    """The ACK for a 300-699 response to ``request``, per §17.1.1.3.

    Same Request-URI, Call-ID, From and CSeq number as the INVITE; only its top Via
    (so the ACK has the INVITE's branch and reaches the same server transaction); To from
    the response, which carries the tag the UAS added; the INVITE's Route headers (the ACK
    must follow the INVITE's path); CSeq method ACK. No body.
    """
    headers = Headers()
    headers.add("Via", request.headers.get_all("Via")[0])
    for route in request.headers.get_all("Route"):
        headers.add("Route", route)
    headers.add("Max-Forwards", "70")
    headers.add("From", _required(request, "From"))
    headers.add("To", _required(response, "To"))
    headers.add("Call-ID", _required(request, "Call-ID"))
    headers.add("CSeq", f"{request.cseq.number} ACK")
    return Request("ACK", request.uri, headers)


def _required(message: Request | Response, name: str) -> str:
    value = message.headers.get(name)
    if value is None:  # the transport layer drops such messages (§18.1.2, §18.2.1)
        raise ValueError(f"message has no {name} header")
    return value


class ClientInviteTransaction(Transaction):
    """Sends an INVITE and handles its responses; see the table in the module docstring.

    ``tu`` gets ``response_received(tx, resp)`` for every response that is passed up,
    ``timed_out(tx)`` (Timer B), ``transport_failed(tx)`` and finally ``terminated(tx)``.
    The ACK for a 2xx is the TU's business (§13.2.2.4); the ACK for 300-699 is built and
    sent here and is available as :attr:`ack`.
    """

    __slots__ = ("_started", "_timer_a", "ack")

    initial_state = State.CALLING

    @staticmethod
    def _make_key(request: Request) -> tuple[Any, ...]:  # mypyc: no staticmethod(f) override
        return client_key(request)

    @staticmethod
    def _accepts(method: str) -> bool:
        return method == "INVITE"

    def _setup(self) -> None:
        self._started = False
        self._timer_a = self.timers.a
        #: The ACK this transaction sent for a 300-699 response, once there is one.
        self.ack: Request | None = None

    def start(self) -> None:
        """Send the INVITE (§17.1.1.2: "Calling" is entered with the request sent)."""
        if self._started:
            raise RuntimeError(f"{self!r} already started")
        self._started = True
        if self.request is None or not self._transmit(self.request):
            return
        if self._timer_a is not None:  # unreliable transport only
            self._start("A", self._timer_a, self._on_timer_a)
        self._start("B", self.timers.b, self._time_out)

    def receive_response(self, response: Response) -> None:
        """A response the table matched to this transaction (§17.1.3)."""
        status = response.status
        state = self.state
        if state is State.CALLING or state is State.PROCEEDING:
            if status < 200:
                self._cancel("A", "B")
                self.state = State.PROCEEDING
                self.tu.response_received(self, response)
            elif status < 300:
                # RFC 6026 §8.4: wait in Accepted so that 2xx retransmissions and 2xx
                # from other forks still reach the TU, which ACKs each one (§13.2.2.4).
                self._cancel("A", "B")
                self.state = State.ACCEPTED
                self.tu.response_received(self, response)
                # A proxy's table takes over (TransactionTable.retire): later 2xx reach
                # the proxy as strays, which it forwards statelessly all the same.
                if self.state is State.ACCEPTED and not self._retire(b"", self.timers.m):
                    self._linger("M", self.timers.m)
            else:
                self._cancel("A", "B")
                self.state = State.COMPLETED
                self.tu.response_received(self, response)
                if self.state is State.COMPLETED:  # the TU did not end us meanwhile
                    assert self.request is not None
                    self.ack = build_non_2xx_ack(self.request, response)
                    if self._transmit(self.ack):
                        self._wait_then_terminate("D", self.timers.d)
        elif state is State.COMPLETED:
            if status >= 300 and self.ack is not None:
                # §17.1.1.2: a retransmitted final response means our ACK was lost.
                self._transmit(self.ack)
        elif state is State.ACCEPTED:
            if 200 <= status < 300:
                self.tu.response_received(self, response)

    def release_request(self) -> None:
        """The TU builds no dialog from a later 2xx (a proxy): drop the INVITE now.

        Accepted keeps it for a UA core only (RFC 6026 §8.4, see `_slim`); a proxy
        forwards late 2xx statelessly by their Via and has no use for it.
        """
        if self.state is State.ACCEPTED:
            self.request = None

    def _slim(self) -> None:
        # Completed only resends the ACK. Accepted keeps the INVITE: the TU builds a
        # dialog from it for each 2xx that still arrives (RFC 6026 §8.4, forking).
        if self.state is State.COMPLETED:
            self.request = None

    def _on_timer_a(self) -> None:
        # §17.1.1.2: "the client transaction MUST retransmit the request ... and reset
        # the timer with a value of 2*T1" - the interval doubles every time, uncapped;
        # Timer B ends it.
        assert self._timer_a is not None
        if self.request is not None and self._transmit(self.request):
            self._timer_a *= 2
            self._start("A", self._timer_a, self._on_timer_a)
