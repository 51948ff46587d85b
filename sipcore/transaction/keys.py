# -*- test-case-name: tests.sipcore.test_transaction_table -*-
"""Transaction keys: the tuples a :class:`~sipcore.transaction.TransactionTable` files
transactions under, so that matching a message is one dict lookup.

Client side (§17.1.3): a response matches the client transaction whose request had the
same top-Via ``branch`` and the same method as the response's CSeq method. The method
matters because a CANCEL reuses its INVITE's branch (§9.1).

Server side (§17.2.3):

* RFC 3261 requests (branch starts with the magic cookie): ``branch`` + top-Via
  ``sent-by`` + method, with ACK filed under INVITE (it matches the INVITE transaction
  whose non-2xx response it acknowledges).
* RFC 2543 requests (no cookie): Request-URI, To tag, From tag, Call-ID, CSeq (number
  and method) and the top Via. The ACK cannot use that key, because its To tag is the one
  our response added; it is matched on :func:`ack_key_2543` and the To tag of the
  response we sent is compared after the lookup.

Every key starts with a short marker so the shapes can never collide in one dict.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sipcore.ids import MAGIC_COOKIE

if TYPE_CHECKING:
    from sipcore.headers import Via
    from sipcore.message import Request, Response

__all__ = [
    "ack_key_2543",
    "cancel_key",
    "client_key",
    "is_rfc3261_branch",
    "response_key",
    "server_key",
]

Key = tuple[Any, ...]


def is_rfc3261_branch(branch: str | None) -> bool:
    """§17.2.3: only a branch with the magic cookie is trusted to be unique."""
    return branch is not None and branch.startswith(MAGIC_COOKIE)


def client_key(request: Request) -> Key:
    """Key of a client transaction created by ``request`` (§17.1.3)."""
    return ("c", request.top_via.branch, request.method)


def response_key(response: Response) -> Key:
    """Key that ``response`` looks up among client transactions (§17.1.3)."""
    return ("c", response.top_via.branch, response.cseq.method)


def _sent_by(via: Via) -> tuple[str, int | None]:
    host, port = via.sent_by
    # Host names compare case-insensitively (§19.1.4, §20.42); the port is compared as
    # written: a retransmission repeats the Via byte for byte.
    return host.lower(), port


def _via_2543(via: Via) -> Key:
    # "top Via header field match" for RFC 2543 peers: the parts the sender wrote.
    # received/rport are ours (§18.2.1, RFC 3581) and may differ between copies.
    host, port = _sent_by(via)
    return (via.transport.upper(), host, port, via.branch)


def _key_2543(request: Request, method: str) -> Key:
    return (
        "2543",
        str(request.uri),
        request.to.tag,
        request.from_.tag,
        request.call_id,
        request.cseq.number,
        method,
        _via_2543(request.top_via),
    )


def server_key(request: Request) -> Key:
    """Key that ``request`` creates (or, for a retransmission, looks up) (§17.2.3).

    For an ACK carrying an RFC 3261 branch this is the key of the INVITE it acknowledges.
    An RFC 2543 ACK needs :func:`ack_key_2543` instead.
    """
    method = "INVITE" if request.method == "ACK" else request.method
    # A new request is looked up (match_server), then among retired transactions
    # (TransactionTable.absorb), then filed by its transaction: computed once. Kept
    # with the headers' parsed views, dropped with the top Via when a Via changes.
    headers = request.headers
    key: Key | None = headers._v_server_key
    if key is not None and key[4] == method:
        return key
    via = request.top_via
    if is_rfc3261_branch(via.branch):
        host, port = _sent_by(via)
        # Declared Key (not narrowed from `Key | None`): compiled, it is boxed here once,
        # so the kept tuple and the returned one are the same object.
        made: Key = ("3261", via.branch, host, port, method)
        headers._v_server_key = made
        return made
    # RFC 2543 keys include the Request-URI, which is not in the headers: not cached.
    return _key_2543(request, method)


def cancel_key(cancel: Request) -> Key:
    """Key of the INVITE server transaction that ``cancel`` targets (§9.2).

    §9.2: match "assuming that the request method is anything but CANCEL or ACK"; for
    INVITE that means the key the INVITE itself was filed under. The CANCEL copies the
    INVITE's Request-URI, Call-ID, From, To and CSeq number (§9.1), so the RFC 2543 key
    lines up too.
    """
    via = cancel.top_via
    if is_rfc3261_branch(via.branch):
        return ("3261", via.branch, *_sent_by(via), "INVITE")
    return _key_2543(cancel, "INVITE")


def ack_key_2543(request: Request) -> Key:
    """§17.2.3, RFC 2543 ACK: Request-URI, From tag, Call-ID, CSeq number, top Via.

    Works on both the INVITE (when filing its transaction) and the ACK (when looking it
    up); the To tag is compared separately against the response the transaction sent.
    """
    return (
        "2543-ack",
        str(request.uri),
        request.from_.tag,
        request.call_id,
        request.cseq.number,
        _via_2543(request.top_via),
    )
