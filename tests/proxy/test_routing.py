"""§16.4 Route preprocessing and §16.5 classification."""

from __future__ import annotations

import pytest

from proxy.routing import (
    LocalIdentity,
    Target,
    classify,
    parse_received,
    preprocess_routes,
    q_groups,
    uri_address,
)
from sipcore.twisted.transport import Address
from sipcore.uri import parse_name_addr, parse_uri
from tests.proxy.fakes import invite

ME = LocalIdentity("127.0.0.1", 5060, frozenset({"a.lab", "a2.lab"}))


def test_loose_route_naming_us_is_removed():
    request = invite(
        "sip:bob@10.0.0.9:5080",
        extra="Route: <sip:127.0.0.1:5060;lr>, <sip:10.0.0.7;lr>\n",
    )
    assert str(preprocess_routes(request, ME)) == "sip:127.0.0.1:5060;lr"
    assert request.headers.get_all("Route") == ["<sip:10.0.0.7;lr>"]
    assert str(request.uri) == "sip:bob@10.0.0.9:5080"


def test_route_not_naming_us_stays():
    request = invite("sip:bob@10.0.0.9", extra="Route: <sip:10.0.0.7;lr>\n")
    assert preprocess_routes(request, ME) is None
    assert request.headers.get_all("Route") == ["<sip:10.0.0.7;lr>"]


def test_strict_router_upstream_restores_request_uri():
    # The previous hop put our Record-Route value into the Request-URI (RFC 2543 strict
    # routing) and the remote target into the last Route.
    request = invite(
        "sip:127.0.0.1:5060;lr",
        extra="Route: <sip:10.0.0.7;lr>\nRoute: <sip:bob@10.0.0.9:5080>\n",
    )
    assert preprocess_routes(request, ME) is not None  # our Record-Route, as Request-URI
    assert str(request.uri) == "sip:bob@10.0.0.9:5080"
    assert request.headers.get_all("Route") == ["<sip:10.0.0.7;lr>"]


def test_classify():
    assert classify(invite("sip:bob@a.lab"), ME).kind == "lookup"
    assert classify(invite("sip:bob@a.lab"), ME).aors == ("sip:bob@a.lab",)
    assert classify(invite("sip:a.lab", method="OPTIONS"), ME).kind == "local"
    assert classify(invite("sip:127.0.0.1:5060", method="OPTIONS"), ME).kind == "local"
    assert classify(invite("sip:bob@b.lab"), ME).kind == "foreign"
    assert classify(invite("tel:+1555"), ME).kind == "foreign"
    assert classify(invite("sip:bob@b.lab", extra="Route: <sip:10.0.0.7;lr>\n"), ME).kind == (
        "route"
    )


def test_user_at_our_address_is_looked_up_in_the_to_domain_first():
    decision = classify(invite("sip:bob@127.0.0.1:5060"), ME)  # To is bob@a.lab
    assert decision.kind == "lookup"
    assert decision.aors == ("sip:bob@a.lab", "sip:bob@a2.lab")


def test_record_route_and_via_values():
    assert ME.record_route() == "<sip:127.0.0.1:5060;lr>"
    assert ME.record_route("TCP") == "<sip:127.0.0.1:5060;transport=tcp;lr>"
    assert ME.is_me(parse_uri("sip:127.0.0.1;lr"))
    assert not ME.is_me(parse_uri("sip:127.0.0.1:5070"))


@pytest.mark.parametrize(("me", "uri", "mine"), [
    (ME, "sip:127.0.0.1", True),
    (ME, "sip:localhost:5060", True),
    (ME, "sip:127.0.0.2", False),
    (ME, "sip:a.lab", False),
    (ME, "sip:127.0.0.10", False),
    (LocalIdentity("proxy.A.lab", 5060, frozenset()), "sip:PROXY.a.LAB", True),
    (LocalIdentity("proxy.a.lab", 5060, frozenset()), "sip:proxy.a.lab.", False),
    (LocalIdentity("::1", 5070, frozenset()), "sip:[::1]:5070;lr", True),
    (LocalIdentity("::1", 5070, frozenset()), "sip:[::2]:5070;lr", False),
    (LocalIdentity("::1", 5070, frozenset()), "sip:[::1]:5060;lr", False),
])
def test_is_me_compares_hosts_without_case_or_brackets(
    me: LocalIdentity, uri: str, mine: bool,
) -> None:
    assert me.is_me(parse_uri(uri)) is mine


def test_q_groups_highest_first_parallel_within():
    uri = parse_uri("sip:x@1.2.3.4")
    targets = [Target(uri, q=0.5, label="c"), Target(uri, q=1.0, label="a"),
               Target(uri, q=1.0, label="b")]
    assert [[t.label for t in g] for g in q_groups(targets)] == [["a", "b"], ["c"]]


def test_addresses():
    assert uri_address(parse_uri("sip:bob@10.0.0.1")) == Address("UDP", "10.0.0.1", 5060)
    assert uri_address(parse_uri("sip:bob@10.0.0.1:5080;transport=tcp")) == Address(
        "TCP", "10.0.0.1", 5080
    )
    assert uri_address(parse_uri("sip:bob@b.lab;maddr=10.0.0.2")) == Address(
        "UDP", "10.0.0.2", 5060
    )
    assert uri_address(parse_uri("sip:bob@b.lab")) is None
    assert parse_received("UDP 10.0.0.1:5062") == Address("UDP", "10.0.0.1", 5062)
    assert parse_received("TCP 10.0.0.1:5062") == Address("TCP", "10.0.0.1", 5062)
    assert parse_received("10.0.0.1:5062") == Address("UDP", "10.0.0.1", 5062)
    assert parse_received("garbage") is None
    assert parse_received(None) is None


def test_dialog_mark_binds_the_route_to_its_call_id():
    signing = LocalIdentity("127.0.0.1", 5060, frozenset({"a.lab"}), rr_secret=b"k" * 32)
    value = signing.record_route("UDP", "call-1")
    uri = parse_name_addr(value).uri
    assert signing.authorised_dialog(uri, "call-1")
    assert not signing.authorised_dialog(uri, "call-2")
    assert not signing.authorised_dialog(None, "call-1")
    other = LocalIdentity("127.0.0.1", 5060, frozenset({"a.lab"}), rr_secret=b"j" * 32)
    assert not other.authorised_dialog(uri, "call-1")
    # Without a secret nothing is authenticated, so any Route of ours will do.
    assert ME.authorised_dialog(parse_name_addr("<sip:127.0.0.1:5060;lr>").uri, "x")
