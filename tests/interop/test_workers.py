"""`twistd sipproxy --workers 2`: real processes and sipp, with a shared sqlite store
and with memory: replicated between the workers (registrar.location.replicated).

The kernel (SO_REUSEPORT) spreads sources over the workers, so requests from many
source ports reach both; a registration made through one worker must be seen by the
other, and calls, CANCEL and forking must work whichever worker a message lands on.
A worker killed and restarted by the supervisor gets the memory: bindings back from
its peer (start-up sync).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from pathlib import Path

import pytest

from tests.interop.conftest import free_port, run_sipp, sipp_binary
from tests.interop.sip_helpers import Callees, register

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["sqlite", "memory"])
def proxy(request, start_server, tmp_path):
    sipp_binary()
    location = f"sqlite:{tmp_path / 'loc.sqlite'}" if request.param == "sqlite" else "memory:"
    server = start_server(
        "sipproxy", "--domain", "a.lab", "--location", location,
        "--workers", "2", "--timer-c", "4",
    )
    # Every worker bound before a test sends: a socket joining the SO_REUSEPORT group
    # re-spreads source addresses, so a CANCEL could reach a worker that never saw
    # its INVITE (481) if the second worker bound between the two.
    wait_for_workers(server)
    return server


@pytest.fixture
def memory_proxy(start_server):
    sipp_binary()
    server = start_server(
        "sipproxy", "--domain", "a.lab", "--location", "memory:", "--workers", "2",
        "--timer-c", "4",
    )
    wait_for_workers(server)  # as in `proxy`
    return server


@pytest.fixture
def callees(tmp_path):
    started = Callees(tmp_path)
    yield started
    started.stop_all()


def query(port: int, user: str, n: int, source_port: int = 0) -> str:
    """A REGISTER without Contact (a query, RFC 3261 §10.2.3) from a fresh port."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", source_port))
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


def test_bad_worker_group_is_refused(tmp_path):
    import subprocess

    from tests.interop.conftest import TWISTD

    done = subprocess.run(
        [TWISTD, "-n", "--pidfile=", "sipproxy", "--port", str(free_port()),
         "--location", "memory:", "--worker-index", "0", "--worker-ports", "5070,5072",
         "--worker-group", "../x"],
        capture_output=True, text=True, timeout=30, cwd=tmp_path,
    )
    assert done.returncode != 0
    assert "bad --worker-group" in (done.stdout + done.stderr).strip().splitlines()[-1]
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


# -- memory: replicated between the workers ----------------------------------------------


def worker_of(server, port: int, method: str) -> str | None:
    """Which worker logged receiving `method` from 127.0.0.1:`port` (bounded wait)."""
    deadline = time.monotonic() + 5
    pattern = rf"\[worker (\d+)\][^\n]*<- UDP 127\.0\.0\.1:{port} {method} "
    while time.monotonic() < deadline:
        found = re.findall(pattern, server.output())
        if found:
            return found[-1]
        time.sleep(0.05)
    return None


def port_of_worker(server, wanted: str) -> int:
    """A local port whose datagrams the kernel hands to worker `wanted` (probed)."""
    for _ in range(64):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", port))
            s.settimeout(3)
            s.sendto((
                f"OPTIONS sip:127.0.0.1:{server.port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKp{time.monotonic_ns()}\r\n"
                f"From: <sip:probe@a.lab>;tag=p\r\nTo: <sip:127.0.0.1>\r\n"
                f"Call-ID: p{time.monotonic_ns()}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                "Content-Length: 0\r\n\r\n").encode(), ("127.0.0.1", server.port))
            s.recv(65535)
        if worker_of(server, port, "OPTIONS") == wanted:
            return port
    raise AssertionError(f"no port reached worker {wanted}")


def worker_pids(server) -> dict[str, int]:
    """The supervisor's children (our processes), by their --worker-index."""
    pids: dict[str, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid != server.proc.pid:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if b"--worker-index" in argv:
            pids[argv[argv.index(b"--worker-index") + 1].decode()] = int(entry)
    return pids


def wait_for_log(server, pattern: str, count: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(re.findall(pattern, server.output())) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"{pattern!r} x{count} not logged: " + server.output()[-3000:])


def test_memory_register_through_one_worker_call_through_the_other(
    memory_proxy, callees, tmp_path,
):
    wait_for_workers(memory_proxy)
    bob = callees("uas_answer.xml", memory_proxy.port)
    registered_by = worker_of(memory_proxy, bob.port, "REGISTER")
    assert registered_by in ("0", "1"), memory_proxy.output()[-3000:]
    other = "1" if registered_by == "0" else "0"
    caller_port = port_of_worker(memory_proxy, other)
    result = run_sipp(
        "uac_call.xml", f"127.0.0.1:{memory_proxy.port}", "-s", "bob", "-key", "domain",
        "a.lab", "-key", "from", "alice", "-key", "fromdomain", "a.lab",
        "-p", str(caller_port), cwd=tmp_path, timeout=30,
    )
    assert result.returncode == 0, result.stdout[-2000:] + memory_proxy.output()[-3000:]
    assert bob.wait(20) == 0, bob.output()
    assert worker_of(memory_proxy, caller_port, "INVITE") == other


def test_memory_killed_worker_gets_the_bindings_back(memory_proxy):
    wait_for_workers(memory_proxy)
    contact_port = free_port()
    assert register(memory_proxy.port, "carol", "a.lab", contact_port, expires=300) == 200
    pids = worker_pids(memory_proxy)
    assert sorted(pids) == ["0", "1"], pids
    registered_by = worker_of(memory_proxy, contact_port, "REGISTER")
    victim = "1" if registered_by == "0" else "0"  # the copy that only got it replicated
    synced = rf"\[worker {victim}\][^\n]*replication: synced (\d+) bindings"
    before = len(re.findall(synced, memory_proxy.output()))
    os.kill(pids[victim], signal.SIGKILL)  # a child of the supervisor we started
    wait_for_log(memory_proxy, rf"worker {victim} ended", 1)
    wait_for_log(memory_proxy, synced, before + 1)
    assert re.findall(synced, memory_proxy.output())[-1] == "1"
    assert worker_pids(memory_proxy)[victim] != pids[victim]
    start = len(memory_proxy.output())
    for n in range(48):  # over both workers, the restarted one included
        answer = query(memory_proxy.port, "carol", n)
        assert answer.startswith("SIP/2.0 200"), answer
        assert f"127.0.0.1:{contact_port}" in answer, answer
    tail = memory_proxy.output()[start:]
    assert re.search(rf"\[worker {victim}\][^\n]*<- UDP [^\n]* REGISTER", tail), tail[-3000:]


def test_memory_workers_are_picked_by_source_port(memory_proxy):
    """sipcore.twisted.reuseport: each source port reaches the worker socket at
    `socket_index(port, 2)`, whatever the kernel's hash would have said."""
    from sipcore.twisted.reuseport import socket_index

    ports: list[int] = []
    while len(ports) < 2:  # one port for each socket index
        port = free_port()
        if socket_index(port, 2) == len(ports):
            ports.append(port)
    seen: dict[int, set[str]] = {}
    for port in ports:
        for n in range(3):
            answer = query(memory_proxy.port, "dave", n, source_port=port)
            assert answer.startswith("SIP/2.0 200"), answer
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for port in ports:
            seen[port] = set(re.findall(
                rf"\[worker (\d+)\][^\n]*<- UDP 127\.0\.0\.1:{port} REGISTER",
                memory_proxy.output()))
        if all(len(workers) == 1 for workers in seen.values()):
            break
        time.sleep(0.2)
    # Each port's three queries reached one worker, and the two ports different ones.
    assert all(len(workers) == 1 for workers in seen.values()), seen
    assert seen[ports[0]] != seen[ports[1]], seen
