"""The N-1 conference mixer: pure arithmetic, the single frame clock, codecs per leg.

The arithmetic and clock tests use fake sessions (no sockets); the codec test runs real
RtpSessions over loopback UDP with a task.Clock driving the frames, as test_session does.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import deferLater

from client.media import opus
from client.media.devices import AudioSink, AudioSource, MemorySink, SilenceSource, ToneSource
from client.media.mixer import (
    MIX_RATE,
    DevicePool,
    Limiter,
    Mixer,
    mix_n_minus_1,
    saturate,
)
from client.media.session import RtpSession, conference, create_session
from sipcore.offer_answer import OPUS, PCMU, Codec

N = MIX_RATE // 50  # samples per 20 ms frame at the mixing rate
LOOPBACK = "127.0.0.1"


def tone(freq: float, n: int = N, rate: int = MIX_RATE, amp: float = 3000) -> np.ndarray:
    t = np.arange(n) / rate
    return np.round(np.sin(2 * np.pi * freq * t) * amp).astype(np.int16)


def band_energy(x: np.ndarray, rate: int, freq: float, width: float = 30) -> float:
    spec = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(len(x)))) ** 2
    f = np.fft.rfftfreq(len(x), 1 / rate)
    return float(spec[(f > freq - width) & (f < freq + width)].sum())


def peak_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(len(x))))
    return float(np.argmax(spec)) * rate / len(x)


# ---------------------------------------------------------------- pure arithmetic


@pytest.mark.parametrize("n_legs", [2, 3, 4])
def test_n_minus_1_sums_of_constants_are_exact(n_legs: int) -> None:
    # Powers of two: every sum identifies exactly which signals it contains.
    legs = [np.full(N, 1 << (i + 1), dtype=np.int16) for i in range(n_legs)]
    local = np.full(N, 1, dtype=np.int16)
    outs, speaker = mix_n_minus_1(local, legs)
    everything = 1 + sum(1 << (i + 1) for i in range(n_legs))
    for i, out in enumerate(outs):
        assert out.dtype == np.int16
        assert np.all(out == everything - (1 << (i + 1)))  # all but its own
        assert not int(out[0]) & (1 << (i + 1))  # its own bit is not set
        assert int(out[0]) & 1  # the microphone is in every leg's mix
    assert np.all(speaker == everything - 1)  # the speaker hears all legs, not the mic


@pytest.mark.parametrize("n_legs", [2, 3, 4])
def test_n_minus_1_each_leg_hears_the_others_never_itself(n_legs: int) -> None:
    freqs = [440.0, 660.0, 880.0, 1320.0][:n_legs]
    n = MIX_RATE // 5  # 200 ms: fine enough frequency resolution
    legs = [tone(f, n) for f in freqs]
    local = tone(2000.0, n)
    outs, speaker = mix_n_minus_1(local, legs)
    for i, out in enumerate(outs):
        others = [f for j, f in enumerate(freqs) if j != i]
        expected = local.astype(np.int32) + sum(legs[j].astype(np.int32) for j in range(n_legs)
                                                if j != i)
        assert np.array_equal(out, expected.astype(np.int16))  # no clipping at these levels
        ref = min(band_energy(out, MIX_RATE, f) for f in [*others, 2000.0])
        assert band_energy(out, MIX_RATE, freqs[i]) < 1e-6 * ref
    for f in freqs:
        assert band_energy(speaker, MIX_RATE, f) > 0
    assert band_energy(speaker, MIX_RATE, 2000.0) < 1e-6 * band_energy(speaker, MIX_RATE, 440)


def test_sums_saturate_at_int16_bounds() -> None:
    hi = np.full(N, 30000, dtype=np.int16)
    lo = np.full(N, -30000, dtype=np.int16)
    outs, speaker = mix_n_minus_1(hi, [hi, hi, hi])
    assert all(np.all(o == 32767) for o in outs)  # 90000 clipped, not wrapped negative
    assert np.all(speaker == 32767)
    outs, speaker = mix_n_minus_1(lo, [lo, lo])
    assert all(np.all(o == -32768) for o in outs)
    assert np.all(speaker == -32768)
    assert saturate(np.array([40000, -40000, 5], dtype=np.int64)).tolist() == [32767, -32768, 5]


def test_limiter_scales_instead_of_clipping() -> None:
    loud = [tone(440, amp=25000), tone(440, amp=25000)]
    limiters = [Limiter(), Limiter(), Limiter()]
    _, speaker = mix_n_minus_1(np.zeros(N, dtype=np.int16), loud, limiters)
    _, speaker = mix_n_minus_1(np.zeros(N, dtype=np.int16), loud, limiters)
    assert np.abs(speaker.astype(np.int32)).max() <= 32767
    assert limiters[-1].gain < 0.7
    # Scaled, not squared off: hard clipping would hold the bound for whole stretches.
    clipped = saturate(loud[0].astype(np.int32) + loud[1])
    at_bound = np.count_nonzero(np.abs(speaker.astype(np.int32)) >= 32767)
    assert at_bound * 10 < np.count_nonzero(np.abs(clipped.astype(np.int32)) >= 32767)
    with pytest.raises(ValueError):
        mix_n_minus_1(np.zeros(N, dtype=np.int16), loud, [Limiter()])


def test_frames_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError):
        mix_n_minus_1(np.zeros(N, dtype=np.int16), [np.zeros(N - 1, dtype=np.int16)])


# ---------------------------------------------------------------- the mixer with fake legs


class ConstSource(AudioSource):
    def __init__(self, value: int, rate: int = MIX_RATE) -> None:
        self.rate = rate
        self.value = value
        self.closed = False

    def read_frame(self) -> np.ndarray:
        return np.full(self.frame_samples, self.value, dtype=np.int16)

    def close(self) -> None:
        self.closed = True


class FakeSession:
    """A leg without sockets: it 'decodes' a constant into the mixer's sink and keeps
    what the mixer gives it to send; `log` records the order of the phases."""

    def __init__(self, clock: task.Clock, value: int, log: list[str], name: str) -> None:
        self.clock = clock
        self.value = value
        self.log = log
        self.name = name
        self.source: AudioSource = ConstSource(0)
        self.sink: AudioSink = MemorySink(MIX_RATE)
        self.sent: list[np.ndarray] = []
        self.own_clock = True
        self.skipped = 0

    def attach(self, driver: Any, source: AudioSource, sink: AudioSink
               ) -> tuple[AudioSource, AudioSink]:
        self.own_clock = False
        old = (self.source, self.sink)
        self.source, self.sink = source, sink
        return old

    def detach(self, source: AudioSource, sink: AudioSink) -> None:
        self.source, self.sink = source, sink
        self.own_clock = True

    def tick_receive(self) -> None:
        self.log.append(f"rx {self.name}")
        self.sink.write_frame(np.full(N, self.value, dtype=np.int16))

    def tick_send(self) -> None:
        self.log.append(f"tx {self.name}")
        self.sent.append(self.source.read_frame().copy())

    def skip_frames(self, count: int) -> None:
        self.skipped += count

    def stop(self) -> None:
        self.source.close()
        self.sink.close()


def fake_conference(n_legs: int) -> tuple[task.Clock, Mixer, list[FakeSession], list[str],
                                          MemorySink]:
    clock = task.Clock()
    log: list[str] = []
    sessions = [FakeSession(clock, 1 << (i + 1), log, str(i)) for i in range(n_legs)]
    speaker = MemorySink(MIX_RATE)
    # The first leg's own devices are the phone's: microphone 1, speaker `speaker`.
    sessions[0].source = ConstSource(1)
    sessions[0].sink = speaker
    mixer = Mixer(clock)
    for s in sessions:
        mixer.add(s)
    return clock, mixer, sessions, log, speaker


@pytest.mark.parametrize("n_legs", [2, 3, 4])
def test_mixer_tick_receives_all_then_mixes_then_sends_all(n_legs: int) -> None:
    clock, mixer, sessions, log, speaker = fake_conference(n_legs)
    clock.advance(0.02)
    names = [s.name for s in sessions]
    assert log == [f"rx {n}" for n in names] + [f"tx {n}" for n in names]
    everything = 1 + sum(s.value for s in sessions)
    for s in sessions:
        # Sent on the same tick it was received: no frame of delay through the mixer.
        assert np.all(s.sent[0] == everything - s.value)
    clock.advance(0.02)
    heard = speaker.samples
    assert np.all(heard[-N // 2:] == everything - 1)  # past the resampler's start-up
    mixer.dissolve()


def test_one_clock_drives_the_whole_conference() -> None:
    clock, mixer, sessions, log, _ = fake_conference(3)
    looping = [c for c in clock.getDelayedCalls() if isinstance(c.func, task.LoopingCall)]
    assert len(looping) == 1
    assert not any(s.own_clock for s in sessions)
    clock.pump([0.02] * 10 + [1e-6])  # the epsilon: ten float steps fall short of 0.2
    assert mixer.ticks == 10
    assert all(len(s.sent) == 10 for s in sessions)
    clock.advance(0.2)  # a stall of 10 frames: catch up a bounded number, skip the rest
    assert mixer.ticks == 15 and all(s.skipped == 5 for s in sessions)
    mixer.dissolve()
    assert all(s.own_clock for s in sessions)
    assert not [c for c in clock.getDelayedCalls() if isinstance(c.func, task.LoopingCall)]


def test_a_leg_that_stops_leaves_and_the_rest_keep_mixing() -> None:
    clock, mixer, sessions, _, _ = fake_conference(3)
    sessions[0].stop()  # the call of the leg owning the phone's devices ended
    assert mixer.sessions == sessions[1:]
    clock.advance(0.02)
    # The next leg's devices carry the microphone now (its ConstSource(0) is silent).
    assert np.all(sessions[1].sent[-1] == sessions[2].value)
    assert np.all(sessions[2].sent[-1] == sessions[1].value)
    sessions[1].stop()
    sessions[2].stop()
    assert not mixer.running


def test_remove_gives_the_session_its_devices_back() -> None:
    clock, mixer, sessions, _, speaker = fake_conference(2)
    mixer.remove(sessions[0])
    assert sessions[0].own_clock and sessions[0].sink is speaker
    assert mixer.sessions == [sessions[1]]


# ---------------------------------------------------------------- shared local devices


class CountingSource(AudioSource):
    def __init__(self) -> None:
        self.rate = 8000
        self.n = 0
        self.closed = False

    def read_frame(self) -> np.ndarray:
        self.n += 1
        return np.full(self.frame_samples, self.n, dtype=np.int16)

    def close(self) -> None:
        self.closed = True


def test_shared_source_gives_every_reader_every_frame_once() -> None:
    pool = DevicePool()
    dev = CountingSource()
    a = pool.source("mic", lambda: dev)
    b = pool.source("mic", lambda: pytest.fail("opened twice"))
    got_a = [int(a.read_frame()[0]) for _ in range(3)]
    got_b = [int(b.read_frame()[0]) for _ in range(3)]
    assert got_a == got_b == [1, 2, 3] and dev.n == 3
    a.close()
    assert not dev.closed
    assert int(b.read_frame()[0]) == 4
    b.close()
    assert dev.closed


def test_shared_sink_sums_writers_and_ignores_a_silent_one() -> None:
    pool = DevicePool()
    dev = MemorySink(8000)
    a = pool.sink("spk", lambda: dev)
    b = pool.sink("spk", lambda: dev)
    a.write_frame(np.full(160, 100, dtype=np.int16))
    assert len(dev._frames) == 0  # waits for b's part of the frame
    b.write_frame(np.full(160, 20000, dtype=np.int16))
    b.write_frame(np.full(160, 20000, dtype=np.int16))
    a.write_frame(np.full(160, 20000, dtype=np.int16))
    assert [int(f[0]) for f in dev._frames] == [20100, 32767]
    for _ in range(6):  # b falls silent: after a bounded lag a goes through alone
        a.write_frame(np.full(160, 7, dtype=np.int16))
    assert len(dev._frames) >= 5 and int(dev._frames[-1][0]) == 7
    a.close()
    b.close()
    assert dev.closed


# ---------------------------------------------------------------- real sessions, two codecs


async def iterate(n: int = 2) -> None:
    for _ in range(n):
        await deferLater(reactor, 0, lambda: None)


class Peer:
    """A remote participant: an RtpSession sending a tone and recording what it hears."""

    def __init__(self, clock: task.Clock, freq: float, seed: int) -> None:
        self.sink = MemorySink(16000)
        self.session = RtpSession(reactor, LOOPBACK, ToneSource(freq, 8000), self.sink,
                                  clock=clock, rng=random.Random(seed))
        self.session.bind()


@pytest.fixture
def stopped() -> Iterator[list[RtpSession]]:
    made: list[RtpSession] = []
    yield made
    for s in made:
        s.stop()


@pytest.mark.skipif(not opus.available(), reason=opus.INSTALL_HINT)
@pytest_twisted.ensureDeferred
async def test_pcmu_leg_and_opus_leg_hear_each_other(stopped: list[RtpSession]) -> None:
    clock = task.Clock()
    speaker = MemorySink(16000)
    # Our side: two legs; leg 1 owns the phone's devices (silent mic, memory speaker).
    leg1 = RtpSession(reactor, LOOPBACK, SilenceSource(8000), speaker, clock=clock,
                      rng=random.Random(1))
    leg2 = RtpSession(reactor, LOOPBACK, SilenceSource(8000), MemorySink(16000), clock=clock,
                      rng=random.Random(2))
    p1, p2 = Peer(clock, 440, 3), Peer(clock, 1000, 4)
    stopped.extend([leg1, leg2, p1.session, p2.session])
    pairs: list[tuple[RtpSession, RtpSession, Codec]] = [
        (leg1, p1.session, PCMU), (leg2, p2.session, OPUS)]
    for ours, theirs, codec in pairs:
        ours.bind()
        ours.start(ours.local_port, LOOPBACK, theirs.local_port, codec, "sendrecv")
        theirs.start(theirs.local_port, LOOPBACK, ours.local_port, codec, "sendrecv")
    mixer = conference([leg1, leg2])
    looping = [c for c in clock.getDelayedCalls() if isinstance(c.func, task.LoopingCall)]
    assert len(looping) == 3  # the mixer's, and one per remote peer (other phones)
    for _ in range(100):  # 2 s
        clock.advance(0.02)
        await iterate()
    assert leg1.counters["ticks"] == leg2.counters["ticks"] == mixer.ticks
    rate = 16000
    heard1 = p1.sink.samples[-rate:]  # PCMU peer: the Opus peer's 1000 Hz
    heard2 = p2.sink.samples[-rate:]  # Opus peer: the PCMU peer's 440 Hz
    assert abs(peak_hz(heard1, rate) - 1000) <= 10
    assert abs(peak_hz(heard2, rate) - 440) <= 10
    assert band_energy(heard1, rate, 440) < 0.05 * band_energy(heard1, rate, 1000)
    assert band_energy(heard2, rate, 1000) < 0.05 * band_energy(heard2, rate, 440)
    local = speaker.samples[-rate:]
    assert band_energy(local, rate, 440) > 0.2 * band_energy(local, rate, 1000)
    assert band_energy(local, rate, 1000) > 0.2 * band_energy(local, rate, 440)
    mixer.dissolve()
    assert leg1.sink is speaker  # a plain call again, with its own devices and clock
    assert leg1._loop is not None and leg1._loop.running


@pytest_twisted.ensureDeferred
async def test_factory_sessions_share_one_record_file(tmp_path: Any) -> None:
    """Two calls of one phone (create_session) write one --record file, not two."""
    from types import SimpleNamespace

    opts = SimpleNamespace(play=None, record=str(tmp_path / "rec.wav"), codec="pcmu",
                           audio_device="none")
    a = create_session(reactor, LOOPBACK, opts)
    b = create_session(reactor, LOOPBACK, opts)
    try:
        assert a.sink.device is b.sink.device  # type: ignore[attr-defined]
        assert a.source.device is b.source.device  # type: ignore[attr-defined]
    finally:
        a.stop()
        b.stop()
    assert a.sink.device is None  # type: ignore[attr-defined]


# ---------------------------------------------------------------- the mixer leaves


def _problems(event: dict[str, Any]) -> bool:
    from twisted.logger import LogLevel

    level = event.get("log_level")
    return "log_failure" in event or (level is not None and level >= LogLevel.warn)


@pytest.mark.parametrize("how", ["stop", "stop_like_the_ua", "dissolve_then_stop"])
@pytest_twisted.ensureDeferred
async def test_mixer_leaves_mid_conference_while_media_flows(
    how: str, stopped: list[RtpSession]
) -> None:
    """The mixer side goes away abruptly with datagrams in flight both ways: no traceback
    logged, no frame clock or RTCP timer left, every socket closed. (End to end, with real
    processes: tests/interop/test_conference.py, where alice quits while audio flows.)

    stop: every leg's session stops (the mixer shrinks and stops its clock by itself);
    stop_like_the_ua: the same, with the UA's on_leg_stopped (dissolve at one leg left,
    so the last session gets its own clock back in the middle of the teardown);
    dissolve_then_stop: the mixer lets go of every leg, which carry on alone for a few
    frames and are then stopped."""
    from twisted.logger import globalLogPublisher

    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    reactor_calls_before = set(reactor.getDelayedCalls())
    clock, peer_clock = task.Clock(), task.Clock()  # ours, and the other phones'
    try:
        legs = [RtpSession(reactor, LOOPBACK, ToneSource(300 + 100 * k, 8000),
                           MemorySink(16000), clock=clock, rng=random.Random(10 + k))
                for k in range(3)]
        peers = [Peer(peer_clock, 440 + 220 * k, 20 + k) for k in range(3)]
        stopped.extend(p.session for p in peers)
        stopped.extend(legs)  # only if an assertion fails before the teardown under test
        for ours, peer in zip(legs, peers):
            ours.bind()
            ours.start(ours.local_port, LOOPBACK, peer.session.local_port, PCMU, "sendrecv")
            peer.session.start(peer.session.local_port, LOOPBACK, ours.local_port, PCMU,
                               "sendrecv")
        mixer = conference(legs)
        if how == "stop_like_the_ua":
            def left(session: Any) -> None:
                if len(mixer.legs) < 2:
                    mixer.dissolve()
            mixer.on_leg_stopped = left

        async def frames(n: int, deliver: bool = True) -> None:
            for _ in range(n):
                clock.advance(0.02)
                peer_clock.advance(0.02)
                if deliver:
                    await iterate()

        await frames(25)  # 0.5 s: media flows both ways through the mixer
        assert mixer.ticks >= 20
        assert all(s.packets_received > 10 for s in legs)
        assert all(p.session.packets_received > 10 for p in peers)
        listeners = [lst for s in legs for lst in (s._rtp_listener, s._rtcp_listener)]
        ports = [s.local_port for s in legs] + [s.rtcp_port for s in legs]

        await frames(2, deliver=False)  # datagrams queued in every socket, unread
        if how == "dissolve_then_stop":
            mixer.dissolve()
            assert all(s._loop is not None and s._loop.running for s in legs)
            await frames(5)  # plain calls again, each on its own clock
            await frames(2, deliver=False)
        for s in legs:
            s.stop()
        assert not mixer.running and mixer.legs == []
        await frames(5)  # the peers keep sending to the closed ports
        for p in peers:
            p.session.stop()
        await iterate(5)

        # Nothing of ours is left on either clock: no LoopingCall, no RTCP timer.
        assert clock.getDelayedCalls() == []
        assert all(s._loop is None for s in legs)
        # No delayed call left on the real reactor (a UDP port's connectionLost is one).
        assert [c for c in reactor.getDelayedCalls()
                if c not in reactor_calls_before and c.active()] == []
        # Every socket closed: no longer read by the reactor, and its port free again.
        readers = set(reactor.getReaders())
        assert not [lst for lst in listeners if lst in readers]
        for port in ports:
            probe = reactor.listenUDP(port, _Discard(), interface=LOOPBACK)
            await probe.stopListening()
        # No reactor shutdown trigger still holds one of our sessions.
        shutdown = reactor._eventTriggers.get("shutdown")
        if shutdown is not None:
            assert not [t for t in shutdown.before if getattr(t[0], "__self__", None) in legs]
    finally:
        globalLogPublisher.removeObserver(events.append)
    bad = [e for e in events if _problems(e)]
    assert bad == [], [e.get("log_format") for e in bad]


class _Discard(DatagramProtocol):
    pass
