"""The LocationService contract, run against every backend.

memory and sqlite run on a task.Clock; redis talks to the real redis-server from
conftest.py and uses a task.Clock too (expiry there is by the absolute times we
store, so advancing the fake clock makes reads filter bindings out).
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer, task

from registrar.location import (
    WILDCARD,
    Binding,
    LocationError,
    LocationService,
    Removal,
    StaleCSeq,
    normalise_aor,
    open_location,
)
from registrar.location.redis import RedisLocationService

AOR = "sip:alice@example.com"
# A realistic epoch start, so float precision of stored expiry is exercised.
T0 = 1_700_000_000.25


def b(contact: str, expires: float = 3600, aor: str = AOR, **kw: Any) -> Binding:
    """A binding expiring ``expires`` seconds after T0 (the fixture clock's start)."""
    kw.setdefault("call_id", "call-1")
    kw.setdefault("cseq", 1)
    return Binding(aor=aor, contact=contact, expires_at=T0 + expires, **kw)


class Backend:
    """Opens instances of one backend over one underlying store."""

    def __init__(self, name: str, url: str, clock: task.Clock) -> None:
        self.name = name
        self.url = url
        self.clock = clock
        self.opened: list[Any] = []

    @property
    def shared(self) -> bool:  # can two instances see the same data?
        return self.name != "memory"

    def open(self) -> Any:
        store = open_location(self.url, clock=self.clock)
        self.opened.append(store)
        return store


@pytest.fixture(params=["memory", "sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    clock = task.Clock()
    clock.advance(T0)
    if request.param == "memory":
        url = "memory:"
    elif request.param == "sqlite":
        url = f"sqlite:{tmp_path}/sub/dir/location.db"  # directories created on open
    else:
        url = f"redis://127.0.0.1:{request.getfixturevalue('redis_port')}/0"
    be = Backend(request.param, url, clock)
    yield be
    for store in be.opened:
        pytest_twisted.blockon(store.close())


@pytest.fixture
def store(backend: Backend) -> Any:
    return backend.open()


async def contacts(store: Any, aor: str = AOR) -> list[str]:
    return [x.contact for x in await store.get(aor)]


# -- basics ---------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_provides_interface(store: Any) -> None:
    assert LocationService.providedBy(store)
    assert await store.get(AOR) == []
    assert await store.count() == 0
    assert await store.aors() == []


@pytest_twisted.ensureDeferred
async def test_add_round_trips_every_field(store: Any) -> None:
    full = b(
        "sip:alice@192.0.2.1:5060;transport=tcp",
        q=0.7,
        call_id="abc@host",
        cseq=42,
        path=("<sip:edge1.example.com;lr>", "<sip:edge2.example.com;lr;ob>"),
        instance_id='"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"',
        reg_id=1,
        received="udp:198.51.100.7:40000",
        user_agent="Phone/1.0 (ünïcode)",
    )
    result = await store.update(AOR, [full])
    assert result == [full]
    assert await store.get(AOR) == [full]
    assert await store.count() == 1
    assert await store.aors() == [AOR]


@pytest_twisted.ensureDeferred
async def test_put_returns_none_and_is_visible(store: Any) -> None:
    assert await store.put(b("sip:a@192.0.2.1")) is None
    assert await contacts(store) == ["sip:a@192.0.2.1"]


@pytest_twisted.ensureDeferred
async def test_aor_is_normalised(store: Any) -> None:
    await store.put(b("sip:a@192.0.2.1", aor="sip:alice@EXAMPLE.com;transport=udp"))
    assert await contacts(store, "<sip:alice@Example.COM>") == ["sip:a@192.0.2.1"]
    assert await store.aors() == [AOR]


@pytest_twisted.ensureDeferred
async def test_refresh_same_contact_replaces_expiry(store: Any, backend: Backend) -> None:
    await store.update(AOR, [b("sip:a@192.0.2.1", 60, cseq=1)])
    await store.update(AOR, [b("sip:a@192.0.2.1", 600, cseq=2)])
    [only] = await store.get(AOR)
    assert only.expires_at == T0 + 600 and only.cseq == 2
    assert await store.count() == 1
    backend.clock.advance(120)  # past the first expiry, within the second
    assert await contacts(store) == ["sip:a@192.0.2.1"]


@pytest_twisted.ensureDeferred
async def test_remove(store: Any) -> None:
    await store.update(AOR, [b("sip:a@192.0.2.1"), b("sip:b@192.0.2.2")])
    assert await store.remove(AOR, "sip:a@192.0.2.1") is True
    assert await contacts(store) == ["sip:b@192.0.2.2"]
    assert await store.remove(AOR, "sip:a@192.0.2.1") is False
    assert await store.remove("sip:nobody@example.com", "sip:x@192.0.2.9") is False


@pytest_twisted.ensureDeferred
async def test_remove_by_contact_takes_flow_bindings_too(store: Any) -> None:
    await store.put(b("sip:a@192.0.2.1", instance_id="<urn:uuid:1>", reg_id=1))
    await store.put(b("sip:a@192.0.2.1", instance_id="<urn:uuid:1>", reg_id=2))
    assert await store.remove(AOR, "sip:a@192.0.2.1") is True
    assert await store.get(AOR) == []


@pytest_twisted.ensureDeferred
async def test_removal_change_removes_one_contact(store: Any) -> None:
    await store.update(AOR, [b("sip:a@192.0.2.1"), b("sip:b@192.0.2.2")])
    result = await store.update(AOR, [Removal("sip:a@192.0.2.1", call_id="call-1", cseq=2)])
    assert [x.contact for x in result] == ["sip:b@192.0.2.2"]
    assert await contacts(store) == ["sip:b@192.0.2.2"]


@pytest_twisted.ensureDeferred
async def test_remove_all_and_wildcard(store: Any) -> None:
    other = "sip:bob@example.com"
    await store.update(AOR, [b("sip:a@192.0.2.1"), b("sip:b@192.0.2.2")])
    await store.put(b("sip:bob@192.0.2.3", aor=other))
    assert await store.remove_all(AOR) == 2
    assert await store.get(AOR) == []
    assert await store.remove_all(AOR) == 0
    assert await store.aors() == [other]
    # Contact: * inside a REGISTER, from a different Call-ID: everything goes.
    await store.put(b("sip:bob@192.0.2.4", aor=other))
    assert await store.update(other, [Removal(WILDCARD, call_id="new", cseq=1)]) == []
    assert await store.count() == 0


@pytest_twisted.ensureDeferred
async def test_expiry_and_purge(store: Any, backend: Backend) -> None:
    await store.update(AOR, [b("sip:a@192.0.2.1", 30), b("sip:b@192.0.2.2", 90)])
    await store.put(b("sip:c@192.0.2.3", 30, aor="sip:carol@example.com"))
    await store.put(b("sip:d@192.0.2.4", 30, aor="sip:dave@example.com"))
    backend.clock.advance(30)  # expires_at == now counts as expired
    assert await store.purge_expired() == 3
    assert await store.purge_expired() == 0
    assert await contacts(store) == ["sip:b@192.0.2.2"]
    assert await store.count() == 1
    assert await store.aors() == [AOR]
    backend.clock.advance(60)
    assert await store.get(AOR) == []
    assert await store.count() == 0
    assert await store.aors() == []


@pytest_twisted.ensureDeferred
async def test_expired_bindings_are_invisible_before_purge(store: Any, backend: Backend) -> None:
    await store.put(b("sip:a@192.0.2.1", 10))
    backend.clock.advance(11)
    assert await store.get(AOR) == []
    assert await store.count() == 0
    assert await store.aors() == []
    # A dead binding takes no part in the CSeq check: same Call-ID, lower CSeq is fine.
    result = await store.update(AOR, [b("sip:a@192.0.2.1", 100, cseq=0)])
    assert [x.cseq for x in result] == [0]


@pytest_twisted.ensureDeferred
async def test_binding_already_expired_acts_as_removal(store: Any, backend: Backend) -> None:
    await store.update(AOR, [b("sip:a@192.0.2.1", cseq=1)])
    gone = Binding(AOR, "sip:a@192.0.2.1", expires_at=backend.clock.seconds(), cseq=2,
                   call_id="call-1")  # fmt: skip
    assert await store.update(AOR, [gone]) == []
    assert await store.count() == 0


def test_remaining() -> None:
    x = Binding(AOR, "sip:a@192.0.2.1", expires_at=T0 + 3600)
    assert x.remaining(T0) == 3600
    assert x.remaining(T0 + 0.5) == 3600  # rounded up: never report 0 while alive
    assert x.remaining(T0 + 3599.9) == 1
    assert x.remaining(T0 + 3600) == 0
    assert x.remaining(T0 + 9999) == 0
    # now + N in floats must not turn into N + 1
    now = 1_700_000_123.1
    assert Binding(AOR, "sip:a@h", expires_at=now + 3600).remaining(now) == 3600


@pytest_twisted.ensureDeferred
async def test_ordering_q_then_most_recent(store: Any, backend: Backend) -> None:
    await store.update(AOR, [b("sip:low@h", q=0.1), b("sip:mid1@h", q=0.5)])
    backend.clock.advance(1)
    await store.update(AOR, [b("sip:mid2@h", q=0.5, call_id="c2"), b("sip:top@h", q=1.0)])
    await store.put(b("sip:mid3@h", q=0.5, call_id="c3"))
    expected = ["sip:top@h", "sip:mid3@h", "sip:mid2@h", "sip:mid1@h", "sip:low@h"]
    assert await contacts(store) == expected
    # Refreshing an old binding makes it the most recent of its q.
    result = await store.update(AOR, [b("sip:mid1@h", q=0.5, cseq=2)])
    expected = ["sip:top@h", "sip:mid1@h", "sip:mid3@h", "sip:mid2@h", "sip:low@h"]
    assert [x.contact for x in result] == expected
    assert await contacts(store) == expected


# -- RFC 3261 §10.3 step 6: Call-ID / CSeq ordering --------------------------------


@pytest_twisted.ensureDeferred
async def test_stale_cseq_rejected_and_nothing_applied(store: Any) -> None:
    await store.update(AOR, [b("sip:a@h", 100, call_id="X", cseq=5)])
    for cseq in (5, 4):
        with pytest.raises(StaleCSeq) as info:
            # The new contact would be fine; the stale one aborts the whole REGISTER.
            await store.update(AOR, [b("sip:new@h", call_id="X", cseq=cseq),
                                     b("sip:a@h", 999, call_id="X", cseq=cseq)])  # fmt: skip
        assert info.value.stored_cseq == 5 and info.value.request_cseq == cseq
        assert isinstance(info.value, LocationError)
        assert "\n" not in str(info.value)
    [only] = await store.get(AOR)
    assert (only.contact, only.expires_at, only.cseq) == ("sip:a@h", T0 + 100, 5)


@pytest_twisted.ensureDeferred
async def test_higher_cseq_and_new_call_id_accepted(store: Any) -> None:
    await store.update(AOR, [b("sip:a@h", 100, call_id="X", cseq=5)])
    [r] = await store.update(AOR, [b("sip:a@h", 200, call_id="X", cseq=6)])
    assert r.cseq == 6
    # A different Call-ID (the UA rebooted) wins even with a lower CSeq.
    [r] = await store.update(AOR, [b("sip:a@h", 300, call_id="Y", cseq=1)])
    assert (r.call_id, r.cseq, r.expires_at) == ("Y", 1, T0 + 300)


@pytest_twisted.ensureDeferred
async def test_same_contact_twice_in_one_register(store: Any) -> None:
    await store.update(AOR, [b("sip:a@h", call_id="X", cseq=1)])
    # Checked against state before the request: the second entry does not trip
    # over the first one's write. Last one wins.
    result = await store.update(
        AOR, [b("sip:a@h", 100, call_id="X", cseq=2), b("sip:a@h", 200, call_id="X", cseq=2)]
    )
    assert [(x.contact, x.expires_at) for x in result] == [("sip:a@h", T0 + 200)]


@pytest_twisted.ensureDeferred
async def test_stale_removal_and_wildcard_rejected(store: Any) -> None:
    await store.update(AOR, [b("sip:a@h", call_id="X", cseq=5), b("sip:b@h", call_id="Z", cseq=1)])
    with pytest.raises(StaleCSeq):
        await store.update(AOR, [Removal("sip:a@h", call_id="X", cseq=5)])
    with pytest.raises(StaleCSeq):
        await store.update(AOR, [Removal(WILDCARD, call_id="X", cseq=3)])
    assert sorted(await contacts(store)) == ["sip:a@h", "sip:b@h"]
    # Higher CSeq on the same Call-ID: the wildcard removes every binding.
    assert await store.update(AOR, [Removal(WILDCARD, call_id="X", cseq=6)]) == []


@pytest_twisted.ensureDeferred
async def test_put_and_admin_removal_skip_cseq_check(store: Any) -> None:
    await store.update(AOR, [b("sip:a@h", 100, call_id="X", cseq=5)])
    await store.put(b("sip:a@h", 50, call_id="X", cseq=1))  # administrative overwrite
    [only] = await store.get(AOR)
    assert only.cseq == 1
    assert await store.update(AOR, [Removal("sip:a@h")]) == []  # no Call-ID: no check


@pytest_twisted.ensureDeferred
async def test_update_rejects_binding_of_other_aor(store: Any) -> None:
    d = store.update(AOR, [b("sip:x@h"), b("sip:x@h", aor="sip:bob@example.com")])
    with pytest.raises(ValueError):
        await d
    assert await store.count() == 0  # the valid first change was not applied either


@pytest_twisted.ensureDeferred
async def test_malformed_aor_is_a_failed_deferred(store: Any) -> None:
    for call in (lambda: store.get("nonsense"), lambda: store.remove_all("sip:"),
                 lambda: store.remove("", "sip:a@h"), lambda: store.update("x", [])):  # fmt: skip
        d = call()
        assert isinstance(d, defer.Deferred)
        with pytest.raises(ValueError):
            await d


# -- RFC 5626 / 3327 ------------------------------------------------------------------

INSTANCE = '"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>"'


@pytest_twisted.ensureDeferred
async def test_instance_reg_id_replaces_flow(store: Any) -> None:
    await store.update(AOR, [b("sip:a@10.0.0.1:5060", instance_id=INSTANCE, reg_id=1, cseq=1)])
    # Same flow (instance, reg-id) from a new address: replaces, even with a new Call-ID.
    result = await store.update(
        AOR, [b("sip:a@10.0.0.2:6000", instance_id=INSTANCE, reg_id=1, call_id="n", cseq=1)]
    )
    assert [x.contact for x in result] == ["sip:a@10.0.0.2:6000"]
    # Second flow of the same instance with the same Contact URI: a separate binding.
    result = await store.update(
        AOR, [b("sip:a@10.0.0.2:6000", instance_id=INSTANCE, reg_id=2, call_id="m", cseq=1)]
    )
    assert sorted((x.reg_id, x.contact) for x in result) == [
        (1, "sip:a@10.0.0.2:6000"),
        (2, "sip:a@10.0.0.2:6000"),
    ]
    # A stale CSeq on the same flow is caught by flow identity, not by contact.
    with pytest.raises(StaleCSeq):
        await store.update(
            AOR, [b("sip:a@10.0.0.9", instance_id=INSTANCE, reg_id=2, call_id="m", cseq=1)]
        )
    # Deregistering one flow leaves the other.
    result = await store.update(
        AOR, [Removal("sip:a@10.0.0.2:6000", instance_id=INSTANCE, reg_id=1, call_id="n", cseq=2)]
    )
    assert [x.reg_id for x in result] == [2]


@pytest_twisted.ensureDeferred
async def test_instance_without_reg_id_keys_by_contact(store: Any) -> None:
    await store.put(b("sip:a@10.0.0.1", instance_id=INSTANCE))
    await store.put(b("sip:a@10.0.0.2", instance_id=INSTANCE))
    assert sorted(await contacts(store)) == ["sip:a@10.0.0.1", "sip:a@10.0.0.2"]


@pytest_twisted.ensureDeferred
async def test_path_kept_in_order(store: Any) -> None:
    path = tuple(f"<sip:proxy{i}.example.com;lr>" for i in (3, 1, 2, 10, 0))
    await store.put(b("sip:a@h", path=path))
    [only] = await store.get(AOR)
    assert only.path == path and isinstance(only.path, tuple)


# -- scale and concurrency ------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_many_users(store: Any, backend: Backend) -> None:
    n = 2000
    await defer.gatherResults(
        [
            store.put(b(f"sip:u{i}@192.0.2.{i % 250}", 100 + i % 2, aor=f"sip:user{i}@example.com"))
            for i in range(n)
        ]
    )
    assert await store.count() == n
    names = await store.aors()
    assert len(names) == n and names == sorted(names)
    assert await contacts(store, "sip:user1234@example.com") == ["sip:u1234@192.0.2.234"]
    backend.clock.advance(100)  # the even half expires
    assert await store.count() == n // 2
    assert await store.purge_expired() == n // 2
    assert len(await store.aors()) == n // 2


@pytest_twisted.ensureDeferred
async def test_concurrent_updates_same_aor(store: Any) -> None:
    # Many REGISTERs for one AOR in flight at once, each adding its own contact.
    ds = [store.update(AOR, [b(f"sip:c{i}@h", call_id=f"call-{i}")]) for i in range(200)]
    await defer.gatherResults(ds)
    assert sorted(await contacts(store)) == sorted(f"sip:c{i}@h" for i in range(200))
    # Refreshes of one contact, increasing CSeq, all in flight: the highest CSeq must
    # end up stored; any failure may only be a (correctly) stale CSeq.
    ds = [store.update(AOR, [b("sip:c0@h", 1000 + i, call_id="call-0", cseq=10 + i)])
          for i in range(100)]  # fmt: skip
    results = await defer.DeferredList(ds, consumeErrors=True)
    for ok, value in results:
        if not ok:
            assert value.check(StaleCSeq), value
    [c0] = [x for x in await store.get(AOR) if x.contact == "sip:c0@h"]
    assert (c0.cseq, c0.expires_at) == (109, T0 + 1099)
    assert await store.count() == 200


@pytest_twisted.ensureDeferred
async def test_stale_update_among_concurrent_ones_fails_alone(store: Any, backend: Backend) -> None:
    # sqlite commits writes queued together in one transaction (issue 9): a stale
    # REGISTER in the middle must roll back only itself, in call order. Only sqlite
    # promises call order for writes in flight together (redis may retry a WATCH).
    if backend.name != "sqlite":
        pytest.skip("call order of concurrent writes is sqlite's (one queue)")
    stale = [b("sip:new@h", call_id="X", cseq=5), b("sip:a@h", 9, call_id="X", cseq=5)]
    await store.update(AOR, [b("sip:a@h", call_id="X", cseq=5)])
    ds = [
        store.update(AOR, [b("sip:before@h", call_id="B")]),
        store.update(AOR, stale),
        store.remove(AOR, "sip:before@h"),
        store.update(AOR, [b("sip:a@h", 50, call_id="X", cseq=6)]),
        store.put(b("sip:after@h", call_id="C")),
    ]  # fmt: skip
    results = await defer.DeferredList(ds, consumeErrors=True)
    assert [ok for ok, _ in results] == [True, False, True, True, True]
    assert results[1][1].check(StaleCSeq)
    assert results[2][1] is True
    assert sorted(await contacts(store)) == ["sip:a@h", "sip:after@h"]
    [a] = [x for x in await store.get(AOR) if x.contact == "sip:a@h"]
    assert (a.cseq, a.expires_at) == (6, T0 + 50)


@pytest_twisted.ensureDeferred
async def test_concurrent_updates_different_aors(store: Any) -> None:
    ds = []
    for i in range(300):
        aor = f"sip:user{i % 30}@example.com"
        ds.append(store.update(aor, [b(f"sip:c{i}@h", aor=aor, call_id=f"c{i}")]))
        if i % 7 == 0:
            ds.append(store.update(aor, [Removal(f"sip:c{i}@h")]))  # right behind its add
    await defer.gatherResults(ds)
    expected = {i for i in range(300) if i % 7}
    seen = set()
    for u in range(30):
        for x in await store.get(f"sip:user{u}@example.com"):
            seen.add(int(x.contact[5:].split("@")[0]))
    assert seen == expected
    assert await store.count() == len(expected)


@pytest_twisted.ensureDeferred
async def test_two_instances_share_one_store(backend: Backend) -> None:
    if not backend.shared:
        pytest.skip("memory: is process-local by design")
    one, two = backend.open(), backend.open()
    await one.update(AOR, [b("sip:a@h", call_id="X", cseq=1)])
    assert await contacts(two) == ["sip:a@h"]  # immediately, no caching
    await two.update(AOR, [b("sip:b@h", call_id="Y", cseq=1)])
    assert sorted(await contacts(one)) == ["sip:a@h", "sip:b@h"]
    # The CSeq check sees the other instance's write.
    with pytest.raises(StaleCSeq):
        await one.update(AOR, [b("sip:b@h", call_id="Y", cseq=1)])
    # Interleaved concurrent writers through both instances.
    ds = [
        (one if i % 2 else two).update(AOR, [b(f"sip:n{i}@h", call_id=f"n{i}")]) for i in range(100)
    ]
    await defer.gatherResults(ds)
    assert await one.count() == await two.count() == 102
    assert await two.remove_all(AOR) == 102
    assert await one.get(AOR) == []


@pytest_twisted.ensureDeferred
async def test_persistence_across_reopen(backend: Backend) -> None:
    if not backend.shared:
        pytest.skip("memory: does not persist by design")
    first = backend.open()
    await first.update(AOR, [b("sip:a@h", 3600, path=("<sip:p;lr>",), cseq=7),
                             b("sip:b@h", 60, q=0.2)])  # fmt: skip
    await first.close()
    backend.clock.advance(600)  # "restart" ten minutes later
    second = backend.open()
    [a] = await second.get(AOR)
    assert (a.contact, a.cseq, a.path) == ("sip:a@h", 7, ("<sip:p;lr>",))
    assert a.remaining(backend.clock.seconds()) == 3000
    with pytest.raises(StaleCSeq):  # ordering state survives the restart too
        await second.update(AOR, [b("sip:a@h", call_id="call-1", cseq=7)])


@pytest_twisted.ensureDeferred
async def test_closed_store_fails_cleanly(backend: Backend) -> None:
    store = backend.open()
    await store.close()
    await store.close()  # idempotent
    if backend.name == "memory":
        return
    with pytest.raises(LocationError):
        await store.get(AOR)


# -- differential: every backend agrees with the memory model -------------------------


def _random_changes(rng: random.Random, now: float) -> list[Any]:
    changes: list[Any] = []
    for _ in range(rng.randint(1, 3)):
        contact = f"sip:c{rng.randint(0, 4)}@h"
        call_id = rng.choice(["A", "B"])
        cseq = rng.randint(1, 6)
        roll = rng.random()
        flow = {"instance_id": "<urn:uuid:1>", "reg_id": rng.randint(1, 2)} if roll < 0.2 else {}
        if roll < 0.7:
            changes.append(Binding(AOR, contact, expires_at=now + rng.choice([-1, 5, 30, 60]),
                                   q=rng.choice([0.1, 0.5, 1.0]), call_id=call_id, cseq=cseq,
                                   **flow))  # fmt: skip
        elif roll < 0.95:
            changes.append(Removal(contact, call_id=call_id, cseq=cseq, **flow))
        else:
            changes.append(Removal(WILDCARD, call_id=call_id, cseq=cseq))
    return changes


@pytest_twisted.ensureDeferred
async def test_agrees_with_memory_model(backend: Backend) -> None:
    if backend.name == "memory":
        pytest.skip("memory is the model")
    rng = random.Random(5626)
    model = open_location("memory:", clock=backend.clock)
    store = backend.open()
    for step in range(400):
        changes = _random_changes(rng, backend.clock.seconds())
        outcome = []
        for s in (model, store):
            try:
                outcome.append(("ok", await s.update(AOR, changes)))
            except StaleCSeq as e:
                # Which of several stale bindings gets named is unspecified.
                outcome.append(("stale", e.request_cseq))
        assert outcome[0] == outcome[1], (step, changes)
        if rng.random() < 0.2:
            backend.clock.advance(rng.choice([1, 10, 40]))
        assert await store.get(AOR) == await model.get(AOR), step


def _put_newer_by_update(store: Any, binding: Binding) -> bool:
    """The rule ``put_newer_now`` implements, through the general update path."""
    try:
        store.update_now(binding.aor, [binding])
    except StaleCSeq as err:
        if err.stored_cseq > err.request_cseq:
            return False
        store.put_now(binding)
    return True


def _result(d: defer.Deferred[Any]) -> Any:
    """memory:'s answer, there at once."""
    out: list[Any] = []
    d.addCallback(out.append)
    return out[0]


def test_put_newer_now_agrees_with_the_general_update_path() -> None:
    """memory:'s one-lookup path for a peer's put (registrar.location.replicated) keeps
    what update_now would keep, refuses what it would refuse, and expires the same."""
    clock = task.Clock()
    clock.advance(T0)
    fast = open_location("memory:", clock=clock)
    model = open_location("memory:", clock=clock)
    rng = random.Random(3261)
    aors = [AOR, "sip:bob@example.com"]
    refused = 0
    for step in range(3000):
        flow = {"instance_id": "<urn:uuid:1>", "reg_id": rng.randint(1, 2)}
        if rng.random() < 0.8:
            flow = {}
        binding = Binding(rng.choice(aors), f"sip:c{rng.randint(0, 3)}@h",
                          expires_at=clock.seconds() + rng.choice([-1, 0, 5, 30, 60]),
                          q=rng.choice([0.5, 1.0]), call_id=rng.choice(["A", "B"]),
                          cseq=rng.randint(1, 6), **flow)  # fmt: skip
        kept = fast.put_newer_now(binding)
        assert kept == _put_newer_by_update(model, binding), (step, binding)
        refused += not kept
        if rng.random() < 0.1:
            clock.advance(rng.choice([1, 10, 40]))
        if rng.random() < 0.05:
            assert _result(fast.purge_expired()) == _result(model.purge_expired()), step
        assert _result(fast.count()) == _result(model.count()), step
        if rng.random() < 0.1:  # reads drop expired bindings: not after every put
            for aor in aors:
                assert fast.get_now(aor) == model.get_now(aor), step
    assert 100 < refused < 2900  # both outcomes were exercised


def test_memory_expiry_index_is_exact_through_refreshes() -> None:
    """memory:'s heap holds times to look, not one entry per write (memory.py): through
    refreshes that lengthen and shorten expiry, removals, reads and purges, count() is
    the live bindings, a purge leaves none expired behind, and refreshes do not grow
    the heap."""
    clock = task.Clock()
    clock.advance(T0)
    store = open_location("memory:", clock=clock)
    rng = random.Random(1033)
    aors = [f"sip:u{i}@example.com" for i in range(6)]
    cseq = 0
    for step in range(4000):
        aor, contact = rng.choice(aors), f"sip:c{rng.randint(0, 2)}@h"
        roll = rng.random()
        cseq += 1
        if roll < 0.55:
            ttl = rng.choice([1, 5, 30, 60, 600])
            store.update_now(aor, [Binding(aor, contact, clock.seconds() + ttl,
                                           call_id="c", cseq=cseq)])
        elif roll < 0.7:
            store.put_newer_now(Binding(aor, contact, clock.seconds() + rng.choice([2, 40]),
                                        call_id="c", cseq=cseq))
        elif roll < 0.78:
            store.update_now(aor, [Removal(contact, call_id="c", cseq=cseq)])
        elif roll < 0.8:
            store.remove_all(aor)
        elif roll < 0.85:
            store.get_now(aor)  # drops that AOR's expired bindings on the way
        elif roll < 0.9:
            _result(store.purge_expired())
            stored = [b for entries in store._aors.values() for _, b in entries.values()]
            assert all(b.expires_at > clock.seconds() for b in stored), step
        else:
            clock.advance(rng.choice([1, 3, 10, 45]))
        live = sum(1 for entries in store._aors.values() for _, b in entries.values()
                   if b.expires_at > clock.seconds())
        assert _result(store.count()) == live, step

    # One binding refreshed many times: its first entry covers every later expiry.
    store = open_location("memory:", clock=clock)
    for n in range(1, 5001):
        store.update_now(AOR, [b("sip:a@h", expires=clock.seconds() - T0 + 60, cseq=n)])
        clock.advance(0.01)
    assert len(store._heap) == 1
    clock.advance(59)  # past the first expiry, not the last
    assert _result(store.purge_expired()) == 0
    assert [x.cseq for x in store.get_now(AOR)] == [5000]
    clock.advance(2)
    assert _result(store.purge_expired()) == 1
    assert _result(store.count()) == 0


# -- opening, URLs and failures -------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["", "memory", "memory:x", "sqlite:", "postgres://h/db", "redis:", "redis://",
     "redis://h:notaport/0", "redis://h:6379/x", "redis://h:6379/0?x=1", "file:/tmp/x"],
)  # fmt: skip
def test_bad_url_is_one_line_value_error(url: str) -> None:
    with pytest.raises(ValueError) as info:
        open_location(url)
    msg = str(info.value)
    assert "\n" not in msg and "memory:" in msg and "redis://HOST:PORT/DB" in msg


@pytest_twisted.ensureDeferred
async def test_open_location_kinds(tmp_path: Path) -> None:
    clock = task.Clock()
    assert type(open_location("memory:", clock=clock)).__name__ == "MemoryLocationService"
    s = open_location(f"sqlite:{tmp_path}/a.db", clock=clock)
    assert type(s).__name__ == "SqliteLocationService"
    await s.close()
    r = open_location("redis://127.0.0.1:1/3", clock=clock)
    assert isinstance(r, RedisLocationService)
    await r.close()


def test_sqlite_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.db"
    path.write_bytes(b"this is not a sqlite database, just junk " * 200)
    with pytest.raises(LocationError) as info:
        open_location(f"sqlite:{path}")
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg and "not a database" in msg
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_sqlite_unusable_paths_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("x")
    for bad in (tmp_path / "adir", tmp_path / "afile" / "sub" / "loc.db"):
        with pytest.raises(LocationError) as info:
            open_location(f"sqlite:{bad}")
        assert "\n" not in str(info.value) and "sqlite location store" in str(info.value)


@pytest_twisted.ensureDeferred
async def test_redis_unreachable_is_a_clear_error() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = RedisLocationService("127.0.0.1", port, 0, clock=task.Clock(), timeout=0.5)
    try:
        with pytest.raises(LocationError) as info:
            await store.get(AOR)
        assert "\n" not in str(info.value) and f"127.0.0.1:{port}" in str(info.value)
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_redis_frees_dead_aors_with_ttl(redis_port: int) -> None:
    from tests.registrar.conftest import redis_command

    clock = task.Clock()
    clock.advance(T0)
    store = open_location(f"redis://127.0.0.1:{redis_port}/0", clock=clock)
    try:
        await store.update(AOR, [b("sip:a@h", 30), b("sip:b@h", 90)])
        # TTL = ceil(max remaining) + 1; Redis may already have counted a second off.
        ttl = int(redis_command(redis_port, "TTL", "sipcalling:loc:" + AOR)[1:])
        assert ttl in (90, 91)
        await store.remove_all(AOR)
        assert redis_command(redis_port, "EXISTS", "sipcalling:loc:" + AOR) == b":0\r\n"
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("sip:alice@example.com", "sip:alice@example.com"),
        ("SIP:alice@EXAMPLE.com", "sip:alice@example.com"),
        ("<sip:alice@example.com;transport=tcp?subject=x>", "sip:alice@example.com"),
        ("sip:alice:secret@example.com", "sip:alice@example.com"),
        ("sip:%61lice@example.com", "sip:alice@example.com"),
        ("sip:Alice@example.com", "sip:Alice@example.com"),  # user part is case-sensitive
        ("sip:alice;x=y@example.com:5070", "sip:alice;x=y@example.com:5070"),
        ("sips:alice@example.com", "sips:alice@example.com"),
        ("sip:example.com", "sip:example.com"),
        # §19.1.4: escaped and unescaped are the same user, but a "%" stays escaped.
        ("sip:a%2541@h", "sip:a%2541@h"),
        ("sip:a%40b@h", "sip:a%40b@h"),
        ("sip:a%2fb%3Bc@h", "sip:a/b;c@h"),
        ("sip:%C3%A9t%C3%A9@h", "sip:%C3%A9t%C3%A9@h"),
        ("sip:a%zz@h", "sip:a%25zz@h"),
    ],
)
def test_normalise_aor(given: str, canonical: str) -> None:
    assert normalise_aor(given) == canonical
    assert normalise_aor(canonical) == canonical


@given(st.text(min_size=1, max_size=20).filter(lambda u: "@" not in u and ":" not in u))
def test_normalise_aor_is_idempotent(user: str) -> None:
    # A replicated peer and Binding.__post_init__ normalise what was normalised
    # already: the key must not move ("a%2541" once became "a%41", then "aA").
    try:
        aor = normalise_aor(f"sip:{user}@example.com")
    except ValueError:
        return
    assert normalise_aor(aor) == aor


@pytest.mark.parametrize("bad", ["", "alice", "sip:", "sip:alice@"])
def test_normalise_aor_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        normalise_aor(bad)
