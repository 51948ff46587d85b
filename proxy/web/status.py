# -*- test-case-name: tests.proxy.test_web_status -*-
"""`StatusObserver`: what the status page knows, learnt from the messages on the wire.

It is the endpoint's ``tracer`` hook (``observer(direction, data, local, remote)``), so
it sees every SIP message the process sends or receives, as bytes. The hot path only
runs a few compiled byte regexes, appends to bounded deques and increments dict
counters keyed by bytes; labels are decoded and formatted when somebody scrapes
``/metrics`` or loads the page, not per message.

Calls are reconstructed from the messages alone, so that no other component has to
report to us: an initial INVITE received (no To tag) opens a call; the responses we
send upstream to it move it (1xx ringing, 2xx connected, >= 300 ended); CANCEL marks
it cancelling; BYE ends it. Of the other components we only read the transaction
table (``len``/iteration) and the location service (``aors()``/``get()``/``count()``).

Everything is bounded: the last `max_messages` messages, `max_recent` ended calls,
`max_active` calls in progress (calls idle past `early_timeout`/`call_timeout` are
closed as ``timeout``), `per_call_messages` messages per call, and the pending
latency measurements.
"""

from __future__ import annotations

import bisect
import os
import re
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer

from sipcore.errors import ParseError
from sipcore.message import KNOWN_METHODS, Request, parse
from sipcore.trace.reader import TraceRecord
from sipcore.uri import SipURI

# -- wire scanning (bytes, case-insensitive header names, compact forms) ---------------

_CALL_ID = re.compile(rb"\r\n(?:call-id|i)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)
_CSEQ = re.compile(rb"\r\ncseq[ \t]*:[ \t]*(\d+)[ \t]+([!-~]+)", re.IGNORECASE)
# The first Via line's first branch is the top Via's (a combined line lists it first).
_BRANCH = re.compile(
    rb"\r\n(?:via|v)[ \t]*:[^\r\n]*?;[ \t]*branch[ \t]*=[ \t]*([^;,\s]+)", re.IGNORECASE
)

#: Methods counted under their own label; anything else is ``other`` so that a peer
#: inventing methods cannot grow the label set (and our memory) without bound.
KNOWN = frozenset(m.encode() for m in KNOWN_METHODS)
OTHER = b"other"
#: Requests whose latency is measured (arrival -> first response / final response).
TIMED = frozenset({b"INVITE", b"REGISTER"})
MAX_PENDING_LATENCY = 4096

#: Histogram buckets (seconds) of sip_request_latency_seconds: a local answer takes
#: well under a millisecond, a store round trip a few, a challenge-less lab never 10 s.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)

#: Call outcomes (the ``outcome`` label of sip_calls_total); a fixed, small set.
OUTCOMES = (
    "answered", "redirected", "busy", "declined", "cancelled", "no_answer", "not_found",
    "failed", "timeout",
)

# Active call states, in the order a call goes through them.
TRYING, RINGING, CONNECTED, CANCELLING, ENDED = (
    "trying", "ringing", "connected", "cancelling", "ended",
)

# (ts_us, seq, direction, data, local, remote, call_id)
Record = tuple[int, int, str, bytes, Any, Any, bytes]


def outcome_of(status: int) -> str:
    """The outcome label of a call whose initial INVITE got this final status."""
    if status < 300:
        return "answered"
    if status < 400:
        return "redirected"
    if status in (486, 600):
        return "busy"
    if status == 603:
        return "declined"
    if status == 487:
        return "cancelled"
    if status in (408, 480):
        return "no_answer"
    if status in (404, 604):
        return "not_found"
    return "failed"


class Histogram:
    """Cumulative-at-export bucket counts: one bisect and two adds per observation."""

    __slots__ = ("bounds", "counts", "count", "total")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.count = 0
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        running = 0
        for bound, n in zip((*map(repr, self.bounds), "+Inf"), self.counts):
            running += n
            out.append((bound, running))
        return out


@dataclass(eq=False, slots=True)
class CallInfo:
    """One call as the proxy saw it."""

    key: bytes  # the Call-ID as on the wire
    call_id: str
    caller: str  # user@host
    callee: str
    caller_uri: str
    callee_uri: str
    cseq: int  # of the initial INVITE: responses to re-INVITEs do not move the call
    started: float
    last_seen: float
    state: str = TRYING
    answered: float | None = None
    ended: float | None = None
    status: int | None = None  # final status sent upstream for the initial INVITE
    reason: str = ""
    outcome: str = ""
    ended_by: str = ""  # BYE, CANCEL, a status, or timeout
    messages: deque[Record] = field(default_factory=deque)

    def duration(self, now: float) -> float:
        return max(0.0, (self.ended if self.ended is not None else now) - self.started)

    def talk_time(self, now: float) -> float | None:
        if self.answered is None:
            return None
        return max(0.0, (self.ended if self.ended is not None else now) - self.answered)

    def as_dict(self, now: float) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "from": self.caller,
            "to": self.callee,
            "from_uri": self.caller_uri,
            "to_uri": self.callee_uri,
            "state": self.state,
            "started": self.started,
            "answered": self.answered,
            "ended": self.ended,
            "duration": round(self.duration(now), 3),
            "talk_time": None if self.answered is None else round(self.talk_time(now) or 0, 3),
            "status": self.status,
            "reason": self.reason,
            "outcome": self.outcome,
            "ended_by": self.ended_by,
            "messages": len(self.messages),
        }


def _party(addr: Any) -> tuple[str, str]:
    """(``user@host``, full URI) of a From/To name-addr."""
    uri = addr.uri
    if isinstance(uri, SipURI):
        short = f"{uri.user}@{uri.host}" if uri.user else uri.host
    else:
        short = str(uri)
    return short, str(uri)


class StatusObserver:
    """The tracer hook behind ``--web``: counters, calls, recent messages."""

    def __init__(
        self,
        label: str = "",
        role: str = "",
        *,
        now: Callable[[], float] = time.time,
        max_messages: int = 5000,
        max_recent: int = 200,
        max_active: int = 10_000,
        per_call_messages: int = 500,
        early_timeout: float = 300.0,
        call_timeout: float = 12 * 3600.0,
    ) -> None:
        self.label = label
        self.role = role
        self._now = now
        self.started = now()
        self.pid = os.getpid()
        self.ring: deque[Record] = deque(maxlen=max_messages)
        self.per_call_messages = per_call_messages
        self.max_active = max_active
        self.early_timeout = early_timeout
        self.call_timeout = call_timeout
        # Active and recently ended calls by Call-ID; `recent` orders the ended ones.
        self.calls: dict[bytes, CallInfo] = {}
        self.recent: deque[CallInfo] = deque(maxlen=max_recent)
        self.active = 0
        # Counters, keyed by wire bytes (decoded at scrape time).
        self.requests_in: dict[bytes, int] = {}
        self.requests_out: dict[bytes, int] = {}
        self.responses_in: dict[tuple[bytes, bytes], int] = {}
        self.responses_out: dict[tuple[bytes, bytes], int] = {}
        self.parse_errors: dict[int, int] = {}
        self.call_outcomes: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        self.latency: dict[bytes, Histogram] = {m: Histogram() for m in TIMED}
        self._pending: dict[tuple[bytes, bytes], float] = {}
        self.messages_seen = 0
        self.hook_errors = 0
        # Set by `attach`: the stack's transaction table and the role (for its location).
        self.table: Any = None
        self.role_obj: Any = None
        self.sip_address = ""
        # Registration counts for /metrics, refreshed before each scrape (the location
        # service answers with Deferreds, a Prometheus collector must not wait).
        self.registered_aors = 0
        self.registered_bindings = 0

    # -- wiring ----------------------------------------------------------------------

    def attach(self, stack: Any, role: Any) -> None:
        """Read transactions from `stack.table`, bindings from the role's location, and
        count the parse errors the endpoint answers itself (they never reach the tracer).
        """
        self.table = stack.table
        self.role_obj = role
        endpoint = stack.endpoint
        self.sip_address = f"{endpoint.interface}:{endpoint.port}"
        endpoint.parse_error_observers.append(
            lambda err, source: self.parse_error(err.status)
        )

    def parse_error(self, status: int) -> None:
        self.parse_errors[status] = self.parse_errors.get(status, 0) + 1

    # -- the hot path ----------------------------------------------------------------

    def __call__(self, direction: str, data: bytes, local: Any, remote: Any) -> None:
        try:
            self._observe(direction, data, local, remote)
        except Exception as err:  # the status page must never break SIP
            self.hook_errors += 1
            if self.hook_errors == 1:
                print(f"sipcalling status page: observer failed: {err!r}", file=sys.stderr)

    def _observe(self, direction: str, data: bytes, local: Any, remote: Any) -> None:
        now = self._now()
        self.messages_seen += 1
        match = _CALL_ID.search(data)
        call_id = match.group(1).strip() if match else b""
        record: Record = (int(now * 1_000_000), self.messages_seen, direction, data, local,
                          remote, call_id)
        self.ring.append(record)
        call = self.calls.get(call_id)
        if call is not None:
            call.last_seen = now
            if len(call.messages) < self.per_call_messages:
                call.messages.append(record)
        eol = data.find(b"\r\n")
        first = data[:eol] if eol >= 0 else data
        if first.startswith(b"SIP/2.0 "):
            self._response(direction, data, first, call, now)
        else:
            self._request(direction, data, first, call_id, call, record, now)

    def _request(
        self, direction: str, data: bytes, first: bytes, call_id: bytes,
        call: CallInfo | None, record: Record, now: float,
    ) -> None:
        method = first.split(b" ", 1)[0]
        if method not in KNOWN:
            method = OTHER
        counts = self.requests_in if direction == "in" else self.requests_out
        counts[method] = counts.get(method, 0) + 1
        if direction != "in":
            return
        if method in TIMED:
            branch = _BRANCH.search(data)
            if branch is not None:
                pending = self._pending
                # setdefault: a retransmission does not restart the clock.
                pending.setdefault((branch.group(1), method), now)
                if len(pending) > MAX_PENDING_LATENCY:
                    del pending[next(iter(pending))]  # oldest: never answered
        if method == b"INVITE":
            if call is None or call.state == ENDED:
                self._maybe_new_call(data, call_id, call, record, now)
        elif call is not None and call.state != ENDED:
            if method == b"BYE":
                self._end(call, now, "BYE", "answered" if call.answered else "failed")
            elif method == b"CANCEL" and call.state in (TRYING, RINGING):
                call.state = CANCELLING

    def _response(
        self, direction: str, data: bytes, first: bytes, call: CallInfo | None, now: float
    ) -> None:
        cseq = _CSEQ.search(data)
        method = cseq.group(2) if cseq is not None else OTHER
        if method not in KNOWN:
            method = OTHER
        status = first[8:11]
        counts = self.responses_in if direction == "in" else self.responses_out
        key = (status, method)
        counts[key] = counts.get(key, 0) + 1
        if direction != "out":
            return  # the proxy's view of a call is what it tells the caller
        if method in TIMED and not (method == b"REGISTER" and status[:1] == b"1"):
            branch = _BRANCH.search(data)
            if branch is not None:
                start = self._pending.pop((branch.group(1), method), None)
                if start is not None:
                    self.latency[method].observe(max(0.0, now - start))
        if (
            call is None or method != b"INVITE" or call.state == ENDED
            or cseq is None or int(cseq.group(1)) != call.cseq
        ):
            return
        code = int(status)
        if code < 200:
            if code != 100 and call.state == TRYING:
                call.state = RINGING
        elif code < 300:
            if call.state != CONNECTED:
                call.state = CONNECTED
                call.answered = now
                call.status = code
                call.reason = _reason(first)
                call.outcome = "answered"
                self._count_outcome("answered")
        else:
            call.status = code
            call.reason = _reason(first)
            self._end(call, now, str(code), outcome_of(code))

    # -- the call table ----------------------------------------------------------------

    def _maybe_new_call(
        self, data: bytes, call_id: bytes, old: CallInfo | None, record: Record, now: float
    ) -> None:
        try:
            message = parse(data, validate=False)
            if not isinstance(message, Request) or message.to.tag is not None:
                return  # a re-INVITE of a call we did not see start
            cseq = message.cseq.number
            caller, caller_uri = _party(message.from_)
            callee, callee_uri = _party(message.to)
        except (ParseError, ValueError, AttributeError):
            return
        if not call_id:
            return
        if old is not None and old.cseq == cseq:
            return  # a late retransmission of an INVITE that has already ended
        if old is not None:
            self.calls.pop(call_id, None)
        if self.active >= self.max_active:
            self.expire()
            if self.active >= self.max_active:
                return
        call = CallInfo(
            key=call_id, call_id=call_id.decode("utf-8", "replace"), caller=caller,
            callee=callee, caller_uri=caller_uri, callee_uri=callee_uri, cseq=cseq,
            started=now, last_seen=now,
        )
        call.messages.append(record)
        self.calls[call_id] = call
        self.active += 1

    def _count_outcome(self, outcome: str) -> None:
        self.call_outcomes[outcome] = self.call_outcomes.get(outcome, 0) + 1

    def _end(self, call: CallInfo, now: float, by: str, outcome: str) -> None:
        call.state = ENDED
        call.ended = now
        call.ended_by = by
        if not call.outcome:  # an answered call was counted at its 2xx already
            call.outcome = outcome
            self._count_outcome(outcome)
        self.active -= 1
        recent = self.recent
        if len(recent) == recent.maxlen:
            oldest = recent[0]
            if self.calls.get(oldest.key) is oldest:
                del self.calls[oldest.key]
        recent.append(call)

    def expire(self) -> int:
        """Close calls that went quiet: early ones after `early_timeout` (we missed the
        final response), connected ones after `call_timeout` (we missed the BYE, e.g. a
        UA that ignored Record-Route). Returns how many were closed."""
        now = self._now()
        stale = [
            c for c in self.calls.values()
            if c.state != ENDED and now - c.last_seen > (
                self.call_timeout if c.state == CONNECTED else self.early_timeout
            )
        ]
        for call in stale:
            self._end(call, now, "timeout", "timeout")
        return len(stale)

    def active_calls(self) -> list[CallInfo]:
        self.expire()
        return [c for c in self.calls.values() if c.state != ENDED]

    def recent_calls(self, limit: int | None = None) -> list[CallInfo]:
        """Ended calls, most recent first."""
        calls = list(reversed(self.recent))
        return calls if limit is None else calls[:limit]

    # -- messages for the ladder ----------------------------------------------------------

    def records_for(self, call_id: str) -> list[TraceRecord]:
        """The buffered messages of one Call-ID as trace records (oldest first)."""
        key = call_id.encode("utf-8", "surrogateescape")
        call = self.calls.get(key)
        if call is not None:
            raw: Iterable[Record] = list(call.messages)
        else:
            raw = [r for r in self.ring if r[6] == key]
        out: list[TraceRecord] = []
        for ts_us, seq, direction, data, local, remote, _ in raw:
            try:
                message = parse(data, validate=False)
            except ParseError:
                continue  # only our own serialisations get here; skip rather than fail
            out.append(TraceRecord(
                ts_us=ts_us, direction=direction, transport=local.transport,
                local=(local.host, local.port), remote=(remote.host, remote.port),
                proc=self.label, role=self.role, pid=self.pid, seq=seq, data=data,
                message=message, where=f"live buffer #{seq}",
            ))
        return out

    # -- transactions and registrations ----------------------------------------------------

    def transactions(self) -> dict[tuple[str, str], int]:
        """(kind, state) -> count, kind like ``server_invite``."""
        counts: dict[tuple[str, str], int] = {}
        if self.table is None:
            return counts
        for tx in self.table:
            key = (_tx_kind(tx), str(getattr(tx, "state", "?")))
            counts[key] = counts.get(key, 0) + 1
        return counts

    @property
    def location(self) -> Any:
        role = self.role_obj
        location = getattr(role, "location", None)
        if location is None:
            location = getattr(getattr(role, "registrar", None), "location", None)
        return location

    def registrations(self, limit: int = 500) -> defer.Deferred[dict[str, Any]]:
        """Every AOR's bindings (at most `limit` AORs), as JSON-ready dicts."""
        location = self.location
        if location is None:
            return defer.succeed({"aors": 0, "bindings": 0, "shown": [], "truncated": False})

        def got_aors(aors: list[str]) -> Any:
            shown = list(aors)[:limit]
            d = defer.gatherResults([location.get(a) for a in shown], consumeErrors=True)
            d.addCallback(lambda lists: build(aors, shown, lists))
            return d

        def build(aors: list[str], shown: list[str], lists: list[Any]) -> dict[str, Any]:
            now = location.clock.seconds()
            items = []
            total = 0
            for aor, bindings in zip(shown, lists):
                total += len(bindings)
                items.append({"aor": aor, "contacts": [_binding(b, now) for b in bindings]})
            return {"aors": len(aors), "bindings": total, "shown": items,
                    "truncated": len(aors) > len(shown)}

        return location.aors().addCallback(got_aors)

    def refresh_registration_counts(self) -> defer.Deferred[None]:
        """Update `registered_aors`/`registered_bindings`; a failing store keeps the old
        values (the page shows the error, /metrics must still answer)."""
        location = self.location
        if location is None:
            return defer.succeed(None)
        d = defer.gatherResults([location.aors(), location.count()], consumeErrors=True)

        def store(result: list[Any]) -> None:
            aors, count = result
            self.registered_aors = len(aors)
            self.registered_bindings = int(count)

        d.addCallback(store)
        d.addErrback(lambda _: None)
        return d

    # -- the whole picture ----------------------------------------------------------------

    def snapshot(self, registrations: dict[str, Any] | None = None) -> dict[str, Any]:
        """The data of the status page (and of /status.json)."""
        now = self._now()
        active = sorted(self.active_calls(), key=lambda c: c.started)
        tx = self.transactions()
        return {
            "server": {
                "label": self.label,
                "role": self.role,
                "sip": self.sip_address,
                "pid": self.pid,
                "now": now,
                "started": self.started,
                "uptime": round(now - self.started, 3),
                "messages_seen": self.messages_seen,
                "messages_buffered": len(self.ring),
                "parse_errors": sum(self.parse_errors.values()),
            },
            "registrations": registrations,
            "transactions": {
                "total": sum(tx.values()),
                "by_kind_state": [
                    {"kind": k, "state": s, "count": n} for (k, s), n in sorted(tx.items())
                ],
            },
            "calls": {
                "active": [c.as_dict(now) for c in active],
                "recent": [c.as_dict(now) for c in self.recent_calls()],
                "outcomes": dict(self.call_outcomes),
            },
        }


def _reason(first: bytes) -> str:
    return first[12:].decode("utf-8", "replace").strip()


_TX_KINDS = {
    "ServerInviteTransaction": "server_invite",
    "ServerNonInviteTransaction": "server_non_invite",
    "ClientInviteTransaction": "client_invite",
    "ClientNonInviteTransaction": "client_non_invite",
}


def _tx_kind(tx: object) -> str:
    name = type(tx).__name__
    return _TX_KINDS.get(name, name)


def _binding(b: Any, now: float) -> dict[str, Any]:
    return {
        "contact": b.contact,
        "expires_in": b.remaining(now),
        "q": b.q,
        "user_agent": b.user_agent,
        "source": b.received,
        "path": list(b.path),
        "call_id": b.call_id,
        "instance_id": b.instance_id,
        "reg_id": b.reg_id,
    }
