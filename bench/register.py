"""REGISTER load with sipp against real `twistd` processes; prints, asserts nothing.

For each configuration (memory: and sqlite: stores, with and without digest auth)
a server is started on a free loopback port, sipp sends REGISTERs at rising rates
(each step bounded by a call count and a time limit) and for each configuration we
print the highest rate with < 1 % failed registrations, the p50/p99 response time
at that rate (sipp -trace_rtt; whole-ms resolution, retransmissions included), the
rate actually completed (successful calls / wall time of the step), and the
server's CPU use during that step (utime+stime from /proc/PID/stat) and RSS afterwards.

Without auth, 10,000 users are registered from a sipp -inf CSV. With auth, sipp
3.6 cannot take per-user credentials from the CSV ([authentication] does not expand
nested keywords) and only computes MD5 from the FIRST challenge, so those runs
register one user (-s/-au/-ap) against `twistd sipregistrar --auth-algorithms
MD5,SHA-256` (the same Registrar as sipproxy's, whose option list cannot reorder
the challenges yet): every call still costs a 401 round trip, a digest
verification and a store write.

    python bench/register.py                    # the four configurations
    python bench/register.py --target 10.0.0.5:5060 [--domain a.lab]   # another server
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
SCENARIOS = ROOT / "tests" / "interop" / "scenarios"
TWISTD = str(Path(sys.executable).parent / "twistd")
USERS = 10_000
RATES = (250, 500, 1000, 2000, 4000)
STEP_SECONDS = 3
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
    def passed(self) -> bool:
        return self.calls > 0 and self.failed <= MAX_FAILURE_RATIO * self.calls and (
            self.ok + self.failed >= self.calls
        )


def free_port() -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return int(port)
    raise RuntimeError("no free port")


def answers(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.3)
        s.sendto(
            (f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
             f"Via: SIP/2.0/UDP 127.0.0.1:9;rport;branch=z9hG4bKb{time.monotonic_ns()}\r\n"
             "From: <sip:bench@127.0.0.1>;tag=b\r\nTo: <sip:bench@127.0.0.1>\r\n"
             f"Call-ID: b{time.monotonic_ns()}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
             "Content-Length: 0\r\n\r\n").encode(),
            (host, port),
        )
        try:
            return bool(s.recv(65535))
        except OSError:
            return False


class Server:
    """A twistd process we started; stopped by its PID."""

    def __init__(self, args: list[str], workdir: Path) -> None:
        self.port = free_port()
        self.log = open(workdir / f"server-{self.port}.log", "wb")
        self.proc = subprocess.Popen(
            # --pike-rate 0: one loopback load generator must not be banned as a flood.
            [TWISTD, "-n", "--pidfile=", *args[:1], "--port", str(self.port), "--quiet",
             "--pike-rate", "0", *args[1:]],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=workdir,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and self.proc.poll() is None:
            if answers(self.port):
                return
        self.stop()
        raise RuntimeError(f"{args[0]} did not start")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def read_rtts(workdir: Path) -> list[float]:
    out: list[float] = []
    for path in workdir.glob("*_rtt.csv"):
        with open(path, newline="") as f:
            for row in csv.reader(f, delimiter=";"):
                try:
                    out.append(float(row[1]))
                except (IndexError, ValueError):
                    continue  # the header line
        path.unlink()
    return out


def run_step(target: str, scenario: str, extra: list[str], rate: int, workdir: Path,
             server: Server | None) -> Step:
    calls = rate * STEP_SECONDS
    command = [
        shutil.which("sipp") or "sipp", target, "-i", "127.0.0.1", "-t", "u1",
        "-sf", str(SCENARIOS / scenario), "-r", str(rate), "-m", str(calls),
        "-timeout", f"{STEP_SECONDS + 15}s", "-nostdin", "-trace_rtt", "-rtt_freq", "1",
        "-key", "domain", DOMAIN, *extra,
    ]
    cpu_before = server.cpu_seconds() if server else 0.0
    started = time.monotonic()
    try:
        result = subprocess.run(command, capture_output=True, text=True, cwd=workdir,
                                timeout=STEP_SECONDS + 30)
        screen = result.stdout
    except subprocess.TimeoutExpired as e:
        screen = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else ""
    elapsed = time.monotonic() - started
    cpu = (server.cpu_seconds() - cpu_before) / elapsed * 100 if server else None
    ok = _counter(screen, "Successful call")
    failed = _counter(screen, "Failed call")
    rtts = read_rtts(workdir)
    return Step(rate, calls, ok, failed, percentile(rtts, 0.5), percentile(rtts, 0.99), cpu,
                elapsed)


def _counter(screen: str, name: str) -> int:
    found = re.findall(rf"{name}\s*\|\s*\d+\s*\|\s*(\d+)", screen)
    return int(found[-1]) if found else 0


def ramp(label: str, target: str, scenario: str, extra: list[str], workdir: Path,
         server: Server | None) -> None:
    best: Step | None = None
    tried: list[str] = []
    for rate in RATES:
        step = run_step(target, scenario, extra, rate, workdir, server)
        tried.append(f"{rate}:{step.failed}/{step.calls}")
        if not step.passed:
            break
        best = step
    rss = f"{server.rss_mib():.0f} MiB" if server else "n/a"
    if best is None:
        print(f"{label:34} no rate passed (failed/calls per rate: {', '.join(tried)})")
        return
    cpu = f"{best.cpu_percent:.0f}%" if best.cpu_percent is not None else "n/a"
    p50 = f"{best.p50_ms:.1f}" if best.p50_ms is not None else "?"
    p99 = f"{best.p99_ms:.1f}" if best.p99_ms is not None else "?"
    achieved = best.ok / best.seconds
    print(f"{label:32} {best.rate:>5}/s (done {achieved:>5.0f}/s)  p50 {p50:>6} ms  "
          f"p99 {p99:>6} ms  CPU {cpu:>5}  RSS {rss:>8}  [{', '.join(tried)}]", flush=True)


DOMAIN = "a.lab"


def write_users(workdir: Path) -> tuple[Path, Path]:
    csv_path = workdir / "users.csv"
    users_path = workdir / "users.txt"
    with open(csv_path, "w") as f:
        f.write("SEQUENTIAL\n")
        for i in range(USERS):
            f.write(f"user{i:05d};pw{i:05d}\n")
    users_path.write_text("bench@a.lab plain:benchpw\n")
    return csv_path, users_path


def local_runs(workdir: Path) -> None:
    csv_path, users_path = write_users(workdir)
    plain = ["-inf", str(csv_path)]
    auth = ["-s", "bench", "-au", "bench", "-ap", "benchpw"]
    configs = [
        ("sipproxy memory:", ["sipproxy", "--location", "memory:"], "register_bench.xml",
         plain),
        ("sipproxy sqlite:", ["sipproxy", "--location", f"sqlite:{workdir / 'loc.sqlite'}"],
         "register_bench.xml", plain),
        ("sipregistrar memory: +auth(MD5)",
         ["sipregistrar", "--location", "memory:", "--users", str(users_path),
          "--auth-algorithms", "MD5,SHA-256"], "register_auth.xml", auth),
        ("sipregistrar sqlite: +auth(MD5)",
         ["sipregistrar", "--location", f"sqlite:{workdir / 'loc-auth.sqlite'}",
          "--users", str(users_path), "--auth-algorithms", "MD5,SHA-256"],
         "register_auth.xml", auth),
    ]
    for label, args, scenario, extra in configs:
        server = Server([args[0], "--domain", DOMAIN, *args[1:]], workdir)
        try:
            ramp(label, f"127.0.0.1:{server.port}", scenario, extra, workdir, server)
        finally:
            server.stop()


def main() -> None:
    global DOMAIN
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", help="HOST:PORT of another server to measure")
    parser.add_argument("--domain", default="a.lab")
    args = parser.parse_args()
    DOMAIN = args.domain
    if shutil.which("sipp") is None:
        print("sipp is not installed (Debian package sip-tester); nothing measured")
        return
    print(f"REGISTER load, sipp -r ramp {RATES} x {STEP_SECONDS} s, pass = <1% failed")
    with tempfile.TemporaryDirectory(prefix="bench-register-") as tmp:
        workdir = Path(tmp)
        if args.target:
            csv_path, _ = write_users(workdir)
            ramp(f"target {args.target}", args.target, "register_bench.xml",
                 ["-inf", str(csv_path)], workdir, None)
        else:
            local_runs(workdir)


if __name__ == "__main__":
    main()
