"""Call load through the proxy: sipp caller -> `twistd sipproxy` -> sipp callee.

Prints, asserts nothing. A proxy (memory: location, --quiet, per-IP flood limit off
since all load comes from one loopback caller) is started on a free loopback port, one
sipp callee registers bob@a.lab from its own port and then answers every call
(INVITE/180/200/ACK/BYE/200, no pauses); a sipp caller places calls at
rising rates, each step bounded (at most STEP_SECONDS of calls, at most 10 s wall
time), the whole ramp bounded by TOTAL_SECONDS. For the highest rate with < 1 %
failed calls it prints the p50/p99 call set-up time (INVITE sent to 200 received,
sipp -trace_rtt, whole-ms resolution, retransmissions included), the rate actually
completed and the proxy's CPU use (utime+stime from /proc/PID/stat) and RSS.

    python bench/calls.py                                  # our proxy
    python bench/calls.py --target 10.0.0.5:5060 [--domain a.lab]   # another server
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SCENARIOS = ROOT / "tests" / "interop" / "scenarios"
TWISTD = str(Path(sys.executable).parent / "twistd")
RATES = (25, 50, 100, 200, 300, 400, 600, 800, 1000)
STEP_SECONDS = 4
STEP_LIMIT = 10  # seconds of wall time per step, whatever happens
TOTAL_SECONDS = 110
MAX_FAILURE_RATIO = 0.01
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Step:
    rate: int
    calls: int
    ok: int
    failed: int
    p50_ms: float | None
    p99_ms: float | None
    cpu_percent: float | None
    seconds: float

    @property
    def failure_ratio(self) -> float:
        return 1.0 if self.calls == 0 else (self.calls - self.ok) / self.calls

    @property
    def completed_rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_ticks(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])  # utime + stime


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)


def start_proxy(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    from tests.interop.conftest import sip_ping

    port = free_port()
    log = open(workdir / "proxy.log", "wb")
    proc = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", "sipproxy", "--domain", "a.lab", "--location",
         "memory:", "--quiet", "--port", str(port),
         # The per-IP flood limit (pike) would cap one loopback caller well below what
         # the proxy can do; the overload guards (--max-lag, --max-transactions) stay.
         "--pike-rate", "0"],
        stdout=log, stderr=subprocess.STDOUT, cwd=workdir,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("sipproxy exited:\n" + (workdir / "proxy.log").read_text())
        if sip_ping(port, timeout=0.3) is not None:
            return proc, port
    stop(proc)
    raise SystemExit("sipproxy did not answer within 15 s")


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def run_step(
    sipp: str, host: str, port: int, domain: str, rate: int, workdir: Path, proxy_pid: int | None
) -> Step:
    calls = rate * STEP_SECONDS
    step_dir = workdir / f"rate-{rate}"
    step_dir.mkdir()
    before = cpu_ticks(proxy_pid) if proxy_pid else None
    started = time.monotonic()
    command = [
        sipp, f"{host}:{port}", "-sf", str(SCENARIOS / "bench_uac_call.xml"),
        "-i", "127.0.0.1", "-p", str(free_port()), "-t", "u1", "-s", "bob",
        "-key", "domain", domain, "-key", "from", "alice", "-key", "fromdomain", domain,
        "-r", str(rate), "-m", str(calls), "-l", str(max(rate * 2, 100)),
        "-timeout", f"{STEP_LIMIT - 1}s", "-recv_timeout", "3000", "-nostdin",
        "-trace_rtt", "-rtt_freq", "1", "-trace_stat", "-fd", "1",
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, cwd=step_dir,
                              timeout=STEP_LIMIT + 5)
        out = done.stdout
        if done.returncode not in (0, 1) and "Successful call" not in out:
            print(f"  sipp at {rate}/s: {(done.stderr or done.stdout).strip()[-300:]}")
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
    seconds = time.monotonic() - started
    after = cpu_ticks(proxy_pid) if proxy_pid else None
    ok = _counter(out, "Successful call")
    failed = _counter(out, "Failed call")
    times = _rtt_values(step_dir)
    cpu = None
    if before is not None and after is not None and seconds > 0:
        cpu = 100.0 * (after - before) / CLK_TCK / seconds
    return Step(rate, calls, ok, failed, percentile(times, 50), percentile(times, 99), cpu,
                seconds)


def _counter(screen: str, name: str) -> int:
    # The cumulative column of sipp's final statistics screen.
    matches = re.findall(rf"{name}\s*\|\s*\d+\s*\|\s*(\d+)", screen)
    return int(matches[-1]) if matches else 0


def _rtt_values(step_dir: Path) -> list[float]:
    values: list[float] = []
    for path in step_dir.glob("*_rtt.csv"):
        with open(path, newline="") as f:
            for row in csv.reader(f, delimiter=";"):
                try:
                    values.append(float(row[1]))
                except (IndexError, ValueError):
                    continue  # the header line
    return values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", help="HOST:PORT of another server to measure")
    parser.add_argument("--domain", default="a.lab")
    args = parser.parse_args()
    sipp = shutil.which("sipp")
    if sipp is None:
        print("calls.py: sipp is not installed (Debian package sip-tester); skipped")
        return 0
    from tests.interop.sip_helpers import register

    workdir = Path(tempfile.mkdtemp(prefix="bench-calls-"))
    proxy = None
    callee = None
    try:
        if args.target:
            host, _, port_text = args.target.rpartition(":")
            port = int(port_text)
            proxy_pid = None
            label = f"server at {args.target}"
        else:
            proxy, port = start_proxy(workdir)
            host, proxy_pid = "127.0.0.1", proxy.pid
            label = "sipproxy (memory: location, --quiet)"
        uas_port = free_port()
        if register(port, "bob", args.domain, uas_port, expires=600) != 200:
            print(f"calls.py: could not register bob@{args.domain} at {host}:{port}")
            return 1
        callee = subprocess.Popen(
            [sipp, "-sf", str(SCENARIOS / "bench_uas_answer.xml"), "-i", "127.0.0.1",
             "-p", str(uas_port), "-t", "u1", "-nostdin"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir,
        )
        time.sleep(0.3)
        print(f"calls through {label}: sipp caller -> proxy -> sipp callee, "
              f"{STEP_SECONDS} s of calls per step")
        print(f"{'rate/s':>7} {'calls':>6} {'ok':>6} {'failed':>6} {'done/s':>7} "
              f"{'p50 ms':>7} {'p99 ms':>7} {'cpu %':>6}")
        best: Step | None = None
        ramp_started = time.monotonic()
        for rate in RATES:
            if time.monotonic() - ramp_started + STEP_LIMIT + 5 > TOTAL_SECONDS:
                break
            step = run_step(sipp, host, port, args.domain, rate, workdir, proxy_pid)
            print(f"{step.rate:>7} {step.calls:>6} {step.ok:>6} {step.calls - step.ok:>6} "
                  f"{step.completed_rate:>7.1f} {_fmt(step.p50_ms):>7} {_fmt(step.p99_ms):>7} "
                  f"{_fmt(step.cpu_percent):>6}", flush=True)
            if step.failure_ratio >= MAX_FAILURE_RATIO:
                break
            best = step
            time.sleep(0.5)  # let the last BYEs finish before the next step
        rss = rss_mib(proxy_pid) if proxy_pid else None
        if best is None:
            print("no rate completed with < 1 % failed calls")
        else:
            print(
                f"highest rate with < 1 % failed calls: {best.rate}/s "
                f"(completed {best.completed_rate:.1f}/s); set-up time p50 "
                f"{_fmt(best.p50_ms)} ms, p99 {_fmt(best.p99_ms)} ms; proxy CPU "
                f"{_fmt(best.cpu_percent)} %, RSS {_fmt(rss)} MiB"
            )
        return 0
    finally:
        if callee is not None:
            stop(callee)
        if proxy is not None:
            stop(proxy)
        shutil.rmtree(workdir, ignore_errors=True)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


if __name__ == "__main__":
    sys.exit(main())
