"""sipproxy next to Kamailio and Twisted's registrar: the same sipp ramps, one table.

Prints only.

Runs bench/register.py and bench/calls.py (each its own bounded ramp, see
bench/sipplib.py for the pass rule) against:

- `twistd sipproxy`, 1 worker, memory: location store;
- `twistd sipproxy --workers 2` (SO_REUSEPORT; memory: replicated between the workers,
  registrar.location.replicated);
- Kamailio 5.6 (Debian package `kamailio`) with bench/kamailio/kamailio.cfg, our
  config for the same job: in-memory registrar (usrloc db_mode 0) plus a stateful
  record-routing proxy, no auth, UDP, with N UDP worker children (default 4 and 2);
- REGISTER only: Twisted's bundled `twisted.protocols.sip.RegisterProxy` with an
  `InMemoryRegistry` (bench/twisted_registrar.py), the yardstick issue 9 quotes
  ("about 17,000 REGISTER/s on one core"). It is stateless, ignores Expires and
  cannot route calls, so its calls cell says so. --no-twisted leaves the row out.

REGISTER load comes from the same number of sipp processes for every server
(`--register-sipp`, 4): the kernel spreads datagrams over our workers by source
address, so 2 workers need several; and one sipp process is itself the limit near
30,000 REGISTER/s (Kamailio held 30,000/s for 40 s from 2 processes, and collapsed
from 1, done 1,364-2,424/s).

Kamailio and Twisted's registrar are started here as processes on a free loopback
port, given to the scripts with --target/--target-pid (so their CPU% and RSS are
measured as ours are) and stopped by their PIDs. Without kamailio installed its rows
say so; nothing else changes.

    python bench/compare.py [--quick] [--seconds 5] [--hold 40] [--children 4,2]
                            [--only register] [--no-twisted] [--register-sipp 4]

After each ramp the best rate is held for --hold seconds (after 33 s for the ramp's
overload to drain; stepping down 10% if it fails,
at most five tries and not below half the ramp's best): ramp steps are a few seconds,
shorter than Timer J (32 s), so only a hold shows a server with its per-request state
(lingering transactions) at steady size.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench import sipplib  # noqa: E402

CONFIG = HERE / "kamailio" / "kamailio.cfg"
SCRIPT_CEILING = 600  # seconds per ramp script (ramp + hold); each is bounded by itself
TWISTED_ROW = "twisted.protocols.sip (stateless)"
TWISTED_CALLS = "n/a (cannot route calls)"
DOMAIN = "a.lab"  # bench/register.py's default --domain


def kamailio_binary() -> str | None:
    return shutil.which("kamailio") or (
        "/usr/sbin/kamailio" if os.access("/usr/sbin/kamailio", os.X_OK) else None)


class Kamailio:
    """`kamailio -DD` (main process in the foreground) on a free loopback UDP port."""

    def __init__(self, children: int, workdir: Path) -> None:
        binary = kamailio_binary()
        if binary is None:
            raise RuntimeError("kamailio is not installed (Debian package kamailio)")
        self.port = sipplib.free_port()
        rundir = workdir / f"kamailio-{self.port}"
        rundir.mkdir()
        self.log_path = rundir / "kamailio.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            # -m: shared memory in MB, where tm keeps its transactions. 256 ran out in
            # a 40 s call hold at 2,600 calls/s ("new_t(): out of mem", 40% of the calls
            # failed); ours may use a GB there, so Kamailio gets one too.
            [binary, "-f", str(CONFIG), "-DD", "-E", "-n", str(children),
             "-l", f"udp:127.0.0.1:{self.port}", "-m", "1024", "-M", "16",
             "-Y", str(rundir), "-w", str(rundir)],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=rundir,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self.proc.poll() is None:
            if sipplib.answers("127.0.0.1", self.port, ok_only=True):
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"kamailio did not start:\n{self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        sipplib.stop_process(self.proc)  # the main process stops its children
        self.log.close()


class TwistedRegistrar:
    """bench/twisted_registrar.py (Twisted's RegisterProxy) on a free loopback UDP port.

    It answers OPTIONS addressed to itself with 200 (its one addition to Twisted's
    code), so sipplib.answers is the readiness check, as for our servers."""

    def __init__(self, workdir: Path) -> None:
        self.port = sipplib.free_port()
        self.log_path = workdir / f"twisted-registrar-{self.port}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "twisted_registrar.py"), "--port", str(self.port),
             "--interface", "127.0.0.1", "--domain", DOMAIN],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=workdir,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self.proc.poll() is None:
            if sipplib.answers("127.0.0.1", self.port, ok_only=True):
                return
            time.sleep(0.05)  # "port unreachable" comes back at once while it starts
        self.stop()
        raise RuntimeError(
            f"twisted_registrar.py did not start:\n{self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        sipplib.stop_process(self.proc)
        self.log.close()


def run_script(argv: list[str]) -> list[dict[str, str]]:
    """Run one bench script (echoing it), return its RESULT lines as dicts."""
    results: list[dict[str, str]] = []
    proc = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + SCRIPT_CEILING
    for line in proc.stdout:
        print("   " + line, end="", flush=True)
        if line.startswith("RESULT "):
            results.append(dict(f.split("=", 1) for f in line.split()[1:] if "=" in f))
        if time.monotonic() > deadline:
            proc.terminate()  # its own finally stops its servers and sipps
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of a step")
    parser.add_argument("--children", default="4,2", help="Kamailio UDP children to try")
    parser.add_argument("--only", choices=["register", "calls"], default=None)
    parser.add_argument("--hold", type=float, default=40.0,
                        help="hold each best rate this long, past Timer J (0: no hold)")
    parser.add_argument("--twisted", action=argparse.BooleanOptionalAction, default=True,
                        help="measure Twisted's RegisterProxy too (REGISTER only)")
    parser.add_argument("--register-sipp", type=int, default=4,
                        help="sipp processes sending REGISTERs, the same for every server")
    args = parser.parse_args()
    if not 1 <= args.register_sipp <= 16:
        parser.error("--register-sipp must be within 1..16")
    quick = args.quick or sipplib.quick_mode()
    if sipplib.sipp_binary() is None:
        print("compare.py: sipp is not installed (Debian package sip-tester); skipped")
        return 0
    common = ["--seconds", str(args.seconds), "--hold", str(0 if quick else args.hold)]
    common += ["--quick"] if quick else []
    benches = [b for b in ("register", "calls") if args.only in (None, b)]
    rows: dict[str, dict[str, dict[str, str]]] = {}  # server -> bench -> RESULT

    def record(server: str, bench: str, results: list[dict[str, str]]) -> None:
        if results:
            rows.setdefault(server, {})[bench] = results[-1]

    # One load generator for every server: the same sipp processes for REGISTER.
    register_sipp = ["--sipp", str(args.register_sipp)]

    def per_bench(bench: str) -> list[str]:
        return register_sipp if bench == "register" else []

    ours = [("sipproxy 1 worker (memory:)", [], ["--only", "memory"]),
            ("sipproxy 2 workers (memory:)", ["--workers", "2"], ["--only", "memory"])]
    for name, workers, register_only in ours:
        for bench in benches:
            print(f"\n=== {name}: {bench} ===", flush=True)
            extra = [*register_sipp, *register_only] if bench == "register" else []
            record(name, bench, run_script([str(HERE / f"{bench}.py"), *common, *workers,
                                            *extra]))
    children = [int(c) for c in args.children.split(",") if c.strip()]
    missing: str | None = None
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
        if args.twisted and "register" in benches:
            print(f"\n=== {TWISTED_ROW}: register ===", flush=True)
            try:
                tw = TwistedRegistrar(Path(tmp))
            except RuntimeError as err:
                print(f"   {err}")
            else:
                try:
                    record(TWISTED_ROW, "register", run_script([
                        str(HERE / "register.py"), *common, *register_sipp,
                        "--target", f"127.0.0.1:{tw.port}", "--target-pid",
                        str(tw.proc.pid), "--config-name", "twisted_sip"]))
                finally:
                    tw.stop()
        for n in children:
            name = f"Kamailio 5.6, {n} children"
            for bench in benches:
                print(f"\n=== {name}: {bench} ===", flush=True)
                try:
                    kam = Kamailio(n, Path(tmp))
                except RuntimeError as err:
                    missing = str(err).splitlines()[0]
                    print(f"   {err}")
                    break
                try:
                    record(name, bench, run_script([
                        str(HERE / f"{bench}.py"), *common, *per_bench(bench),
                        "--target", f"127.0.0.1:{kam.port}", "--target-pid",
                        str(kam.proc.pid), "--config-name", f"kamailio{n}"]))
                finally:
                    kam.stop()
    print_table(rows, benches, missing)
    return 0


def print_table(rows: dict[str, dict[str, dict[str, str]]], benches: list[str],
                missing: str | None) -> None:
    print("\n=== sipproxy vs Kamailio (sipp on the same 2 CPUs; highest rate passing "
          "< 1% failed, >= 95% done at >= 90% of the rate) ===")
    # "rate": sipp's -r of the best passing step; "done": what completed per second.
    # "held": the rate that then held for --hold seconds (past Timer J), and its done/s.
    print(f"{'server':34} {'REGISTER/s':>10} {'done/s':>7} {'CPU%':>5} {'RSS MiB':>8} "
          f"{'held/s':>7} {'done/s':>7}   "
          f"{'calls/s':>8} {'done/s':>7} {'CPU%':>5} {'RSS MiB':>8} {'held/s':>7} "
          f"{'done/s':>7}")
    for server, by_bench in rows.items():
        cells = []
        for bench in ("register", "calls"):
            r = by_bench.get(bench) if bench in benches else None
            if r is None:
                cells.append(f"{'-':>{10 if bench == 'register' else 8}} {'-':>7} {'-':>5} "
                             f"{'-':>8} {'-':>7} {'-':>7}")
            else:
                width = 10 if bench == "register" else 8
                cells.append(f"{r.get('rate', '-'):>{width}} {r.get('done', '-'):>7} "
                             f"{r.get('cpu', '-'):>5} {r.get('rss', '-'):>8} "
                             f"{r.get('held', '-'):>7} {r.get('held_done', '-'):>7}")
        if server == TWISTED_ROW:
            cells[1] = TWISTED_CALLS
        print(f"{server:34} {cells[0]}   {cells[1]}")
    if missing:
        print(f"Kamailio: not measured ({missing})")


if __name__ == "__main__":
    sys.exit(main())
