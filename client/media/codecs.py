"""The one codec registry: name -> payload type, clock rate, channels, frame size, factories.

Every encoder answers `encode(int16 array of frame_samples) -> bytes`; every decoder
answers `decode(bytes) -> int16 array` and `conceal(next_payload | None) -> int16 array`
(one frame of loss concealment, using FEC from the next packet where the codec can).

Names are matched case-insensitively, as SDP encoding names are (RFC 4566 §6).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from . import g711
from .opus import OpusDecoder, OpusEncoder

FRAME_MS = 20
TELEPHONE_EVENT = "telephone-event"


class Encoder(Protocol):
    sample_rate: int
    frame_samples: int

    def encode(self, pcm: np.ndarray) -> bytes: ...


class Decoder(Protocol):
    sample_rate: int
    frame_samples: int

    def decode(self, payload: bytes) -> np.ndarray: ...

    def conceal(self, next_payload: bytes | None = None) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class CodecInfo:
    name: str  # SDP encoding name, canonical case
    payload_type: int  # static PT, or our default for a dynamic one
    clock_rate: int  # RTP timestamp rate (Hz)
    channels: int  # PCM channels we encode/decode
    frame_samples: int  # samples (= timestamp units) per 20 ms frame
    encoder_factory: Callable[[], Encoder] | None = None
    decoder_factory: Callable[[], Decoder] | None = None
    # Channel count written in a=rtpmap when it differs from `channels`: RFC 7587 §7
    # requires "opus/48000/2" even for mono streams.
    rtpmap_channels: int | None = None
    fmtp: str | None = None

    @property
    def is_dynamic(self) -> bool:
        return self.payload_type >= 96

    @property
    def rtpmap(self) -> str:
        ch = self.rtpmap_channels if self.rtpmap_channels is not None else self.channels
        suffix = f"/{ch}" if ch != 1 or self.rtpmap_channels is not None else ""
        return f"{self.name}/{self.clock_rate}{suffix}"


def _frame(rate: int) -> int:
    return rate * FRAME_MS // 1000


CODECS: dict[str, CodecInfo] = {
    info.name.lower(): info
    for info in (
        CodecInfo(
            "PCMU", 0, 8000, 1, _frame(8000),
            lambda: g711.G711Encoder("PCMU"), lambda: g711.G711Decoder("PCMU"),
        ),
        CodecInfo(
            "PCMA", 8, 8000, 1, _frame(8000),
            lambda: g711.G711Encoder("PCMA"), lambda: g711.G711Decoder("PCMA"),
        ),
        CodecInfo(
            "opus", 111, 48000, 1, _frame(48000), OpusEncoder, OpusDecoder,
            rtpmap_channels=2, fmtp="useinbandfec=1",
        ),
        # RFC 4733 events: no audio codec, the DTMF module builds and reads its payloads.
        CodecInfo(TELEPHONE_EVENT, 101, 8000, 1, _frame(8000), fmtp="0-16"),
    )
}


def get_codec(name: str) -> CodecInfo:
    try:
        return CODECS[name.lower()]
    except KeyError:
        raise KeyError(f"unknown codec {name!r}; known: {', '.join(sorted(CODECS))}") from None


def get_encoder(name: str) -> Encoder:
    info = get_codec(name)
    if info.encoder_factory is None:
        raise ValueError(f"{info.name} is not an audio codec (use client.media.dtmf)")
    return info.encoder_factory()


def get_decoder(name: str) -> Decoder:
    info = get_codec(name)
    if info.decoder_factory is None:
        raise ValueError(f"{info.name} is not an audio codec (use client.media.dtmf)")
    return info.decoder_factory()


def by_payload_type(pt: int) -> CodecInfo | None:
    """Codec with this default payload type (static PTs are fixed by RFC 3551)."""
    for info in CODECS.values():
        if info.payload_type == pt:
            return info
    return None
