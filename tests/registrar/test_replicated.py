"""registrar.location.replicated: memory: copies kept in step over real abstract Unix
datagram sockets, several instances in this one reactor.

Expiry runs on a shared task.Clock; the sockets and retry timers on the real reactor,
so every wait here is a bounded poll (`eventually`).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import socket
import string
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import pytest_twisted
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from twisted.internet import reactor, task

from registrar.location import WILDCARD, Binding, LocationService, Removal, StaleCSeq
from registrar.location.memory import MemoryLocationService
from registrar.location.replicated import (
    BATCH_WINDOW,
    SYNC_PUT,
    Malformed,
    ReplicatedLocationService,
    _datagram,
    del_all_op,
    del_op,
    open_for_workers,
    parse_ops,
    put_op,
    socket_name,
    sync_done_op,
    sync_request_op,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="abstract Unix sockets are Linux-only")

AOR = "sip:alice@example.com"
T0 = 1_700_000_000.25
_groups = itertools.count()


def b(contact: str, expires: float = 3600, aor: str = AOR, **kw: Any) -> Binding:
    kw.setdefault("call_id", "call-1")
    kw.setdefault("cseq", 1)
    return Binding(aor=aor, contact=contact, expires_at=T0 + expires, **kw)


class Cluster:
    """`count` worker slots of one group; `start(i)` opens (or reopens) worker i."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.group = f"t{os.getpid()}-{next(_groups)}"
        self.clock = task.Clock()
        self.clock.advance(T0)
        self.nodes: dict[int, ReplicatedLocationService] = {}
        self.known: dict[int, set[str]] = {}

    def start(self, index: int, node_reactor: Any = reactor) -> ReplicatedLocationService:
        known = self.known.setdefault(index, set())
        node = ReplicatedLocationService(
            MemoryLocationService(clock=self.clock), self.group, index, self.count,
            reactor=node_reactor, on_aor=known.add,
        )
        self.nodes[index] = node
        return node

    def stop(self, index: int) -> None:
        node = self.nodes.pop(index)
        node.close()  # memory: done at once

    def close(self) -> None:
        for index in list(self.nodes):
            self.stop(index)


@pytest.fixture
def cluster() -> Iterator[Callable[[int], Cluster]]:
    made: list[Cluster] = []

    def make(count: int) -> Cluster:
        c = Cluster(count)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll `check` on the real reactor until true; fail after `timeout` seconds."""
    deadline = reactor.seconds() + timeout
    while not check():
        if reactor.seconds() > deadline:
            raise AssertionError(f"condition not met within {timeout:.1f} s")
        await task.deferLater(reactor, 0.005, lambda: None)


async def started(c: Cluster, *indexes: int) -> list[ReplicatedLocationService]:
    nodes = [c.start(i) for i in indexes]
    for node in nodes:
        await node.ready
    return nodes


def size(node: ReplicatedLocationService) -> int:
    out: list[int] = []
    node.inner.count().addCallback(out.append)
    return out[0]


async def send_all(sock: socket.socket, datagrams: list[bytes], dest: bytes) -> None:
    """Non-blocking sends, waiting (bounded) while the receiver's short queue is full."""
    sock.setblocking(False)
    for data in datagrams:
        deadline = reactor.seconds() + 5
        while True:
            try:
                sock.sendto(data, dest)
                break
            except BlockingIOError:
                assert reactor.seconds() < deadline, "receiver never drained"
                await task.deferLater(reactor, 0.005, lambda: None)


def contacts(node: ReplicatedLocationService, aor: str = AOR) -> list[str]:
    return [x.contact for x in node.get_now(aor)]


# -- replication ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_update_on_one_is_seen_by_every_peer(cluster) -> None:
    c = cluster(3)
    a, b_, c_ = await started(c, 0, 1, 2)
    assert LocationService.providedBy(a)
    full = b("sip:a@192.0.2.1;transport=tcp", q=0.5, call_id="x@h", cseq=7,
             path=("<sip:edge;lr>",), instance_id='"<urn:uuid:1>"', reg_id=1,
             received="UDP 198.51.100.7:40000", user_agent="Phone/1.0 (ünïcode)")
    assert await a.update(AOR, [full]) == [full]
    await eventually(lambda: b_.get_now(AOR) == [full] and c_.get_now(AOR) == [full])
    # The proxy's known AORs (480 rather than 404 later) learn it too.
    assert AOR in c.known[1] and AOR in c.known[2]
    # Changes from several origins, and several bindings of one AOR.
    b_.update_now(AOR, [b("sip:b@192.0.2.2", call_id="call-b")])
    c_.update_now("sip:bob@example.com", [b("sip:bob@192.0.2.3", aor="sip:bob@example.com")])
    for node in (a, b_, c_):
        await eventually(lambda n=node: sorted(contacts(n)) == [
            "sip:a@192.0.2.1;transport=tcp", "sip:b@192.0.2.2"])
        await eventually(lambda n=node: contacts(n, "sip:bob@example.com") == ["sip:bob@192.0.2.3"])
    assert await b_.count() == 3
    assert await a.aors() == ["sip:alice@example.com", "sip:bob@example.com"]


@pytest_twisted.ensureDeferred
async def test_removals_replicate(cluster) -> None:
    c = cluster(3)
    a, b_, c_ = await started(c, 0, 1, 2)
    a.update_now(AOR, [b("sip:1@h"), b("sip:2@h", call_id="c2"), b("sip:3@h", call_id="c3")])
    a.update_now("sip:bob@example.com", [b("sip:bob@h", aor="sip:bob@example.com")])
    await eventually(lambda: len(contacts(c_)) == 3 and len(contacts(b_)) == 3)
    # expires=0 through update (a Removal with the REGISTER's Call-ID/CSeq) ...
    b_.update_now(AOR, [Removal("sip:1@h", call_id="call-1", cseq=2)])
    await eventually(lambda: sorted(contacts(a)) == sorted(contacts(c_)) == ["sip:2@h", "sip:3@h"])
    # ... an administrative remove() ...
    assert await c_.remove(AOR, "sip:2@h") is True
    await eventually(lambda: contacts(a) == contacts(b_) == ["sip:3@h"])
    # ... Contact: * through update, and remove_all.
    a.update_now(AOR, [Removal(WILDCARD, call_id="c3", cseq=5)])
    await eventually(lambda: contacts(b_) == contacts(c_) == [])
    assert await b_.remove_all("sip:bob@example.com") == 1
    await eventually(lambda: a.get_now("sip:bob@example.com") == c_.get_now("sip:bob@example.com")
                     == [])
    assert await a.count() == await b_.count() == await c_.count() == 0


@pytest_twisted.ensureDeferred
async def test_cseq_rule_is_enforced_at_the_origin(cluster) -> None:
    c = cluster(2)
    a, b_ = await started(c, 0, 1)
    a.update_now(AOR, [b("sip:a@h", cseq=5)])
    await eventually(lambda: [x.cseq for x in b_.get_now(AOR)] == [5])
    with pytest.raises(StaleCSeq):
        a.update_now(AOR, [b("sip:a@h", expires=60, cseq=5)])
    with pytest.raises(StaleCSeq):
        await a.update(AOR, [b("sip:a@h", expires=60, cseq=4)])
    sent = a.stats["sent"]
    with pytest.raises(StaleCSeq):
        a.update_now(AOR, [b("sip:a@h", expires=60, cseq=5)])
    assert a.stats["sent"] == sent  # nothing published for the refused ones
    # A later, accepted refresh replicates; B (where the CSeq was not checked again)
    # follows even though B holds the same Call-ID: the origin decided.
    a.update_now(AOR, [b("sip:a@h", expires=120, cseq=6)])
    await eventually(lambda: [(x.cseq, x.expires_at) for x in b_.get_now(AOR)] == [(6, T0 + 120)])


@pytest_twisted.ensureDeferred
async def test_an_older_put_does_not_overwrite_a_newer_one(cluster) -> None:
    # Two workers racing on one binding: the higher CSeq of one Call-ID wins everywhere.
    c = cluster(2)
    a, b_ = await started(c, 0, 1)
    b_.inner.put(b("sip:a@h", cseq=9))  # B's copy already has the newer one
    a.inner.put(b("sip:a@h", cseq=3))
    await a.put(b("sip:a@h", cseq=4))
    await eventually(lambda: b_.stats["stale"] == 1)
    assert [x.cseq for x in b_.get_now(AOR)] == [9]


@pytest_twisted.ensureDeferred
async def test_a_put_of_the_same_cseq_replaces_and_a_higher_one_wins(cluster) -> None:
    c = cluster(2)
    a, b_ = await started(c, 0, 1)
    b_.inner.put(b("sip:a@h", cseq=5, expires=60))
    b_.inner.put(b("sip:b@h", call_id="other", cseq=9))
    # The same Call-ID and CSeq (an administrative put): the later one is kept.
    await a.put(b("sip:a@h", cseq=5, expires=120))
    # Another Call-ID: no CSeq order between the two, the put wins.
    await a.put(b("sip:b@h", call_id="new", cseq=1))
    await eventually(lambda: b_.stats["applied"] == 2)
    assert {(x.contact, x.call_id, x.cseq, x.expires_at) for x in b_.get_now(AOR)} == {
        ("sip:a@h", "call-1", 5, T0 + 120), ("sip:b@h", "new", 1, T0 + 3600)}
    assert b_.stats["stale"] == 0


@pytest_twisted.ensureDeferred
async def test_expiry_needs_no_message(cluster) -> None:
    c = cluster(2)
    a, b_ = await started(c, 0, 1)
    a.update_now(AOR, [b("sip:short@h", expires=60), b("sip:long@h", expires=600, call_id="l")])
    await eventually(lambda: len(contacts(b_)) == 2)
    assert {x.expires_at for x in b_.get_now(AOR)} == {T0 + 60, T0 + 600}
    received = b_.stats["received"]
    c.clock.advance(61)
    assert contacts(a) == contacts(b_) == ["sip:long@h"]
    assert await b_.purge_expired() == 0  # dropped lazily by the read already
    c.clock.advance(600)
    assert await a.count() == await b_.count() == 0
    assert b_.stats["received"] == received


@pytest_twisted.ensureDeferred
async def test_a_burst_larger_than_the_peer_queue_arrives_whole(cluster) -> None:
    # net.unix.max_dgram_qlen is often 10: most of these sends hit EAGAIN first.
    c = cluster(2)
    a, b_ = await started(c, 0, 1)
    down = a.stats["dropped_down"]  # A's own sync-request, sent before B was up
    for i in range(3000):
        a.update_now(f"sip:u{i}@example.com", [b(f"sip:u{i}@h", aor=f"sip:u{i}@example.com")])
    await eventually(lambda: size(b_) == 3000, timeout=15)
    assert await b_.count() == 3000
    assert a.stats["dropped_full"] == 0 and a.stats["dropped_down"] == down



class PacedReactor:
    """The real reactor's socket polling with a Clock's time and timers, so that a test
    decides when the send pacing's timers run."""

    def __init__(self, clock: task.Clock) -> None:
        self.clock = clock

    def seconds(self) -> float:
        return self.clock.seconds()

    def callLater(self, delay: float, f: Callable[..., Any], *args: Any) -> Any:  # noqa: N802
        return self.clock.callLater(delay, f, *args)

    def addReader(self, reader: Any) -> None:  # noqa: N802
        reactor.addReader(reader)

    def removeReader(self, reader: Any) -> None:  # noqa: N802
        reactor.removeReader(reader)


@pytest_twisted.ensureDeferred
async def test_changes_to_a_peer_leave_at_most_once_per_batch_window(cluster) -> None:
    c = cluster(2)
    (b_,) = await started(c, 1)
    clock = task.Clock()
    clock.advance(T0)
    a = c.start(0, PacedReactor(clock))
    await a.ready  # synced from B over the real sockets
    clock.advance(BATCH_WINDOW)  # past the window of the sync-request
    sent, received = a.stats["sent"], b_.stats["received"]

    def u(i: int) -> None:
        a.update_now(f"sip:u{i}@example.com", [b(f"sip:u{i}@h", aor=f"sip:u{i}@example.com")])

    u(1)  # a lone change goes at once
    assert a.stats["sent"] == sent + 1
    clock.advance(BATCH_WINDOW / 5)
    u(2)
    clock.advance(BATCH_WINDOW / 5)
    u(3)
    clock.advance(0)  # a later reactor turn, still inside the window: nothing leaves
    assert a.stats["sent"] == sent + 1
    clock.advance(BATCH_WINDOW)
    assert a.stats["sent"] == sent + 3
    await eventually(lambda: size(b_) == 3)
    assert b_.stats["received"] == received + 2  # one datagram each: u1, then u2 + u3


# -- start-up sync -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_restarted_instance_syncs_the_existing_bindings(cluster) -> None:
    c = cluster(3)
    a, b_, c_ = await started(c, 0, 1, 2)
    for i in range(1500):  # several sync datagrams, and more than the peer queue holds
        a.update_now(f"sip:u{i}@example.com", [b(f"sip:u{i}@h", aor=f"sip:u{i}@example.com")])
    b_.update_now(AOR, [b("sip:phone@h"), b("sip:desk@h", call_id="d")])
    await eventually(lambda: size(c_) == 1502, timeout=15)
    c.stop(2)
    # Changes while it is down: lost for it (peer down), but not for the sync.
    a.update_now(AOR, [Removal("sip:desk@h")])
    b_.update_now("sip:new@example.com", [b("sip:new@h", aor="sip:new@example.com")])
    assert a.stats["dropped_down"] >= 1
    again = c.start(2)
    synced = await again.ready
    assert synced == 1502
    assert await again.count() == 1502
    assert contacts(again) == ["sip:phone@h"]
    assert contacts(again, "sip:new@example.com") == ["sip:new@h"]
    assert again.get_now("sip:u1499@example.com") == a.get_now("sip:u1499@example.com")
    assert "sip:u7@example.com" in c.known[2]
    # And it is a full member again: its changes reach the others, theirs reach it.
    again.update_now(AOR, [b("sip:tablet@h", call_id="t")])
    await eventually(lambda: "sip:tablet@h" in contacts(a) and "sip:tablet@h" in contacts(b_))
    a.update_now(AOR, [Removal("sip:phone@h")])
    await eventually(lambda: contacts(again) == ["sip:tablet@h"])


@pytest_twisted.ensureDeferred
async def test_sync_does_not_resurrect_what_was_removed_meanwhile(cluster) -> None:
    c = cluster(2)
    a = c.start(0)
    await a.ready  # alone: nobody to sync from
    assert a.stats["synced"] == 0
    for i in range(50):
        a.inner.put(b(f"sip:u{i}@h", aor=f"sip:u{i}@example.com"))
    joining = c.start(1)  # its sync-request is on its way to A
    # Before A streams its store (u5 included): B removes u5 itself (a REGISTER with
    # Contact: * through B) and holds a binding of u3 that A's copy lacks.
    joining.inner.put(b("sip:u3@h", aor="sip:u3@example.com", cseq=2, expires=99))
    assert await joining.remove_all("sip:u5@example.com") == 0
    await joining.ready
    assert joining.stats["synced"] == 48
    await eventually(lambda: a.get_now("sip:u5@example.com") == [])
    assert joining.get_now("sip:u5@example.com") == []
    assert [x.cseq for x in joining.get_now("sip:u3@example.com")] == [2]
    assert await joining.count() == 49


def test_open_for_workers_wraps_only_memory_in_a_worker(tmp_path) -> None:
    clock = task.Clock()
    store = MemoryLocationService(clock=clock)
    assert open_for_workers(store, {}) is store
    assert open_for_workers(store, {"worker-group": "g", "worker-index": 0,
                                    "worker-ports": [5070]}) is store  # one worker
    group = f"t{os.getpid()}-{next(_groups)}"
    config = {"worker-group": group, "worker-index": 1, "worker-ports": [5070, 5072]}
    other = object()
    assert open_for_workers(other, config) is other  # sqlite/redis: shared already
    replicated = open_for_workers(store, config)
    try:
        assert isinstance(replicated, ReplicatedLocationService)
        assert replicated.inner is store and replicated.index == 1
    finally:
        replicated.close()


# -- the wire format ---------------------------------------------------------------------

FULL = b("sip:a@192.0.2.1;transport=tcp", expires=0.1 + 1 / 3, q=0.123456789,
         call_id="x@h", cseq=2**40 + 7, path=("<sip:edge1;lr>", '<sip:"e\\2";lr>'),
         instance_id='"<urn:uuid:1>"', reg_id=3, received="UDP 198.51.100.7:40000",
         user_agent="Phone/1.0 (ünïcode \u2603 \U0001f600)")


def test_a_put_round_trips_every_field() -> None:
    # Every field distinct, so a swapped position cannot go unnoticed.
    [(kind, got)] = parse_ops(_datagram([put_op(FULL)]))
    assert kind == "put" and got == FULL
    assert repr(got.expires_at) == repr(FULL.expires_at) and got.q == 0.123456789
    assert got.path == FULL.path and isinstance(got.path, tuple)
    assert json.loads(put_op(FULL)) == [
        "p", AOR, FULL.contact, FULL.expires_at, FULL.q, "x@h", 2**40 + 7,
        list(FULL.path), '"<urn:uuid:1>"', 3, "UDP 198.51.100.7:40000", FULL.user_agent]
    bare = Binding(aor="tel:+15551234", contact="tel:+15551234", expires_at=T0)
    [(kind, got)] = parse_ops(_datagram([put_op(bare, SYNC_PUT)]))
    assert kind == "sync-put" and got == bare
    assert got.path == () and got.instance_id is got.reg_id is got.received is None


def test_the_other_ops_round_trip() -> None:
    data = _datagram([
        del_op(AOR, "sip:x@h", None, None), del_op(AOR, "sip:y@h", "<urn:x>", 0),
        del_all_op("sip:bob@example.com"), sync_request_op(), sync_done_op(12)])
    assert data.startswith(b"[2,") and put_op(FULL).isascii()
    assert parse_ops(data) == [
        ("del", AOR, "sip:x@h", None, None), ("del", AOR, "sip:y@h", "<urn:x>", 0),
        ("del-all", "sip:bob@example.com"), ("sync-request",), ("sync-done", 12)]


def test_an_unsendable_binding_is_refused_at_the_origin() -> None:
    for field in ("expires_at", "q"):
        for value in (math.inf, math.nan):
            bad = Binding(aor=AOR, contact="sip:x@h", expires_at=T0)
            object.__setattr__(bad, field, value)
            with pytest.raises(ValueError, match="non-finite"):
                put_op(bad)


# Hypothesis: any binding survives the wire, escaped user parts included (normalise_aor
# is idempotent, so the peer's Binding keeps the key).
_aor_users = st.text(string.ascii_letters + string.digits + "-_.!~*'()+%/;=", min_size=1,
                     max_size=12)
_aors = st.one_of(
    st.builds("sip:{}@{}.example.com".format, _aor_users, st.from_regex(r"[a-z0-9]{1,8}",
                                                                         fullmatch=True)),
    st.builds("sips:{}@example.org:5061".format, _aor_users),
    st.from_regex(r"tel:\+[0-9]{3,12}", fullmatch=True),
)
_texts = st.text(max_size=40)
_finite = st.floats(allow_nan=False, allow_infinity=False)
bindings = st.builds(
    Binding, aor=_aors, contact=st.text(min_size=1, max_size=60), expires_at=_finite,
    q=st.floats(0.0, 1.0), call_id=_texts, cseq=st.integers(-2**63, 2**63),
    path=st.lists(_texts, max_size=3).map(tuple), instance_id=st.none() | _texts,
    reg_id=st.none() | st.integers(-2**63, 2**63), received=st.none() | _texts,
    user_agent=st.none() | _texts,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(bindings, min_size=1, max_size=4))
def test_any_binding_round_trips(items: list[Binding]) -> None:
    ops = parse_ops(_datagram([put_op(x) for x in items]))
    assert ops == [("put", x) for x in items]
    for (_, got), x in zip(ops, items):
        assert repr(got.expires_at) == repr(x.expires_at) and repr(got.q) == repr(x.q)
        assert type(got.path) is tuple


# -- untrusted input, peers down ---------------------------------------------------------

HALF = "sip:half@example.com"
#: A valid op: every malformed datagram below carries it first, so that a partly
#: applied datagram would show.
GOOD = json.loads(put_op(b("sip:half@h", aor=HALF)))
GOOD_BYTES = put_op(b("sip:half@h", aor=HALF))


def _put_with(position: int, value: Any) -> list[Any]:
    op = list(GOOD)
    op[position] = value
    return op


#: Wrong values for each position of a put: a wrong JSON type, a bool where an int is
#: due, out of range, an invalid AOR, an empty contact.
BAD_PUT_VALUES: dict[int, list[Any]] = {
    1: [1, None, True, [], {}, "nonsense", "sip:", "", "sip:x@"],
    2: ["", 1, None, True, ["sip:x@h"]],
    3: ["soon", True, False, None, [], {}],
    4: [7, -0.5, 1.0000001, True, "1", None],
    5: [None, 1, True, []],
    6: [1.5, 1.0, True, False, "1", None, []],
    7: ["<sip:e;lr>", [1], [None], [["<sip:e>"]], None, {}, [True]],
    8: [1, True, [], {}],
    9: ["1", 1.5, 1.0, True, False, []],
    10: [1, True, []],
    11: [1, False, {}],
}
BAD_OPS: list[Any] = [
    _put_with(position, value)
    for position, values in BAD_PUT_VALUES.items() for value in values
] + [
    GOOD[:-1], GOOD + [None], ["p"], ["sp"], ["sp", *GOOD[1:-1]],  # wrong arity
    ["d", AOR, "sip:x@h", None], ["d", AOR, "sip:x@h", None, None, None],
    ["d", AOR, "", None, None], ["d", AOR, 5, None, None], ["d", AOR, None, None, None],
    ["d", "sip:", "sip:x@h", None, None], ["d", 1, "sip:x@h", None, None],
    ["d", AOR, "sip:x@h", 1, None], ["d", AOR, "sip:x@h", "<urn:x>", True],
    ["d", AOR, "sip:x@h", "<urn:x>", 1.0],
    ["*"], ["*", AOR, AOR], ["*", "sip:"], ["*", "nonsense"], ["*", None], ["*", 1],
    ["sr", 1], ["sd"], ["sd", "many"], ["sd", True], ["sd", 1.0], ["sd", None], ["sd", 1, 2],
    ["x"], ["put", *GOOD[1:]], ["del-all", AOR], [7], [None], [True], [["p"]], [{}],  # unknown
    [], {}, {"op": "put"}, "p", 7, None, True, 1.5,  # not an op array
]
#: Raw text json.dumps would not write: non-finite numbers, an integer too large to be
#: a float.
RAW_BAD_OPS: list[bytes] = [
    b'["p","sip:x@example.com","sip:x@h",NaN,1.0,"c",1,[],null,null,null,null]',
    b'["p","sip:x@example.com","sip:x@h",Infinity,1.0,"c",1,[],null,null,null,null]',
    b'["p","sip:x@example.com","sip:x@h",-Infinity,1.0,"c",1,[],null,null,null,null]',
    b'["p","sip:x@example.com","sip:x@h",1e999,1.0,"c",1,[],null,null,null,null]',
    b'["p","sip:x@example.com","sip:x@h",-1e999,1.0,"c",1,[],null,null,null,null]',
    b'["p","sip:x@example.com","sip:x@h",1' + b"0" * 400
    + b',1.0,"c",1,[],null,null,null,null]',
    b'["p","sip:x@example.com","sip:x@h",1.0,NaN,"c",1,[],null,null,null,null]',
    b'["p","sip:x@example.com","sip:x@h",1.0,1e999,"c",1,[],null,null,null,null]',
    b'["p","sip:x@example.com","sip:x@h",1.0,1.0,"c",NaN,[],null,null,null,null]',
    b'["sd",NaN]',
    b'["sd",Infinity]',
]


def _with_good(op: Any) -> bytes:
    return b"[2," + GOOD_BYTES + b"," + json.dumps(op, ensure_ascii=False).encode() + b"]"


GARBAGE = [
    b"",
    b"\xff\xfe\x00",
    b"not json",
    b"[1, 2, 3]",
    b"{}",
    b"[]",
    b"[2]",  # no ops
    b"null",
    b'"[2]"',
    b"[" * 100_000,
    b"[2," + GOOD_BYTES,  # cut short
    b"[" + GOOD_BYTES + b"]",  # no version
    b"[1," + GOOD_BYTES + b"]",
    b"[3," + GOOD_BYTES + b"]",
    b"[2.0," + GOOD_BYTES + b"]",
    b"[true," + GOOD_BYTES + b"]",
    b'["2",' + GOOD_BYTES + b"]",
    b"[NaN," + GOOD_BYTES + b"]",
    b"[[2]," + GOOD_BYTES + b"]",
    # Version 1 (the workers of one supervisor run the same code: it is not spoken).
    b'{"v":1,"ops":[{"op":"del-all","aor":"sip:half@example.com"}]}',
    b'{"v":2,"ops":[' + GOOD_BYTES + b"]}",
    b"[2," + GOOD_BYTES + b"," + GOOD_BYTES + b"]x",  # trailing junk
] + [_with_good(op) for op in BAD_OPS] + [
    b"[2," + GOOD_BYTES + b"," + op + b"]" for op in RAW_BAD_OPS
]


@pytest.mark.parametrize("data", GARBAGE, ids=range(len(GARBAGE)))
def test_parse_ops_refuses_garbage(data: bytes) -> None:
    with pytest.raises(Malformed):
        parse_ops(data)


def test_the_garbage_is_garbage_only_for_its_bad_op() -> None:
    # The good op alone, and each wrapper without the bad op, parse: the tests above
    # refuse what they mean to.
    assert parse_ops(b"[2," + GOOD_BYTES + b"]") == [("put", b("sip:half@h", aor=HALF))]
    assert parse_ops(b"[2," + GOOD_BYTES + b"," + json.dumps(GOOD).encode() + b"]")
    template = b'["p","sip:x@example.com","sip:x@h",1.0,1.0,"c",1,[],null,null,null,null]'
    assert parse_ops(b"[2," + template + b',["sd",1]]')[0][1].expires_at == 1.0


#: Positions of a put and what each takes (JSON types; the bool check is separate).
_PUT_TYPES: dict[int, tuple[type, ...]] = {
    1: (str,), 2: (str,), 3: (int, float), 4: (int, float), 5: (str,), 6: (int,),
    7: (list,), 8: (str, type(None)), 9: (int, type(None)), 10: (str, type(None)),
    11: (str, type(None)),
}
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False,
                                                          allow_infinity=False) | _texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_texts, inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(bindings, st.integers(1, 11), _json_values)
def test_a_put_with_a_value_of_the_wrong_type_is_refused(
    x: Binding, position: int, value: Any,
) -> None:
    assume(isinstance(value, bool) or not isinstance(value, _PUT_TYPES[position]))
    op = json.loads(put_op(x))
    op[position] = value
    with pytest.raises(Malformed):
        parse_ops(b"[2," + GOOD_BYTES + b"," + json.dumps(op).encode() + b"]")


@settings(max_examples=500, deadline=None)
@given(st.one_of(
    _json_values.map(lambda v: json.dumps(v).encode()),
    st.lists(_json_values, max_size=3).map(lambda ops: json.dumps([2, *ops]).encode()),
    st.lists(st.sampled_from(["p", "sp", "d", "*", "sr", "sd"]).flatmap(
        lambda code: st.lists(_json_values, max_size=12).map(lambda rest: [code, *rest])),
        min_size=1, max_size=3).map(lambda ops: json.dumps([2, *ops]).encode()),
    st.binary(max_size=200),
))
def test_parse_ops_either_refuses_or_gives_valid_ops(data: bytes) -> None:
    # Whatever arrives: Malformed, or ops whose every value has the type it should.
    try:
        ops = parse_ops(data)
    except Malformed:
        return
    assert ops
    for op in ops:
        if op[0] in ("put", "sync-put"):
            assert isinstance(op[1], Binding) and op[1].contact
            assert math.isfinite(op[1].expires_at) and 0.0 <= op[1].q <= 1.0
        elif op[0] == "del":
            assert all(type(v) is str for v in op[1:3]) and op[2]
        else:
            assert op[0] in ("del-all", "sync-request", "sync-done")


@pytest_twisted.ensureDeferred
async def test_garbage_datagrams_are_dropped_and_the_store_keeps_working(cluster) -> None:
    c = cluster(3)
    a, b_ = await started(c, 0, 1)
    # Worker 2's name, taken by a stranger of the same uid: parsed, refused, logged.
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as evil:
        evil.bind(socket_name(c.group, 2))
        await send_all(evil, GARBAGE, a.name)
        await eventually(lambda: a.stats["malformed"] == len(GARBAGE))
    assert a.get_now(HALF) == [] and a.stats["applied"] == 0  # not even the good op
    # Not a worker's name at all (unbound, or another group): ignored without parsing.
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as anon:
        anon.sendto(_datagram([put_op(b("sip:intruder@h"))]), a.name)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as other:
        other.bind(socket_name(c.group + "x", 1))
        other.sendto(_datagram([put_op(b("sip:intruder@h"))]), a.name)
    await eventually(lambda: a.stats["foreign"] == 2)
    assert a.get_now(AOR) == []
    # Still replicating both ways.
    a.update_now(AOR, [b("sip:a@h")])
    b_.update_now(AOR, [b("sip:b@h", call_id="b")])
    await eventually(lambda: sorted(contacts(a)) == sorted(contacts(b_)) == ["sip:a@h", "sip:b@h"])


@pytest_twisted.ensureDeferred
async def test_a_peer_that_is_down_does_not_break_the_sender(cluster) -> None:
    c = cluster(3)
    a, b_ = await started(c, 0, 1)  # worker 2 never starts
    for i in range(20):
        result = a.update_now(AOR, [b("sip:a@h", cseq=i + 1)])
        assert [x.cseq for x in result] == [i + 1]
    await a.put(b("sip:p@h", call_id="p"))
    assert await a.remove(AOR, "sip:p@h") is True
    assert await a.remove_all(AOR) == 1
    assert a.stats["dropped_down"] >= 23
    await eventually(lambda: b_.stats["applied"] >= 23)
    assert b_.get_now(AOR) == []
    # A closed instance neither sends nor breaks: its store answers on its own.
    c.stop(1)
    a.update_now(AOR, [b("sip:after@h", call_id="z")])
    assert contacts(a) == ["sip:after@h"]


@pytest_twisted.ensureDeferred
async def test_the_name_of_a_running_worker_cannot_be_taken(cluster) -> None:
    c = cluster(2)
    await started(c, 0)
    with pytest.raises(OSError, match="cannot bind"):
        ReplicatedLocationService(MemoryLocationService(clock=c.clock), c.group, 0, 2)
