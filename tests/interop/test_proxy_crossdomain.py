"""alice@a.lab calls bob@b.lab across two real proxies (a.lab and b.lab on 127.0.0.1,
distinct ports), found (1) by --route, (2) through a real `twistd -n sipredirect`
(302, recursion), (3) by DNS SRV from a real `twistd -n dns` zone; and a PBX behind
--upstream with fail-over from a dead first upstream."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.interop.conftest import TWISTD, free_port
from tests.interop.sip_helpers import Callees
from tests.interop.test_proxy_calls import call, explain, top_via_of

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def callees(tmp_path):
    started = Callees(tmp_path)
    yield started
    started.stop_all()


def proxy_b(start_server):
    return start_server("sipproxy", "--domain", "b.lab", "--location", "memory:")


def assert_two_proxy_dialog(bob, a_port: int, b_port: int) -> None:
    seen = bob.messages()
    # Both proxies Record-Routed, and the in-dialog requests came through both.
    assert f"<sip:127.0.0.1:{a_port};lr>" in seen and f"<sip:127.0.0.1:{b_port};lr>" in seen
    for method in ("ACK", "BYE"):
        assert f"127.0.0.1:{b_port};branch=z9hG4bK" in top_via_of(seen, method)
        block = seen[seen.index(f"{method} sip:"):seen.index(f"{method} sip:") + 1500]
        assert f"127.0.0.1:{a_port};branch=z9hG4bK" in block


def test_cross_domain_by_static_route(start_server, callees, tmp_path):
    b = proxy_b(start_server)
    a = start_server("sipproxy", "--domain", "a.lab", "--location", "memory:",
                     "--route", f"b.lab=127.0.0.1:{b.port}")
    bob = callees("uas_answer.xml", b.port, domain="b.lab")
    result = call(a.port, tmp_path, domain="b.lab")
    assert result.returncode == 0, explain(result, tmp_path)
    assert bob.wait(20) == 0, bob.output()
    assert_two_proxy_dialog(bob, a.port, b.port)


def test_cross_domain_by_redirect_server(start_server, callees, tmp_path):
    b = proxy_b(start_server)
    redirect = start_server("sipredirect", "--domain", "a.lab", "--location", "memory:",
                            "--route", f"b.lab=127.0.0.1:{b.port}")
    a = start_server("sipproxy", "--domain", "a.lab", "--location", "memory:",
                     "--redirect-server", f"127.0.0.1:{redirect.port}")
    bob = callees("uas_answer.xml", b.port, domain="b.lab")
    result = call(a.port, tmp_path, domain="b.lab")
    assert result.returncode == 0, explain(result, tmp_path)
    assert bob.wait(20) == 0, bob.output()
    assert_two_proxy_dialog(bob, a.port, b.port)
    # The proxy recursed on the 302 instead of passing it to the caller.
    assert "302" not in (tmp_path / "uac.msg").read_text()
    assert "302 Moved Temporarily" in redirect.output()


def test_redirect_server_unknown_domain_is_604(start_server, tmp_path):
    redirect = start_server("sipredirect", "--domain", "a.lab", "--location", "memory:")
    a = start_server("sipproxy", "--domain", "a.lab", "--location", "memory:",
                     "--redirect-server", f"127.0.0.1:{redirect.port}")
    result = call(a.port, tmp_path, "uac_fail.xml", domain="nowhere.lab", status=604,
                  maxfwd=70)
    assert result.returncode == 0, explain(result, tmp_path)


def dns_query_answered(port: int) -> bool:
    from twisted.names import dns

    query = dns.Message(id=7, recDes=0)
    query.queries = [dns.Query(b"_sip._udp.b.lab", dns.SRV)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.3)
        s.sendto(query.toStr(), ("127.0.0.1", port))
        try:
            return bool(s.recv(4096))
        except TimeoutError:
            return False


@pytest.fixture
def dns_server(tmp_path):
    """A real `twistd -n dns` serving b.lab from a Python zone file; stopped by PID."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(sip_port: int) -> int:
        zone = tmp_path / "b.lab.zone.py"
        zone.write_text(
            "zone = [\n"
            "    SOA('b.lab', mname='ns.b.lab', rname='root.b.lab', serial=1,\n"
            "        refresh=3600, retry=600, expire=86400, minimum=60),\n"
            f"    SRV('_sip._udp.b.lab', 0, 0, {sip_port}, 'sip.b.lab'),\n"
            "    A('sip.b.lab', '127.0.0.1'),\n"
            "]\n"
        )
        port = free_port()
        log = open(tmp_path / "dns.log", "wb")
        proc = subprocess.Popen(
            [TWISTD, "-n", "--pidfile=", "dns", "--pyzone", str(zone), "-p", str(port),
             "-i", "127.0.0.1"],
            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
        )
        procs.append(proc)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError((tmp_path / "dns.log").read_text())
            if dns_query_answered(port):
                return port
        raise RuntimeError("twistd dns did not answer within 15 s")

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)


def test_cross_domain_by_dns_srv(start_server, callees, dns_server, tmp_path):
    b = proxy_b(start_server)
    dns_port = dns_server(b.port)
    a = start_server("sipproxy", "--domain", "a.lab", "--location", "memory:",
                     "--dns", f"127.0.0.1:{dns_port}")
    bob = callees("uas_answer.xml", b.port, domain="b.lab")
    result = call(a.port, tmp_path, domain="b.lab")
    assert result.returncode == 0, explain(result, tmp_path)
    assert bob.wait(20) == 0, bob.output()
    assert_two_proxy_dialog(bob, a.port, b.port)


def test_upstream_failover_to_second_pbx(start_server, callees, tmp_path: Path):
    dead = free_port()  # nothing listens here
    pbx = callees("uas_answer.xml", None)
    a = start_server("sipproxy", "--domain", "a.lab", "--location", "memory:",
                     "--upstream", f"sip:127.0.0.1:{dead}",
                     "--upstream", f"sip:127.0.0.1:{pbx.port}", "--failover-timeout", "1")
    result = call(a.port, tmp_path, user="5551234", domain="pstn.example")
    assert result.returncode == 0, explain(result, tmp_path)
    assert pbx.wait(20) == 0, pbx.output()
    assert "INVITE sip:5551234@pstn.example" in pbx.messages()
