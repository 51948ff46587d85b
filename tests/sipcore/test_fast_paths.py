"""The message layer's fast paths give what the general paths give.

Each fast path (request line without regex, ``<uri>`` name-addrs, the URI cache,
cached Call-ID/Max-Forwards, the cheap list-cap check) is checked against the
result or the error of the slow path it short-cuts.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipcore import uri as uri_module
from sipcore.errors import ParseError
from sipcore.headers import parse_int
from sipcore.limits import MAX_VIAS
from sipcore.message import Headers, Request, make_response, parse
from sipcore.transaction.keys import server_key
from sipcore.uri import NameAddr, SipURI, parse_name_addr, parse_uri


def register(start: str = "REGISTER sip:a.lab SIP/2.0", extra: str = "") -> bytes:
    return (
        f"{start}\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKr1;rport\r\n"
        "Max-Forwards: 70\r\n"
        "To: <sip:u1@a.lab>\r\nFrom: <sip:u1@a.lab>;tag=f1\r\n"
        "Call-ID: reg1@bench\r\nCSeq: 1 REGISTER\r\n"
        "Contact: <sip:u1@127.0.0.1:5080>;expires=3600\r\n"
        f"{extra}Content-Length: 0\r\n\r\n"
    ).encode()


def error_of(data: bytes) -> tuple[int, str]:
    with pytest.raises(ParseError) as info:
        parse(data)
    return info.value.status, info.value.reason


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("REGISTER sip:a.lab SIP/2.0 ", None),  # trailing space: still valid
        ("REGISTER  sip:a.lab SIP/2.0", None),  # two spaces
        ("REGISTER\tsip:a.lab SIP/2.0", None),  # tab as separator
        ("REGISTER sip:a.lab", (400, "Bad Request-Line")),
        ("REGISTER sip:a\tlab SIP/2.0", (400, "Bad Request-Line")),
        ("REGISTER sip:a.lab  ", (400, "Bad Request-Line")),
        ("REGISTER sip:a.lab SIP/3.0", (505, "Version Not Supported")),
        ("REG@STER sip:a.lab SIP/2.0", (400, "Bad Method")),
    ],
)
def test_request_line_forms(line: str, error: tuple[int, str] | None) -> None:
    data = register(line)
    if error is None:
        msg = parse(data, validate=False)
        assert isinstance(msg, Request)
        assert msg.method == "REGISTER" and str(msg.uri) == "sip:a.lab"
    else:
        assert error_of(data) == error


@pytest.mark.parametrize(
    "text",
    [
        "<sip:u1@a.lab>",
        "<sip:u1@a.lab>;tag=abc;X=Y",
        "<sip:u1@a.lab> ;tag=abc",
        "<sip:u1@a.lab;transport=tcp>;expires=60",
        '<sip:u1@a.lab>;p="quoted ; value"',
        "<sip:u1@a.lab><sip:u2@a.lab>",
        "<sip:u1@a.lab",
        "<<sip:u1@a.lab>",
        "<>",
        "<sip:u1@a.lab>junk",
        "<tel:+1-555>;tag=1",
    ],
)
def test_angle_name_addr_matches_general_parser(text: str) -> None:
    # A leading space (which the regexes skip) forces the regex path; results must agree.
    def outcome(value: str) -> NameAddr | tuple[int, str]:
        try:
            return parse_name_addr(value)
        except ParseError as e:
            return e.status, e.reason

    fast = outcome(text)
    slow = outcome(" " + text)
    if isinstance(slow, NameAddr):
        assert isinstance(fast, NameAddr)
        assert fast.display_name is None and slow.display_name is None
        assert fast == slow
        assert str(fast) == str(slow)
    else:
        assert fast == slow


def test_uri_cache_hits_are_independent_copies() -> None:
    uri_module._SIP_CACHE.clear()
    first = parse_uri("sip:bob@example.com;transport=tcp")
    second = parse_uri("sip:bob@example.com;transport=tcp")
    assert isinstance(first, SipURI) and isinstance(second, SipURI)
    assert first is not second and first.params is not second.params
    first.params["lr"] = None
    first.user = "alice"
    assert str(first) == "sip:alice@example.com;transport=tcp;lr"
    assert str(second) == "sip:bob@example.com;transport=tcp"
    assert str(parse_uri("sip:bob@example.com;transport=tcp")) == (
        "sip:bob@example.com;transport=tcp"
    )
    # Invalid text is never cached: it fails every time.
    for _ in range(2):
        with pytest.raises(ParseError):
            parse_uri("sip:bob@exa mple.com")


def test_cached_call_id_and_max_forwards_follow_header_changes() -> None:
    msg = parse(register())
    assert msg.call_id == "reg1@bench"
    assert msg.max_forwards == 70
    msg.headers.set("i", "other@bench")
    msg.headers.set("Max-Forwards", "69")
    assert msg.call_id == "other@bench"
    assert msg.max_forwards == 69
    msg.headers.set("Call-ID", "bad id")
    with pytest.raises(ParseError, match="Bad Call-ID"):
        msg.call_id  # noqa: B018
    msg.headers.remove("Max-Forwards")
    assert msg.max_forwards is None
    msg.headers.add("Max-Forwards", "256")
    with pytest.raises(ParseError, match="Bad Max-Forwards"):
        msg.max_forwards  # noqa: B018


# Each parsed view a Headers keeps: the header it comes from, a new value for it, and
# what the view must then show.
VIEWS = [
    ("Via", "top_via", "SIP/2.0/UDP h2;branch=z9hG4bKv2", lambda m: m.top_via.host == "h2"),
    ("Via", "vias", "SIP/2.0/UDP h2;branch=z9hG4bKv2", lambda m: m.vias[0].host == "h2"),
    ("CSeq", "cseq", "7 REGISTER", lambda m: m.cseq.number == 7),
    ("Call-ID", "call_id", "new@x", lambda m: m.call_id == "new@x"),
    ("From", "from_", "<sip:x@a.lab>;tag=9", lambda m: m.from_.tag == "9"),
    ("To", "to", "<sip:y@a.lab>", lambda m: m.to.uri.user == "y"),  # type: ignore[union-attr]
    ("Max-Forwards", "max_forwards", "9", lambda m: m.max_forwards == 9),
    ("Contact", "contacts", "<sip:z@192.0.2.7>", lambda m: m.contacts[0].uri.host == "192.0.2.7"),
    ("Route", "routes", "<sip:192.0.2.8;lr>", lambda m: m.routes[0].uri.host == "192.0.2.8"),
    ("Record-Route", "record_routes", "<sip:192.0.2.9;lr>",
     lambda m: m.record_routes[0].uri.host == "192.0.2.9"),
]
EXTRA = "Route: <sip:192.0.2.1;lr>\r\nRecord-Route: <sip:192.0.2.2;lr>\r\n"


@pytest.mark.parametrize("how", ["set", "replace_first", "remove+add", "pop+prepend"])
@pytest.mark.parametrize(("name", "attr", "value", "shows"), VIEWS, ids=[v[1] for v in VIEWS])
def test_a_changed_field_drops_its_parsed_view(
    name: str, attr: str, value: str, shows: object, how: str,
) -> None:
    msg = parse(register(extra=EXTRA))
    getattr(msg, attr)  # parsed and kept
    headers = msg.headers
    # Compact forms where there is one: the view is dropped by key, not by spelling.
    spelling = {"Via": "v", "Call-ID": "i", "From": "f", "To": "t", "Contact": "m"}
    name = spelling.get(name, name) if how != "set" else name
    if how == "set":
        headers.set(name, value)
    elif how == "replace_first":
        headers.replace_first(name, value)
    elif how == "remove+add":
        headers.remove(name)
        headers.add(name, value)
    else:
        headers.pop_first(name)
        headers.prepend(name, value)
    assert shows(msg)  # type: ignore[operator]


@pytest.mark.parametrize(("name", "attr", "value", "shows"), VIEWS, ids=[v[1] for v in VIEWS])
def test_other_fields_changing_keep_a_parsed_view(
    name: str, attr: str, value: str, shows: object,
) -> None:
    msg = parse(register(extra=EXTRA))
    before = getattr(msg, attr)
    for other, other_value in [("Subject", "x"), ("Via", value), ("Contact", "<sip:o@h>"),
                               ("CSeq", "9 REGISTER"), ("Route", "<sip:o;lr>")]:
        if other != name:
            msg.headers.set(other, other_value)
    assert getattr(msg, attr) is before


def test_server_key_follows_the_top_via() -> None:
    msg = parse(register())
    first = server_key(msg)
    assert server_key(msg) is first  # kept
    msg.headers.set("Max-Forwards", "3")
    assert server_key(msg) is first
    msg.headers.replace_first("v", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKother")
    assert server_key(msg)[1] == "z9hG4bKother"


@pytest.mark.parametrize("text", ["", " ", "1 2", "+1", "-1", "12345678901", "²", "١٢", "1\n"])
def test_parse_int_rejects_what_the_regex_rejected(text: str) -> None:
    with pytest.raises(ParseError, match="Bad X"):
        parse_int(text, "X", 2**32)


def test_parse_int_accepts_padding_and_ten_digits() -> None:
    assert parse_int(" \t0042\t ", "X", 100) == 42
    assert parse_int("4294967295", "X", 2**32) == 2**32 - 1


def test_many_single_value_via_fields_hit_the_cap() -> None:
    vias = "".join(
        f"Via: SIP/2.0/UDP h{i}.example.com;branch=z9hG4bK{i}\r\n" for i in range(MAX_VIAS + 1)
    )
    data = register(extra=vias)
    assert error_of(data) == (400, f"Too Many Via Values (limit {MAX_VIAS})")
    # One under the cap (with the Via already in the message) is fine.
    vias = "".join(
        f"Via: SIP/2.0/UDP h{i}.example.com;branch=z9hG4bK{i}\r\n" for i in range(MAX_VIAS - 1)
    )
    assert len(parse(register(extra=vias)).vias) == MAX_VIAS


def test_make_response_to_tag_without_to_header() -> None:
    req = Request("OPTIONS", "sip:a.lab", [("Via", "SIP/2.0/UDP h;branch=z9hG4bK1")])
    resp = make_response(req, 200, to_tag="t1")
    assert [name for name, _ in resp.headers] == ["Via"]
    req.headers.add("To", "<sip:b@a.lab>")
    resp = make_response(req, 200, to_tag="t1")
    assert resp.headers.get("To") == "<sip:b@a.lab>;tag=t1"


def test_add_checks_names_and_values_once_known() -> None:
    headers = Headers()
    headers.add("X-Known", "1")
    headers.add("X-Known", 2)  # type: ignore[arg-type]
    assert headers.get_all("x-known") == ["1", "2"]
    with pytest.raises(ValueError, match="CR or LF"):
        headers.add("X-Known", "a\r\nb")
    with pytest.raises(ValueError, match="invalid header name"):
        headers.add("Bad Name", "1")


def test_uri_cache_keeps_texts_in_use_across_a_turnover() -> None:
    cache = uri_module._SnapshotCache(2)
    cache.put("a", ("A",))
    cache.put("b", ("B",))
    cache.put("c", ("C",))  # recent was full: {a, b} become the older generation
    assert cache.get("a") == ("A",)  # found in the older one, moved to the recent one
    cache.put("d", ("D",))  # recent {c, a} full: it becomes the older one, b is gone
    assert cache.get("b") is None
    assert [cache.get(t) for t in "acd"] == [("A",), ("C",), ("D",)]
    assert len(cache) <= 4
    cache.clear()
    assert len(cache) == 0 and cache.get("a") is None


def test_server_key_is_computed_once_and_follows_via_changes() -> None:
    from sipcore.headers import Via
    from sipcore.transaction.keys import server_key

    request = parse(register())
    assert isinstance(request, Request)
    key = server_key(request)
    assert key == ("3261", "z9hG4bKr1", "127.0.0.1", 5070, "REGISTER")
    # match_server, absorb and the transaction share one cached key (the first
    # call's result may be another boxing of the same tuple when compiled).
    assert server_key(request) is server_key(request) == key
    # A Via written back (received/rport stamped) keeps branch and sent-by: same key.
    via = request.top_via
    via.params["received"] = "192.0.2.1"
    request.set_top_via(via)
    assert server_key(request) == key
    # Another branch written over the top Via is another transaction.
    request.headers.replace_first("Via", str(Via.parse(
        "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKother")))
    assert server_key(request)[1] == "z9hG4bKother"
    # An ACK is filed under its INVITE's method, cached or not.
    ack = parse(register("ACK sip:a.lab SIP/2.0").replace(b"1 REGISTER", b"1 ACK"))
    assert isinstance(ack, Request)
    assert server_key(ack)[4] == "INVITE" and server_key(ack)[4] == "INVITE"


def test_rfc2543_server_keys_follow_the_request_uri() -> None:
    from sipcore.transaction.keys import server_key

    request = parse(register().replace(b"branch=z9hG4bKr1", b"branch=old1"))
    assert isinstance(request, Request)
    before = server_key(request)
    assert before[0] == "2543"
    request.uri = parse_uri("sip:elsewhere.example")
    assert server_key(request) != before


def _via_outcome(parser, text: str) -> object:
    try:
        via = parser(text)
    except ParseError as e:
        return ("error", e.status)
    return (via.protocol, via.transport, via.host, via.port, via.params)


_VIA_FORMS = [
    "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKr1;rport",
    "SIP/2.0/udp host.example;branch=z9hG4bKa",
    "SIP/2.0/TLS [2001:db8::1]:5061;branch=z9hG4bKb;received=192.0.2.1",
    "SIP/2.0/UDP [2001:db8::zz]:5061;branch=z9hG4bKb",  # bad IPv6: error, not cached
    "SIP/2.0/UDP host:65536;branch=z9hG4bKc",  # port out of range
    "SIP/2.0/UDP host:123456;branch=z9hG4bKc",  # six digits
    "SIP/2.0/UDP host:5060abc",
    "SIP/2.0/UDP host ;branch=z9hG4bKd",  # LWS before the parameters
    "SIP/2.0/UDP  host:5060",
    "SIP/2.0/UDP\thost:5060",
    "SIP/2.0/Udp host:5060",
    "SIP / 2.0 / UDP host : 5060 ; branch = z9hG4bKe",
    "SIP/2.0/XYZ host:5060;branch=z9hG4bKf",
    "SIP/2.0/UDP -host:5060",
    "SIP/2.0/UDP host:5060;rport=99999",
    "SIP/2.0/UDP host:5060;ttl=300",
    "SIP/2.0/UDP host:5060;branch",
    "SIP/2.0/UDP host:5060;;branch=x",
    "SIP/2.0/UDP",
    "SIP/2.0/UDP ",
    "SIP/2.0/ host",
]


@pytest.mark.parametrize("text", _VIA_FORMS)
def test_via_fast_path_matches_general_parser(text: str) -> None:
    from sipcore.headers import Via

    general = _via_outcome(Via.parse_general, text)
    assert _via_outcome(Via.parse, text) == general
    # Twice: the second parse of a sent-by may come from the cache.
    assert _via_outcome(Via.parse, text) == general


@given(
    transport=st.sampled_from(["UDP", "udp", "TCP", "TLS", "SCTP", "WS", "wss", "Udp", "X"]),
    sep=st.sampled_from([" ", "  ", "\t", " \t"]),
    host=st.from_regex(r"[A-Za-z0-9\-.\[\]:]{0,12}", fullmatch=True),
    port=st.one_of(st.none(), st.integers(0, 999999).map(str), st.just(" 5060")),
    params=st.from_regex(r"(;[a-z=0-9 ;.]{0,10}){0,3}", fullmatch=True),
)
@settings(max_examples=400, deadline=None)
def test_via_fast_path_matches_general_parser_anywhere(
    transport: str, sep: str, host: str, port: str | None, params: str
) -> None:
    from sipcore.headers import Via

    text = f"SIP/2.0/{transport}{sep}{host}{'' if port is None else ':' + port}{params}"
    assert _via_outcome(Via.parse, text) == _via_outcome(Via.parse_general, text)


def test_sent_by_cache_is_bounded() -> None:
    from sipcore import headers
    from sipcore.headers import Via

    for i in range(headers._SENT_BY_MAX + 10):
        via = Via.parse(f"SIP/2.0/UDP 10.{i // 65536}.{i // 256 % 256}.{i % 256}:5060")
        assert via.port == 5060
    assert 0 < len(headers._SENT_BY) <= headers._SENT_BY_MAX


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ((b"Call-ID: reg1@bench\r\n", b""), "Missing Call-ID header"),
        ((b"To: <sip:u1@a.lab>\r\n", b""), "Missing To header"),
        ((b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\nMax-Forwards: 69\r\n"),
         "Multiple Max-Forwards headers"),
        ((b"CSeq: 1 REGISTER\r\n", b"CSeq: 1 REGISTER\r\nCSeq: 1 REGISTER\r\n"),
         "Multiple CSeq headers"),
        # A repeated Via is allowed; a repeated From still found among repeats.
        ((b"Max-Forwards: 70\r\n",
          b"Max-Forwards: 70\r\nVia: SIP/2.0/UDP h:1;branch=z9hG4bKx\r\n"), None),
        ((b"Max-Forwards: 70\r\n",
          b"Max-Forwards: 70\r\nVia: SIP/2.0/UDP h:1;branch=z9hG4bKx\r\n"
          b"From: <sip:x@a.lab>;tag=2\r\n"), "Multiple From headers"),
    ],
)
def test_required_and_single_headers(change: tuple[bytes, bytes], error: str | None) -> None:
    data = register().replace(*change)
    if error is None:
        assert isinstance(parse(data), Request)
    else:
        assert error_of(data) == (400, error)


def _old_field_cut(raw: str) -> tuple[str, str]:
    # What _parse_head did before its one-slice cut: partition, then strip.
    name, _, value = raw.partition(":")
    return name, value.strip(" \t")


LWS = st.text(alphabet=" \t", max_size=3)


@settings(max_examples=400)
@given(
    name=st.sampled_from(["Subject", "X-Y", "Organization", "s"]),
    before=LWS, after=LWS,
    value=st.text(alphabet=st.characters(blacklist_characters="\r\n", codec="utf-8"),
                  max_size=12),
)
def test_a_header_value_is_cut_as_partition_and_strip_cut_it(
    name: str, before: str, after: str, value: str,
) -> None:
    raw = f"{name}:{before}{value}{after}"
    msg = parse(register(extra=raw + "\r\n"))
    expected = _old_field_cut(raw)[1]
    assert msg.headers.get(name) == expected


@pytest.mark.parametrize("value", ["a\r\n b", "a \r\n\tb ", "\r\n b", "a\r\n  b\r\n c"])
def test_a_folded_value_is_unfolded_and_cut(value: str) -> None:
    msg = parse(register(extra=f"Subject: {value}\r\n"))
    expected = " ".join(part.strip(" \t") for part in value.split("\r\n")).strip(" \t")
    assert msg.headers.get("Subject") == expected
