"""Opus wrapper: round trip of a tone, PLC and FEC."""

from __future__ import annotations

import numpy as np
import pytest

from client.media import opus
from client.media.codecs import get_decoder, get_encoder

pytestmark = pytest.mark.skipif(not opus.available(), reason=opus.INSTALL_HINT)

RATE = opus.SAMPLE_RATE
N = opus.FRAME_SAMPLES


def tone(freq: float, frames: int, amp: float = 10000) -> np.ndarray:
    t = np.arange(frames * N) / RATE
    return np.round(amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def peak_hz(x: np.ndarray) -> tuple[float, float]:
    spec = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(len(x))))
    k = int(np.argmax(spec))
    return k * RATE / len(x), RATE / len(x)


def encode_all(enc, pcm):
    return [enc.encode(pcm[i * N : (i + 1) * N]) for i in range(len(pcm) // N)]


def test_tone_round_trip():
    enc, dec = get_encoder("opus"), get_decoder("opus")
    assert enc.fec is True
    pcm = tone(440, 50)
    out = np.concatenate([dec.decode(p) for p in encode_all(enc, pcm)])
    assert out.dtype == np.int16 and len(out) == len(pcm)
    seg = out[10 * N : 10 * N + 9600]  # skip the codec's start-up; 0.2 s -> 5 Hz bins
    f, bin_hz = peak_hz(seg)
    assert abs(f - 440) <= bin_hz
    assert np.sqrt(np.mean(seg.astype(float) ** 2)) > 0.5 * 10000 / np.sqrt(2)


def test_plc_frame_size_and_continuity():
    enc, dec = opus.OpusEncoder(), opus.OpusDecoder()
    pkts = encode_all(enc, tone(440, 20))
    for p in pkts[:10]:
        dec.decode(p)
    concealed = dec.plc()
    assert concealed.shape == (N,) and concealed.dtype == np.int16
    assert np.abs(concealed).max() > 1000  # PLC extrapolates the tone, not silence
    assert dec.conceal(None).shape == (N,)


def test_fec_decode_recovers_lost_frame():
    enc, dec = opus.OpusEncoder(), opus.OpusDecoder()
    pkts = encode_all(enc, tone(440, 30))
    for p in pkts[:19]:
        dec.decode(p)
    # Packet 19 is lost; packet 20 carries its LBRR copy.
    recovered = dec.decode_fec(pkts[20])
    assert recovered.shape == (N,)
    f, bin_hz = peak_hz(np.concatenate([recovered, dec.decode(pkts[20])]))
    assert abs(f - 440) <= bin_hz
    assert dec.conceal(pkts[21]).shape == (N,)  # conceal() chooses FEC when given data


def test_encoder_rejects_wrong_frames():
    enc = opus.OpusEncoder()
    with pytest.raises(ValueError, match="960 samples"):
        enc.encode(np.zeros(160, dtype=np.int16))
    with pytest.raises(ValueError, match="int16"):
        enc.encode(np.zeros(N))


def test_corrupt_packet_raises_value_error():
    dec = opus.OpusDecoder()
    with pytest.raises(ValueError):
        dec.decode(b"")
    with pytest.raises(ValueError, match="libopus decode failed"):
        dec.decode(b"\xff\xff\xff")  # code 3 with an impossible frame count


def test_missing_library_message(monkeypatch):
    monkeypatch.setattr(opus, "_opuslib", None)
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("opuslib"):
            raise Exception("Could not find Opus library. Make sure it is installed.")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(opus.OpusUnavailableError, match="libopus0"):
        opus.OpusEncoder()
    assert opus.available() is False
