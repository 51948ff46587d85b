"""Figures for issue 10's closing note: a UDP flood at `twistd -n sipproxy`, the proxy's
memory around it, and a bounded fuzz run's corpus and executions.

Prints a table; asserts nothing. Usage: .venv/bin/python bench/flood.py [--packets N]
[--fuzz-runs N]. Every process is ours, stopped by its PID; every wait is bounded.
"""

from __future__ import annotations

import argparse
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import sipplib  # noqa: E402
from tests.interop.conftest import TWISTD, free_port, sip_ping  # noqa: E402


def rss_kib(pid: int) -> int:
    """VmRSS of `pid` in KiB, from /proc/PID/status."""
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", text, re.M).group(1))


def ping_from(source: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        s.settimeout(0.5)
        s.sendto(options(port, s.getsockname()[1], 0, host=source), ("127.0.0.1", port))
        try:
            return s.recv(65535).startswith(b"SIP/2.0 200")
        except TimeoutError:
            return False


def recovery_seconds(port: int, limit: float = 20.0) -> float | None:
    """Seconds after the flood until an innocent source (127.0.0.2) is answered."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if ping_from("127.0.0.2", port):
            return time.monotonic() - started
    return None


def options(port: int, local: int, n: int, host: str = "127.0.0.1") -> bytes:
    return (
        f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{local};branch=z9hG4bKbench{n}x{time.monotonic_ns()}\r\n"
        f"From: <sip:flood@127.0.0.1>;tag=f{n}\r\nTo: <sip:127.0.0.1>\r\n"
        f"Call-ID: bench{n}-{time.monotonic_ns()}\r\nCSeq: 1 OPTIONS\r\n"
        "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def flood(port: int, packets: int) -> tuple[float, int]:
    """Send `packets` OPTIONS as fast as the socket takes them; (sent/s, answered)."""
    answered = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        local = s.getsockname()[1]
        s.setblocking(False)
        started = time.monotonic()
        for n in range(packets):
            s.sendto(options(port, local, n), ("127.0.0.1", port))
            while True:  # read answers as we go, so our own buffer does not overflow
                try:
                    s.recv(65535)
                    answered += 1
                except BlockingIOError:
                    break
        rate = packets / max(time.monotonic() - started, 1e-9)
        s.settimeout(1.0)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                s.recv(65535)
                answered += 1
            except TimeoutError:
                break
    return rate, answered


def run_proxy(workdir: Path, *args: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    log = open(workdir / f"proxy-{port}.log", "wb")
    proc = subprocess.Popen([TWISTD, "-n", "--pidfile=", "sipproxy", "--port", str(port),
                             "--location", "memory:", "--quiet", *args],
                            stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and proc.poll() is None:
        if sip_ping(port, timeout=0.3) is not None:
            return proc, port
    stop(proc)
    raise RuntimeError("sipproxy did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    sipplib.stop_process(proc, grace=10.0)


def fuzz_figures(runs: int, workdir: Path) -> tuple[str, str, str]:
    """(seed corpus files, executions, exec/s) of a bounded fuzz_message.py run."""
    seed = ROOT / "fuzz" / "corpus" / "message"
    new = workdir / "corpus-new"
    new.mkdir()
    try:
        result = subprocess.run(
            [sys.executable, str(ROOT / "fuzz" / "fuzz_message.py"), f"-runs={runs}",
             "-dict=" + str(ROOT / "fuzz" / "sip.dict"), str(new), str(seed)],
            capture_output=True, text=True, timeout=300, cwd=workdir,
        )
    except (subprocess.TimeoutExpired, OSError) as err:
        return str(len(list(seed.iterdir()))), f"failed: {err}", "-"
    out = result.stdout + result.stderr
    done = re.findall(r"#(\d+)\s+DONE\s+.*?corp: (\d+)/(\S+).*?exec/s: (\d+)", out)
    seeds = len(list(seed.iterdir()))
    if not done:
        return str(seeds), f"no stats (exit {result.returncode})", "-"
    execs, corp, size, rate = done[-1]
    return f"{seeds} seed files; {corp} inputs ({size}) after the run", execs, rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--packets", type=int, default=20000)
    parser.add_argument("--fuzz-runs", type=int, default=20000)
    args = parser.parse_args()
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="bench-flood-") as tmp:
        workdir = Path(tmp)
        for label, extra in (("default protection (pike 2000/2)", ()),
                             ("pike off (--pike-rate 0)", ("--pike-rate", "0"))):
            proc, port = run_proxy(workdir, *extra)
            try:
                before = rss_kib(proc.pid)
                rate, answered = flood(port, args.packets)
                # From another loopback address: the flooding one may be banned (pike).
                recovered = recovery_seconds(port)
                after = rss_kib(proc.pid)
            finally:
                stop(proc)
            rows += [
                (f"[{label}] flood sent", f"{args.packets} OPTIONS at {rate:,.0f}/s"),
                (f"[{label}] answered", f"{answered} ({100 * answered / args.packets:.1f}%)"),
                (f"[{label}] proxy RSS before/after", f"{before / 1024:.1f} / "
                                                      f"{after / 1024:.1f} MiB"),
                (f"[{label}] 127.0.0.2 answered again after",
                 "not within 20 s" if recovered is None else f"{recovered:.1f} s"),
            ]
        corpus, execs, rate = fuzz_figures(args.fuzz_runs, workdir)
        rows += [("fuzz_message corpus", corpus),
                 ("fuzz_message executions", f"{execs} (exec/s {rate})")]
    width = max(len(k) for k, _ in rows)
    print(f"{'figure'.ljust(width)}  value")
    print(f"{'-' * width}  {'-' * 40}")
    for key, value in rows:
        print(f"{key.ljust(width)}  {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
