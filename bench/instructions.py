"""Instructions per REGISTER refresh on the proxy's hot path, counted by callgrind.

Wall-clock figures on a shared 2-core VM move by a tenth between identical runs, too
much to see a change worth 1%. Instruction counts do not move: this runs the path of
`bench/hotpath.py` (parse, transaction, registrar, 200 out; socket replaced by a list)
under ``valgrind --tool=callgrind`` twice, side by side: the same 10,000 users register,
then one run sends FEW refreshes and the other MANY. The difference of the two counts
over MANY - FEW is the count per refresh, with start-up and the first registrations
cancelled out. PYTHONHASHSEED is fixed, so two runs agree to within 0.01%.

Run: ``python bench/instructions.py [--few 2000] [--many 7000]`` (about a minute;
needs valgrind). Prints figures only. Instructions are not time (cache misses and
the cyclic collector's pauses cost more than they count), so a change is also
measured by `bench/hotpath.py` and by sipp.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
USERS = 10_000


def workload(refreshes: int, users: int = USERS) -> int:
    """Register `users` users, then send `refreshes` refreshes; returns how many
    REGISTERs were answered 200."""
    sys.path.insert(0, str(ROOT))
    from bench.hotpath import CALLER, make_proxy, register
    from sipcore.twisted.gctune import tune

    stack, wire = make_proxy()
    tune()
    receive = stack.endpoint.data_received
    total = users + refreshes
    # Built first, so that the count difference holds the path and nothing else.
    messages = [register(n % users, n) for n in range(total)]
    ok = 0
    for n, data in enumerate(messages):
        receive(data, CALLER, None)
        if n % 500 == 499 or n == total - 1:
            ok += sum(1 for sent in wire.sent if sent[0].startswith(b"SIP/2.0 200 "))
            wire.sent.clear()
    return ok


def count(runs: list[int], users: int, out_dir: str) -> list[int]:
    """Instructions callgrind counted for each workload run (run side by side)."""
    env = dict(os.environ, PYTHONHASHSEED="0")
    children = []
    for refreshes in runs:
        cmd = [
            "valgrind", "--tool=callgrind", f"--callgrind-out-file={out_dir}/cg.{refreshes}.out",
            f"--log-file={out_dir}/cg.{refreshes}.log", sys.executable, __file__,
            "--child", str(refreshes), "--users", str(users),
        ]
        children.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL))
    # Both waited for before either is judged: a failed run must not leave the other
    # running on past this process (and its temporary directory).
    codes = [child.wait() for child in children]
    counts = []
    for refreshes, code in zip(runs, codes):
        if code != 0:
            raise RuntimeError(f"the run with {refreshes} refreshes failed")
        log = Path(out_dir) / f"cg.{refreshes}.log"
        m = re.search(r"Collected : (\d+)", log.read_text())
        if m is None:
            raise RuntimeError(f"no instruction count in {log}")
        counts.append(int(m.group(1)))
    return counts


def main() -> None:
    quick = os.environ.get("SIPCALLING_BENCH_QUICK") == "1"  # make bench --quick
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--few", type=int, default=100 if quick else 2000,
                        help="refreshes, first run")
    parser.add_argument("--many", type=int, default=400 if quick else 7000,
                        help="refreshes, second run")
    parser.add_argument("--users", type=int, default=500 if quick else USERS,
                        help="users registered first")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.users < 1:
        sys.exit("instructions: need --users >= 1")
    if args.child is not None:  # one counted run (under valgrind, or a smoke test)
        answered = workload(args.child, args.users)
        if answered != args.users + args.child:
            sys.exit(f"instructions: {answered} of {args.users + args.child} REGISTERs "
                     "got 200")
        return
    if not 0 <= args.few < args.many:
        sys.exit("instructions: need 0 <= --few < --many")
    if shutil.which("valgrind") is None:
        sys.exit("instructions: valgrind is not installed (apt-get install valgrind)")
    with tempfile.TemporaryDirectory(prefix="sipcalling-cg-") as out_dir:
        try:
            few, many = count([args.few, args.many], args.users, out_dir)
        except RuntimeError as err:
            sys.exit(f"instructions: {err}")
    per = (many - few) / (args.many - args.few)
    print(f"REGISTER refresh (memory store, {args.users:,} users): {per:,.0f} instructions "
          f"(callgrind; {args.many:,} - {args.few:,} refreshes)")
    print(f"RESULT bench=instructions register_refresh={per:.0f}")


if __name__ == "__main__":
    main()
