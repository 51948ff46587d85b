"""Real audio end to end: two `sipclient` processes through a real `twistd sipproxy`.

Alice `--play`s a 440 Hz tone, Bob `--record`s what he hears; after about two seconds
of connected call Alice hangs up and Bob's recording must be that tone: its spectral
peak at 440 +- 5 Hz, loud enough not to be silence and with most of its energy near
440 Hz. Once on a clean loopback path, once through tests/interop/rtp_relay.py, which
sits in the media path (via SDP rewriting in Alice's outbound hop) and drops 5 % of
Bob's packets, delays them by 0-40 ms and now and then swaps them, so the jitter buffer
and loss concealment really work. For PCMU and for Opus (both ends ask for it).
"""

from __future__ import annotations

import re
import time
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from client.media import opus
from tests.interop.rtp_relay import Impairment, RtpRelay, SdpRewritingHop
from tests.interop.sipclient_harness import SipClient

TONE_HZ = 440.0
TONE_RATE = 16000
TONE_AMPLITUDE = 0.5  # of full scale: well above the codecs' noise, far from clipping
TALK_S = 2.0
# Bob's first frames are the jitter buffer filling (silence); leave them out of the
# analysis so "most energy near 440 Hz" is about the audio, not the start-up.
SKIP_S = 0.3
LOSSY = Impairment(loss=0.05, jitter=0.040, reorder=0.02, seed=20240601)

CODECS = [
    "pcmu",
    pytest.param("opus", marks=pytest.mark.skipif(
        not opus.available(), reason=f"libopus missing: {opus.INSTALL_HINT}")),
]


def write_tone(path: Path, seconds: int = 1) -> None:
    # A whole number of seconds at 440 Hz is a whole number of cycles, so the file
    # loops (WavFileSource repeats it) without a click that would smear the spectrum.
    n = TONE_RATE * seconds
    pcm = np.round(TONE_AMPLITUDE * 32767 * np.sin(2 * np.pi * TONE_HZ * np.arange(n)
                                                     / TONE_RATE)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(TONE_RATE)
        w.writeframes(pcm.tobytes())


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """16-bit PCM as float samples, channels averaged (baresip dumps Opus in stereo)."""
    with wave.open(str(path), "rb") as w:
        assert w.getsampwidth() == 2, f"{path}: not 16-bit PCM"
        channels, rate = w.getnchannels(), w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
    return pcm.reshape(-1, channels).mean(axis=1), rate


def analyse(pcm: np.ndarray, rate: int) -> tuple[float, float, float]:
    """(peak frequency in Hz, RMS, fraction of the power within 440 +- 20 Hz)."""
    x = pcm[int(SKIP_S * rate):]
    assert len(x) >= rate // 2, f"only {len(x) / rate:.2f} s of audio recorded"
    # Hann window: the recording starts and ends mid-cycle; without it the leakage
    # could out-weigh the tone after heavy concealment.
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    spectrum[freqs < 50] = 0  # DC and hum are not the question
    peak = float(freqs[int(np.argmax(spectrum))])
    near = spectrum[np.abs(freqs - TONE_HZ) <= 20].sum()
    return peak, float(np.sqrt(np.mean(x**2))), float(near / spectrum.sum())


def media_stats(client: SipClient) -> dict[str, str]:
    client.send("status")
    line = client.expect(r"status media 1 ", timeout=5)
    return dict(re.findall(r"(\w+)=(\S+)", line))


@pytest.fixture
def proxy(start_server: Callable[..., Any]) -> Any:
    return start_server("sipproxy", "--domain", "a.lab", "--location", "memory:")


@pytest.fixture
def clients(tmp_path: Path) -> Iterator[Callable[..., SipClient]]:
    started: list[SipClient] = []

    def start(user: str, proxy_port: int, *args: str) -> SipClient:
        c = SipClient(tmp_path, user, "--proxy", f"127.0.0.1:{proxy_port}", *args)
        started.append(c)
        c.expect(rf"registered sip:{user}@a\.lab expires=\d+$")
        return c

    yield start
    for c in started:
        c.stop()


def talk(alice: SipClient, bob: SipClient) -> dict[str, str]:
    """Alice calls Bob, they talk TALK_S seconds, Alice hangs up; Bob's media counters
    (read just before the hang-up) are returned."""
    alice.send("call bob")
    alice.expect(r"call 1 connected$")
    bob.expect(r"call 1 connected$")
    time.sleep(TALK_S)
    stats = media_stats(bob)
    alice.send("hangup")
    alice.expect(r"call 1 ended hangup$")
    bob.expect(r"call 1 ended bye$")
    # The WAV header gets its sizes when the sink is closed: at the latest on exit.
    assert bob.quit() == 0
    alice.quit()
    return stats


def check_tone(path: Path, min_fraction: float) -> None:
    pcm, rate = read_wav(path)
    peak, rms, fraction = analyse(pcm, rate)
    assert abs(peak - TONE_HZ) <= 5, f"spectral peak at {peak:.1f} Hz"
    # The tone is sent at 0.5 full scale (RMS ~11600); silence or noise is far below.
    assert rms > 2000, f"recording too quiet: RMS {rms:.0f}"
    assert fraction >= min_fraction, f"only {fraction:.0%} of the power near 440 Hz"


@pytest.mark.parametrize("codec", CODECS)
def test_tone_arrives_clean(codec: str, proxy: Any, clients: Callable[..., SipClient],
                            tmp_path: Path) -> None:
    tone, rec = tmp_path / "tone.wav", tmp_path / "bob.wav"
    write_tone(tone)
    bob = clients("bob", proxy.port, "--auto-answer", "--record", str(rec), "--codec", codec)
    alice = clients("alice", proxy.port, "--play", str(tone), "--codec", codec)
    stats = talk(alice, bob)
    assert stats["codec"].lower() == codec
    assert int(stats["packets_received"]) >= 50
    check_tone(rec, min_fraction=0.9)


@pytest.mark.parametrize("codec", CODECS)
def test_tone_survives_loss_jitter_reordering(
    codec: str, proxy: Any, clients: Callable[..., SipClient], tmp_path: Path
) -> None:
    tone, rec = tmp_path / "tone.wav", tmp_path / "bob.wav"
    write_tone(tone)
    relay = RtpRelay(to_b=LOSSY)
    hop = SdpRewritingHop(("127.0.0.1", proxy.port), relay)
    try:
        bob = clients("bob", proxy.port, "--auto-answer", "--record", str(rec),
                      "--codec", codec)
        alice = clients("alice", hop.port, "--play", str(tone), "--codec", codec)
        stats = talk(alice, bob)
    finally:
        hop.close()
        relay.close()
    assert not hop.errors, hop.errors
    assert hop.rewritten >= 2  # the offer and the answer
    to_bob = relay.stats["b"]
    # The relay really was the path: it carried Bob's audio and impaired it ...
    assert to_bob.forwarded >= 50 and to_bob.dropped >= 1, to_bob
    # ... and Bob saw the impairment, and received from the relay, not from Alice.
    assert stats["last_source"] == f"127.0.0.1:{relay.port('b')}"
    assert int(stats["packets_lost"]) >= 1
    assert stats["codec"].lower() == codec
    check_tone(rec, min_fraction=0.8)
