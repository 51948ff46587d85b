"""Garbage-collector settings for the long-running servers.

Why: a proxy keeps every transaction for up to 32 s (Timers B/F/H/J), so under load
hundreds of thousands of container objects are alive at once. With CPython's default
thresholds (700, 10, 10) the cyclic collector runs a full (generation 2) pass over
that whole heap every few thousand requests; `bench/hotpath.py` measured ~45% of the
CPU going to it, and each pass is a pause of 100+ ms (the p99 of every call). Almost
everything on the hot path is freed by reference counting, so collecting far less
often costs little memory.

`tune()` freezes what start-up allocated (modules, classes, config: never garbage) out
of the collector's sight and raises the thresholds. Servers call it once, after
start-up; libraries and tests never do.
"""

from __future__ import annotations

import gc

#: Allocations (minus deallocations) of container objects between young collections.
GEN0_THRESHOLD = 50_000
#: Young collections per middle one; middle ones per full one (plus CPython's own rule
#: that a full pass waits until the long-lived objects grew by 25%).
GEN1_THRESHOLD = 20
GEN2_THRESHOLD = 100


def tune(freeze: bool = True) -> tuple[int, int, int]:
    """Apply the server settings; returns the previous thresholds."""
    previous = gc.get_threshold()
    if freeze:
        gc.collect()  # do not freeze garbage
        gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)
    return previous  # type: ignore[return-value]
