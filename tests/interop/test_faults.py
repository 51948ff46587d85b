"""Faults around a real `twistd -n sipproxy` / `sipregistrar` (issue 10, part 5).

- Redis (the location store) dies and comes back: quick 500 + Retry-After meanwhile,
  recovery without a restart.
- SQLite locked by another process, or its disk full: quick 500, no corruption.
- SIGTERM: a bounded drain (503 for new requests, pending INVITEs cancelled), exit 0,
  no binding lost.
- SIGHUP: the users file is reloaded; a broken one is refused with one log line.

Every process is one we started, stopped by its PID; every wait is bounded. The
time limits asserted are behavioural bounds (an answer well before a UAC's Timer F,
32 s), generous enough for a loaded CI machine.
"""

from __future__ import annotations

import hashlib
import os
import re
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.conftest import free_port, sip_ping
from tests.interop.sip_helpers import register, sip_request, status_of

pytestmark = pytest.mark.timeout(120)

#: Far below Timer F (32 s): what "quickly" means for an answer from a broken store.
QUICK = 5.0


# -- SIP plumbing -------------------------------------------------------------------


def register_text(user: str, contact_port: int | None, domain: str = "a.lab",
                  extra: str = "") -> str:
    contact = (f"Contact: <sip:{user}@127.0.0.1:{contact_port}>;expires=300\r\n"
               if contact_port else "")
    return (
        f"REGISTER sip:{domain} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:@LOCAL@;branch=z9hG4bKf{time.monotonic_ns()};rport\r\n"
        f"From: <sip:{user}@{domain}>;tag=f{time.monotonic_ns()}\r\n"
        f"To: <sip:{user}@{domain}>\r\nCall-ID: fault-{user}-{time.monotonic_ns()}\r\n"
        f"CSeq: 1 REGISTER\r\n{contact}{extra}Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )


def invite_text(user: str, local_port: int, domain: str = "a.lab") -> str:
    return (
        f"INVITE sip:{user}@{domain} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch=z9hG4bKi{time.monotonic_ns()};rport\r\n"
        f"From: <sip:alice@{domain}>;tag=c{time.monotonic_ns()}\r\n"
        f"To: <sip:{user}@{domain}>\r\nCall-ID: call-{time.monotonic_ns()}\r\n"
        f"CSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:{local_port}>\r\n"
        "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )


def header(answer: bytes, name: str) -> str | None:
    match = re.search(rf"^{name}:\s*(.*?)\r$", answer.decode(errors="replace"), re.M | re.I)
    return match.group(1) if match else None


def invite_status(port: int, user: str, timeout: float = QUICK) -> int | None:
    """Send an INVITE for user@a.lab; the first final status (None if none)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(timeout)
        s.sendto(invite_text(user, s.getsockname()[1]).encode(), ("127.0.0.1", port))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = s.recv(65535)
            except TimeoutError:
                return None
            if not data.startswith(b"SIP/2.0 1"):
                return status_of(data)
    return None


def bindings_listed(port: int, user: str) -> list[str]:
    """Contacts a REGISTER without Contact (a query, §10.2.3) lists for user@a.lab."""
    answer = sip_request(port, register_text(user, None))
    assert status_of(answer) == 200, answer
    return re.findall(r"^Contact: <([^>]*)>", answer.decode(), re.M)


# -- Redis -------------------------------------------------------------------------


def start_redis(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    """redis-server on 127.0.0.1:port (persistence off), answering PING; by PID."""
    exe = shutil.which("redis-server")
    if exe is None:
        if os.environ.get("SIPCALLING_REQUIRE_REDIS"):
            pytest.fail("redis-server not found but SIPCALLING_REQUIRE_REDIS is set")
        pytest.skip("redis-server not installed")
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir), "--logfile", str(workdir / f"redis-{port}.log")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as c:
                c.sendall(b"PING\r\n")
                if c.recv(16).startswith(b"+PONG"):
                    return proc
        except OSError:
            time.sleep(0.05)
    stop(proc)
    raise RuntimeError("redis-server did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)  # a crash, not a clean shutdown: the point
        proc.wait(5)


@pytest.fixture
def redis_procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        stop(proc)


def test_redis_down_is_answered_quickly_and_recovers(start_server, tmp_path, redis_procs):
    redis_port = free_port()
    redis_procs.append(start_redis(redis_port, tmp_path))
    proxy = start_server("sipproxy", "--domain", "a.lab", "--quiet",
                         "--location", f"redis://127.0.0.1:{redis_port}/0")
    bob_port = free_port()
    assert register(proxy.port, "bob", "a.lab", bob_port) == 200

    stop(redis_procs[0])
    started = time.monotonic()
    answer = sip_request(proxy.port, register_text("carol", free_port()), timeout=QUICK + 5)
    took = time.monotonic() - started
    assert status_of(answer) in (500, 503), answer
    assert header(answer, "Retry-After") is not None
    assert took < QUICK, f"REGISTER answered after {took:.1f}s"
    started = time.monotonic()
    assert invite_status(proxy.port, "bob", timeout=QUICK + 5) in (480, 500, 503)
    assert time.monotonic() - started < QUICK
    assert proxy.alive()

    # Redis back on the same port, empty: the proxy reconnects by itself.
    redis_procs.append(start_redis(redis_port, tmp_path))
    deadline = time.monotonic() + 15
    status = None
    while status != 200 and time.monotonic() < deadline:
        status = register(proxy.port, "bob", "a.lab", bob_port)
        if status != 200:
            time.sleep(0.2)
    assert status == 200, proxy.output()[-2000:]
    # And lookups work again: the INVITE reaches bob's contact.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as bob:
        bob.bind(("127.0.0.1", bob_port))
        bob.settimeout(QUICK)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
            caller.bind(("127.0.0.1", 0))
            caller.sendto(invite_text("bob", caller.getsockname()[1]).encode(),
                          ("127.0.0.1", proxy.port))
            assert bob.recv(65535).startswith(b"INVITE sip:bob@127.0.0.1")
    log = proxy.output()
    assert "Traceback" not in log
    assert "location store failed" in log or "location lookup failed" in log


# -- SQLite ------------------------------------------------------------------------


def integrity(db: Path) -> str:
    with sqlite3.connect(db, timeout=5) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


def stored_aors(db: Path) -> set[str]:
    with sqlite3.connect(db, timeout=5) as conn:
        return {row[0] for row in conn.execute("SELECT aor FROM bindings")}


def test_sqlite_locked_by_another_process(start_server, tmp_path):
    db = tmp_path / "loc.sqlite"
    proxy = start_server("sipproxy", "--domain", "a.lab", "--quiet", "--location", f"sqlite:{db}")
    assert register(proxy.port, "alice", "a.lab", free_port()) == 200

    locker = sqlite3.connect(db, isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        started = time.monotonic()
        answer = sip_request(proxy.port, register_text("bob", free_port()), timeout=QUICK + 5)
        took = time.monotonic() - started
        assert status_of(answer) == 500, answer
        assert header(answer, "Retry-After") is not None
        assert took < QUICK, f"answered after {took:.1f}s"
        assert proxy.alive()
    finally:
        locker.execute("ROLLBACK")
        locker.close()

    assert register(proxy.port, "bob", "a.lab", free_port()) == 200
    assert integrity(db) == "ok"
    assert stored_aors(db) == {"sip:alice@a.lab", "sip:bob@a.lab"}
    failures = [line for line in proxy.output().splitlines() if "location store failed" in line]
    assert len(failures) == 1 and "database is locked" in failures[0], failures
    assert "Traceback" not in proxy.output()


def test_sqlite_disk_full(start_server, tmp_path):
    """'Disk full' for real: the proxy's file-size limit (RLIMIT_FSIZE, which Python
    turns into EFBIG instead of SIGXFSZ) is lowered under it, then raised again."""
    db = tmp_path / "loc.sqlite"
    proxy = start_server("sipproxy", "--domain", "a.lab", "--quiet", "--location", f"sqlite:{db}")
    assert register(proxy.port, "alice", "a.lab", free_port()) == 200
    pid = proxy.proc.pid
    sizes = [p.stat().st_size for p in (db, Path(f"{db}-wal"), proxy.log_path) if p.exists()]
    soft, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (max(sizes) + 32768, hard))
    try:
        statuses = []
        for n in range(300):
            status = register(proxy.port, f"user{n}", "a.lab", free_port())
            statuses.append(status)
            if status != 200:
                break
        assert statuses[-1] == 500, statuses
        assert proxy.alive()
    finally:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, hard))
    # Space again: the store works, nothing before the failure is lost or damaged.
    assert register(proxy.port, "bob", "a.lab", free_port()) == 200
    assert integrity(db) == "ok"
    aors = stored_aors(db)
    assert {"sip:alice@a.lab", "sip:bob@a.lab"} <= aors
    assert {f"sip:user{n}@a.lab" for n in range(len(statuses) - 1)} <= aors
    log = proxy.output()
    assert "Traceback" not in log
    assert len([line for line in log.splitlines() if "location store failed" in line]) == 1


# -- SIGTERM -----------------------------------------------------------------------


class RingingCallee(threading.Thread):
    """A UAS on a UDP socket: rings, and answers a CANCEL with 200 and the INVITE
    with 487 (both §9.2), then takes the ACK. Records what it saw."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.seen: list[str] = []

    def run(self) -> None:
        invite_vias = ""
        self.sock.settimeout(15)
        try:
            while True:
                data = self.sock.recv(65535).decode()
                method = data.split(" ", 1)[0]
                self.seen.append(method)
                head = data.split("\r\n\r\n", 1)[0].split("\r\n")[1:]
                keep = "".join(f"{h}\r\n" for h in head
                               if h.split(":")[0].lower() in ("via", "from", "call-id"))
                to = next(h for h in head if h.lower().startswith("to:"))
                cseq = next(h for h in head if h.lower().startswith("cseq:"))
                src = ("127.0.0.1", int(re.search(r"127\.0\.0\.1:(\d+)", keep).group(1)))

                if method == "INVITE":
                    invite_vias = keep
                    self.answer(src, "180 Ringing", keep + to, cseq)
                elif method == "CANCEL":
                    self.answer(src, "200 OK", keep + to, cseq)
                    # The INVITE's 487 carries the INVITE's Vias, not the CANCEL's.
                    self.answer(src, "487 Request Terminated", invite_vias + to,
                                cseq.replace("CANCEL", "INVITE"))
                elif method == "ACK":
                    return
        except (OSError, StopIteration, AttributeError):
            return

    def answer(self, dest: tuple[str, int], status: str, headers: str, cseq: str) -> None:
        self.sock.sendto((f"SIP/2.0 {status}\r\n{headers};tag=callee\r\n{cseq}\r\n"
                          "Content-Length: 0\r\n\r\n").encode(), dest)


def test_sigterm_drains_and_keeps_bindings(start_server, tmp_path):
    db = tmp_path / "loc.sqlite"
    grace = 2.0
    proxy = start_server("sipproxy", "--domain", "a.lab", "--location", f"sqlite:{db}",
                         "--shutdown-grace", str(grace))
    users = [f"u{n}" for n in range(5)]
    for user in users:
        assert register(proxy.port, user, "a.lab", free_port()) == 200
    bob_port = free_port()
    assert register(proxy.port, "bob", "a.lab", bob_port) == 200
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as bob_sock, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
        bob_sock.bind(("127.0.0.1", bob_port))
        bob = RingingCallee(bob_sock)
        bob.start()
        caller.bind(("127.0.0.1", 0))
        caller.settimeout(QUICK)
        caller.sendto(invite_text("bob", caller.getsockname()[1]).encode(),
                      ("127.0.0.1", proxy.port))
        answer = b""
        while not answer.startswith(b"SIP/2.0 180"):
            answer = caller.recv(65535)  # 100 Trying, then 180 Ringing from bob

        os.kill(proxy.proc.pid, signal.SIGTERM)
        stopped_at = time.monotonic()
        time.sleep(0.3)
        # A new request during the drain: refused, with a hint when to come back.
        late = sip_request(proxy.port, register_text("late", free_port()), timeout=2)
        assert status_of(late) == 503, late
        assert header(late, "Retry-After") is not None
        # The ringing call ends with a final response (bob's 487 after our CANCEL).
        final = None
        while final is None:
            data = caller.recv(65535)
            if not data.startswith(b"SIP/2.0 1"):
                final = status_of(data)
        assert final == 487, final

        # twistd re-raises the SIGTERM once stopped (Unix convention; systemd counts
        # it as a clean stop), so "killed by SIGTERM" is the normal exit here.
        assert proxy.proc.wait(grace + 10) in (0, -signal.SIGTERM)
        took = time.monotonic() - stopped_at
        assert took < grace + 3, f"exit after {took:.1f}s"
        bob.join(5)
    assert bob.seen == ["INVITE", "CANCEL", "ACK"], bob.seen
    log = proxy.output()
    assert "Traceback" not in log
    assert "drained in" in log and "1 INVITE(s) cancelled" in log

    # Restart on the same file: every binding is still there.
    again = start_server("sipproxy", "--domain", "a.lab", "--location", f"sqlite:{db}")
    for user in [*users, "bob"]:
        assert len(bindings_listed(again.port, user)) == 1, user
    assert integrity(db) == "ok"


# -- SIGHUP: users reload -----------------------------------------------------------


def digest_register(port: int, user: str, password: str, domain: str = "a.lab") -> int | None:
    """REGISTER with MD5 digest (RFC 2617 qop=auth) as a UA would; the final status."""
    contact_port = free_port()
    call_id = f"auth-{user}-{time.monotonic_ns()}"

    def send(cseq: int, authorization: str = "") -> bytes | None:
        text = register_text(user, contact_port, domain, authorization)
        text = re.sub(r"Call-ID: [^\r]*", f"Call-ID: {call_id}", text)
        text = text.replace("CSeq: 1 REGISTER", f"CSeq: {cseq} REGISTER")
        return sip_request(port, text)

    first = send(1)
    if status_of(first) != 401:
        return status_of(first)
    challenges = re.findall(r"^WWW-Authenticate: (.*?)\r$", first.decode(), re.M)
    # By the algorithm parameter: "SHA" or "MD5" may also turn up inside a random
    # nonce or opaque (that made this test fail about once in a few hundred runs).
    offered = [dict(re.findall(r'(\w+)="?([^",]*)"?', c)) for c in challenges]
    params = next(p for p in offered if p.get("algorithm", "MD5").upper() == "MD5")
    uri = f"sip:{domain}"
    ha1 = hashlib.md5(f"{user}:{params['realm']}:{password}".encode()).hexdigest()
    ha2 = hashlib.md5(f"REGISTER:{uri}".encode()).hexdigest()
    cnonce, nc = "0a4f113b", "00000001"
    response = hashlib.md5(
        f"{ha1}:{params['nonce']}:{nc}:{cnonce}:auth:{ha2}".encode()
    ).hexdigest()
    value = (f'Digest username="{user}", realm="{params["realm"]}", nonce="{params["nonce"]}", '
             f'uri="{uri}", response="{response}", algorithm=MD5, qop=auth, nc={nc}, '
             f'cnonce="{cnonce}"')
    if "opaque" in params:
        value += f', opaque="{params["opaque"]}"'
    return status_of(send(2, f"Authorization: {value}\r\n"))


@pytest.mark.parametrize("plugin", ["sipproxy", "sipregistrar"])
def test_sighup_reloads_users(start_server, tmp_path, plugin):
    users = tmp_path / "users.txt"
    users.write_text("alice@a.lab plain:alicepw\n")
    server = start_server(plugin, "--domain", "a.lab", "--location", "memory:",
                          "--users", str(users))
    assert digest_register(server.port, "alice", "alicepw") == 200
    assert digest_register(server.port, "bob", "bobpw") != 200

    def hup_and_wait(marker: str) -> None:
        before = server.output().count(marker)
        os.kill(server.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 5
        while server.output().count(marker) == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.output().count(marker) == before + 1, server.output()[-2000:]

    users.write_text("bob@a.lab plain:bobpw\n")
    hup_and_wait("reloaded 1 user(s)")
    assert digest_register(server.port, "alice", "alicepw") != 200
    assert digest_register(server.port, "bob", "bobpw") == 200

    users.write_text("this is not a users file\n")
    hup_and_wait("users reload failed")
    assert server.alive() and sip_ping(server.port) is not None
    assert digest_register(server.port, "bob", "bobpw") == 200
    errors = [line for line in server.output().splitlines() if "users reload failed" in line]
    assert len(errors) == 1 and "users.txt:1" in errors[0], errors
    assert "Traceback" not in server.output()
