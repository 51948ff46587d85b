"""TransactionTable matching (RFC 3261 §17.1.3, §17.2.3 incl. the RFC 2543 fallback,
§9.2 CANCEL), removal on Terminated, and the identifier helpers."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from twisted.internet.task import Clock

from sipcore.ids import new_branch, new_call_id, new_tag
from sipcore.message import Request, Response, parse
from sipcore.transaction import (
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    State,
    TransactionTable,
)
from sipcore.transaction import new_branch as reexported_new_branch

from .txhelpers import RecordingTU, Wire, ack_for, request, response


def client(req: Request, table: TransactionTable, clock: Clock | None = None):
    cls = ClientInviteTransaction if req.method == "INVITE" else ClientNonInviteTransaction
    tx = cls(req, Wire(), RecordingTU(), clock or Clock())
    table.add(tx)
    tx.start()
    return tx


def server(req: Request, table: TransactionTable, clock: Clock | None = None, **kw):
    if req.method == "INVITE":
        tx = ServerInviteTransaction(req, Wire(), RecordingTU(), clock or Clock(), **kw)
    else:
        tx = ServerNonInviteTransaction(req, Wire(), RecordingTU(), clock or Clock(), **kw)
    table.add(tx)
    return tx


# --------------------------------------------------------------------------------------
# Identifiers
# --------------------------------------------------------------------------------------


def test_new_branch_has_magic_cookie_and_is_unique() -> None:
    branches = {new_branch() for _ in range(1000)}
    assert len(branches) == 1000
    for branch in branches:
        assert re.fullmatch(r"z9hG4bK[0-9a-f]{16}", branch)
    assert reexported_new_branch is new_branch


def test_new_tag_and_call_id() -> None:
    assert re.fullmatch(r"[0-9a-f]{16}", new_tag())
    assert new_tag() != new_tag()
    assert re.fullmatch(r"[0-9a-f]{32}", new_call_id())
    assert re.fullmatch(r"[0-9a-f]{32}@a\.lab", new_call_id("a.lab"))


# --------------------------------------------------------------------------------------
# Client side (§17.1.3)
# --------------------------------------------------------------------------------------


def test_client_match_on_branch_and_cseq_method() -> None:
    table = TransactionTable()
    tx = client(request("INVITE", branch="z9hG4bKc1"), table)
    assert tx.key == ("c", "z9hG4bKc1", "INVITE")
    assert table.match_client(response(tx.request, 180, to_tag="t")) is tx
    other_branch = response(request("INVITE", branch="z9hG4bKc2"), 180)
    assert table.match_client(other_branch) is None
    other_method = response(request("BYE", branch="z9hG4bKc1"), 200)
    assert table.match_client(other_method) is None


def test_client_response_to_cancel_matches_cancel_not_invite() -> None:
    # §9.1: the CANCEL has the INVITE's branch; §17.1.3: the CSeq method tells them apart.
    table = TransactionTable()
    invite = client(request("INVITE", branch="z9hG4bKc1"), table)
    cancel = client(request("CANCEL", branch="z9hG4bKc1"), table)
    assert table.match_client(response(cancel.request, 200)) is cancel
    assert table.match_client(response(invite.request, 487, to_tag="t")) is invite
    assert len(table) == 2


def test_client_match_ignores_unmatchable_response() -> None:
    table = TransactionTable()
    client(request("INVITE"), table)
    assert table.match_client(Response(200, headers=[("CSeq", "1 INVITE")])) is None
    bad_via = Response(200, headers=[("Via", "garbage"), ("CSeq", "1 INVITE")])
    assert table.match_client(bad_via) is None


def test_client_removed_when_terminated() -> None:
    table, clock = TransactionTable(), Clock()
    tx = client(request("OPTIONS"), table, clock)
    assert tx in table
    clock.advance(32)  # Timer F
    assert tx.state is State.TERMINATED
    assert tx not in table
    assert len(table) == 0
    assert table.match_client(response(tx.request, 200)) is None


def test_client_duplicate_key_is_refused() -> None:
    table = TransactionTable()
    client(request("INVITE", branch="z9hG4bKdup"), table)
    twin = ClientInviteTransaction(
        request("INVITE", branch="z9hG4bKdup"), Wire(), RecordingTU(), Clock()
    )
    with pytest.raises(ValueError):
        table.add(twin)


def test_terminated_transaction_is_not_added() -> None:
    table = TransactionTable()
    wire = Wire()
    wire.fail = OSError()
    tx = ClientNonInviteTransaction(request("OPTIONS"), wire, RecordingTU(), Clock())
    tx.start()
    table.add(tx)
    assert len(table) == 0


def test_remove_is_idempotent() -> None:
    table = TransactionTable()
    tx = client(request("INVITE"), table)
    table.remove(tx)
    table.remove(tx)
    assert len(table) == 0
    assert table.match_client(response(tx.request, 200, to_tag="t")) is None


# --------------------------------------------------------------------------------------
# Server side, RFC 3261 branches (§17.2.3)
# --------------------------------------------------------------------------------------


def test_server_3261_retransmission_and_ack_match_invite() -> None:
    table = TransactionTable()
    tx = server(request("INVITE", branch="z9hG4bKs1", sent_by="ua.a.lab:5062"), table)
    again = request("INVITE", branch="z9hG4bKs1", sent_by="UA.A.LAB:5062")
    assert table.match_server(again) is tx  # host names compare case-insensitively
    marked = request("INVITE", branch="z9hG4bKs1", sent_by="ua.a.lab:5062;received=192.0.2.9")
    assert table.match_server(marked) is tx
    busy = response(tx.request, 486, to_tag="t1")
    assert table.match_server(ack_for(tx.request, busy)) is tx
    # Any other branch, sent-by or method is another transaction.
    assert (
        table.match_server(request("INVITE", branch="z9hG4bKs2", sent_by="ua.a.lab:5062")) is None
    )
    assert (
        table.match_server(request("INVITE", branch="z9hG4bKs1", sent_by="ua.b.lab:5062")) is None
    )
    assert table.match_server(request("INVITE", branch="z9hG4bKs1", sent_by="ua.a.lab")) is None
    assert table.match_server(request("BYE", branch="z9hG4bKs1", sent_by="ua.a.lab:5062")) is None


def test_server_3261_ack_reaches_invite_tx_and_confirms_it() -> None:
    table, clock = TransactionTable(), Clock()
    tx = server(request("INVITE"), table, clock, trying_delay=None)
    req = tx.request  # dropped by the tx once it lingers
    busy = response(req, 486, to_tag="t1")
    tx.send_response(busy)
    ack = ack_for(req, busy)
    matched = table.match_server(ack)
    assert matched is tx
    matched.receive_request(ack)
    assert tx.state is State.CONFIRMED
    clock.advance(5)  # Timer I
    assert tx not in table
    assert table.match_server(ack) is None


def test_server_cancel_matching_3261() -> None:
    table = TransactionTable()
    invite = server(request("INVITE", branch="z9hG4bKs1"), table)
    cancel_req = request("CANCEL", branch="z9hG4bKs1")
    # §17.2.3: CANCEL is its own transaction; §9.2: it targets the INVITE.
    assert table.match_server(cancel_req) is None
    assert table.match_cancel(cancel_req) is invite
    cancel_tx = server(cancel_req, table)
    assert table.match_server(request("CANCEL", branch="z9hG4bKs1")) is cancel_tx
    assert table.match_cancel(request("CANCEL", branch="z9hG4bKs1")) is invite
    assert table.match_cancel(request("CANCEL", branch="z9hG4bKzz")) is None
    assert table.match_cancel(request("CANCEL", branch="z9hG4bKs1", sent_by="x.lab")) is None


def test_match_cancel_finds_only_invite_transactions() -> None:
    table = TransactionTable()
    server(request("OPTIONS", branch="z9hG4bKs1"), table)
    assert table.match_cancel(request("CANCEL", branch="z9hG4bKs1")) is None


def test_server_removed_when_terminated() -> None:
    table, clock = TransactionTable(), Clock()
    tx = server(request("REGISTER"), table, clock)
    tx.send_response(response(tx.request, 200, to_tag="t1"))
    assert table.match_server(request("REGISTER")) is tx
    clock.advance(32)  # Timer J
    assert tx not in table
    assert table.match_server(request("REGISTER")) is None


def test_server_and_client_keys_do_not_collide() -> None:
    # A UA talking to itself (or a proxy spiralling) has both halves in one table.
    table = TransactionTable()
    req = request("INVITE", branch="z9hG4bKsame")
    c = client(req, table)
    s = server(request("INVITE", branch="z9hG4bKsame"), table)
    assert table.match_client(response(req, 180)) is c
    assert table.match_server(request("INVITE", branch="z9hG4bKsame")) is s
    assert list(table) == [c, s]


# --------------------------------------------------------------------------------------
# Server side, RFC 2543 fallback (§17.2.3)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("branch", [None, "1234abcd"])
def test_server_2543_retransmission_matches_on_the_2543_fields(branch: str | None) -> None:
    table = TransactionTable()
    tx = server(request("INVITE", branch=branch), table)
    assert tx.key[0] == "2543"
    assert table.match_server(request("INVITE", branch=branch)) is tx
    # received/rport are added by our own transport (§18.2.1, RFC 3581), not the sender.
    marked = request("INVITE", branch=branch, sent_by="pc33.atlanta.com;received=192.0.2.9;rport=5")
    assert table.match_server(marked) is tx
    for change in (
        {"uri": "sip:carol@biloxi.com"},
        {"from_tag": "other"},
        {"to_tag": "other"},
        {"call_id": "other@atlanta.com"},
        {"cseq": 2},
        {"sent_by": "pc34.atlanta.com"},
        {"transport": "TCP"},
    ):
        assert table.match_server(request("INVITE", branch=branch, **change)) is None, change


def test_server_2543_non_invite_retransmission() -> None:
    table = TransactionTable()
    tx = server(request("OPTIONS", branch=None), table)
    assert table.match_server(request("OPTIONS", branch=None)) is tx
    assert table.match_server(request("INFO", branch=None)) is None
    assert table.match_server(request("ACK", branch=None)) is None


def test_server_2543_ack_needs_to_tag_of_response_sent() -> None:
    table = TransactionTable()
    tx = server(request("INVITE", branch=None), table, trying_delay=None)
    ack = request("ACK", branch=None, to_tag="t9")
    assert table.match_server(ack) is None  # no final response sent yet
    tx.send_response(response(tx.request, 486, to_tag="t9"))
    assert table.match_server(ack) is tx
    assert table.match_server(request("ACK", branch=None, to_tag="t8")) is None
    assert table.match_server(request("ACK", branch=None, to_tag=None)) is None
    assert table.match_server(request("ACK", branch=None, to_tag="t9", from_tag="x")) is None
    assert table.match_server(request("ACK", branch=None, to_tag="t9", cseq=2)) is None
    assert table.match_server(request("ACK", branch=None, to_tag="t9", sent_by="h.lab")) is None
    # The ACK's CSeq method is ACK: only the number is compared.
    assert request("ACK", branch=None, to_tag="t9").cseq.method == "ACK"
    tx.receive_request(ack)
    assert tx.state is State.CONFIRMED


def test_server_2543_ack_for_2xx_reaches_accepted_tx() -> None:
    table = TransactionTable()
    tx = server(request("INVITE", branch=None), table, trying_delay=None)
    tx.send_response(response(tx.request, 200, to_tag="t9"))
    ack = request("ACK", branch=None, to_tag="t9")
    matched = table.match_server(ack)
    assert matched is tx
    matched.receive_request(ack)
    assert tx.tu.take() == [("ack_received", ack)]


def test_server_2543_cancel_matches_invite() -> None:
    table = TransactionTable()
    invite = server(request("INVITE", branch=None), table)
    cancel_req = request("CANCEL", branch=None)
    assert table.match_cancel(cancel_req) is invite
    assert table.match_server(cancel_req) is None
    cancel_tx = server(cancel_req, table)
    assert table.match_server(request("CANCEL", branch=None)) is cancel_tx
    assert table.match_cancel(request("CANCEL", branch=None, from_tag="x")) is None


def test_server_2543_ack_index_removed_when_terminated() -> None:
    table, clock = TransactionTable(), Clock()
    tx = server(request("INVITE", branch=None), table, clock, trying_delay=None)
    tx.send_response(response(tx.request, 486, to_tag="t9"))
    clock.advance(32)  # Timer H
    assert tx.state is State.TERMINATED
    assert table.match_server(request("ACK", branch=None, to_tag="t9")) is None
    assert table.match_server(request("INVITE", branch=None)) is None
    assert table._ack_2543 == {}


# --------------------------------------------------------------------------------------
# Both halves through a fake wire (h11's ConnectionPair idea)
# --------------------------------------------------------------------------------------


class Peer:
    """One SIP element: a table, a clock shared with the other peer, and a wire."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.table = TransactionTable()
        self.tu = RecordingTU()
        self.outbox: list[bytes] = []
        self.new_requests: list[Request] = []

    def send(self, message: Request | Response) -> None:
        self.outbox.append(message.serialise())

    def deliver(self, data: bytes) -> None:
        """What a transport + core would do with a datagram (§18.1.2, §18.2.1)."""
        message = parse(data)
        if isinstance(message, Response):
            tx = self.table.match_client(message)
            if tx is not None:
                tx.receive_response(message)
            return
        tx = self.table.match_server(message)
        if tx is not None:
            tx.receive_request(message)
        elif message.method != "ACK":
            cls = (
                ServerInviteTransaction
                if message.method == "INVITE"
                else ServerNonInviteTransaction
            )
            tx = cls(message, self.send, self.tu, self.clock)
            self.table.add(tx)
            self.new_requests.append(message)


def pump(src: Peer, dst: Peer, lose: bool = False) -> int:
    sent, src.outbox = src.outbox, []
    if not lose:
        for data in sent:
            dst.deliver(data)
    return len(sent)


def test_invite_rejected_end_to_end_with_lost_messages() -> None:
    clock = Clock()
    alice, bob = Peer(clock), Peer(clock)
    invite = request("INVITE", branch=new_branch())
    ctx = ClientInviteTransaction(invite, alice.send, alice.tu, clock)
    alice.table.add(ctx)
    ctx.start()
    assert pump(alice, bob, lose=True) == 1  # the INVITE is lost ...
    clock.advance(0.5)  # ... and Timer A resends it
    assert pump(alice, bob) == 1
    [stx] = bob.table
    assert bob.new_requests == [stx.request]
    clock.advance(0.2)  # bob's TU is slow: the transaction sends 100 Trying
    assert pump(bob, alice) == 1
    assert ctx.state is State.PROCEEDING
    stx.send_response(response(stx.request, 486, to_tag=new_tag()))
    assert pump(bob, alice, lose=True) == 1  # the 486 is lost ...
    clock.advance(0.5)  # ... and Timer G resends it
    assert pump(bob, alice) == 1
    assert ctx.state is State.COMPLETED
    assert [r.status for _, r in alice.tu.take()] == [100, 486]
    assert pump(alice, bob) == 1  # the ACK, built by the client transaction
    assert stx.state is State.CONFIRMED
    assert bob.tu.events == []
    clock.advance(5)  # Timer I
    assert stx.state is State.TERMINATED
    assert len(bob.table) == 0
    clock.advance(32)  # Timer D
    assert ctx.state is State.TERMINATED
    assert len(alice.table) == 0


# --------------------------------------------------------------------------------------
# sans-IO
# --------------------------------------------------------------------------------------


def test_transaction_module_does_not_import_twisted() -> None:
    code = "import sys, sipcore.transaction; print('twisted' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"
