"""Resampler: frequency preservation, passband, alias rejection, streaming."""

from __future__ import annotations

import numpy as np
import pytest

from client.media.resample import Resampler, resample

PAIRS = [(8000, 16000), (16000, 8000), (8000, 48000), (48000, 8000), (16000, 48000), (48000, 16000)]


def tone(freq, rate, seconds=1.0, amp=10000.0):
    return amp * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)


def peak(x, rate):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.argmax(spec) * rate / len(x), rate / len(x)


def gain_db(y, x):
    trim = len(y) // 8  # ignore the edges, where the filter sees the zero padding
    return 20 * np.log10(np.std(y[trim:-trim]) / np.std(x))


@pytest.mark.parametrize(("src", "dst"), PAIRS)
@pytest.mark.parametrize("freq", [440.0, 1000.0, 3000.0])
def test_tone_frequency_preserved(src, dst, freq):
    y = resample(tone(freq, src), src, dst)
    assert len(y) == dst
    f, bin_hz = peak(y, dst)
    assert abs(f - freq) <= bin_hz
    assert abs(gain_db(y, tone(freq, src))) < 0.1


@pytest.mark.parametrize(("src", "dst"), PAIRS)
def test_passband_edge(src, dst):
    f = 0.85 * min(src, dst) / 2  # 3.4 kHz for the 8 kHz pairs
    assert gain_db(resample(tone(f, src), src, dst), tone(f, src)) > -0.1


@pytest.mark.parametrize(("src", "dst", "freq"), [(48000, 8000, 5000.0), (48000, 8000, 4200.0),
                                                  (16000, 8000, 6000.0), (48000, 16000, 9000.0)])
def test_alias_rejected(src, dst, freq):
    assert gain_db(resample(tone(freq, src), src, dst), tone(freq, src)) < -80


def test_streaming_matches_one_shot_and_is_int16():
    x = np.round(tone(440, 8000, 0.2)).astype(np.int16)
    r = Resampler(8000, 48000)
    frames = [r.process(x[i : i + 160]) for i in range(0, len(x), 160)]
    assert all(len(f) == 960 and f.dtype == np.int16 for f in frames)
    whole = Resampler(8000, 48000).process(x)
    assert np.array_equal(np.concatenate(frames), whole)
    back = Resampler(48000, 8000)
    assert all(len(back.process(f)) == 160 for f in frames)


def test_delay_removed_in_one_shot():
    x = tone(440, 8000, 0.1)
    y = resample(x, 8000, 48000)
    assert np.max(np.abs(y[600:-600:6] - x[100:-100])) < 0.01 * 10000


def test_same_rate_and_bad_rate():
    x = np.arange(10, dtype=np.int16)
    assert np.array_equal(resample(x, 8000, 8000), x)
    with pytest.raises(ValueError):
        Resampler(0, 8000)
