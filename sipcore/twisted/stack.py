# -*- test-case-name: tests.sipcore.test_stack -*-
"""The SIP stack of one element: a transport endpoint plus its transaction table.

`SipStack` sits between a `SipEndpoint` (sockets) and a role (proxy, registrar,
redirect server, user agent). It files every message with the transaction it belongs
to (RFC 3261 §17.1.3, §17.2.3) and hands the role only what the role must decide:
new requests (with their server transaction), stray ACKs and responses, CANCELs that
matched an INVITE. The role answers through the transaction it was given and sends
requests with `send_request`, so retransmissions and timers are never its business.
"""

from __future__ import annotations

from typing import Any, Final, Protocol

from twisted.logger import Logger

from sipcore.ids import new_tag
from sipcore.message import Message, Request, Response, make_response, parse
from sipcore.transaction import (
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    ClientTransaction,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    ServerTransaction,
    Timers,
    Transaction,
    TransactionTable,
)
from sipcore.transaction.sent import SentResponse
from sipcore.twisted.protection import Protection
from sipcore.twisted.transport import RELIABLE, Address, SipEndpoint, address

log = Logger(namespace="sipcore.stack")

# To tag prefix of the stateless 503s sent under overload, so that the ACK a client
# sends for one (§17.1.1.3) is recognised and absorbed instead of reaching the role.
SHED_TAG_PREFIX: Final = "shed503-"


class Role(Protocol):
    """What a role implements to sit on a `SipStack`."""

    def request_received(self, request: Request, tx: ServerTransaction, source: Address) -> None:
        """A new request (not ACK, not CANCEL) with its server transaction."""

    def ack_received(self, ack: Request, source: Address) -> None:
        """An ACK that matched no transaction: the ACK for a 2xx (§13.2.2.4, §16.7)."""

    def cancel_received(
        self, cancel: Request, invite_tx: ServerInviteTransaction, source: Address
    ) -> None:
        """A CANCEL matching a pending INVITE; the stack has already answered it 200."""

    def stray_response(self, response: Response, source: Address) -> None:
        """A response matching no client transaction (e.g. a retransmitted 2xx)."""

    # Server-transaction TU callbacks (see sipcore.transaction.ServerTU).
    def server_ack_received(self, tx: ServerTransaction, ack: Request) -> None:
        """An ACK for a 2xx absorbed by an INVITE server tx in Accepted (RFC 6026)."""

    def server_tx_ended(self, tx: ServerTransaction, reason: str) -> None:
        """'timeout', 'transport' or 'terminated'."""


class Endpoint(Protocol):
    """What a `SipStack` uses of its transport endpoint (a `SipEndpoint` in production).

    `SipStack.endpoint` is typed with this rather than with `SipEndpoint` so that another
    transport (the tests' simulated network) can stand in: compiled with mypyc, an
    attribute typed with a native class is type-checked at run time, a Protocol is not.
    Besides sending and its life cycle, the stack's users read where it listens
    (``interface``, ``port``, ``tls_port``, ``local_address``) through ``stack.endpoint``.
    """

    @property
    def protection(self) -> Protection | None:
        """Flood and overload limits; None for none (see `SipStack._shed`)."""

    @property
    def interface(self) -> str: ...

    @property
    def port(self) -> int: ...

    @property
    def tls_port(self) -> int | None: ...

    def local_address(self, transport: str = "UDP") -> Address: ...

    def start(self) -> None: ...

    def stop(self) -> object: ...

    def send(self, message: Message, dest: Address) -> None: ...

    def send_response(self, response: Response, source: Address | None = None) -> None: ...


class _ServerTU:
    """Adapts the ServerTU callbacks of a server transaction to the role."""

    __slots__ = ("role",)

    def __init__(self, role: Role) -> None:
        self.role = role

    def ack_received(self, tx: Any, ack: Request) -> None:
        self.role.server_ack_received(tx, ack)

    def timed_out(self, tx: Any) -> None:
        self.role.server_tx_ended(tx, "timeout")

    def transport_failed(self, tx: Any) -> None:
        self.role.server_tx_ended(tx, "transport")

    def terminated(self, tx: Any) -> None:
        self.role.server_tx_ended(tx, "terminated")


class _Reply:
    """A server transaction's ``send``: responses go back the way the request came.

    A slotted object rather than a closure: it lives as long as the transaction, which
    lingers 32 s after answering over UDP (Timer J), and is half the size.
    """

    __slots__ = ("endpoint", "source")

    def __init__(self, endpoint: Endpoint, source: Address) -> None:
        self.endpoint = endpoint
        self.source = source

    def __call__(self, response: Message) -> None:
        assert isinstance(response, Response)
        self.endpoint.send_response(response, self.source)


def _route_of(tx: Transaction) -> tuple[str, str, int] | None:
    """Where a server transaction of ours sends its responses (a retired one keeps
    this instead of its `_Reply`), if over an unreliable transport."""
    reply = tx.sender
    if not isinstance(reply, _Reply) or reply.source.transport in RELIABLE:
        return None
    source = reply.source
    return (source.transport, source.host, source.port)


class SipStack:
    """Transactions and transport for one role; the endpoint's `MessageHandler`."""

    def __init__(self, reactor: Any, role: Role, timers: Timers | None = None, **endpoint: Any):
        self.clock = reactor
        self.role = role
        self.timers = timers or Timers()
        self.table = TransactionTable()
        #: Replaceable by another `Endpoint` before `start` (tests simulate a network).
        self.endpoint: Endpoint = SipEndpoint(reactor, self, **endpoint)
        self._server_tu = _ServerTU(role)
        # Answered non-INVITE server transactions over UDP retire into the table
        # (TransactionTable.retire); it resends their bytes through us.
        self.table.resend = self._resend_retired
        self.table.route_of = _route_of
        # ... and a role that forwards late 2xx statelessly (a proxy) lets its INVITE
        # transactions retire once Accepted too (BaseRole.retire_accepted_invites).
        self.table.retire_accepted = bool(getattr(role, "retire_accepted_invites", False))

    def start(self) -> None:
        self.endpoint.start()

    def stop(self) -> Any:
        return self.endpoint.stop()

    # -- inbound ----------------------------------------------------------------------

    def message_received(self, message: Message, source: Address) -> None:
        if isinstance(message, Response):
            client_tx = self.table.match_client(message)
            if client_tx is not None:
                client_tx.receive_response(message)
            elif not self.table.absorb_response(message):
                self.role.stray_response(message, source)
            return
        assert isinstance(message, Request)
        request = message
        server_tx = self.table.match_server(request)
        if server_tx is not None:
            server_tx.receive_request(request)  # a retransmission, or ACK for a non-2xx
            return
        if self.table.absorb(request):
            return  # a retransmission a retired transaction answered again
        if request.method == "ACK":
            if (request.to.tag or "").startswith(SHED_TAG_PREFIX):
                return  # the ACK for one of our stateless 503s
            self.role.ack_received(request, source)
            return
        if request.method != "CANCEL" and self._shed(request, source):
            return
        tx = self._new_server_transaction(request, source)
        if request.method == "CANCEL":
            self._cancel(request, tx, source)
            return
        self.role.request_received(request, tx, source)

    def _shed(self, request: Request, source: Address) -> bool:
        """Under overload, answer 503 + Retry-After without a transaction (§21.5.4).

        CANCEL is never shed (it frees resources); in-dialog requests (To tag: BYE,
        re-INVITE) only at twice the cap, so calls can still end while memory stays
        bounded (sipcore.twisted.protection.OverloadGuard).
        """
        protection = self.endpoint.protection
        if protection is None:
            return False
        in_dialog = request.to.tag is not None
        table = self.table
        # Work in progress and lingering absorbers are capped apart (protection.py).
        new_call = not in_dialog and request.method == "INVITE"
        if not protection.overload.overloaded(
            table.live, in_dialog, table.lingering, new_call
        ):
            return False
        response = make_response(request, 503, to_tag=SHED_TAG_PREFIX + new_tag())
        response.headers.add("Retry-After", str(protection.overload.retry_after))
        self.endpoint.send_response(response, source)
        return True

    def _new_server_transaction(self, request: Request, source: Address) -> ServerTransaction:
        send = _Reply(self.endpoint, source)
        reliable = source.transport in RELIABLE
        # Each class named in its own call: compiled code then calls its native
        # constructor directly; through a variable it is a generic call with a dict
        # for the keyword (once per request).
        tx: ServerTransaction
        if request.method == "INVITE":
            tx = ServerInviteTransaction(
                request, send, self._server_tu, self.clock, self.timers, reliable=reliable
            )
        else:
            tx = ServerNonInviteTransaction(
                request, send, self._server_tu, self.clock, self.timers, reliable=reliable
            )
        self.table.add(tx)
        return tx

    def _resend_retired(self, data: bytes, transport: str, host: str, port: int) -> None:
        response = parse(data)
        assert isinstance(response, Response)
        self.endpoint.send_response(SentResponse(response, data), address(transport, host, port))

    def _cancel(self, cancel: Request, tx: ServerTransaction, source: Address) -> None:
        """§9.2: answer the CANCEL itself; the role cancels the INVITE it matched."""
        invite_tx = self.table.match_cancel(cancel)
        if invite_tx is None:
            # An INVITE answered 2xx whose transaction retired: the CANCEL is too late
            # to do anything, but its INVITE transaction still "exists" (§9.2).
            answered = self.table.answered_invite(cancel)
            tx.send_response(make_response(cancel, 200 if answered else 481))
            return
        tx.send_response(make_response(cancel, 200))
        self.role.cancel_received(cancel, invite_tx, source)

    # -- outbound ---------------------------------------------------------------------

    def send_request(
        self, request: Request, dest: Address, tu: Any
    ) -> ClientTransaction:
        """Send `request` to `dest` in a new client transaction reporting to `tu`."""
        endpoint = self.endpoint

        def send(message: Message) -> None:
            endpoint.send(message, dest)

        reliable = dest.transport in RELIABLE
        tx: ClientTransaction
        if request.method == "INVITE":  # two calls, as in _new_server_transaction
            tx = ClientInviteTransaction(request, send, tu, self.clock, self.timers,
                                         reliable=reliable)
        else:
            tx = ClientNonInviteTransaction(request, send, tu, self.clock, self.timers,
                                            reliable=reliable)
        self.table.add(tx)
        tx.start()
        return tx

    def send_stateless(self, message: Message, dest: Address) -> None:
        """Send without a transaction: ACK for 2xx, stateless response forwarding."""
        self.endpoint.send(message, dest)

    def send_response_stateless(self, response: Response, source: Address | None = None) -> None:
        self.endpoint.send_response(response, source)
