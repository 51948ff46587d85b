"""Tests for sipcore.sdp: parsing, serialisation and the per-stream helpers."""

from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipcore.errors import ParseError
from sipcore.sdp import (
    Bandwidth,
    Connection,
    MediaDescription,
    Origin,
    Rtcp,
    RtpMap,
    SessionDescription,
    Timing,
    parse_sdp,
)


def crlf(*lines: str) -> str:
    return "".join(line + "\r\n" for line in lines)


# RFC 8866 §5 example, extended with a media-level IPv6 c= overriding the session one.
RFC_EXAMPLE = crlf(
    "v=0",
    "o=jdoe 3724394400 3724394405 IN IP4 198.51.100.1",
    "s=Call to John Smith",
    "i=SDP Offer #1",
    "u=http://www.jdoe.example.com/home.html",
    "e=Jane Doe <jane@jdoe.example.com>",
    "p=+1 617 555-6011",
    "c=IN IP4 198.51.100.1",
    "t=0 0",
    "m=audio 49170 RTP/AVP 0",
    "m=audio 49180 RTP/AVP 0",
    "m=video 51372 RTP/AVP 99",
    "c=IN IP6 2001:db8::2",
    "a=rtpmap:99 h263-1998/90000",
)

# IPv6, several m= lines, b= at both levels, rtcp attributes, unknown
# attributes and unknown line types (GB28181 y=/f=), r=/z=/k=, a "s= " name.
KITCHEN_SINK = crlf(
    "v=0",
    "o=alice 2890844526 2890842807 IN IP6 2001:db8::1",
    "s= ",
    "i=multi-stream test",
    "c=IN IP6 2001:db8::1",
    "b=CT:384",
    "t=2873397496 2873404696",
    "r=604800 3600 0 90000",
    "z=2882844526 -1h 2898848070 0",
    "k=prompt",
    "a=tool:sipcalling",
    "a=group:BUNDLE audio video",
    "a=x-vendor-flag",
    "x=session-level unknown line",
    "m=audio 49170 RTP/AVP 0 8 97 101",
    "i=voice",
    "b=AS:64",
    "b=TIAS:64000",
    "a=rtpmap:97 iLBC/8000",
    "a=fmtp:97 mode=30",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-15",
    "a=ptime:30",
    "a=maxptime:60",
    "a=rtcp:53020 IN IP6 2001:db8::5",
    "a=sendonly",
    "a=x-unknown:some value: with colon",
    "a=x-empty:",
    "m=video 51372/2 RTP/AVP 31 32",
    "c=IN IP6 2001:db8::9",
    "b=AS:512",
    "a=rtcp:51380",
    "a=rtcp-mux",
    "a=recvonly",
    "m=application 0 UDP/BFCP *",
    "y=0123456789",
    "f=v/2/4///a///",
)

# What a desk phone sends, plus a multicast c= with TTL and count.
PHONE_OFFER = crlf(
    "v=0",
    "o=- 1700000000 1700000001 IN IP4 192.0.2.10",
    "s=SIP Call",
    "c=IN IP4 192.0.2.10",
    "t=0 0",
    "a=sendrecv",
    "m=audio 16384 RTP/AVP 9 0 8 18 101",
    "a=rtpmap:9 G722/8000",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:18 G729/8000",
    "a=fmtp:18 annexb=no",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-15",
    "a=ptime:20",
    "a=rtcp:16385",
    "m=video 0 RTP/AVP 96",
    "c=IN IP4 233.252.0.1/127/3",
    "a=rtpmap:96 H264/90000",
    "a=fmtp:96 profile-level-id=42e01f;packetization-mode=1",
)

GOLDEN = [RFC_EXAMPLE, KITCHEN_SINK, PHONE_OFFER]


# --------------------------------------------------------------------------- golden


@pytest.mark.parametrize("text", GOLDEN, ids=["rfc8866", "kitchen-sink", "phone"])
def test_golden_round_trip_byte_exact(text: str) -> None:
    data = text.encode()
    assert parse_sdp(data).serialise() == data
    assert str(parse_sdp(text)) == text


@pytest.mark.parametrize("text", GOLDEN, ids=["rfc8866", "kitchen-sink", "phone"])
def test_lf_only_input_parses_the_same_and_reserialises_with_crlf(text: str) -> None:
    lf = text.replace("\r\n", "\n")
    assert parse_sdp(lf) == parse_sdp(text)
    assert str(parse_sdp(lf)) == text


def test_missing_final_newline_and_blank_lines_are_tolerated() -> None:
    sloppy = "\n" + RFC_EXAMPLE.replace("t=0 0\r\n", "t=0 0\r\n\r\n").rstrip("\r\n")
    assert str(parse_sdp(sloppy)) == RFC_EXAMPLE


def test_rfc_example_fields() -> None:
    sd = parse_sdp(RFC_EXAMPLE)
    assert sd.version == 0
    assert sd.origin == Origin("jdoe", "3724394400", 3724394405, "IN", "IP4", "198.51.100.1")
    assert sd.session_name == "Call to John Smith"
    assert sd.info == "SDP Offer #1"
    assert sd.uri == "http://www.jdoe.example.com/home.html"
    assert sd.emails == ["Jane Doe <jane@jdoe.example.com>"]
    assert sd.phones == ["+1 617 555-6011"]
    assert sd.connection == Connection("IN", "IP4", "198.51.100.1")
    assert sd.timing == [Timing(0, 0)]
    assert [(m.media, m.port, m.proto, m.formats) for m in sd.media] == [
        ("audio", 49170, "RTP/AVP", ["0"]),
        ("audio", 49180, "RTP/AVP", ["0"]),
        ("video", 51372, "RTP/AVP", ["99"]),
    ]
    # Session-level c= applies unless the media has its own.
    assert sd.stream_address(0) == ("198.51.100.1", 49170)
    assert sd.stream_address(sd.media[2]) == ("2001:db8::2", 51372)
    assert sd.media[2].rtpmap == {"99": RtpMap("h263-1998", 90000, None)}
    assert sd.media[0].codec("0") == RtpMap("PCMU", 8000, 1)  # static, no rtpmap line


def test_kitchen_sink_fields() -> None:
    sd = parse_sdp(KITCHEN_SINK)
    assert sd.session_name == " "
    assert sd.bandwidths == [Bandwidth("CT", 384)]
    assert sd.timing == [Timing(2873397496, 2873404696, ["604800 3600 0 90000"])]
    assert sd.time_zones == "2882844526 -1h 2898848070 0"
    assert sd.key == "prompt"
    assert sd.attributes == [
        ("tool", "sipcalling"),
        ("group", "BUNDLE audio video"),
        ("x-vendor-flag", None),
    ]
    assert sd.extra_lines == [("x", "session-level unknown line")]
    assert sd.direction is None

    audio, video, app = sd.media
    assert audio.title == "voice"
    assert audio.bandwidths == [Bandwidth("AS", 64), Bandwidth("TIAS", 64000)]
    assert audio.rtpmap == {
        "97": RtpMap("iLBC", 8000, None),
        "101": RtpMap("telephone-event", 8000, None),
    }
    assert audio.codec("8") == RtpMap("PCMA", 8000, 1)
    assert audio.codec("55") is None
    assert audio.fmtp == {"97": "mode=30", "101": "0-15"}
    assert audio.ptime == 30
    assert audio.get_attribute("maxptime") == "60"
    assert audio.get_attribute("x-unknown") == "some value: with colon"
    assert audio.get_attribute("x-empty") == ""
    assert audio.direction == "sendonly"
    assert audio.rtcp == Rtcp(53020, "IN", "IP6", "2001:db8::5")
    assert sd.stream_address(audio) == ("2001:db8::1", 49170)
    assert sd.rtcp_address(audio) == ("2001:db8::5", 53020)

    assert video.number_of_ports == 2
    assert video.connection == Connection("IN", "IP6", "2001:db8::9")
    assert video.rtcp == Rtcp(51380)
    assert video.rtcp_mux
    assert sd.rtcp_address(video) == ("2001:db8::9", 51380)
    assert sd.effective_direction(video) == "recvonly"

    assert app.rejected and app.formats == ["*"]
    assert app.extra_lines == [("y", "0123456789"), ("f", "v/2/4///a///")]
    assert sd.effective_direction(app) == "sendrecv"


def test_phone_offer_fields() -> None:
    sd = parse_sdp(PHONE_OFFER)
    audio, video = sd.media
    assert sd.direction == "sendrecv"
    assert audio.direction is None
    assert sd.effective_direction(audio) == "sendrecv"
    assert audio.codec("18") == RtpMap("G729", 8000, None)
    assert audio.fmtp["18"] == "annexb=no"
    assert sd.rtcp_address(audio) == ("192.0.2.10", 16385)
    assert video.connection is not None
    assert video.connection.host == "233.252.0.1"
    assert video.connection.address == "233.252.0.1/127/3"
    assert not sd.is_old_style_hold(audio)


def test_media_direction_overrides_session_direction() -> None:
    sd = parse_sdp(PHONE_OFFER)
    sd.media[0].set_direction("inactive")
    assert sd.effective_direction(0) == "inactive"
    sd.media[0].set_direction(None)
    assert sd.effective_direction(0) == "sendrecv"
    sd.set_direction(None)
    assert sd.direction is None


def test_rtcp_address_defaults_to_rtp_port_plus_one_or_mux() -> None:
    sd = parse_sdp(RFC_EXAMPLE)
    assert sd.rtcp_address(0) == ("198.51.100.1", 49171)
    sd.media[0].add_attribute("rtcp-mux")
    assert sd.rtcp_address(0) == ("198.51.100.1", 49170)


def test_no_connection_anywhere_gives_no_address() -> None:
    sd = parse_sdp(crlf("v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "t=0 0", "m=audio 5 RTP/AVP 0"))
    assert sd.stream_address(0) is None
    assert sd.rtcp_address(0) is None
    assert not sd.is_old_style_hold(0)


def test_old_style_hold_address_is_recognised() -> None:
    sd = parse_sdp(RFC_EXAMPLE.replace("c=IN IP4 198.51.100.1", "c=IN IP4 0.0.0.0"))
    assert sd.is_old_style_hold(0)
    assert not sd.is_old_style_hold(2)  # has its own IPv6 c=


def test_attribute_helpers_keep_position() -> None:
    sd = parse_sdp(KITCHEN_SINK)
    audio = sd.media[0]
    audio.set_direction("sendrecv")
    names = [n for n, _ in audio.attributes]
    assert names.index("sendrecv") == 7  # where sendonly was
    audio.set_attribute("ptime", "20")
    assert audio.ptime == 20 and names.index("ptime") == 4
    audio.remove_attribute("x-unknown")
    assert not audio.has_attribute("x-unknown")
    with pytest.raises(ValueError):
        audio.set_direction("sideways")


def test_tolerant_views_skip_malformed_attributes() -> None:
    m = MediaDescription("audio", 5000, "RTP/AVP", ["0", "96"])
    for value in ["96", "96 opus", "96 opus/x", "96 opus/48000/y", "", "96 /8000"]:
        m.attributes = [("rtpmap", value), ("ptime", "abc"), ("rtcp", "x"), ("fmtp", "")]
        assert m.rtpmap == {}
        assert m.ptime is None and m.rtcp is None and m.fmtp == {}
    m.attributes = [("ptime", "20.5"), ("rtpmap", "96 opus/48000/2")]
    assert m.ptime == 20
    assert m.rtpmap == {"96": RtpMap("opus", 48000, 2)}


def test_built_description_serialises_in_rfc_order() -> None:
    audio = MediaDescription("audio", 4000, "RTP/AVP", ["0"], attributes=[("sendrecv", None)])
    sd = SessionDescription(
        origin=Origin("-", "42", 7, "IN", "IP4", "192.0.2.1"),
        attributes=[("tool", "x")],
        connection=Connection("IN", "IP4", "192.0.2.1"),
        media=[audio],
    )
    # An empty timing list still produces the mandatory t= line.
    assert (
        bytes(sd)
        == crlf(
            "v=0",
            "o=- 42 7 IN IP4 192.0.2.1",
            "s=-",
            "c=IN IP4 192.0.2.1",
            "t=0 0",
            "a=tool:x",
            "m=audio 4000 RTP/AVP 0",
            "a=sendrecv",
        ).encode()
    )
    copied = sd.copy()
    copied.media[0].port = 1
    assert sd.media[0].port == 4000


@pytest.mark.parametrize("bad", ["x\r\na=injected", "x\ny", "x\x00"])
def test_serialise_refuses_line_injection(bad: str) -> None:
    sd = parse_sdp(RFC_EXAMPLE)
    sd.session_name = bad
    with pytest.raises(ValueError):
        sd.serialise()


def test_non_sdp_type_is_a_programming_error() -> None:
    with pytest.raises(TypeError):
        parse_sdp(123)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- malformed

HEAD = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\n"

MALFORMED: list[tuple[str | bytes, str]] = [
    ("", "empty SDP"),
    ("\r\n\r\n", "empty SDP"),
    ("o=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\n", "missing v="),
    ("v=1\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\n", "unsupported SDP version"),
    ("v=0\r\ns=-\r\nt=0 0\r\n", "missing o="),
    ("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\nt=0 0\r\n", "missing s="),
    ("v=0\r\no=- 1 1 IN IP4\r\ns=-\r\n", "bad o= line"),
    ("v=0\r\no=- 1 x IN IP4 192.0.2.1\r\ns=-\r\n", "bad o= line"),
    ("v=0\r\nv=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\n", "duplicate v="),
    (HEAD + "o=- 1 1 IN IP4 192.0.2.1\r\n", "duplicate o="),
    (HEAD + "c=IN IP4\r\n", "bad c= line"),
    (HEAD + "c=IN IP4 999.1.1.1\r\n", "bad c= line"),
    (HEAD + "c=IN IP4 192.0.2.1/abc\r\n", "bad c= line"),
    (HEAD + "c=IN IP6 2001:db8::zz\r\n", "bad c= line"),
    (HEAD + "c=IN IPX somewhere\r\n", "bad c= line"),
    (HEAD + "c=IN IP4 bad_host!\r\n", "bad c= line"),
    (HEAD + "c=IN IP4 192.0.2.1\r\nc=IN IP4 192.0.2.2\r\n", "duplicate c="),
    (HEAD + "m=audio\r\n", "bad m= line"),
    (HEAD + "m=audio 5000\r\n", "bad m= line"),
    (HEAD + "m=audio abc RTP/AVP 0\r\n", "invalid port"),
    (HEAD + "m=audio +5000 RTP/AVP 0\r\n", "invalid port"),
    (HEAD + "m=audio \u0665\u0660 RTP/AVP 0\r\n", "invalid port"),
    (HEAD + "m=audio 70000 RTP/AVP 0\r\n", "invalid port"),
    (HEAD + "m=audio 5000/0 RTP/AVP 0\r\n", "number of ports"),
    (HEAD + "m=audio 5000 RTP/AVP 128\r\n", "payload type"),
    (HEAD + "m=audio 5000 RTP/AVP pcmu\r\n", "payload type"),
    (HEAD + "m=audio 5000 RTP/AVP 0\r\nc=IN IP4 nope..\r\n", "bad c= line"),
    (HEAD + "m=audio 5000 RTP/AVP 0\r\nt=0 0\r\n", "not allowed in a media"),
    (HEAD + "m=audio 5000 RTP/AVP 0\r\ni=a\r\ni=b\r\n", "duplicate i="),
    (HEAD + "b=AS\r\n", "bad b= line"),
    (HEAD + "b=AS:fast\r\n", "bad b= line"),
    (HEAD + "b=:64\r\n", "bad b= line"),
    ("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0\r\n", "bad t= line"),
    ("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nr=1 2 3\r\n", "r= line without"),
    (HEAD + "a=\r\n", "empty attribute name"),
    (HEAD + "a=:value\r\n", "empty attribute name"),
    (HEAD + "hello\r\n", "malformed SDP line"),
    (HEAD + "V=0\r\n", "malformed SDP line"),
    (HEAD + "a\r\n", "malformed SDP line"),
    (HEAD + "a:rtpmap\r\n", "malformed SDP line"),
    ("v=0\ro=- 1 1 IN IP4 192.0.2.1\rs=-\r", "bare CR"),
    (HEAD.encode() + b"i=\xff\xfe\r\n", "not valid UTF-8"),
    (HEAD + "a=x:\x00\r\n", "NUL"),
    (HEAD + "i=\ud800\r\n", "not valid UTF-8"),
]


@pytest.mark.parametrize(("data", "reason"), MALFORMED)
def test_malformed_sdp_raises_parse_error(data: str | bytes, reason: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_sdp(data)
    assert reason in info.value.reason
    assert info.value.status == 400


# --------------------------------------------------------------------------- hypothesis

_SAFE_TEXT = st.text(
    alphabet=st.characters(blacklist_characters="\r\n\x00", blacklist_categories=("Cs",)),
    max_size=20,
)
_TOKEN = st.text(alphabet=string.ascii_letters + string.digits + "-._+*", min_size=1, max_size=12)
_HOSTNAME = st.from_regex(r"\A[a-z0-9]([a-z0-9.-]{0,10}[a-z0-9])?\Z").filter(
    lambda h: not all(c in "0123456789." for c in h)
)
_RTP_PROTOS = ["RTP/AVP", "RTP/SAVP", "RTP/AVPF", "UDP/TLS/RTP/SAVPF"]
_OTHER_PROTOS = ["udp", "TCP/BFCP", "udptl", "TCP/MRCPv2"]


@st.composite
def connections(draw: st.DrawFn) -> Connection:
    kind = draw(st.sampled_from(["IP4", "IP6", "IP4-mcast", "IP4-host", "IP6-host"]))
    if kind == "IP4":
        return Connection("IN", "IP4", str(draw(st.ip_addresses(v=4))))
    if kind == "IP6":
        return Connection("IN", "IP6", str(draw(st.ip_addresses(v=6))))
    if kind == "IP4-mcast":
        suffix = draw(st.lists(st.integers(0, 255).map(str), min_size=1, max_size=2))
        return Connection("IN", "IP4", "/".join([str(draw(st.ip_addresses(v=4))), *suffix]))
    return Connection("IN", kind[:3], draw(_HOSTNAME))


_ATTRIBUTES = st.lists(
    st.tuples(
        st.text(
            alphabet=st.characters(blacklist_characters="\r\n\x00:", blacklist_categories=("Cs",)),
            min_size=1,
            max_size=12,
        )
        | st.sampled_from(["sendrecv", "sendonly", "recvonly", "inactive", "rtcp-mux"]),
        st.none() | _SAFE_TEXT,
    ),
    max_size=5,
)
_EXTRA_LINES = st.lists(st.tuples(st.sampled_from("fghjlnqwxy"), _SAFE_TEXT), max_size=2)
_BANDWIDTHS = st.lists(
    st.builds(
        Bandwidth,
        st.text(alphabet=string.ascii_uppercase + "-", min_size=1, max_size=5),
        st.integers(0, 10**9),
    ),
    max_size=2,
)


@st.composite
def media_descriptions(draw: st.DrawFn) -> MediaDescription:
    proto = draw(st.sampled_from(_RTP_PROTOS + _OTHER_PROTOS))
    if "RTP/" in proto:
        formats = draw(st.lists(st.integers(0, 127).map(str), max_size=6))
    else:
        formats = draw(st.lists(_TOKEN, max_size=3))
    connection = draw(st.none() | connections())
    return MediaDescription(
        media=draw(st.sampled_from(["audio", "video", "application", "text", "message"])),
        port=draw(st.integers(0, 65535)),
        proto=proto,
        formats=formats,
        number_of_ports=draw(st.none() | st.integers(1, 8)),
        title=draw(st.none() | _SAFE_TEXT),
        connection=connection,
        # Further c= lines only exist after a first one.
        extra_connections=draw(st.lists(connections(), max_size=1)) if connection else [],
        bandwidths=draw(_BANDWIDTHS),
        key=draw(st.none() | _SAFE_TEXT),
        attributes=draw(_ATTRIBUTES),
        extra_lines=draw(_EXTRA_LINES),
    )


@st.composite
def session_descriptions(draw: st.DrawFn) -> SessionDescription:
    origin = Origin(
        draw(_TOKEN),
        draw(_TOKEN),
        draw(st.integers(0, 2**64)),
        "IN",
        draw(st.sampled_from(["IP4", "IP6"])),
        draw(_TOKEN),
    )
    return SessionDescription(
        origin=origin,
        session_name=draw(_SAFE_TEXT),
        info=draw(st.none() | _SAFE_TEXT),
        uri=draw(st.none() | _SAFE_TEXT),
        emails=draw(st.lists(_SAFE_TEXT, max_size=2)),
        phones=draw(st.lists(_SAFE_TEXT, max_size=2)),
        connection=draw(st.none() | connections()),
        bandwidths=draw(_BANDWIDTHS),
        timing=draw(
            st.lists(
                st.builds(
                    Timing,
                    st.integers(0, 2**40),
                    st.integers(0, 2**40),
                    st.lists(_SAFE_TEXT, max_size=2),
                ),
                min_size=1,  # an empty list is written as t=0 0, see the dedicated test
                max_size=2,
            )
        ),
        time_zones=draw(st.none() | _SAFE_TEXT),
        key=draw(st.none() | _SAFE_TEXT),
        attributes=draw(_ATTRIBUTES),
        media=draw(st.lists(media_descriptions(), max_size=4)),
        extra_lines=draw(_EXTRA_LINES),
    )


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(session_descriptions())
def test_generated_descriptions_round_trip(sd: SessionDescription) -> None:
    data = sd.serialise()
    parsed = parse_sdp(data)
    assert parsed == sd
    assert parsed.serialise() == data
    assert parse_sdp(data.replace(b"\r\n", b"\n")) == sd


def _check_parse_is_total(data: str | bytes) -> None:
    """Anything either parses or raises ParseError; what parses reaches a fixpoint."""
    try:
        sd = parse_sdp(data)
    except ParseError as exc:
        assert exc.status == 400 and exc.reason
        return
    text = sd.serialise()
    assert parse_sdp(text).serialise() == text
    # The conveniences must not blow up on whatever got through.
    for i, m in enumerate(sd.media):
        m.rtpmap, m.fmtp, m.ptime, m.rtcp, m.direction  # noqa: B018
        sd.stream_address(i), sd.rtcp_address(i), sd.effective_direction(i)  # noqa: B018


@settings(max_examples=300)
@given(st.text() | st.binary())
def test_arbitrary_input_raises_only_parse_error(data: str | bytes) -> None:
    _check_parse_is_total(data)


_SDPISH_LINE = st.tuples(
    st.sampled_from("vosiuepcbtrzkamxy"),
    st.sampled_from(["=", "=", "=", ":", ""]),
    st.text(alphabet=" 0123456789./:-aINPv4620*\t\r" + "ﬀé", max_size=24)
    | st.sampled_from(
        [
            "0",
            "- 1 1 IN IP4 192.0.2.1",
            "IN IP4 192.0.2.1",
            "IN IP6 ::1",
            "audio 4000 RTP/AVP 0 96",
            "0 0",
            "rtpmap:96 opus/48000/2",
            "rtcp:5 IN IP4 a",
            "AS:64",
        ]
    ),
).map(lambda t: "".join(t))


@settings(max_examples=400)
@given(
    st.lists(_SDPISH_LINE, max_size=12),
    st.sampled_from(["\r\n", "\n"]),
)
def test_sdp_like_garbage_raises_only_parse_error(lines: list[str], sep: str) -> None:
    # Starting most inputs with a valid header drives the generator past the
    # v=/o=/s= checks so that the deeper line parsers get exercised.
    _check_parse_is_total(sep.join(["v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", *lines]))
    _check_parse_is_total(sep.join(lines))
