"""Put a lossy, delaying network between two real `sipclient` processes.

sipclient has no option to advertise a media address other than its own, so the only
honest way into the media path is the signalling: `SdpRewritingHop` is the caller's
outbound proxy (a minimal stateless hop in front of the real `twistd sipproxy`) and
rewrites the SDP of the INVITE and of its answer to point at an `RtpRelay`. Each
client then really sends its RTP (and RTCP) to the relay, which forwards it to the
other client's real address with the impairment asked for.

    relay = RtpRelay(Impairment(loss=0.05, jitter=0.040, reorder=0.02, seed=7))
    hop = SdpRewritingHop(("127.0.0.1", proxy_port), relay)
    alice = SipClient(..., "--proxy", f"127.0.0.1:{hop.port}")
    ...
    hop.close(); relay.close()

Only out-of-dialog requests of the caller pass the hop (the UA sends in-dialog requests
to the route set / remote target, see client/ua.py), which is exactly where the offer
(INVITE) and the answer (its 2xx) travel. Both helpers run one thread each on plain
sockets, so a test needs no reactor; every loop wakes at least every 50 ms to see
close().
"""

from __future__ import annotations

import heapq
import itertools
import random
import select
import socket
import threading
import time
from dataclasses import dataclass, field

from sipcore.errors import ParseError
from sipcore.message import Request, Response, parse
from sipcore.sdp import Connection, SessionDescription

__all__ = ["Impairment", "RelayStats", "RtpRelay", "SdpRewritingHop"]

Addr = tuple[str, int]
POLL_S = 0.05


@dataclass(frozen=True)
class Impairment:
    """What happens to each RTP packet of one direction, decided by a seeded RNG so a
    failing run can be replayed packet for packet (the timing of the OS is not)."""

    loss: float = 0.0  # probability a packet is dropped
    jitter: float = 0.0  # extra delay, uniform in [0, jitter] seconds
    reorder: float = 0.0  # probability a packet is held back behind the next two
    seed: int = 1


@dataclass
class RelayStats:
    forwarded: int = 0
    dropped: int = 0
    held_back: int = 0  # deliberately reordered
    rtcp: int = 0
    unrouted: int = 0  # arrived before the SDP told us where to send it


# One leg of the relay faces one client: it receives that client's RTP/RTCP and sends
# the other client's media to it, from the same ports (so the stream looks symmetric).
_LEGS = ("a", "b")


@dataclass
class _Leg:
    rtp: socket.socket
    rtcp: socket.socket
    port: int  # kept: the test asks for it after close()
    target_rtp: Addr | None = None
    target_rtcp: Addr | None = None
    rng: random.Random = field(default_factory=random.Random)
    impairment: Impairment = field(default_factory=Impairment)


def _bind_pair(host: str) -> tuple[socket.socket, socket.socket]:
    """An even RTP port with RTCP on the next one, as RFC 3550 §11 expects and as the
    clients assume when the SDP has no a=rtcp."""
    for _ in range(64):
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp.bind((host, 0))
        port = rtp.getsockname()[1]
        if port % 2 == 0 and port < 65535:
            rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                rtcp.bind((host, port + 1))
            except OSError:
                rtcp.close()
            else:
                return rtp, rtcp
        rtp.close()
    raise RuntimeError("no free even/odd UDP port pair")


class RtpRelay:
    """Two legs, "a" (faces the caller) and "b" (faces the callee). Media that arrives
    on leg a goes out of leg b to the callee (impaired by `to_b`), and vice versa."""

    def __init__(self, to_b: Impairment | None = None, to_a: Impairment | None = None,
                 host: str = "127.0.0.1") -> None:
        self.host = host
        self.legs: dict[str, _Leg] = {}
        for name, imp in zip(_LEGS, (to_a or Impairment(), to_b or Impairment()), strict=True):
            rtp, rtcp = _bind_pair(host)
            # A leg's impairment applies to what it *sends*, i.e. to what its client hears.
            self.legs[name] = _Leg(rtp, rtcp, int(rtp.getsockname()[1]),
                                   rng=random.Random(imp.seed), impairment=imp)
        self.stats = {name: RelayStats() for name in _LEGS}  # by receiving client
        self._queue: list[tuple[float, int, socket.socket, bytes, Addr]] = []
        self._order = itertools.count()  # tie-breaker: heapq must never compare sockets
        self._held: dict[str, tuple[bytes, Addr, int] | None] = dict.fromkeys(_LEGS)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rtp-relay", daemon=True)
        self._thread.start()

    def port(self, leg: str) -> int:
        return self.legs[leg].port

    def set_target(self, leg: str, rtp: Addr, rtcp: Addr) -> None:
        """Where leg `leg`'s client really receives (from that client's own SDP)."""
        self.legs[leg].target_rtp, self.legs[leg].target_rtcp = rtp, rtcp

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for leg in self.legs.values():
            leg.rtp.close()
            leg.rtcp.close()

    # -- the loop ---------------------------------------------------------------------
    def _run(self) -> None:
        sockets = {}
        for name, leg in self.legs.items():
            sockets[leg.rtp] = (name, False)
            sockets[leg.rtcp] = (name, True)
        while not self._stop.is_set():
            now = time.monotonic()
            while self._queue and self._queue[0][0] <= now:
                _, _, sock, data, addr = heapq.heappop(self._queue)
                try:
                    sock.sendto(data, addr)
                except OSError:
                    pass  # the client has gone; the test sees it elsewhere
            wait = POLL_S if not self._queue else max(0.0, min(POLL_S, self._queue[0][0] - now))
            readable, _, _ = select.select(list(sockets), [], [], wait)
            for sock in readable:
                try:
                    data, _src = sock.recvfrom(65535)
                except OSError:
                    continue
                name, is_rtcp = sockets[sock]
                self._forward(name, is_rtcp, data)

    def _forward(self, from_leg: str, is_rtcp: bool, data: bytes) -> None:
        to_leg = "b" if from_leg == "a" else "a"
        out = self.legs[to_leg]
        stats = self.stats[to_leg]
        target = out.target_rtcp if is_rtcp else out.target_rtp
        if target is None:
            stats.unrouted += 1
            return
        if is_rtcp:
            # Reports are left alone: the point is to impair the audio, and RTCP loss
            # would only make the receiver statistics harder to reason about.
            stats.rtcp += 1
            self._schedule(0.0, out.rtcp, data, target)
            return
        imp, rng = out.impairment, out.rng
        # Draw all three numbers for every packet so the pattern of one impairment does
        # not shift when another is switched on or off.
        lost, delay, reorder = rng.random(), rng.uniform(0.0, imp.jitter), rng.random()
        if lost < imp.loss:
            stats.dropped += 1
            return
        stats.forwarded += 1
        held = self._held[to_leg]
        if held is not None:
            # Released after the packet that follows it: a real swap on the wire.
            held_data, held_addr, left = held
            left -= 1
            self._held[to_leg] = None if left == 0 else (held_data, held_addr, left)
            self._schedule(delay, out.rtp, data, target)
            if left == 0:
                self._schedule(delay + 0.001, out.rtp, held_data, held_addr)
            return
        if reorder < imp.reorder:
            stats.held_back += 1
            self._held[to_leg] = (data, target, 2)
            return
        self._schedule(delay, out.rtp, data, target)

    def _schedule(self, delay: float, sock: socket.socket, data: bytes, addr: Addr) -> None:
        heapq.heappush(self._queue, (time.monotonic() + delay, next(self._order), sock, data,
                                     addr))


class SdpRewritingHop:
    """A stateless SIP hop (RFC 3261 §16.11 in miniature) for one UA: requests from the
    UA go to `upstream` under a Via of ours; responses come back to us (that Via) and
    go to the UA with our Via removed. Any SDP the UA sends is rewritten to leg "b" of
    the relay (so the callee sends there), any SDP coming back to leg "a"."""

    def __init__(self, upstream: Addr, relay: RtpRelay, host: str = "127.0.0.1") -> None:
        self.upstream = upstream
        self.relay = relay
        self.host = host
        # Two sockets so the direction of a datagram is known from where it arrived.
        self.ua_side = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.ua_side.bind((host, 0))
        self.net_side = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.net_side.bind((host, 0))
        self.port = int(self.ua_side.getsockname()[1])
        self.ua_addr: Addr | None = None
        self.rewritten = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sdp-hop", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.ua_side.close()
        self.net_side.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            readable, _, _ = select.select([self.ua_side, self.net_side], [], [], POLL_S)
            for sock in readable:
                try:
                    data, src = sock.recvfrom(65535)
                except OSError:
                    continue
                try:
                    if sock is self.ua_side:
                        self._from_ua(data, (src[0], src[1]))
                    else:
                        self._from_network(data)
                except (ParseError, ValueError) as err:
                    # Kept for the test's failure message; the hop itself carries on.
                    self.errors.append(f"{type(err).__name__}: {err}")

    def _from_ua(self, data: bytes, src: Addr) -> None:
        msg = parse(data)
        if not isinstance(msg, Request):
            return  # the UA answering a request of ours: none are sent through the hop
        self.ua_addr = src
        # The branch is derived from the UA's, so a retransmission maps to the same
        # upstream transaction, as §16.11 asks of a stateless proxy.
        branch = "z9hG4bKhop" + (msg.top_via.params.get("branch") or "x")[-24:]
        msg.headers.prepend("Via", f"SIP/2.0/UDP {self.host}:{self.net_side.getsockname()[1]}"
                                   f";branch={branch}")
        self._rewrite(msg, "b")
        self.net_side.sendto(msg.serialise(), self.upstream)

    def _from_network(self, data: bytes) -> None:
        msg = parse(data)
        if not isinstance(msg, Response) or self.ua_addr is None:
            return
        msg.headers.pop_first("Via")
        self._rewrite(msg, "a")
        self.ua_side.sendto(msg.serialise(), self.ua_addr)

    def _rewrite(self, msg: Request | Response, leg: str) -> None:
        """Point the SDP's audio stream at relay leg `leg`; tell the relay where the
        sender of this SDP really receives (the *other* leg sends to it)."""
        if not msg.body or (msg.content_type or "").split(";")[0].strip() != "application/sdp":
            return
        sdp = SessionDescription.parse(msg.body)
        other = "a" if leg == "b" else "b"
        for media in sdp.media:
            if media.media != "audio" or media.rejected:
                continue
            rtp, rtcp = sdp.stream_address(media), sdp.rtcp_address(media)
            if rtp is None or rtcp is None:
                continue
            self.relay.set_target(other, rtp, rtcp)
            media.port = self.relay.port(leg)
            media.connection = Connection("IN", "IP4", self.relay.host)
            media.remove_attribute("rtcp")  # RTCP at port + 1 of the relay leg
        if sdp.connection is not None:
            sdp.connection = Connection("IN", "IP4", self.relay.host)
        msg.body = sdp.serialise()
        self.rewritten += 1
