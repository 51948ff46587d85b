"""Media building blocks: microseconds per 20 ms frame. Prints; asserts nothing.

    .venv/bin/python bench/media.py [iterations]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from client.media import opus  # noqa: E402
from client.media.codecs import get_decoder, get_encoder  # noqa: E402
from client.media.jitterbuffer import JitterBuffer  # noqa: E402
from client.media.resample import Resampler  # noqa: E402
from client.media.rtp import RtpPacket  # noqa: E402

DEFAULT_ITERATIONS = 2000
FRAME_S = 0.02


def tone(rate: int, frames: int) -> np.ndarray:
    n = rate * frames // 50
    return np.round(8000 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)).astype(np.int16)


def measure(name: str, iterations: int, step: Callable[[int], object]) -> None:
    step(0)  # warm up (table builds, first allocation)
    t0 = time.perf_counter()
    for i in range(iterations):
        step(i)
    us = (time.perf_counter() - t0) / iterations * 1e6
    print(f"{name:<34} {us:9.1f} us/frame  ({us / (FRAME_S * 1e6) * 100:6.3f} % of real time)")


def main() -> None:
    iterations = int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_ITERATIONS
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


if __name__ == "__main__":
    main()
