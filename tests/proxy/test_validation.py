"""§16.3 checks and the loop-detecting branch of §16.6 step 8."""

from __future__ import annotations

import pytest

from proxy.routing import LocalIdentity
from proxy.validation import (
    branch_loop_part,
    check_loop,
    check_max_forwards,
    check_proxy_require,
    check_scheme,
    check_syntax,
    loop_hash,
    make_branch,
)
from sipcore.errors import ParseError
from tests.proxy.fakes import invite

ME = LocalIdentity("127.0.0.1", 5060, frozenset({"a.lab"}))


def forwarded(request, me=ME):
    """The request as we would forward it (our Via on top, loop hash of the original)."""
    out = request.copy()
    out.headers.prepend("Via", me.via("UDP", make_branch(loop_hash(request, request.top_via))))
    return out


def test_scheme():
    assert check_scheme(invite("sip:bob@a.lab")) is None
    assert check_scheme(invite("tel:+15551234")) is None
    assert check_scheme(invite("http://example.com/")).status == 416


@pytest.mark.parametrize(("mf", "status"), [("70", None), ("1", None), ("0", 483)])
def test_max_forwards(mf, status):
    request = invite()
    request.headers.set("Max-Forwards", mf)
    rejection = check_max_forwards(request)
    assert (rejection and rejection.status) == status


def test_missing_max_forwards_passes():
    request = invite()
    request.headers.remove("Max-Forwards")
    assert check_max_forwards(request) is None


def test_proxy_require_unknown_gets_420_with_unsupported():
    rejection = check_proxy_require(invite(extra="Proxy-Require: foo, bar\n"))
    assert rejection.status == 420
    assert rejection.headers == (("Unsupported", "foo, bar"),)
    assert check_proxy_require(invite()) is None


@pytest.mark.parametrize("header", ["Route: <sip:x;lr", "Via: SIP/2.0/UDP", "Record-Route: ,"])
def test_syntax_surfaces_lazy_header_errors(header):
    with pytest.raises(ParseError):
        check_syntax(invite(extra=header + "\n"))


def test_branch_carries_loop_hash_and_is_unique():
    part = loop_hash(invite(), invite().top_via)
    a, b = make_branch(part), make_branch(part)
    assert a != b and a.startswith("z9hG4bK")
    assert branch_loop_part(a) == branch_loop_part(b) == part
    assert branch_loop_part("z9hG4bKsomeoneelse") is None
    assert make_branch(part, "same") == make_branch(part, "same")  # stateless ACK


def test_loop_detected_when_request_returns_unchanged():
    again = forwarded(invite("sip:bob@c.lab"))
    assert check_loop(again, ME.is_own_via).status == 482


def test_spiral_is_not_a_loop():
    # Same request back at us, but with a different Request-URI (e.g. a forwarding
    # service rewrote it): §16.3 step 4 says that is a spiral, to be forwarded.
    again = forwarded(invite("sip:bob@c.lab"))
    again.uri = invite("sip:carol@a.lab").uri
    assert check_loop(again, ME.is_own_via) is None


def test_other_proxys_via_is_not_ours():
    other = LocalIdentity("127.0.0.1", 5070)
    again = forwarded(invite("sip:bob@c.lab"), other)
    assert check_loop(again, ME.is_own_via) is None
    assert check_loop(again, other.is_own_via).status == 482


def test_loop_hash_ignores_received_and_rport():
    request = invite(via="SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKc1;rport")
    stamped = invite(via="SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKc1;rport=5070;received=1.2.3.4")
    assert loop_hash(request, request.top_via) == loop_hash(stamped, stamped.top_via)
