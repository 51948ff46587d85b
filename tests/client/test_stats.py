"""Receiver statistics: RFC 3550 A.1 (validation), A.3 (loss), A.8 (jitter)."""

from __future__ import annotations

import pytest

from client.media.rtcp import ntp_middle32
from client.media.stats import ReceiverStats

RATE = 8000
FRAME = 160

# Deterministic arrival schedule (seconds) for packets 0..4, nominally 20 ms apart; packet
# 2 is 10 ms late. Hand computation of A.8, D in timestamp units (8 per ms):
#   D(0,1) = 20ms*8 - 160 = 0         J = 0
#   D(1,2) = 30ms*8 - 160 = 80        J = 0 + (80 - 0)/16      = 5
#   D(2,3) = 10ms*8 - 160 = -80       J = 5 + (80 - 5)/16      = 9.6875
#   D(3,4) = 20ms*8 - 160 = 0         J = 9.6875 + (0 - 9.6875)/16 = 9.08203125
ARRIVALS = [0.000, 0.020, 0.050, 0.060, 0.080]
EXPECTED_JITTER = 9.08203125


def feed(stats, seq0, ts0, arrivals=ARRIVALS):
    for i, t in enumerate(arrivals):
        stats.update((seq0 + i) & 0xFFFF, (ts0 + FRAME * i) & 0xFFFFFFFF, t)


def test_jitter_hand_computed():
    s = ReceiverStats(1, RATE, probation=0)
    feed(s, 0, 1000)
    assert s.jitter == pytest.approx(EXPECTED_JITTER, rel=1e-9)
    assert s.report_block(1.0).jitter == 9


def test_jitter_across_timestamp_and_sequence_wrap():
    s = ReceiverStats(1, RATE, probation=0)
    feed(s, 65533, 2**32 - 2 * FRAME)  # seq wraps after 2 packets, ts after 2 packets
    assert s.jitter == pytest.approx(EXPECTED_JITTER, rel=1e-9)
    assert s.cycles == 65536
    assert s.extended_max == 65536 + 1  # 65533, 65534, 65535, 0, 1
    assert s.expected == 5 and s.received == 5 and s.cumulative_lost == 0


def test_fraction_and_cumulative_lost():
    s = ReceiverStats(1, RATE, probation=0)
    for seq in range(10):
        if seq not in (2, 5):
            s.update(seq, seq * FRAME, seq * 0.02)
    assert s.expected == 10 and s.received == 8
    assert s.cumulative_lost == 2
    block = s.report_block(0.2)
    assert block.fraction_lost == (2 << 8) // 10 == 51
    assert block.cumulative_lost == 2
    assert block.highest_seq == 9
    for seq in range(10, 20):
        s.update(seq, seq * FRAME, seq * 0.02)
    block = s.report_block(0.4)
    assert block.fraction_lost == 0  # nothing lost in this interval
    assert block.cumulative_lost == 2


def test_duplicates_make_cumulative_lost_negative():
    s = ReceiverStats(1, RATE, probation=0)
    for seq in (0, 1, 1, 2):
        s.update(seq, seq * FRAME, seq * 0.02)
    assert s.expected == 3 and s.received == 4
    assert s.cumulative_lost == -1
    assert s.take_fraction_lost() == 0


def test_probation():
    s = ReceiverStats(1, RATE)  # MIN_SEQUENTIAL = 2
    assert s.update(100, 0, 0.0) is False
    assert s.update(101, 160, 0.02) is True
    assert s.base_seq == 101
    assert s.update(102, 320, 0.04) is True
    assert s.expected == 2 and s.received == 2


def test_probation_restarts_on_out_of_order():
    s = ReceiverStats(1, RATE)
    assert s.update(100, 0, 0.0) is False
    assert s.update(50, 0, 0.02) is False  # not sequential: probation restarts
    assert s.update(51, 0, 0.04) is True
    assert s.base_seq == 51


def test_large_jump_needs_confirmation():
    s = ReceiverStats(1, RATE, probation=0)
    feed(s, 10, 0)
    assert s.update(5000, 0, 1.0) is False  # stray
    assert s.update(9000, 0, 1.0) is False  # another stray, not 5000's successor
    assert s.resyncs == 0
    assert s.update(9001, 0, 1.02) is True  # 9000's successor: the sender restarted
    assert s.resyncs == 1
    assert s.base_seq == 9001
    assert s.expected == 1 and s.received == 1


def test_report_block_lsr_dlsr():
    s = ReceiverStats(7, RATE, probation=0)
    feed(s, 0, 0)
    ntp = 0x83AA7E80_80000000
    s.on_sender_report(ntp, arrival=10.0)
    block = s.report_block(now=10.5)
    assert block.ssrc == 7
    assert block.lsr == ntp_middle32(ntp) == 0x7E808000
    assert block.dlsr == 32768  # 0.5 s in 1/65536 s
