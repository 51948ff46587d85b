# -*- test-case-name: tests.sipcore.test_transaction_client -*-
"""Non-INVITE client transaction: RFC 3261 §17.1.2 (Figure 6).

State table (every transition of this machine is in this file):

=========== ===================== ============ ==========================================
state       event                 next         actions
=========== ===================== ============ ==========================================
Trying      start()               Trying       send request; start E (unreliable), F
Trying      Timer E               Trying       resend request; E = min(2*E, T2)
Proceeding  Timer E               Proceeding   resend request; E = T2
Trying/     Timer F               Terminated   tu.timed_out
Proceeding
Trying/     1xx                   Proceeding   tu.response_received
Proceeding
Trying/     200-699               Completed    stop E, F; tu.response_received; start K
Proceeding
Completed   any response          Completed    absorbed (retransmissions)
Completed   Timer K               Terminated
Completed   (table takes over)    Terminated   the table absorbs until Timer K
any         transport error       Terminated   tu.transport_failed
=========== ===================== ============ ==========================================

Unlike INVITE, a provisional does not stop the retransmissions or Timer F: non-INVITE
transactions must finish within 64*T1 whatever happens (§17.1.2.2; RFC 4320 explains why).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import State, Transaction
from .keys import client_key

if TYPE_CHECKING:
    from sipcore.message import Request, Response

__all__ = ["ClientNonInviteTransaction"]


class ClientNonInviteTransaction(Transaction):
    """Sends a request other than INVITE or ACK and handles its responses.

    ``tu`` gets ``response_received(tx, resp)`` for each provisional and the first final
    response, ``timed_out(tx)`` (Timer F), ``transport_failed(tx)`` and finally
    ``terminated(tx)``.
    """

    __slots__ = ("_started", "_timer_e")

    initial_state = State.TRYING

    @staticmethod
    def _make_key(request: Request) -> tuple[Any, ...]:  # mypyc: no staticmethod(f) override
        return client_key(request)

    @staticmethod
    def _accepts(method: str) -> bool:
        # §17.1: ACK is not a transaction of its own (for 2xx the TU sends it directly,
        # for 300-699 the INVITE client transaction does).
        return method not in ("INVITE", "ACK")

    def _setup(self) -> None:
        self._started = False
        self._timer_e = self.timers.e

    def start(self) -> None:
        """Send the request (§17.1.2.2: "Trying" is entered with the request sent)."""
        if self._started:
            raise RuntimeError(f"{self!r} already started")
        self._started = True
        if self.request is None or not self._transmit(self.request):
            return
        if self._timer_e is not None:  # unreliable transport only
            self._start("E", self._timer_e, self._on_timer_e)
        self._start("F", self.timers.f, self._time_out)

    def receive_response(self, response: Response) -> None:
        """A response the table matched to this transaction (§17.1.3)."""
        state = self.state
        if state is not State.TRYING and state is not State.PROCEEDING:
            return  # Completed absorbs retransmissions; Terminated ignores everything
        if response.status < 200:
            self.state = State.PROCEEDING
            self.tu.response_received(self, response)
        else:
            self._cancel("E", "F")
            self.state = State.COMPLETED
            self.tu.response_received(self, response)
            if self.state is State.COMPLETED:  # the TU did not end us meanwhile
                # Timer K: linger T4 to absorb response retransmissions (§17.1.2.2); on
                # a reliable transport there are none, so K is zero. The table can
                # absorb them itself (TransactionTable.retire): then we end now, and
                # so does what our TU held for us (a proxy's whole response context).
                if not self._retire(b"", self.timers.k):
                    self._wait_then_terminate("K", self.timers.k)

    def _slim(self) -> None:
        # Completed absorbs response retransmissions and never sends again.
        self.request = None

    def _on_timer_e(self) -> None:
        assert self._timer_e is not None
        if self.request is None or not self._transmit(self.request):
            return
        if self.state is State.PROCEEDING:
            # §17.1.2.2: in Proceeding, E is reset to T2 (a provisional shows the server
            # got the request, so back off to the slowest rate at once).
            self._timer_e = self.timers.t2
        else:
            # §17.1.2.2: in Trying, E doubles up to T2.
            self._timer_e = min(2 * self._timer_e, self.timers.t2)
        self._start("E", self._timer_e, self._on_timer_e)
