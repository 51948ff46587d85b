"""A traced call built from literal SIP messages, and the reader/ladder tests on it.

alice (traced, 127.0.0.1:5070) calls bob (an untraced peer, 127.0.0.1:5080, like sipp)
through the proxy (traced, 127.0.0.1:5060); bob answers; alice puts bob on hold with a
re-INVITE (sendonly / recvonly), then hangs up. ACK, re-INVITE and BYE go end to end
(no Record-Route). Helpers here are imported by the other test_trace_* modules.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from sipcore.trace.ladder import render_html
from sipcore.trace.reader import Trace, load_records
from sipcore.trace.writer import TraceWriter

ALICE = ("127.0.0.1", 5070)
PROXY = ("127.0.0.1", 5060)
BOB = ("127.0.0.1", 5080)
CALL_ID = "a84b4c76e66710@pc33.a.lab"
T0_US = 1_712_345_678_000_000


@dataclass
class Addr:
    """Same shape as sipcore.twisted.transport.Address (not imported: no Twisted here)."""

    transport: str
    host: str
    port: int


def sdp(direction: str, port: int = 4000) -> str:
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na={direction}\r\n"
    )


def message(start: str, vias: list[str], cseq: str, from_tag: str = "1928301774",
            to_tag: str | None = None, body: str = "", contact: str | None = None,
            call_id: str = CALL_ID, extra: str = "") -> bytes:
    lines = [start]
    lines += [f"Via: SIP/2.0/UDP {v}" for v in vias]
    lines += [
        "Max-Forwards: 70",
        f"From: Alice <sip:alice@a.lab>;tag={from_tag}",
        "To: Bob <sip:bob@a.lab>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {call_id}",
        f"CSeq: {cseq}",
    ]
    if contact:
        lines.append(f"Contact: <{contact}>")
    if extra:
        lines.append(extra)
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


VA = "127.0.0.1:5070;branch=z9hG4bKa1"
VP = "127.0.0.1:5060;branch=z9hG4bKp1"
VA2 = "127.0.0.1:5070;branch=z9hG4bKa2"
VA3 = "127.0.0.1:5070;branch=z9hG4bKa3"
VA4 = "127.0.0.1:5070;branch=z9hG4bKa4"
VB = "127.0.0.1:5080;branch=z9hG4bKb1"
BOB_URI = "sip:bob@127.0.0.1:5080"
ALICE_URI = "sip:alice@127.0.0.1:5070"

#: (src, dst, bytes), in wire order. 14 messages.
FLOW: list[tuple[tuple[str, int], tuple[str, int], bytes]] = [
    (ALICE, PROXY, message("INVITE sip:bob@a.lab SIP/2.0", [VA], "1 INVITE",
                           body=sdp("sendrecv"), contact=ALICE_URI)),
    (PROXY, ALICE, message("SIP/2.0 100 Trying", [VA], "1 INVITE")),
    (PROXY, BOB, message(f"INVITE {BOB_URI} SIP/2.0", [VP, VA], "1 INVITE",
                         body=sdp("sendrecv"), contact=ALICE_URI)),
    (BOB, PROXY, message("SIP/2.0 180 Ringing", [VP, VA], "1 INVITE", to_tag="b1",
                         contact=BOB_URI)),
    (PROXY, ALICE, message("SIP/2.0 180 Ringing", [VA], "1 INVITE", to_tag="b1",
                           contact=BOB_URI)),
    (BOB, PROXY, message("SIP/2.0 200 OK", [VP, VA], "1 INVITE", to_tag="b1",
                         body=sdp("sendrecv", 5000), contact=BOB_URI)),
    (PROXY, ALICE, message("SIP/2.0 200 OK", [VA], "1 INVITE", to_tag="b1",
                           body=sdp("sendrecv", 5000), contact=BOB_URI)),
    (ALICE, BOB, message(f"ACK {BOB_URI} SIP/2.0", [VA2], "1 ACK", to_tag="b1")),
    # Hold: alice offers sendonly, bob answers recvonly.
    (ALICE, BOB, message(f"INVITE {BOB_URI} SIP/2.0", [VA3], "2 INVITE", to_tag="b1",
                         body=sdp("sendonly"), contact=ALICE_URI)),
    (BOB, ALICE, message("SIP/2.0 200 OK", [VA3], "2 INVITE", to_tag="b1",
                         body=sdp("recvonly", 5000), contact=BOB_URI)),
    (ALICE, BOB, message(f"ACK {BOB_URI} SIP/2.0", [VA3 + "x"], "2 ACK", to_tag="b1")),
    (ALICE, BOB, message(f"BYE {BOB_URI} SIP/2.0", [VA4], "3 BYE", to_tag="b1")),
    (BOB, ALICE, message("SIP/2.0 200 OK", [VA4], "3 BYE", to_tag="b1")),
    # A REGISTER of somebody else: a second call in the same traces.
    (BOB, PROXY, message("REGISTER sip:a.lab SIP/2.0", [VB], "1 REGISTER",
                         call_id="reg-bob-0001", contact=BOB_URI)),
]
TITLES = ["INVITE", "100 Trying", "INVITE", "180 Ringing", "180 Ringing", "200 OK", "200 OK",
          "ACK", "INVITE", "200 OK", "ACK", "BYE", "200 OK"]


class FakeWall:
    def __init__(self) -> None:
        self.now_us = T0_US

    def __call__(self) -> int:
        return self.now_us * 1000


def write_traces(directory: Path, flow=FLOW, latency_us: int = 300) -> tuple[Path, Path]:
    """Write alice's and the proxy's trace files for `flow`; bob is not traced."""
    wall = FakeWall()
    paths = directory / "alice.jsonl", directory / "proxy.jsonl"
    writers = {
        ALICE: TraceWriter(paths[0], label="alice", role="ua", wall_ns=wall, pid=101),
        PROXY: TraceWriter(paths[1], label="proxy a.lab", role="proxy", wall_ns=wall, pid=102),
    }
    for n, (src, dst, data) in enumerate(flow):
        wall.now_us = T0_US + n * 10_000
        if src in writers:
            writers[src]("out", data, Addr("UDP", *src), Addr("UDP", *dst))
        wall.now_us += latency_us
        if dst in writers:
            writers[dst]("in", data, Addr("UDP", *dst), Addr("UDP", *src))
    for w in writers.values():
        w.close()
    return paths


class _Checker(HTMLParser):
    """Collects what the tests look at; HTMLParser itself never raises on bad HTML,
    so tag balance is checked here."""

    VOID = {"meta", "br", "img", "input", "link", "hr", "wbr"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.lanes: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        pass

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
            return
        self.stack.pop()


def check_html(page: str) -> list[ET.Element]:
    """Assert the page is balanced HTML with well-formed SVG; return the SVG roots."""
    checker = _Checker()
    checker.feed(page)
    checker.close()
    assert checker.errors == []
    assert checker.stack == []
    svgs = [ET.fromstring(m) for m in re.findall(r"<svg\b.*?</svg>", page, re.S)]
    assert svgs
    return svgs


SVG = "{http://www.w3.org/2000/svg}"


def arrows_of(svg: ET.Element) -> list[ET.Element]:
    return [g for g in svg.iter(f"{SVG}g") if "msg" in (g.get("class") or "").split()]


# -- tests ---------------------------------------------------------------------------------


def test_reader_merges_and_pairs(tmp_path: Path) -> None:
    alice, proxy = write_traces(tmp_path)
    warnings: list[str] = []
    records = load_records([str(alice), str(proxy)], warnings.append)
    assert warnings == []
    # alice: 7+7 records (all but the REGISTER touch her, minus proxy<->bob legs)...
    assert [r.ts_us for r in records] == sorted(r.ts_us for r in records)
    trace = Trace(records)
    # One arrow per message on the wire, though most were seen twice.
    assert len(trace.arrows) == len(FLOW)
    first = trace.arrows[0]
    assert first.sender is not None and first.receiver is not None
    assert first.sender.proc == "alice" and first.receiver.proc == "proxy a.lab"
    assert first.received_us - first.sent_us == 300
    # Messages to/from bob are seen once only (bob is not traced).
    to_bob = trace.arrows[2]
    assert to_bob.sender is not None and to_bob.receiver is None and not to_bob.missing_receive
    assert [a.src for a in trace.arrows[:3]] == ["127.0.0.1:5070", "127.0.0.1:5060",
                                                 "127.0.0.1:5060"]


def test_grouping_by_call_id(tmp_path: Path) -> None:
    trace = Trace.load([str(p) for p in write_traces(tmp_path)], lambda w: None)
    calls = trace.calls()
    assert [c.call_ids for c in calls] == [[CALL_ID], ["reg-bob-0001"]]
    call = calls[0]
    assert [a.title for a in call.arrows] == TITLES
    assert call.summary == "INVITE alice@a.lab → bob@a.lab"
    assert call.final_status == "200 OK"
    assert trace.find_call("a84b4c") is call


def test_lane_labels(tmp_path: Path) -> None:
    trace = Trace.load([str(p) for p in write_traces(tmp_path)], lambda w: None)
    assert trace.lane_label("127.0.0.1:5070") == "alice 127.0.0.1:5070"
    assert trace.lane_label("127.0.0.1:5060") == "proxy a.lab 127.0.0.1:5060"
    # bob is not traced: named after the Contact he sends.
    assert trace.lane_label("127.0.0.1:5080") == "bob 127.0.0.1:5080"


def test_ladder_lanes_arrows_and_hold_badges(tmp_path: Path) -> None:
    trace = Trace.load([str(p) for p in write_traces(tmp_path)], lambda w: None)
    call = trace.calls()[0]
    page = render_html(trace, [call], "hold test", ["alice.jsonl", "proxy.jsonl"])
    (svg,) = check_html(page)
    # One lane per host, in order of appearance.
    heads = re.findall(r'<div class="lane-head(?: traced)?" [^>]*><b>([^<]*)</b><span>([^<]*)',
                       page)
    assert heads == [("alice", "127.0.0.1:5070"), ("proxy a.lab", "127.0.0.1:5060"),
                     ("bob", "127.0.0.1:5080")]
    lifelines = [e for e in svg.iter(f"{SVG}line") if e.get("class") == "lifeline"]
    assert len(lifelines) == 3
    # One arrow per message, in order.
    groups = arrows_of(svg)
    assert [int(g.get("data-idx")) for g in groups] == list(range(len(TITLES)))
    labels = [next(t for t in g.iter(f"{SVG}text") if t.get("class") == "label").text
              for g in groups]
    assert [label.split(" ")[0] if label[0].isalpha() else " ".join(label.split(" ")[:2])
            for label in labels] == TITLES
    assert "CSeq 2 INVITE" in ET.tostring(groups[8], encoding="unicode")
    # SDP badges: INVITE/200 carry them, the hold re-INVITE says sendonly, its 200 recvonly.
    badges = {}
    for i, g in enumerate(groups):
        for b in g.iter(f"{SVG}g"):
            if "badge" in (b.get("class") or ""):
                badges[i] = next(b.iter(f"{SVG}text")).text
    assert badges == {0: "sendrecv", 2: "sendrecv", 5: "sendrecv", 6: "sendrecv",
                      8: "sendonly", 9: "recvonly"}
    # Colours per class.
    classes = [g.get("class").split()[1] for g in groups]
    assert classes[:4] == ["req", "s1xx", "req", "s1xx"] and classes[5] == "s2xx"
    # The side panel's data: every message in full.
    payload = re.search(r'<script type="application/json" id="sip-messages">(.*?)</script>',
                        page, re.S).group(1)
    msgs = json.loads(payload)
    assert len(msgs) == len(TITLES)
    assert msgs[8]["sdp"]["direction"] == "sendonly"
    assert msgs[0]["text"] == FLOW[0][2].decode()
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page


def test_ladder_escapes_hostile_content(tmp_path: Path) -> None:
    evil = message("INVITE sip:bob@a.lab SIP/2.0", [VA], "1 INVITE",
                   call_id="x</script><script>alert(1)</script>",
                   extra='Subject: <b>"&amp;</svg>')
    alice, proxy = write_traces(tmp_path, flow=[(ALICE, PROXY, evil)])
    trace = Trace.load([str(alice), str(proxy)], lambda w: None)
    page = render_html(trace, trace.calls(), "<evil>", ["a"])
    check_html(page)
    assert "<script>alert" not in page
    assert page.count("</script>") == 2  # the payload and the code, nothing from the trace


def test_all_calls_page_has_navigation(tmp_path: Path) -> None:
    trace = Trace.load([str(p) for p in write_traces(tmp_path)], lambda w: None)
    page = render_html(trace, trace.calls(), "all", ["x"])
    svgs = check_html(page)
    assert len(svgs) == 2
    assert 'href="#call-1"' in page
    # Indices run across calls so j/k walks the whole page.
    assert [int(g.get("data-idx")) for g in arrows_of(svgs[1])] == [len(TITLES)]


def test_final_status_follows_the_authenticated_retry(tmp_path: Path) -> None:
    """A 407 challenge and the retry with credentials are one call attempt."""
    challenge = [
        (ALICE, PROXY, message("INVITE sip:bob@a.lab SIP/2.0", [VA + "c"], "1 INVITE",
                               body=sdp("sendrecv"), contact=ALICE_URI)),
        (PROXY, ALICE, message("SIP/2.0 407 Proxy Authentication Required", [VA + "c"],
                               "1 INVITE", to_tag="px")),
        (ALICE, PROXY, message("ACK sip:bob@a.lab SIP/2.0", [VA + "c"], "1 ACK",
                               to_tag="px")),
    ]
    # The retry is FLOW's INVITE with CSeq 2 instead of 1 (and the answers to match).
    retry = [(s, d, m.replace(b"CSeq: 1 INVITE", b"CSeq: 2 INVITE")) for s, d, m in FLOW[:7]]
    trace = Trace.load([str(p) for p in write_traces(tmp_path, challenge + retry)],
                       lambda w: None)
    assert trace.calls()[0].final_status == "200 OK"
