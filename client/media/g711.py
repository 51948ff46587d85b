"""G.711 PCMU (mu-law) and PCMA (A-law) at 8 kHz, vectorised with numpy lookup tables.

Both laws are computed once, for every 16-bit input and every 8-bit code, with the
segment/mantissa construction of ITU-T G.711; encoding a frame is then one fancy-index
into a 64 KiB table and decoding one into a 256-entry table, which is far cheaper per
sample than evaluating the law.

Arrays in and out: `encode(int16 array) -> bytes`, `decode(bytes) -> int16 array`.
The decoders also do packet-loss concealment for a codec that has none: repeat the last
good frame with a fade (see `G711Decoder.conceal`).
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 8000
FRAME_SAMPLES = 160  # 20 ms

ULAW_BIAS = 0x84  # 132: shifts the segment boundaries onto powers of two
ULAW_CLIP = 32635  # largest magnitude that still fits after adding the bias
ALAW_XOR = 0x55  # even-bit inversion of A-law codes (G.711 §A.2)

# Concealment: each successive lost frame is attenuated by this factor, and after
# PLC_MAX_FRAMES consecutive losses the output is silence (repeating a 20 ms frame for
# longer sounds like a buzz rather than speech).
PLC_FADE_PER_FRAME = 0.5
PLC_MAX_FRAMES = 5


def _ulaw_encode_all() -> np.ndarray:
    x = np.arange(-32768, 32768, dtype=np.int32)
    sign = np.where(x < 0, 0x80, 0)
    mag = np.minimum(np.abs(x), ULAW_CLIP) + ULAW_BIAS
    # Segment = position of the highest set bit above bit 7 (0..7).
    exponent = np.floor(np.log2(mag >> 7 | 1)).astype(np.int32)
    mantissa = (mag >> (exponent + 3)) & 0x0F
    code = ~(sign | (exponent << 4) | mantissa) & 0xFF
    return code.astype(np.uint8)


def _ulaw_decode_all() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    mag = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS
    return np.where(u & 0x80, -mag, mag).astype(np.int16)


def _alaw_encode_all() -> np.ndarray:
    x = np.arange(-32768, 32768, dtype=np.int32) >> 3  # A-law works on 13 bits
    mask = np.where(x >= 0, 0xD5, 0x55)  # sign bit plus the even-bit inversion
    mag = np.where(x >= 0, x, -x - 1)
    # Segment ends for the 13-bit magnitude: 0x1F, 0x3F, ..., 0xFFF.
    seg = np.searchsorted(np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF]), mag)
    shift = np.where(seg < 2, 1, seg)
    aval = np.where(seg >= 8, 0x7F, (np.minimum(seg, 7) << 4) | ((mag >> shift) & 0x0F))
    return (aval ^ mask).astype(np.uint8)


def _alaw_decode_all() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ ALAW_XOR
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    t = np.where(seg == 0, t + 8, t + 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(a & 0x80, t, -t).astype(np.int16)


ULAW_ENCODE = _ulaw_encode_all()
ULAW_DECODE = _ulaw_decode_all()
ALAW_ENCODE = _alaw_encode_all()
ALAW_DECODE = _alaw_decode_all()


def _as_index(pcm: np.ndarray) -> np.ndarray:
    arr = np.asarray(pcm)
    if arr.dtype != np.int16:
        raise ValueError(f"G.711 encode needs int16 samples, got {arr.dtype}")
    # int16 -> uint16 view, then +32768 (as the XOR of the sign bit) indexes the table.
    return arr.view(np.uint16) ^ 0x8000


def ulaw_encode(pcm: np.ndarray) -> bytes:
    return ULAW_ENCODE[_as_index(pcm)].tobytes()


def ulaw_decode(data: bytes) -> np.ndarray:
    return ULAW_DECODE[np.frombuffer(data, dtype=np.uint8)]


def alaw_encode(pcm: np.ndarray) -> bytes:
    return ALAW_ENCODE[_as_index(pcm)].tobytes()


def alaw_decode(data: bytes) -> np.ndarray:
    return ALAW_DECODE[np.frombuffer(data, dtype=np.uint8)]


class G711Encoder:
    def __init__(self, law: str) -> None:
        if law not in ("PCMU", "PCMA"):
            raise ValueError(f"unknown G.711 law {law!r}")
        self.law = law
        self._table = ULAW_ENCODE if law == "PCMU" else ALAW_ENCODE
        self.frame_samples = FRAME_SAMPLES
        self.sample_rate = SAMPLE_RATE

    def encode(self, pcm: np.ndarray) -> bytes:
        return self._table[_as_index(pcm)].tobytes()


class G711Decoder:
    """Decoder with repeat-last-frame concealment.

    `conceal()` returns the last good frame scaled by a gain that ramps down linearly
    within the frame (so no step at the frame edge) from PLC_FADE_PER_FRAME**(k-1) to
    PLC_FADE_PER_FRAME**k for the k-th consecutive loss; silence after PLC_MAX_FRAMES.
    """

    def __init__(self, law: str) -> None:
        if law not in ("PCMU", "PCMA"):
            raise ValueError(f"unknown G.711 law {law!r}")
        self.law = law
        self._table = ULAW_DECODE if law == "PCMU" else ALAW_DECODE
        self.frame_samples = FRAME_SAMPLES
        self.sample_rate = SAMPLE_RATE
        self._last: np.ndarray | None = None
        self._losses = 0

    def decode(self, payload: bytes) -> np.ndarray:
        pcm = self._table[np.frombuffer(payload, dtype=np.uint8)]
        if len(pcm):
            self._last = pcm
        self._losses = 0
        return pcm

    def conceal(self, next_payload: bytes | None = None) -> np.ndarray:
        """One frame of concealment. `next_payload` is accepted for interface parity
        with Opus (which can use in-band FEC) and ignored: G.711 carries no redundancy."""
        n = self.frame_samples if self._last is None else len(self._last)
        self._losses += 1
        if self._last is None or self._losses > PLC_MAX_FRAMES:
            return np.zeros(n, dtype=np.int16)
        g0 = PLC_FADE_PER_FRAME ** (self._losses - 1)
        g1 = PLC_FADE_PER_FRAME**self._losses
        ramp = np.linspace(g0, g1, n, endpoint=False)
        return np.round(self._last * ramp).astype(np.int16)
