"""`ProxyRole` driven through a fake stack: the request pipeline, auth policy, CANCEL,
stateless ACK and stray-response forwarding."""

from __future__ import annotations

import pytest
from twisted.internet import task

from proxy.core import ProxyRole
from registrar.location import Binding
from sipcore.digest import Challenge, answer_challenge
from sipcore.message import make_response
from sipcore.transaction import State
from sipcore.twisted.transport import Address
from tests.proxy.fakes import FakeServerTx, FakeStack, invite, request

SOURCE = Address("UDP", "10.0.0.1", 5070)


@pytest.fixture
def clock():
    c = task.Clock()
    c.advance(1_000_000)
    return c


def make_role(clock, tmp_path=None, users: str | None = None, **config):
    config.setdefault("domains", ["a.lab"])
    config.setdefault("location", "memory:")
    if users is not None:
        path = tmp_path / "users.txt"
        path.write_text(users)
        config["users"] = str(path)
    role = ProxyRole(config, clock)
    role.stack = FakeStack()
    role.start()
    return role


def deliver(role, req, source=SOURCE):
    tx = FakeServerTx(req)
    role.request_received(req, tx, source)
    return tx


def register(role, user="bob", port=5080, q=None):
    qp = f";q={q}" if q is not None else ""
    req = request(
        f"REGISTER sip:a.lab SIP/2.0\nVia: SIP/2.0/UDP 10.0.0.2:{port};branch=z9hG4bKr{port}\n"
        f"From: <sip:{user}@a.lab>;tag=r\nTo: <sip:{user}@a.lab>\nCall-ID: reg-{user}-{port}\n"
        f"CSeq: 1 REGISTER\nContact: <sip:{user}@10.0.0.2:{port}>{qp};expires=600\n"
    )
    tx = deliver(role, req, Address("UDP", "10.0.0.2", port))
    assert tx.statuses == [200]


def test_invite_is_forked_to_every_binding_and_record_routed(clock):
    role = make_role(clock)
    register(role, port=5080)
    register(role, port=5081)
    deliver(role, invite())
    sent = role.stack.sent("INVITE")
    assert sorted(tx.dest.port for tx in sent) == [5080, 5081]
    for tx in sent:
        assert tx.request.headers.get("Record-Route") == "<sip:127.0.0.1:5060;lr>"
        assert tx.request.max_forwards == 69
        assert tx.request.top_via.host == "127.0.0.1"
    assert sent[0].request.top_via.branch != sent[1].request.top_via.branch


def test_unknown_user_404_and_known_but_gone_480(clock):
    role = make_role(clock)
    assert deliver(role, invite("sip:nobody@a.lab")).statuses == [404]
    role.known_aors.add("sip:carol@a.lab")
    assert deliver(role, invite("sip:carol@a.lab")).statuses == [480]


def test_a_registration_makes_its_aor_known_once_applied(clock):
    role = make_role(clock)
    # Refused before the store (not our domain): nothing is noted.
    foreign = request(
        "REGISTER sip:b.lab SIP/2.0\nVia: SIP/2.0/UDP 10.0.0.2:5080;branch=z9hG4bKf1\n"
        "From: <sip:dave@b.lab>;tag=r\nTo: <sip:dave@b.lab>\nCall-ID: reg-dave\n"
        "CSeq: 1 REGISTER\nContact: <sip:dave@10.0.0.2:5080>\n"
    )
    assert deliver(role, foreign).statuses == [404]
    # A query changes nothing and notes nothing.
    query = request(
        "REGISTER sip:a.lab SIP/2.0\nVia: SIP/2.0/UDP 10.0.0.2:5080;branch=z9hG4bKq1\n"
        "From: <sip:erin@a.lab>;tag=r\nTo: <sip:erin@a.lab>\nCall-ID: reg-erin\n"
        "CSeq: 1 REGISTER\n"
    )
    assert deliver(role, query).statuses == [200]
    assert role.known_aors == set()
    # The store's key (the registrar's AOR: no port, host lower-cased) is what is noted.
    register(role, user="bob")
    assert role.known_aors == {"sip:bob@a.lab"}
    clock.advance(601)  # the binding expired: bob exists but is not reachable
    assert deliver(role, invite("sip:bob@a.lab")).statuses == [480]
    assert deliver(role, invite("sip:erin@a.lab")).statuses == [404]


def test_known_aors_stay_bounded_whoever_notes_them(clock, monkeypatch):
    # REGISTERs here and bindings replicated from other workers both note AORs.
    monkeypatch.setattr("proxy.core.MAX_KNOWN_AORS", 3)
    role = make_role(clock)
    for user in ("u1", "u2", "u3", "u4", "u5"):
        role._note_aor(f"sip:{user}@a.lab")
        assert len(role.known_aors) <= 3
    assert "sip:u5@a.lab" in role.known_aors
    register(role, user="bob")
    assert "sip:bob@a.lab" in role.known_aors and len(role.known_aors) <= 3


def test_max_forwards_zero_options_to_us_is_answered(clock):
    role = make_role(clock)
    options = invite("sip:127.0.0.1:5060", method="OPTIONS")
    options.headers.set("Max-Forwards", "0")
    assert deliver(role, options).statuses == [200]
    inv = invite()
    inv.headers.set("Max-Forwards", "0")
    assert deliver(role, inv).statuses == [483]


def test_bad_route_is_answered_400_through_the_transaction(clock):
    role = make_role(clock)
    tx = deliver(role, invite(extra="Route: <sip:x;lr\n"))
    assert tx.statuses == [400]
    assert tx.sent[0].reason == "Bad name-addr"


def test_cancel_fans_out_and_answers_487(clock):
    role = make_role(clock)
    register(role, port=5080)
    register(role, port=5081)
    inv = invite()
    tx = deliver(role, inv)
    first, second = role.stack.sent("INVITE")
    first.tu.response_received(first, make_response(first.request, 180, to_tag="x"))
    role.cancel_received(invite(method="CANCEL"), tx, SOURCE)
    assert tx.statuses[-1] == 487
    cancels = role.stack.sent("CANCEL")
    assert [c.dest for c in cancels] == [first.dest]  # second: no provisional yet
    assert cancels[0].request.top_via.branch == first.request.top_via.branch


def test_stray_ack_is_forwarded_statelessly_by_route(clock):
    role = make_role(clock)
    ack = invite(
        "sip:bob@10.0.0.2:5080", method="ACK", to_tag="t",
        extra="Route: <sip:127.0.0.1:5060;lr>\n",
    )
    retransmission = ack.copy()
    role.ack_received(ack, SOURCE)
    role.ack_received(retransmission, SOURCE)  # must get the same branch (§16.11)
    (first, dest1), (again, dest2) = role.stack.stateless
    assert dest1 == dest2 == Address("UDP", "10.0.0.2", 5080)
    assert "Route" not in first.headers
    assert first.top_via.branch == again.top_via.branch
    assert first.max_forwards == 69


def test_stray_2xx_is_forwarded_without_our_via(clock):
    role = make_role(clock)
    resp = make_response(invite(), 200, to_tag="t")
    resp.headers.prepend("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKgone")
    role.stray_response(resp, Address("UDP", "10.0.0.2", 5080))
    (out, _), = role.stack.stateless
    assert out.top_via.host == "10.0.0.1"
    # Not ours on top: dropped.
    role.stray_response(make_response(invite(), 200, to_tag="t"), SOURCE)
    assert len(role.stack.stateless) == 1


def test_static_route_for_foreign_domain(clock):
    role = make_role(clock, routes={"b.lab": ("10.9.0.1", 5090)})
    deliver(role, invite("sip:bob@b.lab"))
    (tx,) = role.stack.sent("INVITE")
    assert tx.dest == Address("UDP", "10.9.0.1", 5090)
    assert str(tx.request.uri) == "sip:bob@b.lab"


USERS = "alice@a.lab plain:secret\nbob@a.lab plain:pw\n"


def test_local_caller_must_authenticate(clock, tmp_path):
    role = make_role(clock, tmp_path, USERS)
    register_authless = role.location  # bindings written directly: auth is not the point
    from registrar.location import Binding

    register_authless.put(Binding("sip:bob@a.lab", "sip:bob@10.0.0.2:5080", clock.seconds() + 60))
    tx = deliver(role, invite())
    assert tx.statuses == [407]
    challenge = Challenge.parse(tx.sent[0].headers.get("Proxy-Authenticate"))
    creds = answer_challenge(challenge, "INVITE", "sip:bob@a.lab", "alice", "secret")
    tx = deliver(role, invite(extra=f"Proxy-Authorization: {creds}\n"))
    assert tx.statuses == []  # forwarded
    (out,) = role.stack.sent("INVITE")
    assert "Proxy-Authorization" not in out.request.headers  # our credentials consumed


def test_wrong_user_in_credentials_is_403(clock, tmp_path):
    role = make_role(clock, tmp_path, USERS)
    tx = deliver(role, invite())
    challenge = Challenge.parse(tx.sent[0].headers.get("Proxy-Authenticate"))
    creds = answer_challenge(challenge, "INVITE", "sip:bob@a.lab", "bob", "pw")
    assert deliver(role, invite(extra=f"Proxy-Authorization: {creds}\n")).statuses == [403]


def test_no_open_relay(clock, tmp_path):
    role = make_role(clock, tmp_path, USERS, routes={"c.lab": ("10.9.0.1", 5090)})
    tx = deliver(role, invite("sip:carol@c.lab", from_="sip:mallory@evil.lab"))
    assert tx.statuses == [403]
    # ... but foreign callers may reach our users.
    tx = deliver(role, invite("sip:bob@a.lab", from_="sip:carol@b.lab"))
    assert tx.statuses == [480]  # bob is known (users file) but not registered


def test_in_dialog_request_through_our_route_needs_no_auth(clock, tmp_path):
    role = make_role(clock, tmp_path, USERS)
    mark = role.me.dialog_mark("call-1")
    bye = invite("sip:bob@10.0.0.2:5080", method="BYE", to_tag="t",
                 extra=f"Route: <sip:127.0.0.1:5060;dlg={mark};lr>\n")
    assert deliver(role, bye).statuses == []
    (out,) = role.stack.sent("BYE")
    assert out.dest == Address("UDP", "10.0.0.2", 5080)
    assert "Record-Route" not in out.request.headers


def test_record_route_carries_the_dialog_mark_when_authenticating(clock, tmp_path):
    role = make_role(clock, tmp_path, USERS)
    role.location.put(Binding(aor="sip:bob@a.lab", contact="sip:bob@10.0.0.2:5080",
                              expires_at=clock.seconds() + 600, call_id="r", cseq=1))
    deliver(role, invite(from_="sip:carol@b.lab"))  # foreign caller to our user: no 407
    (out,) = role.stack.sent("INVITE")
    assert f";dlg={role.me.dialog_mark('call-1')};lr>" in out.request.headers.get(
        "Record-Route")


@pytest.mark.parametrize(
    ("route", "caller", "status"),
    [
        # A made-up Route naming us, no mark: a local user must authenticate ...
        ("<sip:127.0.0.1:5060;lr>", "sip:alice@a.lab", 407),
        # ... and a stranger may not use us to reach another domain.
        ("<sip:127.0.0.1:5060;lr>", "sip:mallory@evil.lab", 403),
        # A mark copied from another dialog does not fit this Call-ID.
        ("<sip:127.0.0.1:5060;dlg=AAAAAAAAAAAAAAAA;lr>", "sip:mallory@evil.lab", 403),
    ],
)
def test_forged_in_dialog_request_is_not_relayed(clock, tmp_path, route, caller, status):
    role = make_role(clock, tmp_path, USERS)
    message = invite("sip:victim@c.lab", method="MESSAGE", to_tag="t", from_=caller,
                     extra=f"Route: {route}\n")
    assert deliver(role, message).statuses == [status]
    assert role.stack.sent("MESSAGE") == []


def test_without_users_record_route_is_unsigned(clock):
    role = make_role(clock)
    assert role.me.record_route("UDP", "call-1") == "<sip:127.0.0.1:5060;lr>"


def test_forked_non_invite_answers_once_even_after_its_transaction_ended(clock):
    # An answered non-INVITE server transaction ends early when the stack's table
    # absorbs its retransmissions (TransactionTable.retire); a late 2xx from another
    # branch must not then go upstream statelessly as a second final (§16.7 step 5).
    role = make_role(clock)
    register(role, port=5080)
    register(role, port=5081)
    tx = deliver(role, invite(method="MESSAGE"))
    first, second = role.stack.sent("MESSAGE")
    first.tu.response_received(first, make_response(first.request, 200, to_tag="a"))
    assert tx.statuses == [200]
    tx.state = State.TERMINATED
    role.server_tx_ended(tx, "terminated")
    second.tu.response_received(second, make_response(second.request, 200, to_tag="b"))
    assert tx.statuses == [200] and role.stack.stateless == []
