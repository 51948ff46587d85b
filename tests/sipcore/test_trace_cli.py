"""`sipcalling-trace` as a process: exit codes, one-line errors, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.sipcore.test_trace_flow import CALL_ID, FLOW, check_html, write_traces


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sipcore.trace.cli", *args],
                          capture_output=True, text=True, timeout=60)


def assert_clean_stderr(result: subprocess.CompletedProcess[str], lines: int) -> list[str]:
    err = result.stderr.splitlines()
    assert "Traceback" not in result.stderr
    assert len(err) == lines, result.stderr
    return err


def test_list(tmp_path: Path) -> None:
    result = run("list", *map(str, write_traces(tmp_path)))
    assert result.returncode == 0
    assert_clean_stderr(result, 0)
    out = result.stdout.splitlines()
    assert out[0].split()[:3] == ["START", "(UTC)", "CALL-ID"]
    assert CALL_ID in out[1] and "INVITE" in out[1] and "200 OK" in out[1]
    assert "alice@a.lab → bob@a.lab" in out[1] and out[1].endswith("13")
    assert "reg-bob-0001" in out[2] and "REGISTER" in out[2]


def test_render_and_pcap(tmp_path: Path) -> None:
    traces = list(map(str, write_traces(tmp_path)))
    html = tmp_path / "call.html"
    result = run("render", *traces, "-o", str(html), "--call-id", CALL_ID)
    assert result.returncode == 0, result.stderr
    assert_clean_stderr(result, 1)
    (svg,) = check_html(html.read_text(encoding="utf-8"))
    pcap = tmp_path / "out.pcap"
    result = run("pcap", *traces, "-o", str(pcap))
    assert result.returncode == 0, result.stderr
    assert pcap.read_bytes()[:4] == b"\xd4\xc3\xb2\xa1"
    assert f"{len(FLOW)} packets" in result.stderr


def test_missing_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    good = str(write_traces(tmp_path)[0])
    for command in (["list"], ["render", "-o", str(tmp_path / "x.html")],
                    ["pcap", "-o", str(tmp_path / "x.pcap")]):
        result = run(*command, good, str(tmp_path / "nope.jsonl"))
        assert result.returncode == 2
        (line,) = assert_clean_stderr(result, 1)
        assert line == f"sipcalling-trace: error: no such file: {tmp_path / 'nope.jsonl'}"
    assert not (tmp_path / "x.html").exists()


def test_bad_lines_are_one_warning_each(tmp_path: Path) -> None:
    alice, proxy = write_traces(tmp_path)
    good = proxy.read_text().splitlines()
    record = json.loads(good[0])
    record["msg"] = "this is not SIP\r\n\r\n"
    missing = {k: v for k, v in json.loads(good[1]).items() if k != "dir"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([
        good[0], '{"v": 1, "ts_us": 12', json.dumps(record), json.dumps(missing), "[1, 2]",
        good[2], "\x00\x01garbage",
    ]) + "\n")
    result = run("list", str(alice), str(bad))
    assert result.returncode == 0
    warnings = assert_clean_stderr(result, 5)
    assert [w.split(": ")[2].split(":")[1] for w in warnings] == ["2", "3", "4", "5", "7"]
    assert "not valid JSON" in warnings[0]
    assert "unparseable SIP message" in warnings[1]
    assert "missing field 'dir'" in warnings[2]
    assert all(w.startswith(f"sipcalling-trace: warning: {bad}:") for w in warnings)


def test_unknown_call_id_and_unwritable_output(tmp_path: Path) -> None:
    traces = list(map(str, write_traces(tmp_path)))
    result = run("render", *traces, "-o", str(tmp_path / "x.html"), "--call-id", "zzz")
    assert result.returncode == 1
    (line,) = assert_clean_stderr(result, 1)
    assert "no call with Call-ID 'zzz'" in line
    result = run("pcap", *traces, "-o", str(tmp_path / "no" / "dir" / "x.pcap"))
    assert result.returncode == 1
    (line,) = assert_clean_stderr(result, 1)
    assert line.startswith("sipcalling-trace: error: cannot write")


def test_empty_trace_and_usage_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = run("list", str(empty))
    assert result.returncode == 1
    assert assert_clean_stderr(result, 1) == [
        "sipcalling-trace: error: no SIP messages in the traces"]
    result = run("render", str(empty))  # no -o
    assert result.returncode == 2 and "Traceback" not in result.stderr
    result = run()
    assert result.returncode == 2 and "Traceback" not in result.stderr
    result = run("list", str(tmp_path))  # a directory
    assert result.returncode == 2
    assert assert_clean_stderr(result, 1)[0].endswith(f"is a directory: {tmp_path}")
