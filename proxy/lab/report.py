"""The report folder: per experiment a ladder diagram and a pcap (from the trace files,
through sipcore.trace), the RTP statistics, the audio checks, and one index.html that
ties them together; results.json carries the same verdicts for scripts and tests.

Trace checks run here, not during the experiments: the processes flush their trace
files on exit, so the traces are complete only once the lab is down.
"""

from __future__ import annotations

import html
import io
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from proxy.lab.experiments import CheckFailed, ExperimentResult, Step
from sipcore.trace.ladder import render_html
from sipcore.trace.pcap import write_pcap
from sipcore.trace.reader import Call, Trace, TraceFileError

__all__ = ["apply_traces", "write_report"]

#: Columns of the RTP table, in the order a student reads them.
MEDIA_COLUMNS = [
    ("codec", "codec"), ("direction", "direction"), ("packets_sent", "sent"),
    ("packets_received", "received"), ("packets_lost", "lost"), ("loss_fraction", "loss"),
    ("jitter_ms", "jitter ms"), ("rtt_ms", "RTT ms"), ("remote", "sends to"),
]


def _calls_in(trace: Trace, start_us: int, end_us: int) -> list[Call]:
    """The experiment's calls: those starting in its time window, without the phones'
    REGISTERs and the runner's OPTIONS pings (they are not what the experiment shows)."""
    out = []
    for call in trace.calls():
        if not start_us <= call.start_us <= end_us:
            continue
        first = call.first_request
        if first is not None and first.cseq is not None \
                and first.cseq[1] in ("REGISTER", "OPTIONS"):
            continue
        out.append(call)
    return out


def apply_traces(results: list[ExperimentResult], trace_files: list[Path], out: Path,
                 warnings: list[str]) -> None:
    """Render ladders and pcaps into `out` and run each experiment's trace checks."""
    paths = [str(p) for p in trace_files if p.exists()]
    try:
        trace = Trace.load(paths, warnings.append)
    except TraceFileError as err:
        for result in results:
            result.steps.append(Step("SIP trace", False, f"cannot read the traces: {err}"))
        return
    for result in results:
        calls = _calls_in(trace, result.start_us, result.end_us)
        result.sip_messages = sum(len(c.arrows) for c in calls)
        if calls:
            name = f"exp{result.number}-{result.key}"
            # The servers' traces and this experiment's phones' (each experiment has its
            # own phones, so their file names repeat across experiments).
            own = f"exp{result.number}{os.sep}"
            sources = [os.path.relpath(p, out) for p in paths
                       if own in p or os.path.basename(os.path.dirname(p)) == "run"]
            page = render_html(trace, calls, f"Experiment {result.number}: {result.title}",
                               sources)
            (out / f"{name}-ladder.html").write_text(page, encoding="utf-8")
            result.ladder = f"{name}-ladder.html"
            arrows = sorted((a for c in calls for a in c.arrows),
                            key=lambda a: a.sent_us if a.sent_us is not None else a.ts_us)
            buffer = io.BytesIO()
            write_pcap(arrows, buffer)
            (out / f"{name}.pcap").write_bytes(buffer.getvalue())
            result.pcap = f"{name}.pcap"
        for title, check in result.trace_checks:
            try:
                detail = check(trace, calls)
            except CheckFailed as err:
                result.steps.append(Step(f"trace: {title}", False, str(err)))
            except Exception as err:  # noqa: BLE001 - a broken check is a failed check
                result.steps.append(Step(f"trace: {title}", False,
                                         f"{type(err).__name__}: {err}"))
            else:
                result.steps.append(Step(f"trace: {title}", True, detail))


def _e(text: object) -> str:
    return html.escape(str(text))


def _clock(t: float, start: float) -> str:
    return f"+{t - start:6.2f} s"


def _media_table(result: ExperimentResult) -> str:
    if not result.media:
        return "<p class=none>No RTP statistics (no call was talking when asked).</p>"
    head = "".join(f"<th>{_e(label)}</th>" for _, label in MEDIA_COLUMNS)
    rows = []
    for row in result.media:
        cells = []
        for key, _ in MEDIA_COLUMNS:
            value = row.fields.get(key, "")
            if key in ("loss_fraction",) and value:
                try:
                    value = f"{float(value) * 100:.1f} %"
                except ValueError:
                    pass
            elif key in ("jitter_ms", "rtt_ms") and value not in ("", "None"):
                try:
                    value = f"{float(value):.2f}"
                except ValueError:
                    pass
            cells.append(f"<td>{_e(value)}</td>")
        rows.append(f"<tr><td>{_e(row.who)}</td><td>{row.call}</td><td>{_e(row.when)}</td>"
                    + "".join(cells) + "</tr>")
    return (f"<table class=media><tr><th>phone</th><th>call</th><th>when</th>{head}</tr>"
            + "".join(rows) + "</table>")


def _section(result: ExperimentResult) -> str:
    verdict = "PASS" if result.passed else "FAIL"
    steps = []
    for s in result.steps:
        if s.title.startswith("— "):
            steps.append(f"<li class=part>{_e(s.title[2:])}</li>")
            continue
        mark = "✔" if s.ok else "✘"
        steps.append(f"<li class={'ok' if s.ok else 'bad'}>{mark} {_e(s.title)}"
                     + (f" <code>{_e(s.detail)}</code>" if s.detail else "") + "</li>")
    start = result.start_us / 1e6
    transcript = "\n".join(
        f"{_clock(line.t, start)}  {line.who:<20} {'< ' if line.command else '  '}{line.text}"
        for line in sorted(result.transcript, key=lambda x: x.t)
    )
    audio = "".join(
        f"<li class={'ok' if c.ok else 'bad'}>{_e(c.describe())} "
        f"<a href='{_e(c.recording)}'>wav</a></li>" for c in result.audio
    ) or "<li>none</li>"
    exchanges = "".join(
        f"<p>Sent (raw UDP):</p><pre>{_e(req)}</pre><p>Answer:</p><pre>{_e(ans)}</pre>"
        for req, ans in result.exchanges
    )
    notes = "".join(f"<p class=note>{_e(n)}</p>" for n in result.notes)
    if result.ladder:
        ladder = (f"<p><a href='{_e(result.ladder)}'>ladder diagram</a> "
                  f"({result.sip_messages} SIP messages) · "
                  f"<a href='{_e(result.pcap)}'>pcap</a> (Wireshark: Telephony → VoIP Calls)</p>"
                  f"<iframe src='{_e(result.ladder)}' loading=lazy></iframe>")
    else:
        ladder = "<p class=none>No SIP messages were traced in this experiment.</p>"
    return f"""
<section id="exp{result.number}" class="{verdict.lower()}">
<h2>{result.number}. {_e(result.title)} <span class=verdict>{verdict}</span></h2>
<p>{_e(result.what)}</p>
<p class=reason>{_e(result.reason)}</p>
<h3>Steps and observations</h3><ul class=steps>{''.join(steps)}</ul>
{notes}
<h3>RTP statistics (sipclient <code>status</code>)</h3>{_media_table(result)}
<h3>Audio (FFT of the recordings)</h3><ul>{audio}</ul>
{exchanges}
<h3>Ladder diagram and pcap</h3>{ladder}
<details><summary>Console transcript (commands typed are marked &lt;)</summary>
<pre>{_e(transcript)}</pre></details>
</section>"""


_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:72em;padding:0 1em}
h1{margin-bottom:.2em} .sub{color:#555} section{border-top:2px solid #ccc;margin-top:2em}
.verdict{font-size:.8em;padding:.1em .5em;border-radius:.3em;color:#fff}
.pass .verdict{background:#2a7d2a} .fail .verdict{background:#b22}
.reason{font-weight:600} ul.steps{list-style:none;padding-left:.5em}
li.part{font-weight:600;margin-top:.6em} li.ok{color:#1d5e1d} li.bad{color:#a11}
code{background:#f3f3f3;padding:0 .3em;color:#333}
table{border-collapse:collapse} td,th{border:1px solid #ccc;padding:.2em .5em}
iframe{width:100%;height:34em;border:1px solid #ccc} pre{background:#f7f7f7;padding:.6em;
overflow:auto} .note,.none{color:#666;font-style:italic}
table.summary td:first-child{font-weight:600}
"""


def write_report(out: Path, results: list[ExperimentResult], meta: dict[str, Any]) -> Path:
    """Write index.html and results.json into `out`; returns the index path."""
    summary_rows = "".join(
        f"<tr class={'pass' if r.passed else 'fail'}><td><a href='#exp{r.number}'>"
        f"{r.number}. {_e(r.title)}</a></td><td>{'PASS' if r.passed else 'FAIL'}</td>"
        f"<td>{_e(r.reason)}</td></tr>" for r in results
    )
    servers = "".join(f"<li>{_e(k)}: <code>{_e(v)}</code></li>"
                      for k, v in meta.get("servers", {}).items())
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    page = f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>sipcalling lab report</title>
<style>{_STYLE}</style></head><body>
<h1>sipcalling lab report</h1>
<p class=sub>{_e(when)} · {_e(meta.get('mode', ''))} · {meta.get('seconds', 0):.1f} s</p>
<table class=summary><tr><th>experiment</th><th>result</th><th>why</th></tr>
{summary_rows}</table>
<h3>The lab</h3><ul>{servers}</ul>
<p>Trace files, server logs and recordings are in <a href='run/'>run/</a>.</p>
{''.join(_section(r) for r in results)}
</body></html>
"""
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    data = {
        "meta": meta,
        "experiments": [
            {
                "number": r.number, "key": r.key, "title": r.title, "passed": r.passed,
                "reason": r.reason,
                "steps": [{"title": s.title, "ok": s.ok, "detail": s.detail} for s in r.steps],
                "media": [{"phone": m.who, "call": m.call, "when": m.when, **m.fields}
                          for m in r.media],
                "audio": [{"recording": c.recording, "ok": c.ok, "levels_db": c.levels_db,
                           "expected": c.expected, "error": c.error} for c in r.audio],
                "ladder": r.ladder, "pcap": r.pcap, "sip_messages": r.sip_messages,
            }
            for r in results
        ],
    }
    (out / "results.json").write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    return index
