# -*- test-case-name: tests.proxy.test_web_status -*-
"""`WebStatus`: the ``--web PORT`` listener of a SIP service, and the observer behind it.

Built by `proxy.service.SipService` when ``config['web']`` is set: the observer goes
into the stack's tracer slot before the stack exists, and `start` attaches it to the
stack and listens on the SIP interface (loopback in labs: the page shows who is
registered, so it is not meant for the open internet).
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.web.server import Site

from proxy.web.metrics import build_registry
from proxy.web.pages import build_root
from proxy.web.status import StatusObserver
from sipcore.trace.hook import role_name

log = Logger(namespace="proxy.web")


class _QuietSite(Site):
    """No access log: the page polls every few seconds and would drown the SIP log."""

    def log(self, request: Any) -> None:
        pass


class WebStatus:
    def __init__(self, config: Any, role: Any, reactor: Any) -> None:
        self.reactor = reactor
        self.interface = config.get("interface") or "127.0.0.1"
        self.requested_port = int(config["web"])
        kind = role_name(role)
        domains = " ".join(config.get("domains") or [])
        self.observer = StatusObserver(label=f"{kind} {domains}".strip(), role=kind)
        self.registry = build_registry(self.observer)
        self.site = _QuietSite(build_root(self.observer, self.registry))
        self.site.displayTracebacks = False  # never a traceback to a browser
        self.site.noisy = False
        self.listening: Any = None

    @property
    def port(self) -> int | None:
        """The port actually listened on (``--web 0`` picks a free one)."""
        return None if self.listening is None else self.listening.getHost().port

    def start(self, stack: Any, role: Any) -> None:
        self.observer.attach(stack, role)
        try:
            self.listening = self.reactor.listenTCP(
                self.requested_port, self.site, interface=self.interface
            )
        except CannotListenError as err:
            # As with a bad --trace path: the SIP service matters more than its page.
            print(f"--web {self.requested_port}: cannot listen on {self.interface}: "
                  f"{err.socketError}; running without the status page", file=sys.stderr)
            return
        host = f"[{self.interface}]" if ":" in self.interface else self.interface
        log.info("status page on http://{host}:{port}/", host=host, port=self.port)

    def stop(self) -> defer.Deferred[Any]:
        listening, self.listening = self.listening, None
        if listening is None:
            return defer.succeed(None)
        return defer.maybeDeferred(listening.stopListening)
