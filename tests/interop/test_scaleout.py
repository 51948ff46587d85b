"""Scale-out past one process: two `twistd sipproxy` nodes for a.lab on 127.0.0.2 and
127.0.0.3 (same port), one Redis location store, and a real `twistd -n dns` publishing
them as SRV records (deploy/scaleout/scaleout.zone.py: node1 priority 10, node2 20).

- a sipp UAS registered through node 1 is called through node 2 (INVITE/180/200/ACK/BYE);
- a CANCEL through node 2 reaches a callee registered through node 1;
- a caller in b.lab, whose proxy finds a.lab by SRV, reaches node 1 (higher priority)
  while it is up, and node 2 once node 1 is killed (by its PID).

Every process is started here and stopped by its PID; every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.conftest import TWISTD, free_port, run_sipp, sip_ping, sipp_binary
from tests.interop.sip_helpers import SippCallee, register
from tests.interop.test_proxy_calls import call, explain

pytestmark = pytest.mark.timeout(150)

ROOT = Path(__file__).resolve().parents[2]
ZONE = ROOT / "deploy" / "scaleout" / "scaleout.zone.py"
NODE_IPS = ("127.0.0.2", "127.0.0.3")


def port_free_on_all(hosts: tuple[str, ...]) -> int:
    """A port free for UDP and TCP on every address in ``hosts``."""
    for _ in range(50):
        port = free_port()
        try:
            for host in hosts:
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    with socket.socket(socket.AF_INET, kind) as s:
                        s.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no port free on every node address")


class Proc:
    """One twistd process of ours; stopped (or killed) by its PID."""

    def __init__(self, name: str, argv: list[str], cwd: Path) -> None:
        self.name = name
        self.log_path = cwd / f"{name}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, cwd=cwd)

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()


def wait_until(check, what: str, proc: Proc, limit: float = 15.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"{proc.name} exited: {proc.output()}")
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready within {limit:g} s: {proc.output()}")


def srv_answered(dns_port: int) -> bool:
    from twisted.names import dns

    query = dns.Message(id=9, recDes=0)
    query.queries = [dns.Query(b"_sip._udp.a.lab", dns.SRV)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.3)
        s.sendto(query.toStr(), ("127.0.0.1", dns_port))
        try:
            return bool(s.recv(4096))
        except TimeoutError:
            return False


class Cluster:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: list[Proc] = []
        self.redis: subprocess.Popen[bytes] | None = None
        self.nodes: list[Proc] = []
        self.port = 0
        self.dns_port = 0

    def start(self) -> None:
        from tests.registrar.conftest import start_redis_server

        try:
            self.redis, redis_port = start_redis_server(self.tmp_path)
        except FileNotFoundError:
            pytest.skip("redis-server not installed")
        location = f"redis://127.0.0.1:{redis_port}/0"
        self.port = port_free_on_all(NODE_IPS)
        for n, ip in enumerate(NODE_IPS, start=1):
            node = self._start(f"node{n}", [
                TWISTD, "-n", "--pidfile=", "sipproxy", "--domain", "a.lab",
                "--interface", ip, "--port", str(self.port), "--location", location])
            wait_until(lambda ip=ip: sip_ping(self.port, host=ip, timeout=0.3) is not None,
                       f"node{n}", node)
            self.nodes.append(node)
        zone = self.tmp_path / "a.lab.zone.py"
        zone.write_text(ZONE.read_text().replace("@SCALEOUT_PORT@", str(self.port)))
        self.dns_port = free_port()
        dns = self._start("dns", [TWISTD, "-n", "--pidfile=", "dns", "--pyzone", str(zone),
                                  "-i", "127.0.0.1", "-p", str(self.dns_port)])
        wait_until(lambda: srv_answered(self.dns_port), "dns", dns)

    def _start(self, name: str, argv: list[str]) -> Proc:
        proc = Proc(name, argv, self.tmp_path)
        self.procs.append(proc)
        return proc

    def proxy(self, name: str, *args: str) -> tuple[Proc, int]:
        port = free_port()
        proc = self._start(name, [TWISTD, "-n", "--pidfile=", "sipproxy", "--port", str(port),
                                  *args])
        wait_until(lambda: sip_ping(port, timeout=0.3) is not None, name, proc)
        return proc, port

    def callee(self, scenario: str, user: str, via: int = 0) -> SippCallee:
        """A sipp UAS for user@a.lab, registered through node ``via`` (0 or 1)."""
        contact = free_port()
        assert register(self.port, user, "a.lab", contact, host=NODE_IPS[via]) == 200
        callee = SippCallee(scenario, contact, self.tmp_path)
        self.callees.append(callee)
        return callee

    callees: list[SippCallee]

    def stop(self) -> None:
        from tests.registrar.conftest import stop_redis_server

        for callee in getattr(self, "callees", []):
            callee.stop()
        for proc in reversed(self.procs):
            proc.stop()
        if self.redis is not None:
            stop_redis_server(self.redis)  # exactly the PID we started


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    sipp_binary()
    started = Cluster(tmp_path)
    started.callees = []
    try:
        started.start()
        yield started
    finally:
        started.stop()


def run_caller(node_ip: str, port: int, tmp_path: Path, scenario: str, user: str):
    """sipp alice@a.lab calling user@a.lab through the node at node_ip:port."""
    return run_sipp(scenario, f"{node_ip}:{port}", "-s", user, "-key", "domain", "a.lab",
                    "-key", "from", "alice", "-key", "fromdomain", "a.lab",
                    "-message_file", str(tmp_path / "uac.msg"), cwd=tmp_path, timeout=30)


def test_registered_via_node1_called_via_node2(cluster: Cluster, tmp_path: Path) -> None:
    bob = cluster.callee("uas_answer.xml", "bob", via=0)
    result = run_caller(NODE_IPS[1], cluster.port, tmp_path, "uac_call.xml", "bob")
    assert result.returncode == 0, explain(result, tmp_path)
    assert bob.wait(20) == 0, bob.output()
    seen = bob.messages()
    # Node 2 proxied the whole dialog: its Record-Route, its Via on the ACK and BYE.
    assert f"<sip:{NODE_IPS[1]}:{cluster.port};lr>" in seen
    for method in ("ACK", "BYE"):
        block = seen[seen.index(f"{method} sip:"):][:1500]
        assert f"{NODE_IPS[1]}:{cluster.port};branch=z9hG4bK" in block
    assert f"{NODE_IPS[0]}:{cluster.port};branch" not in seen


def test_cancel_through_node2(cluster: Cluster, tmp_path: Path) -> None:
    carol = cluster.callee("uas_ring_cancel.xml", "carol", via=0)
    result = run_caller(NODE_IPS[1], cluster.port, tmp_path, "uac_cancel.xml", "carol")
    assert result.returncode == 0, explain(result, tmp_path)
    assert carol.wait(20) == 0, carol.output()
    assert "CANCEL sip:" in carol.messages()


def test_srv_priority_then_failover_when_node1_dies(cluster: Cluster, tmp_path: Path) -> None:
    dave = cluster.callee("uas_answer.xml", "dave", via=0)
    erin = cluster.callee("uas_answer.xml", "erin", via=0)
    # b.lab's proxy knows a.lab only through DNS; 1 s without an answer = next target.
    _, b_port = cluster.proxy("b.lab", "--domain", "b.lab", "--location", "memory:",
                              "--dns", f"127.0.0.1:{cluster.dns_port}",
                              "--failover-timeout", "1")
    node1_rr = f"<sip:{NODE_IPS[0]}:{cluster.port};lr>"
    node2_rr = f"<sip:{NODE_IPS[1]}:{cluster.port};lr>"

    result = call(b_port, tmp_path, user="dave", domain="a.lab", from_domain="b.lab")
    assert result.returncode == 0, explain(result, tmp_path)
    assert dave.wait(20) == 0, dave.output()
    assert node1_rr in dave.messages() and node2_rr not in dave.messages()

    node1 = cluster.nodes[0]
    node1.stop(signal.SIGKILL)  # a crash, not a drain: nothing answers on node1 now
    assert node1.proc.returncode is not None

    result = call(b_port, tmp_path, user="erin", domain="a.lab", from_domain="b.lab")
    assert result.returncode == 0, explain(result, tmp_path)
    assert erin.wait(20) == 0, erin.output()
    assert node2_rr in erin.messages() and node1_rr not in erin.messages()
