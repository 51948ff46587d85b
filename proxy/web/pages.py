# -*- test-case-name: tests.proxy.test_web_status -*-
"""The twisted.web resources of the status server.

``/``               the status page (registrations, transactions, calls), self-contained
``/panels``         the page's tables alone: what its script fetches every few seconds
``/status.json``    the same data as JSON
``/metrics``        Prometheus text format
``/calls/ID.html``  the ladder diagram of one Call-ID (`sipcore.trace.ladder`)

The page is rendered here, on the server, in one place: the refresh swaps in the
server's HTML rather than rebuilding it in JavaScript, so there is one renderer and
one escaping rule (`html.escape` on every SIP-derived string). Pages carry a strict
Content-Security-Policy: nothing is loaded from anywhere, only this origin is fetched.
"""

from __future__ import annotations

import json
import time
from html import escape
from typing import Any
from urllib.parse import quote

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from proxy.web.status import StatusObserver
from sipcore.trace.ladder import render_html
from sipcore.trace.reader import Trace

log = Logger(namespace="proxy.web")

REFRESH_SECONDS = 3
RECENT_SHOWN = 100
HTML = b"text/html; charset=utf-8"
CSP = (
    b"default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
    b"connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
    b"frame-ancestors 'none'"
)


def _esc(text: object) -> str:
    return escape(str(text), quote=True)


def call_href(call_id: str) -> str:
    """``/calls/<Call-ID, percent-encoded>.html`` (Call-IDs hold '@', '/', '%' ...)."""
    return "/calls/" + quote(call_id, safe="") + ".html"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def fmt_clock(epoch: float | None) -> str:
    if epoch is None:
        return "—"
    return time.strftime("%H:%M:%S", time.localtime(epoch))


def fmt_date(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(epoch))


def _headers(request: Any, content_type: bytes) -> None:
    request.setHeader(b"Content-Type", content_type)
    request.setHeader(b"Cache-Control", b"no-store")
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    if content_type == HTML:
        request.setHeader(b"Content-Security-Policy", CSP)
        request.setHeader(b"Referrer-Policy", b"no-referrer")


# -- the status page ----------------------------------------------------------------------


def _badge(kind: str, text: str | None = None) -> str:
    return f'<span class="badge b-{_esc(kind)}">{_esc(text if text is not None else kind)}</span>'


def _status_badge(status: int | None, reason: str) -> str:
    if status is None:
        return _badge("none", "—")
    cls = "s2xx" if status < 300 else "s3xx" if status < 400 else "sErr"
    return _badge(cls, f"{status} {reason}".strip())


def _call_link(call_id: str) -> str:
    return (f'<a class="callid" href="{_esc(call_href(call_id))}" '
            f'title="ladder diagram of {_esc(call_id)}">{_esc(call_id)}</a>')


def _party(short: str, uri: str) -> str:
    return f'<code title="{_esc(uri)}">{_esc(short)}</code>'


def _cards(snap: dict[str, Any]) -> str:
    regs = snap.get("registrations") or {}
    calls = snap["calls"]
    server = snap["server"]
    items = [
        ("Registered AORs", regs.get("aors", "—")),
        ("Contacts", regs.get("bindings", "—") if not regs.get("truncated") else "—"),
        ("Calls in progress", len(calls["active"])),
        ("Transactions", snap["transactions"]["total"]),
        ("SIP messages", server["messages_seen"]),
        ("Parse errors", server["parse_errors"]),
    ]
    cells = "".join(
        f'<div class="card"><b>{_esc(v)}</b><span>{_esc(k)}</span></div>' for k, v in items
    )
    return f'<div class="cards">{cells}</div>'


def _registrations(regs: dict[str, Any] | None) -> str:
    head = '<section id="registrations"><h2>Registrations</h2>'
    if regs is None:
        return head + '<p class="empty">This server keeps no registrations.</p></section>'
    if regs.get("error"):
        return head + (f'<p class="error">Location service unavailable: '
                       f'{_esc(regs["error"])}</p></section>')
    if not regs["shown"]:
        return head + '<p class="empty">Nobody is registered.</p></section>'
    rows = []
    for item in regs["shown"]:
        contacts = item["contacts"] or [None]
        for i, c in enumerate(contacts):
            aor = (f'<td rowspan="{len(contacts)}" class="aor"><code>{_esc(item["aor"])}'
                   f'</code></td>') if i == 0 else ""
            if c is None:
                rows.append(f"<tr>{aor}<td colspan=5 class='muted'>expired</td></tr>")
                continue
            # `received` is only stored when it differs from the Contact (NAT, flows).
            source = (f'<code>{_esc(c["source"])}</code>' if c["source"]
                      else '<span class="muted">as Contact</span>')
            rows.append(
                f"<tr>{aor}<td><code>{_esc(c['contact'])}</code></td>"
                f'<td class="num" title="{_esc(c["expires_in"])} s">'
                f"{_esc(fmt_duration(c['expires_in']))}</td>"
                f'<td class="num">{_esc(c["q"])}</td>'
                f"<td>{_esc(c['user_agent'] or '—')}</td><td>{source}</td></tr>"
            )
    more = (f'<p class="muted">Showing {len(regs["shown"])} of {regs["aors"]} AORs.</p>'
            if regs["truncated"] else "")
    return (
        head + '<table><thead><tr><th>AOR</th><th>Contact</th><th>Expires in</th>'
        '<th>q</th><th>User agent</th><th>Source</th></tr></thead><tbody>'
        + "".join(rows) + "</tbody></table>" + more + "</section>"
    )


def _active_calls(calls: list[dict[str, Any]]) -> str:
    head = '<section id="active-calls"><h2>Calls in progress</h2>'
    if not calls:
        return head + '<p class="empty">No call in progress.</p></section>'
    rows = "".join(
        f"<tr><td>{_call_link(c['call_id'])}</td>"
        f"<td>{_party(c['from'], c['from_uri'])} → {_party(c['to'], c['to_uri'])}</td>"
        f"<td>{_badge(c['state'])}</td>"
        f'<td class="num" title="{_esc(fmt_date(c["started"]))}">{fmt_clock(c["started"])}</td>'
        f'<td class="num">{_esc(fmt_duration(c["duration"]))}</td></tr>'
        for c in calls
    )
    return (head + "<table><thead><tr><th>Call-ID</th><th>From → To</th><th>State</th>"
            "<th>Started</th><th>Duration</th></tr></thead><tbody>" + rows
            + "</tbody></table></section>")


def _recent_calls(calls: list[dict[str, Any]]) -> str:
    head = '<section id="recent-calls"><h2>Recent calls</h2>'
    if not calls:
        return head + '<p class="empty">No call has ended yet.</p></section>'
    shown = calls[:RECENT_SHOWN]
    rows = "".join(
        f"<tr><td>{_call_link(c['call_id'])}</td>"
        f"<td>{_party(c['from'], c['from_uri'])}</td><td>{_party(c['to'], c['to_uri'])}</td>"
        f'<td class="num" title="{_esc(fmt_date(c["started"]))}">{fmt_clock(c["started"])}</td>'
        f"<td>{_status_badge(c['status'], c['reason'])} {_badge(c['outcome'])}</td>"
        f'<td class="num" title="talk time {_esc(fmt_duration(c["talk_time"]))}">'
        f"{_esc(fmt_duration(c['duration']))}</td></tr>"
        for c in shown
    )
    return (head + "<table><thead><tr><th>Call-ID</th><th>From</th><th>To</th>"
            "<th>Started</th><th>Final status</th><th>Duration</th></tr></thead><tbody>"
            + rows + "</tbody></table></section>")


def _transactions(tx: dict[str, Any]) -> str:
    head = '<section id="transactions"><h2>Transactions</h2>'
    if not tx["by_kind_state"]:
        return head + '<p class="empty">No live transaction.</p></section>'
    rows = "".join(
        f"<tr><td>{_esc(t['kind'].replace('_', ' '))}</td>"
        f"<td>{_badge('tx', t['state'])}</td><td class='num'>{_esc(t['count'])}</td></tr>"
        for t in tx["by_kind_state"]
    )
    return (head + "<table class='narrow'><thead><tr><th>Kind</th><th>State</th>"
            "<th>Count</th></tr></thead><tbody>" + rows + "</tbody></table></section>")


def render_panels(snap: dict[str, Any]) -> str:
    """The refreshable part of the page."""
    return "\n".join([
        _cards(snap),
        _registrations(snap.get("registrations")),
        _active_calls(snap["calls"]["active"]),
        _recent_calls(snap["calls"]["recent"]),
        _transactions(snap["transactions"]),
    ])


def render_page(snap: dict[str, Any]) -> str:
    server = snap["server"]
    title = f"sipcalling · {server['label'] or server['role'] or 'SIP server'}"
    subtitle = (f"SIP on {server['sip']} · pid {server['pid']} · up "
                f"{fmt_duration(server['uptime'])} · since {fmt_date(server['started'])}")
    return _PAGE.format(
        title=_esc(title), subtitle=_esc(subtitle), css=_CSS, js=_JS,
        panels=render_panels(snap), refresh=REFRESH_SECONDS,
    )


def render_not_found(what: str) -> str:
    return _NOT_FOUND.format(css=_CSS, what=_esc(what))


# -- resources ------------------------------------------------------------------------------


def _respond(request: Any, d: defer.Deferred[Any], content_type: bytes) -> object:
    """Finish `request` with the bytes `d` produces, unless the client went away."""
    gone: list[bool] = []
    request.notifyFinish().addErrback(lambda _: gone.append(True))

    def write(body: bytes) -> None:
        if gone:
            return
        _headers(request, content_type)
        request.write(body)
        request.finish()

    def fail(failure: Failure) -> None:
        log.failure("status page failed", failure)
        if gone:
            return
        request.setResponseCode(500)
        _headers(request, b"text/plain; charset=utf-8")
        request.write(b"internal error (see the server log)\n")
        request.finish()

    d.addCallbacks(write, fail)
    return NOT_DONE_YET


def _registrations_or_error(observer: StatusObserver) -> defer.Deferred[dict[str, Any] | None]:
    if observer.location is None:
        return defer.succeed(None)
    d = observer.registrations()
    # A dead store (redis down) must not take the page with it: show the error.
    d.addErrback(lambda f: {"error": f.getErrorMessage().splitlines()[0][:200] or "error"})
    return d


class _Leaf(Resource):
    isLeaf = True

    def __init__(self, observer: StatusObserver) -> None:
        super().__init__()
        self.observer = observer

    def render_GET(self, request: Any) -> object:  # noqa: N802 - twisted.web's name
        if request.postpath:
            return NotFound().render(request)
        return self.get(request)

    def get(self, request: Any) -> object:
        raise NotImplementedError

    def snapshot(self) -> defer.Deferred[dict[str, Any]]:
        d = _registrations_or_error(self.observer)
        d.addCallback(self.observer.snapshot)
        return d


class StatusPage(_Leaf):
    def get(self, request: Any) -> object:
        d = self.snapshot()
        d.addCallback(lambda snap: render_page(snap).encode("utf-8"))
        return _respond(request, d, HTML)


class Panels(_Leaf):
    def get(self, request: Any) -> object:
        d = self.snapshot()
        d.addCallback(lambda snap: render_panels(snap).encode("utf-8"))
        return _respond(request, d, HTML)


class StatusJson(_Leaf):
    def get(self, request: Any) -> object:
        d = self.snapshot()
        d.addCallback(lambda snap: json.dumps(snap, indent=1).encode("utf-8") + b"\n")
        return _respond(request, d, b"application/json; charset=utf-8")


class Metrics(_Leaf):
    def __init__(self, observer: StatusObserver, registry: CollectorRegistry) -> None:
        super().__init__(observer)
        self.registry = registry

    def get(self, request: Any) -> object:
        d = self.observer.refresh_registration_counts()
        d.addCallback(lambda _: generate_latest(self.registry))
        return _respond(request, d, CONTENT_TYPE_LATEST.encode("ascii"))


class Ladder(_Leaf):
    """``/calls/<Call-ID>.html``."""

    def render_GET(self, request: Any) -> object:  # noqa: N802
        if len(request.postpath) != 1:
            return NotFound().render(request)
        name = request.postpath[0]
        if not name.endswith(b".html") or len(name) <= 5:
            return NotFound().render(request)
        try:
            call_id = name[:-5].decode("utf-8")
        except UnicodeDecodeError:
            return NotFound().render(request)
        html = self.render_ladder(call_id)
        if html is None:
            return NotFound(f"Call-ID {call_id} (no message of it is in the buffer)"
                            ).render(request)
        _headers(request, HTML)
        return html.encode("utf-8")

    def render_ladder(self, call_id: str) -> str | None:
        records = self.observer.records_for(call_id)
        if not records:
            return None
        trace = Trace(records)
        calls = [c for c in trace.calls() if call_id in c.call_ids] or trace.calls()
        source = f"{self.observer.label or self.observer.role} (live buffer)"
        html = render_html(trace, calls, f"Call {call_id}", [source])
        # A way back to the status page, above the ladder's own title.
        return html.replace(
            '<div class="brand">',
            '<div class="brand"><a href="/" style="font-size:12.5px">← status page</a>', 1,
        )


class NotFound(Resource):
    isLeaf = True

    def __init__(self, what: str = "this page") -> None:
        super().__init__()
        self.what = what

    def render(self, request: Any) -> bytes:
        request.setResponseCode(404)
        _headers(request, HTML)
        what = self.what
        if what == "this page":
            segments = [*request.prepath, *request.postpath]
            what = "/" + b"/".join(segments).decode("utf-8", "replace")
        return render_not_found(what).encode("utf-8")


class Root(Resource):
    def __init__(self, observer: StatusObserver, registry: CollectorRegistry) -> None:
        super().__init__()
        self.putChild(b"", StatusPage(observer))
        self.putChild(b"panels", Panels(observer))
        self.putChild(b"status.json", StatusJson(observer))
        self.putChild(b"metrics", Metrics(observer, registry))
        self.putChild(b"calls", Ladder(observer))

    def getChild(self, path: bytes, request: Any) -> Resource:  # noqa: N802
        return NotFound()


def build_root(observer: StatusObserver, registry: CollectorRegistry) -> Resource:
    return Root(observer, registry)


# -- markup --------------------------------------------------------------------------------

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<header class="top">
  <div class="brand"><h1>{title}</h1><p>{subtitle}</p></div>
  <nav class="tools">
    <span id="live" class="live" title="refreshes every {refresh} s">live</span>
    <button id="pause" type="button">Pause</button>
    <a href="/status.json">status.json</a>
    <a href="/metrics">metrics</a>
  </nav>
</header>
<main id="panels" data-refresh="{refresh}">
{panels}
</main>
<noscript><p class="muted wrap">Reload the page to refresh it.</p></noscript>
<script>{js}</script>
</body>
</html>
"""

_NOT_FOUND = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Not found · sipcalling</title><style>{css}</style></head>
<body>
<header class="top"><div class="brand"><h1>Not found</h1>
<p>404 · nothing here for <code>{what}</code></p></div></header>
<main><p><a href="/">Back to the status page</a></p></main>
</body>
</html>
"""

_CSS = """
:root { --bg: #f7f8fa; --fg: #1d2330; --muted: #667085; --line: #d0d5dd; --card: #fff;
  --blue: #2563eb; --green: #15803d; --amber: #b45309; --red: #c2410c; --grey: #667085;
  --mono: ui-monospace, "SF Mono", SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace;
  --sans: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
@media (prefers-color-scheme: dark) {
  :root { --bg: #12151b; --fg: #e6e8ec; --muted: #98a2b3; --line: #344054; --card: #1a1f27;
    --blue: #60a5fa; --green: #4ade80; --amber: #fbbf24; --red: #fb923c; --grey: #98a2b3; } }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg); font: 14px/1.45 var(--sans); }
header.top { display: flex; flex-wrap: wrap; align-items: center; justify-content: space-between;
  gap: 8px 24px; padding: 10px 24px; background: var(--card); border-bottom: 1px solid var(--line);
  position: sticky; top: 0; z-index: 1; }
.brand h1 { font-size: 17px; margin: 0; }
.brand p { margin: 0; color: var(--muted); font-size: 12.5px; }
.tools { display: flex; gap: 14px; align-items: center; font-size: 13px; }
.tools a { color: var(--blue); text-decoration: none; }
.tools a:hover { text-decoration: underline; }
.tools button { font: 12.5px var(--sans); border: 1px solid var(--line); background: var(--bg);
  color: var(--fg); border-radius: 6px; padding: 2px 10px; cursor: pointer; }
.live { font-size: 12.5px; color: var(--green); } .live::before { content: "● "; }
.live.paused { color: var(--muted); } .live.down { color: var(--red); }
main { padding: 8px 24px 40px; max-width: 1400px; }
.wrap { padding: 0 24px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 12px;
  margin: 16px 0 8px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  padding: 10px 14px; }
.card b { display: block; font: 600 22px var(--mono); }
.card span { color: var(--muted); font-size: 12.5px; }
section { margin-top: 22px; } h2 { font-size: 15px; margin: 0 0 8px; }
table { width: 100%; border-collapse: separate; border-spacing: 0; background: var(--card);
  border: 1px solid var(--line); border-radius: 8px; overflow: hidden; }
table.narrow { width: auto; min-width: 420px; }
th, td { text-align: left; padding: 6px 12px; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { font-size: 12px; font-weight: 600; color: var(--muted); text-transform: uppercase;
  letter-spacing: .03em; background: var(--bg); }
tbody tr:last-child td { border-bottom: 0; } tbody tr:hover td { background: rgba(59,130,246,.05); }
td.aor { background: var(--card); border-right: 1px solid var(--line); }
td.num { font-family: var(--mono); font-size: 12.5px; white-space: nowrap; }
code, a.callid { font: 12.5px var(--mono); word-break: break-all; }
a.callid { color: var(--blue); text-decoration: none; }
a.callid:hover { text-decoration: underline; }
.muted, .empty { color: var(--muted); } .empty { margin: 4px 0; }
.error { color: var(--red); }
.badge { display: inline-block; font: 600 11px var(--mono); padding: 1px 8px; border-radius: 10px;
  border: 1px solid currentColor; white-space: nowrap; }
.b-trying, .b-tx, .b-none, .b-cancelled, .b-timeout { color: var(--grey); }
.b-ringing, .b-busy, .b-declined, .b-s3xx, .b-redirected { color: var(--amber); }
.b-connected, .b-answered, .b-s2xx { color: var(--green); }
.b-cancelling, .b-sErr, .b-failed, .b-no_answer, .b-not_found { color: var(--red); }
"""

_JS = """
(function () {
  'use strict';
  var main = document.getElementById('panels');
  var live = document.getElementById('live');
  var button = document.getElementById('pause');
  var every = 1000 * (+main.getAttribute('data-refresh') || 3);
  var paused = false;
  function mark(cls, text) {
    live.className = 'live' + (cls ? ' ' + cls : '');
    live.textContent = text;
  }
  button.addEventListener('click', function () {
    paused = !paused;
    button.textContent = paused ? 'Resume' : 'Pause';
    mark(paused ? 'paused' : '', paused ? 'paused' : 'live');
  });
  function refresh() {
    // Leave the page alone while it is hidden or somebody is selecting text in it.
    if (paused || document.hidden || String(window.getSelection()).length) return;
    fetch('/panels', {cache: 'no-store'}).then(function (r) {
      if (!r.ok) throw new Error('HTTP ' + r.status);
      return r.text();
    }).then(function (html) {
      main.innerHTML = html;  // server-rendered, every SIP string already escaped
      mark('', 'live · ' + new Date().toLocaleTimeString());
    }).catch(function () { mark('down', 'server not answering'); });
  }
  setInterval(refresh, every);
})();
"""
