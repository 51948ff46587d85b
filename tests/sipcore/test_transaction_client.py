"""Client transactions: RFC 3261 §17.1.1 (INVITE, with RFC 6026) and §17.1.2 (non-INVITE).

Every test drives a transaction with ``task.Clock`` and asserts exactly what went on the
wire and what the TU saw after each step. Times use T1=0.5 and steps of 1/64 s so that
the clock's float sums are exact.
"""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from sipcore.transaction import (
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    State,
    Timers,
)

from .txhelpers import RecordingTU, Wire, advance_to, request, response, statuses

EPS = 1 / 64


def make(
    cls: type = ClientInviteTransaction,
    req=None,
    *,
    reliable: bool = False,
    timers: Timers | None = None,
    start: bool = True,
):
    if req is None:
        req = request("INVITE" if cls is ClientInviteTransaction else "OPTIONS")
    clock, wire, tu = Clock(), Wire(), RecordingTU()
    kwargs = {"reliable": reliable}
    if timers is not None:
        kwargs["timers"] = timers
    tx = cls(req, wire, tu, clock, **kwargs)
    if start:
        tx.start()
    return tx, wire, tu, clock


def advance_expecting(clock: Clock, wire: Wire, interval: float, method: str) -> None:
    """Nothing is sent until ``interval`` has passed, then exactly one ``method``."""
    clock.advance(interval - EPS)
    assert wire.take() == []
    clock.advance(EPS)
    assert statuses(wire.take()) == [method]


# --------------------------------------------------------------------------------------
# Timers
# --------------------------------------------------------------------------------------


def test_timer_values_unreliable() -> None:
    t = Timers()
    assert (t.t1, t.t2, t.t4) == (0.5, 4.0, 5.0)
    assert (t.a, t.b, t.d, t.e, t.f, t.g, t.h, t.i, t.j, t.k) == (
        0.5, 32.0, 32.0, 0.5, 32.0, 0.5, 32.0, 5.0, 32.0, 5.0,
    )  # fmt: skip
    assert (t.l, t.m) == (32.0, 32.0)


def test_timer_values_reliable() -> None:
    # Table 4: A, E, G are not used over reliable transports; D, I, J, K are zero.
    t = Timers().for_transport(reliable=True)
    assert (t.a, t.e, t.g) == (None, None, None)
    assert (t.d, t.i, t.j, t.k) == (0.0, 0.0, 0.0, 0.0)
    assert (t.b, t.f, t.h, t.l, t.m) == (32.0, 32.0, 32.0, 32.0, 32.0)


def test_timer_values_follow_t1_t2_t4() -> None:
    t = Timers(t1=0.25, t2=2.0, t4=3.0)
    assert (t.a, t.b, t.f, t.h, t.j, t.l, t.m) == (0.25, 16.0, 16.0, 16.0, 16.0, 16.0, 16.0)
    assert (t.i, t.k) == (3.0, 3.0)
    assert t.d == 32.0  # Table 4: "> 32 s" whatever T1 is
    assert Timers(t1=1.0).d == 64.0


def test_transaction_timers_follow_its_reliable_flag() -> None:
    tx, *_ = make(reliable=True, timers=Timers(t1=0.25), start=False)
    assert tx.timers == Timers(t1=0.25, reliable=True)


# --------------------------------------------------------------------------------------
# INVITE client transaction (§17.1.1, Figure 5; RFC 6026 §8.4)
# --------------------------------------------------------------------------------------


def test_invite_created_in_calling_sends_on_start() -> None:
    tx, wire, tu, clock = make(start=False)
    assert tx.state is State.CALLING
    assert wire.take() == []
    tx.start()
    assert wire.take() == [tx.request]
    assert tx.state is State.CALLING
    assert tx.active_timers == {"A", "B"}
    assert tu.events == []


def test_invite_identity() -> None:
    tx, *_ = make(req=request(branch="z9hG4bKxyz"), start=False)
    assert tx.branch == "z9hG4bKxyz"
    assert tx.key == ("c", "z9hG4bKxyz", "INVITE")
    assert str(tx.state) == "Calling"


def test_invite_start_twice_is_an_error() -> None:
    tx, *_ = make()
    with pytest.raises(RuntimeError):
        tx.start()


@pytest.mark.parametrize("method", ["OPTIONS", "ACK", "BYE", "CANCEL"])
def test_invite_transaction_refuses_other_methods(method: str) -> None:
    with pytest.raises(ValueError):
        ClientInviteTransaction(request(method), Wire(), RecordingTU(), Clock())


def test_invite_timer_a_doubles_without_cap() -> None:
    # §17.1.1.2: retransmit at T1, then 2*T1, 4*T1, ... until Timer B (64*T1).
    tx, wire, tu, clock = make()
    wire.take()
    for interval in (0.5, 1.0, 2.0, 4.0, 8.0, 16.0):  # sends at 0.5 1.5 3.5 7.5 15.5 31.5
        advance_expecting(clock, wire, interval, "INVITE")
    assert clock.seconds() == 31.5
    assert tx.state is State.CALLING
    assert tu.events == []


def test_invite_timer_b_times_out_in_calling() -> None:
    tx, wire, tu, clock = make()
    advance_to(clock, 32 - EPS)
    assert len(wire.take()) == 7  # the INVITE and six retransmissions
    assert tu.events == []
    clock.advance(EPS)
    assert tx.state is State.TERMINATED
    assert tu.names() == ["timed_out", "terminated"]
    assert tx.active_timers == frozenset()
    clock.advance(1000)
    assert wire.take() == []
    assert tu.events == []


def test_invite_reliable_sends_once_and_times_out_with_b() -> None:
    tx, wire, tu, clock = make(reliable=True)
    assert wire.take() == [tx.request]
    assert tx.active_timers == {"B"}  # §17.1.1.2: no Timer A over TCP/TLS/SCTP
    clock.advance(32 - EPS)
    assert wire.take() == []
    clock.advance(EPS)
    assert tu.names() == ["timed_out", "terminated"]
    assert tx.state is State.TERMINATED


def test_invite_custom_t1_scales_a_and_b() -> None:
    tx, wire, tu, clock = make(timers=Timers(t1=0.25))
    wire.take()
    advance_expecting(clock, wire, 0.25, "INVITE")
    advance_expecting(clock, wire, 0.5, "INVITE")
    clock.advance(16 - clock.seconds())
    assert tu.names() == ["timed_out", "terminated"]


def test_invite_provisional_moves_to_proceeding_and_stops_retransmissions() -> None:
    tx, wire, tu, clock = make()
    clock.advance(0.5)
    assert statuses(wire.take()) == ["INVITE", "INVITE"]
    ringing = response(tx.request, 180, to_tag="t1")
    tx.receive_response(ringing)
    assert tx.state is State.PROCEEDING
    assert tu.take() == [("response_received", ringing)]
    assert tx.active_timers == frozenset()  # A and B stop: no retransmits, no timeout
    clock.advance(3600)
    assert wire.take() == []
    assert tu.events == []
    assert tx.state is State.PROCEEDING


def test_invite_further_provisionals_are_passed_up() -> None:
    tx, wire, tu, clock = make()
    first, second = response(tx.request, 100), response(tx.request, 183, to_tag="t1")
    tx.receive_response(first)
    tx.receive_response(second)
    assert tu.take() == [("response_received", first), ("response_received", second)]
    assert tx.state is State.PROCEEDING


@pytest.mark.parametrize("after_provisional", [False, True])
def test_invite_2xx_moves_to_accepted_and_timer_m_terminates(after_provisional: bool) -> None:
    tx, wire, tu, clock = make()
    wire.take()
    if after_provisional:
        tx.receive_response(response(tx.request, 180, to_tag="t1"))
        tu.take()
    ok = response(tx.request, 200, to_tag="t1")
    tx.receive_response(ok)
    assert tx.state is State.ACCEPTED
    assert tu.take() == [("response_received", ok)]
    assert wire.take() == []  # the ACK for a 2xx is the TU's (§13.2.2.4), not ours
    assert tx.active_timers == {"M"}
    clock.advance(32 - EPS)
    assert tx.state is State.ACCEPTED
    assert wire.take() == []
    clock.advance(EPS)
    assert tx.state is State.TERMINATED
    assert tu.names() == ["terminated"]


def test_invite_accepted_passes_every_2xx_up() -> None:
    # RFC 6026 §8.4: 2xx retransmissions and 2xx from other forks all reach the TU.
    tx, wire, tu, clock = make()
    wire.take()
    ok = response(tx.request, 200, to_tag="t1")
    tx.receive_response(ok)
    clock.advance(4)
    retransmission = response(tx.request, 200, to_tag="t1")
    fork = response(tx.request, 200, to_tag="t2")
    tx.receive_response(retransmission)
    tx.receive_response(fork)
    assert tu.take() == [
        ("response_received", ok),
        ("response_received", retransmission),
        ("response_received", fork),
    ]
    assert tx.state is State.ACCEPTED
    assert wire.take() == []


def test_invite_accepted_discards_provisional_and_non_2xx() -> None:
    tx, wire, tu, clock = make()
    wire.take()
    tx.receive_response(response(tx.request, 200, to_tag="t1"))
    tu.take()
    tx.receive_response(response(tx.request, 180, to_tag="t2"))
    tx.receive_response(response(tx.request, 486, to_tag="t3"))
    assert tu.events == []
    assert wire.take() == []
    assert tx.state is State.ACCEPTED


def test_invite_non_2xx_generates_ack_per_17_1_1_3() -> None:
    req = request(
        sent_by="proxy.example.com:5070",
        branch="z9hG4bKproxy1",
        cseq=314159,
        uri="sip:bob@192.0.2.4;transport=udp",
        extra=(
            "Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKuac1\r\n"
            "Route: <sip:p1.example.com;lr>\r\n"
            "Route: <sip:p2.example.com;lr>\r\n"
            "Content-Type: application/sdp\r\n"
        ),
    )
    tx, wire, tu, clock = make(req=req)
    wire.take()
    busy = response(req, 486, to_tag="8321234356")
    tx.receive_response(busy)
    assert tx.state is State.COMPLETED
    assert tu.take() == [("response_received", busy)]
    [ack] = wire.take()
    assert ack is tx.ack
    assert ack.method == "ACK"
    assert str(ack.uri) == "sip:bob@192.0.2.4;transport=udp"
    assert ack.call_id == req.call_id
    assert ack.headers.get("From") == req.headers.get("From")
    assert ack.to.tag == "8321234356"
    assert ack.headers.get("To") == busy.headers.get("To")
    assert (ack.cseq.number, ack.cseq.method) == (314159, "ACK")
    assert [v.branch for v in ack.vias] == ["z9hG4bKproxy1"]  # top Via only
    assert ack.top_via.sent_by == ("proxy.example.com", 5070)
    assert ack.headers.get_all("Route") == [
        "<sip:p1.example.com;lr>",
        "<sip:p2.example.com;lr>",
    ]
    assert ack.max_forwards == 70
    assert ack.body == b""
    assert "Contact" not in ack.headers
    assert "Content-Type" not in ack.headers


def test_invite_completed_resends_ack_for_each_final_retransmission() -> None:
    tx, wire, tu, clock = make()
    req = tx.request  # dropped by the tx once it lingers
    wire.take()
    tx.receive_response(response(req, 404, to_tag="t1"))
    tu.take()
    [ack] = wire.take()
    for _ in range(3):
        clock.advance(1)
        tx.receive_response(response(req, 404, to_tag="t1"))
        assert wire.take() == [ack]
    tx.receive_response(response(req, 180, to_tag="t1"))
    tx.receive_response(response(req, 200, to_tag="t1"))
    assert wire.take() == []
    assert tu.events == []  # retransmissions are absorbed (§17.1.1.2)
    assert tx.state is State.COMPLETED


def test_invite_timer_d_waits_32s_unreliable() -> None:
    tx, wire, tu, clock = make()
    clock.advance(0.75)
    tx.receive_response(response(tx.request, 180, to_tag="t1"))
    tx.receive_response(response(tx.request, 603, to_tag="t1"))
    tu.take()
    wire.take()
    assert tx.active_timers == {"D"}
    clock.advance(32 - EPS)
    assert tx.state is State.COMPLETED
    assert wire.take() == []
    clock.advance(EPS)
    assert tx.state is State.TERMINATED
    assert tu.names() == ["terminated"]


def test_invite_reliable_timer_d_is_zero() -> None:
    tx, wire, tu, clock = make(reliable=True)
    wire.take()
    busy = response(tx.request, 486, to_tag="t1")
    tx.receive_response(busy)
    assert statuses(wire.take()) == ["ACK"]
    assert tx.state is State.TERMINATED
    assert tu.take() == [("response_received", busy), ("terminated", None)]
    assert tx.active_timers == frozenset()


def test_invite_transport_error_on_first_send() -> None:
    tx, wire, tu, clock = make(start=False)
    wire.fail = ConnectionRefusedError()
    tx.start()
    assert tx.state is State.TERMINATED
    assert tu.names() == ["transport_failed", "terminated"]
    assert tx.active_timers == frozenset()


def test_invite_transport_error_on_retransmission() -> None:
    tx, wire, tu, clock = make()
    clock.advance(0.5)
    assert len(wire.take()) == 2
    wire.fail = OSError("network unreachable")
    clock.advance(1)
    assert tx.state is State.TERMINATED
    assert tu.names() == ["transport_failed", "terminated"]
    clock.advance(100)
    assert tu.events == []


def test_invite_transport_error_sending_ack() -> None:
    tx, wire, tu, clock = make()
    wire.fail = OSError()
    busy = response(tx.request, 500, to_tag="t1")
    tx.receive_response(busy)
    assert tu.take() == [
        ("response_received", busy),
        ("transport_failed", None),
        ("terminated", None),
    ]
    assert tx.state is State.TERMINATED


def test_invite_reported_transport_error() -> None:
    tx, wire, tu, clock = make()
    tx.transport_error()
    assert tx.state is State.TERMINATED
    assert tu.names() == ["transport_failed", "terminated"]
    tx.transport_error()  # a second report changes nothing
    clock.advance(100)
    assert wire.take() == [tx.request]
    assert tu.events == []


def test_invite_terminated_ignores_responses() -> None:
    tx, wire, tu, clock = make()
    clock.advance(32)
    tu.take()
    wire.take()
    tx.receive_response(response(tx.request, 200, to_tag="t1"))
    tx.receive_response(response(tx.request, 486, to_tag="t1"))
    assert tu.events == []
    assert wire.take() == []


# --------------------------------------------------------------------------------------
# Non-INVITE client transaction (§17.1.2, Figure 6)
# --------------------------------------------------------------------------------------


def test_non_invite_created_in_trying_sends_on_start() -> None:
    tx, wire, tu, clock = make(ClientNonInviteTransaction, start=False)
    assert tx.state is State.TRYING
    tx.start()
    assert wire.take() == [tx.request]
    assert tx.active_timers == {"E", "F"}
    assert tx.key == ("c", "z9hG4bK74bf9", "OPTIONS")


@pytest.mark.parametrize("method", ["INVITE", "ACK"])
def test_non_invite_transaction_refuses_invite_and_ack(method: str) -> None:
    with pytest.raises(ValueError):
        ClientNonInviteTransaction(request(method), Wire(), RecordingTU(), Clock())


def test_non_invite_timer_e_doubles_up_to_t2_then_f_times_out() -> None:
    # §17.1.2.2: E = T1, 2*T1, 4*T1, then T2 each time; F = 64*T1.
    tx, wire, tu, clock = make(ClientNonInviteTransaction)
    wire.take()
    intervals = (0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0)  # last send at 31.5
    for interval in intervals:
        advance_expecting(clock, wire, interval, "OPTIONS")
    assert clock.seconds() == 31.5
    assert tu.events == []
    clock.advance(0.5 - EPS)
    assert tx.state is State.TRYING
    clock.advance(EPS)
    assert tx.state is State.TERMINATED
    assert tu.names() == ["timed_out", "terminated"]
    clock.advance(100)
    assert wire.take() == []


def test_non_invite_timer_e_in_proceeding_fires_at_t2() -> None:
    tx, wire, tu, clock = make(ClientNonInviteTransaction)
    wire.take()
    clock.advance(0.25)
    trying = response(tx.request, 100)
    tx.receive_response(trying)
    assert tx.state is State.PROCEEDING
    assert tu.take() == [("response_received", trying)]
    assert tx.active_timers == {"E", "F"}  # unlike INVITE, a 1xx stops neither
    advance_expecting(clock, wire, 0.25, "OPTIONS")  # the E already running, at 0.5
    advance_expecting(clock, wire, 4.0, "OPTIONS")  # then T2, not 2*T1
    advance_expecting(clock, wire, 4.0, "OPTIONS")
    assert clock.seconds() == 8.5


def test_non_invite_provisional_after_backoff_switches_to_t2() -> None:
    tx, wire, tu, clock = make(ClientNonInviteTransaction, timers=Timers(t2=8.0))
    wire.take()
    advance_expecting(clock, wire, 0.5, "OPTIONS")
    advance_expecting(clock, wire, 1.0, "OPTIONS")  # t=1.5, next E in 2.0
    tx.receive_response(response(tx.request, 100))
    advance_expecting(clock, wire, 2.0, "OPTIONS")  # t=3.5 fires in Proceeding
    advance_expecting(clock, wire, 8.0, "OPTIONS")  # reset to T2=8, not 4


def test_non_invite_timer_f_times_out_in_proceeding() -> None:
    tx, wire, tu, clock = make(ClientNonInviteTransaction)
    tx.receive_response(response(tx.request, 100))
    tu.take()
    clock.advance(32 - EPS)
    assert tx.state is State.PROCEEDING
    clock.advance(EPS)
    assert tu.names() == ["timed_out", "terminated"]
    assert tx.state is State.TERMINATED


def test_non_invite_provisionals_and_final_are_passed_up() -> None:
    tx, wire, tu, clock = make(ClientNonInviteTransaction)
    p1, p2 = response(tx.request, 100), response(tx.request, 180, to_tag="t1")
    ok = response(tx.request, 200, to_tag="t1")
    for r in (p1, p2, ok):
        tx.receive_response(r)
    assert tu.take() == [
        ("response_received", p1),
        ("response_received", p2),
        ("response_received", ok),
    ]
    assert tx.state is State.COMPLETED


@pytest.mark.parametrize("status", [200, 302, 404, 503, 600])
def test_non_invite_final_completes_and_timer_k_terminates(status: int) -> None:
    tx, wire, tu, clock = make(ClientNonInviteTransaction)
    req = tx.request  # dropped by the tx once it lingers
    wire.take()
    final = response(req, status, to_tag="t1")
    tx.receive_response(final)
    assert tx.state is State.COMPLETED
    assert tu.take() == [("response_received", final)]
    assert tx.active_timers == {"K"}  # E and F are stopped
    assert wire.take() == []  # no ACK outside INVITE
    # Completed absorbs retransmissions of the final response and late provisionals.
    tx.receive_response(response(req, status, to_tag="t1"))
    tx.receive_response(response(req, 100))
    clock.advance(5 - EPS)
    assert tu.events == []
    assert wire.take() == []
    clock.advance(EPS)
    assert tx.state is State.TERMINATED
    assert tu.names() == ["terminated"]


def test_non_invite_reliable_no_retransmissions_and_k_is_zero() -> None:
    tx, wire, tu, clock = make(ClientNonInviteTransaction, reliable=True)
    assert wire.take() == [tx.request]
    assert tx.active_timers == {"F"}
    clock.advance(20)
    assert wire.take() == []
    ok = response(tx.request, 200, to_tag="t1")
    tx.receive_response(ok)
    assert tx.state is State.TERMINATED
    assert tu.take() == [("response_received", ok), ("terminated", None)]


def test_non_invite_reliable_f_times_out() -> None:
    tx, wire, tu, clock = make(ClientNonInviteTransaction, reliable=True)
    clock.advance(32)
    assert tu.names() == ["timed_out", "terminated"]


def test_non_invite_transport_error_on_first_send() -> None:
    tx, wire, tu, clock = make(ClientNonInviteTransaction, start=False)
    wire.fail = OSError()
    tx.start()
    assert tx.state is State.TERMINATED
    assert tu.names() == ["transport_failed", "terminated"]
    assert tx.active_timers == frozenset()


def test_non_invite_transport_error_on_retransmission() -> None:
    tx, wire, tu, clock = make(ClientNonInviteTransaction)
    advance_to(clock, 1.5)
    assert len(wire.take()) == 3
    wire.fail = BrokenPipeError()
    clock.advance(2)
    assert tx.state is State.TERMINATED
    assert tu.names() == ["transport_failed", "terminated"]
    clock.advance(100)
    assert tu.events == []


def test_non_invite_reported_transport_error_in_completed() -> None:
    tx, wire, tu, clock = make(ClientNonInviteTransaction)
    tx.receive_response(response(tx.request, 200, to_tag="t1"))
    tu.take()
    tx.transport_error()
    assert tu.names() == ["transport_failed", "terminated"]
    clock.advance(100)
    assert tu.events == []
