"""RFC 4475 torture tests: one test per vector in tests/vectors/rfc4475/.

The .dat files are the bit-exact messages from RFC 4475 Appendix A.  Where the
RFC leaves the choice to the element ("may", "acceptable to reject"), the
docstring quotes the RFC and the test pins down the behaviour chosen here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sipcore.errors import ParseError
from sipcore.message import Request, Response, StreamParser, parse
from sipcore.uri import AbsoluteURI, SipURI, unescape

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "rfc4475"


def load(name: str) -> bytes:
    with open(VECTORS / f"{name}.dat", "rb") as f:
        return f.read()


def request(name: str) -> Request:
    msg = parse(load(name))
    assert isinstance(msg, Request)
    # Whatever we accept must survive a round trip unchanged.
    assert parse(msg.serialise()) == msg
    return msg


def rejected(name: str, status: int = 400) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse(load(name))
    assert info.value.status == status
    return info.value


def test_all_vectors_present() -> None:
    assert len(list(VECTORS.glob("*.dat"))) == 50


# --- 3.1.1 valid messages ----------------------------------------------------------


def test_wsinv() -> None:
    """3.1.1.1: short tortuous INVITE (whitespace, folding, compact forms, escapes)."""
    m = request("wsinv")
    assert m.method == "INVITE"
    assert m.uri.params == {"unknownparam": None}
    assert m.to.uri == SipURI(user="vivekg", host="chair-dnrc.example.com")
    assert m.to.tag == "1918181833n"
    assert m.from_.display_name == 'J Rosenberg \\"'
    assert m.from_.tag == "98asjd8"
    assert m.max_forwards == 68
    assert m.call_id == "wsinv.ndaksdj@192.0.2.1"
    assert (m.cseq.number, m.cseq.method) == (9, "INVITE")
    assert [(v.transport, v.host, v.branch) for v in m.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert m.headers.get("Subject") == ""
    assert m.headers.get("newfangledheader") == "newfangled value continued newfangled value"
    assert m.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    assert m.routes[0].uri.params == {"lr": None, "unknownwith": "value", "unknown-no-value": None}
    (contact,) = m.contacts
    assert contact.display_name == 'Quoted string ""'
    assert contact.q == 0.33
    assert contact.params["newparam"] == "newvalue" and "secondparam" in contact.params
    assert len(m.body) == 150
    # Unmodified messages serialise back byte for byte.
    assert m.serialise() == load("wsinv")


def test_intmeth() -> None:
    """3.1.1.2: the full range of valid characters in tokens, URIs and quoted strings."""
    m = request("intmeth")
    assert m.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert m.cseq.method == m.method
    assert m.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert m.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert m.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert m.from_.display_name == "token1~` token2'+_ token3*%!.-"
    assert m.from_.params["fromparam''~+*_!.-%"] == '"работающий"'
    assert m.from_.tag == "_token~1'+`*%!-."
    assert m.top_via.branch == "z9hG4bK-.!%66*_+`'~"
    assert m.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert m.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"  # UTF-8 with BOM
    assert m.serialise() == load("intmeth")


def test_esc01() -> None:
    """3.1.1.3: valid %-escapes; compare unescaped, serialise as received."""
    m = request("esc01")
    assert m.uri.user == "sips%3Auser%40example.com"
    assert m.uri.user_unescaped == "sips:user@example.com"
    assert m.uri.host == "example.net"
    assert m.to.uri == SipURI(user="user", host="example.com")
    assert m.from_.uri.user_unescaped == "I have spaces"
    contact = m.contacts[0].uri
    assert isinstance(contact, SipURI)
    assert contact.user_unescaped == "caller"
    assert {unescape(k): v and unescape(v) for k, v in contact.params.items()} == {
        "lr": None,
        "name": "value%41",
    }
    assert m == parse(load("esc01"))
    assert m.serialise() == load("esc01")


def test_escnull() -> None:
    """3.1.1.4: escaped NULs in URIs are legal and must not truncate anything."""
    m = request("escnull")
    assert m.to.uri.user_unescaped == "null-\x00-null"
    assert [c.uri.user_unescaped for c in m.contacts] == ["\x00", "\x00\x00"]


def test_esc02() -> None:
    """3.1.1.5: % that is not an escape: the method is RE%47IST%45R, not REGISTER."""
    m = request("esc02")
    assert m.method == "RE%47IST%45R"
    assert m.to.display_name == "%Z%45"
    assert m.top_via.branch == "z9hG4bK209%fzsnel234"
    # "C%6Fntact" is an unknown header, not a third Contact.
    assert [str(c.uri) for c in m.contacts] == [
        "sip:alias1@host1.example.com",
        "sip:alias3@host3.example.com",
    ]
    assert m.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_lwsdisp() -> None:
    """3.1.1.6: no LWS between display name and <."""
    m = request("lwsdisp")
    assert m.from_.display_name == "caller"
    assert m.from_.uri == SipURI(user="caller", host="example.com")


def test_longreq() -> None:
    """3.1.1.7: long values and many Via header fields."""
    m = request("longreq")
    assert m.to.display_name.startswith("I have a user name of extremeextreme")
    assert m.to.uri.port == 6000
    assert len(m.from_.tag) == 155
    assert len(m.vias) == 34
    assert m.vias[-1].branch.startswith("verylonglong")
    assert m.serialise() == load("longreq")


def test_dblreq() -> None:
    """3.1.1.8: octets after Content-Length in a datagram are ignored (RFC 3261 18.3)."""
    m = request("dblreq")
    assert m.method == "REGISTER"
    assert m.body == b""
    assert b"INVITE" not in m.serialise()


def test_semiuri() -> None:
    """3.1.1.9: ; in the user part of a Request-URI."""
    m = request("semiuri")
    assert m.uri.user == "user;par=u%40example.net"
    assert m.uri.host == "example.com"
    assert m.uri.params == {}
    assert m.headers.get_all("Accept") == [
        "application/sdp",
        "application/pkcs7-mime",
        "multipart/mixed",
        "multipart/signed",
        "message/sip",
        "message/sipfrag",
    ]


def test_transports() -> None:
    """3.1.1.10: varied and unknown transports in Via."""
    m = request("transports")
    assert [v.transport for v in m.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def test_mpart01() -> None:
    """3.1.1.11: multipart body with binary content is kept byte for byte."""
    data = load("mpart01")
    m = request("mpart01")
    assert m.content_type == "multipart/mixed;boundary=7a9cbec02ceef655"
    assert len(m.body) == 553
    assert m.body == data[data.index(b"\r\n\r\n") + 4 :]
    assert m.body.startswith(b"--7a9cbec02ceef655\r\n")
    assert m.body.rstrip(b"\r\n").endswith(b"--7a9cbec02ceef655--")
    assert m.serialise() == data


def test_unreason() -> None:
    """3.1.1.12: unusual (UTF-8) reason phrase."""
    m = parse(load("unreason"))
    assert isinstance(m, Response)
    assert m.status == 200
    assert m.reason.startswith("= 2**3 * 5**2 но сто")
    assert m.serialise() == load("unreason")


def test_noreason() -> None:
    """3.1.1.13: empty reason phrase."""
    m = parse(load("noreason"))
    assert isinstance(m, Response)
    assert (m.status, m.reason) == (100, "")
    assert m.serialise() == load("noreason")


# --- 3.1.2 invalid messages ------------------------------------------------------------


def test_badinv01() -> None:
    """3.1.2.1: extraneous ; and , in Via and Contact: 'respond with a 400'."""
    rejected("badinv01")
    msg = parse(load("badinv01"), validate=False)
    for accessor in ("top_via", "vias", "contacts"):
        with pytest.raises(ParseError):
            getattr(msg, accessor)


def test_clerr() -> None:
    """3.1.2.2: Content-Length larger than the datagram: 'respond with a 400'.

    Over a stream the parser just waits for more octets."""
    rejected("clerr")
    assert StreamParser().feed(load("clerr")) == []


def test_ncl() -> None:
    """3.1.2.3: negative Content-Length: 'respond with an error'."""
    rejected("ncl")
    with pytest.raises(ParseError):
        StreamParser().feed(load("ncl"))


def test_scalar02() -> None:
    """3.1.2.4: overlarge scalars; 'respond with a 400 Bad Request due to the CSeq error'."""
    err = rejected("scalar02")
    assert "CSeq" in err.reason
    msg = parse(load("scalar02"), validate=False)
    with pytest.raises(ParseError):
        msg.max_forwards  # noqa: B018  (300 > 255)
    with pytest.raises(ParseError):
        msg.expires  # noqa: B018
    with pytest.raises(ParseError):
        msg.contacts[0].expires  # noqa: B018


def test_scalarlg() -> None:
    """3.1.2.5: response with overlarge CSeq: 'simply discard it' (ParseError)."""
    rejected("scalarlg")


def test_quotbal() -> None:
    """3.1.2.6: unterminated quote in To: 'return a 400' (no quote inference)."""
    rejected("quotbal")


def test_ltgtruri() -> None:
    """3.1.2.7: Request-URI in <>: 'reasonable always to reject ... with a 400'."""
    rejected("ltgtruri")


def test_lwsruri() -> None:
    """3.1.2.8: LWS inside the Request-URI: 'should respond with a 400'.  We do not
    take up the offer to 'ignore the embedded LWS'."""
    rejected("lwsruri")


def test_lwsstart() -> None:
    """3.1.2.9: 'It is acceptable to reject ... An element that is liberal in what it
    accepts may ignore these extra SP characters'.  We accept, and (as required)
    do not send the extra SP on."""
    m = request("lwsstart")
    assert m.uri == SipURI(user="user", host="example.com")
    assert m.serialise().startswith(b"INVITE sip:user@example.com SIP/2.0\r\n")


def test_trws() -> None:
    """3.1.2.10: SP at the end of the Request-Line: 'may ignore these extra SP
    characters'.  We accept, and the forwarded start line has no trailing SP."""
    m = request("trws")
    assert m.method == "OPTIONS"
    assert m.serialise().startswith(b"OPTIONS sip:remote-target@example.com SIP/2.0\r\n")


def test_escruri() -> None:
    """3.1.2.11: escaped headers in the Request-URI: 'acceptable ... to reject this
    request with a 400'.  We do; parse_uri itself still reads such a URI."""
    rejected("escruri")
    msg = parse(load("escruri"), validate=False)
    assert msg.uri.headers == {"Route": "%3Csip:example.com%3E"}


def test_baddate() -> None:
    """3.1.2.12: non-GMT Date: 'shouldn't do that [reject] unless the contents of the
    Date header field were actually important'.  The parser does not interpret Date,
    so the request is accepted and the value kept as received."""
    m = request("baddate")
    assert m.headers.get("Date") == "Fri, 01 Jan 2010 16:00:00 EST"


def test_regbadct() -> None:
    """3.1.2.13: URI with escaped header not in <>: 'reasonable ... to respond with a
    400'.  The message parses; the Contact accessor (what a registrar uses) raises
    ParseError(400)."""
    m = request("regbadct")
    with pytest.raises(ParseError) as info:
        m.contacts  # noqa: B018
    assert info.value.status == 400


def test_badaspec() -> None:
    """3.1.2.14: spaces inside <> in To: 'reasonable to reject ... with a 400'."""
    rejected("badaspec")


def test_baddn() -> None:
    """3.1.2.15: unquoted non-token display names: 'reasonable always to reject'."""
    rejected("baddn")


def test_badvers() -> None:
    """3.1.2.16: SIP/7.0: 'respond ... with a 505 Version Not Supported'."""
    err = rejected("badvers", 505)
    assert err.reason == "Version Not Supported"


def test_mismatch01() -> None:
    """3.1.2.17: CSeq method differs from the start line: 'respond with a 400'."""
    rejected("mismatch01")


def test_mismatch02() -> None:
    """3.1.2.18: unknown method, CSeq mismatch: '501 ... A 400 Bad Request is also
    acceptable, but choosing a 501 ... has better future-proof characteristics'."""
    rejected("mismatch02", 501)


def test_bigcode() -> None:
    """3.1.2.19: response code > 699: 'should simply drop it' (ParseError)."""
    rejected("bigcode")


# --- 3.2 transaction layer -------------------------------------------------------------


def test_badbranch() -> None:
    """3.2.1: branch is just the magic cookie: 'A parser must not break ... could
    reject ... or it could fall back to the RFC 2543-style transaction identifier'.
    The parser accepts it; the transaction layer decides."""
    m = request("badbranch")
    assert m.top_via.branch == "z9hG4bK"


# --- 3.3 application layer ------------------------------------------------------------


def test_insuf() -> None:
    """3.3.1: no Call-ID, From or To: 'Ideally, it will respond with a 400'.  The
    error carries the partially parsed request so a 400 can still be built."""
    err = rejected("insuf")
    assert isinstance(err.message, Request)
    assert err.message.top_via.branch == "z9hG4bKkdj.insuf"


def test_unkscm() -> None:
    """3.3.2: unknown Request-URI scheme: 'A parser must accept this ... An element
    receiving this request will reject it with a 416'."""
    m = request("unkscm")
    assert m.uri == AbsoluteURI("nobodyKnowsThisScheme", "totallyopaquecontent")
    with pytest.raises(ParseError) as info:
        m.validate(schemes={"sip", "sips", "tel"})
    assert info.value.status == 416


def test_novelsc() -> None:
    """3.3.3: known but atypical scheme: parse it; '416' if never accepted."""
    m = request("novelsc")
    assert m.uri == AbsoluteURI("soap.beep", "//192.0.2.103:3002")
    with pytest.raises(ParseError) as info:
        m.validate(schemes={"sip", "sips"})
    assert info.value.status == 416


def test_unksm2() -> None:
    """3.3.4: unknown schemes in To/From/Contact: 'Parsers must not fail'."""
    m = request("unksm2")
    assert m.to.uri == AbsoluteURI("isbn", "2983792873")
    assert m.from_.uri == AbsoluteURI("http", "//www.example.com")
    assert m.contacts[0].uri == AbsoluteURI("name", "John_Smith")
    # A registrar needs a SIP AOR in To; it can tell and answer 400 itself.
    assert not isinstance(m.to.uri, SipURI)


def test_bext01() -> None:
    """3.3.5: Require/Proxy-Require with unknown options: the parser exposes them;
    answering 420 is the element's job."""
    m = request("bext01")
    assert m.headers.get_all("Require") == ["nothingSupportsThis", "nothingSupportsThisEither"]
    assert m.headers.get_all("Proxy-Require") == [
        "noProxiesSupportThis",
        "norDoAnyProxiesSupportThis",
    ]


def test_invut() -> None:
    """3.3.6: unknown Content-Type: 'A parser must not fail'; 415 is up to the UA."""
    m = request("invut")
    assert m.content_type == "application/unknownformat"
    assert len(m.body) == 40


def test_regaut01() -> None:
    """3.3.7: unknown Authorization scheme: 'well formed ... A parser must not fail';
    a registrar may answer 401, a proxy forwards it unmodified."""
    m = request("regaut01")
    assert m.headers.get("Authorization") == "NoOneKnowsThisScheme opaque-data=here"
    assert b"Authorization: NoOneKnowsThisScheme opaque-data=here\r\n" in m.serialise()


def test_multi01() -> None:
    """3.3.8: several Call-ID/To/From/Max-Forwards/CSeq: 'respond with a 400'."""
    err = rejected("multi01")
    assert err.reason.startswith("Multiple")


def test_mcl01() -> None:
    """3.3.9: conflicting Content-Length values: 'respond with an error'."""
    rejected("mcl01")
    with pytest.raises(ParseError):
        StreamParser().feed(load("mcl01"))


def test_bcast() -> None:
    """3.3.10: 255.255.255.255 in the second Via: well formed; dropping it is policy."""
    m = parse(load("bcast"))
    assert isinstance(m, Response)
    assert m.vias[1].host == "255.255.255.255"


def test_zeromf() -> None:
    """3.3.11: Max-Forwards: 0 is legal (483 is for proxies to decide)."""
    assert request("zeromf").max_forwards == 0


def test_cparam01() -> None:
    """3.3.12: 'unknownparam' in an addr-spec Contact is a contact-param."""
    (contact,) = request("cparam01").contacts
    assert contact.params == {"unknownparam": None}
    assert contact.uri.params == {}


def test_cparam02() -> None:
    """3.3.13: inside <> 'unknownparam' is a url-parameter."""
    (contact,) = request("cparam02").contacts
    assert contact.params == {}
    assert contact.uri.params == {"unknownparam": None}
    assert str(contact.uri) == "sip:+19725552222@gw1.example.net;unknownparam"


def test_regescrt() -> None:
    """3.3.14: escaped header in a Contact URI is kept for the binding."""
    m = request("regescrt")
    uri = m.contacts[0].uri
    assert uri.headers == {"Route": "%3Csip:sip.example.com%3E"}
    assert unescape(uri.headers["Route"]) == "<sip:sip.example.com>"
    assert str(uri) == "sip:user@example.com?Route=%3Csip:sip.example.com%3E"


def test_sdp01() -> None:
    """3.3.15: Accept without application/sdp: parsed; 406/400 is the UA's call."""
    m = request("sdp01")
    assert m.headers.get_all("Accept") == ["text/nobodyKnowsThis"]
    assert m.content_type == "application/sdp"


# --- 3.4 backward compatibility ----------------------------------------------------------


def test_inv2543() -> None:
    """3.4.1: RFC 2543 syntax 'should be accepted by RFC 3261 elements that want to
    maintain backwards compatibility': no branch, no From tag, no Content-Length
    (body is the rest of the datagram), no Max-Forwards."""
    data = load("inv2543")
    m = request("inv2543")
    assert m.top_via.branch is None
    assert m.from_.tag is None
    assert m.max_forwards is None
    assert m.body == data[data.index(b"\r\n\r\n") + 4 :]
    assert m.to.params == {"user": "phone"}
    # Over a stream, Content-Length is mandatory.
    with pytest.raises(ParseError):
        StreamParser().feed(data)


def test_test() -> None:
    """test.dat (also in the Appendix A archive): Request-Line without SIP-Version."""
    rejected("test")
