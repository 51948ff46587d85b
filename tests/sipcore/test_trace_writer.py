"""The trace writer: JSON lines with every field, buffering, rotation, no Twisted."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

from twisted.internet.task import Clock

from sipcore.trace.reader import Trace, expand_rotated, load_records
from sipcore.trace.writer import TraceWriter
from tests.sipcore.test_trace_flow import FLOW, Addr

FIELDS = {"v", "ts_us", "time", "proc", "role", "pid", "seq", "dir", "transport",
          "local", "remote"}
INVITE = FLOW[0][2]


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_records_have_every_field(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    writer = TraceWriter(path, label="proxy a.lab", role="proxy",
                         wall_ns=lambda: 1_712_345_678_123_456_789, pid=7)
    writer("in", INVITE, Addr("UDP", "127.0.0.1", 5060), Addr("UDP", "127.0.0.1", 5070))
    writer("out", b"SIP/2.0 100 Trying\r\n\r\n", Addr("TCP", "::1", 5060),
           Addr("TCP", "::1", 40000))
    writer.close()
    first, second = lines(path)
    assert set(first) == FIELDS | {"msg"}
    assert first["ts_us"] == 1_712_345_678_123_456
    assert first["time"] == "2024-04-05T19:34:38.123456Z"
    assert (first["proc"], first["role"], first["pid"], first["seq"]) == ("proxy a.lab",
                                                                          "proxy", 7, 1)
    assert (first["dir"], first["transport"]) == ("in", "UDP")
    assert (first["local"], first["remote"]) == ("127.0.0.1:5060", "127.0.0.1:5070")
    assert first["msg"].encode() == INVITE  # CRLFs and all: lossless
    assert (second["local"], second["remote"], second["seq"]) == ("[::1]:5060",
                                                                  "[::1]:40000", 2)


def test_non_utf8_bytes_are_kept_in_base64(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    data = INVITE.replace(b"Alice", b"Al\xe9ce")  # Latin-1 from a sloppy phone
    writer = TraceWriter(path)
    writer("in", data, Addr("UDP", "127.0.0.1", 5060), Addr("UDP", "127.0.0.1", 5070))
    writer.close()
    (record,) = lines(path)
    assert "msg" not in record
    assert base64.b64decode(record["msg_b64"]) == data
    (back,) = load_records([str(path)], lambda w: None)
    assert back.data == data


def test_buffered_until_timer_count_or_close(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    clock = Clock()
    writer = TraceWriter(path, clock=clock, flush_every=3, flush_interval=0.5)
    here, there = Addr("UDP", "127.0.0.1", 5060), Addr("UDP", "127.0.0.1", 5070)
    writer("in", INVITE, here, there)
    assert path.read_bytes() == b""  # nothing written on the hot path
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(0.5)
    assert len(lines(path)) == 1
    assert clock.getDelayedCalls() == []  # idle: no timer running
    for _ in range(3):
        writer("out", INVITE, here, there)
    assert len(lines(path)) == 4  # the third pending record flushed them
    writer("out", INVITE, here, there)
    writer.close()
    assert len(lines(path)) == 5
    assert clock.getDelayedCalls() == []
    writer("out", INVITE, here, there)  # after close: ignored, no error
    assert len(lines(path)) == 5


def test_rotation_at_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "proxy.jsonl"
    here, there = Addr("UDP", "127.0.0.1", 5060), Addr("UDP", "127.0.0.1", 5070)
    probe = tmp_path / "probe.jsonl"
    w = TraceWriter(probe, label="p")
    w("in", INVITE, here, there)
    w.close()
    record_size = probe.stat().st_size
    limit = (record_size + 1) * 4 + 2  # four records (with two-digit seq) per file
    writer = TraceWriter(path, label="p", max_bytes=limit, keep=2, flush_every=5)
    for _ in range(30):
        writer("in", INVITE, here, there)
    writer.close()
    parts = sorted(p.name for p in tmp_path.glob("proxy.jsonl*"))
    assert parts == ["proxy.jsonl", "proxy.jsonl.1", "proxy.jsonl.2"]
    for part in tmp_path.glob("proxy.jsonl*"):
        assert part.stat().st_size <= limit
        assert all(json.loads(x) for x in part.read_text().splitlines())
    # The newest records are kept, in order, across the rotated parts.
    assert [p for p in expand_rotated([str(path)])] == [
        str(path), str(path) + ".2", str(path) + ".1"]
    records = load_records([str(path)], lambda w: None)
    seqs = [r.seq for r in records]
    assert seqs == list(range(30 - len(seqs) + 1, 31))
    for rotated in (".1", ".2"):
        assert len(Path(str(path) + rotated).read_text().splitlines()) == 4
    assert 9 <= len(seqs) <= 12
    assert len(Trace(records).arrows) == len(seqs)


def test_writer_does_not_import_twisted() -> None:
    code = ("import sys, sipcore.trace.writer, sipcore.trace.reader, sipcore.trace.ladder, "
            "sipcore.trace.pcap, sipcore.trace.cli\n"
            "bad = [m for m in sys.modules if m.split('.')[0] == 'twisted']\n"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unwritable_disk_does_not_raise(tmp_path: Path, capsys) -> None:
    writer = TraceWriter(tmp_path / "t.jsonl", flush_every=1)
    writer._file.close()  # simulate the file going away under us
    writer._file = open("/dev/full", "ab")  # noqa: SIM115 - every write fails with ENOSPC
    here = Addr("UDP", "127.0.0.1", 5060)
    writer("in", INVITE, here, here)
    writer("in", INVITE, here, here)
    writer.close()
    assert capsys.readouterr().err.count("cannot write") == 1
