"""The user agent role, end to end over a simulated network driven by one task.Clock.

Two (or three) :class:`UserAgent` roles on real SipStacks talk through
:mod:`tests.client.fakenet`; the "proxy" address of each phone is the other phone, so
no proxy is involved. Small fake servers stand in for a registrar and a redirect server.
"""

from __future__ import annotations

import random
from typing import Any

from client.call import Call
from sipcore.digest import DigestAuthenticator, compute_ha1
from sipcore.message import Request, make_response
from sipcore.sdp import parse_sdp
from sipcore.twisted.role import BaseRole
from sipcore.twisted.transport import Address
from sipcore.uri import NameAddr

from .fakenet import FakeNet, Phone

ALICE, BOB, CAROL, SERVER = 5061, 5062, 5063, 5060


def _pair(**bob_config: Any) -> tuple[FakeNet, Phone, Phone]:
    net = FakeNet()
    alice = Phone(net, "alice", ALICE, BOB, rng=random.Random(1))
    bob = Phone(net, "bob", BOB, ALICE, rng=random.Random(2), **bob_config)
    return net, alice, bob


def _direction(body: bytes) -> str:
    sd = parse_sdp(body)
    return sd.effective_direction(sd.media[0])


def _connect() -> tuple[FakeNet, Phone, Phone, Call, Call]:
    net, alice, bob = _pair(auto_answer=True)
    call = alice.ua.call("bob")
    net.run(1)
    assert call.state == "confirmed"
    return net, alice, bob, call, bob.ua.calls[0]


# ---------------------------------------------------------------------- basic calls


def test_call_answer_and_bye() -> None:
    net, alice, bob = _pair(auto_answer=True)
    call = alice.ua.call("bob")
    net.run(1)
    assert alice.lines == ["call 1 outgoing sip:bob@a.lab", "call 1 ringing", "call 1 connected"]
    assert bob.lines == ["call 1 incoming sip:alice@a.lab", "call 1 connected"]
    assert call.media.calls[0][0] == "start"
    assert len(net.requests("ACK")) == 1
    alice.ua.hangup(call)
    net.run(1)
    assert alice.lines[-1] == "call 1 ended hangup"
    assert bob.lines[-1] == "call 1 ended bye"
    assert net.responses(200, "BYE")
    assert call.media is None and not bob.ua.dialogs and not alice.ua.dialogs


def test_callee_hangs_up() -> None:
    net, alice, bob, a_call, b_call = _connect()
    bob.ua.hangup(b_call)
    net.run(1)
    assert alice.lines[-1] == "call 1 ended bye"
    assert bob.lines[-1] == "call 1 ended hangup"


def test_manual_answer() -> None:
    net, alice, bob = _pair()
    alice.ua.call("sip:bob@a.lab")
    net.run(1)
    assert alice.lines[-1] == "call 1 ringing"
    incoming = bob.ua.find_call(None, ("incoming",))
    assert incoming is not None
    bob.ua.answer(incoming)
    net.run(1)
    assert alice.lines[-1] == "call 1 connected"
    # The answer mirrors the offer's codec choice (RFC 3264 §6.1).
    ok = net.responses(200, "INVITE")[0]
    assert b"PCMU" in ok.body


def test_busy() -> None:
    net, alice, bob = _pair(busy=True)
    call = alice.ua.call("bob")
    net.run(1)
    assert call.state == "ended"
    assert alice.lines[-1] == "call 1 ended 486 Busy Here"
    assert bob.lines == ["call 1 incoming sip:alice@a.lab", "call 1 ended 486 Busy Here"]
    assert call.media is None


def test_busy_when_in_call() -> None:
    net = FakeNet()
    alice = Phone(net, "alice", ALICE, BOB)
    carol = Phone(net, "carol", CAROL, BOB)
    bob = Phone(net, "bob", BOB, ALICE, auto_answer=True, busy_when_in_call=True)
    alice.ua.call("bob")
    net.run(1)
    carol.ua.call("bob")
    net.run(1)
    assert carol.lines[-1] == "call 1 ended 486 Busy Here"
    assert alice.lines[-1] == "call 1 connected"
    assert bob.lines[-1] == "call 2 ended 486 Busy Here"


def test_reject() -> None:
    net, alice, bob = _pair()
    alice.ua.call("bob")
    net.run(1)
    bob.ua.reject(bob.ua.calls[0])
    net.run(1)
    assert alice.lines[-1] == "call 1 ended 603 Decline"
    assert bob.lines[-1] == "call 1 ended 603 Decline"


def test_ring_timeout() -> None:
    net, alice, bob = _pair(ring_timeout=5)
    alice.ua.call("bob")
    net.run(4)
    assert alice.lines[-1] == "call 1 ringing"
    net.run(2)
    assert alice.lines[-1] == "call 1 ended 480 Temporarily Unavailable"


def test_unknown_user_404() -> None:
    net, alice, bob = _pair()
    alice.ua.call("dave")
    net.run(1)
    assert alice.lines[-1] == "call 1 ended 404 Not Found"
    assert bob.lines == []


def test_cancel_before_answer() -> None:
    net, alice, bob = _pair()
    call = alice.ua.call("bob")
    net.run(1)
    alice.ua.hangup(call)
    net.run(1)
    assert net.requests("CANCEL")
    assert alice.lines[-1] == "call 1 ended 487 Request Terminated"
    assert bob.lines[-1] == "call 1 ended cancelled"


def test_cancel_waits_for_a_provisional() -> None:
    net, alice, bob = _pair()
    call = alice.ua.call("bob")
    alice.ua.hangup(call)  # nothing back yet: §9.1 says wait
    assert not net.requests("CANCEL")
    net.run(1)
    assert len(net.requests("CANCEL")) == 1
    assert alice.lines[-1] == "call 1 ended 487 Request Terminated"


def test_cancel_crossing_200_ends_with_bye() -> None:
    net, alice, bob = _pair()
    call = alice.ua.call("bob")
    net.run(1)
    bob.ua.answer(bob.ua.calls[0])
    alice.ua.hangup(call)  # our CANCEL and their 200 cross
    net.run(2)
    assert alice.lines[-1] == "call 1 ended hangup"
    assert bob.lines[-1] == "call 1 ended bye"


def test_options_answered() -> None:
    net, alice, bob = _pair()
    req = alice.ua._new_request(
        "OPTIONS", bob.ua.contact_uri, NameAddr(None, bob.ua.contact_uri), "opt-1", "t1", 1
    )
    seen: list[int] = []
    alice.ua._send(req, _Collect(seen))
    net.run(1)
    assert seen == [200]
    assert "INVITE" in (net.responses(200, "OPTIONS")[0].headers.get("Allow") or "")


class _Collect:
    def __init__(self, out: list[int]) -> None:
        self.out = out

    def response_received(self, tx: Any, response: Any) -> None:
        self.out.append(response.status)

    def timed_out(self, tx: Any) -> None:
        self.out.append(408)

    def transport_failed(self, tx: Any) -> None:
        pass

    def terminated(self, tx: Any) -> None:
        pass


def test_bye_for_unknown_dialog_is_481() -> None:
    net, alice, bob, a_call, b_call = _connect()
    bye = a_call.dialog.create_request("BYE")
    bye.headers.set("Call-ID", "nope")
    seen: list[int] = []
    alice.ua._send(bye, _Collect(seen))
    net.run(1)
    assert seen == [481]


def test_malformed_sdp_offer_is_488() -> None:
    net, alice, bob = _pair(auto_answer=True)
    call = alice.ua.call("bob")
    net.run(1)
    # A second INVITE, built by hand, with a body that is not SDP.
    broken = call.invite.copy()
    broken.headers.set("Call-ID", "broken-1")
    broken.headers.set("From", "<sip:alice@a.lab>;tag=zz")
    broken.body = b"v=0\r\nthis is not sdp\r\n"
    seen: list[int] = []
    alice.ua._send(broken, _Collect(seen))
    net.run(1)
    assert 488 in seen


# ---------------------------------------------------------------------- 2xx reliability


def test_lost_ack_makes_uas_retransmit_and_uac_reack() -> None:
    net, alice, bob = _pair(auto_answer=True)
    dropped: list[Request] = []

    def drop_first_ack(message: Any) -> bool:
        if isinstance(message, Request) and message.method == "ACK" and not dropped:
            dropped.append(message)
            return True
        return False

    net.drop = drop_first_ack
    alice.ua.call("bob")
    net.run(3)
    assert dropped
    assert len(net.responses(200, "INVITE")) >= 2  # §13.3.1.4 retransmission
    assert len(net.requests("ACK")) >= 1  # §13.2.2.4 re-ACK
    assert "awaiting_ack" not in bob.ua.calls[0].extra
    net.run(40)
    assert bob.lines[-1] == "call 1 connected"  # no BYE: the ACK got through


def test_no_ack_at_all_ends_the_call() -> None:
    net, alice, bob = _pair(auto_answer=True)
    net.drop = lambda m: isinstance(m, Request) and m.method == "ACK"
    alice.ua.call("bob")
    net.run(40)
    assert bob.lines[-1] == "call 1 ended error no ACK"
    assert alice.lines[-1] == "call 1 ended bye"


# ---------------------------------------------------------------------- hold / resume


def test_hold_and_resume_directions() -> None:
    net, alice, bob, a_call, b_call = _connect()
    alice.ua.hold(a_call)
    net.run(1)
    reinvite = net.requests("INVITE")[-1]
    assert reinvite.to.tag is not None
    assert _direction(reinvite.body) == "sendonly"  # RFC 3264 §8.4
    assert _direction(net.responses(200, "INVITE")[-1].body) == "recvonly"
    assert alice.lines[-1] == "call 1 held"
    assert bob.lines[-1] == "call 1 remote-held"
    assert a_call.media.direction == "sendonly" and b_call.media.direction == "recvonly"
    # The o= version goes up by one per change (RFC 3264 §8).
    first = parse_sdp(net.requests("INVITE")[0].body).origin.sess_version
    assert parse_sdp(reinvite.body).origin.sess_version == first + 1

    alice.ua.resume(a_call)
    net.run(1)
    assert _direction(net.requests("INVITE")[-1].body) == "sendrecv"
    assert _direction(net.responses(200, "INVITE")[-1].body) == "sendrecv"
    assert alice.lines[-1] == "call 1 resumed"
    assert bob.lines[-1] == "call 1 remote-resumed"
    assert a_call.state == b_call.state == "confirmed"


def test_both_hold_is_inactive() -> None:
    net, alice, bob, a_call, b_call = _connect()
    alice.ua.hold(a_call)
    net.run(1)
    bob.ua.hold(b_call)
    net.run(1)
    assert _direction(net.requests("INVITE")[-1].body) == "inactive"
    assert _direction(net.responses(200, "INVITE")[-1].body) == "inactive"
    assert a_call.state == b_call.state == "both-held"
    alice.ua.resume(a_call)
    net.run(1)
    # Bob still holds: Alice offers sendrecv, Bob answers sendonly.
    assert _direction(net.responses(200, "INVITE")[-1].body) == "sendonly"
    assert a_call.state == "remote-held" and b_call.state == "held"


def test_glare_491_then_retry() -> None:
    net, alice, bob, a_call, b_call = _connect()
    alice.ua.hold(a_call)
    bob.ua.hold(b_call)  # both re-INVITEs cross: §14.2 → 491 each way
    net.run(0.1)
    assert len(net.responses(491)) == 2
    # Bob (not the Call-ID owner) retries within 0-2 s; Alice waits 2.1-4 s (§14.1).
    alice_timer = a_call.timers["glare"]
    bob_timer = b_call.timers["glare"]
    now = net.clock.seconds()
    assert 2.1 <= alice_timer.getTime() - now <= 4.0
    assert 0 <= bob_timer.getTime() - now <= 2.0
    net.run(6)
    assert a_call.state == b_call.state == "both-held"
    assert alice.lines.count("call 1 held") == 1 and bob.lines.count("call 1 held") == 1


def test_hold_rejected_keeps_state() -> None:
    net, alice, bob, a_call, b_call = _connect()
    # Bob refuses re-INVITEs with a 488: make his codecs useless.
    bob.ua.codecs = []
    alice.ua.hold(a_call)
    net.run(1)
    assert alice.lines[-1] == "call 1 hold-failed 488 Not Acceptable Here"
    assert a_call.state == "confirmed"


def test_experiment_3_hold_one_answer_other() -> None:
    """A talks to B; C calls B; B holds A, answers C, hangs up C, resumes A."""
    net = FakeNet()
    a = Phone(net, "alice", ALICE, BOB)
    c = Phone(net, "carol", CAROL, BOB)
    b = Phone(net, "bob", BOB, ALICE, auto_answer=True)
    ab = a.ua.call("bob")
    net.run(1)
    b.ua.config.auto_answer = False
    c.ua.call("bob")
    net.run(1)
    assert b.lines[-1] == "call 2 incoming sip:carol@a.lab"
    b_a, b_c = b.ua.calls
    b.ua.hold(b_a)
    net.run(1)
    b.ua.answer(b_c)
    net.run(1)
    assert a.lines[-1] == "call 1 remote-held" and c.lines[-1] == "call 1 connected"
    b.ua.hangup(b_c)
    b.ua.resume(b_a)
    net.run(1)
    assert c.lines[-1] == "call 1 ended bye"
    assert a.lines[-1] == "call 1 remote-resumed"
    assert b.lines[-4:] == ["call 1 held", "call 2 connected", "call 2 ended hangup",
                            "call 1 resumed"]
    assert ab.state == "confirmed"


# ---------------------------------------------------------------------- registration


class _Users:
    def ha1(self, user: str, realm: str, algorithm: str) -> str | None:
        return compute_ha1(algorithm, user, realm, "secret") if user == "alice" else None


class FakeRegistrar(BaseRole):
    """401 without (valid) credentials, 200 with the granted expiry otherwise."""

    def __init__(self, clock: Any, algorithms: tuple[str, ...] = ("SHA-256", "MD5"),
                 granted: int | None = None) -> None:
        self.auth = DigestAuthenticator("a.lab", _Users(), clock, algorithms=algorithms)
        self.granted = granted
        self.registers: list[Request] = []

    def request_received(self, request: Request, tx: Any, source: Address) -> None:
        self.registers.append(request)
        value = request.headers.get("Authorization")
        if value is None or not self.auth.verify_header("REGISTER", value).ok:
            response = make_response(request, 401, to_tag="reg")
            for challenge in self.auth.challenge_header_values():
                response.headers.add("WWW-Authenticate", challenge)
            tx.send_response(response)
            return
        response = make_response(request, 200, to_tag="reg")
        expires = int(request.headers.get("Expires") or "3600")
        if expires:
            granted = self.granted or expires
            response.headers.add("Contact", f"{request.headers.get('Contact')};expires={granted}")
        tx.send_response(response)


def _registered(password: str = "secret", **kw: Any) -> tuple[FakeNet, Phone, FakeRegistrar]:
    net = FakeNet()
    registrar = FakeRegistrar(net.clock, **kw)
    net.attach(registrar, "127.0.0.1", SERVER)
    alice = Phone(net, "alice", ALICE, SERVER, register=True, password=password)
    alice.ua.register()
    net.run(1)
    return net, alice, registrar


def test_register_with_digest_sha256() -> None:
    net, alice, registrar = _registered()
    assert alice.lines == ["registered sip:alice@a.lab expires=3600"]
    first, second = registrar.registers
    assert second.cseq.number == first.cseq.number + 1  # §10.2.4 / §22.2
    assert second.call_id == first.call_id
    assert 'algorithm=SHA-256' in (second.headers.get("Authorization") or "")
    assert "nc=00000001" in (second.headers.get("Authorization") or "")


def test_register_with_md5() -> None:
    net, alice, registrar = _registered(algorithms=("MD5",))
    assert alice.lines == ["registered sip:alice@a.lab expires=3600"]
    assert "algorithm=MD5" in (registrar.registers[-1].headers.get("Authorization") or "")


def test_register_wrong_password_fails() -> None:
    net, alice, registrar = _registered(password="wrong")
    assert alice.lines == ["registration failed 401 Unauthorized"]
    assert len(registrar.registers) <= 3  # bounded retries


def test_register_refresh_and_unregister() -> None:
    net, alice, registrar = _registered(granted=100)
    assert alice.lines == ["registered sip:alice@a.lab expires=100"]
    count = len(registrar.registers)
    net.run(85)
    assert len(registrar.registers) == count
    net.run(10)  # refreshed at 90 s, before expiry
    assert len(registrar.registers) > count
    assert alice.lines[-1] == "registered sip:alice@a.lab expires=100"
    done: list[Any] = []
    alice.ua.shutdown().addCallback(done.append)
    net.run(1)
    assert done
    assert alice.lines[-1] == "unregistered sip:alice@a.lab"
    assert registrar.registers[-1].headers.get("Expires") == "0"


def test_register_timeout_reported() -> None:
    net = FakeNet()
    alice = Phone(net, "alice", ALICE, SERVER, register=True, password="x")
    alice.ua.register()
    net.run(40)
    assert alice.lines == ["registration failed 408 Request Timeout"]


# ---------------------------------------------------------------------- redirect


class FakeRedirect(BaseRole):
    def __init__(self, contacts: list[str]) -> None:
        self.contacts = contacts

    def request_received(self, request: Request, tx: Any, source: Address) -> None:
        response = make_response(request, 302, to_tag="redir")
        for contact in self.contacts:
            response.headers.add("Contact", contact)
        tx.send_response(response)


def test_redirect_follows_highest_q() -> None:
    net = FakeNet()
    net.attach(FakeRedirect([
        "<sip:nobody@127.0.0.1:5999>;q=0.1", f"<sip:bob@127.0.0.1:{BOB}>;q=0.9",
    ]), "127.0.0.1", SERVER)
    alice = Phone(net, "alice", ALICE, SERVER)
    Phone(net, "bob", BOB, SERVER, auto_answer=True)
    alice.ua.call("bob")
    net.run(2)
    assert f"call 1 redirected sip:bob@127.0.0.1:{BOB}" in alice.lines
    assert alice.lines[-1] == "call 1 connected"


def test_redirect_loop_is_bounded() -> None:
    net = FakeNet()
    ports = list(range(5100, 5110))
    for port in ports:
        nxt = port + 1
        net.attach(FakeRedirect([f"<sip:bob@127.0.0.1:{nxt}>"]), "127.0.0.1", port)
    alice = Phone(net, "alice", ALICE, ports[0])
    alice.ua.call("bob")
    net.run(5)
    assert alice.lines[-1].startswith("call 1 ended")
    assert sum(1 for line in alice.lines if "redirected" in line) <= 5


# ---------------------------------------------------------------------- robustness


def test_garbage_request_does_not_crash() -> None:
    net, alice, bob = _pair()
    invite = Request("INVITE", "sip:bob@127.0.0.1", {
        "Via": "SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKx", "From": "<sip:a@a.lab>",
        "To": "<sip:bob@a.lab>", "Call-ID": "x", "CSeq": "1 INVITE", "Max-Forwards": "70",
    })
    seen: list[int] = []
    alice.ua.stack.send_request(invite, bob.address, _Collect(seen))
    net.run(1)
    assert seen and seen[-1] == 400  # no From tag / Contact: refused, no call created
    assert bob.lines == []
