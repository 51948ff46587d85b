from __future__ import annotations

import pytest

from sipcore.errors import ParseError
from sipcore.headers import Contact, CSeq, Via, split_header_list
from sipcore.message import Headers
from sipcore.uri import SipURI


def test_split_header_list_honours_quotes_and_angles() -> None:
    assert split_header_list('"a, b" <sip:x@y;p=1,2>;q=1 , <sip:z@w>') == [
        '"a, b" <sip:x@y;p=1,2>;q=1',
        "<sip:z@w>",
    ]
    assert split_header_list('"esc \\" ," <sip:a@b>, c') == ['"esc \\" ," <sip:a@b>', "c"]
    assert split_header_list("  single  ") == ["single"]
    assert split_header_list("a,,b,") == ["a", "", "b", ""]


def test_via_fields() -> None:
    v = Via.parse(
        "SIP/2.0/udp [2001:db8::1]:5062;branch=z9hG4bK1;received=192.0.2.1;rport=5063;"
        "maddr=224.2.0.1;ttl=16"
    )
    assert (v.transport, v.host, v.port) == ("UDP", "[2001:db8::1]", 5062)
    assert v.branch == "z9hG4bK1"
    assert v.received == "192.0.2.1"
    assert v.rport == "5063"
    assert v.maddr == "224.2.0.1"
    assert v.ttl == 16
    assert v.sent_by == ("[2001:db8::1]", 5062)


def test_via_rport_flag_and_absent() -> None:
    assert Via.parse("SIP/2.0/UDP h;rport;branch=z9hG4bKx").rport == ""
    v = Via.parse("SIP/2.0/TCP h")
    assert v.rport is None and v.branch is None and v.received is None and v.ttl is None


def test_via_odd_whitespace_and_received_ipv6() -> None:
    v = Via.parse("SIP / 2.0 / TLS   host.example.com : 5061 ; received = [2001:db8::9:1]")
    assert (v.transport, v.port, v.received) == ("TLS", 5061, "[2001:db8::9:1]")


def test_via_str_round_trip() -> None:
    v = Via("TCP", "example.com", 5060, {"branch": "z9hG4bKabc", "rport": None})
    assert str(v) == "SIP/2.0/TCP example.com:5060;branch=z9hG4bKabc;rport"
    assert Via.parse(str(v)) == v


@pytest.mark.parametrize(
    "text",
    [
        "",
        "SIP/2.0/UDP",
        "SIP/2.0 UDP host",
        "SIP/2.0/UDP host:99999",
        "SIP/2.0/UDP host;;",
        "SIP/2.0/UDP host;branch=",
        "SIP/2.0/UDP host;ttl=256",
        "SIP/2.0/UDP host;ttl=x",
        "SIP/2.0/UDP [::g]",
        "SIP/2.0/UDP host extra",
    ],
)
def test_bad_via(text: str) -> None:
    with pytest.raises(ParseError):
        Via.parse(text)


def test_cseq() -> None:
    assert CSeq.parse("  0009   INVITE ") == CSeq(9, "INVITE")
    assert str(CSeq(4294967295, "BYE")) == "4294967295 BYE"
    for bad in ("", "1", "INVITE", "-1 INVITE", "4294967296 INVITE", "1 INVITE x", "1.5 BYE"):
        with pytest.raises(ParseError):
            CSeq.parse(bad)


def test_contact_wildcard_and_params() -> None:
    assert Contact.parse(" * ").is_wildcard
    assert str(Contact.wildcard()) == "*"
    c = Contact.parse('"Mr. Watson" <sip:watson@worcester.bell-telephone.com>;q=0.7;expires=3600')
    assert not c.is_wildcard
    assert c.display_name == "Mr. Watson"
    assert c.uri == SipURI(user="watson", host="worcester.bell-telephone.com")
    assert c.q == 0.7
    assert c.expires == 3600
    c = Contact.parse("<sip:a@b>")
    assert c.q is None and c.expires is None


@pytest.mark.parametrize(
    "param", ["q=1.5", "q=abc", "q", "q=0.1234", "expires=-1", "expires=x", "expires"]
)
def test_contact_bad_scalars(param: str) -> None:
    c = Contact.parse(f"<sip:a@b>;{param}")
    with pytest.raises(ParseError):
        _ = (c.q, c.expires)


def test_headers_case_insensitive_and_compact() -> None:
    h = Headers(
        [("Via", "SIP/2.0/UDP a"), ("v", "SIP/2.0/UDP b, SIP/2.0/UDP c"), ("t", "<sip:x@y>")]
    )
    assert h.get("VIA") == "SIP/2.0/UDP a"
    assert h.get_all("via") == ["SIP/2.0/UDP a", "SIP/2.0/UDP b", "SIP/2.0/UDP c"]
    assert "To" in h and "to" in h and "From" not in h
    assert h.get("From") is None and h.get("From", "x") == "x"
    assert list(h) == [
        ("Via", "SIP/2.0/UDP a"),
        ("v", "SIP/2.0/UDP b, SIP/2.0/UDP c"),
        ("t", "<sip:x@y>"),
    ]


def test_headers_non_list_headers_not_split() -> None:
    h = Headers({"WWW-Authenticate": 'Digest realm="a", nonce="b"', "Date": "Sat, 13 Nov 2010"})
    assert h.get_all("www-authenticate") == ['Digest realm="a", nonce="b"']
    assert h.get_all("date") == ["Sat, 13 Nov 2010"]


def test_headers_mutation() -> None:
    h = Headers([("Via", "v1, v2"), ("To", "t"), ("Via", "v3")])
    h.prepend("Via", "v0")
    assert h.get_all("Via") == ["v0", "v1", "v2", "v3"]
    assert h.pop_first("Via") == "v0"
    assert h.pop_first("Via") == "v1"
    assert h.get_all("Via") == ["v2", "v3"]
    h.replace_first("Via", "v2b")
    assert h.get_all("Via") == ["v2b", "v3"]
    h.set("Via", "only")
    assert h.items() == [("Via", "only"), ("To", "t")]
    h.add("X-Thing", "1")
    h.remove("via")
    assert h.items() == [("To", "t"), ("X-Thing", "1")]
    assert h.pop_first("Via") is None
    h.prepend("Route", "<sip:r>")
    assert h.items()[0] == ("Route", "<sip:r>")
    c = h.copy()
    c.add("A", "b")
    assert len(c) == len(h) + 1


def test_headers_reject_injection() -> None:
    h = Headers()
    with pytest.raises(ValueError):
        h.add("X", "a\r\nInjected: yes")
    with pytest.raises(ValueError):
        h.add("Bad Name", "v")
