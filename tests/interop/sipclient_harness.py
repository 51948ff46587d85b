"""Run `sipclient` as a real process: write commands to its stdin, wait for its lines.

Every wait is bounded; a client that does not stop is killed by its PID.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.interop.conftest import free_port

PYTHON = sys.executable


class SipClient:
    def __init__(self, cwd: Path, user: str, *args: str, domain: str = "a.lab",
                 port: int | None = None) -> None:
        self.user = user
        self.port = port or free_port()
        self.lines: list[str] = []
        self._cursor = 0
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.stderr_path = cwd / f"sipclient-{user}-{self.port}.err"
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "client.cli", "--domain", domain, "--user", user,
             "--port", str(self.port), "--verbose", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
            cwd=Path(__file__).resolve().parents[2],
        )
        threading.Thread(target=self._read, daemon=True).start()
        self.expect(r"ready ")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self._queue.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self._queue.put(None)

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()

    def expect(self, pattern: str, timeout: float = 10.0) -> str:
        """Wait for a line matching `pattern` (regex, from the start of the line) that
        comes after the line the previous expect() matched."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            while self._cursor < len(self.lines):
                line = self.lines[self._cursor]
                self._cursor += 1
                if regex.match(line):
                    return line
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"{self.user}: no line matching {pattern!r} within {timeout} s; "
                    f"got {self.lines!r}; stderr tail: {self.stderr_tail()}"
                )
            try:
                line = self._queue.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if line is None:
                if self._cursor >= len(self.lines):
                    raise AssertionError(
                        f"{self.user}: exited before {pattern!r}; got {self.lines!r}; "
                        f"stderr tail: {self.stderr_tail()}"
                    )
                continue
            self.lines.append(line)

    def stderr_tail(self, n: int = 2000) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")[-n:]

    def wait(self, timeout: float = 15.0) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired as err:
            self.stop()
            raise AssertionError(f"{self.user} did not exit; got {self.lines!r}") from err
        self._drain()
        return code

    def _drain(self) -> None:
        while True:
            try:
                line = self._queue.get(timeout=1)
            except queue.Empty:
                return
            if line is None:
                return
            self.lines.append(line)

    def quit(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            try:
                self.send("quit")
            except (BrokenPipeError, OSError):
                pass
        return self.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(8)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._stderr.close()
