"""A real `sipclient` process against real sipp UAS/UAC scenarios, directly (no proxy).

Either sipp is the callee (it listens on a port; the client gets
``--no-register --proxy 127.0.0.1:<that port>`` and calls ``sip:service@127.0.0.1:<port>``)
or sipp is the caller (``sipp 127.0.0.1:<client port> -s <user>``). Every test asserts
both sides: sipp's exit code (0: its scenario, with its ereg checks, passed) and the
client's console lines, and where the scenario cannot see it, the wire details from
sipp's message trace (branches, Vias, CSeqs, timing) or the client's --verbose log.

Scenarios: tests/interop/scenarios/sc_*.xml (each says what it plays). Every wait is
bounded; every process is ended by its PID.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from tests.interop.conftest import SCENARIOS, free_port, sipp_binary
from tests.interop.sip_helpers import template
from tests.interop.sipclient_harness import SipClient

pytestmark = pytest.mark.timeout(60)

# sipp's own safety net: a scenario stuck on a message fails well before pytest's timeout.
SIPP_TIMEOUT = 30


@dataclass
class Message:
    """One SIP message of sipp's -trace_msg log, as sipp sent or received it."""

    at: float  # seconds since the epoch, sipp's clock
    sent: bool  # True: sipp sent it (so the client received it)
    text: str

    @property
    def first_line(self) -> str:
        return self.text.split("\n", 1)[0].strip()

    def is_request(self, method: str) -> bool:
        return self.first_line.startswith(f"{method} ")

    def is_response(self, status: int, method: str) -> bool:
        return self.first_line.startswith(f"SIP/2.0 {status} ") and \
            self.cseq()[1] == method

    def header(self, name: str) -> str:
        match = re.search(rf"^{re.escape(name)}:[ \t]*(.*?)\s*$", self.text, re.M | re.I)
        assert match is not None, f"no {name} in {self.text!r}"
        return match.group(1)

    def branch(self) -> str:
        match = re.search(r"branch=([^;,\s]+)", self.header("Via"))
        assert match is not None, self.text
        return match.group(1)

    def cseq(self) -> tuple[int, str]:
        number, method = self.header("CSeq").split()
        return int(number), method

    def to_tag(self) -> str | None:
        match = re.search(r";\s*tag=([^;\s]+)", self.header("To"))
        return match.group(1) if match else None


class Sipp:
    """A sipp process in the background, its message trace and error log in `cwd`."""

    def __init__(self, cwd: Path, scenario: str, *args: str, name: str) -> None:
        sf = scenario if scenario.startswith("/") else str(SCENARIOS / scenario)
        self.cwd = cwd
        self.msg_path = cwd / f"{name}.msg"
        self.err_path = cwd / f"{name}.err"
        self.out_path = cwd / f"{name}.out"
        self._out = open(self.out_path, "wb")
        self.proc = subprocess.Popen(
            [sipp_binary(), *args, "-sf", sf, "-i", "127.0.0.1", "-t", "u1", "-m", "1",
             "-timeout", f"{SIPP_TIMEOUT}s", "-timeout_error", "-nostdin",
             "-trace_msg", "-message_file", str(self.msg_path),
             "-trace_err", "-error_file", str(self.err_path)],
            stdout=self._out, stderr=subprocess.STDOUT, cwd=cwd,
        )

    def wait(self, timeout: float = 15.0) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"sipp did not finish within {timeout} s\n"
                                 f"{self.diagnostics()}") from None
        return code

    def messages(self) -> list[Message]:
        if not self.msg_path.exists():
            return []
        found = []
        blocks = re.split(r"^-{20,} (\S+ \S+)\n", self.msg_path.read_text(errors="replace"),
                          flags=re.M)
        # re.split with one group: [prefix, stamp, body, stamp, body, ...]
        for stamp, body in zip(blocks[1::2], blocks[2::2], strict=True):
            head, _, text = body.partition("\n\n")
            if "message sent" not in head and "message received" not in head:
                continue
            found.append(Message(
                at=datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp(),
                sent="message sent" in head, text=text.replace("\r\n", "\n").strip("\n"),
            ))
        return found

    def received(self, pred: Callable[[Message], bool]) -> list[Message]:
        return [m for m in self.messages() if not m.sent and pred(m)]

    def sent(self, pred: Callable[[Message], bool]) -> list[Message]:
        return [m for m in self.messages() if m.sent and pred(m)]

    def diagnostics(self) -> str:
        def tail(path: Path, n: int) -> str:
            return path.read_text(errors="replace")[-n:] if path.exists() else ""

        self._out.flush()
        return (f"sipp output: {tail(self.out_path, 1500)}\nsipp errors: "
                f"{tail(self.err_path, 3000)}\nsipp messages: {tail(self.msg_path, 4000)}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._out.close()


def _udp_bound(port: int) -> bool:
    """Whether some socket holds UDP port `port` (read from /proc, so that probing never
    takes the port away from the sipp that is about to bind it)."""
    with open("/proc/net/udp") as table:
        next(table)  # header
        return any(int(line.split()[1].rsplit(":", 1)[1], 16) == port for line in table)


def _wait_bound(port: int, proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Until sipp holds UDP 127.0.0.1:port, so the client's INVITE does not meet a
    closed port (an ICMP port unreachable may fail the call as a transport error)."""
    if not os.path.exists("/proc/net/udp"):
        time.sleep(0.5)  # not Linux: give it the time it normally needs, and more
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None or _udp_bound(port):
            return  # (exited early: wait() and its diagnostics tell why)
        time.sleep(0.05)
    raise AssertionError(f"sipp did not bind UDP port {port} within {timeout} s")


Uas = tuple[Sipp, SipClient, str]  # sipp, the client, the URI to call
Uac = tuple[Sipp, SipClient]


@pytest.fixture
def started() -> Iterator[list[Sipp | SipClient]]:
    """Everything a test starts, stopped at the end whatever happened."""
    procs: list[Sipp | SipClient] = []
    yield procs
    for proc in procs:
        proc.stop()


@pytest.fixture
def uas(tmp_path: Path, started: list[Sipp | SipClient]) -> Callable[..., Uas]:
    """sipp as the callee and a sipclient whose 'proxy' is that sipp; with the URI to
    call (an IP address: the client sends the INVITE straight there)."""

    def start(scenario: str, *client_args: str) -> Uas:
        port = free_port()
        sipp = Sipp(tmp_path, scenario, "-p", str(port), name=f"uas-{port}")
        started.append(sipp)
        _wait_bound(port, sipp.proc)
        client = SipClient(tmp_path, "alice", "--no-register", "--proxy",
                           f"127.0.0.1:{port}", *client_args)
        started.append(client)
        return sipp, client, f"sip:service@127.0.0.1:{port}"

    return start


@pytest.fixture
def uac(tmp_path: Path, started: list[Sipp | SipClient]) -> Callable[..., Uac]:
    """A sipclient (bob) already listening, and sipp calling it."""

    def start(scenario: str, *client_args: str) -> Uac:
        client = SipClient(tmp_path, "bob", "--no-register", *client_args)
        started.append(client)
        sipp = Sipp(tmp_path, scenario, f"127.0.0.1:{client.port}", "-s", "bob",
                    "-p", str(free_port()), name=f"uac-{client.port}")
        started.append(sipp)
        return sipp, client

    return start


def _passed(sipp: Sipp, client: SipClient) -> None:
    code = sipp.wait()
    assert code == 0, (f"sipp exit {code}\n{sipp.diagnostics()}\n"
                       f"client lines: {client.lines}\nclient log: {client.stderr_tail()}")


def _only(messages: list[Message], what: str) -> Message:
    assert messages, f"no {what} in the trace"
    return messages[0]


def _client_got_ack(client: SipClient) -> bool:
    """The client's --verbose log shows an ACK arriving (sipp's ACK for an error answer
    is absorbed by the server transaction: no console line says so)."""
    return re.search(r"<- UDP \S+ ACK sip:", client.stderr_tail(1_000_000)) is not None


def _assert_error_ack(sipp: Sipp, status: int) -> None:
    """§17.1.1.3: the ACK for a non-2xx repeats the INVITE's branch and CSeq number and
    carries the To tag of the response it acknowledges."""
    invite = _only(sipp.received(lambda m: m.is_request("INVITE")), "INVITE")
    final = _only(sipp.sent(lambda m: m.is_response(status, "INVITE")), f"{status}")
    ack = _only(sipp.received(lambda m: m.is_request("ACK")), "ACK")
    assert ack.branch() == invite.branch()
    assert ack.cseq() == (invite.cseq()[0], "ACK")
    assert ack.to_tag() is not None and ack.to_tag() == final.to_tag()


# ------------------------------------------------------------------ sipclient calls sipp


def test_callee_busy_486(uas: Callable[..., Uas]) -> None:
    sipp, alice, target = uas("sc_uas_busy.xml")
    alice.send(f"call {target}")
    alice.expect(r"call 1 outgoing sip:service@127\.0\.0\.1:\d+$")
    alice.expect(r"call 1 ended 486 Busy Here$")
    _passed(sipp, alice)
    _assert_error_ack(sipp, 486)
    assert alice.quit() == 0


def test_callee_rings_then_declines_603(uas: Callable[..., Uas]) -> None:
    sipp, alice, target = uas("sc_uas_ring_decline.xml")
    alice.send(f"call {target}")
    alice.expect(r"call 1 ringing$")
    alice.expect(r"call 1 ended 603 Decline$")
    _passed(sipp, alice)
    _assert_error_ack(sipp, 603)
    assert alice.quit() == 0


def test_caller_cancels_while_callee_rings(
        uas: Callable[..., Uas]) -> None:
    sipp, alice, target = uas("sc_uas_ring_cancel.xml")
    alice.send(f"call {target}")
    alice.expect(r"call 1 ringing$")
    alice.send("hangup")
    # The documented outcome for our CANCEL: the peer's final answer to the INVITE.
    alice.expect(r"call 1 ended 487 Request Terminated$")
    _passed(sipp, alice)
    invite = _only(sipp.received(lambda m: m.is_request("INVITE")), "INVITE")
    cancel = _only(sipp.received(lambda m: m.is_request("CANCEL")), "CANCEL")
    # §9.1: the CANCEL matches the INVITE's server transaction.
    assert cancel.branch() == invite.branch()
    assert cancel.cseq() == (invite.cseq()[0], "CANCEL")
    assert cancel.header("Call-ID") == invite.header("Call-ID")
    assert cancel.first_line.split()[1] == invite.first_line.split()[1]
    # The scenario answered the INVITE on the INVITE's Via, and the client ACKed that.
    r487 = _only(sipp.sent(lambda m: m.is_response(487, "INVITE")), "487")
    assert r487.header("Via") == invite.header("Via")
    _assert_error_ack(sipp, 487)
    assert alice.quit() == 0


# ------------------------------------------------------------------ sipp calls sipclient


def test_caller_cancels_before_answer(uac: Callable[..., Uac]) -> None:
    sipp, bob = uac("sc_uac_cancel.xml")
    bob.expect(r"call 1 incoming sip:sipp@127\.0\.0\.1:\d+$")
    bob.expect(r"call 1 ended cancelled$")
    _passed(sipp, bob)
    ringing = _only(sipp.received(lambda m: m.is_response(180, "INVITE")), "180")
    r487 = _only(sipp.received(lambda m: m.is_response(487, "INVITE")), "487")
    # One dialog-to-be: the 487 carries the tag the 180 gave (§9.2 answers that INVITE).
    assert r487.to_tag() is not None and r487.to_tag() == ringing.to_tag()
    assert _client_got_ack(bob), bob.stderr_tail()
    bob.send("status")
    bob.expect(r"status call 1 ended incoming ")
    assert bob.quit() == 0


@pytest.mark.parametrize("how", ["busy", "reject"])
def test_callee_refuses(uac: Callable[..., Uac], tmp_path: Path,
                        how: str) -> None:
    status, ring_optional, args = {
        "busy": (486, "true", ("--busy",)),  # refused at once: no 180
        "reject": (603, "false", ()),  # rings until the user says reject
    }[how]
    sf = template("sc_uac_rejected.xml", tmp_path, status=status, ring_optional=ring_optional)
    sipp, bob = uac(sf, *args)
    bob.expect(r"call 1 incoming sip:sipp@127\.0\.0\.1:\d+$")
    if how == "reject":
        bob.send("reject")
    reason = {486: "Busy Here", 603: "Decline"}[status]
    bob.expect(rf"call 1 ended {status} {reason}$")
    _passed(sipp, bob)
    final = _only(sipp.received(lambda m: m.is_response(status, "INVITE")), str(status))
    assert final.to_tag() is not None
    assert _client_got_ack(bob), bob.stderr_tail()
    assert bob.quit() == 0


def test_remote_hold_and_resume(uac: Callable[..., Uac]) -> None:
    sipp, bob = uac("sc_uac_remote_hold.xml", "--auto-answer")
    bob.expect(r"call 1 incoming sip:sipp@127\.0\.0\.1:\d+$")
    bob.expect(r"call 1 connected$")
    bob.expect(r"call 1 remote-held$")
    bob.expect(r"call 1 remote-resumed$")
    bob.expect(r"call 1 ended bye$")
    # The scenario's ereg checks (recvonly, then sendrecv answers) ran if it passed.
    _passed(sipp, bob)
    assert bob.quit() == 0


# ------------------------------------------------------------------ glare (§14.1, §14.2)


def test_glare_incoming_reinvite_while_ours_pending_gets_491(
        uas: Callable[..., Uas]) -> None:
    sipp, alice, target = uas("sc_uas_glare.xml")
    alice.send(f"call {target}")
    alice.expect(r"call 1 connected$")
    alice.send("hold")
    # sipp answers our hold only after our 491 to its own re-INVITE.
    alice.expect(r"call 1 held$")
    # Its retry (sendonly) is accepted: we both hold.
    alice.expect(r"call 1 remote-held$")
    alice.expect(r"call 1 ended bye$")
    _passed(sipp, alice)
    r491 = _only(sipp.received(lambda m: m.is_response(491, "INVITE")), "491")
    assert r491.cseq() == (1, "INVITE") and "glare1" in r491.branch()
    # The 491 went out while our own re-INVITE was still unanswered.
    hold_200 = _only(sipp.sent(lambda m: m.is_response(200, "INVITE") and
                               m.cseq()[0] > 1 and "a=recvonly" in m.text), "200 (hold)")
    assert r491.at <= hold_200.at
    alice.send("status")
    alice.expect(r"status call 1 ended outgoing ")
    assert alice.quit() == 0


def _glare_gap(sipp: Sipp) -> tuple[float, Message, Message]:
    """Seconds from sipp's 491 to the client's retried re-INVITE, and both re-INVITEs."""
    reinvites = sipp.received(lambda m: m.is_request("INVITE") and "a=sendonly" in m.text)
    assert len(reinvites) == 2, [m.first_line for m in reinvites]
    first, retry = reinvites
    r491 = _only(sipp.sent(lambda m: m.is_response(491, "INVITE")), "491")
    # A new request, not a retransmission: new branch, next CSeq (§14.1, §12.2.1.1).
    assert retry.branch() != first.branch()
    assert retry.cseq()[0] > first.cseq()[0]
    return retry.at - r491.at, first, retry


def test_glare_491_retry_as_call_id_owner(uas: Callable[..., Uas]) -> None:
    sipp, alice, target = uas("sc_uas_answer_491.xml")
    alice.send(f"call {target}")
    alice.expect(r"call 1 connected$")
    t0 = time.monotonic()
    alice.send("hold")
    # §14.1: we own the Call-ID (we called): the retry comes 2.1-4 s after the 491.
    alice.expect(r"call 1 held$", timeout=8)
    waited = time.monotonic() - t0
    assert "hold-failed" not in " ".join(alice.lines)
    alice.send("hangup")
    alice.expect(r"call 1 ended hangup$")
    _passed(sipp, alice)
    gap, _, _ = _glare_gap(sipp)
    assert 2.1 - 0.02 <= gap <= 4.0 + 0.5, gap
    assert waited >= 2.1, waited
    assert alice.quit() == 0


def test_glare_491_retry_as_callee(uac: Callable[..., Uac]) -> None:
    sipp, bob = uac("sc_uac_answer_491.xml", "--auto-answer")
    bob.expect(r"call 1 connected$")
    bob.send("hold")
    # §14.1: the Call-ID is sipp's (it called): the retry comes 0-2 s after the 491.
    bob.expect(r"call 1 held$", timeout=6)
    bob.expect(r"call 1 ended bye$")
    _passed(sipp, bob)
    gap, _, _ = _glare_gap(sipp)
    assert 0.0 <= gap <= 2.0 + 0.5, gap
    assert bob.quit() == 0
