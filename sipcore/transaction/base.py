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
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Final, Protocol, TypeAlias

from .due import DelayedCall, DueQueue, QueuesByClock, schedule
from .timers import DEFAULT_TIMERS, Timers

if TYPE_CHECKING:
    from sipcore.message import Request, Response

    Message: TypeAlias = "Request | Response"

__all__ = [
    "Clock",
    "ClientTU",
    "DelayedCall",
    "DueQueue",
    "ResponseSink",
    "ServerTU",
    "ServerTxHandle",
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


class _NullTU:
    """A TU that ignores every callback: what a terminated transaction reports to, and
    the TU of requests whose answers mean nothing to their sender (a proxy's CANCELs,
    whose 200 only ends the hop, §16.10)."""

    __slots__ = ()

    def response_received(self, tx: Any, response: Response) -> None:
        pass

    def ack_received(self, tx: Any, ack: Request) -> None:
        pass

    def timed_out(self, tx: Any) -> None:
        pass

    def transport_failed(self, tx: Any) -> None:
        pass

    def terminated(self, tx: Any) -> None:
        pass


NULL_TU: Final = _NullTU()


class ResponseSink(Protocol):
    """What a transaction user that only answers needs of its server transaction.

    The registrar's whole use of one. Annotate with this (or :class:`ServerTxHandle`)
    rather than with the concrete ``ServerTransaction`` union wherever a TU merely
    *uses* a server transaction: compiled with mypyc, a parameter or attribute typed
    with a native class is type-checked at run time, a Protocol is not, so code typed
    this way also accepts other objects of this shape (the tests' recording fakes).
    """

    def send_response(self, response: Response) -> None: ...


class ServerTxHandle(ResponseSink, Protocol):
    """What a transaction user (a proxy, a UAS core) uses of a server transaction:
    answer through it, and see whether it has answered or ended.

    ``ServerInviteTransaction`` and ``ServerNonInviteTransaction`` both have this
    shape; see :class:`ResponseSink` for why TUs are annotated with it.
    """

    @property
    def request(self) -> Request | None:
        """The request that created the transaction (None once it only lingers)."""

    @property
    def state(self) -> State: ...

    @property
    def final_response(self) -> Response | None:
        """The final response sent, None until then."""


class Transaction:
    """Timer bookkeeping and termination, shared by the four state machines.

    Subclasses set ``state`` in ``__init__`` and implement their transitions; they only
    call the helpers below.
    """

    __slots__ = (
        "request", "method", "tu", "clock", "reliable", "timers", "branch", "state",
        "key", "lingering", "_send", "_calls", "_terminated_observers", "_finished",
        "_table", "_linger_name", "_linger_deadline",
    )

    #: The state a transaction of this kind is created in (set by each subclass).
    initial_state: ClassVar[State]

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
        #: The request that created the transaction. ``None`` once the transaction only
        #: lingers (see :meth:`_linger`) where nothing needs it any more.
        self.request: Request | None = request
        # Interned: thousands of lingering transactions share one "REGISTER".
        self.method: str = sys.intern(request.method)
        self.tu = tu
        self.clock = clock
        self.reliable = reliable
        self.timers = timers.for_transport(reliable)
        self.branch: str | None = request.top_via.branch
        self.state = self.initial_state
        #: True once the transaction's work is done and it only absorbs retransmissions
        #: until its wait timer (Completed, Confirmed, Accepted): the table counts these
        #: apart from live ones, so overload control limits work in progress.
        self.lingering = False
        self._send = send
        self._calls: dict[str, DelayedCall] = {}
        # Created on first use: most transactions only have their table to tell.
        self._terminated_observers: list[Callable[[Transaction], None]] | None = None
        self._finished = False
        #: The table we are filed in (it keeps the lingering count); set by the table.
        self._table: Any = None
        #: The wait timer run by the shared :class:`_LingerQueue`, and when it is due.
        self._linger_name: str | None = None
        self._linger_deadline = 0.0
        #: The key a :class:`TransactionTable` files this transaction under.
        self.key: tuple[Any, ...] = self._make_key(request)
        self._setup()

    def _setup(self) -> None:
        """Each machine's own fields, set at the end of ``__init__``.

        A hook rather than an ``__init__`` per subclass: mypyc miscompiled subclass
        ``__init__(*args, **kwargs)`` forwarding, and four copies of the signature
        would be the alternative."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.method} {self.branch} {self.state}>"

    # -- public helpers -----------------------------------------------------------------
    @property
    def sender(self) -> Callable[[Message], None]:
        """The ``send`` callable the transaction was created with."""
        return self._send

    @property
    def active_timers(self) -> frozenset[str]:
        """Names ("A", "B", ...) of the timers currently running; for tests and logs."""
        names = {name for name, call in self._calls.items() if call.active()}
        if self._linger_name is not None:
            names.add(self._linger_name)
        return frozenset(names)

    def add_terminated_observer(self, observer: Callable[[Transaction], None]) -> None:
        """Call ``observer(tx)`` on entering Terminated, before ``tu.terminated``.

        (The transaction table is told directly, through ``_table``, so that it can
        drop the transaction: §17.1.1.2, once terminated it MUST be destroyed.)
        """
        if self._terminated_observers is None:
            self._terminated_observers = []
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
        self._calls[name] = schedule(self.clock, delay, self._fire, name, callback)

    def _fire(self, name: str, callback: Callable[[], None]) -> None:
        self._calls.pop(name, None)
        callback()

    def _cancel(self, *names: str) -> None:
        for name in names:
            call = self._calls.pop(name, None)
            if call is not None and call.active():
                call.cancel()

    def _cancel_all(self) -> None:
        if self._calls:
            self._cancel(*list(self._calls))
        # The queue entry stays behind and is skipped when due (see _LingerQueue).
        self._linger_name = None

    def _wait_then_terminate(self, name: str, delay: float) -> None:
        """Timers D, I, J, K: wait ``delay``; zero (reliable transport) means now."""
        if delay <= 0:
            self._terminate()
        else:
            self._linger(name, delay)

    def _linger(self, name: str, delay: float) -> None:
        """Enter a lingering state: wait ``delay`` (timer ``name``), then terminate.

        Every transaction of one clock waiting out the same delay expires in the order
        it started waiting, so one queue with one reactor timer serves them all (see
        :class:`_LingerQueue`) instead of one `DelayedCall` each: tens of thousands of
        UDP REGISTER transactions sit in Completed for Timer J (32 s) at any moment.
        """
        self._cancel(name)
        self._mark_lingering()
        self._slim()
        self._linger_name = name
        self._linger_deadline = _LingerQueue.of(self.clock, delay).push(self)

    def _retire(self, data: bytes, delay: float) -> bool:
        """Hand the rest of our life to the table (see :meth:`TransactionTable.retire`)
        and end now, if it takes it: nobody else waits for our end (observers), and
        there is a wait at all (zero over reliable transports)."""
        table = self._table
        if (delay > 0 and table is not None and self._terminated_observers is None
                and table.retire(self, data, delay)):
            self._terminate()
            return True
        return False

    def _mark_lingering(self) -> None:
        if not self.lingering:
            self.lingering = True
            if self._table is not None:
                self._table.lingering += 1

    def _slim(self) -> None:
        """Drop what a lingering transaction no longer needs (each machine knows what)."""

    def _linger_expired(self) -> None:
        self._linger_name = None
        self._terminate()

    def _terminate(self) -> None:
        """Enter Terminated and tell the table, then the TU (only the first time)."""
        self._cancel_all()
        self.state = State.TERMINATED
        if self._finished:
            return
        self._finished = True
        table = self._table
        if table is not None:
            table.remove(self)
        observers = self._terminated_observers
        self._terminated_observers = None
        for observer in observers or ():
            observer(self)
        tu = self.tu
        # The TU usually holds us too (a proxy branch, a dialog): dropping our side of
        # that cycle lets refcounting free both once the table lets go of us.
        self.tu = NULL_TU
        tu.terminated(self)


class _LingerQueue(DueQueue):
    """Lingering transactions of one clock waiting out one delay (Timers D, I, J, K, L).

    A transaction that left its lingering state early (transport error) is skipped when
    its entry comes up rather than searched for.
    """

    __slots__ = ()

    @classmethod
    def of(cls, clock: Clock, delay: float) -> _LingerQueue:
        queue = _LINGER_QUEUES.get(clock, delay)
        if isinstance(queue, _LingerQueue):
            return queue
        return cls(clock, delay)  # a clock that takes no attributes: one queue each

    def _due(self, item: Any, deadline: float) -> None:
        tx: Transaction = item
        if tx._linger_name is not None and tx._linger_deadline == deadline:
            tx._linger_expired()


#: The wait timers take a handful of delays (D, I, J, K, L, M); no need to bound them.
_LINGER_QUEUES: Final = QueuesByClock("_sipcalling_linger_queues", _LingerQueue, 1 << 20)
