"""Server transactions: RFC 3261 §17.2.1 (INVITE, with RFC 6026) and §17.2.2 (non-INVITE).

Every test drives a transaction with ``task.Clock`` and asserts exactly what went on the
wire and what the TU saw after each step. Times use T1=0.5 and steps of 1/64 s so that
the clock's float sums are exact.
"""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from sipcore.transaction import (
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    State,
    Timers,
)

from .txhelpers import RecordingTU, Wire, ack_for, request, response, statuses

EPS = 1 / 64


def make(cls: type = ServerInviteTransaction, req=None, *, reliable: bool = False, **kwargs):
    if req is None:
        req = request("INVITE" if cls is ServerInviteTransaction else "REGISTER")
    clock, wire, tu = Clock(), Wire(), RecordingTU()
    tx = cls(req, wire, tu, clock, reliable=reliable, **kwargs)
    return tx, wire, tu, clock


def make_invite(**kwargs):
    """An INVITE server transaction without the automatic 100 Trying, to keep the
    wire quiet in tests about other behaviour."""
    return make(ServerInviteTransaction, trying_delay=None, **kwargs)


def advance_expecting(clock: Clock, wire: Wire, interval: float, expected: list) -> None:
    """Nothing is sent until ``interval`` has passed, then exactly ``expected``."""
    clock.advance(interval - EPS)
    assert wire.take() == []
    clock.advance(EPS)
    assert wire.take() == expected


# --------------------------------------------------------------------------------------
# INVITE server transaction (§17.2.1, Figure 7; RFC 6026 §8.5-8.7)
# --------------------------------------------------------------------------------------


def test_invite_created_in_proceeding_without_sending() -> None:
    tx, wire, tu, clock = make()
    assert tx.state is State.PROCEEDING
    assert wire.take() == []
    assert tu.events == []  # the creator, not the tx, hands the INVITE to the TU
    assert tx.active_timers == {"Trying"}
    assert tx.key == ("3261", "z9hG4bK74bf9", "pc33.atlanta.com", None, "INVITE")
    assert tx.branch == "z9hG4bK74bf9"


@pytest.mark.parametrize("method", ["ACK", "OPTIONS", "CANCEL"])
def test_invite_server_refuses_other_methods(method: str) -> None:
    with pytest.raises(ValueError):
        ServerInviteTransaction(request(method), Wire(), RecordingTU(), Clock())


def test_invite_sends_100_trying_after_200ms_without_tu_response() -> None:
    req = request(extra="Timestamp: 54.2\r\n")
    tx, wire, tu, clock = make(req=req)
    clock.advance(0.19)
    assert wire.take() == []
    clock.advance(0.02)
    [trying] = wire.take()
    assert trying.status == 100
    assert trying.headers.get_all("Via") == req.headers.get_all("Via")
    assert trying.call_id == req.call_id
    assert trying.from_.tag == req.from_.tag
    assert trying.to.tag is None
    assert (trying.cseq.number, trying.cseq.method) == (1, "INVITE")
    assert trying.headers.get("Timestamp") == "54.2"  # §8.2.6.1
    assert tx.last_provisional is trying
    assert tx.state is State.PROCEEDING
    assert tu.events == []
    # §17.2.1: a retransmitted INVITE gets the latest provisional, here our 100.
    tx.receive_request(request())
    assert wire.take() == [trying]
    clock.advance(100)
    assert wire.take() == []


@pytest.mark.parametrize("status", [100, 180, 486])
def test_invite_no_automatic_100_when_tu_answers_in_time(status: int) -> None:
    tx, wire, tu, clock = make()
    clock.advance(0.1)
    answer = response(tx.request, status, to_tag="t1")
    tx.send_response(answer)
    assert wire.take() == [answer]
    assert "Trying" not in tx.active_timers
    clock.advance(0.5 - EPS)  # before Timer G could fire for the 486
    assert wire.take() == []


def test_invite_automatic_100_can_be_switched_off() -> None:
    tx, wire, tu, clock = make_invite()
    assert tx.active_timers == frozenset()
    clock.advance(10)
    assert wire.take() == []


def test_invite_retransmission_before_any_provisional_is_absorbed() -> None:
    tx, wire, tu, clock = make_invite()
    tx.receive_request(request())
    assert wire.take() == []
    assert tu.events == []


def test_invite_retransmission_in_proceeding_resends_latest_provisional() -> None:
    tx, wire, tu, clock = make_invite()
    ringing = response(tx.request, 180, to_tag="t1")
    progress = response(tx.request, 183, to_tag="t1")
    tx.send_response(ringing)
    assert wire.take() == [ringing]
    tx.receive_request(request())
    assert wire.take() == [ringing]
    tx.send_response(progress)
    assert wire.take() == [progress]
    tx.receive_request(request())
    assert wire.take() == [progress]
    assert tx.state is State.PROCEEDING
    assert tu.events == []


def test_invite_non_2xx_completed_timer_g_doubles_up_to_t2_then_h() -> None:
    tx, wire, tu, clock = make_invite()
    busy = response(tx.request, 486, to_tag="t1")
    tx.send_response(busy)
    assert wire.take() == [busy]
    assert tx.state is State.COMPLETED
    assert tx.active_timers == {"G", "H"}
    # §17.2.1: G = T1, 2*T1, 4*T1, then T2: sends at 0.5 1.5 3.5 7.5 11.5 ... 31.5
    for interval in (0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0):
        advance_expecting(clock, wire, interval, [busy])
    assert clock.seconds() == 31.5
    assert tu.events == []
    clock.advance(0.5 - EPS)
    assert tx.state is State.COMPLETED
    clock.advance(EPS)  # Timer H: no ACK ever came
    assert tx.state is State.TERMINATED
    assert tu.names() == ["timed_out", "terminated"]
    clock.advance(100)
    assert wire.take() == []


def test_invite_timer_g_respects_configured_t2() -> None:
    tx, wire, tu, clock = make_invite(timers=Timers(t2=2.0))
    busy = response(tx.request, 500, to_tag="t1")
    tx.send_response(busy)
    wire.take()
    for interval in (0.5, 1.0, 2.0, 2.0, 2.0):
        advance_expecting(clock, wire, interval, [busy])


def test_invite_reliable_no_timer_g_but_timer_h() -> None:
    tx, wire, tu, clock = make_invite(reliable=True)
    busy = response(tx.request, 486, to_tag="t1")
    tx.send_response(busy)
    assert wire.take() == [busy]
    assert tx.active_timers == {"H"}
    clock.advance(32 - EPS)
    assert wire.take() == []
    clock.advance(EPS)
    assert tu.names() == ["timed_out", "terminated"]


def test_invite_retransmission_in_completed_resends_final() -> None:
    tx, wire, tu, clock = make_invite()
    tx.send_response(response(tx.request, 180, to_tag="t1"))
    busy = response(tx.request, 486, to_tag="t1")
    tx.send_response(busy)
    wire.take()
    clock.advance(0.25)
    tx.receive_request(request())
    assert wire.take() == [busy]
    assert tu.events == []


def test_invite_ack_confirms_stops_g_and_timer_i_terminates() -> None:
    tx, wire, tu, clock = make_invite()
    req = tx.request  # dropped by the tx once it lingers
    busy = response(req, 486, to_tag="t1")
    tx.send_response(busy)
    clock.advance(0.5)
    assert wire.take() == [busy, busy]
    tx.receive_request(ack_for(req, busy))
    assert tx.state is State.CONFIRMED
    assert tx.active_timers == {"I"}
    assert tu.events == []  # the ACK for a non-2xx is absorbed, not passed up
    # Confirmed absorbs further ACKs and INVITE retransmissions (§17.2.1).
    tx.receive_request(ack_for(req, busy))
    tx.receive_request(request())
    clock.advance(5 - EPS)
    assert wire.take() == []
    assert tu.events == []
    assert tx.state is State.CONFIRMED
    clock.advance(EPS)
    assert tx.state is State.TERMINATED
    assert tu.names() == ["terminated"]


def test_invite_reliable_timer_i_is_zero() -> None:
    tx, wire, tu, clock = make_invite(reliable=True)
    req = tx.request  # dropped by the tx once it lingers
    busy = response(req, 603, to_tag="t1")
    tx.send_response(busy)
    tx.receive_request(ack_for(req, busy))
    assert tx.state is State.TERMINATED
    assert tu.names() == ["terminated"]
    assert tx.active_timers == frozenset()


@pytest.mark.parametrize("after_provisional", [False, True])
def test_invite_2xx_accepted_then_timer_l(after_provisional: bool) -> None:
    tx, wire, tu, clock = make_invite()
    if after_provisional:
        tx.send_response(response(tx.request, 180, to_tag="t1"))
        wire.take()
    ok = response(tx.request, 200, to_tag="t1")
    tx.send_response(ok)
    assert wire.take() == [ok]
    assert tx.state is State.ACCEPTED
    assert tx.active_timers == {"L"}
    clock.advance(32 - EPS)
    assert wire.take() == []  # 2xx retransmission is the TU's job (§13.3.1.4)
    assert tx.state is State.ACCEPTED
    clock.advance(EPS)
    assert tx.state is State.TERMINATED
    assert tu.names() == ["terminated"]


def test_invite_accepted_behaviour_rfc6026() -> None:
    tx, wire, tu, clock = make_invite()
    req = tx.request  # dropped by the tx once it lingers
    ok = response(req, 200, to_tag="t1")
    tx.send_response(ok)
    wire.take()
    # RFC 6026 §8.7: INVITE retransmissions are absorbed (neither resent nor passed up).
    tx.receive_request(request())
    assert wire.take() == []
    assert tu.events == []
    # RFC 6026 §8.6: the TU's 2xx retransmissions go out through the transaction.
    clock.advance(0.5)
    again = response(req, 200, to_tag="t1")
    tx.send_response(again)
    assert wire.take() == [again]
    # Anything but a 2xx from the TU is discarded now.
    tx.send_response(response(req, 180, to_tag="t1"))
    tx.send_response(response(req, 500, to_tag="t1"))
    assert wire.take() == []
    # RFC 6026 §8.7: an ACK reaching an Accepted transaction goes to the TU, each time.
    ack = request("ACK", to_tag="t1", branch=tx.branch)
    tx.receive_request(ack)
    tx.receive_request(ack)
    assert tu.take() == [("ack_received", ack), ("ack_received", ack)]
    assert tx.state is State.ACCEPTED
    assert wire.take() == []


def test_invite_reliable_accepted_still_waits_timer_l() -> None:
    tx, wire, tu, clock = make_invite(reliable=True)
    tx.send_response(response(tx.request, 200, to_tag="t1"))
    assert tx.active_timers == {"L"}
    clock.advance(32)
    assert tu.names() == ["terminated"]


def test_invite_completed_discards_further_tu_responses() -> None:
    tx, wire, tu, clock = make_invite()
    req = tx.request  # dropped by the tx once it lingers
    busy = response(req, 486, to_tag="t1")
    tx.send_response(busy)
    wire.take()
    tx.send_response(response(req, 180, to_tag="t1"))
    tx.send_response(response(req, 200, to_tag="t1"))
    tx.send_response(response(req, 500, to_tag="t1"))
    assert wire.take() == []
    assert tx.state is State.COMPLETED
    assert tx.final_response == busy  # kept as its bytes (SentResponse)


def test_invite_transport_error_sending_final() -> None:
    tx, wire, tu, clock = make_invite()
    wire.fail = ConnectionResetError()
    tx.send_response(response(tx.request, 486, to_tag="t1"))
    assert tx.state is State.TERMINATED
    assert tu.names() == ["transport_failed", "terminated"]
    assert tx.active_timers == frozenset()


def test_invite_transport_error_sending_2xx() -> None:
    tx, wire, tu, clock = make_invite()
    wire.fail = OSError()
    tx.send_response(response(tx.request, 200, to_tag="t1"))
    assert tx.state is State.TERMINATED
    assert tu.names() == ["transport_failed", "terminated"]
    assert tx.active_timers == frozenset()


def test_invite_transport_error_on_timer_g() -> None:
    tx, wire, tu, clock = make_invite()
    tx.send_response(response(tx.request, 486, to_tag="t1"))
    wire.fail = OSError()
    clock.advance(0.5)
    assert tx.state is State.TERMINATED
    assert tu.names() == ["transport_failed", "terminated"]
    clock.advance(100)
    assert tu.events == []


def test_invite_transport_error_on_automatic_100() -> None:
    tx, wire, tu, clock = make()
    wire.fail = OSError()
    clock.advance(0.2)
    assert tx.state is State.TERMINATED
    assert tu.names() == ["transport_failed", "terminated"]


def test_invite_reported_transport_error() -> None:
    tx, wire, tu, clock = make()
    tx.transport_error()
    assert tx.state is State.TERMINATED
    assert tu.names() == ["transport_failed", "terminated"]
    clock.advance(1)
    assert wire.take() == []  # no 100 Trying from a dead transaction


def test_invite_terminated_ignores_everything() -> None:
    tx, wire, tu, clock = make_invite()
    req = tx.request  # dropped by the tx once it lingers
    busy = response(req, 486, to_tag="t1")
    tx.send_response(busy)
    clock.advance(32)
    wire.take()
    tu.take()
    tx.send_response(response(req, 200, to_tag="t1"))
    tx.receive_request(request())
    tx.receive_request(ack_for(req, busy))
    assert wire.take() == []
    assert tu.events == []


# --------------------------------------------------------------------------------------
# Non-INVITE server transaction (§17.2.2, Figure 8)
# --------------------------------------------------------------------------------------


def make_non_invite(**kwargs):
    return make(ServerNonInviteTransaction, **kwargs)


def test_non_invite_created_in_trying_without_timers() -> None:
    tx, wire, tu, clock = make_non_invite()
    assert tx.state is State.TRYING
    assert tx.active_timers == frozenset()
    assert tx.key == ("3261", "z9hG4bK74bf9", "pc33.atlanta.com", None, "REGISTER")
    clock.advance(3600)  # Figure 8 has no timer in Trying: the TU must answer
    assert tx.state is State.TRYING
    assert wire.take() == []
    assert tu.events == []


@pytest.mark.parametrize("method", ["INVITE", "ACK"])
def test_non_invite_server_refuses_invite_and_ack(method: str) -> None:
    with pytest.raises(ValueError):
        ServerNonInviteTransaction(request(method), Wire(), RecordingTU(), Clock())


def test_non_invite_trying_discards_retransmissions() -> None:
    tx, wire, tu, clock = make_non_invite()
    tx.receive_request(request("REGISTER"))
    assert wire.take() == []
    assert tu.events == []
    assert tx.state is State.TRYING


def test_non_invite_proceeding_resends_latest_provisional() -> None:
    tx, wire, tu, clock = make_non_invite()
    trying = response(tx.request, 100)
    tx.send_response(trying)
    assert tx.state is State.PROCEEDING
    assert wire.take() == [trying]
    tx.receive_request(request("REGISTER"))
    assert wire.take() == [trying]
    other = response(tx.request, 183, to_tag="t1")
    tx.send_response(other)
    assert wire.take() == [other]
    tx.receive_request(request("REGISTER"))
    assert wire.take() == [other]
    assert tu.events == []


@pytest.mark.parametrize("provisional_first", [False, True])
def test_non_invite_final_completes_and_timer_j_terminates(provisional_first: bool) -> None:
    tx, wire, tu, clock = make_non_invite()
    req = tx.request  # dropped by the tx once it lingers
    if provisional_first:
        tx.send_response(response(req, 100))
        wire.take()
    ok = response(req, 200, to_tag="t1")
    tx.send_response(ok)
    assert wire.take() == [ok]
    assert tx.state is State.COMPLETED
    assert tx.active_timers == {"J"}
    clock.advance(10)
    tx.receive_request(request("REGISTER"))  # §17.2.2: resend the final response
    assert wire.take() == [ok]
    # §17.2.2: other responses from the TU are discarded in Completed.
    tx.send_response(response(req, 500, to_tag="t1"))
    tx.send_response(response(req, 100))
    assert wire.take() == []
    assert tx.final_response == ok  # kept as its bytes (SentResponse)
    clock.advance(32 - 10 - EPS)
    assert tx.state is State.COMPLETED
    clock.advance(EPS)
    assert tx.state is State.TERMINATED
    assert tu.names() == ["terminated"]
    tx.receive_request(request("REGISTER"))
    assert wire.take() == []


def test_non_invite_reliable_timer_j_is_zero() -> None:
    tx, wire, tu, clock = make_non_invite(reliable=True)
    ok = response(tx.request, 200, to_tag="t1")
    tx.send_response(ok)
    assert wire.take() == [ok]
    assert tx.state is State.TERMINATED
    assert tu.names() == ["terminated"]


def test_non_invite_transport_error_sending_final() -> None:
    tx, wire, tu, clock = make_non_invite()
    wire.fail = OSError()
    tx.send_response(response(tx.request, 200, to_tag="t1"))
    assert tx.state is State.TERMINATED
    assert tu.names() == ["transport_failed", "terminated"]
    assert tx.active_timers == frozenset()


def test_non_invite_transport_error_resending_final() -> None:
    tx, wire, tu, clock = make_non_invite()
    tx.send_response(response(tx.request, 404, to_tag="t1"))
    wire.fail = OSError()
    tx.receive_request(request("REGISTER"))
    assert tx.state is State.TERMINATED
    assert tu.names() == ["transport_failed", "terminated"]
    assert statuses(wire.take()) == [404]
