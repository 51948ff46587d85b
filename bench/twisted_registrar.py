"""Twisted's own `twisted.protocols.sip.RegisterProxy` on UDP: a yardstick, not our code.

Issue 9 quotes "Twisted's bundled twisted.protocols.sip (stateless, cannot actually
complete calls): about 17,000 REGISTER/s on one core". This script runs exactly that
code so that bench/compare.py can measure it in the same run, on the same machine and
with the same sipp ramp as sipproxy: a `RegisterProxy` whose `registry` and `locator`
are one `InMemoryRegistry(--domain)`, no portal (no auth), listening on one UDP port.

It is only a yardstick. It is stateless (no transactions: a retransmitted REGISTER is
simply processed again), it ignores the request's Expires (every binding gets 3600 s),
keeps one contact per user and never routes a call. None of that is ours to fix.

One addition to Twisted's behaviour: OPTIONS whose Request-URI has no user part (that
is, addressed to this server) is answered 200 here. Twisted would forward it by its To
header and answer 404 (no such user); bench/sipplib.py's readiness check, latency probe
and between-steps settle expect 200 to OPTIONS. Every other request, REGISTER included,
runs Twisted's code unchanged. Nothing is printed per request (Twisted's log.msg calls
go to its bounded start-up buffer, since no log observer is started).

    python bench/twisted_registrar.py --port P [--interface 127.0.0.1] [--domain a.lab]

SIGTERM or SIGINT stops the reactor; the process then exits 0.
"""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.protocols import sip

reactor: Any = _reactor  # the global reactor's interfaces are not in its static type


class YardstickRegistrar(sip.RegisterProxy):
    """Twisted's RegisterProxy, plus 200 to OPTIONS addressed to the server itself."""

    def handle_OPTIONS_request(self, message: sip.Request, addr: tuple[str, int]) -> None:
        if message.uri.username:  # for a user: Twisted's own (stateless forwarding) path
            self.handle_request_default(message, addr)
            return
        response = self.responseFromRequest(200, message)
        response.addHeader("content-length", "0")
        self.deliverResponse(response)


def build(interface: str, port: int, domain: str) -> YardstickRegistrar:
    registry = sip.InMemoryRegistry(domain)
    proxy = YardstickRegistrar(host=interface, port=port)
    proxy.registry = registry
    proxy.locator = registry
    return proxy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True, help="UDP port to listen on")
    parser.add_argument("--interface", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--domain", default="a.lab", help="the registrar's domain")
    args = parser.parse_args(argv)

    proxy = build(args.interface, args.port, args.domain)
    reactor.listenUDP(args.port, proxy, interface=args.interface)

    def stop(signum: int, frame: FrameType | None) -> None:
        reactor.callFromThread(lambda: reactor.running and reactor.stop())

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"twisted_registrar: twisted.protocols.sip.RegisterProxy on udp "
          f"{args.interface}:{args.port}, domain {args.domain}", flush=True)
    reactor.run(installSignalHandlers=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
