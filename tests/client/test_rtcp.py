"""RTCP SR/RR/SDES/BYE, compound packets, and RTT (RFC 3550 §6.4.1)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.media.rtcp import (
    Bye,
    ReceiverReport,
    ReportBlock,
    RtcpUnknown,
    SenderReport,
    SourceDescription,
    ntp_from_unix,
    ntp_middle32,
    parse_compound,
    round_trip_time,
    seconds_to_short,
    serialize_compound,
    unix_from_ntp,
)

BLOCK = ReportBlock(
    ssrc=0x11223344, fraction_lost=64, cumulative_lost=-3, highest_seq=0x0001_0005,
    jitter=77, lsr=0xB7052000, dlsr=0x00054000,
)


def test_sender_report_fields():
    sr = SenderReport(
        ssrc=0xAABBCCDD, ntp_timestamp=0x83AA7E80_80000000, rtp_timestamp=123456,
        packet_count=1000, octet_count=160000, reports=(BLOCK,),
    )
    data = sr.serialize()
    assert len(data) == 4 + 4 + 20 + 24
    # header: V=2, RC=1, PT=200, length = 13 words - 1 = 12
    assert data[:4] == bytes.fromhex("81c8000c")
    assert data[8:16] == bytes.fromhex("83aa7e80 80000000")
    # report block word 2: fraction 64, cumulative lost -3 as 24-bit two's complement
    assert data[32:36] == bytes.fromhex("40fffffd")
    (pkt,) = parse_compound(data)
    assert isinstance(pkt, SenderReport)
    assert pkt.ssrc == 0xAABBCCDD
    assert pkt.ntp_timestamp == 0x83AA7E80_80000000
    assert pkt.rtp_timestamp == 123456
    assert pkt.packet_count == 1000
    assert pkt.octet_count == 160000
    (b,) = pkt.reports
    assert b.ssrc == 0x11223344
    assert b.fraction_lost == 64 and b.fraction == 0.25
    assert b.cumulative_lost == -3
    assert b.highest_seq == 0x10005
    assert b.jitter == 77
    assert b.lsr == 0xB7052000
    assert b.dlsr == 0x00054000
    assert pkt == sr


def test_compound_rr_sdes_bye():
    rr = ReceiverReport(0x01, (BLOCK, ReportBlock(0x02)))
    sdes = SourceDescription.with_cname(0x01, "alice@a.lab")
    bye = Bye((0x01,), "hangup")
    app = RtcpUnknown(204, 1, b"\x00\x00\x00\x01name")
    data = serialize_compound([rr, sdes, bye, app])
    assert len(data) % 4 == 0
    out = parse_compound(data)
    assert out == [rr, sdes, bye, app]
    assert out[1].chunks[0].cname == "alice@a.lab"
    assert out[2].reason == "hangup"
    assert serialize_compound(out) == data


def test_sdes_padding_exact_boundary():
    # 4 (ssrc) + 2 + 2 ("ab") = 8 -> one null and 3 pad octets -> 12 bytes of chunk
    sdes = SourceDescription.with_cname(7, "ab")
    assert len(sdes.serialize()) == 4 + 12
    assert parse_compound(sdes.serialize(), strict=False) == [sdes]


def test_rtt_rfc_worked_example():
    # RFC 3550 §6.4.1 figure: A = 0xb710:8000 (46864.500 s), LSR = 0xb705:2000
    # (46853.125 s), DLSR = 0x0005:4000 (5.250 s) -> delay 0x0006:2000 = 6.125 s.
    assert round_trip_time(0xB7108000, 0xB7052000, 0x00054000) == 6.125
    assert round_trip_time(0xB7108000, 0, 0x00054000) is None
    assert round_trip_time(0x00010000, 0x00020000, 0) == 0.0  # negative clamps to 0


def test_rtt_from_a_report_round_trip():
    # We send an SR at t=100.0; the peer holds it 0.25 s and its RR reaches us at 100.4.
    sent = ntp_from_unix(1_700_000_100.0)
    lsr = ntp_middle32(sent)
    rr = ReceiverReport(2, (ReportBlock(1, lsr=lsr, dlsr=seconds_to_short(0.25)),))
    (got,) = parse_compound(rr.serialize())
    arrival = ntp_middle32(ntp_from_unix(1_700_000_100.4))
    rtt = round_trip_time(arrival, got.reports[0].lsr, got.reports[0].dlsr)
    assert rtt == pytest.approx(0.15, abs=1 / 65536 * 2)


def test_ntp_conversion():
    assert ntp_from_unix(0.0) == 2_208_988_800 << 32
    assert ntp_from_unix(0.5) & 0xFFFFFFFF == 0x80000000
    assert unix_from_ntp(ntp_from_unix(1234.25)) == 1234.25


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80\xc8", "too short"),
        (bytes.fromhex("40c80000"), "unsupported RTCP version 1"),
        (bytes.fromhex("80c90005 00000001"), "runs past end"),
        (bytes.fromhex("81c90001 00000001"), "RR truncated"),
        (bytes.fromhex("80c80001 00000001"), "SR truncated"),
        (bytes.fromhex("80ca0001 00000001"), "must start with SR or RR"),
        (bytes.fromhex("a0c90001 00000000"), "padding count 0"),
        (bytes.fromhex("a0c90001 00000009"), "padding count 9"),
        (bytes.fromhex("a0c90000") + bytes.fromhex("80c90000"), "only allowed on the last"),
        (bytes.fromhex("80c90001 00000001 81cb0000"), "BYE truncated"),
        (bytes.fromhex("80c90001 00000001 80cb0001 05616263"), "reason length 5"),
        (bytes.fromhex("80c90001 00000001 81ca0002 00000001 01096162"), "SDES item length 9"),
        (bytes.fromhex("80c90001 00000001 81ca0001 00000001"), "not terminated"),
        (bytes.fromhex("80c90001 00000001 80c9"), "header truncated"),
    ],
)
def test_malformed(data, message):
    with pytest.raises(ValueError, match=message):
        parse_compound(data)


def test_padding_on_last_packet_is_stripped():
    body = struct.pack("!I", 9)
    padded = bytes.fromhex("a0c90002") + body + bytes.fromhex("00000004")
    assert parse_compound(padded) == [ReceiverReport(9)]


def test_report_block_range_checks():
    with pytest.raises(ValueError, match="fraction lost"):
        ReportBlock(1, fraction_lost=256)
    with pytest.raises(ValueError, match="24 bits"):
        ReportBlock(1, cumulative_lost=0x800000)


@settings(max_examples=500)
@given(st.binary(max_size=120))
def test_arbitrary_bytes_only_value_error(data):
    for strict in (True, False):
        try:
            parse_compound(data, strict=strict)
        except ValueError:
            pass


@given(st.binary(max_size=100).map(lambda b: bytes.fromhex("80c90001 00000001") + b))
def test_arbitrary_tail_after_valid_rr(data):
    try:
        parse_compound(data)
    except ValueError:
        pass
