# -*- test-case-name: tests.sipcore.test_stack -*-
"""What every server role shares: capability answers and safe defaults for callbacks."""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from sipcore.message import Request, Response, make_response
from sipcore.transaction import ServerInviteTransaction, ServerTransaction
from sipcore.twisted.transport import Address

log = Logger(namespace="sipcore.role")

SERVER_NAME = "sipcalling/0.1"
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, INFO, UPDATE, PRACK, REFER, MESSAGE"
SUPPORTED = "path, outbound"
ACCEPT = "application/sdp"


class BaseRole:
    """No-op callbacks and the OPTIONS answer; roles override what they handle."""

    stack: Any = None
    #: True if the role needs nothing from an INVITE transaction once it is Accepted
    #: (RFC 6026): no 2xx to retransmit through the server one, no ACK to send for
    #: each 2xx the client one passes up. Then the stack's table takes them over
    #: (TransactionTable.retire) and late 2xx reach `stray_response`.
    retire_accepted_invites = False

    def capabilities(self, request: Request, status: int = 200) -> Response:
        """A response advertising what we support (RFC 3261 §11.2)."""
        response = make_response(request, status)
        headers = response.headers
        headers.add("Allow", ALLOW)
        headers.add("Accept", ACCEPT)
        headers.add("Supported", SUPPORTED)
        headers.add("Server", SERVER_NAME)
        return response

    def request_received(self, request: Request, tx: ServerTransaction, source: Address) -> None:
        if request.method == "OPTIONS":
            tx.send_response(self.capabilities(request))
        else:
            tx.send_response(make_response(request, 501))

    def ack_received(self, ack: Request, source: Address) -> None:
        log.debug("stray ACK from {source} dropped", source=str(source))

    def cancel_received(
        self, cancel: Request, invite_tx: ServerInviteTransaction, source: Address
    ) -> None:
        """§9.2: a UAS answers the cancelled INVITE with 487."""
        # Once answered, the CANCEL has no effect (§9.2), and the INVITE is gone.
        if invite_tx.final_response is None and invite_tx.request is not None:
            invite_tx.send_response(make_response(invite_tx.request, 487))

    def stray_response(self, response: Response, source: Address) -> None:
        log.debug("stray response {status} from {source} dropped",
                  status=response.status, source=str(source))

    def server_ack_received(self, tx: ServerTransaction, ack: Request) -> None:
        pass

    def server_tx_ended(self, tx: ServerTransaction, reason: str) -> None:
        pass
