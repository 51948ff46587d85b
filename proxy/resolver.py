# -*- test-case-name: tests.proxy.test_resolver -*-
"""Locating SIP servers (RFC 3263) with twisted.names, plus the static domain map.

`SipResolver.resolve(uri)` returns a Deferred list of `Address`es to try in order:

1. an IP literal (or maddr) is used as it is (§4.1/§4.2 of RFC 3263 do not apply);
2. a host in the static map (``--route DOMAIN=HOST:PORT``) goes there;
3. with a DNS server (``--dns HOST:PORT``): NAPTR (§4.1) for the transport when the URI
   names none, then SRV ``_sip._udp``/``_sip._tcp``/``_sips._tcp`` (§4.2, ordered by
   priority, then weight), then A (§4.2 with an explicit port, or when no SRV exists);
4. without one, the system resolver (A record), port 5060.

Every failure (NXDOMAIN, timeout, garbage) becomes an empty list: the caller decides
what that means (next cross-domain mechanism, or 404/503).
"""

from __future__ import annotations

import random
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.names import client, dns

from proxy.routing import is_ip_literal, uri_address
from sipcore.twisted.transport import Address
from sipcore.uri import SipURI

__all__ = ["SipResolver", "order_srv"]

log = Logger(namespace="proxy.resolver")

#: RFC 3263 §4.1: NAPTR services we understand, and the SRV prefix each implies.
_NAPTR_SERVICES = {
    "sip+d2u": ("UDP", "_sip._udp."),
    "sip+d2t": ("TCP", "_sip._tcp."),
    "sips+d2t": ("TLS", "_sips._tcp."),
}
_SRV_PREFIX = {"UDP": "_sip._udp.", "TCP": "_sip._tcp.", "TLS": "_sips._tcp."}
#: Bounded DNS waits: two tries, 1 s then 2 s.
DNS_TIMEOUT = (1, 2)


def order_srv(records: list[Any], rng: random.Random | None = None) -> list[Any]:
    """RFC 2782 ordering: ascending priority; within one, weighted random order."""
    rng = rng or random.Random()
    out: list[Any] = []
    by_priority: dict[int, list[Any]] = {}
    for rec in records:
        by_priority.setdefault(rec.priority, []).append(rec)
    for priority in sorted(by_priority):
        # RFC 2782: weight-0 records first, so that the running-sum pick below gives
        # them the (small) chance the RFC means them to have.
        pool = sorted(by_priority[priority], key=lambda r: r.weight != 0)
        while pool:
            total = sum(r.weight for r in pool)
            pick = rng.uniform(0, total) if total else 0
            acc = 0.0
            for i, rec in enumerate(pool):
                acc += rec.weight
                if acc >= pick:
                    out.append(pool.pop(i))
                    break
            else:
                out.append(pool.pop())
    return out


class SipResolver:
    """RFC 3263 server location on top of twisted.names (or the system resolver)."""

    def __init__(
        self,
        reactor: Any,
        static: dict[str, tuple[str, int]] | None = None,
        dns_server: tuple[str, int] | None = None,
    ) -> None:
        self.reactor = reactor
        self.static = {k.lower(): v for k, v in (static or {}).items()}
        self.dns: Any = None
        if dns_server is not None:
            self.dns = client.Resolver(servers=[dns_server], reactor=reactor)

    def static_route(self, host: str) -> Address | None:
        target = self.static.get(host.lower())
        if target is None:
            return None
        return Address("UDP", target[0], target[1])

    def resolve(self, uri: SipURI) -> defer.Deferred[list[Address]]:
        direct = uri_address(uri)
        if direct is not None:
            return defer.succeed([direct])
        host = (uri.params.get("maddr") or uri.host).lower()
        static = self.static_route(host)
        if static is not None:
            if not is_ip_literal(static.host):
                return self._a_records(static.host, static.port, static.transport)
            return defer.succeed([static])
        if self.dns is not None:
            d = self._rfc3263(uri, host)
        else:
            d = self._system(host, uri.port or 5060, (uri.transport or "udp").upper())
        d.addErrback(self._failed, host)
        return d

    def _failed(self, failure: Any, host: str) -> list[Address]:
        log.info("cannot resolve {host}: {err}", host=host, err=failure.getErrorMessage())
        return []

    # -- RFC 3263 ---------------------------------------------------------------------
    @defer.inlineCallbacks
    def _rfc3263(self, uri: SipURI, host: str) -> Any:
        transport = uri.transport.upper() if uri.transport else None
        if uri.scheme == "sips":
            transport = "TLS"
        if uri.port is not None:
            # §4.2: an explicit port means no SRV lookup, only A.
            result = yield self._a_records(host, uri.port, transport or "UDP")
            return result
        srv_names: list[tuple[str, str]] = []
        if transport is None:
            srv_names = yield self._naptr(host)
        if not srv_names:
            wanted = [transport] if transport else ["UDP", "TCP"]
            srv_names = [(t, _SRV_PREFIX[t] + host) for t in wanted]
        for transport_name, srv_name in srv_names:
            addresses = yield self._srv(srv_name, transport_name)
            if addresses:
                return addresses
        # §4.2: no SRV records -> A record of the domain itself, default port.
        result = yield self._a_records(host, 5061 if transport == "TLS" else 5060,
                                       transport or "UDP")
        return result

    @defer.inlineCallbacks
    def _naptr(self, host: str) -> Any:
        try:
            answers, _auth, _add = yield self.dns.lookupNamingAuthorityPointer(
                host, timeout=DNS_TIMEOUT
            )
        except Exception:
            return []
        records = [
            a.payload for a in answers if a.type == dns.NAPTR and a.payload is not None
        ]
        records.sort(key=lambda r: (r.order, r.preference))
        out = []
        for rec in records:
            service = rec.service.decode("ascii", "replace").lower()
            if service in _NAPTR_SERVICES and rec.flags.lower() == b"s":
                out.append((_NAPTR_SERVICES[service][0], str(rec.replacement)))
        return out

    @defer.inlineCallbacks
    def _srv(self, name: str, transport: str) -> Any:
        try:
            answers, _auth, additional = yield self.dns.lookupService(name, timeout=DNS_TIMEOUT)
        except Exception:
            return []
        records = [a.payload for a in answers if a.type == dns.SRV]
        glue = {
            str(a.name).lower(): a.payload.dottedQuad()
            for a in additional
            if a.type == dns.A
        }
        out: list[Address] = []
        for rec in order_srv(records):
            target = str(rec.target).rstrip(".").lower()
            if target in ("", "."):
                continue  # RFC 2782: "." means the service is decidedly not available
            if target in glue:
                out.append(Address(transport, glue[target], rec.port))
                continue
            out.extend((yield self._a_records(target, rec.port, transport)))
        return out

    @defer.inlineCallbacks
    def _a_records(self, host: str, port: int, transport: str) -> Any:
        if is_ip_literal(host):
            return [Address(transport, host.strip("[]"), port)]
        if self.dns is None:
            result = yield self._system(host, port, transport)
            return result
        try:
            answers, _auth, _add = yield self.dns.lookupAddress(host, timeout=DNS_TIMEOUT)
        except Exception:
            return []
        return [
            Address(transport, a.payload.dottedQuad(), port) for a in answers if a.type == dns.A
        ]

    @defer.inlineCallbacks
    def _system(self, host: str, port: int, transport: str) -> Any:
        try:
            ip = yield self.reactor.resolve(host, timeout=DNS_TIMEOUT)
        except Exception:
            return []
        return [Address(transport, ip, port)]
