"""The conference mixer: CPU per 20 ms frame against the number of participants N.
Prints; asserts nothing.

    .venv/bin/python bench/mixer.py [ticks]     (SIPCALLING_BENCH_QUICK=1: a short run)

Sections:
1. the pure arithmetic: mix_n_minus_1 at the mixer's rate (MIX_RATE, 960 samples per
   frame) for N legs plus the microphone, saturating (as `conference` uses it) and with
   the normalising limiters;
2. the whole per-tick path of a Mixer with N attached legs, each a real RtpSession bound
   on loopback, for PCMU legs and for Opus legs. Per tick, N remote participants (plain
   UDP sockets, not timed) each send one pre-encoded RTP packet to their leg; then the
   timed part: one reactor iteration (the legs' sockets read, parsed, put in the jitter
   buffers) and Mixer.tick() (jitter buffer -> decode -> resample to MIX_RATE, the N-1
   mix, the local microphone and speaker, resample -> encode -> send for every leg). The
   legs send to one drain socket, emptied outside the timing. The mixer's own
   LoopingCall is stopped and its tick called directly, so each timed tick is exactly one
   frame; the task.Clock the sessions read is advanced 20 ms per tick (RTCP timers fire
   from it, outside the timing, about once per 5 s per leg);
   Figures are medians over the timed ticks (robust to a neighbour process stealing the
   core for one tick); the mean and the slowest tick are shown beside them. A per-leg
   breakdown (codec, resampling) follows the table;
3. the largest conference one core carries in real time: the largest N whose median
   measured tick (receive + tick) stays under 20 ms, found by jumping past the table
   (by the measured per-leg cost, or doubling) and then bisecting, for each codec.
"""

from __future__ import annotations

import os
import random
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from client.media import opus  # noqa: E402
from client.media.codecs import get_codec, get_decoder, get_encoder  # noqa: E402
from client.media.mixer import MIX_RATE, Limiter, mix_n_minus_1  # noqa: E402
from client.media.resample import Resampler  # noqa: E402
from client.media.rtp import RtpPacket  # noqa: E402

QUICK = os.environ.get("SIPCALLING_BENCH_QUICK") == "1"
FRAME_S = 0.02
BUDGET_US = FRAME_S * 1e6
COUNTS = (2, 4, 8, 16, 32)
LOOPBACK = "127.0.0.1"
DEVICE_RATE = 16000  # the phone's own devices, as with --play/--record
# The jitter buffers fill to their target delay (a few frames), the codecs settle.
WARMUP_TICKS = 5 if QUICK else 10
MAX_SEARCH_N = 1024  # the capacity search stops doubling here
PEER_TONES = 8  # distinct pre-encoded tone streams, shared round-robin by the peers
# Machine-readable figures, printed as RESULT lines at the end (bench/run_all.py
# collects lines of that form): {codec: {key: value}}.
RESULTS: dict[str, dict[str, str]] = {}


def tone(freq: float, rate: int, frames: int) -> np.ndarray:
    n = rate * frames // 50
    return np.round(8000 * np.sin(2 * np.pi * freq * np.arange(n) / rate)).astype(np.int16)


def pct(us: float) -> str:
    return f"{us / BUDGET_US * 100:6.2f} %"


# ---------------------------------------------------------------------- 1. arithmetic


def time_per_call(step: Callable[[int], object], seconds: float, max_iter: int) -> float:
    """Microseconds per call of step(i): at most `max_iter` calls or about `seconds`."""
    step(0)  # warm up
    done, t0 = 0, time.perf_counter()
    while done < max_iter:
        for i in range(50):
            step(done + i)
        done += 50
        if time.perf_counter() - t0 > seconds:
            break
    return (time.perf_counter() - t0) / done * 1e6


def mix_cost(n: int, normalise: bool) -> float:
    frame = MIX_RATE // 50
    frames = [[tone(300 + 37 * k + 11 * j, MIX_RATE, 1)[:frame] for k in range(n)]
              for j in range(4)]
    local = tone(2000, MIX_RATE, 1)[:frame]
    limiters = [Limiter() for _ in range(n + 1)] if normalise else None
    seconds = 0.04 if QUICK else 0.15
    return time_per_call(lambda i: mix_n_minus_1(local, frames[i % 4], limiters), seconds,
                         20000)


def arithmetic() -> dict[int, float]:
    print(f"1. mix_n_minus_1 at {MIX_RATE} Hz ({MIX_RATE // 50} samples per 20 ms frame), "
          "N legs + microphone")
    print(f"   {'N':>4} {'saturate us':>12} {'% of 20 ms':>10} {'normalise us':>13} "
          f"{'% of 20 ms':>10}")
    plain: dict[int, float] = {}
    for n in COUNTS:
        us, us_norm = mix_cost(n, False), mix_cost(n, True)
        plain[n] = us
        print(f"   {n:>4} {us:12.1f} {pct(us):>10} {us_norm:13.1f} {pct(us_norm):>10}")
        RESULTS.setdefault("mix", {})[f"n{n}_us"] = f"{us:.1f}"
    return plain


# ---------------------------------------------------------------------- 2. the tick path


class Conference:
    """A Mixer over n real RtpSessions on loopback, fed by n plain-socket peers."""

    def __init__(self, codec_name: str, n: int, payloads: list[list[bytes]]) -> None:
        from twisted.internet import reactor, task

        from client.media.devices import NullSink, SilenceSource, ToneSource
        from client.media.session import RtpSession, conference
        from sipcore.offer_answer import OPUS, PCMU

        self.reactor = reactor
        self.info = get_codec(codec_name)
        sdp_codec = PCMU if codec_name == "PCMU" else OPUS
        self.clock = task.Clock()
        self.drain = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.drain.bind((LOOPBACK, 0))
        self.drain.setblocking(False)
        drain_addr = self.drain.getsockname()
        self.peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.peer.bind((LOOPBACK, 0))
        self.sessions: list[Any] = []
        for k in range(n):
            # Leg 0's devices are the phone's (a tone as --play, a null --record); the
            # mixer uses only those, the other legs' are lent to it and left idle.
            source = ToneSource(700, DEVICE_RATE) if k == 0 else SilenceSource(DEVICE_RATE)
            s = RtpSession(reactor, LOOPBACK, source, NullSink(DEVICE_RATE), clock=self.clock,
                           rng=random.Random(k))
            s.bind()
            s.start(s.local_port, drain_addr[0], drain_addr[1], sdp_codec, "sendrecv",
                    remote_rtcp=drain_addr)
            self.sessions.append(s)
        self.mixer = conference(self.sessions)
        # Drive the frames ourselves: exactly one Mixer.tick() per timed tick.
        self.mixer.stop()
        self.payloads = payloads
        self.seq = 0
        self.ssrcs = [0x10000 + k for k in range(n)]
        self.ports = [s.local_port for s in self.sessions]

    def _peers_send(self) -> None:
        spf, pt = self.info.frame_samples, self.info.payload_type
        i = self.seq
        for k, port in enumerate(self.ports):
            payload = self.payloads[k % len(self.payloads)][i % 50]
            wire = RtpPacket(pt, i & 0xFFFF, (i * spf) & 0xFFFFFFFF, self.ssrcs[k], payload,
                             marker=i == 0).serialize()
            self.peer.sendto(wire, (LOOPBACK, port))
        self.seq += 1

    def _drain(self) -> None:
        while True:
            try:
                self.drain.recv(2048)
            except BlockingIOError:
                return

    def tick(self) -> tuple[float, float]:
        """One frame; returns (receive, mixer tick) wall microseconds."""
        self._peers_send()
        self.clock.advance(FRAME_S)
        t0 = time.perf_counter()
        self.reactor.iterate(0)
        t1 = time.perf_counter()
        self.mixer.tick()
        t2 = time.perf_counter()
        self._drain()
        return (t1 - t0) * 1e6, (t2 - t1) * 1e6

    def close(self) -> None:
        for s in self.sessions:
            s.stop()
        for _ in range(3):
            self.reactor.iterate(0)
        self.peer.close()
        self.drain.close()


def peer_payloads(codec: str) -> list[list[bytes]]:
    """PEER_TONES streams of 50 encoded frames (one second) each."""
    rate, spf = get_codec(codec).clock_rate, get_codec(codec).frame_samples
    out = []
    for j in range(PEER_TONES):
        enc = get_encoder(codec)
        pcm = tone(330 + 110 * j, rate, 50)
        out.append([enc.encode(pcm[i * spf : (i + 1) * spf]) for i in range(50)])
    return out


def measure_tick(codec: str, n: int, ticks: int,
                 payloads: list[list[bytes]]) -> dict[str, float]:
    conf = Conference(codec, n, payloads)
    try:
        for _ in range(WARMUP_TICKS):
            conf.tick()
        rx, mix = [], []
        for _ in range(ticks):
            r, m = conf.tick()
            rx.append(r)
            mix.append(m)
        total = [a + b for a, b in zip(rx, mix)]
        received = sum(s.packets_received for s in conf.sessions)
        sent = sum(s.packets_sent for s in conf.sessions)
        expected = n * (WARMUP_TICKS + ticks)
        errors = conf.mixer.tick_errors + sum(s.counters["tick_errors"] for s in conf.sessions)
    finally:
        conf.close()
    return {
        "rx": statistics.median(rx), "tick": statistics.median(mix),
        "total": statistics.median(total), "mean": statistics.fmean(total), "max": max(total),
        "delivered": received / expected * 100, "sent": sent / expected * 100,
        "errors": errors,
    }


def tick_table(codecs: list[str], ticks: int,
               payloads: dict[str, list[list[bytes]]]) -> dict[str, dict[int, float]]:
    print(f"\n2. Mixer per-tick path, N legs of real RtpSessions on loopback, {ticks} ticks "
          f"per row after {WARMUP_TICKS} warm-up (us per 20 ms tick)")
    print(f"   {'codec':<6} {'N':>4} {'receive':>9} {'tick':>9} {'total':>9} "
          f"{'% of 20 ms':>10} {'per leg':>8} {'mean':>9} {'max':>9} {'rx/tx %':>9}")
    medians: dict[str, dict[int, float]] = {}
    for codec in codecs:
        for n in COUNTS:
            m = measure_tick(codec, n, ticks, payloads[codec])
            medians.setdefault(codec, {})[n] = m["total"]
            note = f"  {int(m['errors'])} tick errors" if m["errors"] else ""
            print(f"   {codec:<6} {n:>4} {m['rx']:9.1f} {m['tick']:9.1f} {m['total']:9.1f} "
                  f"{pct(m['total']):>10} {m['total'] / n:8.1f} {m['mean']:9.1f} {m['max']:9.1f} "
                  f"{m['delivered']:4.0f}/{m['sent']:<4.0f}{note}")
            RESULTS.setdefault(codec, {})[f"n{n}_tick_us"] = f"{m['total']:.0f}"
    return medians


def components(codec: str) -> str:
    """What one leg's share of a tick is made of: its codec (encode + decode one frame)
    and its two resamplers (MIX_RATE -> codec rate -> MIX_RATE), as separate figures."""
    info = get_codec(codec)
    spf, rate = info.frame_samples, info.clock_rate
    pcm = tone(440, rate, 4)
    frames = [pcm[i * spf : (i + 1) * spf] for i in range(4)]
    enc, dec = get_encoder(codec), get_decoder(codec)
    seconds = 0.05 if QUICK else 0.15
    codec_us = time_per_call(lambda i: dec.decode(enc.encode(frames[i % 4])), seconds, 2000)
    down, up = Resampler(MIX_RATE, rate), Resampler(rate, MIX_RATE)
    mixed = tone(440, MIX_RATE, 1)
    rs_us = time_per_call(lambda i: up.process(down.process(mixed)), seconds, 2000)
    return (f"   {codec:<6} per leg: encode+decode {codec_us:6.1f} us, resample "
            f"{MIX_RATE // 1000}k->{rate // 1000}k->{MIX_RATE // 1000}k {rs_us:6.1f} us")


# ---------------------------------------------------------------------- 3. capacity


def capacity(codec: str, ticks: int, payloads: list[list[bytes]],
             known: dict[int, float]) -> tuple[int, int | None, dict[int, float]]:
    """(largest N measured under 20 ms, smallest N measured over it or None, the
    measurements): doubling from the table's last row, then bisecting to ~5 %."""
    seen = dict(known)

    def median(n: int) -> float:
        if n not in seen:
            seen[n] = measure_tick(codec, n, ticks, payloads)["total"]
        return seen[n]

    good = max((n for n, us in seen.items() if us < BUDGET_US), default=1)
    bad = min((n for n, us in seen.items() if us >= BUDGET_US), default=None)
    while bad is None and good < MAX_SEARCH_N:
        # Jump by the measured per-leg cost when it is far off, else double.
        per_leg = median(good) / good
        guess = int(BUDGET_US / per_leg)
        n = min(MAX_SEARCH_N, max(good * 2, guess) if guess > 4 * good else good * 2)
        if median(n) < BUDGET_US:
            good = n
        else:
            bad = n
    while bad is not None and bad - good > max(1, good // (10 if QUICK else 20)):
        mid = (good + bad) // 2
        if median(mid) < BUDGET_US:
            good = mid
        else:
            bad = mid
    return good, bad, seen


def main() -> None:
    ticks = int(sys.argv[1]) if len(sys.argv) > 1 else (10 if QUICK else 40)
    t_start = time.perf_counter()
    mix = arithmetic()
    codecs = ["PCMU"] + (["opus"] if opus.available() else [])
    if not opus.available():
        print(f"Opus legs: skipped ({opus.INSTALL_HINT})")
    payloads = {c: peer_payloads(c) for c in codecs}
    medians = tick_table(codecs, ticks, payloads)
    print("   receive: one reactor iteration reading the N legs' datagrams (parse, stats, "
          "jitter buffer put);\n   tick: Mixer.tick() (decode, resample, mix, local devices, "
          "resample, encode, send);\n   max: the slowest timed tick; rx/tx %: packets "
          "received/sent per leg per tick.")
    for codec in codecs:
        print(components(codec))
    print(f"   pure mix share of the tick at N={COUNTS[-1]}: "
          + ", ".join(f"{c} {mix[COUNTS[-1]] / medians[c][COUNTS[-1]] * 100:.1f} %"
                      for c in codecs))

    cap_ticks = max(6, ticks * 2 // 5)
    print(f"\n3. largest conference one core runs in real time (median tick < 20 ms, "
          f"{cap_ticks} ticks per probe)")
    for codec in codecs:
        good, bad, seen = capacity(codec, cap_ticks, payloads[codec], medians[codec])
        probes = ", ".join(f"{n}:{seen[n] / 1000:.1f}ms" for n in sorted(seen)
                           if n not in COUNTS)
        limit = f"N={bad} took {seen[bad] / 1000:.1f} ms" if bad is not None \
            else f"search stopped at N={MAX_SEARCH_N}"
        print(f"   {codec:<6} N = {good} legs ({seen[good] / 1000:.1f} ms per tick; "
              f"{limit})\n          probes: {probes or '-'}")
        RESULTS.setdefault(codec, {})["max_legs_per_core"] = str(good)
    print(f"\n({time.perf_counter() - t_start:.1f} s; one process, one core: in a phone the "
          "reactor also runs SIP and the devices, so leave headroom)")
    for key, figures in RESULTS.items():
        label = "codec=" + key if key != "mix" else "part=mix_n_minus_1"
        print(f"RESULT bench=mixer {label} " + " ".join(f"{k}={v}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
