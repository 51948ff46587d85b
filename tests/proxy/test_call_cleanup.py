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


def test_after_the_2xx_the_retired_transactions_still_do_what_accepted_did(
    proxy: tuple[Any, Any, Clock],
) -> None:
    # RFC 6026, through the real proxy: the server and client INVITE transactions
    # have retired at the 2xx, and for Timers L and M the table stands in for them.
    stack, wire, clock = proxy
    receive = stack.endpoint.data_received
    clock.advance(40)  # the fixture's REGISTER transaction is gone
    receive(invite(1), CALLER, None)
    forwarded = sent(wire, b"INVITE")
    ok = answer(forwarded, 200, "OK", "t1", True)
    receive(ok, CALLEE, None)
    assert stack.table.live == 0 and stack.table.retired == 2
    wire.sent.clear()
    # The callee retransmits its 2xx (our ACK has not reached it): the caller gets it,
    # without our Via, sent back the way the INVITE came (rport).
    receive(ok, CALLEE, None)
    ((data, dest),) = wire.sent
    assert data.startswith(b"SIP/2.0 200") and dest == (CALLER.host, CALLER.port)
    assert data.count(b"Via:") == 1 and b"branch=z9hG4bKi1" in data
    wire.sent.clear()
    # A provisional arriving late on that branch is discarded (RFC 6026 §8.4).
    receive(answer(forwarded, 180, "Ringing", "t1", False), CALLEE, None)
    assert wire.sent == []
    # The caller retransmits its INVITE: absorbed, not forwarded again (§8.7).
    receive(invite(1), CALLER, None)
    assert wire.sent == []
    # A CANCEL crossing the 200 is answered 200 and cancels nothing (§9.2).
    cancel = invite(1).split(b"\r\n\r\n")[0].replace(b"INVITE sip:", b"CANCEL sip:", 1)
    cancel = cancel.replace(b"CSeq: 1 INVITE", b"CSeq: 1 CANCEL")
    cancel = cancel.replace(b"Content-Type: application/sdp\r\n", b"")
    cancel = cancel.split(b"Content-Length:")[0] + b"Content-Length: 0\r\n\r\n"
    receive(cancel, CALLER, None)
    ((data, _),) = wire.sent
    assert data.startswith(b"SIP/2.0 200") and b"CSeq: 1 CANCEL" in data
    assert stack.table.retired == 3  # and the CANCEL's own, answered (Timer J)
    clock.advance(40)  # Timers L, M and J
    assert len(stack.table) == 0
