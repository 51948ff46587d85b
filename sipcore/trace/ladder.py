"""Ladder diagrams: one self-contained HTML page (inline SVG, CSS and a little JS).

Each call gets a section with one lane per host (``host:port``, labelled with the
process or user name when known), one horizontal arrow per message in time order,
wall-clock and relative times on the left, and SDP direction badges so hold and
resume stand out. Clicking (or pressing Enter on) an arrow shows the whole message in
the side panel; j/k or the arrow keys walk through the messages.

The page loads nothing from the network. The SVG is well-formed XML on its own, and
all text from the trace goes through `html.escape`; the messages for the panel are
embedded as JSON with ``<`` escaped, so no trace content can end the script element.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import Any

from sipcore.message import Request
from sipcore.trace.reader import Arrow, Call, Trace

# Geometry (px). Labels use a monospace font so their width can be computed here.
TIME_W = 150
ROW_H = 50
TOP = 22
MIN_LANE_W = 230
MAX_LANE_W = 380
CHAR_W = 7.3  # 12px monospace
BADGE_CHAR_W = 6.2  # 10.5px monospace


def _esc(text: object) -> str:
    return escape(str(text), quote=True)


def _clock(ts_us: int) -> str:
    return datetime.fromtimestamp(ts_us / 1e6, UTC).strftime("%H:%M:%S.%f")[:-3]


def _iso(ts_us: int | None) -> str | None:
    if ts_us is None:
        return None
    seconds, micros = divmod(ts_us, 1_000_000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S") + f".{micros:06d} UTC"


def _relative(us: int) -> str:
    return f"+{us / 1e6:.3f} s"


def _short_uri(arrow: Arrow) -> str:
    msg = arrow.message
    if not isinstance(msg, Request):
        return ""
    uri = msg.uri
    user, host = getattr(uri, "user", None), getattr(uri, "host", None)
    if host is None:
        return str(uri)[:40]
    port = getattr(uri, "port", None)
    text = f"{user}@{host}" if user else host
    return f"{text}:{port}" if port and not user else text


def arrow_label(arrow: Arrow) -> str:
    """The text above an arrow: ``INVITE bob@b.lab`` or ``180 Ringing``."""
    if arrow.is_request:
        target = _short_uri(arrow)
        return f"{arrow.title} {target}" if target else arrow.title
    return arrow.title


def arrow_sublabel(arrow: Arrow) -> str:
    cseq = arrow.cseq
    parts = [f"CSeq {cseq[0]} {cseq[1]}" if cseq else "CSeq ?"]
    if arrow.retransmission:
        parts.append("retransmission")
    if arrow.missing_receive:
        parts.append("not received")
    return " · ".join(parts)


@dataclass
class _Lane:
    key: str
    label: str
    x: float


def _lanes(trace: Trace, call: Call) -> list[str]:
    order: list[str] = []
    for a in call.arrows:
        for lane in (a.src, a.dst):
            if lane not in order:
                order.append(lane)
    return order


def _lane_width(call: Call) -> float:
    longest = max((len(arrow_label(a)) + (len(a.sdp.direction) + 4 if a.sdp else 0)
                   for a in call.arrows), default=10)
    return min(MAX_LANE_W, max(MIN_LANE_W, longest * CHAR_W + 40))


def _render_call(
    trace: Trace, call: Call, number: int, first_index: int
) -> tuple[str, list[dict[str, Any]]]:
    keys = _lanes(trace, call)
    lane_w = _lane_width(call)
    lanes = {
        key: _Lane(key, trace.labels.get(key, ""), TIME_W + lane_w * (i + 0.5))
        for i, key in enumerate(keys)
    }
    width = int(TIME_W + lane_w * len(keys))
    height = TOP + ROW_H * len(call.arrows) + 16
    start = call.start_us
    out: list[str] = []
    messages: list[dict[str, Any]] = []

    status = call.final_status
    status_class = "s2xx" if status.startswith("2") else "sErr" if status[:1] in "3456" else "s1xx"
    out.append(f'<section class="call" id="call-{number}">')
    out.append('<header class="call-head">')
    out.append(f'<h2>{_esc(call.summary)}</h2>')
    if status:
        out.append(f'<span class="status {status_class}">{_esc(status)}</span>')
    out.append(
        f'<span class="meta">{len(call.arrows)} messages · started {_esc(_iso(start))}</span>'
    )
    ids = " ".join(f"<code>{_esc(cid)}</code>" for cid in call.call_ids)
    label = "Call-IDs" if len(call.call_ids) > 1 else "Call-ID"
    out.append(f'<div class="callid">{label} {ids}</div>')
    out.append("</header>")

    # Lane headers are HTML (sticky while the section scrolls), the ladder is SVG;
    # both use the same x coordinates inside one fixed-width box.
    out.append(f'<div class="ladder" style="width:{width}px">')
    out.append('<div class="lanes">')
    out.append(f'<div class="lane-head time-head" style="left:0;width:{TIME_W - 12}px">'
               '<b>time (UTC)</b><span>since start</span></div>')
    for lane in lanes.values():
        name = lane.label or "\u00a0"
        traced = " traced" if lane.key in trace.traced else ""
        out.append(
            f'<div class="lane-head{traced}" style="left:{lane.x - lane_w / 2 + 8:.0f}px;'
            f'width:{lane_w - 16:.0f}px" title="{_esc(trace.lane_label(lane.key))}">'
            f"<b>{_esc(name)}</b><span>{_esc(lane.key)}</span></div>"
        )
    out.append("</div>")
    out.append(
        f'<svg xmlns="http://www.w3.org/2000/svg" class="flow" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{_esc("Ladder diagram: " + call.summary)}">'
    )
    for lane in lanes.values():
        out.append(
            f'<line class="lifeline" x1="{lane.x:.1f}" y1="0" x2="{lane.x:.1f}" y2="{height}"/>'
        )
    previous = start
    for i, a in enumerate(call.arrows):
        idx = first_index + i
        y = TOP + ROW_H * i + 28
        out.append(_render_arrow(a, idx, y, width, lanes, start, previous, trace))
        previous = a.ts_us
        messages.append(_message_data(a, trace, number))
    out.append("</svg></div></section>")
    return "\n".join(out), messages


def _render_arrow(
    a: Arrow, idx: int, y: float, width: int, lanes: dict[str, _Lane],
    start: int, previous: int, trace: Trace,
) -> str:
    x1, x2 = lanes[a.src].x, lanes[a.dst].x
    classes = ["msg", a.css_class]
    if a.retransmission:
        classes.append("retx")
    if a.missing_receive:
        classes.append("lost")
    label = arrow_label(a)
    sub = arrow_sublabel(a)
    tip = (f"{a.start_line}\n{trace.lane_label(a.src)} → {trace.lane_label(a.dst)}"
           f"\n{a.transport} · {sub}")
    parts = [
        f'<g class="{" ".join(classes)}" data-idx="{idx}" tabindex="0">',
        f"<title>{_esc(tip)}</title>",
        f'<rect class="row" x="0" y="{y - 30}" width="{width}" height="{ROW_H}"/>',
        f'<text class="clock" x="10" y="{y - 4}">{_esc(_clock(a.ts_us))}</text>',
        f'<text class="rel" x="10" y="{y + 12}">{_esc(_relative(a.ts_us - start))}'
        + (f" (Δ {(a.ts_us - previous) / 1000:.1f} ms)" if a.ts_us != previous else "")
        + "</text>",
    ]
    if x1 == x2:
        # A message a host sends to itself: a small loop to the right of its lane.
        parts.append(
            f'<path class="line" d="M{x1:.1f} {y - 6} h44 v14 h-38" fill="none"/>'
            f'<path class="head" d="M{x1 + 1:.1f} {y + 8} l9 -4.5 v9 z"/>'
        )
        cx, anchor = x1 + 52, "start"
        label_x = cx
    else:
        direction = 1 if x2 > x1 else -1
        tip_x = x2 - direction * 2
        parts.append(
            f'<line class="hit" x1="{x1:.1f}" y1="{y}" x2="{x2:.1f}" y2="{y}"/>'
            f'<line class="line" x1="{x1:.1f}" y1="{y}" x2="{tip_x - direction * 8:.1f}" y2="{y}"/>'
            f'<path class="head" d="M{tip_x:.1f} {y} l{-direction * 11} -5 v10 z"/>'
        )
        cx, anchor = (x1 + x2) / 2, "middle"
        label_x = cx
    badge = a.sdp
    badge_text = ""
    if badge is not None:
        badge_text = badge.direction + (" c=0.0.0.0" if badge.old_hold else "")
    label_w = len(label) * CHAR_W
    badge_w = len(badge_text) * BADGE_CHAR_W + 12 if badge_text else 0
    if anchor == "middle" and badge_text:
        # Centre label and badge together over the arrow.
        label_x = cx - (badge_w + 6) / 2
    parts.append(
        f'<text class="label" x="{label_x:.1f}" y="{y - 8}" text-anchor="{anchor}">'
        f"{_esc(label)}</text>"
    )
    if badge_text and badge is not None:
        left = (label_x + label_w / 2 + 6) if anchor == "middle" else (label_x + label_w + 6)
        kind = badge.direction.split("/")[0] if "/" not in badge.direction else "mixed"
        parts.append(
            f'<g class="badge b-{_esc(kind)}"><rect x="{left:.1f}" y="{y - 22}" '
            f'width="{badge_w:.1f}" height="16" rx="8"/>'
            f'<text x="{left + badge_w / 2:.1f}" y="{y - 10.5}" text-anchor="middle">'
            f"{_esc(badge_text)}</text></g>"
        )
    parts.append(
        f'<text class="sub" x="{cx:.1f}" y="{y + 15}" text-anchor="{anchor}">{_esc(sub)}</text>'
    )
    parts.append("</g>")
    return "".join(parts)


def _message_data(a: Arrow, trace: Trace, number: int) -> dict[str, Any]:
    sdp = a.sdp
    latency = None
    if a.sent_us is not None and a.received_us is not None:
        latency = f"{(a.received_us - a.sent_us) / 1000:.3f} ms"
    cseq = a.cseq
    return {
        "call": number,
        "title": arrow_label(a),
        "cls": a.css_class,
        "from": trace.lane_label(a.src),
        "to": trace.lane_label(a.dst),
        "sent": _iso(a.sent_us),
        "sentBy": a.sender.proc if a.sender else None,
        "recv": _iso(a.received_us),
        "recvBy": a.receiver.proc if a.receiver else None,
        "latency": latency,
        "transport": a.transport,
        "callId": a.call_id,
        "cseq": f"{cseq[0]} {cseq[1]}" if cseq else None,
        "sdp": None if sdp is None else {
            "direction": sdp.direction, "hold": sdp.old_hold, "media": sdp.summary,
        },
        "retx": a.retransmission,
        "lost": a.missing_receive,
        "where": a.record.where,
        "text": a.data.decode("utf-8", "backslashreplace"),
    }


def _nav(calls: list[Call]) -> str:
    rows = []
    for n, call in enumerate(calls):
        status = call.final_status or "—"
        rows.append(
            f'<li><a href="#call-{n}"><span class="when">{_esc(_clock(call.start_us))}</span>'
            f'<span class="what">{_esc(call.summary)}</span>'
            f'<span class="st">{_esc(status)}</span>'
            f'<span class="n">{len(call.arrows)} msg</span></a></li>'
        )
    return f'<nav class="calls"><h2>{len(calls)} calls</h2><ol>{"".join(rows)}</ol></nav>'


def render_html(trace: Trace, calls: list[Call], title: str, sources: list[str]) -> str:
    """The whole page for these calls."""
    sections: list[str] = []
    messages: list[dict[str, Any]] = []
    for n, call in enumerate(calls):
        html, msgs = _render_call(trace, call, n, len(messages))
        sections.append(html)
        messages.extend(msgs)
    payload = json.dumps(messages, ensure_ascii=False).replace("<", "\\u003c")
    total = len(messages)
    nav = _nav(calls) if len(calls) > 1 else ""
    body = "\n".join(sections) if sections else '<p class="empty">No SIP messages.</p>'
    return _PAGE.format(
        title=_esc(title),
        subtitle=_esc(f"{len(calls)} call{'s' * (len(calls) != 1)} · {total} messages · "
                      f"from {', '.join(sources)}"),
        css=_CSS,
        js=_JS,
        nav=nav,
        body=body,
        payload=payload,
    )


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="sipcalling-trace">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<header class="top">
  <div class="brand"><h1>{title}</h1><p>{subtitle}</p></div>
  <ul class="legend">
    <li><i class="sw req"></i>request</li><li><i class="sw s1xx"></i>1xx provisional</li>
    <li><i class="sw s2xx"></i>2xx success</li><li><i class="sw sErr"></i>3xx–6xx</li>
    <li><i class="sw dash"></i>retransmission</li>
    <li><span class="pill b-sendonly">sendonly</span> SDP direction</li>
    <li class="keys"><kbd>j</kbd>/<kbd>k</kbd> next/previous</li>
  </ul>
</header>
<main id="flows">
{nav}
{body}
</main>
<aside id="panel" aria-live="polite">
  <div class="placeholder"><h2>Message</h2>
  <p>Click an arrow to see the whole SIP message here.</p>
  <p>The address bar then links to that message.</p>
  <p>Walk through the call with <kbd>j</kbd> and <kbd>k</kbd>
  (or <kbd>↓</kbd> <kbd>↑</kbd>).</p></div>
</aside>
<script type="application/json" id="sip-messages">{payload}</script>
<script>{js}</script>
</body>
</html>
"""

_CSS = """
:root {
  --bg: #f7f8fa; --fg: #1d2330; --muted: #667085; --line: #d0d5dd; --card: #ffffff;
  --hover: rgba(59,130,246,.07); --sel: rgba(59,130,246,.16);
  --req: #2563eb; --s1xx: #7c8594; --s2xx: #15803d; --sErr: #c2410c;
  --mono: ui-monospace, "SF Mono", SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace;
  --sans: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
}
@media (prefers-color-scheme: dark) {
  :root { --bg: #12151b; --fg: #e6e8ec; --muted: #98a2b3; --line: #344054; --card: #1a1f27;
    --hover: rgba(96,165,250,.09); --sel: rgba(96,165,250,.2);
    --req: #60a5fa; --s1xx: #98a2b3; --s2xx: #4ade80; --sErr: #fb923c; }
}
* { box-sizing: border-box; }
html, body { margin: 0; height: 100%; }
body { display: grid; grid-template-columns: minmax(0, 1fr) minmax(340px, 38%);
  grid-template-rows: auto minmax(0, 1fr); background: var(--bg); color: var(--fg);
  font: 14px/1.45 var(--sans); }
header.top { grid-column: 1 / -1; display: flex; flex-wrap: wrap; align-items: center;
  justify-content: space-between; gap: 8px 24px; padding: 10px 20px;
  border-bottom: 1px solid var(--line); background: var(--card); }
.brand h1 { font-size: 17px; margin: 0; }
.brand p { margin: 0; color: var(--muted); font-size: 12.5px; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 16px; list-style: none; margin: 0; padding: 0;
  font-size: 12.5px; color: var(--muted); align-items: center; }
.sw { display: inline-block; width: 22px; height: 0; border-top: 3px solid; margin-right: 6px;
  vertical-align: middle; }
.sw.req { border-color: var(--req); } .sw.s1xx { border-color: var(--s1xx); }
.sw.s2xx { border-color: var(--s2xx); } .sw.sErr { border-color: var(--sErr); }
.sw.dash { border-top-style: dashed; border-color: var(--muted); }
kbd { font: 11px var(--mono); border: 1px solid var(--line); border-bottom-width: 2px;
  border-radius: 4px; padding: 0 4px; background: var(--card); }
main { overflow: auto; padding: 0 20px 40px; }
aside { overflow: auto; border-left: 1px solid var(--line); background: var(--card);
  padding: 16px 18px; }
nav.calls { margin: 16px 0 8px; } nav.calls h2 { font-size: 14px; margin: 0 0 6px; }
nav.calls ol { list-style: none; margin: 0; padding: 0; border: 1px solid var(--line);
  border-radius: 8px; background: var(--card); max-height: 240px; overflow: auto; }
nav.calls a { display: grid; grid-template-columns: 100px 1fr auto 60px; gap: 12px;
  padding: 5px 12px; color: inherit; text-decoration: none; border-bottom: 1px solid var(--line); }
nav.calls li:last-child a { border-bottom: 0; } nav.calls a:hover { background: var(--hover); }
nav.calls .when, nav.calls .n { font-family: var(--mono); font-size: 12px; color: var(--muted); }
nav.calls .st { font-weight: 600; }
section.call { margin-top: 22px; }
.call-head { display: flex; flex-wrap: wrap; align-items: baseline; gap: 4px 12px;
  margin-bottom: 8px; }
.call-head h2 { font-size: 16px; margin: 0; }
.call-head .meta { color: var(--muted); font-size: 12.5px; }
.callid { flex-basis: 100%; color: var(--muted); font-size: 12px; }
.callid code { font: 12px var(--mono); color: var(--fg); margin-right: 8px; }
.status { font: 600 12px var(--mono); padding: 1px 8px; border-radius: 10px; color: #fff; }
.status.s2xx { background: var(--s2xx); } .status.sErr { background: var(--sErr); }
.status.s1xx { background: var(--s1xx); }
.ladder { position: relative; background: var(--card); border: 1px solid var(--line);
  border-radius: 8px; }
.lanes { position: sticky; top: 0; z-index: 2; height: 50px; background: var(--card);
  border-bottom: 1px solid var(--line); border-radius: 8px 8px 0 0;
  box-shadow: 0 2px 4px rgba(0,0,0,.04); }
.lane-head { position: absolute; top: 6px; height: 38px; text-align: center; overflow: hidden;
  white-space: nowrap; text-overflow: ellipsis; }
.lane-head b { display: block; font-size: 13px; overflow: hidden; text-overflow: ellipsis; }
.lane-head span { display: block; font: 11.5px var(--mono); color: var(--muted); }
.lane-head.traced b::after { content: " ●"; color: var(--s2xx); font-size: 9px;
  vertical-align: 2px; }
.time-head { text-align: left; padding-left: 10px; }
.time-head b { font-weight: 600; color: var(--muted); font-size: 12px; }
svg.flow { display: block; }
.lifeline { stroke: var(--line); stroke-width: 1.5; stroke-dasharray: 4 4; }
.msg { cursor: pointer; outline: none; }
.msg .row { fill: transparent; }
.msg:hover .row { fill: var(--hover); } .msg.sel .row { fill: var(--sel); }
.msg:focus-visible .row { stroke: var(--req); stroke-width: 1; }
.msg .hit { stroke: transparent; stroke-width: 16; }
.msg .line { stroke-width: 2; stroke: currentColor; }
.msg:hover .line, .msg.sel .line { stroke-width: 3; }
.msg .head { fill: currentColor; }
.msg.req { color: var(--req); } .msg.s1xx { color: var(--s1xx); }
.msg.s2xx { color: var(--s2xx); } .msg.sErr { color: var(--sErr); }
.msg.retx .line { stroke-dasharray: 6 4; } .msg.lost .line { stroke-dasharray: 2 4; }
.msg .label { font: 600 12px var(--mono); fill: currentColor; }
.msg .sub { font: 10.5px var(--mono); fill: var(--muted); }
/* A halo in the background colour keeps labels readable where they cross a lifeline. */
.msg .label, .msg .sub { paint-order: stroke; stroke: var(--card); stroke-width: 4px;
  stroke-linejoin: round; }
.msg:hover .label, .msg:hover .sub, .msg.sel .label, .msg.sel .sub { stroke: none; }
.msg .clock { font: 12px var(--mono); fill: var(--fg); }
.msg .rel { font: 10.5px var(--mono); fill: var(--muted); }
.badge rect { stroke-width: 1.2; } .badge text { font: 600 10.5px var(--mono); }
.badge.b-sendrecv rect { fill: #dcfce7; stroke: #16a34a; } .badge.b-sendrecv text { fill: #166534; }
.badge.b-sendonly rect, .badge.b-recvonly rect { fill: #fef3c7; stroke: #d97706; }
.badge.b-sendonly text, .badge.b-recvonly text { fill: #92400e; }
.badge.b-inactive rect { fill: #fee2e2; stroke: #dc2626; } .badge.b-inactive text { fill: #991b1b; }
.badge.b-mixed rect, .badge[class*="b-SDP"] rect { fill: #ede9fe; stroke: #7c3aed; }
.badge.b-mixed text { fill: #5b21b6; }
.pill { font: 600 10.5px var(--mono); padding: 0 7px; border-radius: 8px; border: 1.2px solid; }
.pill.b-sendonly, .pill.b-recvonly { background: #fef3c7; border-color: #d97706; color: #92400e; }
.pill.b-sendrecv { background: #dcfce7; border-color: #16a34a; color: #166534; }
.pill.b-inactive { background: #fee2e2; border-color: #dc2626; color: #991b1b; }
aside h2 { font-size: 15px; margin: 0 0 8px; }
aside .placeholder { color: var(--muted); }
.panel-title { display: flex; align-items: center; gap: 10px; margin-bottom: 6px; }
.panel-title .kind { font: 600 14px var(--mono); }
.panel-title .kind.req { color: var(--req); } .panel-title .kind.s1xx { color: var(--s1xx); }
.panel-title .kind.s2xx { color: var(--s2xx); } .panel-title .kind.sErr { color: var(--sErr); }
.route { font-size: 13px; margin-bottom: 10px; } .route code { font: 12.5px var(--mono); }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin: 0 0 12px;
  font-size: 12.5px; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; font-family: var(--mono); word-break: break-all; }
pre.sip { font: 12.5px/1.5 var(--mono); background: var(--bg); border: 1px solid var(--line);
  border-radius: 8px; padding: 10px 12px; margin: 0; white-space: pre-wrap;
  word-break: break-all; tab-size: 4; }
pre.sip .sl { font-weight: 700; } pre.sip .hn { color: var(--req); }
pre.sip .body { color: var(--muted); } pre.sip .sdpk { color: var(--s2xx); }
pre.sip mark { background: #fde68a; color: #78350f; border-radius: 3px; padding: 0 2px; }
button.copy { font: 12px var(--sans); border: 1px solid var(--line); background: var(--bg);
  color: var(--fg);
  border-radius: 6px; padding: 2px 10px; cursor: pointer; margin-left: auto; }
.empty { color: var(--muted); margin-top: 40px; }
@media print { body { display: block; } aside, nav.calls, .legend .keys { display: none; }
  main { overflow: visible; } .lanes { position: static; } }
@media (max-width: 900px) { body { grid-template-columns: 1fr; grid-template-rows: auto 1fr 45%; }
  aside { border-left: 0; border-top: 1px solid var(--line); } }
"""

_JS = """
(function () {
  'use strict';
  var msgs = JSON.parse(document.getElementById('sip-messages').textContent);
  var panel = document.getElementById('panel');
  var groups = document.querySelectorAll('g.msg');
  var current = -1;
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }
  // Highlight the message as text nodes only: trace content never becomes markup.
  function renderMessage(text) {
    var pre = el('pre', 'sip');
    var lines = text.split(/\\r?\\n/);
    var inBody = false;
    lines.forEach(function (line, i) {
      if (i === 0) { pre.appendChild(el('span', 'sl', line)); }
      else if (!inBody && line === '') { inBody = true; }
      else if (!inBody) {
        var c = line.indexOf(':');
        if (c > 0 && !/^[ \\t]/.test(line)) {
          pre.appendChild(el('span', 'hn', line.slice(0, c + 1)));
          pre.appendChild(document.createTextNode(line.slice(c + 1)));
        } else { pre.appendChild(document.createTextNode(line)); }
      } else {
        var m = /^a=(sendrecv|sendonly|recvonly|inactive)$/.exec(line);
        var sdp = /^([a-z])=(.*)$/.exec(line);
        if (m) { pre.appendChild(el('mark', null, line)); }
        else if (sdp) {
          pre.appendChild(el('span', 'sdpk', sdp[1] + '='));
          pre.appendChild(el('span', 'body', sdp[2]));
        } else { pre.appendChild(el('span', 'body', line)); }
      }
      if (i < lines.length - 1) pre.appendChild(document.createTextNode('\\n'));
    });
    return pre;
  }
  function fact(dl, name, value) {
    if (value === null || value === undefined || value === '') return;
    dl.appendChild(el('dt', null, name));
    dl.appendChild(el('dd', null, value));
  }
  function show(i) {
    var m = msgs[i];
    panel.textContent = '';
    var head = el('div', 'panel-title');
    head.appendChild(el('span', 'kind ' + m.cls, m.title));
    var copy = el('button', 'copy', 'Copy');
    copy.type = 'button';
    copy.addEventListener('click', function () {
      if (navigator.clipboard) navigator.clipboard.writeText(m.text);
    });
    head.appendChild(copy);
    panel.appendChild(head);
    var route = el('div', 'route');
    route.appendChild(el('code', null, m.from));
    route.appendChild(document.createTextNode('  →  '));
    route.appendChild(el('code', null, m.to));
    panel.appendChild(route);
    var dl = el('dl', 'facts');
    fact(dl, 'Sent', m.sent ? m.sent + (m.sentBy ? '  (' + m.sentBy + ')' : '') :
         'not traced by the sender');
    fact(dl, 'Received', m.recv ? m.recv + (m.recvBy ? '  (' + m.recvBy + ')' : '') :
         (m.lost ? 'not in the receiver\\'s trace' : 'not traced by the receiver'));
    fact(dl, 'Transit', m.latency);
    fact(dl, 'Transport', m.transport);
    fact(dl, 'Call-ID', m.callId);
    fact(dl, 'CSeq', m.cseq);
    if (m.sdp) {
      fact(dl, 'SDP', m.sdp.direction + (m.sdp.hold ? ' (c=0.0.0.0 hold)' : '') +
           ' · ' + m.sdp.media);
    }
    if (m.retx) fact(dl, 'Note', 'retransmission of an earlier identical message');
    fact(dl, 'Trace', m.where);
    panel.appendChild(dl);
    panel.appendChild(renderMessage(m.text));
  }
  function select(i, scroll) {
    if (i < 0 || i >= groups.length) return;
    if (current >= 0) groups[current].classList.remove('sel');
    current = i;
    var g = groups[i];
    g.classList.add('sel');
    show(i);
    if (scroll) {
      g.focus({preventScroll: true});
      // Scroll vertically only, keeping the row clear of the sticky lane headers
      // (scrollIntoView would also scroll sideways: rows are as wide as the ladder).
      var main = document.getElementById('flows');
      var r = g.getBoundingClientRect(), m = main.getBoundingClientRect();
      if (r.top < m.top + 64) main.scrollTop -= m.top + 64 - r.top;
      else if (r.bottom > m.bottom) main.scrollTop += r.bottom - m.bottom + 8;
    }
    // A link to one message (file.html#msg-8) can be shared with the class.
    if (history.replaceState) history.replaceState(null, '', '#msg-' + i);
  }
  var wanted = /^#msg-(\\d+)$/.exec(location.hash);
  if (wanted) select(+wanted[1], true);
  document.getElementById('flows').addEventListener('click', function (e) {
    var g = e.target.closest && e.target.closest('g.msg');
    if (g) select(+g.getAttribute('data-idx'), false);
  });
  document.addEventListener('keydown', function (e) {
    if (e.altKey || e.ctrlKey || e.metaKey) return;
    if (e.key === 'j' || e.key === 'ArrowDown') { select(current + 1, true); e.preventDefault(); }
    else if (e.key === 'k' || e.key === 'ArrowUp') {
      select(Math.max(current - 1, 0), true); e.preventDefault();
    } else if (e.key === 'Enter' && document.activeElement &&
               document.activeElement.matches('g.msg')) {
      select(+document.activeElement.getAttribute('data-idx'), false);
    }
  });
})();
"""
