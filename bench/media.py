"""Media building blocks: microseconds per 20 ms frame. Prints; asserts nothing.

    .venv/bin/python bench/media.py [iterations]     (SIPCALLING_BENCH_QUICK=1: a short run)

Sections:
1. the building blocks (codec, RTP, jitter buffer, resampler) per 20 ms frame;
2. the whole per-packet receive path (parse -> receiver stats -> jitter buffer put/get
   -> decode) and send path (encode -> packetise -> serialise), and from them how many
   streams one core could carry; then a measured run of N RtpSession pairs on loopback,
   all driven by one 20 ms LoopingCall, reporting the CPU load and delivery;
3. speech quality: PESQ (pip package `pesq`; a delay-aligned SNR if it is missing) of
   espeak-ng speech (Debian espeak-ng) through codec + jitter buffer + concealment,
   clean and with 5 % random loss (a seeded, so repeatable, loss pattern).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from client.media import opus  # noqa: E402
from client.media.codecs import get_codec, get_decoder, get_encoder  # noqa: E402
from client.media.jitterbuffer import Frame, JitterBuffer, Lost  # noqa: E402
from client.media.resample import Resampler, resample  # noqa: E402
from client.media.rtp import RtpPacket  # noqa: E402
from client.media.stats import ReceiverStats  # noqa: E402

DEFAULT_ITERATIONS = 2000
QUICK = os.environ.get("SIPCALLING_BENCH_QUICK") == "1"
FRAME_S = 0.02
# Machine-readable figures, printed as RESULT lines at the end (bench/run_all.py collects
# lines of that form): {codec: {key: value}}.
RESULTS: dict[str, dict[str, str]] = {}


def tone(rate: int, frames: int) -> np.ndarray:
    n = rate * frames // 50
    return np.round(8000 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)).astype(np.int16)


def measure(name: str, iterations: int, step: Callable[[int], object],
            unit: str = "frame") -> float:
    step(0)  # warm up (table builds, first allocation)
    t0 = time.perf_counter()
    for i in range(iterations):
        step(i)
    us = (time.perf_counter() - t0) / iterations * 1e6
    print(f"{name:<34} {us:9.1f} us/{unit}  ({us / (FRAME_S * 1e6) * 100:6.3f} % of real time)")
    return us


def main() -> None:
    iterations = int(sys.argv[1]) if len(sys.argv) > 1 else (200 if QUICK else DEFAULT_ITERATIONS)
    print(f"{iterations} iterations per row, 20 ms frames")

    pcm8 = tone(8000, 50)
    frames8 = [pcm8[i * 160 : (i + 1) * 160] for i in range(50)]
    enc, dec = get_encoder("PCMU"), get_decoder("PCMU")
    measure("PCMU encode+decode (160 samples)", iterations,
            lambda i: dec.decode(enc.encode(frames8[i % 50])))

    if opus.available():
        pcm48 = tone(48000, 50)
        frames48 = [pcm48[i * 960 : (i + 1) * 960] for i in range(50)]
        oenc, odec = get_encoder("opus"), get_decoder("opus")
        measure("Opus encode+decode (960 samples)", min(iterations, 1000),
                lambda i: odec.decode(oenc.encode(frames48[i % 50])))
    else:
        print(f"Opus: skipped ({opus.INSTALL_HINT})")

    wire = RtpPacket(0, 1, 160, 0x1234, bytes(160), csrcs=(1,)).serialize()
    measure("RTP parse+serialise (172 bytes)", iterations,
            lambda i: RtpPacket.parse(wire).serialize())

    jb = JitterBuffer(8000, 160)
    payload = bytes(160)

    def jb_step(i: int) -> None:
        jb.put(RtpPacket(0, i & 0xFFFF, (i * 160) & 0xFFFFFFFF, 1, payload), i * FRAME_S)
        jb.get(i * FRAME_S)

    measure("jitter buffer put+get", iterations, jb_step)

    up, down = Resampler(8000, 48000), Resampler(48000, 8000)
    measure("resample 8k->48k->8k", iterations,
            lambda i: down.process(up.process(frames8[i % 50])))

    costs = {}
    for codec in ("PCMU", "opus"):
        if codec == "opus" and not opus.available():
            continue
        n = iterations if codec == "PCMU" else min(iterations, 1000)
        costs[codec] = stream_paths(codec, n)
    print_capacity(costs)
    for codec in costs:
        measured_sessions(codec)
    speech_quality()
    for codec, figures in RESULTS.items():
        print(f"RESULT bench=media codec={codec} "
              + " ".join(f"{k}={v}" for k, v in figures.items()))


# ---------------------------------------------------------------------- 2. per stream

def _tone_frames(codec: str) -> list[np.ndarray]:
    info = get_codec(codec)
    pcm = tone(info.clock_rate, 50)  # both codecs here sample at their RTP clock rate
    n = info.frame_samples
    return [pcm[i * n : (i + 1) * n] for i in range(50)]


def stream_paths(codec: str, iterations: int) -> tuple[float, float]:
    """(send, receive) microseconds per packet, as RtpSession does them minus the
    sockets: the receive path is what _handle_rtp and _receive_tick do per packet."""
    info = get_codec(codec)
    frames = _tone_frames(codec)
    enc, dec = get_encoder(codec), get_decoder(codec)
    payloads = [enc.encode(f) for f in frames]
    spf = info.frame_samples
    wires = [RtpPacket(info.payload_type, i & 0xFFFF, (i * spf) & 0xFFFFFFFF, 0x1234,
                       payloads[i % 50]).serialize() for i in range(iterations + 1)]
    rx = ReceiverStats(0x1234, info.clock_rate)
    jb = JitterBuffer(info.clock_rate, spf)

    def receive(i: int) -> None:
        now = i * FRAME_S
        packet = RtpPacket.parse(wires[i])
        rx.update(packet.sequence, packet.timestamp, now)
        jb.put(packet, now)
        item = jb.get(now)
        if isinstance(item, Frame):
            dec.decode(item.payload)
        elif isinstance(item, Lost):
            dec.conceal(item.next_payload)

    senc = get_encoder(codec)

    def send(i: int) -> None:
        payload = senc.encode(frames[i % 50])
        RtpPacket(info.payload_type, i & 0xFFFF, (i * spf) & 0xFFFFFFFF, 0x1234,
                  payload).serialize()

    name = codec if codec == "PCMU" else "Opus"
    recv_us = measure(f"{name} receive path per packet", iterations, receive, "packet")
    send_us = measure(f"{name} send path per packet", iterations, send, "packet")
    RESULTS.setdefault(codec, {}).update(recv_us=f"{recv_us:.1f}", send_us=f"{send_us:.1f}")
    return send_us, recv_us


def print_capacity(costs: dict[str, tuple[float, float]]) -> None:
    # One stream = one call leg: a session sends one packet and receives one per 20 ms.
    for codec, (send_us, recv_us) in costs.items():
        per = send_us + recv_us
        print(f"{codec:<6} derived: {per:7.1f} us per stream per 20 ms -> "
              f"~{int(FRAME_S * 1e6 / per)} streams per core (codec+RTP+JB only, "
              "no sockets, no reactor)")


SESSION_COUNTS = {"PCMU": (20, 60, 120), "opus": (10, 20, 40)}


def measured_sessions(codec: str, seconds: float = 0.5 if QUICK else 1.5) -> None:
    """N RtpSessions on loopback (N/2 pairs, 16 kHz tone in, 16 kHz null sink out, as
    with --play/--record), with one reactor LoopingCall advancing the sessions' shared
    task.Clock every 20 ms: CPU used by this process over wall time, packets
    delivered, how often the 20 ms driver ran late (a saturated core), and the
    sessions one core would carry at that per-session cost. This includes what the
    derived figure leaves out: sockets, the reactor, device resampling, RTCP."""
    from twisted.internet import reactor, task

    from client.media.devices import NullSink, ToneSource
    from client.media.session import RtpSession
    from sipcore.offer_answer import OPUS, PCMU

    sdp_codec = PCMU if codec == "PCMU" else OPUS
    for count in SESSION_COUNTS[codec][:1] if QUICK else SESSION_COUNTS[codec]:
        pairs = count // 2
        clock = task.Clock()
        sessions: list[Any] = []
        for k in range(pairs):
            pair = [RtpSession(reactor, "127.0.0.1", ToneSource(440, 16000), NullSink(16000),
                               clock=clock, rng=random.Random(2 * k + j)) for j in (0, 1)]
            for s in pair:
                s.bind()
            a, b = pair
            a.start(a.local_port, "127.0.0.1", b.local_port, sdp_codec, "sendrecv")
            b.start(b.local_port, "127.0.0.1", a.local_port, sdp_codec, "sendrecv")
            sessions += pair
        late = [0, 0]  # late ticks, ticks

        def tick(count: int, late: list[int] = late, clock: Any = clock) -> None:
            late[0] += count - 1  # LoopingCall skipped count-1 periods: we fell behind
            late[1] += count
            clock.advance(FRAME_S * count)

        driver = task.LoopingCall.withCount(tick)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        driver.start(FRAME_S, now=False)
        # iterate() rather than run(): a Twisted reactor cannot be restarted, and each
        # row of this bench needs its own run.
        while time.perf_counter() - wall0 < seconds:
            reactor.iterate(0.002)
        driver.stop()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        got = sum(s.stats()["packets_received"] for s in sessions)
        for s in sessions:
            s.stop()
        for _ in range(5):
            reactor.iterate(0)
        delivered = got / max(1, late[1] * len(sessions)) * 100
        load = cpu / wall
        print(f"{codec:<6} measured: {len(sessions):4d} sessions {seconds:.1f} s: CPU "
              f"{load * 100:5.1f} % of one core, {delivered:5.1f} % of packets delivered, "
              f"{late[0]:3d} late of {late[1]} ticks -> ~{int(len(sessions) / load)} "
              "sessions per core")
        if late[0] == 0:  # the last figure measured while the core still kept pace
            RESULTS.setdefault(codec, {})["sessions_per_core"] = str(int(len(sessions) / load))


# ---------------------------------------------------------------------- 3. speech

SPEECH_TEXT = (
    "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue "
    "background. It is easy to tell the depth of a well. These days a chicken leg is "
    "a rare dish. Rice is often served in round bowls."
)
LOSS = 0.05
LOSS_SEED = 5


def _espeak(out: Path) -> tuple[np.ndarray, int] | None:
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    subprocess.run([exe, "-v", "en", "-s", "150", "-w", str(out), SPEECH_TEXT], check=True,
                   capture_output=True, timeout=60)
    with wave.open(str(out), "rb") as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return pcm, rate


def codec_path(codec: str, speech: np.ndarray, loss: float) -> np.ndarray:
    """`speech` (at the codec's sampling rate) through encoder -> packets -> seeded
    loss -> jitter buffer -> decoder or concealment, one 20 ms tick per packet, as
    RtpSession's receive tick does it. Returns what the listener would hear."""
    info = get_codec(codec)
    spf = info.frame_samples
    enc, dec = get_encoder(codec), get_decoder(codec)
    jb = JitterBuffer(info.clock_rate, spf)
    rng = random.Random(LOSS_SEED)
    frames = len(speech) // spf
    out: list[np.ndarray] = []
    silence = np.zeros(spf, dtype=np.int16)
    # Extra ticks at the end drain the buffer's playout delay.
    for i in range(frames + 25):
        now = i * FRAME_S
        if i < frames:
            payload = enc.encode(speech[i * spf : (i + 1) * spf])
            if rng.random() >= loss:
                jb.put(RtpPacket(info.payload_type, i & 0xFFFF, (i * spf) & 0xFFFFFFFF, 1,
                                 payload, marker=i == 0), now + 0.001)
        item = jb.get(now + 0.002)
        if isinstance(item, Frame):
            out.append(dec.decode(item.payload))
        elif isinstance(item, Lost):
            out.append(dec.conceal(item.next_payload))
        else:
            out.append(silence)
    return np.concatenate(out)


def _aligned_snr(ref: np.ndarray, deg: np.ndarray) -> float:
    """SNR in dB after removing the path's delay (found by cross-correlation)."""
    r, d = ref.astype(np.float64), deg.astype(np.float64)
    n = 1 << int(np.ceil(np.log2(len(r) + len(d))))
    corr = np.fft.irfft(np.fft.rfft(d, n) * np.conj(np.fft.rfft(r, n)), n)
    lag = int(np.argmax(corr[: len(d)]))
    d = d[lag : lag + len(r)]
    r = r[: len(d)]
    noise = np.sum((r - d) ** 2)
    return float(10 * np.log10(np.sum(r**2) / noise)) if noise > 0 else float("inf")


def _score(rate: int, ref: np.ndarray, deg: np.ndarray, key: str | None = None) -> str:
    """PESQ (ITU-T P.862, narrowband at 8 kHz, P.862.2 wideband at 16 kHz) and the
    aligned SNR; the SNR alone when the pesq package is missing. `key` ("codec:name")
    also files the main figure for the RESULT lines."""
    snr = _aligned_snr(ref, deg)
    try:
        from pesq import pesq
    except ImportError:
        value, text = None, f"SNR {snr:5.1f} dB (pip install pesq for PESQ)"
    else:
        mode = "wb" if rate == 16000 else "nb"
        value = pesq(rate, ref.astype(np.float64), deg.astype(np.float64), mode)
        text = f"PESQ {mode} MOS-LQO {value:4.2f}   SNR {snr:5.1f} dB"
    if key is not None:
        codec, name = key.split(":")
        RESULTS.setdefault(codec, {})[name] = f"{value:.2f}" if value is not None else \
            f"snr{snr:.1f}"
    return text


def speech_quality() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        got = _espeak(Path(tmp) / "speech.wav")
    if got is None:
        print("speech quality: skipped (espeak-ng missing: Debian package espeak-ng)")
        return
    pcm, rate = got
    speech16 = resample(pcm, rate, 16000)
    speech8 = resample(speech16, 16000, 8000)
    print(f"speech quality: espeak-ng, {len(speech16) / 16000:.1f} s; loss pattern seeded "
          f"({LOSS:.0%} random, seed {LOSS_SEED})")
    for loss in (0.0, LOSS):
        label, key = ("clean ", "pesq_clean") if loss == 0 else (f"{loss:.0%} loss", "pesq_loss5")
        deg = codec_path("PCMU", speech8, loss)
        print(f"  PCMU  {label}  8 kHz: {_score(8000, speech8, deg, f'PCMU:{key}')}")
        if opus.available():
            deg48 = codec_path("opus", resample(speech16, 16000, 48000), loss)
            deg16 = resample(deg48, 48000, 16000)
            print(f"  Opus  {label} 16 kHz: {_score(16000, speech16, deg16, f'opus:{key}')}")
            # The same Opus output scored narrowband, to compare like with like to PCMU.
            deg8 = resample(deg16, 16000, 8000)
            print(f"  Opus  {label}  8 kHz: {_score(8000, speech8, deg8)}")


if __name__ == "__main__":
    main()
