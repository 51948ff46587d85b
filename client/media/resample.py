"""Sample-rate conversion between the rates our codecs and devices use (8/16/48 kHz).

Method: rational polyphase FIR. For dst/src = L/M (reduced), the signal is conceptually
zero-stuffed by L, low-pass filtered at the lower of the two Nyquist frequencies and
decimated by M; the polyphase form computes only the outputs that survive decimation,
each as one dot product of K input samples with one of the L filter phases.

Filter: windowed sinc, ZERO_CROSSINGS zero crossings each side of the centre, Kaiser
window (beta KAISER_BETA), cutoff at ROLLOFF x the lower Nyquist frequency.

Measured quality (tests/client/test_resample.py checks these bounds):
- passband: within 0.1 dB up to 0.85 x the lower Nyquist (3.4 kHz for 8 kHz), so the
  telephone band 300-3400 Hz passes unchanged;
- stopband: aliases/images from 1.05 x the lower Nyquist up (4.2 kHz for 8 kHz) are
  down more than 80 dB; the transition 3.4-4.2 kHz folds partly (4.1 kHz: -55 dB), which
  lands at 3.9-4 kHz where speech carries little energy;
- the -6 dB point is at ROLLOFF x the lower Nyquist (3.72 kHz for 8 kHz);
- group delay: ZERO_CROSSINGS samples at the lower rate (3 ms at 8 kHz);
  `resample()` removes it, `Resampler` (the streaming form for 20 ms frames) keeps it,
  as any causal filter must.
Cost per output sample: about 2*ZERO_CROSSINGS*max(L, M)/L multiply-adds, i.e. ~48 for
8k->48k and ~290 for 48k->8k, done as one numpy einsum per frame.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

ZERO_CROSSINGS = 24
KAISER_BETA = 8.0  # ~80 dB sidelobe suppression of the window
ROLLOFF = 0.93  # cutoff as a fraction of the lower Nyquist: leaves room for the transition


def design_filter(up: int, down: int) -> np.ndarray:
    """Prototype low-pass at the up-sampled rate, scaled by `up` to undo zero-stuffing."""
    factor = max(up, down)
    n = 2 * ZERO_CROSSINGS * factor + 1
    fc = ROLLOFF * 0.5 / factor  # cycles per up-sampled sample
    t = np.arange(n) - (n - 1) / 2
    h = 2 * fc * np.sinc(2 * fc * t) * np.kaiser(n, KAISER_BETA)
    return h * up / h.sum()


class Resampler:
    """Streaming converter: feed chunks (e.g. 20 ms frames) with `process`; the output of
    consecutive calls concatenates seamlessly (filter state is carried over).

    int16 input gives int16 output (rounded, clipped); float input gives float64.
    """

    def __init__(self, src_rate: int, dst_rate: int) -> None:
        if src_rate <= 0 or dst_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {src_rate} -> {dst_rate}")
        g = math.gcd(src_rate, dst_rate)
        self.src_rate = src_rate
        self.dst_rate = dst_rate
        self.up = dst_rate // g
        self.down = src_rate // g
        h = design_filter(self.up, self.down)
        self.taps = -(-len(h) // self.up)  # input samples per output sample (K)
        padded = np.zeros(self.taps * self.up)
        padded[: len(h)] = h
        # phases[p, k] = h[p + k*up]; reversed along k so a forward window of input
        # (oldest first) lines up with it in one dot product.
        self._phases = padded.reshape(self.taps, self.up).T[:, ::-1].copy()
        # Output delay in output samples (filter centre), for callers that align streams.
        self.delay = (len(h) - 1) / 2 / self.down
        self.reset()

    def reset(self) -> None:
        self._hist = np.zeros(self.taps - 1)
        self._in_pos = 0  # global index of the next input sample
        self._out_pos = 0  # global index of the next output sample

    def process(self, x: np.ndarray) -> np.ndarray:
        arr = np.asarray(x)
        is_int = arr.dtype == np.int16
        if arr.ndim != 1:
            raise ValueError("resampler takes mono 1-D arrays")
        if self.up == self.down:
            return arr.copy()
        buf = np.concatenate([self._hist, arr.astype(np.float64)])
        end = self._in_pos + len(arr)
        # Outputs m whose newest contributing input floor(m*down/up) is already here.
        m_end = -(-end * self.up // self.down)
        m = np.arange(self._out_pos, m_end, dtype=np.int64)
        u = m * self.down
        j = u // self.up  # newest input index (global)
        p = u % self.up
        start = j - self._in_pos  # index into buf of the oldest tap's sample
        windows = sliding_window_view(buf, self.taps)
        y = np.einsum("mk,mk->m", windows[start], self._phases[p])
        self._hist = buf[len(buf) - (self.taps - 1) :]
        self._in_pos = end
        self._out_pos = int(m_end)
        if is_int:
            return np.clip(np.round(y), -32768, 32767).astype(np.int16)
        return y


def resample(x: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """One-shot conversion with the filter delay removed: output length is
    ceil(len(x) * dst/src) and sample i lines up with input time i/dst_rate."""
    r = Resampler(src_rate, dst_rate)
    arr = np.asarray(x)
    if r.up == r.down:
        return arr.copy()
    n_out = -(-len(arr) * r.up // r.down)
    delay = int(round(r.delay))
    # Flush with enough zeros to push the last real sample through the filter centre.
    tail = np.zeros(int(math.ceil((delay + 1) * r.down / r.up)) + r.taps, dtype=arr.dtype)
    y = np.concatenate([r.process(arr), r.process(tail)])
    return y[delay : delay + n_out]
