"""RFC 3263 resolution: IP literals, the static map, SRV ordering (no network)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from twisted.internet import task

from proxy.resolver import SipResolver, order_srv
from sipcore.twisted.transport import Address
from sipcore.uri import parse_uri


def resolved(d):
    out = []
    d.addCallback(out.append)
    return out[0]


def test_ip_literal_and_static_map():
    resolver = SipResolver(task.Clock(), {"b.lab": ("10.0.0.9", 5090)})
    assert resolved(resolver.resolve(parse_uri("sip:bob@10.0.0.1:5070;transport=tcp"))) == [
        Address("TCP", "10.0.0.1", 5070)
    ]
    assert resolved(resolver.resolve(parse_uri("sip:bob@B.lab"))) == [
        Address("UDP", "10.0.0.9", 5090)
    ]


@dataclass
class Srv:
    priority: int
    weight: int
    port: int


def test_srv_order_is_by_priority_then_weight():
    records = [Srv(20, 0, 1), Srv(10, 0, 2), Srv(10, 100, 3), Srv(30, 5, 4)]
    ordered = [r.port for r in order_srv(records, random.Random(1))]
    assert ordered[2:] == [1, 4]
    assert sorted(ordered[:2]) == [2, 3]
    # Weight 100 against 0 wins the first slot nearly always (RFC 2782).
    firsts = [order_srv(records, random.Random(i))[0].port for i in range(50)]
    assert firsts.count(3) >= 45


def test_srv_weights_share_load_within_a_priority():
    # RFC 2782: within one priority, each record comes first in proportion to its
    # weight; a lower-priority record is never tried before a higher one.
    records = [Srv(10, 60, 1), Srv(10, 30, 2), Srv(10, 10, 3), Srv(20, 100, 4)]
    rng = random.Random(7)
    firsts = [order_srv(records, rng)[0].port for _ in range(3000)]
    shares = [firsts.count(p) / len(firsts) for p in (1, 2, 3)]
    assert abs(shares[0] - 0.6) < 0.05 and abs(shares[1] - 0.3) < 0.05
    assert abs(shares[2] - 0.1) < 0.03 and 4 not in firsts
    assert all(order_srv(records, rng)[-1].port == 4 for _ in range(50))


def test_srv_zero_weights_alone_are_all_kept():
    records = [Srv(10, 0, 1), Srv(10, 0, 2), Srv(10, 0, 3)]
    assert sorted(r.port for r in order_srv(records, random.Random(3))) == [1, 2, 3]
