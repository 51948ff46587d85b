"""sipcore.transaction.due: timers sharing one reactor timer per delay behave like
``callLater`` ones (same firing times, cancel means never), and cancelled ones do not
pile up."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import task

from sipcore.transaction.due import COMPACT_AFTER, MAX_DELAYS, Pending, schedule


class Recorder:
    def __init__(self, clock: task.Clock) -> None:
        self.clock = clock
        self.fired: list[tuple[float, str]] = []

    def fire(self, name: str, callback: Callable[[], None]) -> None:
        self.fired.append((self.clock.seconds(), name))
        callback()


def nothing() -> None:
    pass


def queue_lengths(clock: task.Clock) -> dict[float, int]:
    return {delay: len(q.items) for delay, q in clock._sipcalling_timer_queues.items()}


def test_timers_fire_at_their_deadlines_in_order() -> None:
    clock = task.Clock()
    rec = Recorder(clock)
    for i in range(3):
        call = schedule(clock, 0.5, rec.fire, f"A{i}", nothing)
        assert isinstance(call, Pending) and call.active()
        clock.advance(0.1)
    schedule(clock, 32.0, rec.fire, "B", nothing)
    clock.advance(0.25)  # t = 0.55: only A0 (due at 0.5) is due
    assert rec.fired == [(pytest.approx(0.55), "A0")]
    clock.advance(0.1)
    assert rec.fired[1:] == [(pytest.approx(0.65), "A1")]
    clock.advance(0.1)
    assert [name for _, name in rec.fired] == ["A0", "A1", "A2"]
    clock.advance(31.0)  # t = 31.75
    assert rec.fired[-1][1] == "A2"
    clock.advance(0.55)  # t = 32.3: B, started at 0.3
    assert rec.fired[-1] == (pytest.approx(32.3), "B")
    assert len(clock.getDelayedCalls()) == 0  # nothing left armed


def test_a_cancelled_timer_never_runs_and_lets_go_of_its_starter() -> None:
    clock = task.Clock()
    rec = Recorder(clock)
    call = schedule(clock, 1.0, rec.fire, "F", nothing)
    call.cancel()
    assert not call.active()
    call.cancel()  # again: no error, as callers may cancel twice
    assert isinstance(call, Pending) and call.fire is None and call.callback is None
    clock.advance(2.0)
    assert rec.fired == []


def test_a_fired_timer_is_inactive() -> None:
    clock = task.Clock()
    rec = Recorder(clock)
    call = schedule(clock, 1.0, rec.fire, "E", nothing)
    clock.advance(1.0)
    assert rec.fired == [(1.0, "E")] and not call.active()
    call.cancel()  # after it ran: a no-op


def test_cancelled_entries_are_dropped_from_the_queue() -> None:
    # 10,000 calls' Timer B, each cancelled by the 200 OK: the queue keeps a bounded
    # number of dead entries, not 10,000 for 32 s.
    clock = task.Clock()
    rec = Recorder(clock)
    live = [schedule(clock, 32.0, rec.fire, "live", nothing) for _ in range(10)]
    for _ in range(10_000):
        schedule(clock, 32.0, rec.fire, "B", nothing).cancel()
    assert queue_lengths(clock)[32.0] <= len(live) + max(COMPACT_AFTER, len(live)) + 1
    clock.advance(32.0)
    assert [name for _, name in rec.fired] == ["live"] * 10


def test_a_push_during_an_expiry_pass_does_not_delay_the_next_entry() -> None:
    clock = task.Clock()
    rec = Recorder(clock)

    def again() -> None:  # like Timer E restarting itself with the same interval
        schedule(clock, 1.0, rec.fire, "Z", nothing)

    schedule(clock, 1.0, rec.fire, "X", again)
    clock.advance(0.5)
    schedule(clock, 1.0, rec.fire, "Y", nothing)
    clock.advance(0.5)  # t = 1.0: X runs and queues Z for 2.0
    clock.advance(0.5)  # t = 1.5: Y is due now, not with Z
    assert rec.fired == [(1.0, "X"), (1.5, "Y")]
    clock.advance(0.5)
    assert rec.fired[-1] == (2.0, "Z")


def test_a_callback_cancelling_its_siblings_mid_pass() -> None:
    # A branch's final response cancels the other timers of its queue while the queue
    # is expiring (and the cancels may compact the very deque being expired).
    clock = task.Clock()
    rec = Recorder(clock)
    siblings: list[Any] = []

    def cancel_siblings() -> None:
        for call in siblings:
            call.cancel()

    schedule(clock, 1.0, rec.fire, "first", cancel_siblings)
    siblings.extend(schedule(clock, 1.0, rec.fire, f"s{i}", nothing)
                    for i in range(3 * COMPACT_AFTER))
    clock.advance(0.5)
    schedule(clock, 1.0, rec.fire, "later", nothing)
    clock.advance(0.5)
    assert rec.fired == [(1.0, "first")]
    clock.advance(0.5)
    assert rec.fired == [(1.0, "first"), (1.5, "later")]


def test_a_failing_callback_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    clock = task.Clock()
    rec = Recorder(clock)

    def boom() -> None:
        raise RuntimeError("boom")

    schedule(clock, 1.0, rec.fire, "bad", boom)
    schedule(clock, 1.0, rec.fire, "good", nothing)
    with caplog.at_level(logging.ERROR, logger="sipcore.transaction"):
        clock.advance(1.0)
    assert [name for _, name in rec.fired] == ["bad", "good"]
    assert "error on expiry" in caplog.text


def test_zero_delay_goes_to_call_later() -> None:
    clock = task.Clock()
    rec = Recorder(clock)
    call = schedule(clock, 0.0, rec.fire, "now", nothing)
    assert not isinstance(call, Pending)
    clock.advance(0)
    assert rec.fired == [(0.0, "now")]


def test_past_max_delays_timers_go_to_call_later() -> None:
    clock = task.Clock()
    rec = Recorder(clock)
    calls = [schedule(clock, 1.0 + i / 1000, rec.fire, str(i), nothing)
             for i in range(MAX_DELAYS + 5)]
    assert sum(isinstance(c, Pending) for c in calls) == MAX_DELAYS
    calls[-1].cancel()
    clock.advance(2.0)
    assert sorted(int(name) for _, name in rec.fired) == list(range(MAX_DELAYS + 4))


class SlottedClock:
    """A clock that takes no attributes (the queues cannot be kept on it)."""

    __slots__ = ("inner",)

    def __init__(self) -> None:
        self.inner = task.Clock()

    def seconds(self) -> float:
        return self.inner.seconds()

    def callLater(self, delay: float, f: Any, *args: Any) -> Any:  # noqa: N802
        return self.inner.callLater(delay, f, *args)


def test_a_clock_without_attributes_gets_call_later() -> None:
    clock = SlottedClock()
    fired: list[str] = []
    call = schedule(clock, 1.0, lambda name, cb: fired.append(name), "T", nothing)
    assert not isinstance(call, Pending)
    clock.inner.advance(1.0)
    assert fired == ["T"]


# Any sequence of starts, cancels and clock advances fires the same timers at the same
# times as one DelayedCall per timer would.
DELAYS = (0.5, 1.0, 2.0, 4.0, 32.0)
operation = st.one_of(
    st.tuples(st.just("start"), st.sampled_from(DELAYS)),
    st.tuples(st.just("cancel"), st.integers(0, 200)),
    st.tuples(st.just("advance"), st.sampled_from((0.0, 0.25, 0.5, 1.0, 3.0, 40.0))),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(operation, max_size=80))
def test_same_as_one_delayed_call_each(ops: list[tuple[str, Any]]) -> None:
    ours, theirs = task.Clock(), task.Clock()
    fired_ours: list[tuple[float, str]] = []
    fired_theirs: list[tuple[float, str]] = []
    calls_ours: list[Any] = []
    calls_theirs: list[Any] = []
    for kind, value in ops:
        if kind == "start":
            name = str(len(calls_ours))
            calls_ours.append(schedule(
                ours, value, lambda n, cb: fired_ours.append((ours.seconds(), n)), name,
                nothing))
            calls_theirs.append(theirs.callLater(
                value, lambda n: fired_theirs.append((theirs.seconds(), n)), name))
        elif kind == "cancel" and calls_ours:
            i = value % len(calls_ours)
            assert calls_ours[i].active() == calls_theirs[i].active()
            if calls_theirs[i].active():
                calls_theirs[i].cancel()
                calls_ours[i].cancel()
        elif kind == "advance":
            ours.advance(value)
            theirs.advance(value)
            assert sorted(fired_ours) == sorted(fired_theirs)
    ours.advance(100.0)
    theirs.advance(100.0)
    assert sorted(fired_ours) == sorted(fired_theirs)
