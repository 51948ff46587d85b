"""Reader corner cases: lost first transmissions, retransmissions, 0.0.0.0, B2BUA legs."""

from __future__ import annotations

from pathlib import Path

from sipcore.trace.reader import Trace
from sipcore.trace.writer import TraceWriter
from tests.sipcore.test_trace_flow import FLOW, VA, Addr, message, sdp

P, A = Addr("UDP", "127.0.0.1", 5060), Addr("UDP", "127.0.0.1", 5070)


class Wall:
    now_us = 1_712_345_678_000_000

    def __call__(self) -> int:
        return self.now_us * 1000


def writers(tmp_path: Path, wall: Wall) -> tuple[TraceWriter, TraceWriter]:
    return (TraceWriter(tmp_path / "p.jsonl", label="proxy", wall_ns=wall, pid=1),
            TraceWriter(tmp_path / "a.jsonl", label="alice", wall_ns=wall, pid=2))


def load(tmp_path: Path, *ws: TraceWriter) -> Trace:
    for w in ws:
        w.close()
    return Trace.load([w.path for w in ws], lambda text: None)


def test_lost_first_transmission_and_retransmission(tmp_path: Path) -> None:
    wall = Wall()
    proxy, alice = writers(tmp_path, wall)
    invite = FLOW[2][2]
    proxy("out", invite, P, A)  # lost on the way
    wall.now_us += 500_000  # Timer A
    proxy("out", invite, P, A)
    wall.now_us += 200
    alice("in", invite, A, P)
    trace = load(tmp_path, proxy, alice)
    first, second = trace.arrows
    assert first.receiver is None and first.missing_receive and not first.retransmission
    assert second.receiver is not None and second.retransmission
    assert second.received_us - second.sent_us == 200


def test_unspecified_interface_folds_into_the_seen_address(tmp_path: Path) -> None:
    wall = Wall()
    proxy, alice = writers(tmp_path, wall)
    anywhere = Addr("UDP", "0.0.0.0", 5060)
    proxy("out", FLOW[1][2], anywhere, A)
    alice("in", FLOW[1][2], A, P)
    trace = load(tmp_path, proxy, alice)
    (arrow,) = trace.arrows
    assert arrow.src == "127.0.0.1:5060" and arrow.receiver is not None
    assert trace.lane_label("127.0.0.1:5060") == "proxy 127.0.0.1:5060"


def test_b2bua_legs_linked_by_call_id_mention(tmp_path: Path) -> None:
    wall = Wall()
    proxy, alice = writers(tmp_path, wall)
    leg1 = message("INVITE sip:bob@a.lab SIP/2.0", [VA], "1 INVITE", body=sdp("sendrecv"),
                   call_id="leg-one-1234@a.lab")
    leg2 = message("INVITE sip:bob@b.lab SIP/2.0", [VA], "1 INVITE", body=sdp("sendrecv"),
                   call_id="leg-two-5678@b.lab", extra="X-Orig-Call-ID: leg-one-1234@a.lab")
    other = message("OPTIONS sip:a.lab SIP/2.0", [VA], "1 OPTIONS", call_id="short",
                    extra="Subject: leg-one")
    for data in (leg1, leg2, other):
        wall.now_us += 1000
        proxy("in", data, P, A)
    trace = load(tmp_path, proxy, alice)
    calls = trace.calls()
    assert [c.call_ids for c in calls] == [["leg-one-1234@a.lab", "leg-two-5678@b.lab"],
                                           ["short"]]
    assert trace.find_call("leg-two-5678@b.lab") is calls[0]
