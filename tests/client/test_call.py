"""The call state machine (client.call): every allowed move, every refused one."""

from __future__ import annotations

import itertools

import pytest
from twisted.internet import task

from client.call import _ALLOWED, Call

STATES = [s for s in _ALLOWED if s != "ended"]
# The shortest way from idle to each state, through allowed moves only.
PATHS = {
    "idle": [],
    "calling": ["calling"],
    "ringing": ["calling", "ringing"],
    "early": ["calling", "early"],
    "incoming": ["incoming"],
    "confirmed": ["calling", "confirmed"],
    "held": ["calling", "confirmed", "held"],
    "remote-held": ["calling", "confirmed", "remote-held"],
    "both-held": ["calling", "confirmed", "held", "both-held"],
}
# What the console says for each allowed move.
EXPECTED_LINE = {
    ("idle", "calling"): "call 1 outgoing sip:bob@a.lab",
    ("idle", "incoming"): "call 1 incoming sip:bob@a.lab",
    ("calling", "ringing"): "call 1 ringing",
    ("calling", "early"): "call 1 early",
    ("calling", "confirmed"): "call 1 connected",
    ("ringing", "early"): "call 1 early",
    ("ringing", "confirmed"): "call 1 connected",
    ("early", "ringing"): "call 1 ringing",
    ("early", "confirmed"): "call 1 connected",
    ("incoming", "confirmed"): "call 1 connected",
    ("confirmed", "held"): "call 1 held",
    ("confirmed", "remote-held"): "call 1 remote-held",
    ("held", "confirmed"): "call 1 resumed",
    ("held", "both-held"): "call 1 remote-held",
    ("remote-held", "confirmed"): "call 1 remote-resumed",
    ("remote-held", "both-held"): "call 1 held",
    ("both-held", "held"): "call 1 remote-resumed",
    ("both-held", "remote-held"): "call 1 resumed",
}


def call_in(state: str) -> tuple[Call, list[str]]:
    lines: list[str] = []
    call = Call(1, "outgoing", "sip:bob@a.lab", lines.append)
    for step in PATHS[state]:
        call.move(step)
    lines.clear()
    return call, lines


def test_the_table_and_the_expectations_agree():
    allowed = {(old, new) for old, news in _ALLOWED.items() for new in news}
    assert allowed == set(EXPECTED_LINE)


@pytest.mark.parametrize(("old", "new"), sorted(EXPECTED_LINE))
def test_allowed_move_reports_one_line(old, new):
    call, lines = call_in(old)
    call.move(new)
    assert call.state == new
    assert lines == [EXPECTED_LINE[(old, new)]]


@pytest.mark.parametrize(
    ("old", "new"),
    [(o, n) for o, n in itertools.product(STATES, STATES)
     if o != n and n not in _ALLOWED[o]],
)
def test_refused_move_raises_and_changes_nothing(old, new):
    call, lines = call_in(old)
    with pytest.raises(ValueError):
        call.move(new)
    assert call.state == old
    assert lines == []


@pytest.mark.parametrize("state", STATES)
def test_end_from_every_state_once(state):
    call, lines = call_in(state)
    clock = task.Clock()
    call.set_timer("ring", clock.callLater(10, lambda: None))
    call.end("486 Busy Here")
    call.end("bye")
    assert call.state == "ended"
    assert lines == ["call 1 ended 486 Busy Here"]
    assert not clock.getDelayedCalls()
    with pytest.raises(ValueError):
        call.move("confirmed")


def test_connected_only_once_reached():
    call, _ = call_in("ringing")
    assert not call.connected
    call.move("confirmed")
    assert call.connected and call.talking


@pytest.mark.parametrize(
    ("start", "local", "remote", "end", "lines"),
    [
        ("confirmed", True, None, "held", ["call 1 held"]),
        ("confirmed", True, True, "both-held", ["call 1 held", "call 1 remote-held"]),
        # Both flags flipping: through both-held (client.call._via), never a jump.
        ("held", False, True, "remote-held", ["call 1 remote-held", "call 1 resumed"]),
        ("remote-held", True, False, "held", ["call 1 remote-resumed", "call 1 held"]),
        ("both-held", False, False, "confirmed", ["call 1 resumed", "call 1 remote-resumed"]),
        ("ringing", True, None, "ringing", []),
    ],
)
def test_set_hold_walks_through_allowed_states(start, local, remote, end, lines):
    call, out = call_in(start)
    call.set_hold(local=local, remote=remote)
    assert call.state == end
    assert out == lines


def test_end_stops_media():
    class Media:
        stopped = 0

        def stop(self):
            self.stopped += 1

    call, _ = call_in("confirmed")
    media = Media()
    call.media = media
    call.end("hangup")
    assert media.stopped == 1 and call.media is None
