"""Compile the hot path with mypyc (`make compiled`); see sipcore/accel.py.

    python deploy/compile.py [--if-stale | --clean]

Builds an extension module next to each source in sipcore.accel.MODULES (plus
mypyc's shared runtime library at the top of the tree), then records the sources'
SHA-256 in build/compiled.json: only a build that matches its sources is ever
imported. On failure it prints one line and exits 1, leaving the sources in charge.
--if-stale builds only if the record does not match the sources; --clean removes
every extension module and the record.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Digests and paths only: importing sipcore must not pick a build while we make one.
os.environ["SIPCALLING_INTERPRETED"] = "1"

from sipcore import accel  # noqa: E402

BUILD_TIMEOUT = 600  # seconds; a cold build takes about 40 s on 2 cores


def clean() -> None:
    for module in accel.MODULES:
        for path in accel.extension_paths(module):
            path.unlink()
    for path in ROOT.glob("*__mypyc*"):
        path.unlink()
    accel.MANIFEST.unlink(missing_ok=True)


def build() -> int:
    digests = accel.source_digests()  # before compiling: an edit meanwhile reads as stale
    clean()
    sources = [str(accel.source_path(m).relative_to(ROOT)) for m in accel.MODULES]
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "mypyc", "--ignore-missing-imports", *sources],
            cwd=ROOT, capture_output=True, text=True, timeout=BUILD_TIMEOUT,
            env={**os.environ, "SIPCALLING_INTERPRETED": "1"},
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        print(f"compile: mypyc did not run: {err}")
        return 1
    if done.returncode != 0:
        errors = [line for line in done.stdout.splitlines() if ": error:" in line]
        sys.stdout.write(done.stdout[-4000:] + done.stderr[-4000:])
        print(f"compile: mypyc failed ({len(errors)} type errors); the sources run instead")
        clean()
        return 1
    accel.MANIFEST.parent.mkdir(exist_ok=True)
    accel.MANIFEST.write_text(json.dumps({"digests": digests}, indent=1, sort_keys=True))
    print(f"compile: {len(sources)} modules compiled with mypyc in "
          f"{time.monotonic() - started:.0f} s")
    return 0


def main(argv: list[str]) -> int:
    # One build at a time: two at once (two shells, or `make compiled` during a test
    # run's) would delete and write the same extension modules and build/ files.
    accel.MANIFEST.parent.mkdir(exist_ok=True)
    with open(accel.MANIFEST.parent / ".compile.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if "--clean" in argv:
            clean()
            return 0
        if "--if-stale" in argv and accel.status(honour_env=False) == "compiled":
            return 0
        return build()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
