"""The benchmark scripts still run (their quick form) and print a figure.

Never asserts a rate or a time (DESIGN.md: benchmarks measure, tests assert
behaviour): only that each script exits 0 and prints its RESULT line with a number.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.interop.conftest import sipp_binary

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(180)


def run_quick(script: str) -> str:
    env = dict(os.environ, SIPCALLING_BENCH_QUICK="1")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script)], env=env,
                          capture_output=True, text=True, timeout=150, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_hotpath_quick() -> None:
    out = run_quick("hotpath.py")
    assert re.search(r"RESULT bench=hotpath register_us=[0-9.]+ call_msg_us=[0-9.]+", out), out


def test_memory_quick() -> None:
    out = run_quick("memory.py")
    assert re.search(r"RESULT bench=memory bindings=\d+ bytes_per_binding=\d+", out), out
    assert re.search(r"RESULT bench=memory calls=\d+ bytes_per_call=\d+", out), out


def test_register_quick() -> None:
    sipp_binary()
    out = run_quick("register.py")
    assert re.search(r"RESULT bench=register config=\S+ rate=\d+", out), out


def test_calls_quick() -> None:
    sipp_binary()
    out = run_quick("calls.py")
    assert re.search(r"RESULT bench=calls config=\S+ rate=\d+", out), out
