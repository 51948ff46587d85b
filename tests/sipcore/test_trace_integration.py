"""`twistd -n sipproxy --trace FILE` as a real process: the OPTIONS and its 200 are traced."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sipcore.trace.reader import Trace
from tests.interop.conftest import start_server  # noqa: F401 - the fixture
from tests.sipcore.test_trace_flow import check_html, write_traces


def options(port: int, call_id: str) -> tuple[bytes, int]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.bind(("127.0.0.1", 0))
        local = s.getsockname()[1]
        s.sendto(
            (f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
             f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bKtrace1\r\n"
             "From: <sip:student@a.lab>;tag=t1\r\nTo: <sip:127.0.0.1>\r\n"
             f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\n"
             "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode(),
            ("127.0.0.1", port),
        )
        return s.recv(65535), local


def test_sipproxy_traces_options_and_200(tmp_path: Path, start_server) -> None:  # noqa: F811
    path = tmp_path / "proxy.jsonl"
    server = start_server("sipproxy", "--location", "memory:", "--trace", str(path))
    answer, local = options(server.port, "trace-it-0001")
    assert answer.startswith(b"SIP/2.0 200")
    server.stop()  # SIGTERM: stopService flushes and closes the trace
    records = [json.loads(line) for line in path.read_text().splitlines()]
    mine = [r for r in records if "trace-it-0001" in r.get("msg", "")]
    assert [(r["dir"], r["msg"].split(" ", 2)[:2]) for r in mine] == [
        ("in", ["OPTIONS", f"sip:127.0.0.1:{server.port}"]), ("out", ["SIP/2.0", "200"])]
    for r in mine:
        assert r["transport"] == "UDP" and r["proc"] == "proxy a.lab" and r["role"] == "proxy"
        assert r["local"] == f"127.0.0.1:{server.port}" and r["remote"] == f"127.0.0.1:{local}"
    assert mine[0]["ts_us"] <= mine[1]["ts_us"]
    # And the reader makes one call of it.
    trace = Trace.load([str(path)], lambda w: pytest.fail(w))
    call = trace.find_call("trace-it-0001")
    assert call is not None and call.final_status == "200 OK"
    assert trace.lane_label(f"127.0.0.1:{server.port}").startswith("proxy a.lab ")


def test_page_in_headless_chromium(tmp_path: Path) -> None:
    """The page runs in a real browser: no JS error, the panel fills on selection."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (Debian package chromium); "
                    "the page is still checked for well-formedness elsewhere")
    html = tmp_path / "call.html"
    subprocess.run([sys.executable, "-m", "sipcore.trace.cli", "render",
                    *map(str, write_traces(tmp_path)), "-o", str(html)], check=True,
                   capture_output=True)
    check_html(html.read_text(encoding="utf-8"))
    # #msg-8 selects the hold re-INVITE on load; --dump-dom prints the DOM after scripts ran.
    result = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
         f"file://{html}#msg-8"],
        capture_output=True, text=True, timeout=90,
    )
    dom = result.stdout
    assert 'class="msg req sel"' in dom, result.stderr[-2000:]
    assert '<mark>a=sendonly</mark>' in dom  # the panel shows the message, highlighted
    assert 'class="placeholder"' not in dom
