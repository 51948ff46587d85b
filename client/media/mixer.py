# -*- test-case-name: tests.client.test_mixer -*-
"""End-system conferencing: the N-1 mixer, and the shared local devices it relies on.

The arithmetic (:func:`mix_n_minus_1`) is pure: for N legs (remote participants) and the
local microphone, each leg gets the sum of every *other* leg plus the microphone, never
its own voice back; the local speaker gets the sum of all legs. Sums are taken in int32
and saturated to int16 (or, with ``normalise``, scaled down by a limiter first).

:class:`Mixer` runs a conference on one 20 ms frame clock. Each leg is an RtpSession
attached with ``session.attach(mixer, leg_source, leg_sink)``: the session stops its
own LoopingCall and the mixer's tick drives it in a fixed order::

    1. every leg:  jitter buffer -> decode -> resample to MIX_RATE -> MixerLegSink
    2. mix:        microphone + legs -> per-leg N-1 sums, speaker sum
    3. every leg:  MixerLegSource -> resample to the leg's codec rate -> encode -> send

So every leg's outgoing frame contains the frames every other leg received on the same
tick, whatever its codec (PCMU 8 kHz on one leg, Opus 48 kHz on another): the
session's own resamplers (client.media.resample) convert between MIX_RATE and the codec
rate, per leg. The session keeps its devices (the microphone and speaker of the phone);
the mixer borrows them while the leg is attached and gives them back on detach, so a
conference that shrinks to one call carries on as a plain call with direct audio.

Shared devices (:class:`DevicePool`): a phone has one microphone and one speaker (or
one --play and one --record file) however many calls it has. Each call's session gets
a handle; a source handle fans one capture stream out to every reader (each reads
every frame once), a sink handle sums what several writers play in the same frame. A
lone session sees exactly the device it would have had on its own.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Protocol

import numpy as np
from twisted.internet import task
from twisted.logger import Logger

from .devices import AudioSink, AudioSource, frame_samples_for
from .resample import Resampler

__all__ = [
    "MIX_RATE",
    "DevicePool",
    "Limiter",
    "Mixer",
    "MixerLegSink",
    "MixerLegSource",
    "mix_n_minus_1",
    "saturate",
]

log = Logger()

FRAME_S = 0.02
# 48 kHz keeps Opus (48 kHz) legs unconverted and is a multiple of every other rate we
# meet (8/16/24 kHz), so every per-leg conversion is a small integer ratio.
MIX_RATE = 48000
MAX_CATCHUP_TICKS = 5  # as in session.py: a stalled reactor does not burst audio
INT16_MIN, INT16_MAX = -32768, 32767


def saturate(x: np.ndarray) -> np.ndarray:
    """int32/int64/float sums -> int16, clipping at the bounds rather than wrapping
    (wrap-around turns a loud moment into a full-scale click)."""
    return np.clip(x, INT16_MIN, INT16_MAX).astype(np.int16)


class Limiter:
    """Soft normalisation for one output: when a sum would clip, scale the frame down
    (instantly) and let the gain recover slowly, so loud overlaps duck smoothly instead
    of being squared off. The gain is interpolated across the frame to avoid steps."""

    def __init__(self, release: float = 0.05) -> None:
        self.gain = 1.0
        self.release = release  # gain regained per frame, towards 1.0

    def process(self, total: np.ndarray) -> np.ndarray:
        peak = float(np.max(np.abs(total))) if len(total) else 0.0
        target = min(1.0, self.gain + self.release)
        if peak * target > INT16_MAX:
            target = INT16_MAX / peak
        ramp = np.linspace(self.gain, target, num=len(total), endpoint=True)
        self.gain = target
        return saturate(np.round(total * ramp))


def mix_n_minus_1(
    local: np.ndarray,
    legs: Sequence[np.ndarray],
    limiters: Sequence[Limiter] | None = None,
) -> tuple[list[np.ndarray], np.ndarray]:
    """The conference sums for one frame, all arrays the same length (one rate).

    Returns (what each leg is sent, what the local speaker plays): leg i gets
    local + sum(legs) - legs[i]; the speaker gets sum(legs). With `limiters`
    (len(legs) + 1 of them, the last for the speaker) sums are normalised, else clipped.
    """
    n = len(local)
    acc = [np.asarray(leg, dtype=np.int32) for leg in legs]
    for a in acc:
        if len(a) != n:
            raise ValueError(f"frame of {len(a)} samples mixed with one of {n}")
    # int32 cannot overflow: 2**31 / 2**15 = 65536 full-scale legs.
    legs_sum = np.sum(acc, axis=0, dtype=np.int32) if acc else np.zeros(n, dtype=np.int32)
    total = legs_sum + np.asarray(local, dtype=np.int32)
    raw = [total - a for a in acc]
    if limiters is None:
        return [saturate(r) for r in raw], saturate(legs_sum)
    if len(limiters) != len(acc) + 1:
        raise ValueError("one limiter per leg plus one for the speaker")
    outs = [lim.process(r) for lim, r in zip(limiters, raw, strict=False)]
    return outs, limiters[-1].process(legs_sum)


def _fit(pcm: np.ndarray, n: int) -> np.ndarray:
    """Exactly n samples: resampler output per frame is exact for 50 Hz-multiple rates,
    but a device must never get a ragged frame even if that assumption breaks."""
    if len(pcm) == n:
        return pcm
    out = np.zeros(n, dtype=np.int16)
    take = min(n, len(pcm))
    out[:take] = pcm[:take]
    return out


# ---------------------------------------------------------------------- the legs


class MixableSession(Protocol):
    """What the mixer needs from a session (client.media.session.RtpSession has it)."""

    clock: Any

    def attach(
        self, driver: Any, source: AudioSource, sink: AudioSink
    ) -> tuple[AudioSource, AudioSink]: ...

    def detach(self, source: AudioSource, sink: AudioSink) -> None: ...

    def tick_receive(self) -> None: ...

    def tick_send(self) -> None: ...

    def skip_frames(self, count: int) -> None: ...


class MixerLegSource(AudioSource):
    """A leg's "microphone": the N-1 mix the mixer computed for it this tick."""

    def __init__(self, leg: _Leg, rate: int) -> None:
        self.rate = rate
        self._leg = leg
        self.frame = np.zeros(frame_samples_for(rate), dtype=np.int16)

    def read_frame(self) -> np.ndarray:
        return self.frame

    def close(self) -> None:
        self._leg.closed()


class MixerLegSink(AudioSink):
    """A leg's "speaker": keeps the frame decoded from that participant this tick."""

    def __init__(self, leg: _Leg, rate: int) -> None:
        self.rate = rate
        self._leg = leg
        self.frame = np.zeros(frame_samples_for(rate), dtype=np.int16)

    def write_frame(self, pcm: np.ndarray) -> None:
        self.frame = _fit(np.asarray(pcm, dtype=np.int16), len(self.frame))

    def close(self) -> None:
        self._leg.closed()


class _Leg:
    def __init__(self, mixer: Mixer, session: MixableSession) -> None:
        self.mixer = mixer
        self.session = session
        self.source = MixerLegSource(self, mixer.rate)
        self.sink = MixerLegSink(self, mixer.rate)
        self.limiter = Limiter()
        self.own_source: AudioSource | None = None
        self.own_sink: AudioSink | None = None
        self.gone = False

    def closed(self) -> None:
        # The session closes its devices on stop(): the leg has left the conference.
        if not self.gone:
            self.mixer._leg_stopped(self)


class Mixer:
    """A local conference: N legs plus the local devices on one 20 ms clock."""

    def __init__(self, clock: Any, *, rate: int = MIX_RATE, normalise: bool = False) -> None:
        self.clock = clock
        self.rate = rate
        self.frame_samples = frame_samples_for(rate)
        self.normalise = normalise
        self.legs: list[_Leg] = []
        self._loop: task.LoopingCall | None = None
        self._local: _Leg | None = None  # whose own devices are the phone's mic/speaker
        self._in_rs: Resampler | None = None
        self._out_rs: Resampler | None = None
        self._speaker_limiter = Limiter()
        self.ticks = 0
        self.tick_errors = 0
        self.on_leg_stopped: Callable[[Any], None] | None = None

    # -------------------------------------------------------------- membership

    @property
    def sessions(self) -> list[Any]:
        return [leg.session for leg in self.legs]

    @property
    def running(self) -> bool:
        return self._loop is not None and self._loop.running

    def add(self, session: MixableSession) -> None:
        """Take over a started session: its own clock stops, the mixer's drives it."""
        if any(leg.session is session for leg in self.legs):
            return
        leg = _Leg(self, session)
        leg.own_source, leg.own_sink = session.attach(self, leg.source, leg.sink)
        self.legs.append(leg)
        if self._local is None:
            self._use_local(leg)
        if self._loop is None:
            self._loop = task.LoopingCall.withCount(self._on_ticks)
            self._loop.clock = self.clock
            self._loop.start(FRAME_S, now=False).addErrback(
                lambda f: log.failure("conference clock stopped", f)
            )

    def remove(self, session: Any) -> None:
        """Give a live session back its own devices and its own clock."""
        leg = next((lg for lg in self.legs if lg.session is session), None)
        if leg is None:
            return
        self._drop(leg)
        assert leg.own_source is not None and leg.own_sink is not None
        session.detach(leg.own_source, leg.own_sink)

    def dissolve(self) -> None:
        """Detach every remaining leg (each carries on alone) and stop the clock."""
        for leg in list(self.legs):
            self.remove(leg.session)
        self.stop()

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def _drop(self, leg: _Leg) -> None:
        leg.gone = True
        self.legs.remove(leg)
        if self._local is leg:
            self._local = None
            if self.legs:
                # Another leg's devices are the same phone (shared handles): carry on.
                self._use_local(self.legs[0])

    def _leg_stopped(self, leg: _Leg) -> None:
        """A leg's session stopped (its call ended): drop it and close the devices it
        lent us, as its stop() would have done."""
        self._drop(leg)
        for dev in (leg.own_source, leg.own_sink):
            if dev is not None:
                try:
                    dev.close()
                except Exception:
                    log.failure("closing audio device failed")
        if not self.legs:
            self.stop()
        if self.on_leg_stopped is not None:
            self.on_leg_stopped(leg.session)

    def _use_local(self, leg: _Leg) -> None:
        self._local = leg
        assert leg.own_source is not None and leg.own_sink is not None
        self._in_rs = Resampler(leg.own_source.rate, self.rate)
        self._out_rs = Resampler(self.rate, leg.own_sink.rate)

    # -------------------------------------------------------------- the clock

    def _on_ticks(self, count: int) -> None:
        run = min(count, MAX_CATCHUP_TICKS)
        if count > run:
            for leg in list(self.legs):
                leg.session.skip_frames(count - run)
        for _ in range(run):
            try:
                self.tick()
            except Exception:
                self.tick_errors += 1
                if self.tick_errors == 1:
                    log.failure("conference tick failed (further failures are only counted)")

    def tick(self) -> None:
        """One frame for the whole conference: receive all, mix, send all."""
        self.ticks += 1
        legs = list(self.legs)
        for leg in legs:
            leg.session.tick_receive()
        local = self._local
        mic = np.zeros(self.frame_samples, dtype=np.int16)
        if local is not None and local.own_source is not None and self._in_rs is not None:
            mic = _fit(self._in_rs.process(local.own_source.read_frame()), self.frame_samples)
        limiters = None
        if self.normalise:
            limiters = [leg.limiter for leg in legs] + [self._speaker_limiter]
        outs, speaker = mix_n_minus_1(mic, [leg.sink.frame for leg in legs], limiters)
        for leg, out in zip(legs, outs, strict=True):
            leg.source.frame = out
        if local is not None and local.own_sink is not None and self._out_rs is not None:
            local.own_sink.write_frame(
                _fit(self._out_rs.process(speaker), local.own_sink.frame_samples)
            )
        for leg in legs:
            if not leg.gone:
                leg.session.tick_send()


# ---------------------------------------------------------------------- shared devices

SOURCE_RING_FRAMES = 8  # a reader this far behind the newest frame skips ahead
SINK_MAX_LAG_FRAMES = 3  # a writer this far behind is ignored until it writes again


class _SourceHub:
    """One capture device read by several sessions: each handle gets every frame once;
    the device is read only when a handle asks for a frame nobody has read yet."""

    def __init__(self, device: AudioSource, on_empty: Callable[[], None]) -> None:
        self.device = device
        self.rate = device.rate
        self._frames: deque[np.ndarray] = deque()
        self._base = 0  # index of _frames[0] in the capture stream
        self._pos: dict[Any, int] = {}
        self._on_empty = on_empty

    def handle(self) -> SharedSource:
        h = SharedSource(self)
        # A new reader starts with the next frame captured, not with stale ones.
        self._pos[h] = self._base + len(self._frames)
        return h

    def read(self, h: SharedSource) -> np.ndarray:
        pos = max(self._pos.get(h, 0), self._base)
        head = self._base + len(self._frames)
        if pos >= head:
            self._frames.append(self.device.read_frame())
            pos = head
            if len(self._frames) > SOURCE_RING_FRAMES:
                self._frames.popleft()
                self._base += 1
        self._pos[h] = pos + 1
        return self._frames[pos - self._base].copy()

    def release(self, h: SharedSource) -> None:
        self._pos.pop(h, None)
        if not self._pos:
            self._on_empty()
            self.device.close()


class SharedSource(AudioSource):
    def __init__(self, hub: _SourceHub) -> None:
        self._hub: _SourceHub | None = hub
        self.rate = hub.rate

    @property
    def device(self) -> AudioSource | None:
        return self._hub.device if self._hub is not None else None

    def read_frame(self) -> np.ndarray:
        if self._hub is None:
            return np.zeros(self.frame_samples, dtype=np.int16)
        return self._hub.read(self)

    def close(self) -> None:
        hub, self._hub = self._hub, None
        if hub is not None:
            hub.release(self)


class _SinkHub:
    """One playback device written by several sessions: frames written at the same
    position of each writer's stream are summed; a frame goes to the device once every
    active writer has contributed (a writer SINK_MAX_LAG_FRAMES behind no longer counts,
    so a session that stops writing cannot stall the others)."""

    def __init__(self, device: AudioSink, on_empty: Callable[[], None]) -> None:
        self.device = device
        self.rate = device.rate
        self.frame_samples = device.frame_samples
        self._acc: deque[np.ndarray] = deque()
        self._base = 0
        self._pos: dict[Any, int] = {}
        self._on_empty = on_empty

    def handle(self) -> SharedSink:
        h = SharedSink(self)
        self._pos[h] = self._base + len(self._acc)
        return h

    def write(self, h: SharedSink, pcm: np.ndarray) -> None:
        pos = max(self._pos.get(h, 0), self._base)
        while len(self._acc) <= pos - self._base:
            self._acc.append(np.zeros(self.frame_samples, dtype=np.int32))
        self._acc[pos - self._base] += _fit(np.asarray(pcm, dtype=np.int16), self.frame_samples)
        self._pos[h] = pos + 1
        self._flush()

    def _flush(self) -> None:
        while self._acc:
            waiting = any(p == self._base for p in self._pos.values())
            if waiting and len(self._acc) <= SINK_MAX_LAG_FRAMES:
                return
            self.device.write_frame(saturate(self._acc.popleft()))
            self._base += 1

    def release(self, h: SharedSink) -> None:
        self._pos.pop(h, None)
        if not self._pos:
            self._on_empty()
            self.device.close()
        else:
            self._flush()


class SharedSink(AudioSink):
    def __init__(self, hub: _SinkHub) -> None:
        self._hub: _SinkHub | None = hub
        self.rate = hub.rate

    @property
    def device(self) -> AudioSink | None:
        return self._hub.device if self._hub is not None else None

    def write_frame(self, pcm: np.ndarray) -> None:
        if self._hub is not None:
            self._hub.write(self, pcm)

    def close(self) -> None:
        hub, self._hub = self._hub, None
        if hub is not None:
            hub.release(self)


class DevicePool:
    """Open each local device once per process, whatever the number of calls; the last
    handle closed closes the device (a WAV file's header is then complete)."""

    def __init__(self) -> None:
        self._sources: dict[Hashable, _SourceHub] = {}
        self._sinks: dict[Hashable, _SinkHub] = {}

    def source(self, key: Hashable, opener: Callable[[], AudioSource]) -> SharedSource:
        hub = self._sources.get(key)
        if hub is None:
            hub = _SourceHub(opener(), lambda: self._sources.pop(key, None))
            self._sources[key] = hub
        return hub.handle()

    def sink(self, key: Hashable, opener: Callable[[], AudioSink]) -> SharedSink:
        hub = self._sinks.get(key)
        if hub is None:
            hub = _SinkHub(opener(), lambda: self._sinks.pop(key, None))
            self._sinks[key] = hub
        return hub.handle()
