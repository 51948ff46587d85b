"""µs per binding change that `--workers 2` spends replicating ``memory:``.

    .venv/bin/python bench/replication.py [--aors 10000] [--passes 6] [--turn 200]
    [--quick] [--profile]

Two ReplicatedLocationService instances (workers 0 and 1 of a group of two with a
unique name) in this one process, on their real abstract Unix datagram sockets, driven
directly: the reactor is a stand-in whose timers run when the script says so (a
"reactor turn" is ``--turn`` REGISTERs, then the due timers: the batched sendto).

- publishing: ``update_now`` on worker 0 with REGISTER-like changes (one contact per
  AOR, ``--aors`` AORs: a first registration each, then refreshes with a higher CSeq),
  including the ops' encoding, the per-peer queue and sendto; the same changes on a
  plain ``MemoryLocationService`` give the store's own cost, the difference is what
  replication adds to each REGISTER;
- receiving: worker 1 handles the datagrams produced (the credential check,
  ``parse_ops``, applying each op to its copy); ``parse_ops`` alone is timed again on
  the same datagrams, and the recvmsg calls on their own;
- the wire: bytes per op and ops per datagram.

The figures are the best of ``--passes`` refresh passes (the steady state: most
REGISTERs refresh a binding); the first registrations are printed on their own. Times
are this process's CPU time. Prints figures only; asserts nothing.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from registrar.location.binding import Binding  # noqa: E402
from registrar.location.memory import MemoryLocationService  # noqa: E402
from registrar.location.replicated import (  # noqa: E402
    RECV_SIZE,
    ReplicatedLocationService,
    parse_ops,
)
from sipcore import accel  # noqa: E402
from sipcore.twisted.gctune import tune  # noqa: E402

#: CPU time of this process (user + system, so sendto/recvmsg count): other
#: processes' load on the machine does not count.
clock = time.process_time


class _Call:
    """A pending timer of `Reactor`."""

    __slots__ = ("due", "f", "args", "cancelled", "called")

    def __init__(self, due: float, f: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.due, self.f, self.args = due, f, args
        self.cancelled = self.called = False

    def active(self) -> bool:
        return not (self.cancelled or self.called)

    def cancel(self) -> None:
        self.cancelled = True

    def reset(self, delay: float) -> None:
        self.due = time.time() + delay


class Reactor:
    """What the replicated store asks of a reactor; timers run in `run_due`."""

    def __init__(self) -> None:
        self.calls: list[_Call] = []

    def seconds(self) -> float:
        return time.time()

    def callLater(self, delay: float, f: Callable[..., Any], *args: Any) -> _Call:  # noqa: N802
        call = _Call(time.time() + delay, f, args)
        self.calls.append(call)
        return call

    def addReader(self, reader: Any) -> None:  # noqa: N802
        pass

    def removeReader(self, reader: Any) -> None:  # noqa: N802
        pass

    def run_due(self, horizon: float = 0.5) -> int:
        """Run the timers due within `horizon` s (send flushes and retries, not the
        sync's idle timeout); returns how many ran."""
        ran = 0
        while True:
            limit = time.time() + horizon
            due = [c for c in self.calls if c.active() and c.due <= limit]
            if not due:
                return ran
            self.calls = [c for c in self.calls if c.active() and c not in due]
            for call in due:
                if call.active():
                    call.called = True
                    call.f(*call.args)
                    ran += 1


def change(i: int, n: int, now: float) -> Binding:
    """The binding a REGISTER of AOR `i` (its `n`th) writes: some behind NAT, some
    through an edge proxy (Path), some RFC 5626 flows."""
    flow = i % 10 == 0
    return Binding(
        aor=f"sip:user{i}@example.com",
        contact=(f"sip:user{i}@10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}:5060"
                 + (";transport=tcp;ob" if flow else "")),
        expires_at=now + 3600,
        q=1.0,
        call_id=f"{i:08x}-5f3a-4c1d-9e2b-{n:012x}@10.0.0.1"[:40],
        cseq=n + 1,
        path=("<sip:edge1.example.com;lr;ob>",) if i % 4 == 0 else (),
        instance_id=f'"<urn:uuid:00000000-0000-0000-0000-{i:012d}>"' if flow else None,
        reg_id=1 if flow else None,
        received=f"UDP 198.51.100.{i % 250}:{1024 + i % 60000}" if i % 2 else None,
        user_agent="Yealink SIP-T46S 66.85.0.5",
    )


class Bench:
    def __init__(self, aors: int, turn: int) -> None:
        self.aors = aors
        self.turn = turn
        self.reactor = Reactor()
        group = f"bench{os.getpid()}-{time.monotonic_ns() % 1_000_000}"
        # Worker 0 first: its sync-request finds nobody (it is the first worker up).
        self.w0 = ReplicatedLocationService(
            MemoryLocationService(clock=self.reactor), group, 0, 2, reactor=self.reactor)
        self.w1 = ReplicatedLocationService(
            MemoryLocationService(clock=self.reactor), group, 1, 2, reactor=self.reactor)
        self.plain = MemoryLocationService(clock=self.reactor)
        self.settle()  # worker 1 syncs from worker 0 (empty)
        assert self.w1.ready.called
        self.sock = self.w1._sock
        assert self.sock is not None
        self.cmsg = socket.CMSG_SPACE(12)

    def settle(self) -> None:
        for _ in range(100):
            self.reactor.run_due()
            self.w0._read()
            self.w1._read()
            if not any(c.active() and c.due < time.time() + 0.5 for c in self.reactor.calls):
                return

    def close(self) -> None:
        self.w0.close()
        self.w1.close()

    def receive(self, out: list[tuple[bytes, Any, int, Any]]) -> float:
        """Worker 1's pending datagrams, appended to `out`; the seconds recvmsg took."""
        sock = self.sock
        assert sock is not None
        started = clock()
        while True:
            try:
                out.append(sock.recvmsg(RECV_SIZE, self.cmsg))
            except BlockingIOError:
                return clock() - started

    def one_pass(self, n: int) -> dict[str, float]:
        """Every AOR registers once more (REGISTER number `n`); the timings."""
        now = time.time()
        changes = [(f"sip:user{i}@example.com", [change(i, n, now)])
                   for i in range(self.aors)]
        turn = self.turn
        plain = self.plain.update_now
        update = self.w0.update_now
        run_due = self.reactor.run_due
        datagrams: list[tuple[bytes, Any, int, Any]] = []
        t_plain = t_pub = t_recv = 0.0
        for start in range(0, len(changes), turn):
            chunk = changes[start:start + turn]
            # The store alone: the same REGISTERs on a plain memory: store.
            started = clock()
            for aor, c in chunk:
                plain(aor, c)
            t_plain += clock() - started
            # Worker 0: the store plus publishing; then the due timers (the batch's
            # sendto). Worker 1's queue is read after every turn (a real worker 1 would
            # wake up for it).
            started = clock()
            for aor, c in chunk:
                update(aor, c)
            run_due()
            t_pub += clock() - started
            t_recv += self.receive(datagrams)
        for _ in range(100):  # retries after EAGAIN, if any
            if not run_due():
                break
            t_recv += self.receive(datagrams)
        # Worker 1: credential check, parse, apply.
        handle = self.w1._datagram
        applied = self.w1.stats["applied"]
        started = clock()
        for data, anc, flags, addr in datagrams:
            handle(data, anc, flags, addr)
        t_apply = clock() - started
        ops = self.w1.stats["applied"] - applied
        # parse_ops alone, on the same datagrams.
        started = clock()
        for data, _, _, _ in datagrams:
            parse_ops(data)
        t_parse = clock() - started
        m = len(changes)
        return {
            "plain": t_plain / m * 1e6,
            "update": t_pub / m * 1e6,
            "publish": (t_pub - t_plain) / m * 1e6,
            "recv": t_recv / m * 1e6,
            "handle": t_apply / m * 1e6,
            "parse": t_parse / m * 1e6,
            "ops": ops,
            "datagrams": len(datagrams),
            "bytes": sum(len(d[0]) for d in datagrams),
        }


def show(label: str, r: dict[str, float]) -> None:
    print(f"{label}: {int(r['ops']):,} ops in {int(r['datagrams']):,} datagrams, "
          f"{r['bytes'] / max(1, r['ops']):.0f} bytes/op")
    print(f"  publish  {r['publish']:6.2f} us/change  (update_now {r['update']:.2f} - "
          f"memory: alone {r['plain']:.2f}; encode, queue, sendto)")
    print(f"  receive  {r['handle']:6.2f} us/change  (parse {r['parse']:.2f} + apply; "
          f"recvmsg {r['recv']:.2f} more)")
    total = r["publish"] + r["handle"] + r["recv"]
    print(f"  total    {total:6.2f} us/change  (publish + receive + recvmsg)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aors", type=int, default=10_000)
    parser.add_argument("--passes", type=int, default=6, help="refresh passes (best shown)")
    parser.add_argument("--turn", type=int, default=200, help="REGISTERs per reactor turn")
    parser.add_argument("--quick", action="store_true", help="2,000 AORs, 2 passes")
    parser.add_argument("--profile", action="store_true", help="print the top 25 functions")
    parser.add_argument("--default-gc", action="store_true",
                        help="keep CPython's GC thresholds (the servers tune them)")
    args = parser.parse_args()
    if args.quick or os.environ.get("SIPCALLING_BENCH_QUICK") == "1":
        args.aors, args.passes = min(args.aors, 2_000), min(args.passes, 2)
    if not sys.platform.startswith("linux"):
        print("replication: skipped (abstract Unix sockets are Linux-only)")
        return
    import registrar.location.replicated as module

    build = "compiled" if not module.__file__ or not module.__file__.endswith(".py") \
        else f"interpreted ({accel.status()})"
    print(f"python {sys.version.split()[0]}, {build}, wire v{module.VERSION}, "
          f"{args.aors:,} AORs, {args.turn} REGISTERs per turn")
    if not args.default_gc:
        tune()
    bench = Bench(args.aors, args.turn)
    profiler = cProfile.Profile() if args.profile else None
    try:
        first = bench.one_pass(0)
        show("first registrations", first)
        if profiler:
            profiler.enable()
        passes = [bench.one_pass(n) for n in range(1, args.passes + 1)]
        if profiler:
            profiler.disable()
        best = {k: min(p[k] for p in passes) for k in passes[0]}
        show(f"refreshes (best of {len(passes)} passes)", best)
        stats = bench.w0.stats, bench.w1.stats
        if stats[0]["dropped_full"] or stats[0]["dropped_other"] or stats[1]["malformed"]:
            print(f"  note: worker 0 {stats[0]}, worker 1 {stats[1]}")
        total = best["publish"] + best["handle"] + best["recv"]
        print(f"RESULT bench=replication publish_us={best['publish']:.2f} "
              f"receive_us={best['handle']:.2f} parse_us={best['parse']:.2f} "
              f"recvmsg_us={best['recv']:.2f} total_us={total:.2f} "
              f"bytes_per_op={best['bytes'] / max(1, best['ops']):.0f} v={module.VERSION}")
    finally:
        bench.close()
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
