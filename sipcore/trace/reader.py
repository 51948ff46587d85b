"""Read trace files back: merge processes, pair sends with receives, group into calls.

Pairing. A message that one traced process sends and another traced process receives
appears twice (an ``out`` record and an ``in`` record). It becomes one `Arrow` with
both times. Two records describe the same message when they have the same *identity*
(start line, Call-ID, CSeq, top Via — which a proxy always rewrites, so every hop is
distinct) and the same destination port, on the same transport. Identical identities
are retransmissions; an ``in`` record takes the latest unmatched ``out`` sent at or
before it (within `PAIR_WINDOW_US`), so a lost first transmission stays visible as
a send without a receive.

Lanes. A lane is a ``host:port``. A process listening on ``0.0.0.0`` records that as
its local address, and a TCP sender's source port is ephemeral; pairing tells us the
address the receiver actually saw, and both are folded into one lane.

Calls. Messages are grouped by Call-ID; forks, redirects and proxy recursion keep
the Call-ID, so they stay together. Heuristic for B2BUA-style legs with a different
Call-ID: two Call-IDs belong to one call when a header of a message in one of them
(other than Call-ID) mentions the other's Call-ID as a token — e.g. ``Replaces``,
``Refer-To: <...?Replaces=...>`` or an ``X-Orig-Call-ID`` header a B2BUA adds.
"""

from __future__ import annotations

import base64
import glob
import json
import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import unquote

from sipcore.errors import ParseError
from sipcore.message import Request, Response, parse
from sipcore.sdp import parse_sdp
from sipcore.trace.writer import format_hostport
from sipcore.uri import SipURI

#: An ``in`` record pairs with an ``out`` record at most this far apart (clock skew
#: between machines included).
PAIR_WINDOW_US = 5_000_000
_UNSPECIFIED = frozenset({"0.0.0.0", "::", ""})

Warn = Callable[[str], None]


class TraceFileError(Exception):
    """A trace file cannot be read at all (missing, a directory, no permission)."""


HostPort = tuple[str, int]


def parse_hostport(text: str) -> HostPort:
    """``"127.0.0.1:5060"`` / ``"[::1]:5060"`` -> (host, port); ValueError otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"bad address {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise ValueError(f"bad address {text!r}")
    return host, int(port)


def hostport_key(hp: HostPort) -> str:
    return format_hostport(hp[0], hp[1])


@dataclass(slots=True)
class TraceRecord:
    """One line of a trace file."""

    ts_us: int
    direction: str  # 'in' | 'out'
    transport: str
    local: HostPort
    remote: HostPort
    proc: str
    role: str
    pid: int | None
    seq: int
    data: bytes
    message: Request | Response
    where: str  # "file:line", for messages to the user

    @property
    def src(self) -> HostPort:
        return self.local if self.direction == "out" else self.remote

    @property
    def dst(self) -> HostPort:
        return self.remote if self.direction == "out" else self.local


@dataclass(slots=True)
class SdpInfo:
    """What a ladder shows about an SDP body."""

    direction: str  # sendrecv | sendonly | recvonly | inactive (joined with '/' if mixed)
    old_hold: bool  # c=0.0.0.0 (RFC 2543 hold)
    summary: str  # "audio 4000 PCMU/8000 opus/48000"


@dataclass(eq=False)
class Arrow:
    """One message on the wire: a send, a receive, or both."""

    sender: TraceRecord | None
    receiver: TraceRecord | None
    src: str = ""  # lane key (host:port) after aliasing
    dst: str = ""
    retransmission: bool = False
    missing_receive: bool = False  # sent to a traced process that has no matching 'in'

    @property
    def record(self) -> TraceRecord:
        rec = self.sender or self.receiver
        assert rec is not None
        return rec

    @property
    def message(self) -> Request | Response:
        return self.record.message

    @property
    def data(self) -> bytes:
        return self.record.data

    @property
    def transport(self) -> str:
        return self.record.transport

    @property
    def sent_us(self) -> int | None:
        return self.sender.ts_us if self.sender else None

    @property
    def received_us(self) -> int | None:
        return self.receiver.ts_us if self.receiver else None

    @property
    def ts_us(self) -> int:
        return self.record.ts_us

    @property
    def call_id(self) -> str:
        return self.message.headers.get("Call-ID") or ""

    @property
    def is_request(self) -> bool:
        return isinstance(self.message, Request)

    @property
    def css_class(self) -> str:
        msg = self.message
        if isinstance(msg, Request):
            return "req"
        if msg.status < 200:
            return "s1xx"
        if msg.status < 300:
            return "s2xx"
        return "sErr"

    @property
    def cseq(self) -> tuple[int, str] | None:
        try:
            cseq = self.message.cseq
        except (ParseError, ValueError):
            return None
        return cseq.number, cseq.method

    @property
    def title(self) -> str:
        """``INVITE`` / ``180 Ringing``."""
        msg = self.message
        if isinstance(msg, Request):
            return msg.method
        return f"{msg.status} {msg.reason}".strip()

    @property
    def start_line(self) -> str:
        msg = self.message
        if isinstance(msg, Request):
            return f"{msg.method} {msg.uri} {msg.version}"
        return f"{msg.version} {msg.status} {msg.reason}"

    @property
    def sdp(self) -> SdpInfo | None:
        return sdp_info(self.message)


def sdp_info(message: Request | Response) -> SdpInfo | None:
    """The SDP direction of a message's body, or None when it carries no SDP."""
    if not message.body:
        return None
    ctype = (message.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if ctype != "application/sdp":
        return None
    try:
        sdp = parse_sdp(message.body)
    except ParseError:
        return SdpInfo("SDP?", False, "unparseable SDP")
    live = [m for m in sdp.media if not m.rejected] or list(sdp.media)
    if not live:
        return SdpInfo(sdp.direction or "sendrecv", False, "no media")
    directions: list[str] = []
    for m in live:
        d = sdp.effective_direction(m)
        if d not in directions:
            directions.append(d)
    parts = []
    for m in live:
        codecs = [f"{r.encoding}/{r.clock_rate}" for r in m.rtpmap.values()]
        parts.append(" ".join([m.media, str(m.port), *codecs]))
    return SdpInfo(
        "/".join(directions), any(sdp.is_old_style_hold(m) for m in live), "; ".join(parts)
    )


@dataclass(eq=False)
class Call:
    """Messages of one call: one Call-ID, or several linked by the heuristic above."""

    call_ids: list[str]
    arrows: list[Arrow] = field(default_factory=list)

    @property
    def start_us(self) -> int:
        return self.arrows[0].ts_us

    @property
    def first_request(self) -> Arrow | None:
        return next((a for a in self.arrows if a.is_request), None)

    @property
    def summary(self) -> str:
        """``INVITE alice@a.lab → bob@b.lab``."""
        first = self.first_request
        if first is None:
            return self.arrows[0].title
        msg = first.message
        return f"{first.title} {_party(msg, 'From')} → {_party(msg, 'To')}"

    @property
    def final_status(self) -> str:
        """The final response to the first request, as its sender saw it ('' if none).

        A request answered 401/407 and sent again with credentials (a higher CSeq of the
        same method, still outside a dialog) counts as the same attempt: the outcome is
        the answer to the last such retry, not the challenge.
        """
        first = self.first_request
        if first is None or first.cseq is None:
            return ""
        method = first.cseq[1]
        retries = [
            a.cseq for a in self.arrows
            if a.is_request and a.src == first.src and a.cseq is not None
            and a.cseq[1] == method and a.cseq[0] >= first.cseq[0]
            and _out_of_dialog(a.message)
        ]
        attempt = max(retries) if retries else first.cseq
        finals = [
            a for a in self.arrows
            if not a.is_request and a.cseq == attempt
            and a.message.status >= 200  # type: ignore[union-attr]
        ]
        if not finals:
            return ""
        # What came back to the caller is the call's outcome; downstream legs of a
        # proxy (e.g. a 486 from one fork) are details.
        to_caller = [a for a in finals if a.dst == first.src]
        return (to_caller or finals)[-1].title


def _out_of_dialog(msg: Request | Response) -> bool:
    try:
        return msg.to.tag is None
    except (ParseError, ValueError):
        return False


def _party(msg: Request | Response, header: str) -> str:
    try:
        addr = msg.from_ if header == "From" else msg.to
    except (ParseError, ValueError):
        return msg.headers.get(header) or "?"
    uri = addr.uri
    user = getattr(uri, "user", None)
    host = getattr(uri, "host", None)
    if host is None:
        return str(uri)
    return f"{user}@{host}" if user else host


# -- loading ----------------------------------------------------------------------------


def expand_rotated(paths: Iterable[str]) -> list[str]:
    """Each path plus its rotated parts (``FILE.1``, ``FILE.2`` ...), each file once.

    Raises `TraceFileError` for a path that does not exist.
    """
    out: list[str] = []
    seen: set[str] = set()
    for path in paths:
        if not os.path.exists(path):
            raise TraceFileError(f"no such file: {path}")
        if os.path.isdir(path):
            raise TraceFileError(f"is a directory: {path}")
        parts = [path]
        rotated = [p for p in glob.glob(glob.escape(path) + ".*") if p.rsplit(".", 1)[1].isdigit()]
        parts += sorted(rotated, key=lambda p: -int(p.rsplit(".", 1)[1]))  # oldest first
        for part in parts:
            real = os.path.realpath(part)
            if real not in seen:
                seen.add(real)
                out.append(part)
    return out


def load_records(paths: Iterable[str], warn: Warn) -> list[TraceRecord]:
    """All records of these files (and their rotated parts), sorted by time.

    Bad lines are reported through `warn` (one line each) and skipped; a missing or
    unreadable file raises `TraceFileError`.
    """
    records: list[TraceRecord] = []
    seen: set[tuple[str, int | None, int, int, str]] = set()
    for path in expand_rotated(paths):
        try:
            handle = open(path, "rb")  # noqa: SIM115
        except OSError as err:
            raise TraceFileError(f"cannot read {path}: {err.strerror or err}") from None
        with handle:
            for lineno, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                where = f"{path}:{lineno}"
                try:
                    record = _record(line, where)
                except _BadLine as err:
                    warn(f"{where}: {err}")
                    continue
                # The same file given twice under different names, or copied: once.
                key = (record.proc, record.pid, record.seq, record.ts_us, record.direction)
                if key in seen:
                    continue
                seen.add(key)
                records.append(record)
    records.sort(key=lambda r: (r.ts_us, r.pid or 0, r.seq))
    return records


class _BadLine(Exception):
    pass


def _record(line: bytes, where: str) -> TraceRecord:
    try:
        obj = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise _BadLine(f"not valid JSON ({_short(err)})") from None
    if not isinstance(obj, dict):
        raise _BadLine("not a JSON object")
    try:
        ts_us = obj["ts_us"]
        direction = obj["dir"]
        local = parse_hostport(obj["local"])
        remote = parse_hostport(obj["remote"])
        transport = str(obj.get("transport") or "UDP").upper()
    except KeyError as err:
        raise _BadLine(f"missing field {err.args[0]!r}") from None
    except (ValueError, TypeError, AttributeError) as err:
        raise _BadLine(f"bad field value ({_short(err)})") from None
    if not isinstance(ts_us, int) or isinstance(ts_us, bool):
        raise _BadLine("ts_us is not an integer")
    if direction not in ("in", "out"):
        raise _BadLine(f"dir must be 'in' or 'out', not {direction!r}")
    if isinstance(obj.get("msg"), str):
        data = obj["msg"].encode("utf-8", "surrogateescape")
    elif isinstance(obj.get("msg_b64"), str):
        try:
            data = base64.b64decode(obj["msg_b64"], validate=True)
        except ValueError:
            raise _BadLine("msg_b64 is not valid base64") from None
    else:
        raise _BadLine("no 'msg' or 'msg_b64' field")
    try:
        message = parse(data, validate=False)
        if not message.headers.get("Call-ID"):
            raise ParseError("no Call-ID")
    except ParseError as err:
        raise _BadLine(f"unparseable SIP message ({err.reason})") from None
    pid = obj.get("pid")
    seq = obj.get("seq")
    return TraceRecord(
        ts_us=ts_us, direction=direction, transport=transport, local=local, remote=remote,
        proc=str(obj.get("proc") or ""), role=str(obj.get("role") or ""),
        pid=pid if isinstance(pid, int) else None, seq=seq if isinstance(seq, int) else 0,
        data=data, message=message, where=where,
    )


def _short(err: Exception) -> str:
    return str(err).splitlines()[0][:120] if str(err) else type(err).__name__


# -- pairing ----------------------------------------------------------------------------


def _identity(rec: TraceRecord) -> tuple[object, ...]:
    msg = rec.message
    head = msg.method if isinstance(msg, Request) else msg.status
    first = str(msg.uri) if isinstance(msg, Request) else ""
    h = msg.headers
    return (rec.transport, rec.dst[1], head, first, h.get("Call-ID"), h.get("CSeq"),
            h.get("Via"), h.get("To"))


def _hosts_match(a: str, b: str) -> bool:
    return a == b or a in _UNSPECIFIED or b in _UNSPECIFIED


class Trace:
    """Merged view of a set of trace files."""

    def __init__(self, records: list[TraceRecord]) -> None:
        self.records = records
        self.arrows = self._pair(records)
        self.aliases = self._aliases(self.arrows)
        self.labels: dict[str, str] = {}
        self.traced: set[str] = set()
        self._calls: list[Call] | None = None
        self._resolve()

    @classmethod
    def load(cls, paths: Iterable[str], warn: Warn) -> Trace:
        return cls(load_records(paths, warn))

    # Pair 'out' with 'in' records (see the module docstring).
    @staticmethod
    def _pair(records: list[TraceRecord]) -> list[Arrow]:
        arrows: list[Arrow] = []
        waiting: dict[tuple[object, ...], list[Arrow]] = defaultdict(list)
        for rec in records:
            if rec.direction == "out":
                arrow = Arrow(sender=rec, receiver=None)
                arrows.append(arrow)
                waiting[_identity(rec)].append(arrow)
                continue
            candidates = waiting.get(_identity(rec), [])
            best: Arrow | None = None
            for arrow in candidates:
                out = arrow.sender
                assert out is not None
                if abs(out.ts_us - rec.ts_us) > PAIR_WINDOW_US:
                    continue
                if not _hosts_match(out.remote[0], rec.local[0]):
                    continue
                if out.ts_us <= rec.ts_us:
                    best = arrow  # candidates are in time order: keep the latest
                elif best is None:
                    best = arrow  # the receiver's clock runs behind: take the first
                    break
            if best is None:
                arrows.append(Arrow(sender=None, receiver=rec))
            else:
                best.receiver = rec
                candidates.remove(best)
        arrows.sort(key=lambda a: (a.ts_us, a.record.pid or 0, a.record.seq))
        return arrows

    @staticmethod
    def _aliases(arrows: list[Arrow]) -> dict[str, str]:
        aliases: dict[str, str] = {}
        for a in arrows:
            if a.sender is None or a.receiver is None:
                continue
            declared, seen = a.sender.local, a.receiver.remote
            if declared == seen:
                continue
            if declared[0] in _UNSPECIFIED and declared[1] == seen[1]:
                aliases[hostport_key(declared)] = hostport_key(seen)
            else:
                # e.g. a TCP connection's ephemeral port: the sender's listening
                # address names the lane.
                aliases[hostport_key(seen)] = hostport_key(declared)
        return aliases

    def lane_of(self, hp: HostPort) -> str:
        key = hostport_key(hp)
        for _ in range(8):  # alias chains are short; the bound guards against cycles
            nxt = self.aliases.get(key)
            if nxt is None or nxt == key:
                break
            key = nxt
        return key

    def _resolve(self) -> None:
        for rec in self.records:
            lane = self.lane_of(rec.local)
            self.traced.add(lane)
            if rec.proc and lane not in self.labels:
                self.labels[lane] = rec.proc
        for a in self.arrows:
            a.src = self.lane_of(a.record.src)
            a.dst = self.lane_of(a.record.dst)
            a.missing_receive = a.receiver is None and a.dst in self.traced
        self._user_hints()
        self._mark_retransmissions()

    def _user_hints(self) -> None:
        # Untraced peers (sipp, a softphone) get a name from what they send: the user
        # of a Contact that points at them, else the From user of a request they
        # originated (one Via: no proxy in between).
        hints: dict[str, str] = {}
        weak: dict[str, str] = {}
        for a in self.arrows:
            if a.src in self.labels or a.src in hints:
                continue
            msg = a.message
            try:
                for contact in msg.contacts:
                    if contact.is_wildcard:
                        continue
                    uri = contact.uri
                    if not isinstance(uri, SipURI) or not uri.user:
                        continue
                    port = uri.port or 5060
                    if self.lane_of((uri.host.strip("[]"), port)) == a.src:
                        hints[a.src] = uri.user
                        break
                if isinstance(msg, Request) and len(msg.vias) == 1 and a.src not in weak:
                    user = getattr(msg.from_.uri, "user", None)
                    if user:
                        weak[a.src] = user
            except (ParseError, ValueError, AttributeError):
                continue
        for lane, user in {**weak, **hints}.items():
            self.labels.setdefault(lane, user)

    def _mark_retransmissions(self) -> None:
        seen: set[tuple[str, str, bytes]] = set()
        for a in self.arrows:
            key = (a.src, a.dst, a.data)
            if key in seen:
                a.retransmission = True
            seen.add(key)

    def lane_label(self, lane: str) -> str:
        label = self.labels.get(lane)
        return f"{label} {lane}" if label else lane

    # -- calls --------------------------------------------------------------------------

    def calls(self) -> list[Call]:
        """Arrows grouped into calls, in order of their first message (computed once)."""
        if self._calls is None:
            self._calls = self._group()
        return self._calls

    def _group(self) -> list[Call]:
        by_id: dict[str, list[Arrow]] = defaultdict(list)
        for a in self.arrows:
            by_id[a.call_id].append(a)
        parent = {cid: cid for cid in by_id}

        def find(x: str) -> str:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        known = set(by_id)
        for cid, arrows in by_id.items():
            for other in _mentioned_call_ids(arrows, known, cid):
                ra, rb = find(cid), find(other)
                if ra != rb:
                    parent[rb] = ra
        groups: dict[str, Call] = {}
        for cid, arrows in by_id.items():
            root = find(cid)
            call = groups.setdefault(root, Call(call_ids=[]))
            call.call_ids.append(cid)
            call.arrows.extend(arrows)
        calls = list(groups.values())
        for call in calls:
            call.arrows.sort(key=lambda a: (a.ts_us, a.record.pid or 0, a.record.seq))
            call.call_ids.sort(key=lambda c: by_id[c][0].ts_us)
        calls.sort(key=lambda c: c.start_us)
        return calls

    def find_call(self, call_id: str) -> Call | None:
        """The call holding this Call-ID (or a unique Call-ID prefix)."""
        calls = self.calls()
        for call in calls:
            if call_id in call.call_ids:
                return call
        matches = [c for c in calls if any(cid.startswith(call_id) for cid in c.call_ids)]
        return matches[0] if len(matches) == 1 else None


_TOKEN_RE = re.compile(r"[^\s;,<>\"'?&=]+")
_MIN_LINK_LEN = 6  # short Call-IDs ("1", "abc") would link unrelated calls


def _mentioned_call_ids(arrows: list[Arrow], known: set[str], own: str) -> set[str]:
    found: set[str] = set()
    for a in arrows:
        for name, value in a.message.headers:
            if name.lower() in ("call-id", "i"):
                continue
            for token in _TOKEN_RE.findall(unquote(value)):
                if token != own and len(token) >= _MIN_LINK_LEN and token in known:
                    found.add(token)
    return found

