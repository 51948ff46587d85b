"""Authentication and authorisation through real `twistd -n sipproxy` processes (issue 10.3).

Our own raw-UDP peers on loopback addresses (127.0.0.1 and friends: Linux routes all
of 127/8 to lo, so each test source can have its own IP) check:

- no open relay: foreign senders only reach local users, local users only go
  anywhere once authenticated, and stray ACKs are not relayed;
- a captured Authorization / Proxy-Authorization replayed with the same nonce count
  is refused (RFC 7616 §3.4, RFC 3261 §22.4);
- brute-force lockout of a guessing source (403, one log line), others unaffected;
- `--trusted` peers (here a real second proxy) relay without 407.

Every wait is bounded; every process is ended by its PID (conftest.Server.stop).
"""

from __future__ import annotations

import itertools
import socket
import subprocess
import time
from pathlib import Path

import pytest

from sipcore.digest import Challenge, Credentials, answer_challenge
from sipcore.message import Request, Response, parse
from tests.interop.conftest import TWISTD, Server, free_port, sip_ping

pytestmark = pytest.mark.timeout(90)

_SEQ = itertools.count(1)


class Peer:
    """A UDP SIP peer bound to `host`, sending hand-written requests."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.host, self.port = self.sock.getsockname()
        self.sent: dict[str, Request] = {}  # INVITEs by Call-ID, to ACK their failures
        self.dest: dict[str, tuple[str, int]] = {}

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes, dest: tuple[str, int]) -> None:
        message = parse(data)
        if isinstance(message, Request) and message.method == "INVITE":
            self.sent[message.call_id] = message
            self.dest[message.call_id] = dest
        self.sock.sendto(data, dest)

    def receive(self, timeout: float) -> Request | Response | None:
        """The next SIP message, or None after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data, _ = self.sock.recvfrom(65535)
            except TimeoutError:
                return None
            if data.strip():
                return parse(data, validate=False)
        return None

    def final(self, timeout: float = 3.0, call_id: str | None = None) -> Response | None:
        """The first final response (to `call_id`, if given), skipping 1xx, requests
        and retransmitted answers to earlier requests. A non-2xx answer to an INVITE
        is ACKed (RFC 3261 §17.1.1.3) so the proxy stops retransmitting it."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.receive(left)
            if not isinstance(message, Response) or message.status < 200:
                continue
            if message.cseq.method == "INVITE" and message.status >= 300:
                self._ack(message)
            if call_id is None or message.call_id == call_id:
                return message
        return None

    def _ack(self, response: Response) -> None:
        invite = self.sent.get(response.call_id)
        if invite is None:
            return
        ack = (
            f"ACK {invite.uri} SIP/2.0\r\nVia: {invite.headers.get('Via')}\r\n"
            f"From: {invite.headers.get('From')}\r\nTo: {response.headers.get('To')}\r\n"
            f"Call-ID: {invite.call_id}\r\nCSeq: {invite.cseq.number} ACK\r\n"
            "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        self.sock.sendto(ack.encode(), self.dest[response.call_id])

    def request(self, data: bytes, dest: tuple[str, int], timeout: float = 3.0) -> Response | None:
        self.send(data, dest)
        return self.final(timeout, parse(data).call_id)

    def next_request(self, timeout: float = 3.0, method: str | None = None,
                     skip: frozenset[str] = frozenset()) -> Request | None:
        """The next request (of `method`, if given; none whose Call-ID is in `skip`)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.receive(left)
            if (isinstance(message, Request) and message.call_id not in skip
                    and (method is None or message.method == method)):
                return message
        return None


def sip(method: str, uri: str, peer: Peer, *extra: str, from_: str, to: str,
        cseq: int | None = None, call_id: str | None = None) -> bytes:
    n = next(_SEQ)
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP {peer.host}:{peer.port};rport;branch=z9hG4bKah{n}x{time.monotonic_ns()}",
        f"From: <{from_}>;tag=ft{n}",
        f"To: <{to}>",
        f"Call-ID: {call_id or f'ah{n}-{time.monotonic_ns()}'}",
        f"CSeq: {cseq or n} {method}",
        "Max-Forwards: 70",
        f"Contact: <sip:{from_.split(':', 1)[1].split('@')[0]}@{peer.host}:{peer.port}>",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()


def register(peer: Peer, proxy: tuple[str, int], user: str, *extra: str, expires: int = 300,
             call_id: str | None = None, cseq: int | None = None) -> Response | None:
    aor = f"sip:{user}@a.lab"
    return peer.request(
        sip("REGISTER", "sip:a.lab", peer, f"Expires: {expires}", *extra, from_=aor, to=aor,
            call_id=call_id, cseq=cseq),
        proxy,
    )


def sha256(response: Response, header: str) -> Challenge:
    return next(c for c in map(Challenge.parse, response.headers.get_all(header))
                if c.algorithm == "SHA-256")


def login(peer: Peer, proxy: tuple[str, int], user: str, password: str,
          call_id: str = "login-1") -> tuple[Response | None, Credentials]:
    """REGISTER, answer the 401, return the final answer and the credentials sent."""
    first = register(peer, proxy, user, call_id=call_id, cseq=1)
    assert first is not None and first.status == 401, first
    credentials = answer_challenge(sha256(first, "WWW-Authenticate"), "REGISTER",
                                   "sip:a.lab", user, password)
    answer = register(peer, proxy, user, f"Authorization: {credentials}",
                      call_id=call_id, cseq=2)
    return answer, credentials


def invite(peer: Peer, proxy: tuple[str, int], target: str, from_: str, *extra: str,
           timeout: float = 3.0) -> Response | None:
    return peer.request(sip("INVITE", target, peer, *extra, from_=from_, to=target),
                        proxy, timeout)


def invite_authenticated(peer: Peer, proxy: tuple[str, int], target: str, user: str,
                         password: str) -> Credentials:
    """INVITE as user@a.lab, answer the 407 and return the Proxy-Authorization used."""
    first = invite(peer, proxy, target, f"sip:{user}@a.lab")
    assert first is not None and first.status == 407, first
    credentials = answer_challenge(sha256(first, "Proxy-Authenticate"), "INVITE", target,
                                   user, password)
    peer.send(sip("INVITE", target, peer, f"Proxy-Authorization: {credentials}",
                  from_=f"sip:{user}@a.lab", to=target), proxy)
    return credentials


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    path = tmp_path / "users.txt"
    path.write_text("alice@a.lab plain:secret\nbob@a.lab plain:hunter2\n")
    return path


@pytest.fixture
def peers():
    made: list[Peer] = []

    def make(host: str = "127.0.0.1") -> Peer:
        peer = Peer(host)
        made.append(peer)
        return peer

    yield make
    for peer in made:
        peer.close()


@pytest.fixture
def sink(peers) -> Peer:
    """Stands for c.lab's proxy: whatever we relay to another domain lands here."""
    return peers()


@pytest.fixture
def proxy(start_server, users_file, sink) -> Server:
    return start_server(
        "sipproxy", "--domain", "a.lab", "--location", "memory:", "--users", str(users_file),
        "--route", f"c.lab=127.0.0.1:{sink.port}", "--timer-c", "5",
    )


def addr(server: Server, host: str = "127.0.0.1") -> tuple[str, int]:
    return (host, server.port)


# -- (a) no open relay ---------------------------------------------------------------------


def test_foreign_sender_cannot_relay_to_another_foreign_domain(proxy, peers, sink):
    mallory = peers()
    answer = invite(mallory, addr(proxy), "sip:dave@c.lab", "sip:mallory@evil.example")
    assert answer is not None and answer.status == 403, answer
    assert answer.reason == "Relaying Denied"
    # A MESSAGE (or any non-INVITE) is no different.
    answer = mallory.request(sip("MESSAGE", "sip:dave@c.lab", mallory,
                                 from_="sip:mallory@evil.example", to="sip:dave@c.lab"),
                             addr(proxy))
    assert answer is not None and answer.status == 403
    # And an ACK, which cannot be challenged, is not relayed statelessly either.
    mallory.send(sip("ACK", "sip:dave@c.lab", mallory, from_="sip:mallory@evil.example",
                     to="sip:dave@c.lab;tag=x"), addr(proxy))
    assert sink.next_request(timeout=1.0) is None
    assert proxy.alive()


def test_forged_in_dialog_request_is_not_relayed(proxy, peers, sink):
    """A To tag and a Route naming us do not make a dialog: our Record-Route carries a
    per-dialog mark (HMAC of the Call-ID) that a made-up Route lacks."""
    mallory = peers()
    route = f"Route: <sip:127.0.0.1:{proxy.port};lr>"
    for method in ("MESSAGE", "INVITE", "BYE"):
        answer = mallory.request(
            sip(method, "sip:dave@c.lab", mallory, route,
                from_="sip:mallory@evil.example", to="sip:dave@c.lab;tag=forged"),
            addr(proxy),
        )
        assert answer is not None and answer.status == 403, (method, answer)
    assert sink.next_request(timeout=0.5) is None
    assert proxy.alive()


def test_foreign_sender_reaches_local_users_without_a_challenge(proxy, peers):
    bob = peers()
    answer, _ = login(bob, addr(proxy), "bob", "hunter2")
    assert answer is not None and answer.status == 200, answer
    carol = peers()
    carol.send(sip("INVITE", "sip:bob@a.lab", carol, from_="sip:carol@b.lab",
                   to="sip:bob@a.lab"), addr(proxy))
    delivered = bob.next_request(timeout=3.0)
    assert delivered is not None and delivered.method == "INVITE"
    assert "Proxy-Authorization" not in delivered.headers
    # A local user who is not registered: 480, still no 407/403 for the outsider.
    answer = invite(carol, addr(proxy), "sip:alice@a.lab", "sip:carol@b.lab")
    assert answer is not None and answer.status == 480, answer


def test_local_user_must_authenticate_to_leave_the_domain(proxy, peers, sink):
    alice = peers()
    answer = invite(alice, addr(proxy), "sip:dave@c.lab", "sip:alice@a.lab")
    assert answer is not None and answer.status == 407
    assert sink.next_request(timeout=0.5) is None
    invite_authenticated(alice, addr(proxy), "sip:dave@c.lab", "alice", "secret")
    relayed = sink.next_request(timeout=3.0)
    assert relayed is not None and relayed.method == "INVITE"
    assert str(relayed.uri) == "sip:dave@c.lab"
    assert "Proxy-Authorization" not in relayed.headers  # §22.3: consumed by us
    # Alice's credentials do not let her pose as bob.
    first = invite(alice, addr(proxy), "sip:dave@c.lab", "sip:bob@a.lab")
    credentials = answer_challenge(sha256(first, "Proxy-Authenticate"), "INVITE",
                                   "sip:dave@c.lab", "alice", "secret")
    answer = invite(alice, addr(proxy), "sip:dave@c.lab", "sip:bob@a.lab",
                    f"Proxy-Authorization: {credentials}")
    assert answer is not None and answer.status == 403


# -- (b) nonce replay ------------------------------------------------------------------------


def test_replayed_register_authorization_is_refused(proxy, peers):
    alice = peers()
    answer, credentials = login(alice, addr(proxy), "alice", "secret", call_id="replay")
    assert answer is not None and answer.status == 200, answer
    # An eavesdropper replays the captured header (same nonce, same nc) with its own
    # Contact: refused (401 stale, as sipcore.digest answers REPLAY) and not bound.
    eve = peers()
    replayed = eve.request(
        sip("REGISTER", "sip:a.lab", eve, f"Authorization: {credentials}", "Expires: 300",
            from_="sip:alice@a.lab", to="sip:alice@a.lab", call_id="replay", cseq=3),
        addr(proxy),
    )
    assert replayed is not None and replayed.status == 401, replayed
    assert sha256(replayed, "WWW-Authenticate").stale
    # The honest UA with the next nonce count is fine, and only its contact is bound.
    challenge = Challenge(realm="a.lab", nonce=credentials.nonce, algorithm="SHA-256")
    fresh = answer_challenge(challenge, "REGISTER", "sip:a.lab", "alice", "secret", nc=2)
    answer = register(alice, addr(proxy), "alice", f"Authorization: {fresh}",
                      call_id="replay", cseq=4)
    assert answer is not None and answer.status == 200, answer
    assert {c.uri.port for c in answer.contacts} == {alice.port}


def test_replayed_proxy_authorization_is_refused(proxy, peers, sink):
    alice = peers()
    credentials = invite_authenticated(alice, addr(proxy), "sip:dave@c.lab", "alice", "secret")
    relayed = sink.next_request(timeout=3.0)
    assert relayed is not None
    relayed_call_id = relayed.call_id
    eve = peers()
    answer = invite(eve, addr(proxy), "sip:dave@c.lab", "sip:alice@a.lab",
                    f"Proxy-Authorization: {credentials}")
    assert answer is not None and answer.status == 407, answer
    assert sha256(answer, "Proxy-Authenticate").stale
    # Nothing else reached c.lab (retransmissions of the first INVITE aside).
    assert sink.next_request(timeout=1.0, skip=frozenset({relayed_call_id})) is None


# -- (c) brute force -------------------------------------------------------------------------


def test_guessing_source_is_locked_out_and_others_are_not(start_server, users_file, peers):
    proxy = start_server(
        "sipproxy", "--domain", "a.lab", "--location", "memory:", "--users", str(users_file),
        "--auth-fail-limit", "3/60", "--auth-lockout", "3",
    )
    attacker = peers("127.0.0.5")
    for i in range(3):
        answer, _ = login(attacker, addr(proxy), "alice", f"guess{i}", call_id=f"bf{i}")
        assert answer is not None and answer.status == 401, answer
    locked_at = time.monotonic()
    answer = register(attacker, addr(proxy), "alice")
    assert answer is not None and answer.status == 403, answer
    assert answer.reason == "Too Many Failed Authentications"
    answer = invite(attacker, addr(proxy), "sip:bob@c.lab", "sip:alice@a.lab")
    assert answer is not None and answer.status == 403
    # The real alice, elsewhere, is not locked out (the account is only slowed).
    alice = peers("127.0.0.1")
    answer, _ = login(alice, addr(proxy), "alice", "secret", call_id="real")
    assert answer is not None and answer.status == 200, answer
    log = proxy.output()
    assert log.count("locking out 127.0.0.5") == 1, log[-3000:]
    # After the lockout the source may try again.
    time.sleep(max(0.0, 3.3 - (time.monotonic() - locked_at)))
    answer, _ = login(attacker, addr(proxy), "alice", "secret", call_id="after")
    assert answer is not None and answer.status == 200, answer


# -- (d) trusted peers -------------------------------------------------------------------------


def start_on(host: str, args: list[str], cwd: Path, started: list[Server]) -> Server:
    """A sipproxy on another loopback address (conftest.Server pings 127.0.0.1 only)."""
    port = free_port()
    server = Server.__new__(Server)
    server.port = port
    server.log_path = cwd / f"sipproxy-{host}-{port}.log"
    server.log = open(server.log_path, "wb")
    server.proc = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", "sipproxy", "--interface", host, "--port", str(port),
         *args],
        stdout=server.log, stderr=subprocess.STDOUT, cwd=cwd,
    )
    started.append(server)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"sipproxy exited: {server.output()}")
        if sip_ping(port, host=host, timeout=0.3) is not None:
            return server
    raise RuntimeError(f"sipproxy on {host} did not answer: {server.output()}")


@pytest.fixture
def servers_on():
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


def test_trusted_peer_proxy_relays_without_407(start_server, users_file, peers, sink,
                                               servers_on, tmp_path):
    # Peer proxy "b.lab" on 127.0.0.2 sends everything for c.lab to proxy A, which
    # trusts 127.0.0.2 and routes c.lab to the sink.
    a_port = free_port()
    peer = start_on("127.0.0.2", ["--domain", "b.lab", "--location", "memory:",
                                  "--route", f"c.lab=127.0.0.1:{a_port}"],
                    tmp_path, servers_on)
    a = start_server(
        "sipproxy", "--domain", "a.lab", "--location", "memory:", "--users", str(users_file),
        "--route", f"c.lab=127.0.0.1:{sink.port}", "--trusted", "127.0.0.2/32",
        port=a_port,
    )
    client = peers()
    # Directly, the same requests are challenged (local From) or refused (foreign From).
    answer = invite(client, addr(a), "sip:dave@c.lab", "sip:alice@a.lab")
    assert answer is not None and answer.status == 407
    answer = invite(client, addr(a), "sip:dave@c.lab", "sip:zed@b.lab")
    assert answer is not None and answer.status == 403
    assert sink.next_request(timeout=0.5) is None
    # Through the trusted peer: relayed to the foreign domain, no 407, no 403.
    seen: set[str] = set()
    for from_ in ("sip:zed@b.lab", "sip:alice@a.lab"):
        client.send(sip("INVITE", "sip:dave@c.lab", client, from_=from_, to="sip:dave@c.lab"),
                    ("127.0.0.2", peer.port))
        relayed = sink.next_request(timeout=3.0, method="INVITE", skip=frozenset(seen))
        assert relayed is not None and relayed.method == "INVITE", from_
        assert str(relayed.from_.uri) == from_
        seen.add(relayed.call_id)
        # Both proxies are on the path: A's Via on top of the peer's.
        assert [v.port for v in relayed.vias[:2]] == [a.port, peer.port]
        sink.send(_busy(relayed), (relayed.top_via.host, relayed.top_via.port))
        answer = client.final(3.0, relayed.call_id)
        assert answer is not None and answer.status == 486, answer
    assert a.alive() and peer.alive()


def _busy(request: Request) -> bytes:
    from sipcore.message import make_response

    return make_response(request, 486, to_tag="busy1").serialise()
