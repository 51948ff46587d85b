"""Call load through the proxy: sipp caller(s) -> `twistd sipproxy` -> one sipp callee.

Prints only. A proxy (memory: location, replicated with --workers N; --quiet; per-IP
flood limit off since all load comes from loopback) is started on a free loopback
port; one sipp callee registers bob@a.lab and answers every call from the sipp
callers (`--sipp N` of them, each its own source port; default 1, or 2 per worker
with --workers, on ports that SO_REUSEPORT spreads evenly over the workers):
INVITE/100/180/200/ACK/BYE/200, no pauses. The callers place calls in steps: the
rate doubles until a step fails, then bisects (bench/sipplib.py: < 1% failed, >= 95%
of the calls completed, at >= 90% of the rate). For the highest sustained rate it
prints the call set-up time (INVITE to 200) p50/p99 from sipp (whole ms), a sub-ms
OPTIONS probe's p50/p99, the proxy's CPU% and its RSS.

    python bench/calls.py [--quick] [--workers N]
    python bench/calls.py --target HOST:PORT [--domain a.lab]   # another server
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import sipplib  # noqa: E402


def start_callee(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sipplib.sipp_binary() or "sipp", "-sf", str(sipplib.SCENARIOS / "bench_uas_answer.xml"),
         "-i", "127.0.0.1", "-p", str(port), "-t", "u1", "-nostdin",
         "-buff_size", str(sipplib.SIPP_BUFFER), "-max_socket", "4096"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    sipplib.stop_process(proc, grace=10.0)


def caller_commands(target: str, rate: int, calls: int,
                    args: argparse.Namespace) -> list[list[str]]:
    """One step's sipp callers, `args.sipp` of them sharing `rate` and `calls`.

    A caller's source port decides which worker takes its calls (SO_REUSEPORT hashes
    it): random ports put 3 of 4 callers on one worker in some steps. The ports are
    new at each step, so that no late response of the last step reaches this step's
    callers."""
    ports = sipplib.free_udp_ports(args.sipp, max(1, args.workers))
    return [
        sipplib.sipp_command(
            target, "bench_uac_call.xml", max(1, rate // args.sipp),
            max(1, calls // args.sipp), max(args.seconds, calls / rate),
            ["-s", "bob", "-key", "domain", args.domain, "-key", "from", "alice",
             "-key", "fromdomain", args.domain, "-recv_timeout", "3000"],
            port=ports[i])
        for i in range(args.sipp)
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sipplib.add_common_arguments(parser, "workersN")
    parser.set_defaults(sipp=None)  # to tell "--sipp not given" from "--sipp 1"
    args = parser.parse_args()
    if args.sipp is None:
        args.sipp = 2 * args.workers if args.workers > 1 else 1
    quick = sipplib.quick_mode() or args.quick
    start, maximum, bisect, max_steps, budget = 100, 6400, 3, 12, 180.0
    if quick:
        args.seconds, start, maximum, bisect, max_steps, budget = 1.0, 20, 40, 0, 2, 20.0
    if args.rate > 0:
        start = maximum = args.rate
        bisect, max_steps, budget = 0, 1, args.seconds + 60.0
    if sipplib.sipp_binary() is None:
        print("calls.py: sipp is not installed (Debian package sip-tester); skipped")
        return 0
    from tests.interop.sip_helpers import register

    sipplib.print_limits()
    workdir = Path(tempfile.mkdtemp(prefix="bench-calls-"))
    server: sipplib.Server | None = None
    callee: subprocess.Popen[bytes] | None = None
    try:
        if args.target:
            host, _, port_text = args.target.rpartition(":")
            port = int(port_text)
            label = f"server at {args.target}"
        else:
            # With --workers the memory: store is replicated between the workers
            # (registrar.location.replicated).
            location = "memory:"
            extra: list[str] = ["--workers", str(args.workers)] if args.workers > 1 else []
            server = sipplib.Server(
                "sipproxy", ["--domain", args.domain, "--location", location, *extra], workdir)
            host, port = "127.0.0.1", server.port
            label = f"calls: sipproxy --location {location.split(':')[0]}: {' '.join(extra)}"
        uas_port = sipplib.free_port()
        if register(port, "bob", args.domain, uas_port, expires=600) != 200:
            print(f"calls.py: could not register bob@{args.domain} at {host}:{port}")
            return 1
        callee = start_callee(uas_port, workdir)
        time.sleep(0.3)
        print(f"calls through {label}: {args.seconds:g} s steps; {sipplib.LEGEND}")

        def commands(rate: int, calls: int, step_dir: Path) -> list[list[str]]:
            return caller_commands(f"{host}:{port}", rate, calls, args)

        pids = server.pids if server else (
            sipplib.process_tree(args.target_pid) if args.target_pid else None)

        def step(rate: int, seconds: float = args.seconds) -> sipplib.Step:
            result = sipplib.run_step(rate, seconds, commands, workdir, pids, (host, port),
                                      args.stall)
            time.sleep(0.5)  # let the last BYEs finish before the next step
            return result

        best = sipplib.ramp(label, start, maximum, args.seconds, bisect, step,
                            max_steps=max_steps, budget=budget)
        held = sipplib.hold(best, args.hold, step, drain=0.0 if quick else sipplib.DRAIN)
        if server:
            pids = server.pids
        rss = sipplib.rss_mib(pids) if pids else None
        print(sipplib.summary(label, best, rss, "calls"), flush=True)
        sipplib.result_line(bench="calls", config=args.config_name or f"workers{args.workers}",
                            rate=best.rate if best else 0,
                            done=f"{best.completed_rate:.0f}" if best else 0,
                            cpu=sipplib.fmt(best.cpu_percent if best else None, 0),
                            rss=sipplib.fmt(rss, 0), **sipplib.held_fields(held, args.hold))
        return 0
    finally:
        if callee is not None:
            stop(callee)
        if server is not None:
            server.stop()
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
