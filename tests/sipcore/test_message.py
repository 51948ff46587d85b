from __future__ import annotations

import time

import pytest

from sipcore.errors import ParseError
from sipcore.headers import Via
from sipcore.limits import MAX_HEADERS, MAX_MESSAGE_SIZE
from sipcore.message import Request, Response, StreamParser, make_response, parse
from sipcore.uri import SipURI, TelURI

SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"


def invite(extra: bytes = b"", body: bytes = SDP, clen: bytes | None = None) -> bytes:
    if clen is None:
        clen = str(len(body)).encode()
    return (
        b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\r\n"
        b"Max-Forwards: 70\r\n"
        b"To: Bob <sip:bob@biloxi.example.com>\r\n"
        b"From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
        b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
        b"CSeq: 314159 INVITE\r\n"
        b"Contact: <sip:alice@pc33.atlanta.example.com>\r\n"
        + extra
        + b"Content-Type: application/sdp\r\n"
        b"Content-Length: " + clen + b"\r\n\r\n" + body
    )


def without(data: bytes, header: bytes) -> bytes:
    return b"\r\n".join(ln for ln in data.split(b"\r\n") if not ln.startswith(header + b":"))


def status_of(data: bytes) -> int:
    with pytest.raises(ParseError) as info:
        parse(data)
    return info.value.status


# --- valid messages ---------------------------------------------------------------


def test_typical_invite() -> None:
    m = parse(invite())
    assert isinstance(m, Request)
    assert m.method == "INVITE"
    assert m.uri == SipURI(user="bob", host="biloxi.example.com")
    assert m.top_via.branch == "z9hG4bK776asdhds"
    assert m.cseq.number == 314159 and m.cseq.method == "INVITE"
    assert m.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert m.from_.tag == "1928301774" and m.to.tag is None
    assert m.to.display_name == "Bob"
    assert m.max_forwards == 70
    assert m.body == SDP
    assert m.serialise() == invite()
    assert bytes(m) == invite()


def test_compact_forms_and_case_insensitive_names() -> None:
    data = (
        b"OPTIONS sip:a@b SIP/2.0\r\n"
        b"v: SIP/2.0/TCP h1;branch=z9hG4bK1\r\n"
        b"f: <sip:c@d>;tag=1\r\nt: <sip:a@b>\r\ni: abc@h\r\ncSEQ: 2 OPTIONS\r\n"
        b"m: <sip:c@h>\r\nk: 100rel\r\ns: hello\r\nc: text/plain\r\ne: gzip\r\nl: 2\r\n\r\nhi"
    )
    m = parse(data)
    assert m.top_via.transport == "TCP"
    assert m.headers.get("Supported") == "100rel"
    assert m.headers.get("subject") == "hello"
    assert m.content_type == "text/plain"
    assert m.headers.get("Content-Encoding") == "gzip"
    assert m.body == b"hi"
    assert m.serialise() == data


def test_folding_is_unfolded_for_access_and_kept_for_output() -> None:
    data = invite(b"Subject: first\r\n  second\r\n\tthird\r\n")
    m = parse(data)
    assert m.headers.get("Subject") == "first second third"
    assert m.serialise() == data


def test_multiple_vias_in_one_line_and_across_lines() -> None:
    data = invite(
        b"Via: SIP/2.0/TCP [2001:db8::5]:5070;branch=z9hG4bK2;received=[2001:db8::9], "
        b"SIP/2.0/UDP p2;branch=z9hG4bK3\r\nv: SIP/2.0/TLS p3:5061;branch=z9hG4bK4\r\n"
    )
    m = parse(data)
    assert [v.host for v in m.vias] == [
        "pc33.atlanta.example.com",
        "[2001:db8::5]",
        "p2",
        "p3",
    ]
    assert m.vias[1].port == 5070 and m.vias[1].received == "[2001:db8::9]"
    assert m.top_via is m.vias[0] or m.top_via == m.vias[0]


def test_ipv6_request_uri_and_tel() -> None:
    m = parse(
        invite().replace(b"sip:bob@biloxi.example.com SIP", b"sip:bob@[2001:db8::1]:5060 SIP")
    )
    assert m.uri.host == "[2001:db8::1]" and m.uri.port == 5060
    m = parse(invite().replace(b"sip:bob@biloxi.example.com SIP", b"tel:+1-555-0100 SIP"))
    assert isinstance(m.uri, TelURI)


def test_uri_password_and_headers_in_contact() -> None:
    m = parse(invite(b"Contact: <sip:u:pw@h?Subject=x%20y&Priority=urgent>\r\n"))
    uri = m.contacts[1].uri
    assert uri.password == "pw"
    assert uri.headers == {"Subject": "x%20y", "Priority": "urgent"}


def test_contact_star_and_params() -> None:
    data = (
        b"REGISTER sip:r SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        b"From: <sip:a@r>;tag=1\r\nTo: <sip:a@r>\r\nCall-ID: x\r\nCSeq: 1 REGISTER\r\n"
        b"Contact: *\r\nExpires: 0\r\nContent-Length: 0\r\n\r\n"
    )
    m = parse(data)
    assert m.contacts[0].is_wildcard and m.expires == 0
    m = parse(data.replace(b"Contact: *", b"Contact: <sip:a@h>;q=0.5;expires=60, <sip:a@i>"))
    assert [(c.q, c.expires) for c in m.contacts] == [(0.5, 60), (None, None)]
    m = parse(data.replace(b"Contact: *", b"Contact: *, <sip:a@h>"))
    with pytest.raises(ParseError):
        m.contacts  # noqa: B018


def test_unknown_method_and_headers() -> None:
    data = invite().replace(b"INVITE", b"FOOBAR") + b""
    m = parse(data)
    assert m.method == "FOOBAR" and m.cseq.method == "FOOBAR"


def test_odd_whitespace() -> None:
    data = invite().replace(b"CSeq: 314159 INVITE", b"CSeq :\t 314159 \t INVITE  ")
    m = parse(data)
    assert m.cseq.number == 314159
    assert m.serialise() == data


def test_route_and_record_route() -> None:
    m = parse(
        invite(
            b"Record-Route: <sip:p1;lr>, <sip:p2;lr>\r\nRoute: <sip:p3;lr>\r\nRoute: <sip:p4>\r\n"
        )
    )
    assert [str(r.uri) for r in m.record_routes] == ["sip:p1;lr", "sip:p2;lr"]
    assert [str(r.uri) for r in m.routes] == ["sip:p3;lr", "sip:p4"]


def test_response() -> None:
    data = (
        b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    m = parse(data)
    assert isinstance(m, Response)
    assert (m.status, m.reason) == (180, "Ringing")
    assert m.to.tag == "2"
    assert m.serialise() == data


def test_leading_crlf_is_ignored() -> None:
    assert parse(b"\r\n\r\n" + invite()).method == "INVITE"


def test_header_block_without_blank_line() -> None:
    data = without(invite(body=b""), b"Content-Length")
    assert data.endswith(b"\r\n\r\n")
    m = parse(data[:-2])
    assert m.body == b""


def test_datagram_without_content_length_takes_rest() -> None:
    data = without(invite(), b"Content-Length")
    assert parse(data).body == SDP


def test_datagram_extra_octets_discarded() -> None:
    assert parse(invite() + b"garbage").body == SDP


def test_surrogateescape_round_trip() -> None:
    data = invite(b"X-Bin: \xff\xfe caf\xc3\xa9\r\n")
    m = parse(data)
    assert m.headers.get("X-Bin").endswith("café")
    assert m.serialise() == data


def test_content_length_recomputed() -> None:
    m = parse(invite())
    m.body = b"new"
    out = m.serialise()
    assert b"Content-Length: 3\r\n\r\nnew" in out
    assert parse(out).body == b"new"
    r = Request("OPTIONS", "sip:a@b", [("Via", "SIP/2.0/UDP h;branch=z9hG4bK1")])
    assert r.serialise().endswith(b"Content-Length: 0\r\n\r\n")


def test_modified_headers_serialise_cleanly_and_drop_caches() -> None:
    m = parse(invite())
    assert m.top_via.received is None
    via = m.top_via
    via.params["received"] = "192.0.2.99"
    m.set_top_via(via)
    assert m.top_via.received == "192.0.2.99"
    assert (
        b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;received=192.0.2.99"
        in (m.serialise())
    )
    m.headers.prepend("Via", "SIP/2.0/TCP proxy;branch=z9hG4bKp")
    assert m.top_via.host == "proxy"
    assert len(m.vias) == 2


def test_equality_and_copy() -> None:
    a, b = parse(invite()), parse(invite())
    assert a == b
    c = a.copy()
    c.headers.add("X", "1")
    assert c != a and a == b
    assert parse(invite(b"X: 1\r\n")) != a


def test_build_and_round_trip() -> None:
    r = Request(
        "MESSAGE",
        "sip:bob@example.com",
        [
            ("Via", str(Via("UDP", "192.0.2.1", 5060, {"branch": "z9hG4bKa", "rport": None}))),
            ("From", "<sip:alice@example.com>;tag=a"),
            ("To", "<sip:bob@example.com>"),
            ("Call-ID", "c1"),
            ("CSeq", "1 MESSAGE"),
            ("Max-Forwards", "70"),
        ],
        b"hello",
    )
    again = parse(r.serialise())
    assert again == r
    assert again.top_via.rport == ""


# --- invalid messages ---------------------------------------------------------------


@pytest.mark.parametrize("header", [b"Via", b"From", b"To", b"Call-ID", b"CSeq"])
def test_missing_mandatory_header(header: bytes) -> None:
    with pytest.raises(ParseError) as info:
        parse(without(invite(), header))
    assert info.value.status == 400
    assert "Missing" in info.value.reason
    assert info.value.message is not None


@pytest.mark.parametrize("value", [b"-1", b"abc", b"1 2", b"99999999999", b"", b"0x10"])
def test_bad_content_length(value: bytes) -> None:
    assert status_of(invite(clen=value)) == 400
    with pytest.raises(ParseError):
        StreamParser().feed(invite(clen=value))


def test_short_body_rejected() -> None:
    assert status_of(invite(clen=str(len(SDP) + 1).encode())) == 400


@pytest.mark.parametrize(
    "cseq", [b"abc INVITE", b"1", b"-1 INVITE", b"4294967296 INVITE", b"1 INVITE extra"]
)
def test_bad_cseq(cseq: bytes) -> None:
    assert status_of(invite().replace(b"314159 INVITE", cseq)) == 400


def test_cseq_method_mismatch() -> None:
    assert status_of(invite().replace(b"314159 INVITE", b"1 BYE")) == 400


def test_bad_max_forwards() -> None:
    assert status_of(invite().replace(b"Max-Forwards: 70", b"Max-Forwards: 256")) == 400
    assert status_of(invite().replace(b"Max-Forwards: 70", b"Max-Forwards: x")) == 400


@pytest.mark.parametrize(
    "line,status",
    [
        (b"INVITE sip:bob@biloxi.example.com SIP/3.0", 505),
        (b"INVITE sip:bob@biloxi.example.com SIP/2.1", 505),
        (b"INVITE sip:bob@biloxi.example.com HTTP/1.1", 400),
        (b"INVITE sip:bob@biloxi.example.com", 400),
        (b"INVITE", 400),
        (b"", 400),
        (b" INVITE sip:bob@biloxi.example.com SIP/2.0", 400),
        (b"INV<ITE sip:bob@biloxi.example.com SIP/2.0", 400),
        (b"INVITE sip:bob@biloxi.example.com extra SIP/2.0", 400),
        (b"INVITE sip:" + b"a" * 5000 + b"@b SIP/2.0", 414),
    ],
)
def test_bad_request_line(line: bytes, status: int) -> None:
    data = invite()
    data = line + data[data.index(b"\r\n") :]
    assert status_of(data) == status


@pytest.mark.parametrize(
    "line,status",
    [
        (b"SIP/2.0 99 Too Low", 400),
        (b"SIP/2.0 1000 Too High", 400),
        (b"SIP/2.0 2OO OK", 400),
        (b"SIP/2.0", 400),
        (b"SIP/3.0 200 OK", 505),
        (b"SIP/2.0  200 OK", 400),
    ],
)
def test_bad_status_line(line: bytes, status: int) -> None:
    data = line + b"\r\nVia: SIP/2.0/UDP h\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\n"
    data += b"Call-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    assert status_of(data) == status


def test_oversized_message() -> None:
    data = invite(b"X-Pad: " + b"a" * 8000 + b"\r\n" * 0 + b"\r\n", body=b"x" * MAX_MESSAGE_SIZE)
    assert status_of(data) == 513
    with pytest.raises(ParseError) as info:
        StreamParser().feed(data)
    assert info.value.status == 513


def test_too_many_headers() -> None:
    data = invite(b"X-A: 1\r\n" * MAX_HEADERS)
    assert status_of(data) == 400


def test_header_line_too_long() -> None:
    assert status_of(invite(b"X-A: " + b"a" * 9000 + b"\r\n")) == 400


@pytest.mark.parametrize(
    "extra",
    [
        b"NoColonHere\r\n",
        b": empty name\r\n",
        b"Bad Name: x\r\n",
        b"X-A: bare\rcr\r\n",
        b"X-A: bare\nlf\r\n",
    ],
)
def test_bad_header_lines(extra: bytes) -> None:
    assert status_of(invite(extra)) == 400


def test_continuation_before_first_header() -> None:
    data = invite()
    i = data.index(b"\r\n") + 2
    assert status_of(data[:i] + b" folded\r\n" + data[i:]) == 400


def test_duplicate_single_headers() -> None:
    assert status_of(invite(b"Call-ID: other\r\n")) == 400
    assert status_of(invite(b"l: 5\r\n")) == 400


def test_empty_and_garbage() -> None:
    for data in (b"", b"\r\n\r\n", b"\x00\x01", b"INVITE"):
        with pytest.raises(ParseError):
            parse(data)


def test_lazy_accessors_raise_parse_error() -> None:
    m = parse(invite(b"Route: <sip:broken\r\n"), validate=False)
    with pytest.raises(ParseError):
        m.routes  # noqa: B018
    m = parse(without(invite(), b"Call-ID"), validate=False)
    with pytest.raises(ParseError):
        m.call_id  # noqa: B018
    m = parse(invite().replace(b"Call-ID: a84b", b"Call-ID: a 84b"), validate=False)
    with pytest.raises(ParseError):
        m.call_id  # noqa: B018


def test_request_uri_schemes_check() -> None:
    m = parse(invite())
    m.validate(schemes={"sip", "sips"})
    m = parse(invite().replace(b"sip:bob@biloxi.example.com SIP", b"im:bob@example.com SIP"))
    with pytest.raises(ParseError) as info:
        m.validate(schemes={"sip", "sips"})
    assert info.value.status == 416


# --- stream framing -------------------------------------------------------------------


def test_stream_parser_multiple_messages_and_keepalives() -> None:
    p = StreamParser()
    stream = b"\r\n\r\n" + invite() + b"\r\n" + invite(b"X: 2\r\n") + b"\r\n\r\n"
    msgs = p.feed(stream)
    assert len(msgs) == 2
    assert msgs[1].headers.get("X") == "2"
    assert p.buffered == 0


def test_stream_parser_requires_content_length() -> None:
    with pytest.raises(ParseError):
        StreamParser().feed(without(invite(), b"Content-Length"))


def test_stream_parser_error_is_sticky_and_keeps_earlier_messages() -> None:
    p = StreamParser()
    with pytest.raises(ParseError) as info:
        p.feed(invite() + without(invite(), b"Content-Length"))
    assert len(info.value.messages) == 1
    with pytest.raises(ParseError):
        p.feed(invite())


def test_stream_parser_byte_at_a_time_is_linear() -> None:
    big = invite(b"X-Pad: " + b"a" * 4000 + b"\r\n", body=b"b" * 30000)
    data = big * 2

    def run(chunk: bytes) -> float:
        p = StreamParser()
        start = time.perf_counter()
        out = []
        for i in range(len(chunk)):
            out.extend(p.feed(chunk[i : i + 1]))
        assert len(out) == chunk.count(b"INVITE sip")
        return time.perf_counter() - start

    t1 = run(big)
    t2 = run(data)
    # Quadratic behaviour would make the doubled input ~4x slower.
    assert t2 < t1 * 3 + 0.05


def test_stream_header_block_too_large() -> None:
    p = StreamParser(max_size=1000)
    with pytest.raises(ParseError) as info:
        p.feed(b"INVITE sip:a@b SIP/2.0\r\nX: " + b"a" * 1200)
    assert info.value.status == 513


# --- make_response --------------------------------------------------------------------


def test_make_response_copies_headers_and_adds_tag() -> None:
    req = parse(invite(b"Via: SIP/2.0/UDP p2;branch=z9hG4bK9\r\nTimestamp: 54\r\n"))
    resp = make_response(req, 180, to_tag="xyz")
    assert (resp.status, resp.reason) == (180, "Ringing")
    assert [v.host for v in resp.vias] == ["pc33.atlanta.example.com", "p2"]
    assert resp.from_ == req.from_
    assert resp.to.tag == "xyz"
    assert resp.call_id == req.call_id
    assert resp.cseq == req.cseq
    assert "Timestamp" not in resp.headers and "Contact" not in resp.headers
    assert resp.body == b""
    again = parse(resp.serialise())
    assert again == resp


def test_make_response_trying_copies_timestamp_and_keeps_existing_tag() -> None:
    req = parse(
        invite(b"Timestamp: 54\r\n").replace(
            b"To: Bob <sip:bob@biloxi.example.com>", b"To: <sip:bob@biloxi.example.com>;tag=old"
        )
    )
    resp = make_response(req, 100)
    assert resp.headers.get("Timestamp") == "54"
    resp = make_response(req, 200, "Fine", to_tag="new")
    assert resp.to.tag == "old"
    assert resp.reason == "Fine"
    assert make_response(req, 299).reason == "Success"
