"""Location-service throughput: put/update/get ops/s per backend, and memory cost.

    .venv/bin/python bench/location.py [--ops 20000] [--window 64]

Each operation kind runs ``--ops`` times with up to ``--window`` Deferreds in
flight (a busy registrar has many REGISTERs outstanding at once). The redis
backend is measured only if ``redis-server`` is on PATH; a throw-away server is
started on a free loopback port and stopped afterwards. Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet import defer, task  # noqa: E402

from registrar.location import Binding, open_location  # noqa: E402

USERS = 2000


def binding(i: int, now: float, cseq: int = 1) -> Binding:
    u = i % USERS
    return Binding(
        aor=f"sip:user{u}@example.com",
        contact=f"sip:user{u}@192.0.2.{u % 250}:{5060 + i // USERS % 10};transport=tcp",
        expires_at=now + 3600,
        q=1.0,
        call_id=f"call-{u}-{i // USERS % 10}@bench",
        cseq=cseq,
        path=("<sip:edge.example.com;lr;ob>",),
        received=f"tcp:198.51.100.{u % 250}:{40000 + u}",
        user_agent="bench/1.0",
    )


async def timed(label: str, n: int, window: int, op: Callable[[int], defer.Deferred[Any]]) -> None:
    sem = defer.DeferredSemaphore(window)
    start = time.perf_counter()
    await defer.gatherResults([sem.run(op, i) for i in range(n)])
    elapsed = time.perf_counter() - start
    print(f"  {label:<7} {n / elapsed:>10,.0f} ops/s  ({n:,} ops in {elapsed:.2f}s)")


async def bench_backend(name: str, url: str, n: int, window: int) -> None:
    from twisted.internet import reactor

    print(f"{name}: {url}")
    store = open_location(url)
    now = reactor.seconds()
    try:
        await timed("put", n, window, lambda i: store.put(binding(i, now)))
        # A refresh REGISTER per op: same Call-ID, higher CSeq, so none is stale.
        await timed("update", n, window, lambda i: store.update(
            f"sip:user{i % USERS}@example.com", [binding(i, now, cseq=2 + i // USERS)]
        ))  # fmt: skip
        await timed("get", n, window, lambda i: store.get(f"sip:user{i % USERS}@example.com"))
        print(f"  stored  {await store.count():,} bindings in {len(await store.aors()):,} AORs")
    finally:
        await store.close()


def memory_per_100k() -> None:
    from twisted.internet import reactor

    n = 100_000
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    store = open_location("memory:")
    now = reactor.seconds()
    for i in range(n):
        # Distinct AORs: the worst case for per-AOR overhead.
        store.put(
            Binding(
                aor=f"sip:user{i}@example.com",
                contact=f"sip:user{i}@192.0.2.{i % 250}:5060;transport=tcp",
                expires_at=now + 3600,
                call_id=f"call-{i}@bench",
                cseq=1,
                path=("<sip:edge.example.com;lr;ob>",),
                received=f"tcp:198.51.100.{i % 250}:{40000 + i % 20000}",
                user_agent="bench/1.0",
            )
        )
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    print(
        f"memory: {used / 2**20:.1f} MiB per {n:,} bindings "
        f"({used / n:.0f} bytes each, one binding per AOR, tracemalloc)"
    )
    del store


async def main(reactor: Any, args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="location-bench-"))
    try:
        await bench_backend("memory", "memory:", args.ops, args.window)
        await bench_backend("sqlite", f"sqlite:{tmp}/location.db", args.ops, args.window)
        if shutil.which("redis-server"):
            from tests.registrar.conftest import start_redis_server, stop_redis_server

            proc, port = start_redis_server(tmp)
            try:
                url = f"redis://127.0.0.1:{port}/0"
                await bench_backend("redis", url, args.ops, args.window)
            finally:
                stop_redis_server(proc)
        else:
            print("redis: skipped (redis-server not on PATH)")
        memory_per_100k()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=20_000)
    parser.add_argument("--window", type=int, default=64)
    cli = parser.parse_args()
    print(f"python {sys.version.split()[0]}, pid {os.getpid()}, window {cli.window}")
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, cli)))
