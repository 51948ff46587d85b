"""`make bench`: run every benchmark script in turn and print their figures.

Each script is bounded in time by itself; this runner only adds a hard ceiling so a
stuck peer cannot hold the run forever. Nothing here asserts a number.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
# In the order a reader meets the layers: message, auth, store, media, then whole servers.
ORDER = ["parse.py", "digest.py", "location.py", "media.py", "register.py", "calls.py"]
CEILING = 600  # seconds per script


def main() -> int:
    scripts = [HERE / name for name in ORDER if (HERE / name).exists()]
    scripts += sorted(p for p in HERE.glob("*.py") if p.name not in ORDER + ["run_all.py"])
    failed = 0
    for script in scripts:
        print(f"\n=== {script.name} ===", flush=True)
        started = time.monotonic()
        try:
            done = subprocess.run([sys.executable, str(script)], timeout=CEILING)
            failed += done.returncode != 0
        except subprocess.TimeoutExpired:
            print(f"{script.name}: stopped after {CEILING} s")
            failed += 1
        print(f"--- {script.name}: {time.monotonic() - started:.1f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
