"""The lab runner end to end: `python -m proxy.lab --quick --free-ports` brings up the
two-domain lab (DNS, a.lab, b.lab, redirect server), runs the four experiments with real
sipclient processes and writes the report. Then a few pure checks of its helpers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.lab.audio import TONES, check_tones, write_tone
from proxy.lab.experiments import parse_fields

ROOT = Path(__file__).resolve().parents[2]


def _leftovers(marker: str) -> list[str]:
    """Command lines of live processes that mention `marker` (our report folder)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmdline:
            found.append(f"{pid}: {cmdline[:200]}")
    return found


@pytest.fixture(scope="module")
def lab_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str],
                                                                Path, dict]:
    out = tmp_path_factory.mktemp("lab") / "report"
    proc = subprocess.run(
        [sys.executable, "-m", "proxy.lab", "--quick", "--free-ports", "--plain",
         "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=170,
    )
    results_path = out / "results.json"
    assert results_path.exists(), f"no results.json; stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    results = json.loads(results_path.read_text())
    return proc, out, {e["number"]: e for e in results["experiments"]}


def _explain(proc: subprocess.CompletedProcess[str], exp: dict) -> str:
    failed = [f"{s['title']}: {s['detail']}" for s in exp["steps"] if not s["ok"]]
    return f"{exp['title']}: {failed}\n--- runner output tail:\n{proc.stdout[-3000:]}"


@pytest.mark.timeout(200)
def test_report_files(lab_run) -> None:
    proc, out, experiments = lab_run
    assert (out / "index.html").exists()
    page = (out / "index.html").read_text()
    assert sorted(experiments) == [1, 2, 3, 4]
    for number, exp in experiments.items():
        assert f'id="exp{number}"' in page
        assert exp["ladder"] and (out / exp["ladder"]).stat().st_size > 0, exp["title"]
        assert exp["pcap"] and (out / exp["pcap"]).read_bytes()[:4] in (
            b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4"), exp["title"]
    # One summary line per experiment, then the report path.
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(("PASS ", "FAIL "))]
    assert len(lines) == 4, proc.stdout[-2000:]
    assert f"report: {out / 'index.html'}" in proc.stdout
    # Every process the runner started is gone.
    assert _leftovers(str(out)) == []


@pytest.mark.timeout(200)
@pytest.mark.parametrize("number", [1, 2, 3])
def test_experiments_1_to_3_pass(lab_run, number: int) -> None:
    proc, _, experiments = lab_run
    exp = experiments[number]
    assert exp["passed"], _explain(proc, exp)
    # RTP statistics were taken before hang-up.
    assert any(int(m.get("packets_received", 0)) > 0 for m in exp["media"]) or number == 2


@pytest.mark.timeout(200)
def test_experiment_4_conference_passes(lab_run) -> None:
    proc, _, experiments = lab_run
    exp = experiments[4]
    assert exp["passed"], _explain(proc, exp)
    assert all(a["ok"] for a in exp["audio"]) and len(exp["audio"]) == 2


@pytest.mark.timeout(200)
def test_exit_status_matches_verdicts(lab_run) -> None:
    proc, _, experiments = lab_run
    assert proc.returncode == (0 if all(e["passed"] for e in experiments.values()) else 1)


def test_tone_check_tells_who_was_heard(tmp_path: Path) -> None:
    path = tmp_path / "bob.wav"
    write_tone(path, TONES["bob"], seconds=1.0)
    assert check_tones(path, ["bob"]).ok
    assert not check_tones(path, ["alice"]).ok
    missing = check_tones(tmp_path / "missing.wav", ["bob"])
    assert missing.error.startswith("unreadable") and not missing.ok


def test_status_media_fields_with_spaces() -> None:
    fields = parse_fields(
        "codec=PCMU packets_received=12 jitter_buffer={'a': 1, 'b': 2} rtt_ms=None")
    assert fields["codec"] == "PCMU"
    assert fields["jitter_buffer"] == "{'a': 1, 'b': 2}"
    assert fields["rtt_ms"] == "None"


def test_ports_in_use_exit_2(tmp_path: Path) -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "proxy.lab", "--base-port", str(port), "--plain",
             "--out", str(tmp_path / "r")],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )
    assert proc.returncode == 2
    assert "ports in use" in proc.stderr
