"""registrar.location.replicated: memory: copies kept in step over real abstract Unix
datagram sockets, several instances in this one reactor.

Expiry runs on a shared task.Clock; the sockets and retry timers on the real reactor,
so every wait here is a bounded poll (`eventually`).
"""

from __future__ import annotations

import itertools
import os
import socket
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from registrar.location import WILDCARD, Binding, LocationService, Removal, StaleCSeq
from registrar.location.memory import MemoryLocationService
from registrar.location.replicated import (
    ReplicatedLocationService,
    open_for_workers,
    parse_ops,
    put_op,
    socket_name,
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

    def start(self, index: int) -> ReplicatedLocationService:
        known = self.known.setdefault(index, set())
        node = ReplicatedLocationService(
            MemoryLocationService(clock=self.clock), self.group, index, self.count,
            reactor=reactor, on_aor=known.add,
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


# -- untrusted input, peers down ---------------------------------------------------------

GARBAGE = [
    b"",
    b"\xff\xfe\x00",
    b"not json",
    b"[1, 2, 3]",
    b"{}",
    b'{"v": 2, "ops": []}',
    b'{"v": 1, "ops": []}',
    b'{"v": 1, "ops": "put"}',
    b'{"v": 1, "ops": [7]}',
    b'{"v": 1, "ops": [{"op": "explode"}]}',
    b'{"v": 1, "ops": [{"op": "put"}]}',
    b'{"v": 1, "ops": [{"op": "put", "b": {"aor": 1}}]}',
    b'{"v": 1, "ops": [{"op": "del", "aor": "sip:x@h", "contact": ""}]}',
    b'{"v": 1, "ops": [{"op": "del-all", "aor": "sip:"}]}',
    b'{"v": 1, "ops": [{"op": "sync-done", "n": "many"}]}',
    b"[" * 100_000,
    # A good op followed by a bad one: nothing of the datagram is applied.
    b'{"v":1,"ops":[' + put_op(b("sip:half@h")) + b',{"op":"del"}]}',
]


def _bad_binding(**changes: Any) -> bytes:
    import json

    from registrar.location.binding import binding_to_dict

    d = binding_to_dict(b("sip:bad@h"))
    d.update(changes)
    return json.dumps({"v": 1, "ops": [{"op": "put", "b": d}]}).encode()


GARBAGE += [
    _bad_binding(q=7),
    _bad_binding(q=True),
    _bad_binding(expires_at="soon"),
    _bad_binding(cseq=1.5),
    _bad_binding(contact=""),
    _bad_binding(path=[1]),
    _bad_binding(aor="nonsense"),
    _bad_binding(call_id=None),
    _bad_binding(expires_at=1e999),  # "Infinity"
]


@pytest.mark.parametrize("data", GARBAGE, ids=range(len(GARBAGE)))
def test_parse_ops_refuses_garbage(data: bytes) -> None:
    from registrar.location.replicated import Malformed

    with pytest.raises(Malformed):
        parse_ops(data)


@pytest_twisted.ensureDeferred
async def test_garbage_datagrams_are_dropped_and_the_store_keeps_working(cluster) -> None:
    c = cluster(3)
    a, b_ = await started(c, 0, 1)
    # Worker 2's name, taken by a stranger of the same uid: parsed, refused, logged.
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as evil:
        evil.bind(socket_name(c.group, 2))
        await send_all(evil, GARBAGE, a.name)
        await eventually(lambda: a.stats["malformed"] == len(GARBAGE))
    # Not a worker's name at all (unbound, or another group): ignored without parsing.
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as anon:
        anon.sendto(b'{"v":1,"ops":[' + put_op(b("sip:intruder@h")) + b"]}", a.name)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as other:
        other.bind(socket_name(c.group + "x", 1))
        other.sendto(b'{"v":1,"ops":[' + put_op(b("sip:intruder@h")) + b"]}", a.name)
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
