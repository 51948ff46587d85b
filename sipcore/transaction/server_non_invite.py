# -*- test-case-name: tests.sipcore.test_transaction_server -*-
"""Non-INVITE server transaction: RFC 3261 §17.2.2 (Figure 8).

State table (every transition of this machine is in this file):

=========== ========================= ============ ========================================
state       event                     next         actions
=========== ========================= ============ ========================================
(created)                             Trying
Trying      request (retransmission)  Trying       discarded
Trying/     TU sends 1xx              Proceeding   send it
Proceeding
Proceeding  request (retransmission)  Proceeding   resend the last provisional
Trying/     TU sends 200-699          Completed    send it; start J
Proceeding
Completed   request (retransmission)  Completed    resend the final response
Completed   TU sends anything         Completed    discarded (§17.2.2)
Completed   Timer J                   Terminated
Completed   (retired by the table)    Terminated   the table resends until Timer J
any         transport error           Terminated   tu.transport_failed
=========== ========================= ============ ========================================
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .base import State, Transaction
from .keys import server_key
from .sent import SentResponse

if TYPE_CHECKING:
    from sipcore.message import Request, Response

__all__ = ["ServerNonInviteTransaction"]

log = logging.getLogger("sipcore.transaction")


class ServerNonInviteTransaction(Transaction):
    """Answers one request other than INVITE or ACK; see the module docstring's table.

    Created (in Trying) for a new request; the creator hands the request to the TU. ``tu``
    gets ``transport_failed(tx)`` and ``terminated(tx)`` (``timed_out`` and
    ``ack_received`` never happen here: there is no ACK and no timeout in Figure 8).
    """

    __slots__ = ("last_provisional", "final_response")

    initial_state = State.TRYING

    @staticmethod
    def _make_key(request: Request) -> tuple[Any, ...]:  # mypyc: no staticmethod(f) override
        return server_key(request)

    @staticmethod
    def _accepts(method: str) -> bool:
        return method not in ("INVITE", "ACK")

    def _setup(self) -> None:
        #: The most recent provisional response sent.
        self.last_provisional: Response | None = None
        #: The final response sent.
        self.final_response: Response | None = None

    def send_response(self, response: Response) -> None:
        """Send a response from the TU, moving the state machine as the table says."""
        state = self.state
        if state is not State.TRYING and state is not State.PROCEEDING:
            # §17.2.2: "Any other final responses passed by the TU to the server
            # transaction MUST be discarded while in the "Completed" state."
            log.debug("%r: discarding %d from the TU", self, response.status)
            return
        if response.status < 200:
            self.state = State.PROCEEDING
            self.last_provisional = response
            self._transmit(response)
        else:
            self.state = State.COMPLETED
            # Completed only resends these bytes: keep them, not the parsed response.
            sent = self.final_response = SentResponse(response)
            if self._transmit(sent):
                sent.settle()
                self._complete(sent)

    def _complete(self, sent: SentResponse) -> None:
        """Timer J: absorb request retransmissions for 64*T1 (zero if reliable).

        Filed in a table that can absorb them itself (see
        :meth:`TransactionTable.retire`), and with nobody but the table and the TU to
        tell, the transaction hands that job over as a compact entry and ends now: at
        thousands of REGISTERs a second, hundreds of thousands of these wait out Timer
        J, and as objects they cost memory and full garbage-collector passes.
        """
        delay = self.timers.j
        if not self._retire(sent.serialise(), delay):
            self._wait_then_terminate("J", delay)

    def _slim(self) -> None:
        # Completed resends final_response's bytes and nothing else (§17.2.2).
        self.request = None
        self.last_provisional = None

    def receive_request(self, request: Request) -> None:
        """A retransmission of our request, matched by the table (§17.2.3)."""
        state = self.state
        # §17.2.2: in Trying, retransmissions are discarded (the TU is still working);
        # afterwards the last response is resent, since the client evidently missed it.
        if state is State.PROCEEDING:
            assert self.last_provisional is not None
            self._transmit(self.last_provisional)
        elif state is State.COMPLETED:
            assert self.final_response is not None
            self._transmit(self.final_response)
