# -*- test-case-name: tests.interop.test_sipproxy_options -*-
"""`twistd sipproxy`: the stateful proxy with its embedded registrar."""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet import reactor

from proxy.service import SipService
from sipcore.twisted.options import ProxyOptions


class Options(ProxyOptions):
    synopsis = "[options]"
    longdesc = "A SIP proxy and registrar for the given domains (default a.lab)."


def makeService(config: Options) -> service.IService:  # noqa: N802 - twistd's name
    from proxy.core import ProxyRole

    def build(clock: Any) -> Any:
        return ProxyRole(config, clock)

    return SipService(config, build, reactor)
