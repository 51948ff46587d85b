# -*- test-case-name: tests.interop.test_workers -*-
"""`twistd sipproxy --workers N`: N proxy processes on one port, one per core.

CPython runs one thread of Python at a time, so one proxy process uses one core. With
`--workers N` the `twistd` process becomes a supervisor that starts N workers (the
same `twistd sipproxy` command line with `--worker-index I --worker-ports P1,..,PN`
instead of `--workers N`):

- every worker binds the SIP port itself with SO_REUSEPORT (UDP and TCP); the kernel
  spreads datagrams over them by source port (UDP: a published hash of it,
  sipcore.twisted.reuseport) or address (TCP), so all of one client's requests
  (retransmissions, the CANCEL of its INVITE) reach the same worker, and a TCP
  connection stays with the worker that accepted it;
- each worker sends the requests it forwards from its own extra UDP port (`Pi`, its
  Via sent-by), so the responses come back to the worker holding the client
  transaction; in-dialog requests follow the Record-Route to the shared port and may
  land on any worker, which is fine: the proxy keeps no dialog state;
- a REGISTER handled by one worker must be seen by all of them: either the location
  store is shared (sqlite WAL or redis), or, with `memory:`, every worker keeps its
  own copy and sends each binding change it makes to the others over abstract Unix
  datagram sockets named after `--worker-group` (`registrar.location.replicated`,
  Linux only); a worker that starts, or is restarted, first copies a peer's store.

The supervisor restarts a worker that dies (at most `MAX_RESTARTS` per minute per
worker, so a worker that cannot start does not spin), and stops all of them on
SIGTERM/SIGINT (twistd stops the service; each worker gets SIGTERM, then SIGKILL
after `STOP_TIMEOUT` s).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any

from twisted.application import service
from twisted.internet import defer, protocol
from twisted.logger import Logger

log = Logger(namespace="proxy.workers")

STOP_TIMEOUT = 10.0
MAX_RESTARTS = 5  # per worker per minute
RESTART_DELAY = 0.5


def free_udp_ports(interface: str, count: int) -> list[int]:
    """`count` distinct UDP ports free on `interface` now (the workers' send ports)."""
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(family, socket.SOCK_DGRAM)
            socks.append(s)
            s.bind((interface, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_shared_port(interface: str) -> int:
    """A port free for UDP and TCP, for `--port 0` (all workers need the same one)."""
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    for _ in range(50):
        with socket.socket(family, socket.SOCK_STREAM) as tcp:
            tcp.bind((interface, 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(family, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((interface, port))
                except OSError:
                    continue
            return port
    raise OSError("no free port")


def _drop(args: Sequence[str], names: tuple[str, ...]) -> list[str]:
    """`args` without the options in `names`, in `--opt VALUE` or `--opt=VALUE` form."""
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in names:
            skip = True
        elif not arg.startswith(tuple(f"{n}=" for n in names if n.startswith("--"))):
            out.append(arg)
    return out


def worker_argv(
    argv: Sequence[str], index: int, ports: Sequence[int], port: int, group: str | None = None
) -> list[str]:
    """The supervisor's own command line turned into worker `index`'s.

    `--workers N` is replaced by the worker options, `--port` pinned to the shared
    port (it may have been 0), and the worker gets no pidfile of its own. `group`
    (`--worker-group`) names the workers' replication sockets (memory: store).
    """
    argv = list(argv)
    at = argv.index("sipproxy")
    head = _drop(argv[1:at], ("--pidfile",))
    if "-n" not in head and "--nodaemon" not in head:
        head.insert(0, "-n")
    tail = _drop(argv[at + 1 :], ("--workers", "--port", "-p", "--worker-group"))
    return [
        argv[0], *head, "--pidfile=", "sipproxy", *tail, "--port", str(port),
        "--worker-index", str(index), "--worker-ports", ",".join(map(str, ports)),
        *(("--worker-group", group) if group else ()),
    ]


class _Worker(protocol.ProcessProtocol):
    def __init__(self, supervisor: Supervisor, index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.ended: defer.Deferred[None] = defer.Deferred()
        self._partial = b""

    def childDataReceived(self, fd: int, data: bytes) -> None:  # noqa: N802
        # Relay the worker's log lines, tagged, into the supervisor's log.
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()[-65536:]
        for line in lines:
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                log.info("[worker {i}] {text}", i=self.index, text=text)

    def processEnded(self, reason: Any) -> None:  # noqa: N802
        self.ended.callback(None)
        self.supervisor.worker_ended(self, reason)


class Supervisor(service.Service):
    """Starts, restarts and stops the workers of `--workers N`."""

    def __init__(self, reactor: Any, argv: Sequence[str], workers: int, interface: str,
                 port: int) -> None:
        self.reactor = reactor
        self.count = workers
        self.interface = interface
        self.port = port or free_shared_port(interface)
        self.ports = free_udp_ports(interface, workers)
        # Unique per supervisor (abstract socket names are host-wide per network
        # namespace): two proxies on one host never replicate into each other.
        self.group = f"{os.getpid()}-{secrets.token_hex(4)}"
        self.argvs = [worker_argv(argv, i, self.ports, self.port, self.group)
                      for i in range(workers)]
        self.workers: dict[int, tuple[_Worker, Any]] = {}
        self.restarts: dict[int, list[float]] = {i: [] for i in range(workers)}
        self.stopping = False

    def startService(self) -> None:  # noqa: N802
        super().startService()
        log.info("starting {n} workers on {interface}:{port} (send ports {ports})",
                 n=self.count, interface=self.interface, port=self.port,
                 ports=",".join(map(str, self.ports)))
        for i in range(self.count):
            self._spawn(i)

    def _spawn(self, index: int) -> None:
        if self.stopping:
            return
        worker = _Worker(self, index)
        argv = self.argvs[index]
        transport = self.reactor.spawnProcess(
            worker, argv[0] if os.path.isabs(argv[0]) else sys.executable,
            argv if os.path.isabs(argv[0]) else [sys.executable, *argv],
            env=os.environ.copy(), childFDs={0: "w", 1: "r", 2: "r"},
        )
        self.workers[index] = (worker, transport)

    def worker_ended(self, worker: _Worker, reason: Any) -> None:
        current = self.workers.get(worker.index)
        if current is not None and current[0] is worker:
            del self.workers[worker.index]
        if self.stopping:
            return
        now = self.reactor.seconds()
        recent = [t for t in self.restarts[worker.index] if now - t < 60] + [now]
        self.restarts[worker.index] = recent
        if len(recent) > MAX_RESTARTS:
            log.error("worker {i} keeps dying ({reason}); not restarting it",
                      i=worker.index, reason=reason.getErrorMessage())
            return
        log.warn("worker {i} ended ({reason}); restarting it", i=worker.index,
                 reason=reason.getErrorMessage())
        self.reactor.callLater(RESTART_DELAY, self._spawn, worker.index)

    def stopService(self) -> Any:  # noqa: N802
        super().stopService()
        self.stopping = True
        waits = []
        for worker, transport in list(self.workers.values()):
            waits.append(worker.ended)
            self._signal(transport, signal.SIGTERM)
            kill = self.reactor.callLater(STOP_TIMEOUT, self._signal, transport, signal.SIGKILL)
            worker.ended.addBoth(lambda r, k=kill: (k.cancel() if k.active() else None, r)[1])
        return defer.DeferredList(waits)

    @staticmethod
    def _signal(transport: Any, signum: int) -> None:
        try:
            transport.signalProcess(signum)
        except Exception:
            pass  # already gone
