"""Receiver statistics for one RTP source, per RFC 3550 Appendix A.

A.1  sequence number validation: a new source is on probation until MIN_SEQUENTIAL
     packets arrive in sequence; large jumps are accepted only when confirmed by the
     next packet (the peer restarted); wrap-around counted in `cycles`.
A.3  expected / lost / fraction lost over the interval since the last report.
A.8  interarrival jitter, with the arrival time passed in (seconds, any epoch) and
     converted to timestamp units, so the object never reads a clock.

`report_block(now)` builds the §6.4.1 report block, including LSR/DLSR from the last
SR this source sent us (`on_sender_report`).
"""

from __future__ import annotations

from .rtcp import CUMULATIVE_LOST_MAX, CUMULATIVE_LOST_MIN, ReportBlock, ntp_middle32
from .rtcp import seconds_to_short as _short
from .seqnum import SEQ_MOD, ts_diff

MAX_DROPOUT = 3000  # forward jump still treated as loss rather than a restart (A.1)
MAX_MISORDER = 100  # backward jump still treated as a late packet (A.1)
MIN_SEQUENTIAL = 2  # packets in sequence needed before a source is valid (A.1)
JITTER_GAIN = 1.0 / 16.0  # the 1/16 of §6.4.1: noise reduction with fast convergence


class ReceiverStats:
    """Statistics for one SSRC. Call `update(seq, ts, arrival)` for every packet."""

    def __init__(self, ssrc: int, clock_rate: int, *, probation: int = MIN_SEQUENTIAL) -> None:
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self.max_seq = 0
        self.cycles = 0
        self.base_seq = 0
        self.bad_seq = SEQ_MOD + 1  # "impossible" value so the first jump is never confirmed
        self.probation = probation
        self.received = 0
        self.expected_prior = 0
        self.received_prior = 0
        self.jitter = 0.0  # timestamp units, float so hand-computed values compare exactly
        self.duplicates_or_reordered = 0
        self.resyncs = 0
        self._transit: float | None = None
        self._last_ts: int | None = None
        self._last_arrival: float | None = None
        self._initialised = False
        self._lsr = 0
        self._sr_arrival: float | None = None

    # -- A.1 -------------------------------------------------------------------------
    def _init_seq(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self.bad_seq = SEQ_MOD + 1
        self.cycles = 0
        self.received = 0
        self.received_prior = 0
        self.expected_prior = 0
        # A restart also restarts the transit baseline: the old one belongs to the
        # sender's previous timeline.
        self._transit = None

    def update_seq(self, seq: int) -> bool:
        """A.1 update_seq: True if the packet counts as valid for this source."""
        if not self._initialised:
            # A.1: init_seq(s, seq); s->max_seq = seq - 1; s->probation = MIN_SEQUENTIAL
            self._initialised = True
            self._init_seq(seq)
            if not self.probation:
                # No probation asked for: the first packet is valid as it stands. (A.1's
                # max_seq = seq - 1 would count a spurious cycle for a first seq of 0.)
                self.received = 1
                return True
            self.max_seq = (seq - 1) & 0xFFFF
        udelta = (seq - self.max_seq) & 0xFFFF
        if self.probation:
            if seq == (self.max_seq + 1) & 0xFFFF:
                self.probation -= 1
                self.max_seq = seq
                if self.probation == 0:
                    self._init_seq(seq)
                    self.received += 1
                    return True
            else:
                self.probation = MIN_SEQUENTIAL - 1
                self.max_seq = seq
            return False
        if udelta < MAX_DROPOUT:
            if seq < self.max_seq:
                self.cycles += SEQ_MOD  # wrapped: another 64K cycle
            self.max_seq = seq
        elif udelta <= SEQ_MOD - MAX_MISORDER:
            if seq == self.bad_seq:
                # Two sequential packets after a big jump: the sender restarted.
                self._init_seq(seq)
                self.resyncs += 1
            else:
                self.bad_seq = (seq + 1) & 0xFFFF
                return False
        else:
            self.duplicates_or_reordered += 1
        self.received += 1
        return True

    # -- A.8 -------------------------------------------------------------------------
    def update_jitter(self, timestamp: int, arrival: float) -> None:
        """J(i) = J(i-1) + (|D(i-1,i)| - J(i-1))/16, arrival in seconds.

        D is computed from the arrival-time difference and the *signed* 32-bit timestamp
        difference, so a timestamp wrap between two packets changes nothing.
        """
        if self._last_ts is None or self._last_arrival is None or self._transit is None:
            self._transit = 0.0
        else:
            d = (arrival - self._last_arrival) * self.clock_rate - ts_diff(
                timestamp, self._last_ts
            )
            self.jitter += (abs(d) - self.jitter) * JITTER_GAIN
        self._last_ts = timestamp
        self._last_arrival = arrival

    def update(self, seq: int, timestamp: int, arrival: float) -> bool:
        """Feed one packet. Returns whether A.1 accepted it (probation/stray jumps: False)."""
        ok = self.update_seq(seq)
        if ok:
            self.update_jitter(timestamp, arrival)
        return ok

    # -- A.3 -------------------------------------------------------------------------
    @property
    def extended_max(self) -> int:
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        if self.probation or not self._initialised:
            return 0
        return self.extended_max - self.base_seq + 1

    @property
    def cumulative_lost(self) -> int:
        """expected - received, clamped to the signed 24 bits of the report field."""
        lost = self.expected - self.received
        return max(CUMULATIVE_LOST_MIN, min(CUMULATIVE_LOST_MAX, lost))

    def take_fraction_lost(self) -> int:
        """A.3 fraction of the interval since the previous call, as 8-bit fixed point.

        Advances the interval, so call once per report sent.
        """
        expected = self.expected
        expected_interval = expected - self.expected_prior
        self.expected_prior = expected
        received_interval = self.received - self.received_prior
        self.received_prior = self.received
        lost_interval = expected_interval - received_interval
        if expected_interval == 0 or lost_interval <= 0:
            return 0
        return (lost_interval << 8) // expected_interval

    # -- LSR / DLSR ----------------------------------------------------------------------
    def on_sender_report(self, ntp_timestamp: int, arrival: float) -> None:
        """Remember the last SR from this source: its middle 32 NTP bits and when it came."""
        self._lsr = ntp_middle32(ntp_timestamp)
        self._sr_arrival = arrival

    def report_block(self, now: float) -> ReportBlock:
        """Build the report block for this source; advances the fraction-lost interval."""
        dlsr = 0
        if self._sr_arrival is not None:
            dlsr = _short(max(0.0, now - self._sr_arrival))
        return ReportBlock(
            ssrc=self.ssrc,
            fraction_lost=self.take_fraction_lost(),
            cumulative_lost=self.cumulative_lost,
            highest_seq=self.extended_max & 0xFFFFFFFF,
            jitter=int(self.jitter) & 0xFFFFFFFF,
            lsr=self._lsr,
            dlsr=dlsr,
        )
