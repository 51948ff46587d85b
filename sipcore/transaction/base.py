# -*- test-case-name: tests.sipcore.test_transaction_client -*-
"""What the four RFC 3261 §17 state machines share: states, TU callbacks, the injected
clock, named timers and the "send, and on a transport error give up" rule.

The per-machine transition rules live in the machine's own module (client_invite.py,
client_non_invite.py, server_invite.py, server_non_invite.py); nothing here decides
which state follows which.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .timers import DEFAULT_TIMERS, Timers

if TYPE_CHECKING:
    from sipcore.message import Request, Response

    Message = Request | Response

__all__ = [
    "Clock",
    "ClientTU",
    "DelayedCall",
    "ServerTU",
    "State",
    "Transaction",
]

log = logging.getLogger("sipcore.transaction")


class State(enum.Enum):
    """The states of Figures 5-8 of RFC 3261, plus RFC 6026's Accepted."""

    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    ACCEPTED = "Accepted"
    CONFIRMED = "Confirmed"
    TERMINATED = "Terminated"

    def __str__(self) -> str:
        return self.value


class DelayedCall(Protocol):
    """What ``callLater`` returns (Twisted's ``IDelayedCall``, the part we use)."""

    def cancel(self) -> None: ...

    def active(self) -> bool: ...


class Clock(Protocol):
    """The ``IReactorTime`` shape: the reactor in production, ``task.Clock`` in tests."""

    def callLater(  # noqa: N802 - Twisted's spelling
        self, delay: float, callable: Callable[..., Any], *args: Any, **kw: Any
    ) -> DelayedCall: ...

    def seconds(self) -> float: ...


class ClientTU(Protocol):
    """Callbacks a client transaction makes to its transaction user."""

    def response_received(self, tx: Any, response: Response) -> None: ...

    def timed_out(self, tx: Any) -> None: ...

    def transport_failed(self, tx: Any) -> None: ...

    def terminated(self, tx: Any) -> None: ...


class ServerTU(Protocol):
    """Callbacks a server transaction makes to its transaction user.

    The request that created the transaction is *not* delivered through this interface:
    whoever creates the transaction hands it to the TU (§17.2.1, §17.2.2).
    """

    def ack_received(self, tx: Any, ack: Request) -> None: ...

    def timed_out(self, tx: Any) -> None: ...

    def transport_failed(self, tx: Any) -> None: ...

    def terminated(self, tx: Any) -> None: ...


class Transaction:
    """Timer bookkeeping and termination, shared by the four state machines.

    Subclasses set ``state`` in ``__init__`` and implement their transitions; they only
    call the helpers below.
    """

    #: The state a transaction of this kind is created in (set by each subclass).
    initial_state: State

    @staticmethod
    def _accepts(method: str) -> bool:
        """Whether a request with this method can create this kind of transaction."""
        raise NotImplementedError

    @staticmethod
    def _make_key(request: Request) -> tuple[Any, ...]:
        """The table key (§17.1.3 for clients, §17.2.3 for servers)."""
        raise NotImplementedError

    def __init__(
        self,
        request: Request,
        send: Callable[[Message], None],
        tu: Any,
        clock: Clock,
        timers: Timers = DEFAULT_TIMERS,
        reliable: bool = False,
    ) -> None:
        if not self._accepts(request.method):
            raise ValueError(f"{type(self).__name__} cannot be created for {request.method}")
        self.request = request
        self.method: str = request.method
        self.tu = tu
        self.clock = clock
        self.reliable = reliable
        self.timers = timers.for_transport(reliable)
        self.branch: str | None = request.top_via.branch
        self.state = self.initial_state
        self._send = send
        self._calls: dict[str, DelayedCall] = {}
        self._terminated_observers: list[Callable[[Transaction], None]] = []
        self._finished = False
        #: The key a :class:`TransactionTable` files this transaction under.
        self.key: tuple[Any, ...] = self._make_key(request)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.method} {self.branch} {self.state}>"

    # -- public helpers -----------------------------------------------------------------
    @property
    def active_timers(self) -> frozenset[str]:
        """Names ("A", "B", ...) of the timers currently running; for tests and logs."""
        return frozenset(name for name, call in self._calls.items() if call.active())

    def add_terminated_observer(self, observer: Callable[[Transaction], None]) -> None:
        """Call ``observer(tx)`` on entering Terminated, before ``tu.terminated``.

        The transaction table uses this to drop the transaction (§17.1.1.2: once
        terminated, the transaction MUST be destroyed).
        """
        self._terminated_observers.append(observer)

    def transport_error(self) -> None:
        """The transport reported a failure after the fact (e.g. ICMP, a TCP reset).

        §17.1.1.2, §17.1.2.2, §17.2.4: inform the TU and go to Terminated.
        """
        if self.state is not State.TERMINATED:
            self._fail_transport()

    # -- helpers for subclasses ---------------------------------------------------------
    def _transmit(self, message: Message) -> bool:
        """Hand ``message`` to the transport; False (and Terminated) if that failed.

        The transport has already tried every alternative it had (§18.2.2, RFC 3263)
        before raising, so a raise here is the "transport error" of Figures 5-8.
        """
        try:
            self._send(message)
        except OSError:  # ConnectionError is an OSError too
            log.debug("%r: transport error", self, exc_info=True)
            self._fail_transport()
            return False
        return True

    def _fail_transport(self) -> None:
        self._cancel_all()
        self.state = State.TERMINATED
        self.tu.transport_failed(self)
        self._terminate()

    def _time_out(self) -> None:
        self._cancel_all()
        self.state = State.TERMINATED
        self.tu.timed_out(self)
        self._terminate()

    def _start(self, name: str, delay: float, callback: Callable[[], None]) -> None:
        self._cancel(name)
        self._calls[name] = self.clock.callLater(delay, self._fire, name, callback)

    def _fire(self, name: str, callback: Callable[[], None]) -> None:
        self._calls.pop(name, None)
        callback()

    def _cancel(self, *names: str) -> None:
        for name in names:
            call = self._calls.pop(name, None)
            if call is not None and call.active():
                call.cancel()

    def _cancel_all(self) -> None:
        self._cancel(*list(self._calls))

    def _wait_then_terminate(self, name: str, delay: float) -> None:
        """Timers D, I, J, K: wait ``delay``; zero (reliable transport) means now."""
        if delay <= 0:
            self._terminate()
        else:
            self._start(name, delay, self._terminate)

    def _terminate(self) -> None:
        """Enter Terminated and tell the table, then the TU (only the first time)."""
        self._cancel_all()
        self.state = State.TERMINATED
        if self._finished:
            return
        self._finished = True
        for observer in self._terminated_observers:
            observer(self)
        self.tu.terminated(self)
