"""Adaptive jitter buffer for one audio RTP stream (sans-IO: times are passed in).

    put(packet, arrival_time)          when a packet arrives (seconds, any epoch)
    get(playout_time) -> Frame | Lost | None
                                       once per frame period, from the audio clock

`Frame` is a packet to decode. `Lost` asks the decoder to conceal one frame
(`decoder.conceal(lost.next_payload)`: Opus FEC when the next packet is at hand, else PLC;
G.711 repeats the last frame with a fade). `None` means there is nothing to play (not
started, between talk spurts, waiting to build up delay): play silence / comfort noise.

Timing model
------------
Each packet's relative delay is d = arrival - ts/clock_rate. `base` is the minimum d
over the last BASE_WINDOW packets (the delay of the fastest recent packet), and the
*target offset* is

    O* = base + target_delay,  target_delay = clamp(JITTER_FACTOR * J, min_delay, max_delay)

where J is the RFC 3550 A.8 interarrival jitter (in seconds). A frame with timestamp ts
is due at ts/clock_rate + O*. The *actual* offset O = playout_time - ts/clock_rate of
the frame being played is what the listener hears as buffering delay.

O is changed only
- at the start of a talk spurt (first packet, marker bit, a timestamp jump with
  contiguous sequence numbers, or after an idle period): the spurt waits until it is due,
  so it starts at exactly the target delay, growing or shrinking at no audible cost;
- slowly within a spurt: when O drifts more than INSERT_THRESHOLD frames below O*, one
  concealment frame is inserted (`Lost(reason="stretch")`); when it drifts more than
  DROP_THRESHOLD frames above, one frame is dropped; at most once per `adapt_interval`
  frames. The same mechanism absorbs clock drift between sender and our audio clock.

Loss, reordering and duplicates
-------------------------------
Packets are kept by extended (unwrapped) sequence number, so reordering within the
buffer depth is repaired, 16-bit sequence and 32-bit timestamp wrap are invisible, and a
packet that arrives again is dropped (counted in `stats.duplicates`). A packet whose
slot has already been played is dropped as late. A missing frame with later packets
buffered is reported as `Lost(reason="loss")`; an empty buffer mid-spurt as
`Lost(reason="underrun")`. After `max_conceal` consecutive concealed frames the buffer
stops concealing: with an empty buffer it goes idle (returns None); with later packets
it jumps to the next one as a new spurt instead of emitting a long run of losses.

Discontinuities (a new SSRC, a sequence jump outside [-MAX_MISORDER, MAX_DROPOUT], or a
delay jump larger than MAX_DELAY_JUMP, i.e. the sender restarted its timestamps) are
trusted only when the next packet confirms them (as RFC 3550 A.1 does), then the buffer
resynchronises: flushes and restarts as if the confirming packet were the first.

Memory is bounded: at most `max_packets` packets are held (the oldest is evicted).
The buffer assumes every packet carries `frame_samples` of audio (the negotiated ptime).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .rtp import RtpPacket
from .seqnum import SEQ_MASK, Unwrapper, seq_add

DEFAULT_MIN_DELAY = 0.020  # one frame: never play a packet the instant it arrives
DEFAULT_MAX_DELAY = 0.200  # ITU-T G.114: keep mouth-to-ear delay conversational
JITTER_FACTOR = 3.0  # for uniform delay spread X, J ~ X/3, so 3*J covers the spread
BASE_WINDOW = 100  # packets (2 s at 20 ms) over which the minimum delay is taken
INSERT_THRESHOLD = 0.5  # frames below target before one frame is inserted
DROP_THRESHOLD = 1.5  # frames above target before one frame is dropped (>= insert + 1)
DEFAULT_ADAPT_INTERVAL = 25  # frames between two in-spurt adjustments (0.5 s at 20 ms)
DEFAULT_MAX_CONCEAL = 5  # consecutive concealed frames before giving up (100 ms)
DEFAULT_MAX_PACKETS = 100  # buffer capacity in packets, far above max_delay's 10 frames
JITTER_GAIN = 1.0 / 16.0  # RFC 3550 A.8
MAX_DROPOUT = 3000  # RFC 3550 A.1: forward sequence jump still considered the same stream
MAX_MISORDER = 100  # RFC 3550 A.1: backward jump still considered a late packet
MAX_DELAY_JUMP = 2.0  # seconds; a change in relative delay beyond this is a ts restart
RECENT_RELEASED = 128  # remembered released sequence numbers, to tell duplicates from late
EPSILON = 1e-6  # seconds: float slack when comparing a due time with the playout time

IDLE = "idle"
PLAYING = "playing"


@dataclass(frozen=True, slots=True)
class Frame:
    sequence: int
    timestamp: int
    payload: bytes
    payload_type: int
    marker: bool = False


@dataclass(frozen=True, slots=True)
class Lost:
    """Conceal one frame. `reason`: 'loss' (a gap with later packets buffered),
    'underrun' (buffer empty mid-spurt) or 'stretch' (inserted to grow the delay)."""

    sequence: int
    timestamp: int
    reason: str
    next_payload: bytes | None = None


@dataclass(slots=True)
class JitterStats:
    received: int = 0
    played: int = 0
    duplicates: int = 0
    late: int = 0
    lost: int = 0
    underruns: int = 0
    stretched: int = 0
    dropped: int = 0
    overflow: int = 0
    resyncs: int = 0
    strays: int = 0


@dataclass(slots=True)
class _Entry:
    packet: RtpPacket
    ext_seq: int
    ext_ts: int


@dataclass(slots=True)
class _MinWindow:
    """Sliding-window minimum over the last `size` values (monotonic deque, O(1))."""

    size: int
    _q: deque[tuple[int, float]] = field(default_factory=deque)
    _n: int = 0

    def push(self, value: float) -> None:
        q = self._q
        while q and q[-1][1] >= value:
            q.pop()
        q.append((self._n, value))
        self._n += 1
        while q[0][0] <= self._n - 1 - self.size:
            q.popleft()

    @property
    def min(self) -> float | None:
        return self._q[0][1] if self._q else None

    def clear(self) -> None:
        self._q.clear()


class JitterBuffer:
    def __init__(
        self,
        clock_rate: int,
        frame_samples: int,
        *,
        min_delay: float = DEFAULT_MIN_DELAY,
        max_delay: float = DEFAULT_MAX_DELAY,
        jitter_factor: float = JITTER_FACTOR,
        adapt_interval: int = DEFAULT_ADAPT_INTERVAL,
        max_conceal: int = DEFAULT_MAX_CONCEAL,
        max_packets: int = DEFAULT_MAX_PACKETS,
    ) -> None:
        if clock_rate <= 0 or frame_samples <= 0:
            raise ValueError("clock rate and frame size must be positive")
        if not 0 <= min_delay <= max_delay:
            raise ValueError("need 0 <= min_delay <= max_delay")
        self.clock_rate = clock_rate
        self.frame_samples = frame_samples
        self.frame_duration = frame_samples / clock_rate
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.jitter_factor = jitter_factor
        self.adapt_interval = adapt_interval
        self.max_conceal = max_conceal
        self.max_packets = max_packets
        self.stats = JitterStats()
        self._jitter = 0.0  # seconds
        self._base = _MinWindow(BASE_WINDOW)
        self._reset_stream()

    # ------------------------------------------------------------------ state
    def _reset_stream(self) -> None:
        self._ssrc: int | None = None
        self._seq_unwrap = Unwrapper(16)
        self._ts_unwrap = Unwrapper(32)
        self._packets: dict[int, _Entry] = {}
        self._state = IDLE
        self._play_seq = 0  # extended seq of the next frame to play
        self._play_ts = 0  # extended ts of the next frame to play
        self._last_released: int | None = None
        self._released: deque[int] = deque(maxlen=RECENT_RELEASED)
        self._released_set: set[int] = set()
        self._conceal_run = 0
        self._since_adapt = self.adapt_interval  # allow an adjustment straight away
        self._prev_arrival: tuple[float, int] | None = None  # (arrival, ext_ts)
        self._pending: tuple[int, int] | None = None  # (ssrc, seq) awaited to confirm
        self._base.clear()
        self._offset: float | None = None  # actual playout offset O of the last frame

    # ------------------------------------------------------------------ metrics
    @property
    def jitter(self) -> float:
        """RFC 3550 interarrival jitter estimate, seconds."""
        return self._jitter

    @property
    def target_delay(self) -> float:
        return min(self.max_delay, max(self.min_delay, self.jitter_factor * self._jitter))

    @property
    def playout_delay(self) -> float | None:
        """Actual buffering delay of the last frame played, relative to the fastest recent
        packet (O - base); None before anything has played."""
        base = self._base.min
        if self._offset is None or base is None:
            return None
        return self._offset - base

    @property
    def depth(self) -> int:
        return len(self._packets)

    @property
    def state(self) -> str:
        return self._state

    def _target_offset(self) -> float:
        base = self._base.min
        return (base if base is not None else 0.0) + self.target_delay

    # ------------------------------------------------------------------ put
    def _is_discontinuity(self, packet: RtpPacket, arrival: float) -> bool:
        if self._ssrc is None:
            return False
        if packet.ssrc != self._ssrc:
            return True
        last = self._seq_unwrap.last
        if last is not None:
            delta = self._seq_unwrap.peek(packet.sequence) - last
            if delta > MAX_DROPOUT or delta < -MAX_MISORDER:
                return True
        base = self._base.min
        if base is not None:
            d = arrival - self._ts_unwrap.peek(packet.timestamp) / self.clock_rate
            if abs(d - base) > MAX_DELAY_JUMP:
                return True
        return False

    def put(self, packet: RtpPacket, arrival_time: float) -> bool:
        """Offer one packet; returns True if it was buffered for playout."""
        if self._is_discontinuity(packet, arrival_time):
            if self._pending == (packet.ssrc, packet.sequence):
                # Confirmed by a second sequential packet: the sender restarted.
                self._reset_stream()
                self.stats.resyncs += 1
            else:
                self._pending = (packet.ssrc, seq_add(packet.sequence, 1))
                self.stats.strays += 1
                return False
        self._pending = None
        if self._ssrc is None:
            self._ssrc = packet.ssrc
        self.stats.received += 1
        ext_seq = self._seq_unwrap.unwrap(packet.sequence)
        ext_ts = self._ts_unwrap.unwrap(packet.timestamp)

        if ext_seq in self._packets or ext_seq in self._released_set:
            self.stats.duplicates += 1
            return False
        self._observe(ext_ts, arrival_time)
        if self._is_late(ext_seq, ext_ts):
            self.stats.late += 1
            return False
        self._packets[ext_seq] = _Entry(packet, ext_seq, ext_ts)
        if len(self._packets) > self.max_packets:
            del self._packets[min(self._packets)]
            self.stats.overflow += 1
        return True

    def _observe(self, ext_ts: int, arrival: float) -> None:
        """Delay statistics: every non-duplicate packet counts, late ones included, since
        late packets are exactly the evidence that more delay is needed."""
        self._base.push(arrival - ext_ts / self.clock_rate)
        if self._prev_arrival is not None:
            prev_arrival, prev_ts = self._prev_arrival
            d = (arrival - prev_arrival) - (ext_ts - prev_ts) / self.clock_rate
            self._jitter += (abs(d) - self._jitter) * JITTER_GAIN
        self._prev_arrival = (arrival, ext_ts)

    def _is_late(self, ext_seq: int, ext_ts: int) -> bool:
        # Late = already played (by sequence number) or its time slot already consumed
        # (by timestamp). A sequence number that was only concealed by an underrun is
        # not late if its timestamp is still ahead: the sender was silent, not lost.
        if self._last_released is None:
            return False
        return ext_seq <= self._last_released or ext_ts < self._play_ts

    # ------------------------------------------------------------------ get
    def get(self, playout_time: float) -> Frame | Lost | None:
        """What to play for the frame period starting at `playout_time`."""
        self._since_adapt += 1
        if not self._packets:
            return self._underrun()
        entry = self._packets[min(self._packets)]
        if self._state == IDLE:
            return self._start_spurt(entry, playout_time)
        if entry.ext_ts > self._play_ts:
            return self._gap(entry, playout_time)
        if entry.ext_ts < self._play_ts:
            self._play_ts = entry.ext_ts  # sender stepped its clock back; follow it
        if entry.packet.marker:
            return self._start_spurt(entry, playout_time)

        err = (playout_time - entry.ext_ts / self.clock_rate) - self._target_offset()
        if self._since_adapt >= self.adapt_interval:
            if err < -INSERT_THRESHOLD * self.frame_duration:
                self._since_adapt = 0
                self.stats.stretched += 1
                return Lost(entry.packet.sequence, entry.packet.timestamp, "stretch")
            nxt = self._packets.get(entry.ext_seq + 1)
            if (
                err > DROP_THRESHOLD * self.frame_duration
                and nxt is not None
                and nxt.ext_ts == entry.ext_ts + self.frame_samples
            ):
                self._since_adapt = 0
                self.stats.dropped += 1
                self._discard(entry)
                entry = nxt
        return self._release(entry, playout_time)

    def _gap(self, entry: _Entry, now: float) -> Frame | Lost | None:
        """The next buffered packet lies beyond the current slot: loss, or silence?"""
        last = self._last_released
        missing = entry.ext_seq - (last if last is not None else entry.ext_seq) - 1
        if missing <= self._conceal_run:
            # Every sequence number up to this packet is accounted for, so the
            # timestamp gap is the sender's silence (VAD/DTX): a new talk spurt.
            return self._start_spurt(entry, now)
        if self._conceal_run >= self.max_conceal:
            # A long run of losses: skip ahead and restart at the next packet.
            return self._start_spurt(entry, now)
        fec = (
            entry.packet.payload
            if entry.ext_ts == self._play_ts + self.frame_samples
            else None
        )
        self.stats.lost += 1
        return self._conceal("loss", fec)

    def _underrun(self) -> Lost | None:
        if self._state == IDLE:
            return None
        if self._conceal_run >= self.max_conceal:
            self._state = IDLE
            return None
        self.stats.underruns += 1
        return self._conceal("underrun", None)

    def _start_spurt(self, entry: _Entry, now: float) -> Frame | None:
        due = entry.ext_ts / self.clock_rate + self._target_offset()
        if now + EPSILON < due:
            return None  # wait: this is where the delay grows, in silence
        self._state = PLAYING
        self._since_adapt = 0
        return self._release(entry, now)

    def _conceal(self, reason: str, next_payload: bytes | None) -> Lost:
        lost = Lost(
            self._play_seq & SEQ_MASK,
            self._play_ts & 0xFFFFFFFF,
            reason,
            next_payload,
        )
        self._play_seq += 1
        self._play_ts += self.frame_samples
        self._conceal_run += 1
        return lost

    def _discard(self, entry: _Entry) -> None:
        del self._packets[entry.ext_seq]
        self._remember(entry.ext_seq)

    def _remember(self, ext_seq: int) -> None:
        if len(self._released) == self._released.maxlen:
            self._released_set.discard(self._released[0])
        self._released.append(ext_seq)
        self._released_set.add(ext_seq)
        self._last_released = ext_seq

    def _release(self, entry: _Entry, now: float) -> Frame:
        self._discard(entry)
        # Anything older than the frame being played can no longer be played.
        for s in [s for s in self._packets if s < entry.ext_seq]:
            del self._packets[s]
            self.stats.late += 1
        self._play_seq = entry.ext_seq + 1
        self._play_ts = entry.ext_ts + self.frame_samples
        self._conceal_run = 0
        self._offset = now - entry.ext_ts / self.clock_rate
        self.stats.played += 1
        p = entry.packet
        return Frame(p.sequence, p.timestamp, p.payload, p.payload_type, p.marker)
