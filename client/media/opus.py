"""Opus (RFC 6716, RTP payload RFC 7587) over opuslib/libopus: 48 kHz, mono, 20 ms.

The encoder turns on in-band FEC (LBRR) so that packet n+1 carries a low-bitrate copy of
packet n; the decoder exposes the three ways to produce a frame:

- `decode(payload)`        normal decode,
- `decode_fec(next)`       rebuild a lost frame from the FEC data in the *following* packet,
- `conceal()`              libopus packet-loss concealment (no data at all).

`conceal(next_payload)` picks FEC when the next packet is at hand and PLC otherwise, the
same call the G.711 decoder answers, so the jitter buffer's consumer needs no codec branch.

opuslib is imported lazily: importing this module never fails; constructing an encoder or
decoder without libopus raises OpusUnavailableError naming the package to install.
"""

from __future__ import annotations

import ctypes
from types import ModuleType
from typing import Any

import numpy as np

SAMPLE_RATE = 48000
CHANNELS = 1
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000  # 960
DEFAULT_BITRATE = 32000  # wideband speech with headroom for FEC
DEFAULT_PACKET_LOSS_PERC = 10  # libopus only spends bits on FEC when told to expect loss
MAX_PACKET_BYTES = 1500  # an Opus packet larger than an Ethernet MTU is never produced
MAX_FRAME_SAMPLES = SAMPLE_RATE * 120 // 1000  # the longest Opus packet is 120 ms

INSTALL_HINT = (
    "Opus needs libopus and opuslib: install the Debian package libopus0 "
    "(apt-get install libopus0) and the Python package opuslib (pip install opuslib)"
)


class OpusUnavailableError(RuntimeError):
    """libopus or opuslib is missing."""


class OpusCodecError(ValueError):
    """libopus rejected a packet (corrupt data) or a call."""


_opuslib: ModuleType | None = None


def _load() -> ModuleType:
    global _opuslib
    if _opuslib is None:
        try:
            import opuslib  # deferred so this module imports without libopus
            import opuslib.api.ctl
            import opuslib.api.decoder
            import opuslib.api.encoder
        except Exception as exc:  # opuslib raises a bare Exception when libopus is absent
            raise OpusUnavailableError(f"{INSTALL_HINT} ({exc})") from exc
        _opuslib = opuslib
    return _opuslib


def available() -> bool:
    try:
        _load()
    except OpusUnavailableError:
        return False
    return True


def _check_pcm(pcm: np.ndarray, frame_samples: int) -> np.ndarray:
    arr = np.asarray(pcm)
    if arr.dtype != np.int16:
        raise ValueError(f"Opus encode needs int16 samples, got {arr.dtype}")
    arr = np.ascontiguousarray(arr)
    if arr.shape != (frame_samples,):
        raise ValueError(f"Opus encode needs {frame_samples} samples, got shape {arr.shape}")
    return arr


class OpusEncoder:
    def __init__(
        self,
        *,
        bitrate: int = DEFAULT_BITRATE,
        fec: bool = True,
        packet_loss_perc: int = DEFAULT_PACKET_LOSS_PERC,
    ) -> None:
        lib = _load()
        self.sample_rate = SAMPLE_RATE
        self.frame_samples = FRAME_SAMPLES
        self._enc: Any = lib.Encoder(SAMPLE_RATE, CHANNELS, lib.APPLICATION_VOIP)
        # opuslib 3.0's property setters drop the value; call the CTLs directly.
        ctl = lib.api.ctl
        set_ = lib.api.encoder.encoder_ctl
        state = self._enc.encoder_state
        set_(state, ctl.set_bitrate, bitrate)
        set_(state, ctl.set_inband_fec, 1 if fec else 0)
        set_(state, ctl.set_packet_loss_perc, packet_loss_perc)

    @property
    def fec(self) -> bool:
        lib = _load()
        state = self._enc.encoder_state
        return bool(lib.api.encoder.encoder_ctl(state, lib.api.ctl.get_inband_fec))

    def encode(self, pcm: np.ndarray) -> bytes:
        arr = _check_pcm(pcm, FRAME_SAMPLES)
        return bytes(self._enc.encode(arr.tobytes(), FRAME_SAMPLES))


class OpusDecoder:
    def __init__(self) -> None:
        lib = _load()
        self.sample_rate = SAMPLE_RATE
        self.frame_samples = FRAME_SAMPLES
        self._dec: Any = lib.Decoder(SAMPLE_RATE, CHANNELS)
        self._decode_fn = lib.api.decoder.libopus_decode
        self._pcm_ptr_type = lib.api.c_int16_pointer
        self._buf = np.zeros(MAX_FRAME_SAMPLES * CHANNELS, dtype=np.int16)

    def _decode(self, data: bytes | None, frame_samples: int, fec: bool) -> np.ndarray:
        # Call libopus directly: opuslib's wrapper cannot pass the NULL packet that asks
        # for PLC, and copying through array.array costs more than the decode itself.
        ptr = self._buf.ctypes.data_as(self._pcm_ptr_type)
        n = self._decode_fn(
            self._dec.decoder_state,
            data,
            0 if data is None else len(data),
            ptr,
            ctypes.c_int(frame_samples),
            ctypes.c_int(1 if fec else 0),
        )
        if n < 0:
            raise OpusCodecError(f"libopus decode failed with error {n}")
        return self._buf[: n * CHANNELS].copy()

    def decode(self, payload: bytes) -> np.ndarray:
        if not payload:
            raise OpusCodecError("empty Opus payload")
        return self._decode(payload, MAX_FRAME_SAMPLES, False)

    def decode_fec(self, next_payload: bytes, frame_samples: int = FRAME_SAMPLES) -> np.ndarray:
        """Recover the frame *before* `next_payload` from its in-band FEC data. When the
        packet carries no FEC libopus falls back to PLC, so this always yields audio."""
        return self._decode(next_payload, frame_samples, True)

    def plc(self, frame_samples: int = FRAME_SAMPLES) -> np.ndarray:
        return self._decode(None, frame_samples, False)

    def conceal(self, next_payload: bytes | None = None) -> np.ndarray:
        if next_payload:
            return self.decode_fec(next_payload)
        return self.plc()
