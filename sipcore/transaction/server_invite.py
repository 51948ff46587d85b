# -*- test-case-name: tests.sipcore.test_transaction_server -*-
"""INVITE server transaction: RFC 3261 §17.2.1 (Figure 7) as updated by RFC 6026 §8.5-8.7.

State table (every transition of this machine is in this file):

=========== ============================ ============ =====================================
state       event                        next         actions
=========== ============================ ============ =====================================
(created)                                Proceeding   start the 100 Trying timer (200 ms)
Proceeding  100 Trying timer             Proceeding   send 100 Trying (no 1xx/final yet)
Proceeding  INVITE (retransmission)      Proceeding   resend the last provisional, if any
Proceeding  TU sends 1xx                 Proceeding   send it
Proceeding  TU sends 2xx                 Accepted     send it; start L (RFC 6026)
Proceeding  TU sends 300-699             Completed    send it; start G (unreliable), H
Completed   INVITE (retransmission)      Completed    resend the final response
Completed   Timer G                      Completed    resend the final response;
                                                      G = min(2*G, T2)
Completed   Timer H                      Terminated   tu.timed_out (no ACK came)
Completed   ACK                          Confirmed    stop G, H; start I
Confirmed   ACK / INVITE                 Confirmed    absorbed
Confirmed   Timer I                      Terminated
Accepted    INVITE (retransmission)      Accepted     absorbed (RFC 6026 §8.7)
Accepted    TU sends 2xx (retransmit)    Accepted     send it (RFC 6026 §8.6)
Accepted    ACK                          Accepted     tu.ack_received (RFC 6026 §8.7)
Accepted    Timer L                      Terminated
Accepted    (retired by a proxy's table) Terminated   the table absorbs until Timer L
any         transport error              Terminated   tu.transport_failed
=========== ============================ ============ =====================================

Responses the TU passes in other states (a 1xx after the final response, a second
non-2xx, anything in Terminated) are discarded, as §17.2.2 prescribes for the non-INVITE
case; a TU that needs to know can look at :attr:`state` first.

The ACK for a 2xx carries a new branch (§8.1.1.7), so with RFC 3261 peers it matches no
transaction and goes to the TU (dialog layer) directly; ``ack_received`` sees the ACKs that
do match an Accepted transaction (RFC 2543 peers, or peers reusing the INVITE branch).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sipcore.message import make_response

from .base import Clock, State, Transaction
from .keys import server_key
from .sent import SentResponse
from .timers import DEFAULT_TIMERS, TRYING_DELAY, Timers

if TYPE_CHECKING:
    from sipcore.message import Request, Response

__all__ = ["ServerInviteTransaction"]

log = logging.getLogger("sipcore.transaction")


class ServerInviteTransaction(Transaction):
    """Answers one INVITE; see the table in the module docstring.

    Created (in Proceeding) for a new INVITE; the creator hands the INVITE to the TU. The
    TU answers with :meth:`send_response`; the transport layer feeds INVITE
    retransmissions and ACKs to :meth:`receive_request`. ``tu`` gets
    ``ack_received(tx, ack)``, ``timed_out(tx)`` (Timer H), ``transport_failed(tx)`` and
    finally ``terminated(tx)``.

    ``trying_delay``: §17.2.1 says the transaction MUST send a 100 Trying when the TU has
    not sent a response within 200 ms. ``None`` switches that off for a TU that always
    answers at once (e.g. a proxy that sends 100 itself, §16.2).
    """

    __slots__ = ("last_provisional", "final_response", "_timer_g")

    initial_state = State.PROCEEDING

    @staticmethod
    def _make_key(request: Request) -> tuple[Any, ...]:  # mypyc: no staticmethod(f) override
        return server_key(request)

    @staticmethod
    def _accepts(method: str) -> bool:
        return method == "INVITE"

    def __init__(
        self,
        request: Request,
        send: Callable[[Any], None],
        tu: Any,
        clock: Clock,
        timers: Timers = DEFAULT_TIMERS,
        reliable: bool = False,
        trying_delay: float | None = TRYING_DELAY,
    ) -> None:
        super().__init__(request, send, tu, clock, timers, reliable)
        if trying_delay is not None:
            self._start("Trying", trying_delay, self._send_trying)

    def _setup(self) -> None:
        #: The most recent provisional response sent (by the TU or our own 100 Trying).
        self.last_provisional: Response | None = None
        #: The final response sent (the latest 2xx retransmission while Accepted).
        self.final_response: Response | None = None
        self._timer_g = self.timers.g

    # -- from the TU --------------------------------------------------------------------
    def send_response(self, response: Response) -> None:
        """Send a response from the TU, moving the state machine as the table says."""
        status = response.status
        state = self.state
        if state is State.PROCEEDING:
            self._cancel("Trying")  # the TU answered; no 100 needed
            if status < 200:
                self.last_provisional = response
                self._transmit(response)
            elif status < 300:
                # RFC 6026 §8.5: stay around (Accepted) instead of terminating, so that
                # INVITE retransmissions are absorbed rather than seen as new requests.
                sent = self.final_response = SentResponse(response)
                self.state = State.ACCEPTED
                if self._transmit(sent):
                    sent.settle()
                    # A proxy's table takes over absorbing (TransactionTable.retire).
                    if not self._retire(b"", self.timers.l):
                        self._linger("L", self.timers.l)
            else:
                # Completed resends these bytes (Timer G, INVITE retransmissions):
                # keep them, not the parsed response.
                sent = self.final_response = SentResponse(response)
                self.state = State.COMPLETED
                if self._transmit(sent):
                    sent.settle()
                    self._mark_lingering()
                    self._slim()
                    if self._timer_g is not None:  # unreliable transport only
                        self._start("G", self._timer_g, self._on_timer_g)
                    self._start("H", self.timers.h, self._time_out)
        elif state is State.ACCEPTED and 200 <= status < 300:
            # RFC 6026 §8.6: the UAS core retransmits its 2xx (§13.3.1.4) through us.
            sent = self.final_response = SentResponse(response)
            if self._transmit(sent):
                sent.settle()
        else:
            log.debug("%r: discarding %d from the TU", self, status)

    def _slim(self) -> None:
        # Completed, Confirmed and Accepted resend final_response's bytes, pass ACKs to
        # the TU (Accepted) or absorb them; the INVITE itself is no longer needed. The
        # RFC 2543 ACK key the table may need was computed when it filed us.
        self.request = None
        self.last_provisional = None

    # -- from the transport -------------------------------------------------------------
    def receive_request(self, request: Request) -> None:
        """An INVITE retransmission or an ACK that the table matched to us (§17.2.3)."""
        state = self.state
        if request.method == "ACK":
            if state is State.COMPLETED:
                # §17.2.1: the ACK for our non-2xx arrived; stop retransmitting and
                # linger for Timer I to absorb ACK retransmissions (zero when reliable).
                self._cancel("G", "H")
                self.state = State.CONFIRMED
                self._wait_then_terminate("I", self.timers.i)
            elif state is State.ACCEPTED:
                self.tu.ack_received(self, request)
            # Confirmed absorbs ACK retransmissions; elsewhere an ACK is out of place.
        elif request.method == "INVITE":
            if state is State.PROCEEDING:
                # §17.2.1: resend the most recent provisional so the client stops.
                if self.last_provisional is not None:
                    self._transmit(self.last_provisional)
            elif state is State.COMPLETED:
                assert self.final_response is not None
                self._transmit(self.final_response)
            # Accepted (RFC 6026 §8.7) and Confirmed absorb retransmissions.

    # -- timers -------------------------------------------------------------------------
    def _send_trying(self) -> None:
        if self.state is State.PROCEEDING and self.last_provisional is None:
            assert self.request is not None  # only dropped on leaving Proceeding
            self.last_provisional = make_response(self.request, 100)
            self._transmit(self.last_provisional)

    def _on_timer_g(self) -> None:
        # §17.2.1: resend the final response and double G, capped at T2.
        assert self._timer_g is not None and self.final_response is not None
        if self._transmit(self.final_response):
            self._timer_g = min(2 * self._timer_g, self.timers.t2)
            self._start("G", self._timer_g, self._on_timer_g)
