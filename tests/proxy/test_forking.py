"""The response context (§16.7): forking, best response, Timer C, CANCEL fan-out.

Driven with a fake env (tests.proxy.fakes.FakeEnv) and task.Clock; responses come in
with our Via already on top, as the client transaction would deliver them.
"""

from __future__ import annotations

import pytest

from proxy.forking import ResponseContext, build_branch_request, build_cancel, choose_best
from proxy.routing import Target, q_groups
from sipcore.message import Response, make_response
from sipcore.uri import parse_uri
from tests.proxy.fakes import FakeEnv, invite


def target(n: int, q: float = 1.0, **kw) -> Target:
    return Target(parse_uri(f"sip:bob@10.0.0.{n}"), q=q, **kw)


def respond(branch, status: int, to_tag: str | None = "t", **headers: str) -> None:
    """A response to the branch's request, with our Via on top (stripped by Branch)."""
    request = branch.context.env.sent[branch].copy()
    request.headers.prepend("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKours")
    response = make_response(request, status, to_tag=to_tag if status > 100 else None)
    for name, value in headers.items():
        response.headers.add(name.replace("_", "-"), value)
    branch.response_received(branch.tx, response)


def context(targets, timer_c: float = 180.0, method: str = "INVITE"):
    env = FakeEnv()
    ctx = ResponseContext(invite(method=method), q_groups(targets), env, timer_c=timer_c)
    ctx.start()
    return ctx, env


def test_parallel_fork_first_2xx_wins_and_others_are_cancelled():
    ctx, env = context([target(1), target(2), target(3)])
    one, two, three = env.branches
    respond(one, 180)
    respond(two, 100)
    # three has no provisional yet: §9.1 forbids a CANCEL until it has one.
    respond(one, 200)
    assert env.statuses == [180, 200]
    assert env.cancelled == [two]
    respond(three, 180)  # now it may be cancelled; its 180 is not forwarded
    assert env.cancelled == [two, three]
    assert env.statuses == [180, 200]
    respond(two, 487)
    respond(three, 487)
    assert env.statuses == [180, 200]  # nothing after the 2xx but more 2xx
    respond(two, 200, to_tag="t2")  # a 2xx from a cancelled branch still goes up
    assert env.statuses == [180, 200, 200]
    assert "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKours" not in bytes(
        env.upstream[0]
    ).decode()


def test_100_is_never_forwarded():
    ctx, env = context([target(1)])
    respond(env.branches[0], 100)
    assert env.statuses == []


def test_6xx_ends_the_fork():
    ctx, env = context([target(1), target(2)])
    one, two = env.branches
    respond(two, 180)
    respond(one, 603)
    assert env.cancelled == [two]
    assert env.statuses == [180]  # the 6xx waits for the cancelled branch
    respond(two, 487)
    assert env.statuses == [180, 603]


def test_sequential_groups_by_q():
    ctx, env = context([target(1, q=1.0), target(2, q=0.5)])
    assert len(env.branches) == 1
    respond(env.branches[0], 486)
    assert len(env.branches) == 2  # the lower q group runs after the first failed
    respond(env.branches[1], 200)
    assert env.statuses == [200]


def test_upstream_failover_only_on_408_503():
    fail = frozenset({408, 503})
    ctx, env = context([target(1, q=1.0, failover_on=fail), target(2, q=0.5, failover_on=fail)])
    respond(env.branches[0], 486)
    assert len(env.branches) == 1 and env.statuses == [486]
    ctx, env = context([target(1, q=1.0, failover_on=fail), target(2, q=0.5, failover_on=fail)])
    respond(env.branches[0], 503)
    assert len(env.branches) == 2


def test_no_answer_timeout_fails_over_quickly():
    fail = frozenset({408, 503})
    ctx, env = context([target(1, q=1.0, failover_on=fail, no_answer_timeout=2.0),
                        target(2, q=0.5, failover_on=fail, no_answer_timeout=2.0)])
    env.clock.advance(1.9)
    assert len(env.branches) == 1
    env.clock.advance(0.2)
    assert len(env.branches) == 2


def test_timer_c_without_provisional_acts_as_408():
    ctx, env = context([target(1)], timer_c=10)
    env.clock.advance(10)
    assert env.statuses == [408]
    assert env.cancelled == []


def test_timer_c_with_provisional_cancels_and_caller_gets_408():
    ctx, env = context([target(1)], timer_c=10)
    branch = env.branches[0]
    respond(branch, 180)
    env.clock.advance(9)
    respond(branch, 183)  # §16.7 step 2: a provisional resets Timer C
    env.clock.advance(9)
    assert env.cancelled == []
    env.clock.advance(1)
    assert env.cancelled == [branch]
    respond(branch, 487)
    assert env.statuses == [180, 183, 408]


def test_branch_that_ignores_cancel_is_given_up():
    ctx, env = context([target(1)], timer_c=10)
    respond(env.branches[0], 180)
    env.clock.advance(10)
    env.clock.advance(env.timers.b)
    assert env.statuses == [180, 408]


def test_upstream_cancel_fans_out():
    ctx, env = context([target(1), target(2)])
    one, two = env.branches
    respond(one, 180)
    ctx.cancel()
    assert env.cancelled == [one]  # two has answered nothing yet
    respond(two, 100)
    assert env.cancelled == [one, two]


def test_3xx_is_recursed_not_forwarded():
    ctx, env = context([target(1)])
    respond(env.branches[0], 302, Contact="<sip:bob@10.0.0.8:5070>;q=0.5")
    assert len(env.branches) == 2
    assert str(env.branches[1].target.uri) == "sip:bob@10.0.0.8:5070"
    respond(env.branches[1], 486)
    assert env.statuses == [486]


def test_3xx_without_contacts_is_forwarded():
    ctx, env = context([target(1)])
    respond(env.branches[0], 302)
    assert env.statuses == [302]


def test_no_targets_gives_408():
    ctx, env = context([])
    assert env.statuses == [408]


def test_non_invite_is_not_cancelled_and_timer_c_does_not_run():
    ctx, env = context([target(1), target(2)], timer_c=1, method="MESSAGE")
    env.clock.advance(5)
    assert env.statuses == []
    respond(env.branches[0], 200)
    assert env.cancelled == []
    assert env.statuses == [200]


def r(status: int, **headers: str) -> Response:
    response = Response(status)
    for name, value in headers.items():
        response.headers.add(name.replace("_", "-"), value)
    return response


@pytest.mark.parametrize(
    ("statuses", "best"),
    [
        ([486, 603, 302], 603),  # 6xx beats everything
        ([486, 302], 302),  # lowest class
        ([500, 486], 486),
        ([486, 407, 404], 407),  # 4xx that lets the client retry is preferred
        ([404, 415], 415),
        ([503], 500),  # 503 becomes 500
        ([504, 503], 504),
        ([408], 408),
    ],
)
def test_best_response_table(statuses, best):
    assert choose_best([r(s) for s in statuses]).status == best


def test_challenges_are_aggregated():
    best = choose_best([
        r(401, WWW_Authenticate='Digest realm="a"'),
        r(407, Proxy_Authenticate='Digest realm="b"'),
        r(486),
    ])
    assert best.status in (401, 407)
    assert best.headers.get_all("WWW-Authenticate") == ['Digest realm="a"']
    assert best.headers.get_all("Proxy-Authenticate") == ['Digest realm="b"']


def test_build_branch_request_and_cancel():
    request = invite(extra="Route: <sip:10.9.9.9;lr>\n")
    out = build_branch_request(
        request,
        Target(parse_uri("sip:bob@10.0.0.1"), routes=("<sip:edge.a.lab;lr>",)),
        "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKnew",
        "<sip:127.0.0.1:5060;lr>",
    )
    assert str(out.uri) == "sip:bob@10.0.0.1"
    assert out.max_forwards == 69
    assert out.headers.get_all("Route") == ["<sip:edge.a.lab;lr>", "<sip:10.9.9.9;lr>"]
    assert out.headers.get_all("Record-Route") == ["<sip:127.0.0.1:5060;lr>"]
    assert out.top_via.branch == "z9hG4bKnew" and len(out.vias) == 2
    assert request.max_forwards == 70  # the original is untouched
    cancel = build_cancel(out)
    assert cancel.method == "CANCEL" and cancel.cseq.method == "CANCEL"
    assert cancel.top_via.branch == "z9hG4bKnew" and len(cancel.vias) == 1
    assert cancel.headers.get_all("Route") == out.headers.get_all("Route")
