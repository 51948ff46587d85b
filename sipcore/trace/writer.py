"""The trace writer: one JSON line per SIP message a process sends or receives.

`TraceWriter` is the ``tracer`` hook of `sipcore.twisted.transport.SipEndpoint`:
``writer(direction, data, local, remote)``. It runs on the reactor thread for every
message, so the call itself only appends a tuple to a list; encoding and writing
happen in `flush`, which runs when `flush_every` records are pending, when the flush
timer fires (`flush_interval` seconds after the first pending record, so an idle
process has no timer running) or at `close`.

This module does not import Twisted: the timer comes from any object with the
``IReactorTime.callLater`` shape (the reactor in production, `task.Clock` in tests).
A failing disk never breaks SIP: write errors are reported once on stderr and the
records are dropped.
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

TRACE_VERSION = 1
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_KEEP = 5
DEFAULT_FLUSH_EVERY = 64
DEFAULT_FLUSH_INTERVAL = 0.5


class _AddressLike(Protocol):
    # sipcore.twisted.transport.Address has this shape; we must not import it.
    transport: str
    host: str
    port: int


def format_hostport(host: str, port: int) -> str:
    """``127.0.0.1:5060`` / ``[::1]:5060`` — the form used in trace files and lanes."""
    if ":" in host and not host.startswith("["):
        return f"[{host}]:{port}"
    return f"{host}:{port}"


class _Clock(Protocol):
    def callLater(self, delay: float, f: Callable[..., Any], *a: Any) -> Any: ...  # noqa: N802


_Pending = tuple[int, int, str, bytes, _AddressLike, _AddressLike]


class TraceWriter:
    """Append SIP messages to a JSON-lines file, rotating it by size.

    `path` is the live file; when writing a record would take it past `max_bytes`,
    it becomes ``path.1`` (``path.1`` becomes ``path.2`` ... up to ``path.<keep>``,
    older parts are deleted). `label` names the process in ladder diagrams
    (e.g. ``"proxy a.lab"``, ``"alice"``), `role` is its kind (``proxy``, ``ua`` ...).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        label: str = "",
        role: str = "",
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        keep: int = DEFAULT_KEEP,
        flush_every: int = DEFAULT_FLUSH_EVERY,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        clock: _Clock | None = None,
        wall_ns: Callable[[], int] = time.time_ns,
        pid: int | None = None,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        if keep < 0:
            raise ValueError("keep must be >= 0")
        self.path = os.fspath(path)
        self.label = label
        self.role = role
        self.max_bytes = max_bytes
        self.keep = keep
        self.flush_every = max(1, flush_every)
        self.flush_interval = flush_interval
        self.clock = clock
        self._wall_ns = wall_ns
        self._pid = os.getpid() if pid is None else pid
        self._seq = 0
        self._pending: list[_Pending] = []
        self._timer: Any = None
        self._closed = False
        self._failed = False
        self._second_cache: tuple[int, str] = (-1, "")
        # Opening now (not lazily) turns a bad --trace path into a start-up error.
        self._file = open(self.path, "ab")  # noqa: SIM115 - lives as long as the writer
        self._size = self._file.tell()
        atexit.register(self.close)

    # -- the hot path ---------------------------------------------------------------

    def __call__(
        self, direction: str, data: bytes, local: _AddressLike, remote: _AddressLike
    ) -> None:
        if self._closed:
            return
        self._seq += 1
        self._pending.append((self._wall_ns() // 1000, self._seq, direction, data, local, remote))
        if len(self._pending) >= self.flush_every:
            self.flush()
        elif self._timer is None and self.clock is not None:
            self._timer = self.clock.callLater(self.flush_interval, self._timer_fired)

    # -- flushing -------------------------------------------------------------------

    def _timer_fired(self) -> None:
        self._timer = None
        self.flush()

    def _cancel_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def flush(self) -> None:
        """Write every pending record and flush the file (never raises)."""
        self._cancel_timer()
        pending, self._pending = self._pending, []
        if not pending or self._file.closed:
            return
        try:
            for item in pending:
                line = self._encode(*item)
                if self._size and self._size + len(line) > self.max_bytes:
                    self._rotate()
                self._file.write(line)
                self._size += len(line)
            self._file.flush()
        except OSError as err:
            self._report(err)

    def _encode(
        self, ts_us: int, seq: int, direction: str, data: bytes,
        local: _AddressLike, remote: _AddressLike,
    ) -> bytes:
        record: dict[str, Any] = {
            "v": TRACE_VERSION,
            "ts_us": ts_us,
            "time": self._iso(ts_us),
            "proc": self.label,
            "role": self.role,
            "pid": self._pid,
            "seq": seq,
            "dir": direction,
            "transport": local.transport,
            "local": format_hostport(local.host, local.port),
            "remote": format_hostport(remote.host, remote.port),
        }
        try:
            record["msg"] = data.decode("utf-8")
        except UnicodeDecodeError:
            # JSON strings cannot carry arbitrary bytes; base64 keeps them exactly.
            record["msg_b64"] = base64.b64encode(data).decode("ascii")
        return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"

    def _iso(self, ts_us: int) -> str:
        seconds, micros = divmod(ts_us, 1_000_000)
        cached_second, prefix = self._second_cache
        if cached_second != seconds:
            # Formatting a datetime is the costly part; messages come in bursts
            # within the same second, so the prefix is reused.
            prefix = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second_cache = (seconds, prefix)
        return f"{prefix}.{micros:06d}Z"

    def _rotate(self) -> None:
        self._file.close()
        if self.keep == 0:
            self._file = open(self.path, "wb")  # noqa: SIM115
            self._size = 0
            return
        oldest = f"{self.path}.{self.keep}"
        if os.path.exists(oldest):
            os.remove(oldest)
        for n in range(self.keep - 1, 0, -1):
            part = f"{self.path}.{n}"
            if os.path.exists(part):
                os.replace(part, f"{self.path}.{n + 1}")
        os.replace(self.path, f"{self.path}.1")
        self._file = open(self.path, "ab")  # noqa: SIM115
        self._size = 0

    def _report(self, err: OSError) -> None:
        if not self._failed:
            self._failed = True
            print(f"sipcalling trace: cannot write {self.path}: {err}; "
                  "dropping trace records", file=sys.stderr)

    # -- shutdown -------------------------------------------------------------------

    def close(self) -> None:
        """Flush and close; later messages are ignored. Safe to call twice."""
        if self._closed:
            return
        self.flush()
        self._closed = True
        try:
            self._file.close()
        except OSError as err:
            self._report(err)
        atexit.unregister(self.close)
