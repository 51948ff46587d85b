"""The registrar's synchronous (memory:) path and the store helpers it leans on.

The memory store answers without a Deferred chain, the Date header is formatted once
per second of the clock and single-binding AORs skip the sort; these pin that the
shortcuts answer exactly what the general path does.
"""

from __future__ import annotations

import email.utils

import pytest
from twisted.internet import task

from registrar.location import Binding, Removal, open_location
from registrar.location.binding import apply_changes, sort_bindings
from registrar.registrar import Registrar
from sipcore.message import Response
from tests.registrar.test_registrar import SOURCE, START, FakeTx, register, send


@pytest.fixture
def clock() -> task.Clock:
    c = task.Clock()
    c.advance(START)
    return c


@pytest.fixture
def registrar(clock: task.Clock) -> Registrar:
    return Registrar(["a.lab"], open_location("memory:", clock), clock)


# -- Date ----------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.999999, 0.9999996, 0.9999999])
def test_date_is_what_formatdate_says_at_any_fraction(fraction):
    clock = task.Clock()
    clock.advance(START + fraction)
    registrar = Registrar(["a.lab"], open_location("memory:", clock), clock)
    r = send(registrar, register(expires="300"))
    assert r.headers.get("Date") == email.utils.formatdate(clock.seconds(), usegmt=True)


def test_date_follows_the_clock_second_by_second():
    clock = task.Clock()
    clock.advance(START)
    registrar = Registrar(["a.lab"], open_location("memory:", clock), clock)
    seen = []
    for step, cseq in zip([0.0, 0.4, 0.7, 1.0, 3600.0], range(1, 6)):
        clock.advance(step)
        r = send(registrar, register(cseq=cseq, expires="300"))
        assert r.headers.get("Date") == email.utils.formatdate(clock.seconds(), usegmt=True)
        seen.append(r.headers.get("Date"))
    assert seen[0] == seen[1] and seen[1] != seen[2] and seen[2] != seen[3] != seen[4]


def test_date_before_the_epoch_is_still_formatdate():
    clock = task.Clock()
    clock.rightNow = -0.5  # int() truncates towards zero: must not share second 0
    registrar = Registrar(["a.lab"], open_location("memory:", clock), clock)
    assert registrar._date(-0.5) == email.utils.formatdate(-0.5, usegmt=True)
    assert registrar._date(0.5) == email.utils.formatdate(0.5, usegmt=True)


# -- exactly one final response on the synchronous path ---------------------------------


class RaisingTx(FakeTx):
    def send_response(self, response: Response) -> None:
        super().send_response(response)
        raise RuntimeError("transport broke")


def test_send_failure_on_sync_path_sends_nothing_more(registrar):
    tx = RaisingTx()
    d = registrar.handle(register(expires="300"), tx, SOURCE)
    result: list[object] = []
    d.addBoth(result.append)
    assert result == [None]
    assert [r.status for r in tx.responses] == [200]


def test_error_response_goes_through_chain_once(registrar):
    tx = FakeTx()
    d = registrar.handle(register(expires="10"), tx, SOURCE)
    assert d.called
    assert [r.status for r in tx.responses] == [423]


def test_location_can_be_replaced(registrar, clock):
    registrar.location = open_location("memory:", clock)
    send(registrar, register(expires="300"))
    [b] = registrar.location.get_now("sip:alice@a.lab")
    assert b.contact == "sip:alice@192.0.2.10:5060"


def test_supported_path_echo_reuses_the_stored_path(registrar):
    r = send(registrar, register(
        "Supported: path", "Path: <sip:p1.a.lab;lr>", "Path: <sip:p2.a.lab;lr>, <sip:p3;lr>",
        expires="300",
    ))
    assert r.headers.get_all("Path") == ["<sip:p1.a.lab;lr>", "<sip:p2.a.lab;lr>", "<sip:p3;lr>"]
    # A query has no stored Path to reuse: the echo reads the request.
    q = send(registrar, register("Supported: path", "Path: <sip:p9;lr>", cseq=2, contact=None))
    assert q.headers.get_all("Path") == ["<sip:p9;lr>"]


# -- binding helpers ------------------------------------------------------------------


def _b(contact: str, q: float = 1.0, expires_at: float = 100.0, cseq: int = 1) -> Binding:
    return Binding("sip:a@x", contact, expires_at, q=q, call_id="c", cseq=cseq)


def test_sort_bindings_one_and_many():
    one = _b("sip:1@h")
    assert sort_bindings([(7, one)]) == [one]
    assert sort_bindings([]) == []
    low, high, newer = _b("sip:1@h", q=0.5), _b("sip:2@h"), _b("sip:3@h")
    assert sort_bindings([(1, low), (2, high), (3, newer)]) == [newer, high, low]


def test_apply_changes_counts_expired_sequence_numbers_and_reports_removed():
    current = {
        "c:sip:old@h": (9, _b("sip:old@h", expires_at=10.0)),  # expired at now=50
        "c:sip:live@h": (4, _b("sip:live@h")),
    }
    result = apply_changes("sip:a@x", current, [_b("sip:new@h", cseq=2)], now=50.0)
    assert result.removed == {"c:sip:old@h"}
    assert result.written == {"c:sip:new@h": (10, _b("sip:new@h", cseq=2))}
    assert set(result.state) == {"c:sip:live@h", "c:sip:new@h"}
    assert current["c:sip:old@h"][0] == 9  # the caller's mapping is left alone
    assert len(current) == 2


def test_apply_changes_rewriting_an_expired_key_is_not_a_removal():
    current = {"c:sip:x@h": (3, _b("sip:x@h", expires_at=10.0))}
    result = apply_changes("sip:a@x", current, [_b("sip:x@h", cseq=2)], now=50.0)
    assert result.removed == set()
    assert result.written == {"c:sip:x@h": (4, _b("sip:x@h", cseq=2))}


def test_apply_changes_removal_and_wildcard():
    current = {"c:sip:x@h": (1, _b("sip:x@h")), "c:sip:y@h": (2, _b("sip:y@h"))}
    result = apply_changes("sip:a@x", current, [Removal("sip:x@h", "c", 2)], now=50.0)
    assert result.removed == {"c:sip:x@h"} and set(result.state) == {"c:sip:y@h"}
    result = apply_changes("sip:a@x", current, [Removal("*", "c", 2)], now=50.0)
    assert result.removed == {"c:sip:x@h", "c:sip:y@h"} and result.state == {}


def test_tx_sees_one_final_response_for_each_register(registrar):
    for cseq in range(1, 4):
        tx = FakeTx()
        registrar.handle(register(cseq=cseq, expires="300"), tx, SOURCE)
        assert tx.final.status == 200


# -- on_update: the AORs the store changed ------------------------------------------------


class _LaterStore:
    """A memory store that answers only through Deferreds, a clock tick later (the
    path the sqlite: and redis: stores take)."""

    def __init__(self, clock: task.Clock) -> None:
        self.clock = clock
        self.inner = open_location("memory:", clock)

    def get(self, aor):
        return task.deferLater(self.clock, 0, self.inner.get_now, aor)

    def update(self, aor, changes):
        return task.deferLater(self.clock, 0, self.inner.update_now, aor, changes)


@pytest.mark.parametrize("later", [False, True])
def test_on_update_names_each_applied_aor_once(clock, later):
    store = _LaterStore(clock) if later else open_location("memory:", clock)
    registrar = Registrar(["a.lab"], store, clock)
    noted: list[str] = []
    registrar.on_update = noted.append
    requests = [
        register(to="sip:Alice@A.LAB:5070", expires="300"),
        register(to="sip:alice@a.lab", contact=None, cseq=2),  # a query
        register(uri="sip:b.lab", to="sip:bob@b.lab", call_id="c2"),  # 404
        register(contact="*", expires="0", cseq=3, to="sip:Alice@A.LAB:5070"),
    ]
    statuses = []
    for request in requests:
        tx = FakeTx()
        registrar.handle(request, tx, SOURCE)
        clock.advance(0)
        statuses.append(tx.final.status)
    assert statuses == [200, 200, 404, 200]
    assert noted == ["sip:Alice@a.lab", "sip:Alice@a.lab"]
