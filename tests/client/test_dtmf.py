"""RFC 4733 telephone-event."""

from __future__ import annotations

import pytest

from client.media.dtmf import (
    DtmfReceiver,
    TelephoneEvent,
    digit_to_event,
    dtmf_packets,
    event_to_digit,
)
from client.media.rtp import RtpPacket


def test_payload_golden():
    ev = TelephoneEvent(event=5, end=True, volume=10, duration=800)
    assert ev.serialize() == bytes.fromhex("05 8a 0320")
    assert TelephoneEvent.parse(bytes.fromhex("05 8a 0320")) == ev
    assert TelephoneEvent.parse(bytes.fromhex("0b 4a 00a0")) == TelephoneEvent(11, False, 10, 160)
    assert TelephoneEvent(11).digit == "#"


def test_digit_mapping():
    assert [digit_to_event(d) for d in "09*#AD"] == [0, 9, 10, 11, 12, 15]
    assert digit_to_event("a") == 12
    assert event_to_digit(16) is None
    with pytest.raises(ValueError, match="not a DTMF digit"):
        digit_to_event("x")


def test_parse_errors():
    with pytest.raises(ValueError, match="too short"):
        TelephoneEvent.parse(b"\x01\x02")
    with pytest.raises(ValueError, match="volume"):
        TelephoneEvent(1, volume=64)


def test_packet_train_for_one_digit():
    pkts = dtmf_packets("7", ssrc=9, sequence=65534, timestamp=2**32 - 80, duration_ms=100)
    # 100 ms at 8 kHz, updates every 20 ms: durations 160..800, then 3 end packets.
    assert len(pkts) == 5 + 3
    assert [p.sequence for p in pkts] == [65534, 65535, 0, 1, 2, 3, 4, 5]
    assert all(p.timestamp == 2**32 - 80 for p in pkts)
    assert all(p.payload_type == 101 and p.ssrc == 9 for p in pkts)
    assert [p.marker for p in pkts] == [True] + [False] * 7
    events = [TelephoneEvent.parse(p.payload) for p in pkts]
    assert [e.duration for e in events] == [160, 320, 480, 640, 800, 800, 800, 800]
    assert [e.end for e in events] == [False] * 5 + [True] * 3
    assert {e.event for e in events} == {7}
    for p in pkts:
        assert RtpPacket.parse(p.serialize()) == p


def test_uneven_duration_ends_with_exact_total():
    pkts = dtmf_packets("1", ssrc=1, sequence=0, timestamp=0, duration_ms=50)
    durations = [TelephoneEvent.parse(p.payload).duration for p in pkts]
    assert durations == [160, 320, 400, 400, 400, 400]
    with pytest.raises(ValueError, match="16-bit"):
        dtmf_packets("1", ssrc=1, sequence=0, timestamp=0, duration_ms=9000)


def test_receiver_reports_each_digit_once():
    rx = DtmfReceiver()
    a = dtmf_packets("1", ssrc=1, sequence=0, timestamp=0)
    b = dtmf_packets("1", ssrc=1, sequence=len(a), timestamp=4000)
    got = [rx.feed(p) for p in a + b]
    assert [d for d in got if d] == ["1", "1"]
