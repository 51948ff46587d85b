# -*- test-case-name: tests.sipcore.test_transaction_client -*-
"""RFC 3261 §17 transactions, sans-IO.

Four state machines (one module each, each with its state table at the top), the timers
they use, and the :class:`TransactionTable` that matches messages to them. No sockets
and no reactor here: a transaction gets a ``send(message)`` callable and a clock with
``callLater``/``seconds`` (the reactor in production, ``twisted.internet.task.Clock`` in
tests).
"""

from sipcore.ids import new_branch

from .base import (
    ClientTU,
    Clock,
    DelayedCall,
    ResponseSink,
    ServerTU,
    ServerTxHandle,
    State,
    Transaction,
)
from .client_invite import ClientInviteTransaction, build_non_2xx_ack
from .client_non_invite import ClientNonInviteTransaction
from .due import schedule
from .server_invite import ServerInviteTransaction
from .server_non_invite import ServerNonInviteTransaction
from .table import ClientTransaction, ServerTransaction, TransactionTable
from .timers import DEFAULT_TIMERS, TRYING_DELAY, Timers

__all__ = [
    "DEFAULT_TIMERS",
    "TRYING_DELAY",
    "ClientInviteTransaction",
    "ClientNonInviteTransaction",
    "ClientTU",
    "ClientTransaction",
    "Clock",
    "DelayedCall",
    "ResponseSink",
    "ServerInviteTransaction",
    "ServerNonInviteTransaction",
    "ServerTU",
    "ServerTransaction",
    "ServerTxHandle",
    "State",
    "Timers",
    "Transaction",
    "TransactionTable",
    "build_non_2xx_ack",
    "new_branch",
    "schedule",
]
