"""RTP packet parse/serialise (RFC 3550 §5.1) and the wrap-around helpers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.media.rtp import RtpExtension, RtpPacket, looks_like_rtcp
from client.media.seqnum import Unwrapper, seq_add, seq_diff, seq_lt, ts_add, ts_diff

# V=2 P=0 X=0 CC=0 | M=1 PT=0 | seq=0x1234 | ts=0xDEADBEEF | ssrc=0x01020304 | payload
GOLDEN = bytes.fromhex("80 80 1234 deadbeef 01020304") + b"\xff\xfe"

# V=2 P=1 X=1 CC=2, M=0 PT=111, seq 65535, ts 2^32-1, ssrc, 2 CSRCs,
# ext profile 0xBEDE len 1 word, payload 3 bytes, 4 padding octets.
GOLDEN_FULL = (
    bytes.fromhex("b2 6f ffff ffffffff cafebabe")
    + bytes.fromhex("00000001 00000002")
    + bytes.fromhex("bede 0001 10ab0000")
    + b"abc"
    + bytes.fromhex("00000004")
)


def test_golden_minimal():
    p = RtpPacket.parse(GOLDEN)
    assert p.marker is True
    assert p.payload_type == 0
    assert p.sequence == 0x1234
    assert p.timestamp == 0xDEADBEEF
    assert p.ssrc == 0x01020304
    assert p.csrcs == ()
    assert p.extension is None
    assert p.padding == b""
    assert p.payload == b"\xff\xfe"
    assert p.serialize() == GOLDEN
    built = RtpPacket(0, 0x1234, 0xDEADBEEF, 0x01020304, b"\xff\xfe", marker=True)
    assert built.serialize() == GOLDEN


def test_golden_full_header():
    p = RtpPacket.parse(GOLDEN_FULL)
    assert p.payload_type == 111 and not p.marker
    assert p.sequence == 65535 and p.timestamp == 0xFFFFFFFF
    assert p.ssrc == 0xCAFEBABE
    assert p.csrcs == (1, 2)
    assert p.extension == RtpExtension(0xBEDE, bytes.fromhex("10ab0000"))
    assert p.payload == b"abc"
    assert p.padding == bytes.fromhex("00000004")
    assert p.header_length == 12 + 8 + 8
    assert p.serialize() == GOLDEN_FULL
    again = RtpPacket(
        111, 65535, 0xFFFFFFFF, 0xCAFEBABE, b"abc", csrcs=(1, 2),
        extension=RtpExtension(0xBEDE, bytes.fromhex("10ab0000")),
        padding=RtpPacket.make_padding(4),
    )
    assert again.serialize() == GOLDEN_FULL


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80\x00\x00", "too short"),
        (bytes.fromhex("40 00 0000 00000000 00000000"), "unsupported RTP version 1"),
        (bytes.fromhex("00 00 0000 00000000 00000000"), "unsupported RTP version 0"),
        (bytes.fromhex("83 00 0000 00000000 00000000 00000001"), "CSRC list truncated"),
        (bytes.fromhex("90 00 0000 00000000 00000000 bede"), "extension truncated"),
        (bytes.fromhex("90 00 0000 00000000 00000000 bede0002 00000000"), "extension length"),
        (bytes.fromhex("a0 00 0000 00000000 00000000"), "no padding octets"),
        (bytes.fromhex("a0 00 0000 00000000 00000000 0000 0000"), "padding count is zero"),
        (bytes.fromhex("a0 00 0000 00000000 00000000 0000 0009"), "padding count 9 exceeds"),
    ],
)
def test_malformed(data, message):
    with pytest.raises(ValueError, match=message):
        RtpPacket.parse(data)


def test_constructor_validates():
    with pytest.raises(ValueError, match="payload type"):
        RtpPacket(128, 0, 0, 0)
    with pytest.raises(ValueError, match="sequence"):
        RtpPacket(0, 65536, 0, 0)
    with pytest.raises(ValueError, match="padding count octet"):
        RtpPacket(0, 0, 0, 0, padding=b"\x00\x01\x00")
    with pytest.raises(ValueError, match="multiple of 4"):
        RtpExtension(1, b"abc")


def test_rtcp_demux():
    assert looks_like_rtcp(bytes.fromhex("80c8 0006"))
    assert not looks_like_rtcp(GOLDEN)


@settings(max_examples=500)
@given(st.binary(max_size=80))
def test_arbitrary_bytes_only_value_error(data):
    try:
        p = RtpPacket.parse(data)
    except ValueError:
        return
    assert p.serialize() == data  # anything that parses round-trips exactly


@given(
    st.integers(0, 127), st.integers(0, 65535), st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1), st.binary(max_size=40), st.booleans(),
    st.lists(st.integers(0, 2**32 - 1), max_size=15),
)
def test_build_parse_roundtrip(pt, seq, ts, ssrc, payload, marker, csrcs):
    p = RtpPacket(pt, seq, ts, ssrc, payload, marker, tuple(csrcs))
    assert RtpPacket.parse(p.serialize()) == p


def test_seqnum_wrap():
    assert seq_diff(0, 65535) == 1
    assert seq_diff(65535, 0) == -1
    assert seq_lt(65535, 0)
    assert seq_add(65535, 1) == 0
    assert ts_diff(0, 2**32 - 1) == 1
    assert ts_add(2**32 - 160, 160) == 0
    u = Unwrapper(16)
    assert [u.unwrap(s) for s in (65534, 65535, 0, 65533, 1)] == [65534, 65535, 65536, 65533, 65537]
