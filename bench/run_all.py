"""`make bench`: run every benchmark script in turn and print their figures.

Each script is bounded in time by itself; this runner only adds a hard ceiling so a
stuck peer cannot hold the run forever. Nothing here asserts a number.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
# In the order a reader meets the layers: message, auth, store, media, then whole servers.
ORDER = ["parse.py", "hotpath.py", "digest.py", "location.py", "replication.py", "media.py",
         "register.py", "calls.py", "memory.py"]
HELPERS = ["run_all.py", "sipplib.py", "__init__.py", "rtp_session.py", "compare.py"]
# compare.py (sipproxy vs Kamailio, ~15 min of ramps) runs only with --compare.
# Scripts that need a tool the test dependencies do not install: said and skipped
# without it.
NEEDS = {"instructions.py": "valgrind"}
CEILING = 600  # seconds per script (compare.py: 1,800, it runs eight ramps)


def main() -> int:
    scripts = [HERE / name for name in ORDER if (HERE / name).exists()]
    scripts += sorted(p for p in HERE.glob("*.py") if p.name not in ORDER + HELPERS)
    if "--compare" in sys.argv[1:]:
        scripts.append(HERE / "compare.py")
    failed = 0
    results: list[dict[str, str]] = []
    for script in scripts:
        tool = NEEDS.get(script.name)
        if tool is not None and shutil.which(tool) is None:
            print(f"\n=== {script.name} === skipped: needs {tool}", flush=True)
            continue
        print(f"\n=== {script.name} ===", flush=True)
        started = time.monotonic()
        try:
            env = dict(os.environ)
            if "--quick" in sys.argv[1:]:
                env["SIPCALLING_BENCH_QUICK"] = "1"  # every script knows the variable
            proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                                    text=True, env=env)
            assert proc.stdout is not None
            deadline = started + (1800 if script.name == "compare.py" else CEILING)
            for line in proc.stdout:  # echo as it comes, keep the RESULT lines
                print(line, end="", flush=True)
                if line.startswith("RESULT "):
                    results.append(dict(f.split("=", 1) for f in line.split()[1:] if "=" in f))
                if time.monotonic() > deadline:
                    proc.terminate()
            failed += proc.wait(30) != 0
        except subprocess.TimeoutExpired:
            print(f"{script.name}: stopped after {CEILING} s")
            proc.kill()
            failed += 1
        print(f"--- {script.name}: {time.monotonic() - started:.1f} s", flush=True)
    print_table(results)
    return 1 if failed else 0


def print_table(results: list[dict[str, str]]) -> None:
    """The summary: REGISTER/s and calls/s (sipp), the in-process hot path, memory."""
    print("\n=== summary ===")
    print(f"{'measure':44} {'figure':>12} {'done/s':>8} {'server CPU':>11} {'RSS MiB':>8}")
    for r in results:
        bench = r.get("bench")
        if bench == "register":
            print(f"{'REGISTER/s ' + r.get('config', ''):44} {r.get('rate', '-'):>12} "
                  f"{r.get('done', '-'):>8} {r.get('cpu', '-') + '%':>11} "
                  f"{r.get('rss', '-'):>8}")
        elif bench == "calls":
            print(f"{'calls/s ' + r.get('config', ''):44} {r.get('rate', '-'):>12} "
                  f"{r.get('done', '-'):>8} {r.get('cpu', '-') + '%':>11} "
                  f"{r.get('rss', '-'):>8}")
        elif bench == "hotpath":
            print(f"{'hot path us/REGISTER (in-process)':44} {r.get('register_us', '-'):>12}")
            print(f"{'hot path us/message of a call (in-process)':44} "
                  f"{r.get('call_msg_us', '-'):>12}")
            print(f"{'hot path us/REGISTER, Timer J running':44} "
                  f"{r.get('register_steady_us', '-'):>12}")
        elif bench == "memory" and "bindings" in r:
            print(f"{'bytes/binding at ' + r['bindings']:44} {r.get('bytes_per_binding'):>12}")
        elif bench == "memory" and "calls" in r:
            print(f"{'bytes/active call at ' + r['calls']:44} {r.get('bytes_per_call'):>12}")


if __name__ == "__main__":
    sys.exit(main())
