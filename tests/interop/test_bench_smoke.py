"""The benchmark scripts still run (their quick form) and print a figure.

Never asserts a rate or a time (DESIGN.md: benchmarks measure, tests assert
behaviour): only that each script exits 0 and prints its RESULT line with a number.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.interop.conftest import free_port, sipp_binary

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(180)


def run_quick(script: str, *args: str) -> str:
    env = dict(os.environ, SIPCALLING_BENCH_QUICK="1")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], env=env,
                          capture_output=True, text=True, timeout=150, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_hotpath_quick() -> None:
    out = run_quick("hotpath.py")
    assert re.search(r"RESULT bench=hotpath register_us=[0-9.]+ call_msg_us=[0-9.]+ "
                     r"register_steady_us=[0-9.]+", out), out
    # The Timer J scenario ran long enough (1 simulated s) for its transactions to linger.
    assert re.search(r"with 2,000 transactions lingering", out), out


def test_memory_quick() -> None:
    out = run_quick("memory.py")
    assert re.search(r"RESULT bench=memory bindings=\d+ bytes_per_binding=\d+", out), out
    assert re.search(r"RESULT bench=memory calls=\d+ bytes_per_call=\d+", out), out


def test_replication_quick() -> None:
    out = run_quick("replication.py")
    assert re.search(r"RESULT bench=replication publish_us=[0-9.]+ ", out), out


def test_register_quick() -> None:
    sipp_binary()
    out = run_quick("register.py", "--hold", "1")
    assert re.search(r"RESULT bench=register config=\S+ rate=\d+ .*held=\d+ held_done=\d+",
                     out), out


def test_calls_quick() -> None:
    sipp_binary()
    out = run_quick("calls.py", "--hold", "1")
    assert re.search(r"RESULT bench=calls config=\S+ rate=\d+ .*held=\d+ held_done=\d+",
                     out), out


def test_calls_at_one_fixed_rate() -> None:
    # --rate: one step at that rate, no ramp (used to profile the server at a set load).
    sipp_binary()
    out = run_quick("calls.py", "--rate", "30")
    steps = re.findall(r"^ +(\d+) +\d+ +\d+ +\d+ .*(?:pass|FAIL)", out, re.M)
    assert steps == ["30"], out
    assert re.search(r"RESULT bench=calls config=\S+ rate=30 ", out), out


def register_request(port: int, local_port: int, n: int) -> bytes:
    return (
        "REGISTER sip:a.lab SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch=z9hG4bKtw{n}x{os.getpid()};rport\r\n"
        "From: <sip:alice@a.lab>;tag=tw\r\nTo: <sip:alice@a.lab>\r\n"
        f"Call-ID: tw{n}x{os.getpid()}@smoke\r\nCSeq: {n} REGISTER\r\nMax-Forwards: 70\r\n"
        f"Contact: <sip:alice@127.0.0.1:{local_port}>\r\nExpires: 300\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def test_twisted_registrar_answers_register() -> None:
    """bench/twisted_registrar.py (Twisted's RegisterProxy, compare.py's yardstick)
    answers a REGISTER for its domain with 200 over real loopback UDP."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "twisted_registrar.py"), "--port", str(port),
         "--interface", "127.0.0.1", "--domain", "a.lab"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        reply = b""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(0.3)
            local = s.getsockname()[1]
            deadline = time.monotonic() + 20
            n = 0
            while time.monotonic() < deadline and proc.poll() is None and n < 500:
                n += 1
                s.sendto(register_request(port, local, n), ("127.0.0.1", port))
                try:
                    reply = s.recv(65535)
                    break
                except ConnectionRefusedError:
                    time.sleep(0.05)  # not listening yet
                except TimeoutError:
                    continue
        assert reply.startswith(b"SIP/2.0 200"), (reply, proc.poll())
        assert f"CSeq: {n} REGISTER".encode() in reply, reply
        assert f"Contact: sip:alice@127.0.0.1:{local}".encode() in reply, reply
        os.kill(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0, out
        assert out.count(b"\n") == 1, out  # the start-up line only, nothing per request
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_stall_stops_the_processes_for_its_length_then_lets_them_go_on() -> None:
    from bench.sipplib import Stall

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        stall = Stall([child.pid], at=0.0, seconds=0.5)
        stall.start()
        deadline = time.monotonic() + 5
        while _state(child.pid) != "T" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _state(child.pid) == "T"  # stopped
        stall.finish()  # waits out the stall
        assert _state(child.pid) in ("S", "R")
    finally:
        child.kill()
        child.wait()


def test_a_stall_after_the_step_never_stops_anything() -> None:
    from bench.sipplib import Stall

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        stall = Stall([child.pid], at=60.0, seconds=1.0)
        stall.start()
        stall.finish()  # the step ended first: returns at once, nothing stopped
        assert not stall.thread.is_alive() and _state(child.pid) in ("S", "R")
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize("text", ["2", "a:1", "1:0", "-1:2", "1:61", "nan:1"])
def test_a_bad_stall_is_refused(text: str) -> None:
    import argparse

    from bench.sipplib import parse_stall

    assert parse_stall("10:2") == (10.0, 2.0)
    with pytest.raises(argparse.ArgumentTypeError, match="AT:SECONDS"):
        parse_stall(text)


def test_register_quick_with_a_stall() -> None:
    sipp_binary()
    out = run_quick("register.py", "--stall", "0.2:0.3")
    assert re.search(r"RESULT bench=register config=\S+ rate=\d+ ", out), out


def test_instructions_workload_answers_every_register() -> None:
    # The counted run itself, small and without valgrind: what valgrind would run. It
    # exits non-zero unless all 100 REGISTERs were answered 200.
    run_quick("instructions.py", "--child", "60", "--users", "40")


@pytest.mark.parametrize("args, message", [
    ([], "valgrind is not installed"),
    (["--few", "5", "--many", "5"], "need 0 <= --few < --many"),
    (["--users", "0"], "need --users >= 1"),
])
def test_instructions_refuses_in_one_line(tmp_path: Path, args: list[str],
                                           message: str) -> None:
    # An empty PATH: no valgrind, whatever this machine has.
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "instructions.py"), *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
        env=dict(os.environ, PATH=str(tmp_path)))
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"instructions: {message}"), lines


def _step(rate: int, passes: bool) -> Any:
    from bench.sipplib import Step

    calls = rate * 40
    return Step(rate, calls, calls if passes else calls // 2, 0 if passes else calls // 2,
                40.0, None, 40.0)


def test_hold_steps_down_past_three_tries_until_a_rate_lasts() -> None:
    from bench.sipplib import hold

    tried: list[int] = []

    def measure(rate: int, seconds: float) -> Any:
        tried.append(rate)
        return _step(rate, rate <= 18_000)

    held = hold(_step(26_000, True), 40.0, measure, drain=0.0)
    assert tried == [26_000, 23_400, 21_060, 18_954, 17_058]
    assert held is not None and held.rate == 17_058


def test_hold_gives_up_at_its_floor_and_its_tries() -> None:
    from bench.sipplib import hold

    tried: list[int] = []

    def measure(rate: int, seconds: float) -> Any:
        tried.append(rate)
        return _step(rate, False)

    assert hold(_step(10_000, True), 40.0, measure, drain=0.0, floor=0.8) is None
    assert tried == [10_000, 9_000, 8_100]  # 7,290 would be below 80% of 10,000
    tried.clear()
    assert hold(_step(10_000, True), 40.0, measure, drain=0.0) is None
    assert tried == [10_000, 9_000, 8_100, 7_290, 6_561]  # five tries


def test_free_udp_ports_take_turns_over_the_workers() -> None:
    from bench.sipplib import free_udp_ports
    from sipcore.twisted.reuseport import socket_index

    ports = free_udp_ports(6, 3)
    assert len(set(ports)) == 6
    assert [socket_index(p, 3) for p in ports] == [0, 1, 2, 0, 1, 2]


def test_call_load_callers_spread_over_the_workers() -> None:
    """calls.py's callers: one per worker in turn, each with its share of the rate."""
    import argparse

    from bench.calls import caller_commands
    from sipcore.twisted.reuseport import socket_index

    args = argparse.Namespace(sipp=4, workers=2, seconds=3.0, domain="a.lab")
    commands = caller_commands("127.0.0.1:5060", 4000, 12000, args)
    ports = [int(c[c.index("-p") + 1]) for c in commands]
    assert [socket_index(p, 2) for p in ports] == [0, 1, 0, 1]
    assert [(c[c.index("-r") + 1], c[c.index("-m") + 1]) for c in commands] == \
        [("1000", "3000")] * 4


def test_rss_of_a_process_tree_counts_a_shared_page_once() -> None:
    """64 MiB of shared memory touched by a parent and its child: about 64 in the tree's
    figure, not 128 (Kamailio keeps its transactions in such a segment)."""
    import mmap

    from bench.sipplib import rss_mib

    size = 64 * 1024 * 1024
    shared = mmap.mmap(-1, size, flags=mmap.MAP_SHARED)
    for offset in range(0, size, mmap.PAGESIZE):
        shared[offset] = 1
    from_child, to_parent = os.pipe()
    from_parent, to_child = os.pipe()
    child = os.fork()
    if child == 0:  # touch every page too, then wait to be measured
        total = sum(shared[offset] for offset in range(0, size, mmap.PAGESIZE))
        os.write(to_parent, b"%d" % total)
        os.read(from_parent, 1)
        os._exit(0)
    try:
        assert int(os.read(from_child, 64)) == size // mmap.PAGESIZE
        vm_rss = 0.0
        for pid in (os.getpid(), child):
            status = Path(f"/proc/{pid}/status").read_text()
            vm_rss += int(re.search(r"^VmRSS:\s+(\d+)", status, re.M).group(1)) / 1024
        tree = rss_mib([os.getpid(), child])
        assert vm_rss - tree >= 60, (vm_rss, tree)  # the segment once, not twice
        assert tree >= 64, tree
    finally:
        os.write(to_child, b"x")
        os.waitpid(child, 0)
        for fd in (from_child, to_parent, from_parent, to_child):
            os.close(fd)
        shared.close()
