# -*- test-case-name: tests.client.test_dialog -*-
"""Dialog state (RFC 3261 §12), sans-IO.

A :class:`Dialog` holds what §12 says a dialog is: its id (Call-ID, local tag, remote
tag), the local and remote sequence numbers, the local and remote URIs, the remote
target, the route set and the secure flag. It builds requests inside the dialog
(§12.2.1.1, including the strict-router case), the ACK for a 2xx (§13.2.2.4), checks the
CSeq of requests received in it (§12.2.2) and refreshes the remote target (§12.2).

Who created the dialog decides how it is built: :meth:`Dialog.from_uac` from the request
we sent and the response (18x with a To tag, or 2xx) that came back (§12.1.2);
:meth:`Dialog.from_uas` from the request we received and the tag we put in our To
(§12.1.1). Vias are the transport's business: requests come back without one, and the
caller adds its own (it knows the local address and picks the branch).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sipcore.errors import ParseError
from sipcore.message import Headers, Request, Response
from sipcore.uri import URI, NameAddr, SipURI

__all__ = ["Dialog", "DialogId", "next_hop"]

#: (Call-ID, local tag, remote tag): §12 "dialog ID".
DialogId = tuple[str, str, str]

# §19.1.1 Table 1: of a URI's parameters only these may appear in a Request-URI, so a
# strict router's Route URI loses the rest (method, ttl ... are not allowed there).
_RURI_DROP_PARAMS = frozenset({"method"})


def _remote_contact(message: Request | Response) -> URI | None:
    """The URI of the first Contact, or None (§12.1.1, §12.1.2: the remote target)."""
    try:
        contacts = message.contacts
    except ParseError:
        return None
    for contact in contacts:
        if not contact.is_wildcard:
            return contact.uri.copy()
    return None


@dataclass(slots=True)
class Dialog:
    """One dialog's state (§12). ``state`` is ``"early"`` or ``"confirmed"``."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: NameAddr  # our From (UAC) / To (UAS), without tag
    remote_uri: NameAddr  # their To (UAC) / From (UAS), without tag
    remote_target: URI
    route_set: list[NameAddr] = field(default_factory=list)
    local_seq: int | None = None  # None: "empty" (§12.1.1)
    remote_seq: int | None = None
    secure: bool = False
    state: str = "early"
    is_uac: bool = True

    # -- creation ------------------------------------------------------------------------
    @classmethod
    def from_uac(cls, request: Request, response: Response) -> Dialog:
        """The UAC side, from our request and a 1xx-with-tag or 2xx (§12.1.2)."""
        remote_tag = response.to.tag
        local_tag = request.from_.tag
        if not remote_tag or not local_tag:
            raise ValueError("a dialog needs both tags")
        target = _remote_contact(response) or request.uri.copy()
        # §12.1.2: the route set is the Record-Route of the response, reversed.
        routes = [r.copy() for r in reversed(response.record_routes)]
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_uri=_untagged(request.from_),
            remote_uri=_untagged(request.to),
            remote_target=target,
            route_set=routes,
            local_seq=request.cseq.number,
            remote_seq=None,
            # §12.1.2: secure if the request went over TLS to a sips: Request-URI.
            secure=request.uri.scheme == "sips",
            state="confirmed" if 200 <= response.status < 300 else "early",
            is_uac=True,
        )

    @classmethod
    def from_uas(cls, request: Request, local_tag: str, confirmed: bool = False) -> Dialog:
        """The UAS side, from the request received and the To tag we chose (§12.1.1)."""
        remote_tag = request.from_.tag
        if not remote_tag:
            raise ValueError("the request has no From tag")
        target = _remote_contact(request)
        if target is None:
            raise ValueError("the request has no Contact")
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_uri=_untagged(request.to),
            remote_uri=_untagged(request.from_),
            remote_target=target,
            # §12.1.1: Record-Route in the order received, not reversed.
            route_set=[r.copy() for r in request.record_routes],
            local_seq=None,
            remote_seq=request.cseq.number,
            secure=request.uri.scheme == "sips",
            state="confirmed" if confirmed else "early",
            is_uac=False,
        )

    # -- identity ------------------------------------------------------------------------
    @property
    def id(self) -> DialogId:
        return (self.call_id, self.local_tag, self.remote_tag)

    @staticmethod
    def id_of_received(message: Request | Response) -> DialogId | None:
        """The id, from our point of view, of the dialog a message belongs to (§12).

        For a request we receive the local tag is in To and the remote tag in From; for a
        response to our request it is the other way round. None without both tags.
        """
        if isinstance(message, Request):
            local, remote = message.to.tag, message.from_.tag
        else:
            local, remote = message.from_.tag, message.to.tag
        if not local or not remote:
            return None
        return (message.call_id, local, remote)

    # -- state updates -------------------------------------------------------------------
    def confirm(self, response: Response | None = None) -> None:
        """Early → confirmed; a 2xx recomputes the target but not the route set (§12.1.2,
        §13.2.2.4)."""
        self.state = "confirmed"
        if response is not None:
            self.refresh_target(response)

    def refresh_target(self, message: Request | Response) -> None:
        """Target refresh (§12.2): a re-INVITE or its 2xx replaces the remote target
        with its Contact. The route set never changes after creation."""
        target = _remote_contact(message)
        if target is not None:
            self.remote_target = target

    def check_remote_cseq(self, request: Request) -> bool:
        """§12.2.2: a request with a CSeq lower than the last one is out of order (500).

        Returns False for such a request; otherwise records the new number. ACK and
        CANCEL carry the CSeq of the request they belong to and are not checked.
        """
        if request.method in ("ACK", "CANCEL"):
            return True
        number = request.cseq.number
        if self.remote_seq is not None and number < self.remote_seq:
            return False
        # §12.2.2: equal numbers can only be retransmissions, which the transaction
        # layer absorbs; a new request with the same number is not worth refusing.
        self.remote_seq = number
        return True

    def next_cseq(self) -> int:
        """The CSeq number for a new request (§12.2.1.1: one more than the last; a UAS
        that never sent one starts anywhere, we pick 1)."""
        self.local_seq = 1 if self.local_seq is None else self.local_seq + 1
        return self.local_seq

    # -- building requests ---------------------------------------------------------------
    def create_request(
        self,
        method: str,
        *,
        cseq: int | None = None,
        contact: str | None = None,
        body: bytes = b"",
        content_type: str | None = None,
        extra: list[tuple[str, str]] | None = None,
    ) -> Request:
        """A request within the dialog, without Via (§12.2.1.1).

        ``cseq`` defaults to the next local sequence number; ACK and CANCEL pass the
        number of the request they belong to. ``contact`` is our Contact (required for
        target refresh requests such as re-INVITE, §12.2.1.1).
        """
        if cseq is None:
            cseq = self.next_cseq()
        uri, routes = self._request_uri_and_routes()
        headers = Headers()
        for route in routes:
            headers.add("Route", route)
        headers.add("Max-Forwards", "70")
        headers.add("From", str(_tagged(self.local_uri, self.local_tag)))
        headers.add("To", str(_tagged(self.remote_uri, self.remote_tag)))
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{cseq} {method}")
        if contact is not None:
            headers.add("Contact", contact)
        for name, value in extra or ():
            headers.add(name, value)
        if body:
            headers.add("Content-Type", content_type or "application/sdp")
        return Request(method, uri, headers, body)

    def create_ack(self, invite_cseq: int, extra: list[tuple[str, str]] | None = None,
                   body: bytes = b"") -> Request:
        """The ACK for a 2xx to the INVITE with CSeq ``invite_cseq`` (§13.2.2.4): built
        like any in-dialog request, with the INVITE's sequence number and method ACK."""
        return self.create_request("ACK", cseq=invite_cseq, extra=extra, body=body)

    def _request_uri_and_routes(self) -> tuple[URI, list[str]]:
        """§12.2.1.1: where the Request-URI and Route headers come from."""
        if not self.route_set:
            return self.remote_target.copy(), []
        first = self.route_set[0]
        if isinstance(first.uri, SipURI) and "lr" in first.uri.params:
            # Loose router: Request-URI is the remote target, Route is the route set.
            return self.remote_target.copy(), [str(r) for r in self.route_set]
        # Strict router (RFC 2543): the first route goes into the Request-URI (stripped of
        # parameters not allowed there), the rest into Route, and the remote target last.
        uri = first.uri.copy()
        if isinstance(uri, SipURI):
            for name in _RURI_DROP_PARAMS:
                uri.params.pop(name, None)
            uri.headers.clear()
        routes = [str(r) for r in self.route_set[1:]]
        routes.append(f"<{self.remote_target}>")
        return uri, routes


def next_hop(request: Request) -> URI:
    """§8.1.2: a request goes to its first Route, else to its Request-URI."""
    routes = request.routes
    if routes:
        return routes[0].uri
    return request.uri


def _untagged(na: NameAddr) -> NameAddr:
    copy = na.copy()
    copy.params.pop("tag", None)
    return copy


def _tagged(na: NameAddr, tag: str) -> NameAddr:
    copy = na.copy()
    copy.params["tag"] = tag
    return copy
