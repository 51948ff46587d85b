"""Adaptive jitter buffer under deterministic arrival schedules.

Time is in seconds; the audio clock ticks every 20 ms (tick k at k*0.02) and packets
due by a tick are put() before that tick's get(). Outputs are written compactly:
("F", seq) a frame, ("L", seq, reason, fec?) a concealment marker, None nothing to play.
"""

from __future__ import annotations

from client.media.jitterbuffer import Frame, JitterBuffer, Lost
from client.media.rtp import RtpPacket

RATE = 8000
FRAME = 160
TICK = 0.02


def pkt(i, *, seq0=0, ts0=0, ssrc=1, marker=False, ts_extra=0):
    return RtpPacket(
        0, (seq0 + i) & 0xFFFF, (ts0 + FRAME * i + ts_extra) & 0xFFFFFFFF, ssrc,
        bytes([i & 0xFF]), marker,
    )


def show(r):
    if r is None:
        return None
    if isinstance(r, Frame):
        return ("F", r.sequence)
    assert isinstance(r, Lost)
    return ("L", r.sequence, r.reason, r.next_payload is not None)


def run_ticks(jb, arrivals, ticks, *, seq0=0, ts0=0):
    """arrivals: {tick: [packet index, ...]} put in the listed order just before get."""
    out = []
    for k in range(ticks):
        t = k * TICK
        for i in arrivals.get(k, []):
            jb.put(pkt(i, seq0=seq0, ts0=ts0), t)
        out.append(show(jb.get(t)))
    return out


def simulate(jb, timed_packets, ticks, tick0=0):
    """timed_packets: [(arrival_time, RtpPacket)]; returns outputs of each tick."""
    queue = sorted(timed_packets, key=lambda x: x[0])
    out, j = [], 0
    for k in range(tick0, tick0 + ticks):
        t = k * TICK
        while j < len(queue) and queue[j][0] <= t + 1e-9:
            jb.put(queue[j][1], queue[j][0])
            j += 1
        out.append(show(jb.get(t)))
    return out


def F(*seqs):
    return [("F", s) for s in seqs]


def test_in_order_no_jitter():
    jb = JitterBuffer(RATE, FRAME)
    out = run_ticks(jb, {k: [k] for k in range(6)}, 7)
    # First packet waits one frame (min delay 20 ms), then one frame per tick.
    assert out == [None, *F(0, 1, 2, 3, 4), ("L", 5, "underrun", False)]
    assert jb.target_delay == 0.02
    assert jb.playout_delay == 0.02


def test_reordering_is_repaired():
    jb = JitterBuffer(RATE, FRAME)
    arrivals = {0: [0], 1: [2, 1], 2: [], 3: [4, 3], 4: [5], 5: [7, 6], 6: [8]}
    out = run_ticks(jb, arrivals, 9)
    assert out == [None, *F(0, 1, 2, 3, 4, 5, 6, 7)]
    assert jb.stats.late == 0 and jb.stats.lost == 0


def test_loss_gives_marker_with_fec_payload():
    jb = JitterBuffer(RATE, FRAME)
    arrivals = {k: [k] for k in range(9) if k not in (3, 6)}
    arrivals[7] = [7]  # 6 and 7 both lost? no: only 6 lost, 7 arrives
    out = run_ticks(jb, arrivals, 9)
    assert out == [
        None, *F(0, 1, 2),
        ("L", 3, "loss", True),  # packet 4 is buffered: its FEC can rebuild 3
        *F(4, 5),
        ("L", 6, "loss", True),
        *F(7),
    ]
    assert jb.stats.lost == 2


def test_two_consecutive_losses_fec_only_for_second():
    jb = JitterBuffer(RATE, FRAME)
    arrivals = {0: [0], 1: [1], 2: [4], 4: [], 5: [5]}
    out = run_ticks(jb, arrivals, 6)
    assert out == [None, *F(0, 1), ("L", 2, "loss", False), ("L", 3, "loss", True), *F(4)]


def test_duplicates_dropped():
    jb = JitterBuffer(RATE, FRAME)
    arrivals = {0: [0], 1: [1, 1], 2: [2, 0], 3: [3], 4: [3, 4]}
    out = run_ticks(jb, arrivals, 5)
    assert out == [None, *F(0, 1, 2, 3)]
    assert jb.stats.duplicates == 3
    assert jb.stats.late == 0


def test_late_packet_is_concealed_then_dropped():
    jb = JitterBuffer(RATE, FRAME)
    arrivals = {0: [0], 1: [1], 2: [2], 3: [], 4: [3, 4], 5: [5]}
    out = run_ticks(jb, arrivals, 6)
    # Packet 3 was due at tick 4 (arrived in time!). Check what really happened:
    assert out == [None, *F(0, 1, 2, 3, 4)]
    jb2 = JitterBuffer(RATE, FRAME)
    arrivals = {0: [0], 1: [1], 2: [2], 3: [], 4: [], 5: [3, 4, 5], 6: [6]}
    out = run_ticks(jb2, arrivals, 7)
    assert out == [None, *F(0, 1, 2), ("L", 3, "underrun", False), *F(4, 5)]
    assert jb2.stats.late == 1 and jb2.stats.underruns == 1


def test_sequence_and_timestamp_wrap():
    jb = JitterBuffer(RATE, FRAME)
    seq0, ts0 = 65533, 2**32 - 2 * FRAME
    arrivals = {0: [0], 1: [1], 2: [3, 2], 3: [], 4: [5], 5: [6], 6: [7]}
    out = run_ticks(jb, arrivals, 8, seq0=seq0, ts0=ts0)
    assert out == [
        None, *F(65533, 65534, 65535, 0),
        ("L", 1, "loss", True),  # seq 1 (index 4) lost right after the wrap
        *F(2, 3),
    ]


def test_long_gap_resynchronises_instead_of_endless_loss():
    jb = JitterBuffer(RATE, FRAME, max_conceal=3)
    arrivals = {k: [k] for k in range(4)}
    arrivals.update({k: [k + 20] for k in range(4, 10)})  # packets 4..23 never arrive
    out = run_ticks(jb, arrivals, 10)
    assert out == [
        None, *F(0, 1, 2),
        ("L", 3, "loss", False), ("L", 4, "loss", False), ("L", 5, "loss", False),
        # conceal limit reached: jump to the next buffered packet as a new spurt
        *F(24, 25, 26),
    ]
    assert out[-3:] == F(24, 25, 26)


def test_silence_gap_goes_idle_and_restarts():
    jb = JitterBuffer(RATE, FRAME, max_conceal=2)
    timed = [(i * TICK, pkt(i)) for i in range(3)]
    # Sender silent for 10 frames: sequence continues, timestamp jumps, marker set.
    timed += [((i + 10) * TICK, pkt(i, ts_extra=10 * FRAME, marker=i == 3)) for i in range(3, 6)]
    out = simulate(jb, timed, 17)
    assert out == [
        None, *F(0, 1, 2),
        ("L", 3, "underrun", False), ("L", 4, "underrun", False),
        None, None, None, None, None, None, None,
        None,  # packet 3 arrived at tick 13, due 20 ms later
        *F(3, 4, 5),
    ]
    assert jb.stats.late == 0


def test_marker_with_timestamp_gap_waits_for_target():
    jb = JitterBuffer(RATE, FRAME)
    # Spurt 2 follows a 2-frame silence; nothing lost; buffer never runs dry because
    # spurt 2's packets arrive just in time.
    timed = [(i * TICK, pkt(i)) for i in range(3)]
    timed += [((i + 2) * TICK, pkt(i, ts_extra=2 * FRAME, marker=i == 3)) for i in range(3, 6)]
    out = simulate(jb, timed, 9)
    assert out == [None, *F(0, 1, 2), ("L", 3, "underrun", False), None, *F(3, 4, 5)]


def test_ssrc_change_needs_confirmation_then_resyncs():
    jb = JitterBuffer(RATE, FRAME)
    run_ticks(jb, {k: [k] for k in range(5)}, 5)
    assert jb.put(pkt(0, ssrc=2, seq0=777, ts0=123), 0.1) is False  # stray
    assert jb.stats.strays == 1
    assert jb.put(pkt(1, ssrc=2, seq0=777, ts0=123), 0.12) is True
    assert jb.stats.resyncs == 1
    assert show(jb.get(0.12)) is None  # new stream starts after its min delay
    assert show(jb.get(0.14)) == ("F", 778)


def test_timestamp_restart_detected_by_delay_jump():
    jb = JitterBuffer(RATE, FRAME)
    run_ticks(jb, {k: [k] for k in range(5)}, 5)
    # Same SSRC and next sequence numbers, but timestamps restart near 2^31 away.
    assert jb.put(pkt(5, ts0=2**31), 0.1) is False
    assert jb.put(pkt(6, ts0=2**31), 0.12) is True
    assert jb.stats.resyncs == 1


def test_memory_bounded():
    jb = JitterBuffer(RATE, FRAME, max_packets=50)
    for i in range(1000):
        jb.put(pkt(i), i * TICK)
    assert jb.depth == 50
    assert jb.stats.overflow == 950


def jittery_spurts(n_spurts, delays, start_index=0, t_offset=0.0, spurt_len=50, gap=10):
    """Talk spurts of `spurt_len` packets separated by `gap` silent frames; packet i of
    the whole stream is sent at its nominal time and delayed by delays[i % len(delays)]."""
    timed = []
    i = start_index
    for s in range(n_spurts):
        for j in range(spurt_len):
            send = (i + s * gap) * TICK + t_offset
            p = pkt(i, ts_extra=s * gap * FRAME, marker=j == 0)
            timed.append((send + delays[i % len(delays)], p))
            i += 1
    return timed


def test_delay_grows_under_jitter_and_shrinks_when_calm():
    jb = JitterBuffer(RATE, FRAME)
    calm = jittery_spurts(2, [0.0])
    simulate(jb, calm, 120)
    calm_delay = jb.playout_delay
    assert calm_delay is not None and calm_delay <= 0.04
    assert jb.target_delay == 0.02

    # Delays cycling over 0..80 ms: J settles near 40 ms, the target at the 200 ms cap is
    # not reached but the buffer must hold more than the 80 ms spread.
    spread = [0.0, 0.06, 0.02, 0.08, 0.04, 0.0, 0.07, 0.01, 0.05, 0.03]
    noisy = jittery_spurts(4, spread, start_index=100, t_offset=0.0)
    t_start = 120  # ticks already simulated
    noisy = [(t + 20 * TICK, p) for t, p in noisy]  # spurt gap continues the timeline
    out = simulate(jb, noisy, 260, tick0=t_start)
    assert jb.target_delay > 0.08
    assert jb.playout_delay is not None and jb.playout_delay >= 0.08
    # Once adapted (last spurt), nothing is late and nothing is concealed mid-spurt.
    late_before = jb.stats.late
    last = jittery_spurts(1, spread, start_index=300)
    last = [(t + 40 * TICK, p) for t, p in last]
    out = simulate(jb, last, 80, tick0=380)
    assert jb.stats.late == late_before
    assert [o for o in out if o and o[0] == "L" and o[2] == "loss"] == []
    grown = jb.playout_delay

    calm_again = jittery_spurts(3, [0.0], start_index=350)
    calm_again = [(t + 50 * TICK, p) for t, p in calm_again]
    simulate(jb, calm_again, 200, tick0=460)
    assert jb.target_delay < 0.03
    assert jb.playout_delay is not None and jb.playout_delay <= 0.04 < grown


def test_delay_grows_within_a_spurt_by_stretching():
    jb = JitterBuffer(RATE, FRAME, adapt_interval=10)
    spread = [0.0] * 100 + [0.0, 0.06, 0.02, 0.08, 0.04] * 60
    timed = [(i * TICK + spread[i], pkt(i)) for i in range(400)]
    out = simulate(jb, timed, 420)
    assert jb.stats.stretched >= 3
    assert ("L", 100, "stretch", False) not in out[:100]
    assert jb.playout_delay is not None and jb.playout_delay > 0.08
    # After adaptation the last 100 frames all play.
    assert all(o is not None and o[0] == "F" for o in out[300:400])


def test_clock_drift_sender_fast_drops_frames():
    jb = JitterBuffer(RATE, FRAME)
    period = TICK * (1 - 0.0025)  # sender clock 0.25 % fast
    timed = [(i * period, pkt(i)) for i in range(3000)]
    out = simulate(jb, timed, 3000)
    assert jb.stats.dropped >= 10
    assert jb.depth <= 4
    assert jb.stats.lost == 0 and jb.stats.underruns == 0 and jb.stats.late == 0
    assert sum(1 for o in out if o and o[0] == "F") == jb.stats.played


def test_clock_drift_sender_slow_inserts_frames():
    jb = JitterBuffer(RATE, FRAME)
    period = TICK * (1 + 0.0025)  # sender clock 0.25 % slow
    timed = [(i * period, pkt(i)) for i in range(3000)]
    out = simulate(jb, timed, 3000)
    assert jb.stats.stretched >= 10
    assert jb.stats.late == 0 and jb.stats.lost == 0
    assert all(o != ("L", None) for o in out)
