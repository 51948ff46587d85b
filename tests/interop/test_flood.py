"""`twistd -n sipproxy` under a flood: per-IP bans, connection caps, overload 503.

Every wait here is bounded; the packet counts are fixed. The whole 127.0.0.0/8 is
loopback on Linux, so 127.0.0.2 serves as a second, innocent source.
"""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest

from tests.interop.conftest import sip_ping


def udp_request(
    sock: socket.socket, port: int, n: int, method: str = "OPTIONS", uri: str = ""
) -> bytes:
    """A request sent from `sock` (to the server itself unless `uri` says otherwise)."""
    host, local = sock.getsockname()[:2]
    uri = uri or f"sip:127.0.0.1:{port}"
    return (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{local};branch=z9hG4bKflood{n}x{time.monotonic_ns()}\r\n"
        f"From: <sip:flood@{host}>;tag=f{n}\r\nTo: <{uri}>\r\n"
        f"Call-ID: flood{n}-{time.monotonic_ns()}\r\nCSeq: 1 {method}\r\n"
        f"Contact: <sip:flood@{host}:{local}>\r\n"
        "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def ping_from(source: str, port: int, timeout: float = 1.0) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        s.settimeout(timeout)
        s.sendto(udp_request(s, port, 0), ("127.0.0.1", port))
        try:
            return s.recv(65535)
        except TimeoutError:
            return None


def drain(sock: socket.socket, quiet: float = 0.5, limit: float = 10.0) -> list[bytes]:
    """Read answers until none came for `quiet` seconds (at most `limit` seconds)."""
    answers = []
    deadline = time.monotonic() + limit
    sock.settimeout(quiet)
    while time.monotonic() < deadline:
        try:
            answers.append(sock.recv(65535))
        except TimeoutError:
            break
    return answers


def status_of(answer: bytes | None) -> int | None:
    return None if not answer else int(answer.split(b" ", 2)[1])


def test_udp_flood_bans_the_source_only(start_server):
    ban = 3
    proxy = start_server(
        "sipproxy", "--domain", "a.lab", "--location", "memory:", "--quiet",
        "--pike-rate", "100/10", "--pike-ban", str(ban),
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as flood:
        flood.bind(("127.0.0.1", 0))
        flood.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        for n in range(2000):
            flood.sendto(udp_request(flood, proxy.port, n), ("127.0.0.1", proxy.port))
            if n % 100 == 99:
                time.sleep(0.01)  # keep the proxy's socket buffer from overflowing
        flooded_at = time.monotonic()
        answers = drain(flood)
    # 100 per 10 s: the startup ping used one token, refill adds ~10 a second.
    assert 50 <= len(answers) <= 150, len(answers)
    assert all(status_of(a) == 200 for a in answers)
    # Banned: the flooding IP gets nothing, even from a new port ...
    assert time.monotonic() - flooded_at < ban - 0.5, "too slow to observe the ban"
    assert sip_ping(proxy.port, timeout=0.5) is None
    # ... while another source is answered during the ban.
    assert status_of(ping_from("127.0.0.2", proxy.port)) == 200
    # After the ban the first source is answered again.
    deadline = flooded_at + ban + 10
    time.sleep(max(0.0, flooded_at + ban - time.monotonic()))
    answer = None
    while answer is None and time.monotonic() < deadline:
        answer = sip_ping(proxy.port, timeout=0.5)
    assert status_of(answer) == 200
    assert proxy.alive()
    bans = [line for line in proxy.output().splitlines() if "pike: blocking" in line]
    assert len(bans) == 1, bans
    assert "127.0.0.1" in bans[0]


def test_tcp_connection_cap_per_ip(start_server):
    cap = 4
    proxy = start_server(
        "sipproxy", "--domain", "a.lab", "--location", "memory:", "--quiet",
        "--max-connections-per-ip", str(cap),
    )
    conns = []
    try:
        for _ in range(cap + 5):
            conns.append(socket.create_connection(("127.0.0.1", proxy.port), timeout=2))
        closed, open_ = [], []
        for c in conns:
            c.settimeout(0.5)
            try:
                (closed if c.recv(1) == b"" else open_).append(c)
            except TimeoutError:
                open_.append(c)
            except ConnectionResetError:
                closed.append(c)
        assert (len(open_), len(closed)) == (cap, 5)
        # The admitted connections work.
        c = open_[0]
        local = c.getsockname()[1]
        c.settimeout(5)
        c.sendall(
            (
                f"OPTIONS sip:127.0.0.1:{proxy.port} SIP/2.0\r\n"
                f"Via: SIP/2.0/TCP 127.0.0.1:{local};branch=z9hG4bKtcpcap\r\n"
                "From: <sip:t@a.lab>;tag=1\r\nTo: <sip:a.lab>\r\nCall-ID: tcpcap\r\n"
                "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            ).encode()
        )
        assert status_of(c.recv(65535)) == 200
        # Closing one frees its slot.
        open_[1].close()
        deadline = time.monotonic() + 5
        admitted = False
        while not admitted and time.monotonic() < deadline:
            extra = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
            conns.append(extra)
            extra.settimeout(0.3)
            try:
                admitted = extra.recv(1) != b""
            except TimeoutError:
                admitted = True
            except ConnectionResetError:
                admitted = False
        assert admitted
    finally:
        for c in conns:
            c.close()
    assert proxy.alive()
    assert status_of(sip_ping(proxy.port)) == 200


def test_overload_answers_503_with_retry_after(start_server):
    # Non-INVITE server transactions over UDP linger 32 s (Timer J = 64*T1) after their
    # response, so each OPTIONS below holds one: deterministic without sleeping. They
    # count against --max-lingering (answered, absorbing retransmissions), not against
    # --max-transactions (work in progress).
    cap = 5
    proxy = start_server(
        "sipproxy", "--domain", "a.lab", "--location", "memory:", "--quiet",
        "--max-transactions", str(cap), "--max-lingering", str(cap), "--retry-after", "17",
    )
    statuses = []
    retry_after = set()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(2.0)
        for n in range(cap + 5):
            s.sendto(udp_request(s, proxy.port, n), ("127.0.0.1", proxy.port))
            answer = s.recv(65535)
            statuses.append(status_of(answer))
            if status_of(answer) == 503:
                for line in answer.decode().split("\r\n"):
                    if line.lower().startswith("retry-after:"):
                        retry_after.add(line.split(":", 1)[1].strip())
    assert statuses[0] == 200
    assert statuses.count(200) <= cap  # the startup ping holds one transaction too
    assert statuses[-5:] == [503] * 5
    assert retry_after == {"17"}
    assert proxy.alive()
    log = proxy.output()
    assert log.count("overload: answering new requests 503") == 1


NOBODY = "sip:nobody@a.lab"  # not registered: a routed INVITE gets 404


def finals(answers: list[bytes]) -> list[bytes]:
    """The distinct final responses. An INVITE's non-2xx is resent every T1 (Timer G)
    until its ACK, which these tests never send; `drain` waits T1 for silence, so
    whether a resend lands within it is a race. A resend is the same bytes."""
    return list(dict.fromkeys(a for a in answers if not a.startswith(b"SIP/2.0 1")))


def final_statuses(sock: socket.socket) -> list[int | None]:
    return sorted(status_of(a) for a in finals(drain(sock)))


def test_new_calls_get_503_while_datagrams_wait_too_long(start_server):
    # The server is stopped (SIGSTOP) while requests reach its socket, so they wait
    # there 0.6 s, more than --max-queue-delay, as they would behind a backlog. Read
    # with their kernel timestamps once it runs again, the new INVITE is refused; the
    # OPTIONS (not a new call) is answered as usual. Then, with nothing queued, a new
    # INVITE is routed again (404: nobody is registered). (--max-request-age 0: the
    # next test drops requests that waited this long.)
    proxy = start_server(
        "sipproxy", "--domain", "a.lab", "--location", "memory:", "--quiet",
        "--max-queue-delay", "0.3", "--retry-after", "11", "--max-request-age", "0",
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        os.kill(proxy.proc.pid, signal.SIGSTOP)
        try:
            s.sendto(udp_request(s, proxy.port, 1, "INVITE", NOBODY), ("127.0.0.1", proxy.port))
            s.sendto(udp_request(s, proxy.port, 2), ("127.0.0.1", proxy.port))
            time.sleep(0.6)
        finally:
            os.kill(proxy.proc.pid, signal.SIGCONT)
        answers = finals(drain(s))
        assert sorted(status_of(a) for a in answers) == [200, 503]
        refused = next(a for a in answers if status_of(a) == 503)
        assert b"CSeq: 1 INVITE" in refused and b"Retry-After: 11" in refused
        s.sendto(udp_request(s, proxy.port, 3, "INVITE", NOBODY), ("127.0.0.1", proxy.port))
        assert final_statuses(s) == [404]
    assert proxy.alive()
    assert "datagrams queued" in proxy.output()


def test_requests_that_waited_past_max_request_age_are_dropped_and_answered_when_resent(
    start_server,
):
    # Stopped for 0.7 s while two OPTIONS reach its socket, the server
    # finds them older than --max-request-age (0.4 s by default): it drops them
    # unread, as their senders have retransmitted them by then (T1 = 0.5 s). The
    # same requests sent again are answered at once.
    proxy = start_server("sipproxy", "--domain", "a.lab", "--location", "memory:", "--quiet")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        sent = [udp_request(s, proxy.port, 1), udp_request(s, proxy.port, 2)]
        os.kill(proxy.proc.pid, signal.SIGSTOP)
        try:
            for data in sent:
                s.sendto(data, ("127.0.0.1", proxy.port))
            time.sleep(0.7)
        finally:
            os.kill(proxy.proc.pid, signal.SIGCONT)
        assert drain(s) == []
        for data in sent:  # the retransmissions
            s.sendto(data, ("127.0.0.1", proxy.port))
        assert sorted(status_of(a) for a in drain(s)) == [200, 200]
    assert proxy.alive()
    assert "overload: dropped 1 UDP request(s) that waited over 400 ms" in proxy.output()


@pytest.mark.parametrize("value", ["x/1", "10/0"])
def test_bad_pike_rate_is_a_usage_error(start_server, value):
    with pytest.raises(RuntimeError, match="pike-rate"):
        start_server("sipproxy", "--location", "memory:", "--pike-rate", value)
