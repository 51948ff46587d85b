"""`twistd sipproxy --workers 2` with a shared sqlite store: real processes and sipp.

The kernel (SO_REUSEPORT) spreads sources over the workers, so requests from many
source ports reach both; a registration made through one worker must be seen by the
other, and calls, CANCEL and forking must work whichever worker a message lands on.
"""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import pytest

from tests.interop.conftest import free_port, run_sipp, sipp_binary
from tests.interop.sip_helpers import Callees, register

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def proxy(start_server, tmp_path):
    sipp_binary()
    return start_server(
        "sipproxy", "--domain", "a.lab", "--location", f"sqlite:{tmp_path / 'loc.sqlite'}",
        "--workers", "2", "--timer-c", "4",
    )


@pytest.fixture
def callees(tmp_path):
    started = Callees(tmp_path)
    yield started
    started.stop_all()


def query(port: int, user: str, n: int) -> str:
    """A REGISTER without Contact (a query, RFC 3261 §10.2.3) from a fresh port."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(3)
        local = s.getsockname()[1]
        s.sendto((
            f"REGISTER sip:a.lab SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bKq{n}x{time.monotonic_ns()}\r\n"
            f"From: <sip:{user}@a.lab>;tag=q{n}\r\nTo: <sip:{user}@a.lab>\r\n"
            f"Call-ID: q{n}-{time.monotonic_ns()}\r\nCSeq: 1 REGISTER\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n").encode(), ("127.0.0.1", port))
        return s.recv(65535).decode(errors="replace")


def workers_that_logged(server, marker: str) -> set[str]:
    return set(re.findall(rf"\[worker (\d+)\][^\n]*{re.escape(marker)}", server.output()))


def call(port: int, tmp_path: Path, scenario: str = "uac_call.xml"):
    return run_sipp(
        scenario, f"127.0.0.1:{port}", "-s", "bob", "-key", "domain", "a.lab",
        "-key", "from", "alice", "-key", "fromdomain", "a.lab",
        "-p", str(free_port()), cwd=tmp_path, timeout=30,
    )


def test_memory_store_is_refused_with_workers(tmp_path):
    import subprocess

    from tests.interop.conftest import TWISTD

    done = subprocess.run(
        [TWISTD, "-n", "--pidfile=", "sipproxy", "--port", str(free_port()),
         "--location", "memory:", "--workers", "2"],
        capture_output=True, text=True, timeout=30, cwd=tmp_path,
    )
    assert done.returncode != 0
    last = (done.stdout + done.stderr).strip().splitlines()[-1]
    assert "--workers needs a shared --location" in last
    assert "Traceback" not in done.stdout + done.stderr


def wait_for_workers(server, count: int = 2) -> None:
    """The first worker up answers the start-up ping; wait for the others (bounded)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if len(workers_that_logged(server, "listening on")) >= count:
            return
        time.sleep(0.2)
    raise AssertionError(server.output()[-3000:])


def test_registration_is_seen_by_every_worker(proxy):
    wait_for_workers(proxy)
    contact_port = free_port()
    assert register(proxy.port, "carol", "a.lab", contact_port, expires=300) == 200
    # Queries from 48 source ports: the kernel hashes them over both workers.
    for n in range(48):
        answer = query(proxy.port, "carol", n)
        assert answer.startswith("SIP/2.0 200"), answer
        assert f"127.0.0.1:{contact_port}" in answer, answer
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(workers_that_logged(proxy, "REGISTER")) < 2:
        time.sleep(0.2)
    assert workers_that_logged(proxy, "REGISTER") == {"0", "1"}, proxy.output()[-3000:]


def test_calls_complete_whichever_worker(proxy, callees, tmp_path):
    bob = callees("uas_answer.xml", proxy.port)
    result = call(proxy.port, tmp_path)
    assert result.returncode == 0, result.stdout[-2000:]
    assert bob.wait(20) == 0, bob.output()
    for _ in range(3):  # more calls from other source ports (other workers, likely)
        bob = callees("uas_answer.xml", proxy.port)
        result = call(proxy.port, tmp_path)
        assert result.returncode == 0, result.stdout[-2000:]
        assert bob.wait(20) == 0, bob.output()
        callees.stop_all()


def test_cancel_with_workers(proxy, callees, tmp_path):
    bob = callees("uas_ring_cancel.xml", proxy.port)
    result = call(proxy.port, tmp_path, "uac_cancel.xml")
    assert result.returncode == 0, result.stdout[-2000:]
    assert bob.wait(20) == 0, bob.output()


def test_forking_with_workers(proxy, callees, tmp_path):
    answering = callees("uas_answer.xml", proxy.port)
    ringing = callees("uas_ring_cancel.xml", proxy.port)
    result = call(proxy.port, tmp_path)
    assert result.returncode == 0, result.stdout[-2000:]
    assert answering.wait(20) == 0, answering.output()
    assert ringing.wait(20) == 0, ringing.output()
    assert "CANCEL sip:" in ringing.messages()
