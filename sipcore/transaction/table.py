# -*- test-case-name: tests.sipcore.test_transaction_table -*-
"""The transaction table: which transaction a received message belongs to.

Matching (§17.1.3, §17.2.3, §9.2) is one dict lookup on a small tuple built by
:mod:`sipcore.transaction.keys`; nothing here scans the transactions.

Answered transactions can *retire* into the table (:meth:`retire`) when all they have
left to do is a lookup:

* a non-INVITE server transaction in Completed (§17.2.2) only resends the final
  response's bytes when the request comes again, until Timer J;
* a non-INVITE client transaction in Completed only absorbs response retransmissions,
  until Timer K;
* for an owner whose TU has no use for them (a proxy, :attr:`retire_accepted`), INVITE
  transactions in Accepted (RFC 6026): the server side only absorbs INVITE
  retransmissions until Timer L, the client side only lets 2xx through (they go to the
  owner like any late 2xx) and discards the rest until Timer M.

A retired one is a key and a flat tuple of bytes and strings, which the garbage
collector stops tracking: at 15,000 REGISTERs a second over UDP, 480,000 of them wait
out Timer J, and at 1,300 calls a second 80,000 INVITE transactions wait out L and M; as
objects (18 a call, with what they held) they made middle-generation collections
pauses of a second, long enough to overflow the socket buffer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final

from sipcore.errors import ParseError

from .base import State, Transaction
from .client_invite import ClientInviteTransaction
from .client_non_invite import ClientNonInviteTransaction
from .due import DueQueue
from .keys import ack_key_2543, cancel_key, is_rfc3261_branch, response_key, server_key
from .server_invite import ServerInviteTransaction
from .server_non_invite import ServerNonInviteTransaction

if TYPE_CHECKING:
    from sipcore.message import Request, Response

__all__ = ["ClientTransaction", "ServerTransaction", "TransactionTable"]

ClientTransaction = ClientInviteTransaction | ClientNonInviteTransaction
ServerTransaction = ServerInviteTransaction | ServerNonInviteTransaction

# What a message lacking a header needed for matching raises: the message layer's
# ParseError (bad value) or a LookupError/AttributeError variant for a missing one. Such
# a message matches nothing (§18.1.2/§18.2.1 say the transport should have dropped it).
_UNMATCHABLE: Final = (ParseError, LookupError, AttributeError, TypeError, ValueError)

#: What a retired transaction keeps: the response bytes, where they went (transport,
#: host, port) and when the entry expires. An Accepted INVITE transaction has nothing
#: to resend: empty bytes and no route.
Retired = tuple[bytes, str, str, int, float]
#: Sends retired bytes again: (bytes, transport, host, port).
Resend = Callable[[bytes, str, str, int], None]


class _RetiredQueue(DueQueue):
    """The retired transactions of one table and one Timer J, in due order."""

    __slots__ = ("table",)

    def __init__(self, table: TransactionTable, clock: Any, delay: float) -> None:
        super().__init__(clock, delay)
        self.table = table

    def _due(self, item: Any, deadline: float) -> None:
        self.table._expire_retired(item, deadline)


class TransactionTable:
    """Live transactions of one element, filed by key.

    :meth:`add` registers a transaction and arranges for it to be removed when it enters
    Terminated; :meth:`remove` does so earlier.
    """

    def __init__(self) -> None:
        self._client: dict[tuple[Any, ...], ClientTransaction] = {}
        self._server: dict[tuple[Any, ...], ServerTransaction] = {}
        # RFC 2543 INVITE transactions again, under the key their ACK looks up (§17.2.3).
        self._ack_2543: dict[tuple[Any, ...], ServerInviteTransaction] = {}
        # Their keys in _ack_2543, kept here: the INVITE is dropped once it lingers.
        self._ack_2543_keys: dict[ServerInviteTransaction, tuple[Any, ...]] = {}
        #: How many of the filed transactions linger (Completed, Confirmed, Accepted:
        #: done, absorbing retransmissions until a timer); kept by the transactions.
        #: Retired ones (see :meth:`retire`) count too.
        self.lingering = 0
        #: Retired transactions by key, and their expiry queues (one per timer value).
        #: Client and server keys have different shapes, so one dict holds both.
        self._retired: dict[tuple[Any, ...], Retired] = {}
        self._retired_queues: dict[float, _RetiredQueue] = {}
        #: Set by the table's owner to let transactions retire: resends retired bytes
        #: along a route, and gives the route a transaction's responses take (None:
        #: this one cannot retire). The owner is the one that created the ``send``
        #: callables, so it is the one that knows where they send.
        self.resend: Resend | None = None
        self.route_of: Callable[[Transaction], tuple[str, str, int] | None] | None = None
        #: Set by the owner when its TU needs nothing from an INVITE transaction once
        #: it is Accepted (RFC 6026): a proxy forwards late 2xx statelessly, while a UA
        #: core retransmits its 2xx through the server one and ACKs each 2xx the client
        #: one passes up, so a UA keeps them.
        self.retire_accepted = False

    @property
    def live(self) -> int:
        """Transactions still at work (not lingering): what overload control limits."""
        return len(self) - self.lingering

    def __len__(self) -> int:
        return len(self._client) + len(self._server) + len(self._retired)

    def __iter__(self) -> Iterator[Transaction]:
        yield from list(self._client.values())
        yield from list(self._server.values())

    def __contains__(self, tx: object) -> bool:
        key = getattr(tx, "key", None)
        return key is not None and (self._client.get(key) is tx or self._server.get(key) is tx)

    def add(self, tx: Transaction) -> None:
        """File ``tx`` under its key. Raises ``ValueError`` if that key is taken (the
        caller should have matched the request to the existing transaction)."""
        if tx.state is State.TERMINATED:
            return  # e.g. the first send already failed: nothing left to match
        if isinstance(tx, ClientInviteTransaction | ClientNonInviteTransaction):
            table: dict[tuple[Any, ...], Any] = self._client
        elif isinstance(tx, ServerInviteTransaction | ServerNonInviteTransaction):
            table = self._server
        else:
            raise TypeError(f"not a transaction: {tx!r}")
        if tx.key in table:
            raise ValueError(f"a transaction with key {tx.key!r} exists already")
        table[tx.key] = tx
        if isinstance(tx, ServerInviteTransaction) and not is_rfc3261_branch(tx.branch):
            if tx.request is not None:
                ack_key = self._ack_2543_keys[tx] = ack_key_2543(tx.request)
                self._ack_2543[ack_key] = tx
        # The transaction calls our remove() when it terminates (§17.1.1.2: once
        # terminated it MUST be destroyed) and keeps our lingering count.
        tx._table = self
        if tx.lingering:
            self.lingering += 1

    def remove(self, tx: Transaction) -> None:
        """Forget ``tx`` (idempotent)."""
        removed = False
        for table in (self._client, self._server):
            if table.get(tx.key) is tx:
                del table[tx.key]
                removed = True
        if removed and tx._table is self:
            tx._table = None
            if tx.lingering:
                self.lingering -= 1
        if isinstance(tx, ServerInviteTransaction) and not is_rfc3261_branch(tx.branch):
            ack_key = self._ack_2543_keys.pop(tx, None)
            if ack_key is not None and self._ack_2543.get(ack_key) is tx:
                del self._ack_2543[ack_key]

    # -- retired transactions -------------------------------------------------------

    def retire(self, tx: Transaction, data: bytes, delay: float) -> bool:
        """Take over ``tx``'s last state for ``delay`` seconds: True if taken over, in
        which case the transaction must end at once (it calls :meth:`remove`); False if
        this table cannot (no owner consulting :meth:`absorb` and
        :meth:`absorb_response`, no route, not a kind it takes over).

        A non-INVITE server transaction in Completed passes the bytes of its final
        response, resent whenever its request comes again (Timer J). The others have
        nothing to send and pass empty bytes: a non-INVITE client one in Completed
        (Timer K), INVITE ones in Accepted (Timers L and M, with
        :attr:`retire_accepted`).
        """
        if self.resend is None:
            return False
        key = tx.key
        client = key[0] == "c"
        if (self._client if client else self._server).get(key) is not tx:
            return False
        route: tuple[str, str, int] | None = ("", "", 0)
        if tx.method == "INVITE":
            if (not self.retire_accepted or data or tx.state is not State.ACCEPTED
                    or key[0] == "2543"):  # those have an ACK key filed too
                return False
        elif client:
            if data or tx.state is not State.COMPLETED:
                return False
        else:
            route = self.route_of(tx) if self.route_of is not None else None
            if route is None:
                return False
        assert route is not None
        queue = self._retired_queues.get(delay)
        if queue is None:
            queue = self._retired_queues[delay] = _RetiredQueue(self, tx.clock, delay)
        deadline = queue.push(key)
        self._retired[key] = (data, route[0], route[1], route[2], deadline)
        self.lingering += 1
        return True

    def absorb(self, request: Request) -> bool:
        """If ``request`` retransmits one a retired transaction answered, resend that
        answer (§17.2.2, Completed) and return True; an INVITE retransmission after a
        2xx is absorbed without one (RFC 6026 §8.7, Accepted). The ACK for that 2xx is
        not absorbed: it is the TU's to forward."""
        entry = self._retired_entry(server_key, request)
        if entry is None:
            return False
        data = entry[0]
        if not data:
            return request.method == "INVITE"
        if self.resend is not None:
            self.resend(data, entry[1], entry[2], entry[3])
        return True

    def absorb_response(self, response: Response) -> bool:
        """True if ``response`` belongs to a retired client transaction and is to be
        discarded: everything, in non-INVITE Completed (§17.1.2.2); all but 2xx in
        INVITE Accepted (RFC 6026 §8.4), where a 2xx (False here) goes to the owner as
        a late 2xx to forward."""
        if self._retired_entry(response_key, response) is None:
            return False
        return response.cseq.method != "INVITE" or not 200 <= response.status < 300

    def answered_invite(self, cancel: Request) -> bool:
        """True if the INVITE ``cancel`` targets was answered 2xx by a transaction now
        retired: the CANCEL has no effect but is answered 200 (§9.2), as it would be
        by the transaction itself."""
        return self._retired_entry(cancel_key, cancel) is not None

    def _retired_entry(
        self, key_of: Callable[[Any], tuple[Any, ...]], message: Any
    ) -> Retired | None:
        """The retired entry ``message`` matches under ``key_of``, if any."""
        if not self._retired:
            return None
        try:
            key = key_of(message)
        except _UNMATCHABLE:
            return None
        return self._retired.get(key)

    @property
    def retired(self) -> int:
        """How many retired transactions are absorbing retransmissions."""
        return len(self._retired)

    def _expire_retired(self, key: tuple[Any, ...], deadline: float) -> None:
        entry = self._retired.get(key)
        if entry is not None and entry[4] == deadline:
            del self._retired[key]
            self.lingering -= 1

    # -- matching -------------------------------------------------------------------

    def match_client(self, response: Response) -> ClientTransaction | None:
        """§17.1.3: top-Via branch and CSeq method (a 200 to CANCEL finds the CANCEL)."""
        try:
            key = response_key(response)
        except _UNMATCHABLE:
            return None
        return self._client.get(key)

    def match_server(self, request: Request) -> ServerTransaction | None:
        """§17.2.3: the server transaction ``request`` belongs to, or None if it is new.

        An ACK matches the INVITE transaction whose non-2xx response it acknowledges; a
        CANCEL matches its own transaction (use :meth:`match_cancel` for the INVITE).
        """
        try:
            key = server_key(request)
            if request.method == "ACK" and key[0] == "2543":
                # RFC 2543: the ACK's To tag must be the one in the response we sent.
                tx = self._ack_2543.get(ack_key_2543(request))
                if tx is None or tx.final_response is None:
                    return None
                return tx if tx.final_response.to.tag == request.to.tag else None
        except _UNMATCHABLE:
            return None
        return self._server.get(key)

    def match_cancel(self, cancel: Request) -> ServerInviteTransaction | None:
        """§9.2: the INVITE server transaction that ``cancel`` cancels, if any."""
        try:
            key = cancel_key(cancel)
        except _UNMATCHABLE:
            return None
        tx = self._server.get(key)
        return tx if isinstance(tx, ServerInviteTransaction) else None
