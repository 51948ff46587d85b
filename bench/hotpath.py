"""µs per message on the proxy's hot path, measured in-process.

The whole path a datagram takes inside `twistd sipproxy` — parse, transaction lookup
and creation, registrar or routing, forwarding, serialise — with the socket replaced
by a list. Two scenarios: REGISTER for many users (memory location store) and a whole
call through the proxy (INVITE, 100, 180, 200, ACK, BYE, 200 as both sides send them).

Run: ``python bench/hotpath.py [--seconds N] [--no-steady]``. Prints figures only. In
the two scenarios timers never fire (the clock ignores them): this isolates per-message
CPU cost from timer housekeeping. A third, "Timer J running", drives REGISTERs on a
task.Clock at 16,000 per simulated second, so that 512,000 transactions linger and expire
as in the server under that load: the difference is what timers and a large heap cost.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.core import ProxyRole  # noqa: E402
from sipcore.twisted.gctune import tune  # noqa: E402
from sipcore.twisted.stack import SipStack  # noqa: E402
from sipcore.twisted.transport import Address  # noqa: E402

PROXY = Address("UDP", "127.0.0.1", 5060)
CALLER = Address("UDP", "127.0.0.1", 5070)
CALLEE = Address("UDP", "127.0.0.1", 5080)


class _Call:
    __slots__ = ()

    def cancel(self) -> None:
        pass

    def active(self) -> bool:
        return False

    def reset(self, delay: float) -> None:
        pass


class NullClock:
    """The reactor's time interface, with timers that never fire."""

    _call = _Call()

    def seconds(self) -> float:
        return time.time()

    def callLater(self, delay: float, f: Any, *a: Any, **kw: Any) -> _Call:  # noqa: N802
        return self._call


class Wire:
    """Stands in for the UDP port: keeps what the proxy sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))

    def getHost(self) -> Any:  # noqa: N802
        return PROXY


def make_proxy(clock: Any = None) -> tuple[SipStack, Wire]:
    config = {
        "domains": ["a.lab"], "location": "memory:", "users": None, "routes": {},
        "upstreams": [], "interface": "127.0.0.1", "port": 5060,
        "auth-algorithms": "SHA-256,MD5",
    }
    clock = clock or NullClock()
    role = ProxyRole(config, clock)
    stack = SipStack(clock, role, interface="127.0.0.1", port=5060, log_messages=False)
    role.stack = stack
    role.start()
    wire = Wire()
    stack.endpoint.udp = wire
    return stack, wire


def register(user: int, n: int) -> bytes:
    return (
        f"REGISTER sip:a.lab SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKr{n};rport\r\n"
        f"Max-Forwards: 70\r\n"
        f"To: <sip:u{user}@a.lab>\r\nFrom: <sip:u{user}@a.lab>;tag=f{n}\r\n"
        f"Call-ID: reg{user}@bench\r\nCSeq: {n + 1} REGISTER\r\n"
        f"Contact: <sip:u{user}@127.0.0.1:5080>;expires=3600\r\n"
        f"User-Agent: bench\r\nContent-Length: 0\r\n\r\n"
    ).encode()


SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
)


def invite(n: int) -> bytes:
    return (
        f"INVITE sip:callee@a.lab SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKi{n};rport\r\n"
        f"Max-Forwards: 70\r\nTo: <sip:callee@a.lab>\r\n"
        f"From: <sip:caller@a.lab>;tag=c{n}\r\nCall-ID: call{n}@bench\r\n"
        f"CSeq: 1 INVITE\r\nContact: <sip:caller@127.0.0.1:5070>\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(SDP)}\r\n\r\n{SDP}"
    ).encode()


def answer(forwarded: bytes, status: int, reason: str, to_tag: str, sdp: bool) -> bytes:
    """The callee's response to a request the proxy forwarded (copy Via...CSeq)."""
    head = forwarded.split(b"\r\n\r\n", 1)[0].decode()
    keep = [
        line for line in head.split("\r\n")[1:]
        if line.split(":", 1)[0].lower() in ("via", "from", "to", "call-id", "cseq",
                                            "record-route")
    ]
    keep = [f"{line};tag={to_tag}" if line.lower().startswith("to:") else line
            for line in keep]
    body = SDP if sdp else ""
    extra = "Contact: <sip:callee@127.0.0.1:5080>\r\n"
    if body:
        extra += "Content-Type: application/sdp\r\n"
    return (
        f"SIP/2.0 {status} {reason}\r\n" + "\r\n".join(keep) + "\r\n" + extra
        + f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


def in_dialog(method: str, n: int, cseq: int, via_branch: str, to_tag: str) -> bytes:
    return (
        f"{method} sip:callee@127.0.0.1:5080 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch={via_branch};rport\r\n"
        f"Route: <sip:127.0.0.1:5060;lr>\r\nMax-Forwards: 70\r\n"
        f"To: <sip:callee@a.lab>;tag={to_tag}\r\nFrom: <sip:caller@a.lab>;tag=c{n}\r\n"
        f"Call-ID: call{n}@bench\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def bench_register(seconds: float, users: int = 10_000) -> tuple[int, float]:
    stack, wire = make_proxy()
    receive = stack.endpoint.data_received
    n = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        for _ in range(500):
            receive(register(n % users, n), CALLER, None)
            n += 1
        wire.sent.clear()
    return n, time.perf_counter() - started


def bench_register_steady(rate: int, simulated: float) -> tuple[float, int]:
    """µs per REGISTER once Timer J runs: `rate` REGISTERs per simulated second on a
    task.Clock, for `simulated` seconds (past 32 s, `rate` x 32 transactions linger and
    expire as they do in the server). Returns the figure over the last quarter and how
    many transactions were lingering then. Includes task.Clock's own bookkeeping."""
    from twisted.internet import task

    clock = task.Clock()
    clock.advance(1.8e9)
    stack, wire = make_proxy(clock)
    receive = stack.endpoint.data_received
    step = 1.0 / rate
    total = int(rate * simulated)
    measure_from = total - total // 4
    started = 0.0
    for n in range(total):
        if n == measure_from:
            started = time.perf_counter()
        receive(register(n % 10_000, n), CALLER, None)
        clock.advance(step)
        if n % 500 == 0:
            wire.sent.clear()
    elapsed = time.perf_counter() - started
    return elapsed / (total - measure_from) * 1e6, stack.table.lingering


def bench_calls(seconds: float) -> tuple[int, int, float]:
    stack, wire = make_proxy()
    receive = stack.endpoint.data_received
    receive(register(0, 0).replace(b"u0@", b"callee@"), CALLEE, None)
    wire.sent.clear()
    calls = messages = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline and calls < 1_000_000:
        n = calls
        receive(invite(n), CALLER, None)
        forwarded = next(d for d, a in wire.sent if d.startswith(b"INVITE"))
        receive(answer(forwarded, 180, "Ringing", f"t{n}", False), CALLEE, None)
        receive(answer(forwarded, 200, "OK", f"t{n}", True), CALLEE, None)
        receive(in_dialog("ACK", n, 1, f"z9hG4bKa{n}", f"t{n}"), CALLER, None)
        receive(in_dialog("BYE", n, 2, f"z9hG4bKb{n}", f"t{n}"), CALLER, None)
        bye = next(d for d, a in wire.sent if d.startswith(b"BYE"))
        receive(answer(bye, 200, "OK", f"t{n}", False), CALLEE, None)
        messages += 6
        calls += 1
        wire.sent.clear()
    return calls, messages, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--profile", action="store_true", help="print the top 25 functions")
    parser.add_argument("--quick", action="store_true", help="0.3 s per scenario")
    parser.add_argument("--default-gc", action="store_true",
                        help="keep CPython's GC thresholds (the servers tune them)")
    parser.add_argument("--no-steady", dest="steady", action="store_false",
                        help="skip REGISTER with Timer J running (16,000/s for 40 "
                             "simulated seconds, about 30 s)")
    args = parser.parse_args()
    args.quick = args.quick or os.environ.get("SIPCALLING_BENCH_QUICK") == "1"
    if args.quick:
        args.seconds = min(args.seconds, 0.3)
    if not args.default_gc:
        # What `twistd sipproxy` does at start-up (sipcore.twisted.gctune): measure
        # the hot path as the server runs it.
        tune()
    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    count, elapsed = bench_register(args.seconds)
    print(f"REGISTER (memory store, 10k users): {count / elapsed:>9,.0f} req/s "
          f"{elapsed / count * 1e6:7.1f} us/request (parse, tx, registrar, 200 out)")
    register_us = elapsed / count * 1e6
    calls, messages, elapsed = bench_calls(args.seconds)
    print(f"call through proxy (6 msgs in):      {calls / elapsed:>9,.0f} calls/s "
          f"{elapsed / messages * 1e6:7.1f} us/message in (INVITE,180,200,ACK,BYE,200)")
    steady = ""
    if args.steady:
        rate, simulated = (2000, 1.0) if args.quick else (16_000, 40.0)
        steady_us, lingering = bench_register_steady(rate, simulated)
        print(f"REGISTER, Timer J running ({rate:,}/s):  {steady_us:7.1f} us/request "
              f"with {lingering:,} transactions lingering")
        steady = f" register_steady_us={steady_us:.1f}"
    gc_mode = "default" if args.default_gc else "tuned"
    print(f"RESULT bench=hotpath register_us={register_us:.1f} "
          f"call_msg_us={elapsed / messages * 1e6:.1f}{steady} gc={gc_mode}")
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
