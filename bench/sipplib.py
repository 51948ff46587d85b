"""What bench/register.py and bench/calls.py share: servers, sipp runs, ramps, probes.

Measuring a Python server with sipp on the same small machine goes wrong in ways
that look like a slow server; each of these is handled here:

- sipp's own limits: `-l` (concurrent calls, default 3 x rate x timeout) and socket
  buffers. We pass a large `-l`, `-max_socket`, and `-buff_size` (capped by the
  kernel's net.core.rmem_max, printed once), and can split the load over several
  sipp processes (`--sipp N`) when one sipp process is the bottleneck.
- A step too short to reach steady state, or one sipp fell behind on (sipp at 100%
  CPU cannot keep `-r`): a step only passes when < 1% failed AND at least 95% of the
  intended calls completed AND they completed at >= 90% of the offered rate, so "sipp
  could not generate it" is never reported as a rate the server sustained.
- Coarse ramps: the rate doubles until a step fails, then bisects between the last
  pass and the first failure, so the figure is the highest sustained rate within
  ~10%, not the last power of two.
- sipp's response times are whole milliseconds (its clock), so a separate probe
  sends one SIP request every 20 ms during each step and times it with
  `time.perf_counter`: sub-millisecond p50/p99 of the server under that load.
- CPU% and RSS are the server's (and, with --workers, its children's) from /proc; the
  RSS of several processes counts a page they share once (see `rss_mib`).

Every loop here is bounded in count and time; only processes started here are
stopped, by PID. Loopback only.
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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "tests" / "interop" / "scenarios"
TWISTD = str(Path(sys.executable).parent / "twistd")
CLK_TCK = os.sysconf("SC_CLK_TCK")
MAX_FAILURE_RATIO = 0.01
MIN_COMPLETED_RATIO = 0.95
# A step is only "sustained" if what completed per second (start-up and the wait for
# the last answers included) is within 10% of the offered rate: with a looser rule a
# server answering 10,600/s passed a 14,000/s step.
MIN_DONE_RATE_RATIO = 0.90
SIPP_BUFFER = 4 * 1024 * 1024


def quick_mode(argv: list[str] | None = None) -> bool:
    """--quick or SIPCALLING_BENCH_QUICK=1: a few seconds per scenario (smoke test)."""
    argv = sys.argv if argv is None else argv
    return "--quick" in argv or os.environ.get("SIPCALLING_BENCH_QUICK") == "1"


def result_line(**fields: object) -> None:
    """One machine-readable line for bench/run_all.py's summary table."""
    print("RESULT " + " ".join(f"{k}={v}" for k, v in fields.items()), flush=True)


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (the servers listen on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            if port_is_free(port, tcp=False):
                return port
    raise RuntimeError("no free port")


def port_is_free(port: int, tcp: bool = True) -> bool:
    """Whether `port` on 127.0.0.1 can be bound for UDP (and TCP) right now."""
    kinds = (socket.SOCK_DGRAM, socket.SOCK_STREAM) if tcp else (socket.SOCK_DGRAM,)
    for kind in kinds:
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_udp_ports(count: int, workers: int = 1) -> list[int]:
    """`count` free UDP ports on 127.0.0.1 that `sipproxy --workers N` spreads evenly:
    each datagram goes to the worker socket `socket_index(source port, N)`
    (sipcore.twisted.reuseport), so sipp processes on these ports load each worker
    alike instead of as the random ports happen to fall."""
    from sipcore.twisted.reuseport import socket_index

    ports: list[int] = []
    for _ in range(64 * count):
        if len(ports) == count:
            return ports
        port = free_port()
        if port not in ports and socket_index(port, workers) == len(ports) % workers:
            ports.append(port)
    raise RuntimeError(f"no {count} free UDP ports spread over {workers} workers")


class SippPorts:
    """The local ports of one server's sipp processes, kept for all its steps.

    A REGISTER scenario's Contact carries sipp's port. New ports at each step would give
    every user one more binding per step (until Expires): after a ramp and its holds,
    10-15 bindings per user, each 200 listing them all, where the scenario means one
    device per user refreshing its binding. Keeping the ports keeps one binding per user
    (and each sipp process on the same worker, see :func:`free_udp_ports`)."""

    def __init__(self, count: int, workers: int = 1) -> None:
        self.count, self.workers = count, workers
        self.ports: list[int] = []

    def take(self) -> list[int]:
        """The same ports as the last step while they are all free, else new ones."""
        if not self.ports or not all(port_is_free(p) for p in self.ports):
            self.ports = free_udp_ports(self.count, self.workers)
        return self.ports


def options_request(host: str, port: int, local_port: int, n: int) -> bytes:
    return (
        f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};rport;branch=z9hG4bKprobe{n}x{os.getpid()}\r\n"
        "From: <sip:probe@127.0.0.1>;tag=probe\r\nTo: <sip:probe@127.0.0.1>\r\n"
        f"Call-ID: probe{n}x{os.getpid()}@bench\r\nCSeq: {n + 1} OPTIONS\r\n"
        "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def answers(host: str, port: int, timeout: float = 0.3, ok_only: bool = False) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.bind(("127.0.0.1", 0))
        # n also makes the CSeq, which must stay below 2**31 (RFC 3261 §8.1.1.5).
        n = time.monotonic_ns() % 1_000_000_000
        s.sendto(options_request(host, port, s.getsockname()[1], n), (host, port))
        try:
            reply = s.recv(65535)
        except OSError:
            return False
        return reply.startswith(b"SIP/2.0 200") if ok_only else bool(reply)


# -- the server under test ----------------------------------------------------------


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{task}/children").read_text()
            out.extend(int(c) for c in text.split())
    except OSError:
        pass
    return out


def process_tree(pid: int) -> list[int]:
    """pid and its descendants (the workers of `--workers N`), bounded depth 3."""
    pids = [pid]
    level = [pid]
    for _ in range(3):
        level = [c for p in level for c in _children(p)]
        pids.extend(level)
    return pids


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / CLK_TCK


def rss_mib(pids: list[int]) -> float:
    """Resident memory of these processes in MiB, a page they share counted once.

    The sum of each one's Pss (a page mapped by n processes counts 1/n in each). A sum
    of VmRSS counts Kamailio's shared memory (`-m`, where its transactions live) once per
    process (with `-m 1024`, 4 children: 2,930 MiB after a call hold). VmRSS where
    smaps_rollup cannot be read (kernels before 4.14)."""
    total = 0
    for pid in pids:
        for path, key in ((f"/proc/{pid}/smaps_rollup", "Pss:"),
                          (f"/proc/{pid}/status", "VmRSS:")):
            try:
                text = Path(path).read_text()
            except OSError:
                continue
            found = [line for line in text.splitlines() if line.startswith(key)]
            if found:
                total += int(found[0].split()[1])
                break
    return total / 1024


class Server:
    """A `twistd -n PLUGIN` we started on a free loopback port; stopped by its PID."""

    def __init__(self, plugin: str, args: list[str], workdir: Path) -> None:
        self.port = free_port()
        self.log_path = workdir / f"{plugin}-{self.port}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            # --pike-rate 0: one loopback load generator must not be banned as a flood.
            [TWISTD, "-n", "--pidfile=", plugin, "--port", str(self.port), "--quiet",
             "--pike-rate", "0", *args],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=workdir,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self.proc.poll() is None:
            if answers("127.0.0.1", self.port):
                return
        self.stop()
        raise RuntimeError(f"{plugin} did not start:\n{self.log_path.read_text()[-2000:]}")

    @property
    def pids(self) -> list[int]:
        return process_tree(self.proc.pid)

    def stop(self) -> None:
        stop_process(self.proc)
        self.log.close()


def stop_process(proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """SIGTERM a process we started (by its PID), SIGKILL it if it outlives `grace` s."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)


# -- sub-millisecond latency probe ----------------------------------------------------


class Probe(threading.Thread):
    """Times one OPTIONS every `interval` s against the server while a step runs.

    OPTIONS is answered by the proxy core itself (parse, transaction, response), so it
    shows the queueing delay any request sees under the step's load.
    """

    def __init__(self, host: str, port: int, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.host, self.port, self.interval = host, port, interval
        self.samples: list[float] = []
        self.lost = 0
        self._halt = threading.Event()

    def run(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(1.0)
            local = s.getsockname()[1]
            n = 0
            while not self._halt.is_set() and n < 100_000:
                n += 1
                data = options_request(self.host, self.port, local, n)
                sent = time.perf_counter()
                s.sendto(data, (self.host, self.port))
                try:
                    while True:  # skip a late answer to an earlier probe
                        reply = s.recv(65535)
                        if f"CSeq: {n + 1} ".encode() in reply:
                            break
                    self.samples.append((time.perf_counter() - sent) * 1000)
                except OSError:
                    self.lost += 1
                self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(3)


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


# -- sipp -------------------------------------------------------------------------------


@dataclass
class Step:
    rate: int
    calls: int
    ok: int
    failed: int
    seconds: float
    cpu_percent: float | None
    nominal: float = 1.0  # the step's intended length in seconds
    sipp_rtt: list[float] = field(default_factory=list)
    probe: list[float] = field(default_factory=list)

    @property
    def completed_rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def passed(self) -> bool:
        return (
            self.calls > 0
            and self.failed <= MAX_FAILURE_RATIO * self.calls
            and self.ok >= MIN_COMPLETED_RATIO * self.calls
            and self.completed_rate >= MIN_DONE_RATE_RATIO * self.rate
        )

    def row(self) -> str:
        return (f"{self.rate:>7} {self.calls:>7} {self.ok:>7} {self.failed:>6} "
                f"{self.completed_rate:>8.0f} {fmt(percentile(self.sipp_rtt, 0.5)):>7} "
                f"{fmt(percentile(self.sipp_rtt, 0.99)):>7} "
                f"{fmt(percentile(self.probe, 0.5), 2):>8} "
                f"{fmt(percentile(self.probe, 0.99), 2):>8} {fmt(self.cpu_percent, 0):>5}"
                f"  {'pass' if self.passed else 'FAIL'}")


HEADER = (f"{'rate/s':>7} {'calls':>7} {'ok':>7} {'failed':>6} {'done/s':>8} "
          f"{'p50 ms':>7} {'p99 ms':>7} {'probe50':>8} {'probe99':>8} {'cpu%':>5}")
LEGEND = ("p50/p99: sipp response times (whole ms, retransmissions included); "
          "probe50/99: one OPTIONS per 20 ms during the step, perf_counter-timed (ms)")


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def sipp_binary() -> str | None:
    return shutil.which("sipp")


def sipp_command(target: str, scenario: str, rate: int, calls: int, seconds: float,
                 extra: list[str], port: int | None = None) -> list[str]:
    return [
        sipp_binary() or "sipp", target, "-i", "127.0.0.1",
        "-p", str(port if port is not None else free_port()),
        "-t", "u1", "-sf", str(SCENARIOS / scenario),
        "-r", str(rate), "-m", str(calls),
        # sipp's own limits, raised so that they are never what is measured.
        "-l", str(max(1000, rate * 10)), "-max_socket", "4096",
        "-buff_size", str(SIPP_BUFFER),
        "-timeout", f"{int(seconds) + 8}s", "-timeout_error", "-nostdin",
        "-trace_rtt", "-rtt_freq", "1", "-fd", "1",
        *extra,
    ]


def counter(screen: str, name: str) -> int:
    """The cumulative column of sipp's final statistics screen."""
    found = re.findall(rf"{name}\s*\|\s*\d+\s*\|\s*(\d+)", screen)
    return int(found[-1]) if found else 0


def read_rtts(directory: Path) -> list[float]:
    out: list[float] = []
    for path in directory.glob("*_rtt.csv"):
        with open(path, newline="") as f:
            for row in csv.reader(f, delimiter=";"):
                try:
                    out.append(float(row[1]))
                except (IndexError, ValueError):
                    continue  # the header line
        path.unlink()
    return out


class Stall:
    """Stops the server's processes (SIGSTOP, by PID: processes this run started or was
    given with --target-pid) `at` seconds into a step, for `seconds`, then lets them
    go on (SIGCONT): how a server comes back from having fallen behind once, as after
    a long pause or a burst, at a rate it otherwise carries."""

    def __init__(self, pids: list[int], at: float, seconds: float) -> None:
        self.pids, self.at, self.seconds = pids, at, seconds
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        if self.done.wait(self.at):
            return  # the step ended first
        stopped = []
        try:
            for pid in self.pids:
                try:
                    os.kill(pid, signal.SIGSTOP)
                    stopped.append(pid)
                except ProcessLookupError:
                    pass
            time.sleep(self.seconds)
        finally:
            for pid in stopped:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass

    def finish(self) -> None:
        self.done.set()
        self.thread.join()


def parse_stall(text: str) -> tuple[float, float]:
    """`AT:SECONDS` (--stall) -> (at, seconds); argparse prints the error's message."""
    at, sep, length = text.partition(":")
    try:
        value = (float(at), float(length))
    except ValueError:
        raise argparse.ArgumentTypeError(f"want AT:SECONDS, e.g. 10:2, got {text!r}") from None
    if not sep or not (0 <= value[0] < 3600 and 0 < value[1] <= 60):
        raise argparse.ArgumentTypeError(
            f"want AT:SECONDS with 0 <= AT < 3600 and 0 < SECONDS <= 60, got {text!r}")
    return value


def run_step(
    rate: int, seconds: float, commands: Callable[[int, int, Path], list[list[str]]],
    workdir: Path, server_pids: list[int] | None, probe_target: tuple[str, int] | None,
    stall: tuple[float, float] | None = None,
) -> Step:
    """One load step: `commands(rate, calls, step_dir)` gives one sipp command per
    process (the rate already split among them); all run at once. `stall`: (at,
    seconds) to stop the server's processes for, see `Stall`."""
    calls = max(1, int(rate * seconds))
    step_dir = workdir / f"step-{rate}-{time.monotonic_ns()}"
    step_dir.mkdir()
    argvs = commands(rate, calls, step_dir)
    probe = Probe(*probe_target) if probe_target else None
    cpu_before = cpu_seconds(server_pids) if server_pids else 0.0
    started = time.monotonic()
    if probe:
        probe.start()
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              cwd=step_dir, text=True) for argv in argvs]
    stopper = Stall(server_pids, *stall) if stall and server_pids else None
    if stopper:
        stopper.start()
    screens: list[str] = []
    limit = seconds + 30
    try:
        for proc in procs:
            try:
                out, _ = proc.communicate(
                    timeout=max(1.0, limit - (time.monotonic() - started)))
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                out, _ = proc.communicate(timeout=5)
            screens.append(out or "")
    finally:
        if stopper:
            stopper.finish()  # never leaves the server stopped
    elapsed = time.monotonic() - started
    if probe:
        probe.stop()
    cpu = ((cpu_seconds(server_pids) - cpu_before) / elapsed * 100) if server_pids else None
    ok = sum(counter(s, "Successful call") for s in screens)
    failed = sum(counter(s, "Failed call") for s in screens)
    # The step's time budget is its nominal length plus a settling allowance: a sipp
    # that could not keep the rate shows up as ok < 95% of the calls.
    result = Step(rate, calls, ok, failed, elapsed, cpu, seconds, read_rtts(step_dir),
                  probe.samples if probe else [])
    if probe_target:
        settle(*probe_target)
    return result


def settle(host: str, port: int, limit: float = 40.0) -> None:
    """Wait (bounded) until the server answers 200 at once again, so that one step's
    backlog is not charged to the next: retransmissions, and the 503s of the overload
    guard, which sheds while the transactions of an overloaded step are still in
    progress (--max-transactions) or lingering (Timer J: 32 s over UDP,
    --max-lingering)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        started = time.perf_counter()
        if answers(host, port, 0.5, ok_only=True) and time.perf_counter() - started < 0.005:
            return
        time.sleep(0.5)


def ramp(
    label: str, start: int, maximum: int, seconds: float, bisections: int,
    measure: Callable[[int], Step], max_steps: int = 14, budget: float = 240.0,
) -> Step | None:
    """Double from `start` until a step fails, then bisect; bounded in steps and time.

    Returns the best passing step (the highest sustained rate found)."""
    print(f"-- {label}")
    print(HEADER, flush=True)
    began = time.monotonic()
    best: Step | None = None
    failed_at: int | None = None
    rate = start
    steps = 0
    while steps < max_steps and time.monotonic() - began < budget:
        step = measure(rate)
        steps += 1
        print(step.row(), flush=True)
        if step.passed:
            best = step
        else:
            failed_at = rate
        if failed_at is None:
            if rate >= maximum:
                break
            rate = min(maximum, rate * 2)
            continue
        low = best.rate if best else 0
        if bisections <= 0 or failed_at - low <= max(10, low // 10):
            break
        bisections -= 1
        rate = (low + failed_at) // 2
        if rate <= low or rate == 0:
            break
        time.sleep(0.5)
    return best


#: Seconds a hold waits first: 64 x T1, when the transactions of the ramp's overloaded
#: steps (Timers B, F, H, J, L) have ended in any RFC 3261 server.
DRAIN = 33.0


def hold(best: Step | None, seconds: float, measure: Callable[[int, float], Step],
         tries: int = 5, drain: float = DRAIN, floor: float = 0.5) -> Step | None:
    """Run the ramp's best rate again for `seconds`, stepping down 10% on a failure.

    Ramp steps are a few seconds; a step longer than Timer J (32 s) also lets what a
    server keeps per request pile up to its steady state, as it does in production
    (lingering transactions, their memory, the collector's passes over them). Each
    try first waits `drain` seconds, so that it does not measure the recovery from the
    ramp's (or the previous try's) overload.

    At most `tries` tries, none below `floor` times the ramp's best: a 3 s ramp step
    can pass on what the socket buffers absorb, well above what lasts 40 s, and three
    tries from there (stop 22: 26,000, 23,400, 21,060/s) could all fail at a rate
    that the next try would have held."""
    if best is None or seconds <= 0:
        return None
    print(f"-- held for {seconds:g} s (Timer J is 32 s: past it, per-request state is at "
          f"its steady size), each try after {drain:g} s for the last overload to drain")
    rate = best.rate
    lowest = max(1, int(best.rate * floor))
    for _ in range(tries):
        time.sleep(drain)
        step = measure(rate, seconds)
        print(step.row(), flush=True)
        if step.passed:
            return step
        rate = int(rate * 0.9)
        if rate < lowest:
            break
    return None


def held_fields(held: Step | None, asked: float) -> dict[str, object]:
    """The RESULT fields of a hold (empty when none was asked for)."""
    if asked <= 0:
        return {}
    return {"held": held.rate if held else 0,
            "held_done": f"{held.completed_rate:.0f}" if held else 0,
            "held_cpu": fmt(held.cpu_percent if held else None, 0)}


def summary(label: str, best: Step | None, rss: float | None, unit: str) -> str:
    if best is None:
        return f"{label}: no rate passed (< 1% failed, >= 95% completed at >= 90% of the rate)"
    return (f"{label}: {best.rate} {unit}/s sustained (done {best.completed_rate:.0f}/s); "
            f"sipp p50 {fmt(percentile(best.sipp_rtt, 0.5))} ms p99 "
            f"{fmt(percentile(best.sipp_rtt, 0.99))} ms; probe p50 "
            f"{fmt(percentile(best.probe, 0.5), 2)} ms p99 "
            f"{fmt(percentile(best.probe, 0.99), 2)} ms; server CPU "
            f"{fmt(best.cpu_percent, 0)}%, RSS {fmt(rss, 0)} MiB")


def print_limits() -> None:
    # SIGTERM (e.g. run_all's ceiling) must still run the callers' `finally`, which
    # stops the servers and sipps started here.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        rmem = Path("/proc/sys/net/core/rmem_max").read_text().strip()
    except OSError:
        rmem = "?"
    print(f"machine: {os.cpu_count()} CPUs; net.core.rmem_max {rmem} (caps sipp -buff_size "
          f"{SIPP_BUFFER} and the server's SO_RCVBUF); sipp runs on the same CPUs as the "
          "server, so its CPU use is taken from the server's")


def add_common_arguments(parser: argparse.ArgumentParser, config_default: str) -> None:
    """The options bench/register.py and bench/calls.py share."""
    parser.add_argument("--target", help="HOST:PORT of another server to measure")
    parser.add_argument("--domain", default="a.lab")
    parser.add_argument("--target-pid", type=int, default=0,
                        help="PID of the --target server (its process tree's CPU and RSS)")
    parser.add_argument("--config-name", default="",
                        help=f"the config= field of the RESULT line (default: {config_default})")
    parser.add_argument("--quick", action="store_true", help="a few seconds in all")
    parser.add_argument("--sipp", type=int, default=1, help="sipp processes sharing the load")
    parser.add_argument("--workers", type=int, default=1, help="sipproxy --workers N")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of a step")
    parser.add_argument("--hold", type=float, default=0.0,
                        help="then hold the best rate this long (e.g. 40: past Timer J)")
    parser.add_argument("--rate", type=int, default=0,
                        help="one step at this rate instead of a ramp (e.g. a step longer "
                             "than Timer J, 32 s, to see lingering transactions pile up)")
    parser.add_argument("--stall", type=parse_stall, default=None, metavar="AT:SECONDS",
                        help="stop the server's processes (SIGSTOP) AT s into each step "
                             "for SECONDS s: does it catch up? (with --target: only "
                             "given --target-pid)")
