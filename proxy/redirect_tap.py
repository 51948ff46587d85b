# -*- test-case-name: tests.interop.test_proxy_crossdomain -*-
"""`twistd sipredirect`: the redirect server (RFC 3261 §8.3)."""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet import reactor

from proxy.service import SipService
from sipcore.twisted.options import ServerOptions


class Options(ServerOptions):
    synopsis = "[options]"
    longdesc = (
        "A SIP redirect server: 302 with the registered Contacts (--location) or the "
        "server of the domain (--route DOMAIN=HOST:PORT); 404 for unknown users of its "
        "own domains (--domain), 604 for everything else."
    )


def makeService(config: Options) -> service.IService:  # noqa: N802 - twistd's name
    from proxy.redirect import RedirectRole

    def build(clock: Any) -> Any:
        return RedirectRole(config, clock)

    return SipService(config, build, reactor)
