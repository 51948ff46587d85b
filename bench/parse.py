"""Parser/serialiser throughput on typical messages.

Run: ``python bench/parse.py``.  Prints figures only (no assertions); each case
runs for a bounded number of iterations, a few seconds in total.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sipcore.message import parse  # noqa: E402

SDP = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 192.0.2.101\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.101\r\n"
    b"t=0 0\r\n"
    b"m=audio 49172 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-15\r\n"
    b"a=sendrecv\r\n"
)

INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Via: SIP/2.0/UDP proxy.atlanta.example.com;branch=z9hG4bK8812ab;received=192.0.2.7\r\n"
    b"Max-Forwards: 70\r\n"
    b"Record-Route: <sip:proxy.atlanta.example.com;lr>\r\n"
    b'To: "Bob" <sip:bob@biloxi.example.com>\r\n'
    b'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@pc33.atlanta.example.com;transport=udp>\r\n"
    b"Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, MESSAGE\r\n"
    b"Supported: replaces, timer\r\n"
    b"User-Agent: sipcalling-bench/1.0\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n"
    b"\r\n" + SDP
)

REGISTER = (
    b"REGISTER sip:registrar.biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP bobspc.biloxi.example.com:5060;branch=z9hG4bKnashds7\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b"From: Bob <sip:bob@biloxi.example.com>;tag=456248\r\n"
    b"Call-ID: 843817637684230@998sdasdh09\r\n"
    b"CSeq: 1826 REGISTER\r\n"
    b'Contact: <sip:bob@192.0.2.4;transport=tcp>;expires=7200;+sip.instance="<urn:uuid:1>"\r\n'
    b"Expires: 7200\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def _parse_access_serialise(data: bytes) -> Callable[[], object]:
    def run() -> object:
        msg = parse(data)
        via = msg.top_via
        _ = (via.branch, msg.cseq.number, msg.call_id, msg.from_.tag, msg.to.tag)
        _ = (msg.contacts, msg.max_forwards, msg.record_routes)
        return msg.serialise()

    return run


def bench(label: str, fn: Callable[[], object], iterations: int) -> None:
    for _ in range(min(1000, iterations)):  # warm caches and the allocator
        fn()
    start = time.perf_counter()
    for _ in range(iterations):
        fn()
    elapsed = time.perf_counter() - start
    rate = iterations / elapsed
    print(f"  {label:<34} {rate:>10,.0f} msg/s  {1e6 / rate:7.2f} us/msg")


def main() -> None:
    iterations = 30_000
    for name, data in (("INVITE with SDP", INVITE), ("REGISTER", REGISTER)):
        msg = parse(data)
        print(f"{name} ({len(data)} bytes):")
        bench("parse", lambda data=data: parse(data), iterations)
        bench("serialise", msg.serialise, iterations)
        bench("parse+hot headers+serialise", _parse_access_serialise(data), iterations)


if __name__ == "__main__":
    main()
