# -*- test-case-name: tests.sipcore.test_protection -*-
"""Flood protection and resource bounds for one `SipEndpoint`.

A SIP server on a public address is scanned (sipvicious & co.) and flooded within
minutes of going up. This module decides, cheaply and before any parsing where it
can, what to drop:

- `RateLimiter` ("pike", after Kamailio's module): a token bucket per source IP.
  An IP that sends more than `requests` packets per `window` seconds is banned for
  `ban` seconds: its datagrams are dropped unparsed and its TCP/TLS connections
  refused. One warning line is logged per ban, never one per packet. The per-IP
  table is an LRU bounded by `max_ips`, and idle entries expire.
- `ConnectionLimiter`: caps on concurrent inbound TCP/TLS connections, per IP and
  overall (each one holds a buffer and an idle timer).
- `OverloadGuard`: when live transactions exceed a cap, or the reactor lags, new
  requests are answered `503 Service Unavailable` with `Retry-After`, statelessly
  (RFC 3261 §21.5.4, §20.33) rather than queued until memory runs out. "Live" means
  in progress: transactions that have answered and only linger to absorb
  retransmissions (Completed/Confirmed/Accepted, up to 32 s over UDP, about 1.2 KB
  each) have a separate, much larger cap that bounds their memory.

Networks given as `trusted` (e.g. a PBX or another proxy of ours) are exempt from
the per-IP limits. Time always comes from an injected `IReactorTime` (`seconds()`,
`callLater()`), so tests drive it with `twisted.internet.task.Clock`.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from twisted.logger import Logger

log = Logger(namespace="sipcore.protection")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(slots=True)
class ProtectionConfig:
    """Every knob, with defaults generous enough not to throttle `make bench`."""

    #: Packets per `pike_window` seconds one IP may send; 0 disables rate limiting.
    pike_requests: int = 2000
    pike_window: float = 2.0
    #: How long an IP over the limit is ignored, in seconds.
    pike_ban: float = 30.0
    #: Most source IPs tracked at once (LRU); about 200 bytes each.
    pike_max_ips: int = 100_000
    #: Networks exempt from rate limiting and per-IP connection caps.
    trusted: tuple[IPNetwork, ...] = ()
    #: Concurrent inbound TCP/TLS connections per IP and in total; 0 = unlimited.
    max_connections_per_ip: int = 64
    max_connections: int = 10_000
    #: Idle TCP/TLS connections are closed after this many seconds.
    idle_timeout: float = 300.0
    #: Live (in-progress) transactions, server + client, above which new requests get
    #: 503; 0 = off. Lingering ones (answered, absorbing retransmissions) do not count.
    max_transactions: int = 40_000
    #: Lingering transactions above which new requests get 503; 0 = off. Each keeps
    #: only its last response's bytes (~1.2 KB in all, most of it retired into the
    #: table, out of the garbage collector's sight), so 1,000,000 is ~1.2 GB: UDP
    #: REGISTER at 31,000/s held for Timer J (32 s).
    max_lingering: int = 1_000_000
    #: Reactor lag (seconds) above which new requests get 503; 0 = off.
    max_lag: float = 2.0
    #: How long (seconds) the oldest unread UDP datagram may have waited in the socket
    #: before new calls (INVITE) get 503; 0 = off. Below T1 (0.5 s), so that clients are
    #: answered before they retransmit: see OverloadGuard.
    max_queue_delay: float = 0.25
    #: How long (seconds) a UDP request may have waited in the socket before it is
    #: dropped unread; 0 = off. Below T1 (0.5 s): see OverloadGuard.
    max_request_age: float = 0.4
    #: Retry-After value in 503 answers, seconds (RFC 3261 §20.33).
    retry_after: int = 5


def parse_rate(text: str) -> tuple[int, float]:
    """`N/W` (N packets per W seconds; `N/Ws`, `N/s` = per second) or `0` (off).

    Raises ValueError with a one-line reason.
    """
    text = text.strip().lower()
    if text in ("0", "off", "none"):
        return 0, 1.0
    count, sep, window = text.partition("/")
    window = window.strip().removesuffix("s") or "1"
    try:
        requests = int(count)
        seconds = float(window) if sep else 1.0
    except ValueError:
        raise ValueError(f"bad rate {text!r}: use N/SECONDS, e.g. 2000/2, or 0") from None
    if requests < 0 or not seconds > 0:
        raise ValueError(f"bad rate {text!r}: N must be >= 0 and SECONDS > 0")
    return requests, seconds


def parse_network(text: str) -> IPNetwork:
    """An address or CIDR (`10.0.0.0/8`, `2001:db8::/32`); raises ValueError."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(f"bad network {text!r}: use an address or CIDR") from None


class Trusted:
    """Membership test for the trusted networks, cached per address string."""

    def __init__(self, networks: tuple[IPNetwork, ...] = ()) -> None:
        self.networks = networks
        self._cache: dict[str, bool] = {}

    def __contains__(self, host: str) -> bool:
        if not self.networks:
            return False
        hit = self._cache.get(host)
        if hit is None:
            try:
                addr = ipaddress.ip_address(host.strip("[]"))
            except ValueError:
                hit = False
            else:
                hit = any(addr in net for net in self.networks)
            if len(self._cache) > 4096:
                self._cache.clear()  # bounded: hostile sources must not grow it
            self._cache[host] = hit
        return hit


class _Bucket:
    __slots__ = ("tokens", "stamp", "banned_until", "dropped")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp
        self.banned_until = 0.0
        self.dropped = 0


class RateLimiter:
    """Per-IP token bucket: capacity `requests`, refilled at `requests/window` per s.

    A token bucket rather than a fixed window so that a burst straddling two windows
    cannot pass twice the limit, and O(1) work and memory per packet.
    """

    def __init__(
        self, clock: Any, requests: int, window: float, ban: float, max_ips: int = 100_000
    ) -> None:
        self.clock = clock
        self.requests = requests
        self.window = window
        self.ban = ban
        self.max_ips = max(1, max_ips)
        self.rate = requests / window if window > 0 else float(requests)
        self._table: OrderedDict[str, _Bucket] = OrderedDict()
        self.bans = 0  # total bans so far (for status pages and tests)

    @property
    def enabled(self) -> bool:
        return self.requests > 0

    def __len__(self) -> int:
        return len(self._table)

    def is_banned(self, host: str) -> bool:
        bucket = self._table.get(host)
        return bucket is not None and bucket.banned_until > self.clock.seconds()

    def allow(self, host: str) -> bool:
        """Count one packet from `host`; False means drop it (banned)."""
        if not self.requests:
            return True
        now = self.clock.seconds()
        table = self._table
        bucket = table.get(host)
        if bucket is None:
            self._expire_one(now)
            bucket = table[host] = _Bucket(float(self.requests), now)
            if len(table) > self.max_ips:
                table.popitem(last=False)  # least recently seen
        else:
            table.move_to_end(host)
        if bucket.banned_until:
            if now < bucket.banned_until:
                bucket.dropped += 1
                return False
            log.info(
                "pike: {host} unblocked ({dropped} packets dropped during the ban)",
                host=host, dropped=bucket.dropped,
            )
            # A fresh start after the ban: a full bucket, as for a new source.
            bucket.banned_until = 0.0
            bucket.dropped = 0
            bucket.tokens = float(self.requests)
            bucket.stamp = now
        tokens = min(float(self.requests), bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        if tokens < 1.0:
            bucket.tokens = tokens
            bucket.banned_until = now + self.ban
            bucket.dropped = 1
            self.bans += 1
            log.warn(
                "pike: blocking {host} for {ban:g} s (more than {requests} requests"
                " in {window:g} s)",
                host=host, ban=self.ban, requests=self.requests, window=self.window,
            )
            return False
        bucket.tokens = tokens - 1.0
        return True

    def _expire_one(self, now: float) -> None:
        # Amortised expiry without a timer: look at the least recently seen entry on
        # each new source. An entry idle for a full window has a full bucket again, so
        # forgetting it changes nothing (unless it is still banned).
        # A banned head is rotated to the back (bans must outlive LRU order), so it
        # cannot shield the idle entries behind it; two looks per new source suffice
        # to keep pace with the rate at which entries are added.
        table = self._table
        for _ in range(2):
            if not table:
                return
            host, bucket = next(iter(table.items()))
            if bucket.banned_until > now:
                table.move_to_end(host)
            elif now - bucket.stamp >= self.window:
                del table[host]
            else:
                return


class ConnectionLimiter:
    """Counts inbound stream connections per IP and in total."""

    def __init__(self, per_ip: int, total: int) -> None:
        self.per_ip = per_ip
        self.total = total
        self.count = 0
        self._by_ip: dict[str, int] = {}
        self._refused_logged: set[str] = set()

    def open(self, host: str, trusted: bool = False) -> bool:
        """Register a new connection from `host`; False means refuse it."""
        if self.total and self.count >= self.total:
            self._refused(host, f"the global cap of {self.total}")
            return False
        current = self._by_ip.get(host, 0)
        if self.per_ip and not trusted and current >= self.per_ip:
            self._refused(host, f"{self.per_ip} connections from it")
            return False
        self._by_ip[host] = current + 1
        self.count += 1
        return True

    def close(self, host: str) -> None:
        current = self._by_ip.get(host, 0)
        if current <= 1:
            self._by_ip.pop(host, None)
            self._refused_logged.discard(host)
        else:
            self._by_ip[host] = current - 1
        self.count = max(0, self.count - 1)

    def connections_from(self, host: str) -> int:
        return self._by_ip.get(host, 0)

    def _refused(self, host: str, why: str) -> None:
        # One line per source until its connections drop to zero, not one per attempt.
        if host not in self._refused_logged and len(self._refused_logged) < 1024:
            self._refused_logged.add(host)
            log.warn("refusing TCP/TLS connections from {host}: {why}", host=host, why=why)


@dataclass(slots=True)
class OverloadGuard:
    """Decides when to shed new requests with 503 (RFC 3261 §21.5.4).

    The lag monitor wakes every `interval` seconds and measures how late it woke:
    a reactor that lags is a server already behind, and answering 503 is cheaper than
    starting transactions it cannot finish in time.

    The lag says nothing about a server that is merely short of CPU: it reads its UDP
    socket a burst at a time and goes back to the reactor between bursts, so timers
    stay on time while the socket's queue grows. `queue_delay` (set by the transport:
    how long the first datagram of each read burst waited in the kernel) measures that
    backlog. Once it passes T1, clients retransmit what is still queued, each copy
    costs a full parse, and the server collapses: at 1.3 times its capacity, one
    worker completed 509 calls/s instead of 1,745. Answering new calls 503 while the
    queue is too old keeps it short, and the calls in progress (responses, ACK, BYE are
    never shed for this) on time. Only new calls: a refused INVITE saves the five more
    messages of its call, while refusing a REGISTER costs about what answering it
    does (the parse is most of both), so shedding REGISTERs on this signal only turned
    late successes into failures (one worker at 1.1 times its REGISTER capacity: 1,573
    instead of 12,482 completed a second).

    A request that waited in the socket longer than `max_request_age` (0.4 s) is
    dropped unread by the transport (`dropped_stale`). Why: a request answered after
    T1 (0.5 s) has been retransmitted, and the copy, queued behind it, costs a parse
    too. So a server that fell behind once (a stall, a burst) does twice the work per
    request and stays behind at a load it could carry: 2 workers at 15,500 REGISTER/s
    never caught up after a 1 s stall, 11% failed. Dropping costs a read: the queue
    drains to the limit, and whatever is answered is answered before T1, once. The
    dropped ones are answered when their retransmission comes. The limit is below T1
    by a margin for the burst's own work, so that the queue settling at the limit does
    not settle where every answer crosses its sender's retransmission. Responses and
    ACKs are never dropped: nothing would send them again on its own.
    """

    clock: Any
    max_transactions: int = 40_000
    max_lag: float = 2.0
    retry_after: int = 5
    max_lingering: int = 1_000_000
    max_queue_delay: float = 0.25
    max_request_age: float = 0.4
    interval: float = 0.5
    lag: float = 0.0
    #: Seconds the first datagram of the latest UDP read burst waited (the transport's).
    queue_delay: float = 0.0
    shed: int = 0
    #: UDP requests dropped for having waited past `max_request_age`.
    stale: int = 0
    _call: Any = None
    _expected: float = 0.0
    _logged_at: float | None = field(default=None)
    _stale_logged_at: float | None = field(default=None)
    _stale_since_log: int = 0

    def start(self) -> None:
        if self.max_lag > 0 and self._call is None:
            self._schedule()

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _schedule(self) -> None:
        self._expected = self.clock.seconds() + self.interval
        self._call = self.clock.callLater(self.interval, self._tick)

    def _tick(self) -> None:
        self.lag = max(0.0, self.clock.seconds() - self._expected)
        self._schedule()

    def overloaded(
        self, live_transactions: int, in_dialog: bool = False, lingering: int = 0,
        new_call: bool = False,
    ) -> bool:
        """Should a new request be shed? In-dialog ones only at twice the caps.

        ``live_transactions`` counts those in progress; ``lingering`` those that have
        answered and wait out a timer absorbing retransmissions (each new request
        becomes one of those, so their cap bounds memory, not work). ``new_call``: an
        INVITE outside a dialog, the only request `queue_delay` sheds (see above).
        """
        factor = 2 if in_dialog else 1
        if self.max_transactions and live_transactions >= factor * self.max_transactions:
            self._note(f"{live_transactions} live transactions")
            return True
        if self.max_lingering and lingering >= factor * self.max_lingering:
            self._note(f"{lingering} lingering transactions")
            return True
        if in_dialog:
            return False
        if self.max_lag > 0 and self.lag > self.max_lag:
            self._note(f"reactor lagging {self.lag:.1f} s")
            return True
        if new_call and self.max_queue_delay > 0 and self.queue_delay > self.max_queue_delay:
            self._note(f"datagrams queued {self.queue_delay * 1000:.0f} ms")
            return True
        return False

    def dropped_stale(self, waited: float) -> None:
        """The transport dropped a request that had waited `waited` seconds unread."""
        self.stale += 1
        self._stale_since_log += 1
        now = self.clock.seconds()
        if self._stale_logged_at is None or now - self._stale_logged_at >= 10.0:
            self._stale_logged_at = now
            log.warn(
                "overload: dropped {count} UDP request(s) that waited over {limit:.0f} ms"
                " unread (the latest {waited:.0f} ms); their senders retransmit them",
                count=self._stale_since_log, limit=self.max_request_age * 1000,
                waited=waited * 1000,
            )
            self._stale_since_log = 0

    def _note(self, why: str) -> None:
        self.shed += 1
        now = self.clock.seconds()
        # At most one line per 10 s while overloaded: the log must not become the load.
        if self._logged_at is None or now - self._logged_at >= 10.0:
            self._logged_at = now
            log.warn("overload: answering new requests 503 ({why})", why=why)


class Protection:
    """Everything `SipEndpoint` and `SipStack` consult, built from one config."""

    def __init__(self, clock: Any, config: ProtectionConfig | None = None) -> None:
        self.config = config = config or ProtectionConfig()
        self.clock = clock
        self.trusted = Trusted(config.trusted)
        self.pike = RateLimiter(
            clock, config.pike_requests, config.pike_window, config.pike_ban,
            config.pike_max_ips,
        )
        self.connections = ConnectionLimiter(
            config.max_connections_per_ip, config.max_connections
        )
        self.overload = OverloadGuard(
            clock, config.max_transactions, config.max_lag, config.retry_after,
            max_lingering=config.max_lingering, max_queue_delay=config.max_queue_delay,
            max_request_age=config.max_request_age,
        )
        self.idle_timeout = config.idle_timeout

    def start(self) -> None:
        self.overload.start()

    def stop(self) -> None:
        self.overload.stop()

    def allow_packet(self, host: str) -> bool:
        """Count one datagram or stream message from `host`; False = drop it."""
        if not self.pike.enabled or host in self.trusted:
            return True
        return self.pike.allow(host)

    def allow_connection(self, host: str) -> bool:
        """A new inbound TCP/TLS connection; True registers it (call `connection_closed`)."""
        trusted = host in self.trusted
        if not trusted and self.pike.enabled and self.pike.is_banned(host):
            return False
        return self.connections.open(host, trusted)

    def connection_closed(self, host: str) -> None:
        self.connections.close(host)

    def overloaded(
        self, live_transactions: int, in_dialog: bool = False, lingering: int = 0,
        new_call: bool = False,
    ) -> bool:
        return self.overload.overloaded(live_transactions, in_dialog, lingering, new_call)
