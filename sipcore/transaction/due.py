# -*- test-case-name: tests.sipcore.test_due -*-
"""Timers that share one reactor timer per delay: the transactions' and the proxy's.

A call through the proxy starts about seven timers (the 100 Trying delay, Timers A and
B, Timer C and its restart on the 180, Timers E and F of the BYE) and nearly all of
them are cancelled unfired. With one Twisted ``DelayedCall`` each, that is seven
objects built, pushed on the reactor's heap and cancelled by interpreted code per call.
But each of those timers has one of a few fixed delays (T1, 64*T1, 180 s, ...), and
timers of one clock and one delay are due in the order they were started: a deque per
delay is a priority queue, and one reactor timer armed for its head serves all of it.

:func:`schedule` is the ``callLater`` of this scheme. It returns a :class:`Pending`
with the two methods of a ``DelayedCall`` the callers use, ``active`` and ``cancel``.
A cancelled entry stays queued, inert, until it comes up or until cancelled ones are
over half its queue (then the queue drops them all at once), so that cancelling costs
no search. A delay the queues have not seen, past ``MAX_DELAYS`` per clock, or a zero
delay (due at once: the reactor's next turn, not the middle of an expiry pass) goes to
the clock's own ``callLater``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Final, Protocol

__all__ = ["MAX_DELAYS", "DelayedCall", "DueQueue", "Pending", "QueuesByClock", "schedule"]

log = logging.getLogger("sipcore.transaction")

#: Distinct delays one clock keeps a queue for; others go to ``callLater``. The
#: transactions and the proxy use about ten (T1, its doublings up to T2, 64*T1, the
#: 100 Trying delay, Timer C); a bound keeps an odd configuration from piling up queues.
MAX_DELAYS: Final = 32
#: Cancelled entries a queue tolerates before it may drop them (and then only when
#: they are over half of it, so that the passes cost O(1) per cancel): few, because
#: each is an object kept (most Timers B, C and F are cancelled within milliseconds).
COMPACT_AFTER: Final = 16

#: What both ``Transaction._fire`` and the proxy branch's ``_fire`` are: called with
#: the timer's name and the callback given when it was started.
Fire = Callable[[str, Callable[[], None]], None]


class DelayedCall(Protocol):
    """What ``callLater`` returns (Twisted's ``IDelayedCall``, the part we use)."""

    def cancel(self) -> None: ...

    def active(self) -> bool: ...


class DueQueue:
    """Items waiting out one fixed delay on one clock, in due order.

    The delay is the same for every entry, so entries are pushed in due order and a
    deque is a priority queue: one reactor timer, armed for the head, expires every
    entry that is due. Subclasses say what expiring an item means (:meth:`_due`).
    """

    __slots__ = ("clock", "delay", "deadlines", "items", "call", "__weakref__")

    def __init__(self, clock: Any, delay: float) -> None:
        self.clock = clock
        self.delay = delay
        # Two deques in step rather than one of (deadline, item) pairs: a pair per entry
        # would be one more object for every REGISTER to allocate, and for the cyclic
        # collector to visit while it waits out Timer J.
        self.deadlines: deque[float] = deque()
        self.items: deque[Any] = deque()
        self.call: Any = None

    def push(self, item: Any) -> float:
        """Append ``item``; returns its deadline."""
        deadline = self.clock.seconds() + self.delay
        self.deadlines.append(deadline)
        self.items.append(item)
        if self.call is None:
            self.call = self.clock.callLater(self.delay, self._expire)
        return deadline

    def _due(self, item: Any, deadline: float) -> None:
        raise NotImplementedError

    def _expire(self) -> None:
        self.call = None
        deadlines = self.deadlines
        items = self.items
        now = self.clock.seconds()
        while deadlines and deadlines[0] <= now:
            deadline = deadlines.popleft()
            item = items.popleft()
            try:
                self._due(item, deadline)
            except Exception:
                # One failing callback must not hold up the entries behind it (with a
                # DelayedCall each, it would not have either).
                log.exception("%r: error on expiry", item)
        if deadlines:
            if self.call is not None:
                # Armed by a push during this pass, for that entry: the head is due first.
                self.call.cancel()
            self.call = self.clock.callLater(max(0.0, deadlines[0] - now), self._expire)


class Pending:
    """One timer started by :func:`schedule` (a ``DelayedCall`` to its starter)."""

    __slots__ = ("fire", "name", "callback", "queue")

    def __init__(self, fire: Fire, name: str, callback: Callable[[], None],
                 queue: _TimerQueue) -> None:
        self.fire: Fire | None = fire
        self.name = name
        self.callback: Callable[[], None] | None = callback
        self.queue = queue

    def active(self) -> bool:
        return self.fire is not None

    def cancel(self) -> None:
        """Never run (a no-op once run or cancelled: callers check ``active`` anyway)."""
        if self.fire is not None:
            # Let go of the starter now: a cancelled Timer B must not keep its
            # transaction alive for the 32 s its entry waits.
            self.fire = None
            self.callback = None
            self.queue.cancelled_one()

    def __repr__(self) -> str:
        return f"<Pending timer {self.name} {'active' if self.fire else 'done'}>"


class _TimerQueue(DueQueue):
    """The :class:`Pending` timers of one clock and one delay."""

    __slots__ = ("cancelled",)

    def __init__(self, clock: Any, delay: float) -> None:
        super().__init__(clock, delay)
        #: Entries still queued whose timer was cancelled.
        self.cancelled = 0

    def _due(self, item: Any, deadline: float) -> None:
        pending: Pending = item
        fire = pending.fire
        callback = pending.callback
        if fire is None or callback is None:
            self.cancelled -= 1
            return
        pending.fire = None
        pending.callback = None
        fire(pending.name, callback)

    def cancelled_one(self) -> None:
        self.cancelled += 1
        if self.cancelled > COMPACT_AFTER and 2 * self.cancelled > len(self.items):
            self._compact()

    def _compact(self) -> None:
        # In place: an expiry pass in progress (a callback cancelling a sibling timer)
        # holds these very deques.
        kept: list[tuple[float, Pending]] = [
            (deadline, pending) for deadline, pending in zip(self.deadlines, self.items)
            if pending.fire is not None
        ]
        self.deadlines.clear()
        self.items.clear()
        for deadline, pending in kept:
            self.deadlines.append(deadline)
            self.items.append(pending)
        self.cancelled = 0


class QueuesByClock:
    """The queues of each clock, one per delay, kept on the clock itself (attribute
    ``attribute``): they go when it goes (a test's ``task.Clock`` takes its queues and
    what they still hold with it), and finding them is one attribute lookup.

    :meth:`get` gives None for a clock that takes no attributes, or when the clock has
    ``limit`` queues already and none for this delay.
    """

    __slots__ = ("attribute", "factory", "limit")

    def __init__(self, attribute: str, factory: Callable[[Any, float], DueQueue],
                 limit: int) -> None:
        self.attribute = attribute
        self.factory = factory
        self.limit = limit

    def get(self, clock: Any, delay: float) -> DueQueue | None:
        queues: dict[float, DueQueue] | None = getattr(clock, self.attribute, None)
        if queues is None:
            queues = {}
            try:
                setattr(clock, self.attribute, queues)
            except (AttributeError, TypeError):
                return None
        queue = queues.get(delay)
        if queue is None and len(queues) < self.limit:
            queue = queues[delay] = self.factory(clock, delay)
        return queue


_TIMER_QUEUES: Final = QueuesByClock("_sipcalling_timer_queues", _TimerQueue, MAX_DELAYS)


def schedule(clock: Any, delay: float, fire: Fire, name: str,
             callback: Callable[[], None]) -> DelayedCall:
    """``clock.callLater(delay, fire, name, callback)``, usually without a DelayedCall."""
    if delay > 0:
        queue = _TIMER_QUEUES.get(clock, delay)
        if isinstance(queue, _TimerQueue):
            pending = Pending(fire, name, callback, queue)
            queue.push(pending)
            return pending
    result: DelayedCall = clock.callLater(delay, fire, name, callback)
    return result
