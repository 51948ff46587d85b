"""Bad SDP offers sent to a real `sipclient` over raw UDP: each INVITE gets a clear final
answer (488 Not Acceptable Here, or 415 for a body that is not SDP at all), and the
client stays up: it answers OPTIONS and the `status` command afterwards, and still
takes a good call.

The unit-level check is tests/client/test_ua.py::test_malformed_sdp_offer_is_488; this
one goes through the real process, its transport and its console.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.conftest import sip_ping
from tests.interop.sipclient_harness import SipClient

GOOD_SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)

# (what is wrong, Content-Type, body, acceptable final statuses)
BAD_OFFERS: list[tuple[str, str, str, tuple[int, ...]]] = [
    ("not SDP at all", "application/sdp", "hello, this is not SDP\r\n", (488,)),
    ("binary junk", "application/sdp", "\x01\x02\x7f garbage \x10\r\n\r\n", (488,)),
    ("no v= line", "application/sdp", GOOD_SDP.format(port=4000)[5:], (488,)),
    ("port out of range", "application/sdp", GOOD_SDP.format(port=99999), (488,)),
    ("bad c= address", "application/sdp",
     GOOD_SDP.format(port=4000).replace("c=IN IP4 127.0.0.1", "c=IN IP4 300.1.2.3"), (488,)),
    ("m= line cut short", "application/sdp",
     GOOD_SDP.format(port=4000).replace("m=audio 4000 RTP/AVP 0", "m=audio"), (488,)),
    ("only codecs we lack", "application/sdp",
     GOOD_SDP.format(port=4000).replace("RTP/AVP 0", "RTP/AVP 99").replace(
         "a=rtpmap:0 PCMU/8000", "a=rtpmap:99 NOSUCH/8000"), (488,)),
    ("video only", "application/sdp",
     GOOD_SDP.format(port=4000).replace("m=audio", "m=video"), (488,)),
    ("not an SDP content type", "text/plain", "v=0\r\n", (415,)),
]


@pytest.fixture
def bob(tmp_path: Path) -> Iterator[SipClient]:
    c = SipClient(tmp_path, "bob", "--no-register", "--auto-answer")
    yield c
    c.stop()


def invite(sock: socket.socket, port: int, n: int, ctype: str, body: str) -> int:
    """Send one INVITE to 127.0.0.1:`port`, return its final status (ACKed, so the
    client stops retransmitting it; a 2xx gets its own ACK, §13.2.2.4)."""
    local = sock.getsockname()[1]
    branch = f"z9hG4bKbad{n}x{time.monotonic_ns()}"
    call_id = f"bad-sdp-{n}-{time.monotonic_ns()}"
    raw = body.encode("latin-1")
    head = (
        f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch={branch}\r\n"
        f"From: <sip:mallory@127.0.0.1>;tag=m{n}\r\n"
        f"Call-ID: {call_id}\r\nMax-Forwards: 70\r\n"
    )
    sock.sendto(
        (f"INVITE sip:bob@127.0.0.1:{port} SIP/2.0\r\n{head}To: <sip:bob@127.0.0.1>\r\n"
         f"CSeq: 1 INVITE\r\nContact: <sip:mallory@127.0.0.1:{local}>\r\n"
         f"Content-Type: {ctype}\r\nContent-Length: {len(raw)}\r\n\r\n").encode() + raw,
        ("127.0.0.1", port),
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            data = sock.recv(65535)
        except TimeoutError:
            break
        text = data.decode("utf-8", "replace")
        status = int(text.split(" ", 2)[1])
        if status < 200:
            continue
        to = next(line for line in text.split("\r\n") if line.lower().startswith(("to:", "t:")))
        if status >= 300:
            ack_head = head  # §17.1.1.3: a non-2xx ACK reuses the INVITE's branch
        else:
            ack_head = head.replace(branch, branch + "ack")  # a 2xx ACK is a new request
        sock.sendto(
            (f"ACK sip:bob@127.0.0.1:{port} SIP/2.0\r\n{ack_head}{to}\r\n"
             "CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n").encode(),
            ("127.0.0.1", port),
        )
        return status
    raise AssertionError(f"no final response to INVITE #{n} within 5 s")


def test_bad_sdp_offers_get_488_and_the_client_stays_up(bob: SipClient) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        for n, (what, ctype, body, wanted) in enumerate(BAD_OFFERS):
            status = invite(sock, bob.port, n, ctype, body)
            assert status in wanted, f"{what}: answered {status}, wanted {wanted}"
            answer = sip_ping(bob.port, timeout=3)
            assert answer is not None and answer.startswith(b"SIP/2.0 200"), what
        assert bob.proc.poll() is None
        # No call may be left half-alive by a refused offer: `help` marks the end of
        # the status listing.
        start = len(bob.lines)
        bob.send("status")
        bob.send("help")
        bob.expect(r"help ")
        listing = bob.lines[start:]
        assert "status registration disabled" in listing
        live = [line for line in listing
                if line.startswith("status call") and line.split()[3] != "ended"]
        assert not live, listing
        # And a good offer still connects (the client was not left wedged).
        status = invite(sock, bob.port, 99, "application/sdp", GOOD_SDP.format(port=4000))
        assert status == 200
        bob.expect(r"call \d+ connected$")
        bob.send("hangup")
        sock.settimeout(5)
        bye = sock.recv(65535).decode("utf-8", "replace")
        assert bye.startswith("BYE "), bye
        # Answer the BYE, so the client's shutdown does not wait for its timeout.
        keep = [line for line in bye.split("\r\n")[1:]
                if line.split(":")[0].lower() in ("via", "v", "from", "f", "to", "t",
                                                   "call-id", "i", "cseq")]
        sock.sendto(("SIP/2.0 200 OK\r\n" + "\r\n".join(keep)
                     + "\r\nContent-Length: 0\r\n\r\n").encode(), ("127.0.0.1", bob.port))
        bob.expect(r"call \d+ ended hangup$")
        assert bob.quit() == 0
    log = bob.stderr_tail(1_000_000)
    assert "Traceback" not in log and "handler failed" not in log
