"""sipcore.accel: the compiled build runs only when it matches its sources.

Each case is a fresh interpreter (the choice is made once, at import). The cases that
need extension modules skip when none are built, except under `make test`, which
builds them first (SIPCALLING_REQUIRE_COMPILED=1).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sipcore import accel

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import sipcore.accel as a
import proxy.core, registrar.registrar, sipcore.message
from bench.hotpath import make_proxy, register, CALLER
stack, wire = make_proxy()
stack.endpoint.data_received(register(1, 1), CALLER, None)
print(a.BUILD, sipcore.message.__file__.endswith('.py'), proxy.core.__file__.endswith('.py'),
      registrar.registrar.__file__.endswith('.py'), wire.sent[0][0].split(b' ', 2)[1].decode())
"""


def run_probe(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("SIPCALLING_INTERPRETED", "SIPCALLING_REQUIRE_COMPILED",
                          "SIPCALLING_COMPILED_MANIFEST")}
    return subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**clean, **env})


@pytest.fixture
def built() -> None:
    if accel.status(honour_env=False) == "none":
        if os.environ.get("SIPCALLING_REQUIRE_COMPILED") == "1":
            pytest.fail("no compiled build (make compiled)")
        pytest.skip("no compiled build (make compiled)")


def stale_manifest(tmp_path: Path) -> Path:
    record = json.loads(accel.MANIFEST.read_text()) if accel.MANIFEST.exists() else {}
    digests = dict(record.get("digests") or accel.source_digests())
    digests["sipcore.message"] = "0" * 64  # as if message.py had been edited since
    path = tmp_path / "compiled.json"
    path.write_text(json.dumps({"digests": digests}))
    return path


def test_current_build_runs_compiled(built: None) -> None:
    if accel.status(honour_env=False) != "compiled":
        pytest.skip("the build is stale here (make compiled)")
    done = run_probe()
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["compiled", "False", "False", "False", "200"]


def test_interpreted_on_request(built: None) -> None:
    done = run_probe(SIPCALLING_INTERPRETED="1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["interpreted", "True", "True", "True", "200"]


def test_stale_build_falls_back_to_every_source(built: None, tmp_path: Path) -> None:
    done = run_probe(SIPCALLING_COMPILED_MANIFEST=str(stale_manifest(tmp_path)))
    assert done.returncode == 0, done.stderr
    # All or nothing: proxy.core's source is current, yet it runs from source too.
    assert done.stdout.split() == ["stale", "True", "True", "True", "200"]
    assert "older than their sources" in done.stderr


def test_missing_record_is_stale(built: None, tmp_path: Path) -> None:
    done = run_probe(SIPCALLING_COMPILED_MANIFEST=str(tmp_path / "absent.json"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "stale"


def test_stale_build_refused_when_compiled_required(built: None, tmp_path: Path) -> None:
    done = run_probe(SIPCALLING_COMPILED_MANIFEST=str(stale_manifest(tmp_path)),
                     SIPCALLING_REQUIRE_COMPILED="1")
    assert done.returncode != 0
    assert "make compiled" in done.stderr.splitlines()[-1]


def test_every_compiled_module_has_a_source() -> None:
    for module in accel.MODULES:
        assert accel.source_path(module).is_file(), module


def test_twistd_sipproxy_says_which_build_runs(built: None, tmp_path: Path) -> None:
    """The start-up line names the build, so an operator (and this suite's servers
    under `make test`) can tell the compiled hot path is the one answering."""
    from tests.interop.conftest import TWISTD, free_port

    expected = ("hot path compiled" if accel.status(honour_env=False) == "compiled"
                else "hot path from sources")
    log_path = tmp_path / "proxy.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [TWISTD, "-n", "--pidfile=", "sipproxy", "--port", str(free_port()),
             "--location", "memory:"],
            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
            env={k: v for k, v in os.environ.items() if k != "SIPCALLING_INTERPRETED"})
    try:
        line = ""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            text = log_path.read_text(errors="replace")
            found = [row for row in text.splitlines() if "listening on" in row]
            if found or proc.poll() is not None:
                line = found[0] if found else text[-2000:]
                break
            time.sleep(0.1)  # a real process starting: a bounded poll
        assert expected in line, line
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(15)
