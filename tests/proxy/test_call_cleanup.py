"""What a call leaves behind in the proxy once its transactions have ended.

Everything a proxied call allocates must be freed by reference counting when its last
transaction ends: state that only the cyclic garbage collector can free piles up for
its next pass (64 objects a call before the context/branch and transaction/TU cycles
were broken), and at 1,200 calls/s those passes paused the proxy for 0.75 s.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from twisted.internet.task import Clock

from bench.hotpath import CALLEE, CALLER, answer, in_dialog, invite, make_proxy, register
from sipcore.transaction import State
from sipcore.transaction.base import NULL_TU


@pytest.fixture
def proxy() -> Iterator[tuple[Any, Any, Clock]]:
    clock = Clock()
    stack, wire = make_proxy(clock)
    stack.endpoint.data_received(
        register(0, 0).replace(b"u0@", b"callee@"), CALLEE, None)
    wire.sent.clear()
    yield stack, wire, clock


def sent(wire: Any, start: bytes) -> bytes:
    return next(d for d, _ in wire.sent if d.startswith(start))


def answered_call(stack: Any, wire: Any, n: int) -> None:
    receive = stack.endpoint.data_received
    receive(invite(n), CALLER, None)
    forwarded = sent(wire, b"INVITE")
    receive(answer(forwarded, 180, "Ringing", f"t{n}", False), CALLEE, None)
    receive(answer(forwarded, 200, "OK", f"t{n}", True), CALLEE, None)
    assert sent(wire, b"SIP/2.0 200")
    receive(in_dialog("ACK", n, 1, f"z9hG4bKa{n}", f"t{n}"), CALLER, None)
    receive(in_dialog("BYE", n, 2, f"z9hG4bKb{n}", f"t{n}"), CALLER, None)
    receive(answer(sent(wire, b"BYE"), 200, "OK", f"t{n}", False), CALLEE, None)
    wire.sent.clear()


def busy_call(stack: Any, wire: Any, n: int) -> None:
    receive = stack.endpoint.data_received
    receive(invite(n), CALLER, None)
    receive(answer(sent(wire, b"INVITE"), 486, "Busy Here", f"t{n}", False), CALLEE, None)
    assert sent(wire, b"SIP/2.0 486")
    # The caller's ACK for a non-2xx is hop by hop: same branch as its INVITE.
    receive(in_dialog("ACK", n, 1, f"z9hG4bKi{n}", f"t{n}"), CALLER, None)
    wire.sent.clear()


def cancelled_call(stack: Any, wire: Any, n: int) -> None:
    receive = stack.endpoint.data_received
    receive(invite(n), CALLER, None)
    forwarded = sent(wire, b"INVITE")
    receive(answer(forwarded, 180, "Ringing", f"t{n}", False), CALLEE, None)
    cancel = invite(n).split(b"\r\n\r\n")[0].replace(b"INVITE sip:", b"CANCEL sip:", 1)
    cancel = cancel.replace(b"CSeq: 1 INVITE", b"CSeq: 1 CANCEL")
    cancel = cancel.replace(b"Content-Type: application/sdp\r\n", b"")
    cancel = cancel.split(b"Content-Length:")[0] + b"Content-Length: 0\r\n\r\n"
    receive(cancel, CALLER, None)
    # The callee answers the CANCEL and the INVITE (487); the caller ACKs the 487.
    receive(answer(sent(wire, b"CANCEL"), 200, "OK", f"t{n}", False), CALLEE, None)
    receive(answer(forwarded, 487, "Request Terminated", f"t{n}", False), CALLEE, None)
    assert sent(wire, b"SIP/2.0 487")
    receive(in_dialog("ACK", n, 1, f"z9hG4bKi{n}", f"t{n}"), CALLER, None)
    wire.sent.clear()


@pytest.mark.parametrize("flow", [answered_call, busy_call, cancelled_call])
def test_an_ended_call_leaves_no_cyclic_garbage(
    proxy: tuple[Any, Any, Clock], flow: Callable[[Any, Any, int], None]
) -> None:
    stack, wire, clock = proxy
    flow(stack, wire, 0)  # first-use allocations (caches, interned names) out of the way
    clock.advance(300)
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        for n in range(1, 21):
            flow(stack, wire, n)
        assert stack.table.live + stack.table.lingering > 0
        for _ in range(60):  # past Timers L, M, K, J, B, C and the cancel guard
            clock.advance(5)
        assert stack.table.live == stack.table.lingering == 0
        assert not stack.role.contexts
        assert gc.collect() == 0
    finally:
        if enabled:
            gc.enable()


def test_a_terminated_transaction_lets_go_of_its_tu(proxy: tuple[Any, Any, Clock]) -> None:
    stack, wire, clock = proxy
    stack.endpoint.data_received(invite(1), CALLER, None)
    (tx,) = [t for t in stack.table._client.values() if t.method == "INVITE"]
    branch = tx.tu
    assert branch.tx is tx
    stack.endpoint.data_received(
        answer(sent(wire, b"INVITE"), 486, "Busy Here", "t1", False), CALLEE, None)
    assert tx.state is State.COMPLETED
    assert tx.tu is branch  # Completed: still reports to the branch
    clock.advance(40)  # Timer D
    assert tx.state is State.TERMINATED
    assert tx.tu is NULL_TU


def test_an_answered_call_keeps_no_objects_while_its_transactions_linger(
    proxy: tuple[Any, Any, Clock],
) -> None:
    # For 32 s after an answered call (Timers L, M, J) the proxy still absorbs its
    # retransmissions: the table does that from flat, untracked entries, so tens of
    # thousands of recent calls give the garbage collector nothing to walk (18 objects
    # a call, and middle-generation passes of up to 0.95 s at 1,300 calls/s, before).
    stack, wire, clock = proxy
    answered_call(stack, wire, 0)
    clock.advance(300)
    gc.collect()
    before = len(gc.get_objects())
    for n in range(1, 201):
        answered_call(stack, wire, n)
    clock.advance(6)  # past Timer K, inside L, M and J
    gc.collect()
    assert stack.table.lingering == stack.table.retired == 3 * 200
    assert stack.table.live == 0 and not stack.role.contexts
    assert len(gc.get_objects()) - before < 200
