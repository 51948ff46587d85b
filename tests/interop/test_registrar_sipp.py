"""The registrar in real `twistd` processes, driven by real sipp and our own UDP client.

Covers what only whole processes can show: bindings surviving a restart (sqlite),
two processes sharing bindings (redis), sipp's digest implementation against ours,
and hostile REGISTERs that must each get a clear 4xx without hurting anybody else.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from pathlib import Path

import pytest

from sipcore.digest import Challenge, answer_challenge
from sipcore.message import Response, parse
from tests.interop.conftest import run_sipp

_SEQ = itertools.count(1)


def udp_request(port: int, data: bytes, timeout: float = 2.0) -> Response | None:
    """Send one datagram, return the first final response (or None after `timeout`)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.sendto(data, ("127.0.0.1", port))
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            s.settimeout(left)
            try:
                answer = parse(s.recv(65535), validate=False)
            except TimeoutError:
                return None
            if isinstance(answer, Response) and answer.status >= 200:
                return answer
    return None


def register_bytes(
    user: str = "alice", *extra: str, contact: str | None = None, expires: str | None = None,
    call_id: str | None = None, cseq: int = 1, to: str | None = None, domain: str = "a.lab",
) -> bytes:
    n = next(_SEQ)
    lines = [
        f"REGISTER sip:{domain} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:9;rport;branch=z9hG4bKreg{os.getpid()}x{n}",
        f"From: <sip:{user}@{domain}>;tag=t{n}",
        f"To: {to if to is not None else f'<sip:{user}@{domain}>'}",
        f"Call-ID: {call_id or f'reg{os.getpid()}x{n}'}",
        f"CSeq: {cseq} REGISTER",
        "Max-Forwards: 70",
    ]
    if contact is not None:
        lines.append(f"Contact: {contact}")
    if expires is not None:
        lines.append(f"Expires: {expires}")
    lines.extend(extra)
    return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()


def query(port: int, user: str = "alice") -> dict[str, int]:
    """Contact URI -> remaining expires, via a REGISTER without Contact (§10.2.3)."""
    answer = udp_request(port, register_bytes(user))
    assert answer is not None and answer.status == 200, answer
    return {str(c.uri): c.expires for c in answer.contacts}


def status(answer: Response | None) -> int | None:
    return None if answer is None else answer.status


def sipp_register(port: int, tmp_path: Path, scenario: str = "register.xml",
                  user: str = "alice", *keys: str) -> None:
    result = run_sipp(
        scenario, f"127.0.0.1:{port}", "-key", "user", user, "-key", "domain", "a.lab",
        *keys, cwd=tmp_path, timeout=15,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


# -- (a) persistence across a restart (sqlite) -----------------------------------------


def test_sqlite_bindings_survive_restart(start_server, tmp_path):
    location = f"sqlite:{tmp_path / 'loc.sqlite'}"
    first = start_server("sipproxy", "--domain", "a.lab", "--location", location)
    sipp_register(first.port, tmp_path)
    first.stop()
    assert not first.alive()
    second = start_server("sipproxy", "--domain", "a.lab", "--location", location)
    bindings = query(second.port)
    assert len(bindings) == 1, bindings
    [(contact, remaining)] = bindings.items()
    assert contact.startswith("sip:alice@127.0.0.1:")
    assert 290 <= remaining <= 300


# -- (b) two processes sharing one redis ---------------------------------------------------


@pytest.fixture
def redis_url(tmp_path):
    from tests.registrar.conftest import start_redis_server, stop_redis_server

    try:
        proc, port = start_redis_server(tmp_path)
    except FileNotFoundError:
        pytest.skip("redis-server not installed")
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_redis_server(proc)  # exactly the PID we started


def test_redis_bindings_shared_between_processes(start_server, tmp_path, redis_url):
    one = start_server("sipproxy", "--domain", "a.lab", "--location", redis_url)
    two = start_server("sipproxy", "--domain", "a.lab", "--location", redis_url)
    sipp_register(one.port, tmp_path, "register.xml", "carol")
    bindings = query(two.port, "carol")
    assert len(bindings) == 1 and 290 <= next(iter(bindings.values())) <= 300
    # And back: a removal through the second is seen by the first.
    contact = next(iter(bindings))
    answer = udp_request(two.port, register_bytes("carol", contact=f"<{contact}>;expires=0"))
    assert status(answer) == 200
    assert query(one.port, "carol") == {}


# -- (c) digest auth with real sipp and with our own SHA-256 client ------------------------


@pytest.fixture
def users_file(tmp_path):
    path = tmp_path / "users.txt"
    path.write_text("alice@a.lab plain:secret\nbob@a.lab plain:hunter2\n")
    return path


@pytest.fixture
def md5_first_registrar(start_server, users_file):
    # sipp 3.6 can only compute MD5 and answers the first challenge it is given.
    return start_server(
        "sipregistrar", "--domain", "a.lab", "--location", "memory:",
        "--users", str(users_file), "--auth-algorithms", "MD5,SHA-256",
    )


def test_sipp_md5_digest_registers(md5_first_registrar, tmp_path):
    sipp_register(md5_first_registrar.port, tmp_path, "register_auth.xml", "alice",
                  "-s", "alice", "-au", "alice", "-ap", "secret")
    assert len(query_authenticated(md5_first_registrar.port, "alice", "secret")) == 1


def test_sipp_wrong_password_is_challenged_again(md5_first_registrar, tmp_path):
    sipp_register(md5_first_registrar.port, tmp_path, "register_auth_wrong.xml", "alice",
                  "-s", "alice", "-au", "alice", "-ap", "wrong")
    assert query_authenticated(md5_first_registrar.port, "alice", "secret") == {}
    assert md5_first_registrar.alive()


def authenticated(port: int, user: str, password: str, algorithm: str = "SHA-256",
                  **kwargs) -> Response | None:
    first = udp_request(port, register_bytes(user, **kwargs))
    assert status(first) == 401, first
    challenges = [Challenge.parse(v) for v in first.headers.get_all("WWW-Authenticate")]
    [challenge] = [c for c in challenges if c.algorithm == algorithm]
    credentials = answer_challenge(challenge, "REGISTER", "sip:a.lab", user, password)
    return udp_request(port, register_bytes(user, f"Authorization: {credentials}", **kwargs))


def query_authenticated(port: int, user: str, password: str) -> dict[str, int]:
    answer = authenticated(port, user, password, "MD5")
    assert status(answer) == 200, answer
    return {str(c.uri): c.expires for c in answer.contacts}


def test_sha256_digest_with_our_client_against_sipproxy(start_server, users_file):
    proxy = start_server("sipproxy", "--domain", "a.lab", "--location", "memory:",
                         "--users", str(users_file))
    first = udp_request(proxy.port, register_bytes("alice"))
    assert status(first) == 401
    algorithms = [Challenge.parse(v).algorithm for v in first.headers.get_all("WWW-Authenticate")]
    assert algorithms == ["SHA-256", "MD5"]  # RFC 8760 §2.4 preference by default
    answer = authenticated(proxy.port, "alice", "secret",
                           contact="<sip:alice@127.0.0.1:5999>", expires="300")
    assert status(answer) == 200
    assert {str(c.uri) for c in answer.contacts} == {"sip:alice@127.0.0.1:5999"}
    # Wrong password: challenged again; bob's AOR under alice's credentials: 403.
    assert status(authenticated(proxy.port, "alice", "nope")) == 401
    answer = authenticated(proxy.port, "bob", "secret", to="<sip:bob@a.lab>")
    assert status(answer) == 401  # bob/secret is simply wrong
    first = udp_request(proxy.port, register_bytes("bob"))
    challenge = next(Challenge.parse(v) for v in first.headers.get_all("WWW-Authenticate"))
    credentials = answer_challenge(challenge, "REGISTER", "sip:a.lab", "alice", "secret")
    answer = udp_request(proxy.port, register_bytes("bob", f"Authorization: {credentials}"))
    assert status(answer) == 403
    assert proxy.alive()


# -- (d) hostile input over UDP ---------------------------------------------------------------


def test_bad_registers_get_4xx_and_hurt_nobody(start_server):
    proxy = start_server("sipproxy", "--domain", "a.lab", "--location", "memory:")
    good = udp_request(proxy.port, register_bytes(contact="<sip:alice@127.0.0.1:5070>",
                                                  expires="300"))
    assert status(good) == 200
    one_line = ", ".join(f"<sip:alice@127.0.0.1:{10000 + i}>" for i in range(1000))
    many_fields = [f"Contact: <sip:alice@127.0.0.1:{10000 + i}>" for i in range(1000)]
    cases = {
        "broken Contact": register_bytes(contact="<sip:alice@127.0.0.1:5070"),
        "broken Contact param": register_bytes(contact="<sip:alice@127.0.0.1>;expires=x"),
        "broken Expires": register_bytes(contact="<sip:alice@127.0.0.1:5071>", expires="1h"),
        "huge Expires": register_bytes(contact="<sip:alice@127.0.0.1:5071>",
                                       expires="4294967296"),
        "broken To": register_bytes(to="<sip:alice@a.lab"),
        "1000 contacts on one line": register_bytes(contact=one_line),
        "1000 Contact fields": register_bytes("alice", *many_fields),
        "21 contacts": register_bytes(contact=", ".join(one_line.split(", ")[:21])),
        "wildcard without Expires 0": register_bytes(contact="*"),
        "foreign domain": register_bytes(domain="elsewhere.example"),
    }
    for name, data in cases.items():
        answer = udp_request(proxy.port, data)
        assert answer is not None, name
        assert 400 <= answer.status < 500, (name, answer.status, answer.reason)
        assert answer.reason, name
    assert proxy.alive()
    bindings = query(proxy.port)
    assert list(bindings) == ["sip:alice@127.0.0.1:5070"]
    assert 290 <= bindings["sip:alice@127.0.0.1:5070"] <= 300
