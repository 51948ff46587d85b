"""SIP message traces: record what each process sends and receives, then read them back.

* `sipcore.trace.writer` — `TraceWriter`, the transport's tracer hook: one JSON line per
  message, buffered, size-rotated. No Twisted import: the reactor is only used through
  a duck-typed ``callLater`` for the flush timer.
* `sipcore.trace.reader` — load trace files of several processes, merge them by time,
  pair each send with its receive, group messages into calls.
* `sipcore.trace.ladder` — a self-contained HTML ladder diagram (inline SVG/CSS/JS).
* `sipcore.trace.pcap` — export to a classic pcap file for Wireshark.
* `sipcore.trace.cli` — the ``sipcalling-trace`` command.

The record format (one JSON object per line, format version ``v`` = 1)::

    {"v": 1, "ts_us": 1712345678123456, "time": "2024-04-05T19:34:38.123456Z",
     "proc": "proxy a.lab", "role": "proxy", "pid": 4242, "seq": 17,
     "dir": "in", "transport": "UDP",
     "local": "127.0.0.1:5060", "remote": "127.0.0.1:5070",
     "msg": "INVITE sip:bob@a.lab SIP/2.0\\r\\n..."}

``msg`` is the message as text when it is valid UTF-8 (as SIP almost always is);
otherwise ``msg`` is absent and ``msg_b64`` holds the exact bytes in base64.
"""

from sipcore.trace.writer import TRACE_VERSION, TraceWriter, format_hostport

__all__ = ["TRACE_VERSION", "TraceWriter", "format_hostport"]
