from __future__ import annotations

import pytest

from sipcore.errors import ParseError
from sipcore.uri import (
    AbsoluteURI,
    NameAddr,
    SipURI,
    TelURI,
    parse_name_addr,
    parse_uri,
    unescape,
)


def test_full_sip_uri() -> None:
    u = parse_uri("sips:alice:secret@atlanta.example.com:5061;transport=TCP;lr?subject=hi&x=")
    assert isinstance(u, SipURI)
    assert (u.scheme, u.user, u.password, u.host, u.port) == (
        "sips",
        "alice",
        "secret",
        "atlanta.example.com",
        5061,
    )
    assert u.params == {"transport": "TCP", "lr": None}
    assert u.transport == "tcp"
    assert u.headers == {"subject": "hi", "x": ""}
    assert u.host_port() == ("atlanta.example.com", 5061)


def test_ipv6_reference() -> None:
    u = parse_uri("sip:[2001:db8::10]:5070;maddr=[2001:db8::1]")
    assert u.host == "[2001:db8::10]"
    assert u.port == 5070
    assert u.params["maddr"] == "[2001:db8::1]"
    assert str(u) == "sip:[2001:db8::10]:5070;maddr=[2001:db8::1]"


def test_str_reproduces_input_until_changed() -> None:
    text = "sip:%61lice@Example.COM;Transport=udp"
    u = parse_uri(text)
    assert str(u) == text
    assert u.params == {"transport": "udp"}  # names lower-cased
    u.port = 5080
    assert str(u) == "sip:%61lice@Example.COM:5080;transport=udp"


def test_with_params_and_copy() -> None:
    u = parse_uri("sip:bob@biloxi.example.com")
    v = u.with_params(lr=None, transport="tcp")
    assert str(v) == "sip:bob@biloxi.example.com;lr;transport=tcp"
    assert u.params == {}
    c = u.copy()
    c.user = "carol"
    assert u.user == "bob"


def test_rfc3261_comparison_rules() -> None:
    """RFC 3261 19.1.4 examples."""
    assert parse_uri("sip:%61lice@atlanta.com;transport=TCP") == parse_uri(
        "sip:alice@AtLanTa.CoM;Transport=tcp"
    )
    assert parse_uri("sip:carol@chicago.com") == parse_uri("sip:carol@chicago.com;newparam=5")
    assert parse_uri("sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com") == (
        parse_uri("sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com")
    )
    # Not equal:
    assert parse_uri("SIP:ALICE@AtLanTa.CoM;Transport=udp") != parse_uri(
        "sip:alice@AtLanTa.CoM;Transport=UDP"
    )
    assert parse_uri("sip:bob@biloxi.com") != parse_uri("sip:bob@biloxi.com:5060")
    assert parse_uri("sip:bob@biloxi.com") != parse_uri("sip:bob@biloxi.com;transport=udp")
    assert parse_uri("sip:carol@chicago.com;security=on") != parse_uri(
        "sip:carol@chicago.com;security=off"
    )
    assert parse_uri("sip:alice@atlanta.com") != parse_uri("sips:alice@atlanta.com")
    assert parse_uri("sip:bob@biloxi.com?x=1") != parse_uri("sip:bob@biloxi.com")
    assert hash(parse_uri("sip:%61lice@ATLANTA.com")) == hash(parse_uri("sip:alice@atlanta.com"))


def test_scheme_is_case_insensitive() -> None:
    assert parse_uri("SIP:ALICE@AtLanTa.CoM").scheme == "sip"


def test_escapes_unescape_but_serialise_faithfully() -> None:
    u = parse_uri("sip:sips%3Auser%40example.com@example.net")
    assert u.user == "sips%3Auser%40example.com"
    assert u.user_unescaped == "sips:user@example.com"
    assert str(u) == "sip:sips%3Auser%40example.com@example.net"
    assert unescape("%E2%82%AC%20") == "€ "
    assert unescape("no-escapes") == "no-escapes"


def test_tel_uri() -> None:
    u = parse_uri("tel:+1-201-555-0123;phone-context=example.com")
    assert isinstance(u, TelURI)
    assert u.number == "+1-201-555-0123"
    assert u.params == {"phone-context": "example.com"}
    assert u == parse_uri("tel:+1.201.555.0123;Phone-Context=EXAMPLE.com")
    assert str(u) == "tel:+1-201-555-0123;phone-context=example.com"


def test_absolute_uri() -> None:
    u = parse_uri("urn:service:sos")
    assert u == AbsoluteURI("urn", "service:sos")
    assert str(u) == "urn:service:sos"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sip:",
        "sip:user@",
        "sip:user@host:99999",
        "sip:user@host:",
        "sip:us er@host",
        "sip:user@[::zz]",
        "sip:user@host;",
        "sip:user@host;=x",
        "sip:user@host;a=",
        "sip:user@host?",
        "sip:%zzuser@host",
        "<sip:user@host>",
        "sip:user@host>",
        "noscheme",
        "1sip:user@host",
        "tel:",
        "tel:abc xyz",
        "http://example.com/a b",
        "mailto:%4",
    ],
)
def test_bad_uris(text: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_uri(text)
    assert info.value.status == 400


def test_name_addr_forms() -> None:
    na = parse_name_addr('"Alice \\"A\\"" <sip:alice@atlanta.com>;tag=1928301774')
    assert na.display_name == 'Alice "A"'
    assert na.tag == "1928301774"
    assert str(na) == '"Alice \\"A\\"" <sip:alice@atlanta.com>;tag=1928301774'

    na = parse_name_addr("Bob Smith <sip:bob@biloxi.com>")
    assert na.display_name == "Bob Smith"
    na = parse_name_addr("<sip:bob@biloxi.com;lr>")
    assert na.display_name is None and na.uri.params == {"lr": None}
    assert na.params == {}


def test_addr_spec_params_belong_to_header() -> None:
    na = parse_name_addr("sip:bob@biloxi.com;tag=abc;expires=60")
    assert na.uri == SipURI(user="bob", host="biloxi.com")
    assert na.params == {"tag": "abc", "expires": "60"}
    assert str(na) == "<sip:bob@biloxi.com>;tag=abc;expires=60"


def test_name_addr_quoted_param_value() -> None:
    na = parse_name_addr('<sip:a@b>;+sip.instance="<urn:uuid:1;x>";q=0.5')
    assert na.params == {"+sip.instance": '"<urn:uuid:1;x>"', "q": "0.5"}


def test_name_addr_round_trip() -> None:
    na = NameAddr(None, parse_uri("sip:a@b"), {"tag": "x"})
    assert parse_name_addr(str(na)) == na
    na = NameAddr('a "quoted" \\ name', parse_uri("tel:+123"), {})
    assert parse_name_addr(str(na)) == na


@pytest.mark.parametrize(
    "text",
    [
        "",
        '"unterminated <sip:a@b>',
        "Bell, Alexander <sip:a@b>",
        "< sip:a@b >",
        "<sip:a@b",
        "<sip:a@b>;",
        "<sip:a@b>;;tag=1",
        "<sip:a@b> junk",
        "sip:a@b?x=y",
        "<>",
        "<sip:a@b>;tag=",
    ],
)
def test_bad_name_addrs(text: str) -> None:
    with pytest.raises(ParseError):
        parse_name_addr(text)
