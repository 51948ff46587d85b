"""Memory growth, in-process: bytes per binding (memory: store) and per active call.

Bindings: N REGISTERs' worth of bindings (10k, 100k, and 1M unless --quick/--no-million)
put into `MemoryLocationService`; bytes per binding = traced-memory delta / N
(tracemalloc: Python allocations, the honest per-object figure) and the RSS delta.

Lingering transactions: L UDP REGISTERs answered through the in-process proxy, each
server transaction left in Completed for Timer J (32 s over UDP) with real Twisted
`DelayedCall`s in a heap as the reactor keeps them; bytes per lingering transaction =
delta / L. (Before transactions were slimmed on completion: 9,611 B; after: ~1,200 B.)

Calls: C concurrent calls driven through the in-process proxy of bench/hotpath.py up
to the 200 OK (INVITE server + client transactions and response contexts alive, timers
never fire); bytes per active call = delta / C.

Prints only.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import os
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from hotpath import CALLEE, CALLER, answer, invite, make_proxy, register  # noqa: E402
from twisted.internet.base import DelayedCall  # noqa: E402

from registrar.location.binding import Binding  # noqa: E402
from registrar.location.memory import MemoryLocationService  # noqa: E402


class _Clock:
    def seconds(self) -> float:
        return 1_000_000.0


def rss_bytes() -> int:
    for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def per_binding(n: int) -> tuple[float, float, float]:
    gc.collect()
    tracemalloc.start()
    rss0 = rss_bytes()
    base, _ = tracemalloc.get_traced_memory()
    started = time.perf_counter()
    store = MemoryLocationService(clock=_Clock())
    for i in range(n):
        store.update_now(f"sip:user{i}@a.lab", [Binding(
            aor=f"sip:user{i}@a.lab", contact=f"sip:user{i}@10.{i >> 16 & 255}.{i >> 8 & 255}."
            f"{i & 255}:5060", expires_at=1_000_000.0 + 3600, call_id=f"reg{i}@bench",
            cseq=1, user_agent="bench")])
    elapsed = time.perf_counter() - started
    used, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = rss_bytes() - rss0
    del store
    gc.collect()
    return (used - base) / n, rss / n, elapsed


class _HeapClock:
    """The reactor's timer bookkeeping (real `DelayedCall`s in a heap), never run."""

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, DelayedCall]] = []

    def seconds(self) -> float:
        return 1_000_000.0

    def callLater(self, delay: float, f: Any, *a: Any, **kw: Any) -> DelayedCall:  # noqa: N802
        call = DelayedCall(self.seconds() + delay, f, a, kw, self._forget, self._forget,
                           seconds=self.seconds)
        heapq.heappush(self.heap, (call.time, id(call), call))
        return call

    @staticmethod
    def _forget(call: DelayedCall) -> None:
        pass


def per_lingering(count: int, users: int = 100) -> tuple[float, int, int]:
    """Bytes per UDP REGISTER server transaction left lingering in Completed."""
    stack, wire = make_proxy(_HeapClock())
    receive = stack.endpoint.data_received
    for n in range(users):  # bindings exist first: later REGISTERs only refresh them
        receive(register(n, n), CALLER, None)
    wire.sent.clear()
    gc.collect()
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    for n in range(users, users + count):
        receive(register(n % users, n), CALLER, None)
        if n % 1000 == 0:
            wire.sent.clear()
    wire.sent.clear()
    gc.collect()
    used, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return (used - base) / count, stack.table.lingering, len(stack.table)


def per_call(calls: int) -> tuple[float, float, int]:
    stack, wire = make_proxy()
    receive = stack.endpoint.data_received
    receive(register(0, 0).replace(b"u0@", b"callee@"), CALLEE, None)
    wire.sent.clear()
    gc.collect()
    tracemalloc.start()
    rss0 = rss_bytes()
    base, _ = tracemalloc.get_traced_memory()
    for n in range(calls):
        receive(invite(n), CALLER, None)
        forwarded = next(d for d, a in wire.sent if d.startswith(b"INVITE"))
        receive(answer(forwarded, 180, "Ringing", f"t{n}", False), CALLEE, None)
        receive(answer(forwarded, 200, "OK", f"t{n}", True), CALLEE, None)
        wire.sent.clear()
    used, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = rss_bytes() - rss0
    return (used - base) / calls, rss / calls, stack.table.live


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-million", action="store_true")
    args = parser.parse_args()
    quick = args.quick or os.environ.get("SIPCALLING_BENCH_QUICK") == "1"
    sizes = [1_000] if quick else [10_000, 100_000] + ([] if args.no_million else [1_000_000])
    print("memory: store, one binding per AOR (tracemalloc bytes; RSS delta bytes)")
    for n in sizes:
        traced, rss, elapsed = per_binding(n)
        print(f"  {n:>9,} bindings: {traced:7.0f} B/binding traced, {rss:7.0f} B/binding RSS "
              f"({n * traced / 2**20:.0f} MiB; filled in {elapsed:.1f} s)", flush=True)
        print(f"RESULT bench=memory bindings={n} bytes_per_binding={traced:.0f}")
    lingering = 2_000 if quick else 20_000
    traced, held, total = per_lingering(lingering)
    print(f"  {lingering:>9,} UDP REGISTER transactions lingering in Completed (Timer J; "
          f"{held:,} of {total:,} filed): {traced:7.0f} B/transaction traced")
    print(f"RESULT bench=memory lingering={lingering} bytes_per_lingering_tx={traced:.0f}")
    calls = 500 if quick else 10_000
    traced, rss, live = per_call(calls)
    print(f"  {calls:>9,} concurrent calls (answered, not ended; {live} transactions still live): "
          f"{traced:7.0f} B/call traced, {rss:7.0f} B/call RSS")
    print(f"RESULT bench=memory calls={calls} bytes_per_call={traced:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
