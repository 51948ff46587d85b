"""The lab's processes: twistd servers and sipclient phones, started and stopped by PID.

Every wait here is bounded. Children run in their own session so that a Ctrl-C in the
runner's terminal reaches the runner only: the runner then stops exactly the PIDs it
started, in order (phones first, so they can still unregister), instead of everything
dying at once in an unknown order.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Client",
    "ExpectFailed",
    "LabProcess",
    "ProcessGroup",
    "Server",
    "dns_answers",
    "free_port",
    "sip_ping",
]

VENV_BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]


class ExpectFailed(Exception):
    """A bounded wait ended without the awaited line (the message says what was seen)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on `host` (SIP listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def sip_ping(port: int, host: str = "127.0.0.1", timeout: float = 0.3) -> bytes | None:
    """One OPTIONS over UDP; the answer, or None after `timeout` seconds."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.bind((host, 0))
        local = s.getsockname()[1]
        n = time.monotonic_ns()
        s.sendto(
            (
                f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {host}:{local};branch=z9hG4bKlabping{n}\r\n"
                f"From: <sip:lab-runner@{host}>;tag=ping\r\nTo: <sip:{host}>\r\n"
                f"Call-ID: labping{n}\r\nCSeq: 1 OPTIONS\r\n"
                "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            ).encode(),
            (host, port),
        )
        try:
            return s.recv(65535)
        except (TimeoutError, ConnectionRefusedError):
            return None


def dns_answers(port: int, name: str, host: str = "127.0.0.1") -> bool:
    """Whether a DNS server on `port` answers an SRV query for `name`."""
    from twisted.names import dns

    query = dns.Message(id=7, recDes=0)
    query.queries = [dns.Query(name.encode(), dns.SRV)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.3)
        s.sendto(query.toStr(), (host, port))
        try:
            return bool(s.recv(4096))
        except (TimeoutError, ConnectionRefusedError):
            return False


class LabProcess:
    """A child process of the runner; `stop` ends it by its PID, bounded."""

    def __init__(self, name: str, command: list[str], log_path: Path, cwd: Path,
                 *, stdin: bool = False, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.command = command
        self.log_path = log_path
        self._log = open(log_path, "wb")  # closed in stop()
        self.proc = subprocess.Popen(
            command, cwd=cwd, env=env,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdin else self._log,
            stderr=self._log,
            start_new_session=True,
        )
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, chars: int = 1500) -> str:
        try:
            self._log.flush()
        except ValueError:
            pass  # already closed
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, grace: float = 8.0) -> None:
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, signal.SIGTERM)
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(5)
            except ProcessLookupError:
                pass
        if not self._log.closed:
            self._log.close()


class Server(LabProcess):
    """``twistd -n <plugin> ...``, ready once it answers (OPTIONS, or an SRV query)."""

    def __init__(self, name: str, plugin_args: list[str], log_path: Path, cwd: Path,
                 ready: Callable[[], bool], timeout: float = 15.0) -> None:
        twistd = str(VENV_BIN / "twistd")
        super().__init__(name, [twistd, "-n", "--pidfile=", *plugin_args], log_path, cwd)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{name} exited at start: {self.log_tail()}")
            if ready():
                return
            time.sleep(0.05)
        raise RuntimeError(f"{name} did not answer within {timeout:.0f} s: {self.log_tail()}")


@dataclass(frozen=True, slots=True)
class Line:
    """One line a phone printed (or a command the runner typed), with its time."""

    t: float  # time.time()
    who: str
    text: str
    command: bool = False


class Client(LabProcess):
    """A sipclient process: commands on stdin, state lines on stdout.

    Every line is also passed to `on_line` (the experiment's transcript). `expect`
    waits for a line after the last one it matched, like a person reading along.
    """

    def __init__(self, name: str, args: list[str], trace: Path, log_path: Path, cwd: Path,
                 on_line: Callable[[Line], None]) -> None:
        command = [sys.executable, "-m", "client.cli", "--trace", str(trace), "--verbose",
                   *args]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
        super().__init__(name, command, log_path, cwd, stdin=True, env=env)
        self.on_line = on_line
        self.lines: list[str] = []
        self._cursor = 0
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.contact = ""
        self.sip_port = 0
        threading.Thread(target=self._read, daemon=True, name=f"read-{name}").start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            text = raw.decode("utf-8", "replace").rstrip("\n")
            self.on_line(Line(time.time(), self.name, text))
            self._queue.put(text)
        self._queue.put(None)

    def started(self, timeout: float = 15.0) -> None:
        """Wait for ``ready <contact>``; note the SIP port it gives."""
        line = self.expect(r"ready ", timeout)
        self.contact = line.split()[1]
        match = re.search(r":(\d+)(?:;|>|$)", self.contact)
        self.sip_port = int(match.group(1)) if match else 0

    def send(self, command: str) -> None:
        self.on_line(Line(time.time(), self.name, command, command=True))
        if self.proc.stdin is None or not self.alive():
            raise ExpectFailed(f"{self.name} is not running; cannot send {command!r}")
        try:
            self.proc.stdin.write(command.encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as err:
            raise ExpectFailed(f"{self.name}: cannot send {command!r}: {err}") from None

    def expect(self, pattern: str, timeout: float = 10.0) -> str:
        """The first line matching `pattern` (a regex, anchored at the line start)
        after the previous match, within `timeout` seconds."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        finished = False
        while True:
            while self._cursor < len(self.lines):
                line = self.lines[self._cursor]
                self._cursor += 1
                if regex.match(line):
                    return line
            left = deadline - time.monotonic()
            if left <= 0 or finished:
                recent = self.lines[-6:]
                why = "exited" if finished else f"nothing within {timeout:g} s"
                raise ExpectFailed(
                    f"{self.name}: expected /{pattern}/, {why}; last lines: {recent}"
                )
            try:
                item = self._queue.get(timeout=min(left, 0.2))
            except queue.Empty:
                continue
            if item is None:
                finished = True
                continue
            self.lines.append(item)

    def collect(self, pattern: str, settle: float = 0.4, timeout: float = 5.0) -> list[str]:
        """Every line matching `pattern` that arrives until none came for `settle`
        seconds (the answer to ``status`` is several lines with no end marker)."""
        regex = re.compile(pattern)
        found: list[str] = []
        deadline = time.monotonic() + timeout
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            while self._cursor < len(self.lines):
                line = self.lines[self._cursor]
                self._cursor += 1
                if regex.match(line):
                    found.append(line)
                    quiet_since = time.monotonic()
            if found and time.monotonic() - quiet_since >= settle:
                break
            try:
                item = self._queue.get(timeout=0.05)
            except queue.Empty:
                continue
            if item is None:
                break
            self.lines.append(item)
        return found

    def quit(self, timeout: float = 8.0) -> None:
        """``quit`` (hang up, unregister), then wait; `stop` if it does not exit."""
        if self.alive():
            try:
                self.send("quit")
                self.proc.wait(timeout)
            except (ExpectFailed, subprocess.TimeoutExpired):
                pass
        self.stop()


class ProcessGroup:
    """Everything the runner started, stopped in reverse order of start."""

    def __init__(self) -> None:
        self.processes: list[LabProcess] = []
        self._lock = threading.Lock()

    def add(self, process: LabProcess) -> None:
        with self._lock:
            self.processes.append(process)

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def stop_clients(self) -> None:
        for process in reversed(self.processes):
            if isinstance(process, Client):
                process.quit(timeout=5)

    def stop_all(self) -> None:
        # Phones first: they hang up and unregister while the servers still run.
        self.stop_clients()
        for process in reversed(self.processes):
            process.stop()
