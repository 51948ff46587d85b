"""Calls through a real `twistd -n sipproxy` between real sipp caller and callee(s).

Same domain (a.lab): a normal call, busy, decline, no answer (Timer C), gone, unknown,
CANCEL, and forking to two registered contacts.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.interop.conftest import free_port, run_sipp
from tests.interop.sip_helpers import Callees, register, template

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def proxy(start_server):
    return start_server(
        "sipproxy", "--domain", "a.lab", "--location", "memory:", "--timer-c", "2"
    )


@pytest.fixture
def callees(tmp_path):
    started = Callees(tmp_path)
    yield started
    started.stop_all()


def call(port: int, tmp_path: Path, scenario: str = "uac_call.xml", user: str = "bob",
         domain: str = "a.lab", from_domain: str = "a.lab", **subs: object):
    """Run the sipp caller (alice@FROM_DOMAIN -> user@DOMAIN) via 127.0.0.1:port."""
    sf = template(scenario, tmp_path, **subs) if subs else scenario
    return run_sipp(
        sf, f"127.0.0.1:{port}", "-s", user, "-key", "domain", domain,
        "-key", "from", "alice", "-key", "fromdomain", from_domain,
        "-message_file", str(tmp_path / "uac.msg"),
        cwd=tmp_path, timeout=30,
    )


def explain(result, tmp_path: Path) -> str:
    path = tmp_path / "uac.msg"
    messages = path.read_text(errors="replace") if path.exists() else ""
    return result.stdout[-2500:] + messages[-3000:]


def top_via_of(messages: str, method: str) -> str:
    block = messages[messages.index(f"{method} sip:"):]
    return re.search(r"^Via: (.*)$", block, re.M).group(1)


def test_same_domain_call_is_record_routed(proxy, callees, tmp_path):
    bob = callees("uas_answer.xml", proxy.port)
    result = call(proxy.port, tmp_path)
    assert result.returncode == 0, explain(result, tmp_path)
    assert bob.wait(20) == 0, bob.output()
    # The callee saw the proxy's Record-Route, and the ACK and BYE arrived with the
    # proxy's Via on top: in-dialog requests went through the proxy.
    seen = bob.messages()
    assert f"Record-Route: <sip:127.0.0.1:{proxy.port};lr>" in seen
    for method in ("ACK", "BYE"):
        assert f"127.0.0.1:{proxy.port};branch=z9hG4bK" in top_via_of(seen, method)
    assert proxy.alive()


@pytest.mark.parametrize(("status", "reason"), [(486, "Busy Here"), (603, "Decline")])
def test_callee_rejects(proxy, callees, tmp_path, status, reason):
    bob = callees("uas_reject.xml", proxy.port, status=status, reason=reason, delay=100)
    result = call(proxy.port, tmp_path, "uac_fail.xml", status=status, maxfwd=70)
    assert result.returncode == 0, explain(result, tmp_path)
    # The proxy's client transaction ACKed the callee's final response (hop by hop).
    assert bob.wait(20) == 0, bob.output()


def test_unknown_user_is_404(proxy, tmp_path):
    result = call(proxy.port, tmp_path, "uac_fail.xml", user="nobody", status=404, maxfwd=70)
    assert result.returncode == 0, explain(result, tmp_path)


def test_no_answer_times_out_with_timer_c(proxy, callees, tmp_path):
    bob = callees("uas_ring_cancel.xml", proxy.port)
    result = call(proxy.port, tmp_path, "uac_fail.xml", status=408, maxfwd=70)
    assert result.returncode == 0, explain(result, tmp_path)
    assert bob.wait(20) == 0, bob.output()  # it got our CANCEL when Timer C fired


def test_contact_gone_is_480(proxy, tmp_path):
    port = free_port()
    assert register(proxy.port, "bob", "a.lab", port, call_id="gone", cseq=1) == 200
    assert register(proxy.port, "bob", "a.lab", port, expires=0, call_id="gone", cseq=2) == 200
    result = call(proxy.port, tmp_path, "uac_fail.xml", status=480, maxfwd=70)
    assert result.returncode == 0, explain(result, tmp_path)


def test_cancel_before_answer(proxy, callees, tmp_path):
    bob = callees("uas_ring_cancel.xml", proxy.port)
    result = call(proxy.port, tmp_path, "uac_cancel.xml")
    assert result.returncode == 0, explain(result, tmp_path)
    assert bob.wait(20) == 0, bob.output()


def test_forking_first_200_wins(proxy, callees, tmp_path):
    answering = callees("uas_answer.xml", proxy.port)
    ringing = callees("uas_ring_cancel.xml", proxy.port)
    result = call(proxy.port, tmp_path)
    assert result.returncode == 0, explain(result, tmp_path)
    assert answering.wait(20) == 0, answering.output()
    assert ringing.wait(20) == 0, ringing.output()  # both rang; the loser got CANCEL
    assert "CANCEL sip:" in ringing.messages()


def test_forking_6xx_ends_the_fork(proxy, callees, tmp_path):
    declining = callees("uas_reject.xml", proxy.port, status=603, reason="Decline", delay=500)
    ringing = callees("uas_ring_cancel.xml", proxy.port)
    result = call(proxy.port, tmp_path, "uac_fail.xml", status=603, maxfwd=70)
    assert result.returncode == 0, explain(result, tmp_path)
    assert declining.wait(20) == 0, declining.output()
    assert ringing.wait(20) == 0, ringing.output()
