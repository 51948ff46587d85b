"""``sipcalling-trace``: list the calls in trace files, draw them, export them to pcap.

    sipcalling-trace list   TRACE...
    sipcalling-trace render TRACE... -o call.html [--call-id ID] [--title TEXT]
    sipcalling-trace pcap   TRACE... -o out.pcap  [--call-id ID]

A TRACE is a file written by ``--trace FILE``; its rotated parts (FILE.1, FILE.2 ...)
are read too. Exit status: 0 success, 1 nothing to show (unknown Call-ID, no
messages) or the output cannot be written, 2 usage error or unreadable trace file.
A bad line in a trace is skipped with a one-line warning on stderr.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from sipcore.trace.ladder import render_html
from sipcore.trace.pcap import write_pcap
from sipcore.trace.reader import Call, Trace, TraceFileError

PROG = "sipcalling-trace"
MAX_WARNINGS = 200  # after that, one summary line: a garbage file must not flood the terminal


class _Fail(Exception):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class _Warnings:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, text: str) -> None:
        self.count += 1
        if self.count <= MAX_WARNINGS:
            print(f"{PROG}: warning: {text}", file=sys.stderr)

    def finish(self) -> None:
        if self.count > MAX_WARNINGS:
            print(f"{PROG}: warning: {self.count - MAX_WARNINGS} more bad lines not shown",
                  file=sys.stderr)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Read sipcalling trace files (--trace FILE): list calls, "
        "draw ladder diagrams, export pcap.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="print the calls found in the traces")
    p.add_argument("traces", nargs="+", metavar="TRACE")

    p = sub.add_parser("render", help="draw a ladder diagram as one self-contained HTML file")
    p.add_argument("traces", nargs="+", metavar="TRACE")
    p.add_argument("-o", "--output", required=True, metavar="FILE.html")
    p.add_argument("--call-id", metavar="ID", help="only this call (a unique prefix will do)")
    p.add_argument("--title", help="page title (default: the call or 'SIP call flows')")

    p = sub.add_parser("pcap", help="export the messages as a pcap file for Wireshark")
    p.add_argument("traces", nargs="+", metavar="TRACE")
    p.add_argument("-o", "--output", required=True, metavar="FILE.pcap")
    p.add_argument("--call-id", metavar="ID", help="only this call (a unique prefix will do)")
    return parser


def _calls(trace: Trace, call_id: str | None) -> list[Call]:
    if call_id is None:
        calls = trace.calls()
        if not calls:
            raise _Fail("no SIP messages in the traces", 1)
        return calls
    call = trace.find_call(call_id)
    if call is None:
        raise _Fail(f"no call with Call-ID {call_id!r} (see '{PROG} list')", 1)
    return [call]


def _time(ts_us: int) -> str:
    return datetime.fromtimestamp(ts_us / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def cmd_list(trace: Trace, args: argparse.Namespace) -> None:
    calls = _calls(trace, None)
    rows = [("START (UTC)", "CALL-ID", "REQUEST", "FROM → TO", "FINAL", "MSGS")]
    for call in calls:
        first = call.first_request
        summary = call.summary
        method, _, parties = summary.partition(" ") if first else (summary, "", "")
        cid = call.call_ids[0] + (f" (+{len(call.call_ids) - 1})" if len(call.call_ids) > 1 else "")
        rows.append((_time(call.start_us), cid, method, parties or "-",
                     call.final_status or "-", str(len(call.arrows))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(w) for cell, w in zip(row, widths)]
        print("  ".join([*cells, row[-1].rjust(4)]))


def _write(path: str, data: bytes) -> None:
    try:
        with open(path, "wb") as out:
            out.write(data)
    except OSError as err:
        raise _Fail(f"cannot write {path}: {err.strerror or err}", 1) from None


def cmd_render(trace: Trace, args: argparse.Namespace) -> None:
    calls = _calls(trace, args.call_id)
    title = args.title or (calls[0].summary if len(calls) == 1 else "SIP call flows")
    sources = [os.path.basename(p) for p in args.traces]
    _write(args.output, render_html(trace, calls, title, sources).encode("utf-8"))
    count = sum(len(c.arrows) for c in calls)
    print(f"{args.output}: {len(calls)} call{'s' * (len(calls) != 1)}, {count} messages",
          file=sys.stderr)


def cmd_pcap(trace: Trace, args: argparse.Namespace) -> None:
    calls = _calls(trace, args.call_id)
    arrows = sorted((a for c in calls for a in c.arrows),
                    key=lambda a: a.sent_us if a.sent_us is not None else a.ts_us)
    buffer = io.BytesIO()
    count = write_pcap(arrows, buffer)
    _write(args.output, buffer.getvalue())
    print(f"{args.output}: {count} packets", file=sys.stderr)


COMMANDS = {"list": cmd_list, "render": cmd_render, "pcap": cmd_pcap}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)  # exits 2 with argparse's usage message
    warnings = _Warnings()
    try:
        trace = Trace.load(args.traces, warnings)
        warnings.finish()
        COMMANDS[args.command](trace, args)
    except TraceFileError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except _Fail as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return err.status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `sipcalling-trace list ... | head`: stop quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
