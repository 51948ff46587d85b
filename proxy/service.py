# -*- test-case-name: tests.interop.test_sipproxy_options -*-
"""A twistd service that runs one role on a `SipStack` (sipproxy, sipregistrar, sipredirect)."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.logger import Logger

from proxy.lifecycle import drain, reload_users
from proxy.web.tracing import fan_out
from sipcore import accel
from sipcore.accel import running_compiled
from sipcore.trace.hook import tracer_from_config
from sipcore.twisted.protection import Protection
from sipcore.twisted.stack import SipStack

log = Logger(namespace="proxy.service")


class SipService(service.Service):
    """Builds the role and its stack at start, stops them cleanly at shutdown."""

    def __init__(self, config: Any, build_role: Callable[[Any], Any], reactor: Any) -> None:
        self.config = config
        self.build_role = build_role
        self.reactor = reactor
        self.role: Any = None
        self.stack: SipStack | None = None
        self.tracer: Any = None
        self.web: Any = None  # proxy.web.service.WebStatus with --web

    def startService(self) -> None:  # noqa: N802
        super().startService()
        config = self.config
        context = config.get("tls-context")
        self.role = self.build_role(self.reactor)
        self.tracer = tracer_from_config(config, self.role, self.reactor)
        if config.get("web") is not None:
            from proxy.web.service import WebStatus  # twisted.web only when asked for

            self.web = WebStatus(config, self.role, self.reactor)
        self.stack = SipStack(
            self.reactor,
            self.role,
            interface=config["interface"],
            port=config["port"],
            tls_port=config.get("tls-port"),
            tls_context=context,
            log_messages=not config.get("quiet"),
            tracer=fan_out(self.tracer, self.web and self.web.observer),
            protection=Protection(self.reactor, config.get("protection")),
            # `--workers` (proxy.workers): SO_REUSEPORT sockets and a per-worker send port.
            **(config.get("endpoint-options") or {}),
        )
        self.role.stack = self.stack
        start = getattr(self.role, "start", None)
        if start is not None:
            start()
        self.stack.start()
        self._install_sighup()
        if self.web is not None:
            self.web.start(self.stack, self.role)
        log.info(
            "listening on {interface}:{port} (UDP, TCP{tls}) for {domains}; hot path {build}",
            interface=config["interface"], port=self.stack.endpoint.port,
            tls=f", TLS {self.stack.endpoint.tls_port}" if context else "",
            domains=", ".join(config.get("domains") or []),
            # sipcore.accel: "compiled", or why the sources run ("none", "stale", ...).
            build="compiled" if running_compiled() else f"from sources ({accel.BUILD})",
        )

    def _install_sighup(self) -> None:
        """SIGHUP re-reads --users (proxy.lifecycle.reload_users), without a restart."""
        if not hasattr(signal, "SIGHUP"):
            return

        def on_sighup(signum: int, frame: Any) -> None:
            # A signal handler may run between any two bytecodes: do the work on the
            # reactor's next turn, never inside the handler.
            self.reactor.callFromThread(self.reload_users)

        try:
            signal.signal(signal.SIGHUP, on_sighup)
        except ValueError:
            pass  # not the main thread (an embedding test harness): no reload signal

    def reload_users(self) -> bool:
        role = self.role
        return reload_users(self.config.get("users"), [role, getattr(role, "registrar", None)])

    def stopService(self) -> Any:  # noqa: N802
        super().stopService()
        if self.stack is None:
            return None
        stack = self.stack
        # SIGTERM: answer or cancel what is in flight (bounded by --shutdown-grace)
        # while the sockets are still open, then close them and flush the store.
        grace = float(self.config.get("shutdown-grace") or 0)
        d = drain(stack, self.role, self.reactor, grace)
        d.addErrback(lambda f: log.failure("drain failed", f))
        d.addCallback(lambda _: stack.stop())
        if self.web is not None:
            web = self.web
            d.addBoth(lambda result: web.stop().addBoth(lambda _: result))
        stop = getattr(self.role, "stop", None)
        if stop is not None:
            d.addBoth(lambda _: stop())
        if self.tracer is not None:
            # Last, so that whatever the role sends while stopping is in the trace.
            d.addBoth(lambda result: (self.tracer.close(), result)[1])
        return d
