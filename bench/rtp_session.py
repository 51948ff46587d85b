"""RtpSession: CPU per 20 ms tick for a pair of sessions (send + receive + playout) over
loopback UDP, for each codec. Prints; asserts nothing.

    .venv/bin/python bench/rtp_session.py [ticks]

A task.Clock drives the frame clock as fast as the CPU allows, with one reactor
iteration per tick to deliver the datagrams, so the figure is the whole per-call cost
of a tick on both ends (and hence how many calls one core could carry).
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet import reactor, task  # noqa: E402

from client.media import opus  # noqa: E402
from client.media.devices import MemorySink, SilenceSource, ToneSource  # noqa: E402
from client.media.session import RtpSession  # noqa: E402
from sipcore.offer_answer import OPUS, PCMU, Codec  # noqa: E402

DEFAULT_TICKS = 1000
TICK = 0.02


def bench(codec: Codec, ticks: int) -> None:
    clock = task.Clock()
    a = RtpSession(
        reactor,
        "127.0.0.1",
        ToneSource(440, 16000),
        MemorySink(16000),
        clock=clock,
        rng=random.Random(1),
    )
    b = RtpSession(
        reactor,
        "127.0.0.1",
        SilenceSource(16000),
        MemorySink(16000),
        clock=clock,
        rng=random.Random(2),
    )
    a.bind()
    b.bind()
    a.start(a.local_port, "127.0.0.1", b.local_port, codec, "sendrecv")
    b.start(b.local_port, "127.0.0.1", a.local_port, codec, "sendrecv")
    t0 = time.perf_counter()
    for _ in range(ticks):
        clock.advance(TICK)
        reactor.iterate(0)  # deliver this tick's datagrams
    elapsed = time.perf_counter() - t0
    got = b.stats()["packets_received"]
    a.stop()
    b.stop()
    reactor.iterate(0)
    us = elapsed / ticks * 1e6
    print(
        f"{codec.name:<6} pair tick {us:8.1f} us  ({us / (TICK * 1e6) * 100:5.2f} % of real "
        f"time; ~{int(TICK * 1e6 / us)} pairs per core)  received {got}/{ticks}"
    )


def main() -> None:
    ticks = int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_TICKS
    bench(PCMU, ticks)
    if opus.available():
        bench(OPUS, ticks)
    else:
        print("opus: skipped,", opus.INSTALL_HINT)


if __name__ == "__main__":
    main()
