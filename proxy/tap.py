# -*- test-case-name: tests.interop.test_sipproxy_options -*-
"""`twistd sipproxy`: the stateful proxy with its embedded registrar."""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet import reactor
from twisted.python import usage

from proxy.service import SipService
from registrar.location.replicated import GROUP_RE
from registrar.location.replicated import supported as replicable
from sipcore.twisted.options import ProxyOptions


def _positive_seconds(value: str, name: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise usage.UsageError(f"--{name} wants seconds, got {value!r}") from None
    if not 0 < seconds <= 86400:
        raise usage.UsageError(f"--{name} must be within (0, 86400] seconds, got {value!r}")
    return seconds


class Options(ProxyOptions):
    synopsis = "[options]"
    longdesc = "A SIP proxy and registrar for the given domains (default a.lab)."

    optParameters = [
        ["timer-c", None, "181",
         "Timer C (RFC 3261 §16.6 step 11): seconds an INVITE branch may ring "
         "before it is cancelled (the RFC wants more than 180)."],
        ["failover-timeout", None, "5",
         "Seconds without any answer before a DNS target or --upstream is given up "
         "for the next one."],
        ["workers", None, "1",
         "Processes sharing the port (SO_REUSEPORT), e.g. one per core. With memory: "
         "each worker keeps a copy replicated to the others (Linux); sqlite:PATH or "
         "redis://... are shared stores. See proxy/workers.py."],
        # Set by the supervisor on its workers' command lines, not by hand.
        ["worker-index", None, None, "(internal) this worker's number."],
        ["worker-ports", None, None, "(internal) every worker's send port, comma-separated."],
        ["worker-group", None, None,
         "(internal) the supervisor's id, naming the workers' replication sockets."],
    ]

    def postOptions(self) -> None:  # noqa: N802
        super().postOptions()
        self["timer-c"] = _positive_seconds(self["timer-c"], "timer-c")
        self["failover-timeout"] = _positive_seconds(
            self["failover-timeout"], "failover-timeout"
        )
        try:
            workers = int(self["workers"])
        except ValueError:
            raise usage.UsageError(f"--workers wants a number, got {self['workers']!r}") from None
        if not 1 <= workers <= 64:
            raise usage.UsageError(f"--workers must be within 1..64, got {workers}")
        self["workers"] = workers
        location = str(self.get("location") or "")
        if workers > 1 and location.lower().startswith("memory:") and not replicable():
            raise usage.UsageError(
                "--workers with memory: replicates over abstract Unix sockets (Linux only); "
                "use a shared --location (sqlite:PATH or redis://HOST:PORT/DB)"
            )
        group = self["worker-group"]
        if group is not None and not GROUP_RE.match(str(group)):
            raise usage.UsageError(f"bad --worker-group {group!r}")
        if self["worker-ports"] is not None:
            try:
                ports = [int(p) for p in str(self["worker-ports"]).split(",") if p]
                index = int(self["worker-index"])
                send_port = ports[index]
            except (TypeError, ValueError, IndexError):
                raise usage.UsageError("bad --worker-index/--worker-ports") from None
            self["worker-ports"] = ports
            # proxy.service passes these to the SipEndpoint (sipcore.twisted.transport).
            self["endpoint-options"] = {
                "reuse_port": True, "send_port": send_port, "reuse_group": len(ports),
            }


def makeService(config: Options) -> service.IService:  # noqa: N802 - twistd's name
    from proxy.core import ProxyRole
    from sipcore.twisted.gctune import tune

    tune()  # a long-running server: see sipcore.twisted.gctune for why
    if config["workers"] > 1:
        import sys

        from proxy.workers import Supervisor

        return Supervisor(reactor, sys.argv, config["workers"], config["interface"],
                          config["port"])

    def build(clock: Any) -> Any:
        return ProxyRole(config, clock)

    return SipService(config, build, reactor)
