"""Lingering transactions: answered, absorbing retransmissions until their wait timer.

What they keep (the response's bytes, not the request), how the table counts them, the
shared expiry queue that replaces one reactor timer each, and how overload control
counts them apart from work in progress.
"""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

from twisted.internet.task import Clock

from sipcore.message import Request, Response, make_response, parse
from sipcore.transaction import (
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    State,
    TransactionTable,
)
from sipcore.transaction.sent import SentResponse
from sipcore.twisted.protection import OverloadGuard, Protection, ProtectionConfig
from sipcore.twisted.stack import SipStack
from sipcore.twisted.transport import Address

from .txhelpers import RecordingTU, Wire, request, response, responses_on_the_wire, statuses

J = 32.0  # 64*T1 with the default T1


def server_tx(
    method: str = "REGISTER", n: int = 0, clock: Clock | None = None
) -> tuple[Any, Wire, RecordingTU, Clock, Request]:
    clock = clock or Clock()
    wire, tu = Wire(), RecordingTU()
    req = request(method, branch=f"z9hG4bKlinger{n}")
    kind = ServerInviteTransaction if method == "INVITE" else ServerNonInviteTransaction
    kwargs = {"trying_delay": None} if method == "INVITE" else {}
    tx = kind(req, wire, tu, clock, **kwargs)
    return tx, wire, tu, clock, req


def test_completed_non_invite_keeps_only_the_response_bytes() -> None:
    tx, wire, tu, clock, req = server_tx()
    table = TransactionTable()
    table.add(tx)
    assert (len(table), table.lingering, table.live) == (1, 0, 1)
    ok = response(req, 200, to_tag="t1")
    tx.send_response(ok)
    assert tx.state is State.COMPLETED and tx.lingering
    assert tx.request is None  # nothing resends or reads the REGISTER any more
    assert isinstance(tx.final_response, SentResponse)
    assert tx.final_response == ok and tx.final_response.serialise() == ok.serialise()
    assert (len(table), table.lingering, table.live) == (1, 1, 0)
    first = wire.take()
    assert [m.serialise() for m in first] == [ok.serialise()]
    # A retransmission still gets the same bytes, and still matches by key.
    assert table.match_server(req) is tx
    tx.receive_request(req)
    assert [m.serialise() for m in wire.take()] == [ok.serialise()]
    assert tx.active_timers == {"J"}
    clock.advance(J)
    assert tx.state is State.TERMINATED
    assert (len(table), table.lingering) == (0, 0)
    assert tu.names() == ["terminated"]


def test_sent_response_reparses_only_on_demand() -> None:
    req = request("REGISTER")
    ok = make_response(req, 200, to_tag="t1")
    ok.headers.add("Contact", "<sip:alice@192.0.2.1>;expires=60")
    sent = SentResponse(ok)
    sent.settle()
    assert sent.top_via.branch == req.top_via.branch
    assert sent.headers.get("Contact") == "<sip:alice@192.0.2.1>;expires=60"
    assert sent.to.tag == "t1" and sent.status == 200 and sent.reason == "OK"
    assert parse(sent.serialise()) == ok


def test_one_reactor_timer_serves_every_lingering_transaction() -> None:
    clock = Clock()
    txs = []
    for n in range(50):
        tx, _, _, _, req = server_tx(n=n, clock=clock)
        tx.send_response(response(req, 200, to_tag="t"))
        txs.append(tx)
        clock.advance(0.25)
    # 50 transactions waiting out Timer J, one DelayedCall between them.
    assert len(clock.getDelayedCalls()) == 1
    # Each one still ends exactly J after its own answer.
    clock.advance(J - 50 * 0.25)  # now = J: the first one is due
    assert [tx.state for tx in txs[:2]] == [State.TERMINATED, State.COMPLETED]
    clock.advance(0.25 - 1 / 64)
    assert txs[1].state is State.COMPLETED
    clock.advance(1 / 64)
    assert txs[1].state is State.TERMINATED
    clock.advance(J)
    assert all(tx.state is State.TERMINATED for tx in txs)
    assert clock.getDelayedCalls() == []


def test_transport_error_while_lingering_ends_once() -> None:
    tx, _, tu, clock, req = server_tx()
    tx.send_response(response(req, 200, to_tag="t1"))
    tx.transport_error()
    assert tx.state is State.TERMINATED and tx.active_timers == frozenset()
    assert tu.names() == ["transport_failed", "terminated"]
    clock.advance(J)  # its queue entry comes up and is skipped
    assert tu.names() == []


def test_accepted_invite_server_still_passes_acks_and_2xx_retransmissions() -> None:
    tx, wire, tu, clock, req = server_tx("INVITE")
    ok = response(req, 200, to_tag="t1")
    tx.send_response(ok)
    assert tx.state is State.ACCEPTED and tx.lingering and tx.request is None
    assert wire.take() == [ok]
    tx.receive_request(req)  # an INVITE retransmission is absorbed (RFC 6026 §8.7)
    assert wire.take() == []
    again = response(req, 200, to_tag="t1")
    tx.send_response(again)  # the TU's 2xx retransmission (RFC 6026 §8.6)
    assert wire.take() == [again]
    ack = request("ACK", branch="z9hG4bKlinger0", cseq_method="ACK", to_tag="t1")
    tx.receive_request(ack)
    assert tu.take() == [("ack_received", ack)]
    assert tx.active_timers == {"L"}
    clock.advance(J)
    assert tx.state is State.TERMINATED


def test_completed_invite_server_resends_bytes_on_timer_g() -> None:
    tx, wire, _, clock, req = server_tx("INVITE")
    busy = response(req, 486, to_tag="t1")
    tx.send_response(busy)
    assert tx.lingering and tx.request is None
    assert wire.take() == [busy]
    clock.advance(0.5)  # Timer G
    assert wire.take() == [busy]


def test_accepted_invite_client_keeps_its_request_for_forked_2xx() -> None:
    clock, wire, tu = Clock(), Wire(), RecordingTU()
    req = request("INVITE")
    tx = ClientInviteTransaction(req, wire, tu, clock)
    tx.start()
    tx.receive_response(response(req, 200, to_tag="t1"))
    assert tx.state is State.ACCEPTED and tx.lingering
    assert tx.request is req  # the TU builds a dialog from it for each 2xx
    fork = response(req, 200, to_tag="t2")
    tx.receive_response(fork)
    assert tu.take()[-1] == ("response_received", fork)


def test_overload_counts_lingering_apart_from_live() -> None:
    guard = OverloadGuard(Clock(), max_transactions=10, max_lag=0.0, max_lingering=100)
    assert not guard.overloaded(9, lingering=99)
    assert guard.overloaded(10, lingering=0)
    assert guard.overloaded(0, lingering=100)
    assert not guard.overloaded(0, in_dialog=True, lingering=199)
    assert guard.overloaded(0, in_dialog=True, lingering=200)


class _AnsweringRole:
    """Answers every request 200 at once, so its transactions linger."""

    def request_received(self, request: Request, tx: Any, source: Address) -> None:
        tx.send_response(make_response(request, 200, to_tag="a"))

    def ack_received(self, ack: Request, source: Address) -> None:
        pass

    def cancel_received(self, cancel: Request, invite_tx: Any, source: Address) -> None:
        pass

    def stray_response(self, response: Response, source: Address) -> None:
        pass

    def server_ack_received(self, tx: Any, ack: Request) -> None:
        pass

    def server_tx_ended(self, tx: Any, reason: str) -> None:
        pass


def _stack(**config: Any) -> tuple[SipStack, list[Response]]:
    clock = Clock()
    config.setdefault("max_lag", 0.0)
    stack = SipStack(clock, _AnsweringRole(), log_messages=False,
                     protection=Protection(clock, ProtectionConfig(**config)))
    sent = responses_on_the_wire(stack)
    return stack, sent


def test_answered_requests_do_not_fill_the_live_cap() -> None:
    stack, sent = _stack(max_transactions=3, max_lingering=5)
    source = Address("UDP", "192.0.2.9", 5060)
    for n in range(7):
        stack.message_received(request("OPTIONS", branch=f"z9hG4bKo{n}"), source)
    # 3 would have been the cap when answered ones counted; now 5 linger, then 503.
    assert [r.status for r in sent] == [200] * 5 + [503, 503]
    assert (stack.table.lingering, stack.table.live) == (5, 0)


def test_a_lingering_transaction_is_small() -> None:
    """Regression guard for the figure bench/memory.py prints (about 1.2 KB)."""
    clock = Clock()
    wire = Wire()
    tu = RecordingTU()
    reqs = [request("REGISTER", branch=f"z9hG4bKsize{n}", call_id=f"c{n}@x")
            for n in range(2000)]
    answers = [response(r, 200, to_tag="t") for r in reqs]
    table = TransactionTable()
    gc.collect()
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    for req, ok in zip(reqs, answers, strict=True):
        tx = ServerNonInviteTransaction(req, wire, tu, clock)
        table.add(tx)
        tx.send_response(ok)
    del req, ok, reqs, answers
    wire.take()
    gc.collect()
    used, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert table.lingering == 2000
    # The requests and parsed responses are freed with the test's own references;
    # what is left per transaction is the tx, its key, the bytes and a queue entry.
    assert (used - base) / 2000 < 2500


def test_a_failing_tu_does_not_hold_up_the_others() -> None:
    class Exploding(RecordingTU):
        def terminated(self, tx: Any) -> None:
            raise RuntimeError("bug in a TU")

    clock = Clock()
    bad, _, _, _, req = server_tx(n=1, clock=clock)
    bad.tu = Exploding()
    good, _, good_tu, _, req2 = server_tx(n=2, clock=clock)
    bad.send_response(response(req, 200, to_tag="t"))
    good.send_response(response(req2, 200, to_tag="t"))
    clock.advance(J)
    assert bad.state is State.TERMINATED and good.state is State.TERMINATED
    assert good_tu.names() == ["terminated"]


# -- retired transactions: the table absorbs retransmissions itself -------------------


class _Owner:
    """The hooks a table's owner (SipStack) sets so transactions can retire."""

    def __init__(self, table: TransactionTable, route: tuple[str, str, int] | None) -> None:
        self.route = route
        self.resent: list[tuple[bytes, str, str, int]] = []
        table.resend = self.resend
        table.route_of = self.route_of

    def resend(self, data: bytes, transport: str, host: str, port: int) -> None:
        self.resent.append((data, transport, host, port))

    def route_of(self, tx: Any) -> tuple[str, str, int] | None:
        return self.route


def test_an_answered_non_invite_retires_into_the_table_until_timer_j() -> None:
    tx, wire, tu, clock, req = server_tx()
    table = TransactionTable()
    owner = _Owner(table, ("UDP", "192.0.2.7", 5070))
    table.add(tx)
    ok = response(req, 200, to_tag="t1")
    tx.send_response(ok)
    [first] = wire.take()
    # The transaction itself is done and told its TU so; the table absorbs from now on.
    assert tx.state is State.TERMINATED and tu.names() == ["terminated"]
    assert (len(table), table.lingering, table.live, table.retired) == (1, 1, 0, 1)
    assert table.match_server(req) is None
    assert table.absorb(req) and table.absorb(req)
    assert owner.resent == [(first.serialise(), "UDP", "192.0.2.7", 5070)] * 2
    assert first.serialise() == ok.serialise()
    # Another request (another branch) is not absorbed.
    assert not table.absorb(request("REGISTER", branch="z9hG4bKother"))
    clock.advance(J - 0.5)
    assert table.absorb(req)
    clock.advance(0.5)
    assert (len(table), table.lingering, table.retired) == (0, 0, 0)
    assert not table.absorb(req)
    assert len(owner.resent) == 3


def test_without_a_route_or_with_an_observer_a_transaction_lingers_itself() -> None:
    no_route, _, _, _, req1 = server_tx(n=1)
    observed, _, _, _, req2 = server_tx(n=2)
    table = TransactionTable()
    _Owner(table, None)
    table.add(no_route)
    no_route.send_response(response(req1, 200, to_tag="t"))
    assert no_route.state is State.COMPLETED and table.match_server(req1) is no_route
    table.route_of = lambda tx: ("UDP", "192.0.2.7", 5070)
    table.add(observed)
    seen: list[Any] = []
    observed.add_terminated_observer(seen.append)  # someone waits for the real end
    observed.send_response(response(req2, 200, to_tag="t"))
    assert observed.state is State.COMPLETED and seen == []
    assert (table.lingering, table.retired) == (2, 0)


def test_invite_server_transactions_do_not_retire() -> None:
    tx, _, _, _, req = server_tx("INVITE")
    table = TransactionTable()
    _Owner(table, ("UDP", "192.0.2.7", 5070))
    table.add(tx)
    tx.send_response(response(req, 486, to_tag="t"))
    assert tx.state is State.COMPLETED and table.retired == 0  # waits for its ACK


def test_retired_entries_are_invisible_to_the_garbage_collector() -> None:
    clock = Clock()
    table = TransactionTable()
    _Owner(table, ("UDP", "192.0.2.7", 5070))
    for n in range(200):
        tx, _, _, _, req = server_tx(n=n, clock=clock)
        table.add(tx)
        tx.send_response(response(req, 200, to_tag="t"))
    del tx, req
    gc.collect()
    assert table.retired == 200
    # What a collection pass has to visit: nothing per entry but the dicts' slots.
    entries = list(table._retired.items())
    assert not any(gc.is_tracked(key) or gc.is_tracked(entry) for key, entry in entries)


class _RawPort:
    """A UDP socket that keeps the bytes written to it."""

    def __init__(self) -> None:
        self.written: list[tuple[bytes, tuple[str, int]]] = []

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        self.written.append((data, addr))


class _CountingRole(_AnsweringRole):
    def __init__(self) -> None:
        self.requests = 0

    def request_received(self, request: Request, tx: Any, source: Address) -> None:
        self.requests += 1
        super().request_received(request, tx, source)


def test_the_stack_resends_the_same_bytes_to_a_retransmission_over_udp() -> None:
    clock = Clock()
    role = _CountingRole()
    stack = SipStack(clock, role, log_messages=False)
    port = stack.endpoint.udp = _RawPort()  # type: ignore[attr-defined]
    source = Address("UDP", "192.0.2.9", 5062)
    options = request("OPTIONS", branch="z9hG4bKretx")
    stack.message_received(options, source)
    assert stack.table.retired == 1 and role.requests == 1
    stack.message_received(request("OPTIONS", branch="z9hG4bKretx"), source)
    assert role.requests == 1  # absorbed, not a new request
    first, again = port.written
    assert first == again  # the same bytes to the same address (§18.2.2 by the Via)
    clock.advance(J)
    assert stack.table.retired == 0 and len(stack.table) == 0
    stack.message_received(request("OPTIONS", branch="z9hG4bKretx"), source)
    assert role.requests == 2  # after Timer J the same branch is a new transaction


def test_the_stack_does_not_retire_over_tcp() -> None:
    clock = Clock()
    stack = SipStack(clock, _AnsweringRole(), log_messages=False)
    responses_on_the_wire(stack)
    stack.message_received(request("OPTIONS", branch="z9hG4bKtcp"),
                           Address("TCP", "192.0.2.9", 40000))
    # Timer J is zero over a reliable transport (§17.2.2): nothing lingers at all.
    assert (len(stack.table), stack.table.retired) == (0, 0)


# -- Accepted INVITE transactions retire too, for an owner whose TU allows it ----------


def _proxy_table() -> tuple[TransactionTable, _Owner]:
    table = TransactionTable()
    owner = _Owner(table, ("UDP", "192.0.2.7", 5070))
    table.retire_accepted = True  # what SipStack sets for a proxy role
    return table, owner


def test_an_accepted_invite_server_retires_and_absorbs_until_timer_l() -> None:
    tx, wire, tu, clock, req = server_tx("INVITE")
    table, owner = _proxy_table()
    table.add(tx)
    ok = response(req, 200, to_tag="t1")
    tx.send_response(ok)
    assert wire.take() == [ok]
    assert tx.state is State.TERMINATED and tu.names() == ["terminated"]
    assert (len(table), table.lingering, table.live, table.retired) == (1, 1, 0, 1)
    assert table.match_server(req) is None
    # RFC 6026 §8.7: INVITE retransmissions are absorbed, and nothing is resent for
    # them (the 2xx is retransmitted by the UAS end to end, not by us).
    assert table.absorb(req) and table.absorb(req)
    assert owner.resent == []
    # An ACK on the INVITE's branch is for the TU to forward, not absorbed.
    ack = request("ACK", branch="z9hG4bKlinger0", cseq_method="ACK", to_tag="t1")
    assert not table.absorb(ack)
    # A CANCEL that comes too late is answered 200 and does nothing (§9.2).
    cancel = request("CANCEL", branch="z9hG4bKlinger0")
    assert table.match_cancel(cancel) is None and table.answered_invite(cancel)
    assert not table.answered_invite(request("CANCEL", branch="z9hG4bKother"))
    clock.advance(J)
    assert (len(table), table.lingering, table.retired) == (0, 0, 0)
    assert not table.absorb(req) and not table.answered_invite(cancel)


def test_an_accepted_invite_client_retires_and_lets_only_2xx_through() -> None:
    clock, wire, tu = Clock(), Wire(), RecordingTU()
    req = request("INVITE", branch="z9hG4bKout1")
    tx = ClientInviteTransaction(req, wire, tu, clock)
    table, _ = _proxy_table()
    table.add(tx)
    tx.start()
    ok = response(req, 200, to_tag="t1")
    tx.receive_response(ok)
    # The TU got the 2xx first; then the transaction ended and the table took over.
    assert tu.take() == [("response_received", ok), ("terminated", None)]
    assert tx.state is State.TERMINATED and table.match_client(ok) is None
    assert (table.lingering, table.live, table.retired) == (1, 0, 1)
    # RFC 6026 §8.4: a 2xx (retransmission, another fork) is not absorbed: the owner
    # forwards it as a late 2xx; anything else from that branch is discarded.
    assert not table.absorb_response(response(req, 200, to_tag="t2"))
    assert table.absorb_response(response(req, 180, to_tag="t3"))
    assert table.absorb_response(response(req, 486, to_tag="t3"))
    other = request("INVITE", branch="z9hG4bKout2")
    assert not table.absorb_response(response(other, 486, to_tag="t3"))
    clock.advance(J)
    assert (len(table), table.lingering, table.retired) == (0, 0, 0)
    assert not table.absorb_response(response(req, 486, to_tag="t3"))


def test_accepted_invites_linger_themselves_for_a_user_agent() -> None:
    # A UA core retransmits its 2xx through the server transaction and ACKs every 2xx
    # the client one passes up (§13.3.1.4, §13.2.2.4): its table keeps them whole.
    server, _, _, _, req = server_tx("INVITE")
    clock, wire, tu = Clock(), Wire(), RecordingTU()
    out = request("INVITE", branch="z9hG4bKout3")
    client = ClientInviteTransaction(out, wire, tu, clock)
    table = TransactionTable()
    _Owner(table, ("UDP", "192.0.2.7", 5070))
    table.add(server)
    table.add(client)
    client.start()
    server.send_response(response(req, 200, to_tag="t1"))
    client.receive_response(response(out, 200, to_tag="t2"))
    assert server.state is State.ACCEPTED and client.state is State.ACCEPTED
    assert (table.lingering, table.retired) == (2, 0)


def test_rfc_2543_and_observed_invites_do_not_retire() -> None:
    table, _ = _proxy_table()
    old = request("INVITE", branch=None)
    tx2543 = ServerInviteTransaction(old, Wire(), RecordingTU(), Clock(), trying_delay=None)
    table.add(tx2543)
    tx2543.send_response(response(old, 200, to_tag="t1"))
    assert tx2543.state is State.ACCEPTED  # its ACK key is filed with the transaction
    observed, _, _, _, req = server_tx("INVITE", n=5)
    table.add(observed)
    seen: list[Any] = []
    observed.add_terminated_observer(seen.append)
    observed.send_response(response(req, 200, to_tag="t1"))
    assert observed.state is State.ACCEPTED and seen == []
    assert (table.lingering, table.retired) == (2, 0)


class _ProxyLikeRole(_CountingRole):
    retire_accepted_invites = True

    def __init__(self) -> None:
        super().__init__()
        self.strays: list[Response] = []
        self.acks: list[Request] = []

    def request_received(self, request: Request, tx: Any, source: Address) -> None:
        self.requests += 1
        tx.send_response(make_response(request, 200, to_tag="a"))

    def stray_response(self, response: Response, source: Address) -> None:
        self.strays.append(response)

    def ack_received(self, ack: Request, source: Address) -> None:
        self.acks.append(ack)


def test_the_stack_retires_accepted_invites_for_a_role_that_allows_it() -> None:
    clock = Clock()
    role = _ProxyLikeRole()
    stack = SipStack(clock, role, log_messages=False)
    sent = responses_on_the_wire(stack)
    source = Address("UDP", "192.0.2.9", 5062)
    invite = request("INVITE", branch="z9hG4bKinv")
    stack.message_received(invite, source)
    assert role.requests == 1 and stack.table.retired == 1 and stack.table.live == 0
    stack.message_received(request("INVITE", branch="z9hG4bKinv"), source)
    assert role.requests == 1 and statuses(sent) == [200]  # absorbed, nothing resent
    stack.message_received(request("CANCEL", branch="z9hG4bKinv"), source)
    assert statuses(sent) == [200, 200]  # the CANCEL's own 200, too late to matter
    ack = request("ACK", branch="z9hG4bKinv", cseq_method="ACK", to_tag="a")
    stack.message_received(ack, source)
    assert role.acks == [ack]  # forwarded by the role like any ACK for a 2xx
    # Our own INVITE, answered 2xx, then another 2xx and a stray 180 on its branch.
    out = request("INVITE", branch="z9hG4bKours")
    stack.send_request(out, Address("UDP", "192.0.2.10", 5060), RecordingTU())
    stack.message_received(response(out, 200, to_tag="b1"), source)
    stack.message_received(response(out, 200, to_tag="b2"), source)
    stack.message_received(response(out, 180, to_tag="b3"), source)
    assert [r.to.tag for r in role.strays] == ["b2"]
    clock.advance(J)
    assert len(stack.table) == 0
    stack.message_received(request("INVITE", branch="z9hG4bKinv"), source)
    assert role.requests == 2  # after Timer L the same branch is a new transaction


def test_a_completed_non_invite_client_retires_and_absorbs_until_timer_k() -> None:
    clock, wire, tu = Clock(), Wire(), RecordingTU()
    bye = request("BYE", branch="z9hG4bKbye1")
    tx = ClientNonInviteTransaction(bye, wire, tu, clock)
    table = TransactionTable()
    _Owner(table, ("UDP", "192.0.2.7", 5070))  # any owner: a UA's table does this too
    table.add(tx)
    tx.start()
    ok = response(bye, 200, to_tag="t1")
    tx.receive_response(ok)
    assert tu.take() == [("response_received", ok), ("terminated", None)]
    assert tx.state is State.TERMINATED and tx.tu is not tu  # lets go of its TU now
    assert (len(table), table.lingering, table.live, table.retired) == (1, 1, 0, 1)
    # §17.1.2.2: any response on that branch is a retransmission, absorbed, even a 2xx.
    assert table.absorb_response(response(bye, 200, to_tag="t1"))
    assert table.absorb_response(response(bye, 500, to_tag="t1"))
    clock.advance(5.0)  # Timer K (T4)
    assert (len(table), table.lingering, table.retired) == (0, 0, 0)
    assert not table.absorb_response(response(bye, 200, to_tag="t1"))


def test_without_an_owner_a_completed_client_lingers_itself() -> None:
    clock, wire, tu = Clock(), Wire(), RecordingTU()
    bye = request("BYE", branch="z9hG4bKbye2")
    tx = ClientNonInviteTransaction(bye, wire, tu, clock)
    table = TransactionTable()  # nobody would ask it to absorb responses
    table.add(tx)
    tx.start()
    tx.receive_response(response(bye, 200, to_tag="t1"))
    assert tx.state is State.COMPLETED and table.match_client(response(bye, 200)) is tx
    assert tx.active_timers == {"K"}
