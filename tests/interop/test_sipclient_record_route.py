"""In-dialog requests between two sipclients follow the proxy's Record-Route (§12.1, §16.6).

Checked on the proxy's own trace: the ACK and the BYE of a call must pass through it,
which only happens if the callee copied Record-Route into its 180/200 (§12.1.1) and the
caller built its route set from them (§12.1.2).
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.interop.sipclient_harness import SipClient


def _requests_seen(trace: Path) -> list[str]:
    seen = []
    for line in trace.read_text().splitlines():
        record = json.loads(line)
        first = record.get("msg", "").split("\r\n", 1)[0]
        if record.get("dir") == "in" and not first.startswith("SIP/2.0"):
            seen.append(first.split(" ", 1)[0])
    return seen


def test_ack_and_bye_traverse_the_proxy(start_server, tmp_path):
    trace = tmp_path / "proxy.jsonl"
    proxy = start_server("sipproxy", "--location", "memory:", "--trace", str(trace))
    target = f"127.0.0.1:{proxy.port}"
    bob = SipClient(tmp_path, "bob", "--proxy", target, "--auto-answer")
    alice = SipClient(tmp_path, "alice", "--proxy", target)
    try:
        bob.expect(r"registered sip:bob@a\.lab")
        alice.expect(r"registered sip:alice@a\.lab")
        alice.send("call bob")
        alice.expect(r"call 1 connected$")
        bob.expect(r"call 1 connected$")
        alice.send("hangup")
        alice.expect(r"call 1 ended hangup$")
        bob.expect(r"call 1 ended bye$")
    finally:
        alice.stop()
        bob.stop()
    proxy.stop()  # flushes the trace
    seen = _requests_seen(trace)
    assert seen.count("INVITE") == 1
    assert "ACK" in seen, seen
    assert "BYE" in seen, seen
