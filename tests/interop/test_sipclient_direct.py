"""`sipclient` processes talking to each other and to sipp directly (no proxy).

Each client's "proxy" is the peer it calls, or the peer is addressed by IP, so these
tests exercise the user agent alone. Through-proxy flows are in test_sipclient_proxy.py.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.interop.conftest import SCENARIOS, free_port, sipp_binary
from tests.interop.sipclient_harness import PYTHON, SipClient

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Callable[..., SipClient]]:
    started: list[SipClient] = []

    def start(user: str, *args: str, port: int | None = None) -> SipClient:
        c = SipClient(tmp_path, user, "--no-register", *args, port=port)
        started.append(c)
        return c

    yield start
    for c in started:
        c.stop()


def _to(peer: SipClient) -> str:
    return f"127.0.0.1:{peer.port}"


def test_call_connect_and_bye(client: Callable[..., SipClient]) -> None:
    bob = client("bob", "--auto-answer")
    alice = client("alice", "--proxy", _to(bob))
    alice.send("call bob")
    alice.expect(r"call 1 outgoing sip:bob@a\.lab$")
    alice.expect(r"call 1 ringing$")
    alice.expect(r"call 1 connected$")
    bob.expect(r"call 1 incoming sip:alice@a\.lab$")
    bob.expect(r"call 1 connected$")
    alice.send("hangup")
    alice.expect(r"call 1 ended hangup$")
    bob.expect(r"call 1 ended bye$")
    assert alice.quit() == 0
    assert bob.quit() == 0


def test_busy_486(client: Callable[..., SipClient]) -> None:
    bob = client("bob", "--busy")
    alice = client("alice", "--proxy", _to(bob))
    alice.send("call bob")
    alice.expect(r"call 1 ended 486 Busy Here$")
    bob.expect(r"call 1 ended 486 Busy Here$")


def test_reject_603(client: Callable[..., SipClient]) -> None:
    bob = client("bob")
    alice = client("alice", "--proxy", _to(bob))
    alice.send("call bob")
    bob.expect(r"call 1 incoming ")
    alice.expect(r"call 1 ringing$")
    bob.send("reject")
    alice.expect(r"call 1 ended 603 Decline$")
    bob.expect(r"call 1 ended 603 Decline$")


def test_unknown_user_404(client: Callable[..., SipClient]) -> None:
    bob = client("bob", "--auto-answer")
    alice = client("alice", "--proxy", _to(bob))
    alice.send("call dave")
    alice.expect(r"call 1 ended 404 Not Found$")


def test_cancel_487(client: Callable[..., SipClient]) -> None:
    bob = client("bob")
    alice = client("alice", "--proxy", _to(bob))
    alice.send("call bob")
    alice.expect(r"call 1 ringing$")
    alice.send("hangup 1")
    alice.expect(r"call 1 ended 487 Request Terminated$")
    bob.expect(r"call 1 ended cancelled$")


def test_ring_timeout_480(client: Callable[..., SipClient]) -> None:
    bob = client("bob", "--ring-timeout", "1")
    alice = client("alice", "--proxy", _to(bob))
    alice.send("call bob")
    alice.expect(r"call 1 ended 480 Temporarily Unavailable$", timeout=10)


def test_hold_resume_between_clients(client: Callable[..., SipClient]) -> None:
    bob = client("bob", "--auto-answer")
    alice = client("alice", "--proxy", _to(bob))
    alice.send("call bob")
    alice.expect(r"call 1 connected$")
    alice.send("hold")
    alice.expect(r"call 1 held$")
    bob.expect(r"call 1 remote-held$")
    bob.send("hold")
    bob.expect(r"call 1 held$")
    alice.expect(r"call 1 remote-held$")
    alice.send("status")
    alice.expect(r"status call 1 both-held outgoing sip:bob@a\.lab$")
    alice.send("resume")
    alice.expect(r"call 1 resumed$")
    bob.send("resume")
    bob.expect(r"call 1 resumed$")
    alice.expect(r"call 1 remote-resumed$")
    bob.send("hangup")
    alice.expect(r"call 1 ended bye$")


def test_experiment_3(client: Callable[..., SipClient]) -> None:
    """A-B talk, C calls B, B holds A, answers C, hangs up C, resumes A."""
    bob = client("bob")
    alice = client("alice", "--proxy", _to(bob))
    carol = client("carol", "--proxy", _to(bob))
    alice.send("call bob")
    bob.expect(r"call 1 incoming sip:alice@a\.lab$")
    bob.send("answer 1")
    alice.expect(r"call 1 connected$")
    carol.send("call bob")
    bob.expect(r"call 2 incoming sip:carol@a\.lab$")
    carol.expect(r"call 1 ringing$")
    bob.send("hold 1")
    bob.expect(r"call 1 held$")
    alice.expect(r"call 1 remote-held$")
    bob.send("answer 2")
    bob.expect(r"call 2 connected$")
    carol.expect(r"call 1 connected$")
    bob.send("hangup 2")
    bob.expect(r"call 2 ended hangup$")
    carol.expect(r"call 1 ended bye$")
    bob.send("resume 1")
    bob.expect(r"call 1 resumed$")
    alice.expect(r"call 1 remote-resumed$")
    alice.send("hangup")
    bob.expect(r"call 1 ended bye$")


def test_bad_commands_keep_the_client_alive(client: Callable[..., SipClient]) -> None:
    alice = client("alice")
    alice.send("frobnicate")
    alice.expect(r"error: unknown command 'frobnicate'$")
    alice.send("hangup 7")
    alice.expect(r"error: ")
    alice.send("call sip:")
    alice.expect(r"error: ")
    alice.send("hold")
    alice.expect(r"error: no call to hold$")
    alice.send("\x00\xff garbage")
    alice.expect(r"error: ")
    alice.send("status")
    alice.expect(r"status registration disabled$")
    assert alice.quit() == 0


def test_call_option_exit_status(tmp_path: Path) -> None:
    bob = SipClient(tmp_path, "bob", "--no-register", "--auto-answer")
    busy = SipClient(tmp_path, "carol", "--no-register", "--busy")
    try:
        ok = subprocess.run(
            [PYTHON, "-m", "client.cli", "--domain", "a.lab", "--user", "alice",
             "--no-register", "--proxy", f"127.0.0.1:{bob.port}", "--call", "bob",
             "--hangup-after", "0.5"],
            capture_output=True, text=True, timeout=30, cwd=REPO, stdin=subprocess.DEVNULL,
        )
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "call 1 connected" in ok.stdout and "call 1 ended hangup" in ok.stdout
        bob.expect(r"call 1 ended bye$")
        fail = subprocess.run(
            [PYTHON, "-m", "client.cli", "--domain", "a.lab", "--user", "alice",
             "--no-register", "--proxy", f"127.0.0.1:{busy.port}", "--call", "carol"],
            capture_output=True, text=True, timeout=30, cwd=REPO, stdin=subprocess.DEVNULL,
        )
        assert fail.returncode == 1
        assert "call 1 ended 486 Busy Here" in fail.stdout
    finally:
        bob.stop()
        busy.stop()


@pytest.mark.parametrize(
    "args",
    [
        ["--user", "alice"],  # no --domain
        ["--domain", "a.lab", "--user", "alice", "--proxy", "nonsense"],
        ["--domain", "a.lab", "--user", "alice", "--codec", "mp3"],
        ["--domain", "a.lab", "--user", "alice", "--play", "/nonexistent.wav"],
        ["--domain", "a.lab", "--user", "alice", "--record", "/nonexistent/dir/x.wav"],
        ["--domain", "a.lab", "--user", "alice", "--hangup-after", "-1"],
        ["--domain", "a.lab", "--user", "alice", "--port", "70000"],
    ],
)
def test_bad_options_exit_2_with_one_line(args: list[str]) -> None:
    result = subprocess.run(
        [PYTHON, "-m", "client.cli", *args], capture_output=True, text=True, timeout=30,
        cwd=REPO, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("sipclient: error:")


def test_play_file_that_is_not_wav(tmp_path: Path) -> None:
    bogus = tmp_path / "x.wav"
    bogus.write_bytes(b"not a wave file")
    result = subprocess.run(
        [PYTHON, "-m", "client.cli", "--domain", "a.lab", "--user", "a", "--play", str(bogus)],
        capture_output=True, text=True, timeout=30, cwd=REPO, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1


# ---------------------------------------------------------------------- against sipp


def _sipp_uas(tmp_path: Path, scenario: str, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sipp_binary(), "-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1", "-p", str(port),
         "-m", "1", "-timeout", "30s", "-timeout_error", "-nostdin", "-trace_msg",
         "-trace_err"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(5)


def test_hold_resume_against_sipp_uas(client: Callable[..., SipClient], tmp_path: Path) -> None:
    port = free_port()
    sipp = _sipp_uas(tmp_path, "uas_hold.xml", port)
    try:
        alice = client("alice", "--proxy", f"127.0.0.1:{port}")
        alice.send(f"call sip:service@127.0.0.1:{port}")
        alice.expect(r"call 1 connected$")
        alice.send("hold")
        alice.expect(r"call 1 held$")
        alice.send("resume")
        alice.expect(r"call 1 resumed$")
        alice.send("hangup")
        alice.expect(r"call 1 ended hangup$")
        assert sipp.wait(20) == 0, sipp.stderr.read() if sipp.stderr else ""
    finally:
        _stop(sipp)
    logs = list(tmp_path.glob("uas_hold_*_messages.log"))
    assert logs
    trace = logs[0].read_text(errors="replace")
    # The exact directions on the wire: hold offers sendonly, resume sendrecv.
    reinvites = [block for block in trace.split("INVITE sip:")[1:]]
    assert len(reinvites) >= 3
    assert "a=sendonly" in reinvites[1]
    assert "a=sendrecv" in reinvites[2]


def test_answer_sipp_uac(client: Callable[..., SipClient], tmp_path: Path) -> None:
    bob = client("bob", "--auto-answer")
    result = subprocess.run(
        [sipp_binary(), f"127.0.0.1:{bob.port}", "-sn", "uac", "-s", "bob", "-i", "127.0.0.1",
         "-p", str(free_port()), "-m", "1", "-timeout", "20s", "-timeout_error", "-nostdin",
         "-trace_err"],
        capture_output=True, text=True, timeout=40, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    bob.expect(r"call 1 incoming ")
    bob.expect(r"call 1 connected$")
    bob.expect(r"call 1 ended bye$")


def test_options_answered_by_sipclient(client: Callable[..., SipClient]) -> None:
    from tests.interop.conftest import sip_ping

    bob = client("bob")
    answer = sip_ping(bob.port, timeout=3)
    assert answer is not None and answer.startswith(b"SIP/2.0 200")


def test_module_entry_point_help() -> None:
    result = subprocess.run(
        [PYTHON, "-m", "client.cli", "--help"], capture_output=True, text=True, timeout=30,
        cwd=REPO, env={**os.environ},
    )
    assert result.returncode == 0 and "--auto-answer" in result.stdout


def test_hostile_datagrams_do_not_kill_the_client(client: Callable[..., SipClient]) -> None:
    """RFC 4475 torture messages and plain garbage: answered or dropped, never fatal."""
    import socket

    from tests.interop.conftest import sip_ping

    bob = client("bob", "--auto-answer")
    vectors = sorted((REPO / "tests" / "vectors" / "rfc4475").glob("*.dat"))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for path in vectors:
            s.sendto(path.read_bytes()[:65000], ("127.0.0.1", bob.port))
        s.sendto(b"\x00\xffnot sip at all\r\n\r\n", ("127.0.0.1", bob.port))
        s.sendto(b"SIP/2.0 200 OK\r\n\r\n", ("127.0.0.1", bob.port))
    answer = sip_ping(bob.port, timeout=5)
    assert answer is not None and answer.startswith(b"SIP/2.0 200")
    assert bob.proc.poll() is None
    log = bob.stderr_tail(1_000_000)
    # No bug surfaced in the role ("handler failed": the transport caught an exception;
    # "failed" from the UA's own guard) - warnings about unreachable Vias are fine.
    assert "handler failed" not in log and "handling " not in log


def test_dtmf_both_ways(client: Callable[..., SipClient]) -> None:
    """`dtmf` sends RFC 4733 telephone-events; the peer prints each digit once."""
    bob = client("bob", "--auto-answer")
    alice = client("alice", "--proxy", _to(bob))
    alice.send("call bob")
    alice.expect(r"call 1 connected$")
    bob.expect(r"call 1 connected$")
    alice.send("dtmf 12#")
    alice.expect(r"call 1 dtmf-sent 12#$")
    for digit in ("1", "2", "#"):
        bob.expect(rf"call 1 dtmf {re.escape(digit)}$")
    bob.send("dtmf 9")
    alice.expect(r"call 1 dtmf 9$")
    alice.send("dtmf x")
    alice.expect(r"error: .*not a DTMF digit")
    alice.send("hangup")
    bob.expect(r"call 1 ended bye$")
    assert alice.quit() == 0
    assert bob.quit() == 0
