# -*- test-case-name: tests.registrar.test_replicated -*-
"""``memory:`` replicated between the workers of ``twistd sipproxy --workers N``.

Each worker keeps a full ``MemoryLocationService``; every binding change it makes is
sent to every peer worker, which applies it to its own copy (the idea of Kamailio's
dmq_usrloc). Reads never leave the process, so the registrar and the proxy keep the
synchronous ``get_now``/``update_now`` path of ``memory:``.

Transport: one AF_UNIX SOCK_DGRAM socket per worker, bound in the Linux abstract
namespace as ``\\0sipcalling-<group>-<index>`` (no file to clean up; the name goes
away with the process). The same socket sends, so a datagram's source address names
its worker; datagrams from any other address, or from another uid (SCM_CREDENTIALS),
are dropped. Unix datagrams are not lost in the kernel, but a receiver's queue is
short (``net.unix.max_dgram_qlen``, often 10 datagrams) and a full one makes
``sendto`` fail with EAGAIN: the ops for that peer then wait in a bounded per-peer
queue, coalesced into few datagrams, retried every ``RETRY_DELAY`` s.

Wire format (version 2): one JSON array per datagram, ``[2, op, op, ...]`` (< 60 KB),
each op an array whose first element names it and whose other elements are positional
(no field names: a put takes about a third fewer bytes than version 1's objects, and is
written and checked without building a dict; bench/replication.py has the figures):

- ``["p", aor, contact, expires_at, q, call_id, cseq, path, instance_id, reg_id,
  received, user_agent]``: add or refresh one binding (``path`` a list of strings;
  ``instance_id``, ``reg_id``, ``received``, ``user_agent`` may be null);
- ``["d", aor, contact, instance_id, reg_id]``: remove the binding with that key
  (``Binding.key``);
- ``["*", aor]``: ``Contact: *`` (del-all);
- ``["sr"]`` (sync-request), ``["sp", ...as "p"]`` (sync-put), ``["sd", n]``
  (sync-done): the start-up sync below.

A datagram is untrusted input: it is parsed and every op checked (arity, the exact JSON
type at every position, no bool where an int is due, finite ``expires_at`` and ``q``
within 0..1, a non-empty contact, a valid AOR) before any op is applied; one bad op and
none of the datagram is applied (counted ``malformed``). The workers of one supervisor
run the same code, so there is no negotiation: any other version is malformed.

Per-binding ops, never whole-AOR snapshots: two devices of one user may register
through two workers at once. A peer applies them without the registrar's CSeq rule
(the origin checked it) straight to its inner store (not re-published), except that a
``put`` older than the stored binding of the same Call-ID (lower CSeq) is ignored, so
that two workers racing on one binding converge. Expiry needs no message: every copy
has the same ``expires_at`` and drops bindings by its own clock. A refresh is sent as a
whole ``put``, not as a new ``expires_at``/CSeq for a binding the peer is assumed to
hold: a copy that missed the binding (see Limits) gets it back with the next REGISTER.

Start-up sync: a worker binds its socket first, then asks one peer at a time
(``index+1``, ``index+2`` ...) for its store; the first reachable one streams it as
``sync-put`` batches ended by ``sync-done``. Changes arriving meanwhile are applied as
usual and win: a ``sync-put`` only fills in a binding this copy does not have and has
not seen deleted during the sync.

Limits: a change is lost for a peer whose queue overflows (``MAX_QUEUED_BYTES``: it
did not read for a long while; logged), and with 3+ workers a restarting worker may
miss a change a third worker made while its sync source had not yet applied it; that
copy is then stale for that binding until the AOR re-registers (or the binding
expires). A peer that is down misses nothing: it resyncs when it starts. Replication is
asynchronous and paced (``BATCH_WINDOW``): a request reaching another worker within
about 5 ms of the 200 OK may not see the binding yet. Linux only (abstract names,
SCM_CREDENTIALS).
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import struct
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from json.encoder import encode_basestring_ascii
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import classImplements

from registrar.location import LocationService, deferred_errors
from registrar.location.binding import (
    WILDCARD,
    Binding,
    Change,
    Removal,
    binding_key,
    normalise_aor,
)
from registrar.location.memory import MemoryLocationService

log = Logger(namespace="registrar.location.replicated")

VERSION = 2
#: Datagrams are cut below this many bytes (several ops each).
MAX_DATAGRAM = 60_000
#: One op alone may be larger (a binding with a huge Path), up to this.
MAX_OP = 200_000
RECV_SIZE = 262_144
#: Per peer: ops waiting for room in its receive queue; past this the oldest go.
MAX_QUEUED_BYTES = 16 * 1024 * 1024
RETRY_DELAY = 0.002
#: At most one datagram per peer per this many seconds (besides retries): ops published
#: sooner after the last one wait for the window to end and leave together, so the
#: peer wakes up at most 1/BATCH_WINDOW times a second for replication whatever the
#: REGISTER rate (at 6,000/s over 2 workers: 18 ops per datagram instead of 6, and a
#: fifth less CPU spent receiving them). A lone change still goes at once; a change
#: reaches the peers at most this late.
BATCH_WINDOW = 0.005
#: A sync source silent this long is given up for the next peer.
SYNC_IDLE_TIMEOUT = 3.0
#: Warnings of one kind at most once per this many seconds (with a count).
LOG_EVERY = 10.0
#: Datagrams read per reactor wake-up before yielding to other sockets.
READS_PER_WAKEUP = 64
#: Sync batches a stream puts out per reactor turn.
SYNC_BATCHES_PER_TURN = 8

GROUP_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

_DOWN = (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTDIR)
_FULL = (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS)
_UCRED = struct.Struct("iII")
# Read once: module attributes are dict lookups from compiled code, and these were looked
# up for every datagram received.
_MSG_TRUNC: int = getattr(socket, "MSG_TRUNC", 0)
_SCM_CREDENTIALS: int | None = getattr(socket, "SCM_CREDENTIALS", None)
_SOL_SOCKET: int = socket.SOL_SOCKET
_CMSG_SIZE: int = socket.CMSG_SPACE(_UCRED.size)


def supported() -> bool:
    """Abstract Unix socket names exist on Linux only."""
    return sys.platform.startswith("linux")


def socket_name(group: str, index: int) -> bytes:
    return b"\0sipcalling-%s-%d" % (group.encode("ascii"), index)


class Malformed(ValueError):
    """A datagram that is not a valid message of this protocol."""


def _reject_constant(name: str) -> Any:
    raise Malformed(f"non-finite number {name}")


#: A str as a JSON string literal, quotes included, non-ASCII escaped (json's C helper).
_json_str = encode_basestring_ascii

#: Op codes: the first element of each op array.
PUT, DEL, DEL_ALL = "p", "d", "*"
SYNC_REQUEST, SYNC_PUT, SYNC_DONE = "sr", "sp", "sd"


def _datagram(ops: Sequence[bytes]) -> bytes:
    return b"[%d,%s]" % (VERSION, b",".join(ops))


def _json_opt(value: str | None) -> str:
    return "null" if value is None else _json_str(value)


def _json_float(value: float, name: str) -> str:
    x = float(value)
    if x - x != 0.0:  # inf or nan, which json.dumps(allow_nan=False) refuses too
        raise ValueError(f"non-finite {name}: {x}")
    return repr(x)  # what json.dumps writes: exact, read back bit for bit


def put_op(b: Binding, code: str = PUT) -> bytes:
    """``[code, aor, contact, expires_at, q, call_id, cseq, path, instance_id, reg_id,
    received, user_agent]``, written directly (no dict, no json.dumps: ~4x cheaper).

    ValueError (nothing sent) for a non-finite expires_at or q, as json.dumps would."""
    path = ",".join([_json_str(p) for p in b.path]) if b.path else ""
    reg_id = b.reg_id
    return (
        f'["{code}",{_json_str(b.aor)},{_json_str(b.contact)},'
        f'{_json_float(b.expires_at, "expires_at")},{_json_float(b.q, "q")},'
        f"{_json_str(b.call_id)},{int(b.cseq)},[{path}],{_json_opt(b.instance_id)},"
        f'{"null" if reg_id is None else int(reg_id)},{_json_opt(b.received)},'
        f"{_json_opt(b.user_agent)}]"
    ).encode("ascii")


def del_op(aor: str, contact: str, instance_id: str | None, reg_id: int | None) -> bytes:
    return (
        f'["{DEL}",{_json_str(aor)},{_json_str(contact)},{_json_opt(instance_id)},'
        f'{"null" if reg_id is None else int(reg_id)}]'
    ).encode("ascii")


def del_all_op(aor: str) -> bytes:
    return f'["{DEL_ALL}",{_json_str(aor)}]'.encode("ascii")


def sync_request_op() -> bytes:
    return f'["{SYNC_REQUEST}"]'.encode("ascii")


def sync_done_op(n: int) -> bytes:
    return f'["{SYNC_DONE}",{int(n)}]'.encode("ascii")


# -- parsing untrusted input ---------------------------------------------------------------
# `x - x != 0.0` is `not math.isfinite(x)` (inf - inf and nan - nan are nan) without a
# call through the math module, which compiled code makes generically: two per op.
# json.loads gives exact types (str, int, float, bool, None, list, dict, never a
# subclass), so `type(x) is T` is the check, and it refuses bools where ints are due.


def _number(value: Any, name: str) -> float:
    kind = type(value)
    if kind is not float and kind is not int:
        raise Malformed(f"bad {name}")
    try:
        x = float(value)
    except OverflowError:  # an integer of 400 digits
        raise Malformed(f"bad {name}") from None
    if x - x != 0.0:  # inf or nan (1e999 reads as inf)
        raise Malformed(f"bad {name}")
    return x


def _str_or_none(value: Any, name: str) -> str | None:
    if value is not None and type(value) is not str:
        raise Malformed(f"bad {name}")
    return value


def _int_or_none(value: Any, name: str) -> int | None:
    if value is not None and type(value) is not int:
        raise Malformed(f"bad {name}")
    return value


def binding_from_wire(op: Any) -> Binding:
    """A Binding from a peer's put or sync-put op, every position type-checked
    (binding_from_dict trusts its input; this does not)."""
    if type(op) is not list or len(op) != 12:
        raise Malformed("a binding op has 12 elements")
    aor = op[1]
    contact = op[2]
    call_id = op[5]
    cseq = op[6]
    path = op[7]
    if type(aor) is not str:
        raise Malformed("bad aor")
    if type(contact) is not str or not contact:
        raise Malformed("bad contact")
    expires_at = _number(op[3], "expires_at")
    q = _number(op[4], "q")
    if not 0.0 <= q <= 1.0:
        raise Malformed("bad q")
    if type(call_id) is not str:
        raise Malformed("bad call_id")
    if type(cseq) is not int:
        raise Malformed("bad cseq")
    if type(path) is not list:
        raise Malformed("bad path")
    for hop in path:
        if type(hop) is not str:
            raise Malformed("bad path")
    instance_id = _str_or_none(op[8], "instance_id")
    reg_id = _int_or_none(op[9], "reg_id")
    received = _str_or_none(op[10], "received")
    user_agent = _str_or_none(op[11], "user_agent")
    try:
        # Positional (no keyword matching): the wire's order is the fields' order, a
        # test checks the round trip field by field.
        return Binding(
            aor, contact, expires_at, q, call_id, cseq, tuple(path) if path else (),
            instance_id, reg_id, received, user_agent,
        )
    except (ValueError, TypeError) as err:  # an AOR without host ...
        raise Malformed(str(err)) from None


def parse_ops(data: bytes) -> list[tuple[Any, ...]]:
    """The ops of one datagram, validated; Malformed if anything is off (none applied).

    Returns ``("put", Binding)``, ``("sync-put", Binding)``, ``("del", aor, contact,
    instance_id, reg_id)``, ``("del-all", aor)``, ``("sync-request",)`` and
    ``("sync-done", n)`` tuples, AORs normalised."""
    try:
        msg = json.loads(data, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError
        raise Malformed(f"not JSON: {str(err)[:80]}") from None
    if type(msg) is not list or len(msg) < 2 or type(msg[0]) is not int or msg[0] != VERSION:
        raise Malformed(f"not a version {VERSION} message with ops")
    out: list[tuple[Any, ...]] = []
    for i in range(1, len(msg)):
        op = msg[i]
        if type(op) is not list or not op:
            raise Malformed("op is not a non-empty array")
        code = op[0]
        if code == PUT:
            out.append(("put", binding_from_wire(op)))
        elif code == DEL:
            if len(op) != 5:
                raise Malformed("a del op has 5 elements")
            aor = _aor(op[1])
            contact = op[2]
            if type(contact) is not str or not contact:
                raise Malformed("bad contact")
            out.append(("del", aor, contact, _str_or_none(op[3], "instance_id"),
                        _int_or_none(op[4], "reg_id")))
        elif code == DEL_ALL:
            if len(op) != 2:
                raise Malformed("a del-all op has 2 elements")
            out.append(("del-all", _aor(op[1])))
        elif code == SYNC_PUT:
            out.append(("sync-put", binding_from_wire(op)))
        elif code == SYNC_REQUEST:
            if len(op) != 1:
                raise Malformed("a sync-request op has 1 element")
            out.append(("sync-request",))
        elif code == SYNC_DONE:
            if len(op) != 2 or type(op[1]) is not int:
                raise Malformed("bad sync-done")
            out.append(("sync-done", op[1]))
        else:
            raise Malformed("unknown op")
    return out


def _aor(value: Any) -> str:
    if type(value) is not str:
        raise Malformed("bad aor")
    try:
        return normalise_aor(value)
    except ValueError as err:
        raise Malformed(str(err)) from None


def _same_key(a: Binding, b: Change) -> bool:
    """``a.key == b.key`` without formatting the two keys."""
    if a.instance_id is not None and a.reg_id is not None:
        return b.reg_id == a.reg_id and b.instance_id == a.instance_id
    return (b.instance_id is None or b.reg_id is None) and b.contact == a.contact


# -- the per-peer send queue -----------------------------------------------------------------


class _Peer:
    """One other worker: its socket name and the ops waiting for room in its queue."""

    __slots__ = ("index", "name", "queue", "queued_bytes", "timer", "stream", "last_sent")

    def __init__(self, index: int, name: bytes) -> None:
        self.index = index
        self.name = name
        self.last_sent = 0.0  # reactor time of the last datagram sent (BATCH_WINDOW)
        # Batches: [size in bytes, [op, op, ...]], each sent as one datagram.
        self.queue: deque[list[Any]] = deque()
        self.queued_bytes = 0
        self.timer: Any = None
        self.stream: _SyncStream | None = None

    def add(self, ops: Sequence[bytes]) -> None:
        queue = self.queue
        for op in ops:
            size = len(op) + 1
            last = queue[-1] if queue else None
            if last is not None and last[0] + size <= MAX_DATAGRAM:
                last[0] += size
                last[1].append(op)
            else:
                queue.append([size + 16, [op]])
            self.queued_bytes += size


class _SyncStream:
    """Our store, streamed to a peer that asked for it, a few batches per reactor turn."""

    def __init__(self, owner: ReplicatedLocationService, peer: _Peer, aors: list[str]) -> None:
        self.owner = owner
        self.peer = peer
        self.aors: Iterator[str] = iter(aors)
        self.sent = 0
        self.call: Any = None
        self.done = False

    def pump(self) -> None:
        self.call = None
        owner, peer = self.owner, self.peer
        if self.done or peer.stream is not self:
            return
        inner = owner.inner
        for _ in range(SYNC_BATCHES_PER_TURN):
            if len(peer.queue) > 2:
                break  # the peer is slow: let the queue drain first
            ops: list[bytes] = []
            size = 0
            for aor in self.aors:
                for b in inner.get_now(aor):
                    op = put_op(b, SYNC_PUT)
                    ops.append(op)
                    size += len(op) + 1
                if size >= MAX_DATAGRAM // 2:
                    break
            self.sent += len(ops)
            if not ops:
                self.finish()
                return
            if not owner._send(peer, ops):
                self.abort()  # the peer went away; it asks again when it is back
                return
        self.call = owner.reactor.callLater(RETRY_DELAY if peer.queue else 0, self.pump)

    def finish(self) -> None:
        self.done = True
        self.peer.stream = None
        self.owner._send(self.peer, [sync_done_op(self.sent)])
        log.info("replication: sent {n} bindings to worker {i}", n=self.sent, i=self.peer.index)

    def abort(self) -> None:
        self.done = True
        if self.call is not None and self.call.active():
            self.call.cancel()
        self.call = None
        if self.peer.stream is self:
            self.peer.stream = None


class _Warnings:
    """Counts and logs problems of one kind at most once per LOG_EVERY seconds."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.last: dict[str, float] = {}
        self.suppressed: dict[str, int] = {}

    def __call__(self, kind: str, text: str, **kw: Any) -> None:
        now = self.reactor.seconds()
        last = self.last.get(kind)
        if last is not None and now - last < LOG_EVERY:
            self.suppressed[kind] = self.suppressed.get(kind, 0) + 1
            return
        self.last[kind] = now
        more = self.suppressed.pop(kind, 0)
        log.warn("replication: " + text + (" ({more} more like it)" if more else ""),
                 more=more, **kw)


class _Reader:
    """The IReadDescriptor the reactor polls: our socket."""

    def __init__(self, owner: ReplicatedLocationService) -> None:
        self.owner = owner

    def fileno(self) -> int:
        sock = self.owner._sock
        return -1 if sock is None else sock.fileno()

    def doRead(self) -> None:  # noqa: N802
        self.owner._read()

    def connectionLost(self, reason: Any) -> None:  # noqa: N802
        pass

    def logPrefix(self) -> str:  # noqa: N802
        return "replication"


class ReplicatedLocationService:
    """A MemoryLocationService whose changes are replayed on the peer workers' copies.

    ``group``: shared by the workers of one supervisor (socket names); ``index``: this
    worker; ``count``: how many workers. ``on_aor(aor)`` is called for every AOR a peer
    put a binding into (the proxy's known AORs: 480 rather than 404 once it expires).
    ``reactor`` runs the socket and retry timers; expiry is by ``inner.clock``.
    """

    def __init__(
        self, inner: MemoryLocationService, group: str, index: int, count: int, *,
        reactor: Any = None, on_aor: Callable[[str], None] | None = None,
    ) -> None:
        if not supported():
            raise OSError("replicated memory: needs Linux (abstract Unix socket names)")
        if not GROUP_RE.match(group):
            raise ValueError(f"bad worker group {group!r}")
        if not 0 <= index < count:
            raise ValueError(f"worker index {index} not within 0..{count - 1}")
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.inner = inner
        self.clock = inner.clock
        self.reactor = reactor
        self.group = group
        self.index = index
        self.count_workers = count
        self.on_aor = on_aor
        # Reads go straight to the inner store: no wrapper call per INVITE/REGISTER.
        self.get_now = inner.get_now
        self.name = socket_name(group, index)
        self.peers = [_Peer(i, socket_name(group, i)) for i in range(count) if i != index]
        self._by_name = {p.name: p for p in self.peers}
        self.stats: dict[str, int] = dict.fromkeys(
            ("sent", "received", "applied", "stale", "dropped_down", "dropped_full",
             "dropped_other", "malformed", "foreign", "synced"), 0)
        self._warn = _Warnings(reactor)
        self._uid = os.geteuid()
        # Start-up sync (the client side).
        self.ready: defer.Deferred[int] = defer.Deferred()
        self._sync_from: _Peer | None = None
        self._sync_candidates: list[_Peer] = []
        self._sync_timer: Any = None
        self._sync_applied = 0
        self._tomb_keys: set[tuple[str, str]] = set()
        self._tomb_aors: set[str] = set()
        self._sock: socket.socket | None = self._bind()
        self._reader = _Reader(self)
        reactor.addReader(self._reader)
        log.info("replication: worker {i} of {n} on {name}", i=index, n=count,
                 name=self.name[1:].decode("ascii"))
        self._start_sync()

    def _bind(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            passcred = getattr(socket, "SO_PASSCRED", None)
            if passcred is not None:
                sock.setsockopt(socket.SOL_SOCKET, passcred, 1)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
            except OSError:
                pass  # capped by net.core.wmem_max anyway
            sock.bind(self.name)
        except OSError as err:
            sock.close()
            raise OSError(
                f"replication: cannot bind {self.name[1:].decode('ascii')!r}: {err}"
            ) from None
        return sock

    # -- LocationService: reads and admin, delegated -----------------------------------

    def get(self, aor: str) -> Any:
        return self.inner.get(aor)

    def purge_expired(self) -> Any:
        return self.inner.purge_expired()  # every copy expires by its own clock

    def count(self) -> Any:
        return self.inner.count()

    def aors(self) -> Any:
        return self.inner.aors()

    # -- changes: applied locally, then published -------------------------------------

    @deferred_errors
    def update(self, aor: str, changes: Sequence[Change]) -> Any:
        return defer.succeed(self.update_now(aor, changes))

    def update_now(self, aor: str, changes: Sequence[Change]) -> list[Binding]:
        """The registrar's synchronous path; raises StaleCSeq (nothing published)."""
        result = self.inner.update_now(aor, changes)
        if self._sock is not None:
            self._publish_update(normalise_aor(aor), changes, result)
        return result

    # Each publishes once the inner store has the change (bound methods, not closures:
    # this module is compiled by mypyc, see sipcore/accel.py).
    @deferred_errors
    def put(self, binding: Binding) -> Any:
        return self.inner.put(binding).addCallback(self._published_put, binding)

    def _published_put(self, result: Any, binding: Binding) -> Any:
        if binding.expires_at > self.clock.seconds():
            self._publish([put_op(binding)])
        else:  # an expired binding written is a removal
            self._publish([del_op(binding.aor, binding.contact, binding.instance_id,
                                  binding.reg_id)], tomb=[(binding.aor, binding.key)])
        return result

    @deferred_errors
    def remove(self, aor: str, contact: str) -> Any:
        aor = normalise_aor(aor)
        # Removal is by Contact URI whatever the key: publish one del per binding it hits.
        gone = [b for b in self.inner.get_now(aor) if b.contact == contact]
        ops = [del_op(aor, b.contact, b.instance_id, b.reg_id) for b in gone]
        tomb = [(aor, b.key) for b in gone]
        return self.inner.remove(aor, contact).addCallback(self._published, ops, tomb, None)

    @deferred_errors
    def remove_all(self, aor: str) -> Any:
        aor = normalise_aor(aor)
        return self.inner.remove_all(aor).addCallback(
            self._published, [del_all_op(aor)], [], aor)

    def _published(self, result: Any, ops: list[bytes], tomb: list[tuple[str, str]],
                   tomb_aor: str | None) -> Any:
        self._publish(ops, tomb=tomb, tomb_aor=tomb_aor)
        return result

    def close(self) -> Any:
        self._stop()
        return self.inner.close()

    def _stop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        self.reactor.removeReader(self._reader)
        sock.close()
        for peer in self.peers:
            if peer.timer is not None and peer.timer.active():
                peer.timer.cancel()
            peer.timer = None
            if peer.stream is not None:
                peer.stream.abort()
            peer.queue.clear()
            peer.queued_bytes = 0
        self._end_sync("closed")

    # -- publishing ----------------------------------------------------------------------

    def _publish_update(self, aor: str, changes: Sequence[Change], result: list[Binding]) -> None:
        """One REGISTER's effect as per-binding ops, from the resulting state."""
        try:
            if len(changes) == 1 and len(result) <= 1:  # the usual REGISTER: one contact
                change = changes[0]
                b = result[0] if result else None
                if b is not None and _same_key(b, change):
                    self._publish([put_op(b)])
                    return
                if change.contact != WILDCARD:  # removed (or expires=0 written)
                    self._publish([del_op(aor, change.contact, change.instance_id,
                                          change.reg_id)], tomb=[(aor, change.key)])
                    return
            now = {b.key: b for b in result}
            ops: list[bytes] = []
            tomb: list[tuple[str, str]] = []
            wildcard = any(isinstance(c, Removal) and c.contact == WILDCARD for c in changes)
            if wildcard:
                # `*` (alone, RFC 3261 §10.3 step 6, but whatever followed it is kept).
                ops.append(del_all_op(aor))
                ops.extend(put_op(b) for b in result)
            else:
                seen: set[str] = set()
                for change in changes:
                    key = change.key
                    if key in seen:
                        continue
                    seen.add(key)
                    b = now.get(key)
                    if b is not None:
                        ops.append(put_op(b))
                    else:
                        ops.append(del_op(aor, change.contact, change.instance_id,
                                          change.reg_id))
                        tomb.append((aor, key))
            self._publish(ops, tomb=tomb, tomb_aor=aor if wildcard else None)
        except Exception:
            # The store has changed and the REGISTER must still get its 200.
            log.failure("replication: cannot publish a change of {aor}", aor=aor)

    def _publish(self, ops: list[bytes], tomb: Sequence[tuple[str, str]] = (),
                 tomb_aor: str | None = None) -> None:
        if self._sync_from is not None:
            # A sync is streaming in: its copy of what we just removed must not return.
            self._tomb_keys.update(tomb)
            if tomb_aor is not None:
                self._tomb_aors.add(tomb_aor)
        if self._sock is None or not ops:
            return
        for peer in self.peers:
            self._send(peer, ops)

    def _send(self, peer: _Peer, ops: Sequence[bytes], quiet: bool = False) -> bool:
        """Queue `ops` for `peer` and send what its receive queue takes. False if down.

        `quiet`: a peer found down is not worth a warning (a sync-request at start-up)."""
        if self._sock is None:
            return False
        peer.add(ops)
        if peer.timer is not None:
            return True  # a flush or retry is due already and sends these too
        wait = peer.last_sent + BATCH_WINDOW - self.reactor.seconds()
        if wait > 0:
            peer.timer = self.reactor.callLater(wait, self._drain, peer)
            return True
        return self._drain(peer, quiet)

    def _drain(self, peer: _Peer, quiet: bool = False) -> bool:
        peer.timer = None
        sock = self._sock
        queue = peer.queue
        if sock is None:
            return False
        while queue:
            size, ops = queue[0]
            if size > MAX_DATAGRAM and (len(ops) > 1 or size > MAX_OP):
                # Only a single op may exceed MAX_DATAGRAM (add() never grows a batch past it).
                queue.popleft()
                peer.queued_bytes -= size - 16
                self.stats["dropped_other"] += len(ops)
                self._warn("size", "dropped an op of {size} bytes for worker {i}",
                           size=size, i=peer.index)
                continue
            try:
                sock.sendto(_datagram(ops), peer.name)
            except OSError as err:
                if err.errno in _FULL:
                    self._schedule(peer)
                    return True
                dropped = sum(len(batch[1]) for batch in queue)
                queue.clear()
                peer.queued_bytes = 0
                if err.errno in _DOWN:
                    self.stats["dropped_down"] += dropped
                    if not quiet:
                        self._warn(f"down{peer.index}", "worker {i} unreachable ({err}): "
                                   "{n} op(s) dropped; it resyncs when it starts",
                                   i=peer.index, err=os.strerror(err.errno or 0), n=dropped)
                    if peer.stream is not None:
                        peer.stream.abort()
                    return False
                self.stats["dropped_other"] += dropped
                self._warn("send", "sending to worker {i} failed: {err}", i=peer.index,
                           err=str(err))
                return True
            queue.popleft()
            peer.queued_bytes -= size - 16
            self.stats["sent"] += len(ops)
            peer.last_sent = self.reactor.seconds()
        return True

    def _schedule(self, peer: _Peer) -> None:
        # The peer's receive queue is full (or our send buffer): try again shortly,
        # dropping the oldest ops if it stays full for too long.
        dropped = 0
        while peer.queued_bytes > MAX_QUEUED_BYTES and len(peer.queue) > 1:
            size, ops = peer.queue.popleft()
            peer.queued_bytes -= size - 16
            dropped += len(ops)
        if dropped:
            self.stats["dropped_full"] += dropped
            self._warn(f"full{peer.index}", "worker {i} is not reading: {n} op(s) dropped; "
                       "its copy is stale until those AORs re-register", i=peer.index, n=dropped)
        peer.timer = self.reactor.callLater(RETRY_DELAY, self._drain, peer)

    # -- receiving -------------------------------------------------------------------------

    def _read(self) -> None:
        sock = self._sock
        if sock is None:
            return
        cmsg_size = _CMSG_SIZE
        for _ in range(READS_PER_WAKEUP):
            try:
                data, ancdata, flags, address = sock.recvmsg(RECV_SIZE, cmsg_size)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                self._warn("recv", "receive failed: {err}", err=str(err))
                return
            self._datagram(data, ancdata, flags, address)
            if self._sock is None:
                return  # closed by what the datagram triggered

    def _datagram(self, data: bytes, ancdata: Any, flags: int, address: Any) -> None:
        peer = self._by_name.get(address) if isinstance(address, bytes) else None
        if peer is None or not self._same_user(ancdata):
            self.stats["foreign"] += 1
            self._warn("foreign", "ignored a datagram from {addr!r}: not a worker of ours",
                       addr=address)
            return
        try:
            if flags & _MSG_TRUNC:
                raise Malformed("truncated")
            ops = parse_ops(data)
        except Malformed as err:
            self.stats["malformed"] += 1
            self._warn("malformed", "dropped a malformed datagram from worker {i}: {err}",
                       i=peer.index, err=str(err))
            return
        self.stats["received"] += 1
        for op in ops:
            try:
                self._apply(peer, op)
            except Exception:
                self.stats["malformed"] += 1
                log.failure("replication: cannot apply {op} from worker {i}", op=op[0],
                            i=peer.index)

    def _same_user(self, ancdata: Any) -> bool:
        scm = _SCM_CREDENTIALS
        if scm is None:
            return True
        for level, kind, value in ancdata:
            if level == _SOL_SOCKET and kind == scm and len(value) >= _UCRED.size:
                _pid, uid, _gid = _UCRED.unpack_from(value)
                return uid == self._uid
        return False

    def _apply(self, peer: _Peer, op: tuple[Any, ...]) -> None:
        kind = op[0]
        inner = self.inner
        if kind == "put":
            b: Binding = op[1]
            # Two workers racing on one binding converge: a put older than the stored
            # binding of its key and Call-ID (lower CSeq) is refused.
            if inner.put_newer_now(b):
                self._applied(b)
            else:
                self.stats["stale"] += 1
        elif kind == "sync-put":
            if peer is not self._sync_from:
                return  # a stream we gave up on, or an unasked one
            self._sync_touch()
            b = op[1]
            if (b.aor in self._tomb_aors or (b.aor, b.key) in self._tomb_keys
                    or self._stored(b) is not None):
                return  # changed since: what we have is newer
            self._put(b)
            self._sync_applied += 1
        elif kind == "del":
            _, aor, contact, instance_id, reg_id = op
            inner.update_now(aor, [Removal(contact, instance_id=instance_id, reg_id=reg_id)])
            if self._sync_from is not None:
                self._tomb_keys.add((aor, binding_key(contact, instance_id, reg_id)))
            self.stats["applied"] += 1
        elif kind == "del-all":
            inner.remove_all(op[1])
            if self._sync_from is not None:
                self._tomb_aors.add(op[1])
            self.stats["applied"] += 1
        elif kind == "sync-request":
            self._serve_sync(peer)
        elif kind == "sync-done":
            if peer is self._sync_from:
                log.info("replication: synced {n} bindings from worker {i} ({sent} sent)",
                         n=self._sync_applied, i=peer.index, sent=op[1])
                self._end_sync(None)

    def _stored(self, b: Binding) -> Binding | None:
        for old in self.inner.get_now(b.aor):
            if _same_key(old, b):
                return old
        return None

    def _put(self, b: Binding) -> None:
        self.inner.put_now(b)
        self._applied(b)

    def _applied(self, b: Binding) -> None:
        self.stats["applied"] += 1
        if self.on_aor is not None and b.expires_at > self.clock.seconds():
            self.on_aor(b.aor)

    # -- start-up sync ---------------------------------------------------------------------

    def _start_sync(self) -> None:
        n = self.count_workers
        by_index = {p.index: p for p in self.peers}
        self._sync_candidates = [by_index[(self.index + k) % n] for k in range(1, n)]
        self._next_sync()

    def _next_sync(self) -> None:
        self._sync_timer = None
        while self._sync_candidates and self._sock is not None:
            peer = self._sync_candidates.pop(0)
            self._sync_from = peer  # before sending: its answer may come at once
            self._sync_applied = 0
            if self._send(peer, [sync_request_op()], quiet=True):
                self._sync_timer = self.reactor.callLater(SYNC_IDLE_TIMEOUT, self._sync_idle)
                return
        self._end_sync("no peer answered (the first worker up, or alone)")

    def _sync_touch(self) -> None:
        if self._sync_timer is not None and self._sync_timer.active():
            self._sync_timer.reset(SYNC_IDLE_TIMEOUT)

    def _sync_idle(self) -> None:
        self._sync_timer = None
        peer = self._sync_from
        log.warn("replication: worker {i} did not finish our sync in time; next peer",
                 i=peer.index if peer else -1)
        self._next_sync()

    def _end_sync(self, why: str | None) -> None:
        if self._sync_timer is not None and self._sync_timer.active():
            self._sync_timer.cancel()
        self._sync_timer = None
        self._sync_from = None
        self._sync_candidates = []
        self._tomb_keys.clear()
        self._tomb_aors.clear()
        if why is not None and why != "closed":
            log.info("replication: no sync: {why}", why=why)
        self.stats["synced"] = self._sync_applied
        if not self.ready.called:
            self.ready.callback(self._sync_applied)

    def _serve_sync(self, peer: _Peer) -> None:
        if peer.stream is not None:
            peer.stream.abort()  # it restarted again: start over
        aors: list[str] = []
        self.inner.aors().addCallback(aors.extend)
        stream = peer.stream = _SyncStream(self, peer, aors)
        stream.pump()


# Not @implementer: see memory.py (mypyc compiles a decorated class as a Python class).
classImplements(ReplicatedLocationService, LocationService)


def open_for_workers(
    store: Any, config: Any, *, reactor: Any = None,
    on_aor: Callable[[str], None] | None = None,
) -> Any:
    """`store`, replicated when it is memory: in a worker of `--workers N` (N > 1).

    A worker is told its group, index and the workers' send ports by the supervisor
    (proxy.workers.worker_argv); anything else gets `store` back unchanged.
    """
    group = config.get("worker-group")
    ports = config.get("worker-ports") or ()
    if not group or len(ports) < 2 or not isinstance(store, MemoryLocationService):
        return store
    return ReplicatedLocationService(
        store, str(group), int(config["worker-index"]), len(ports),
        reactor=reactor, on_aor=on_aor,
    )
