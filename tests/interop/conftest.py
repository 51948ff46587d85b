"""Fixtures that start our real processes and real sipp on loopback.

Every process started here is stopped by its PID at the end of the test, and every
wait is bounded.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).parent
SCENARIOS = HERE / "scenarios"
VENV_BIN = Path(sys.executable).parent
TWISTD = str(VENV_BIN / "twistd")


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


def sip_ping(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> bytes | None:
    """Send one OPTIONS over UDP and return the answer, or None after `timeout`."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.bind(("127.0.0.1", 0))
        local = s.getsockname()[1]
        s.sendto(
            (
                f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bKping{time.monotonic_ns()}\r\n"
                f"From: <sip:ping@127.0.0.1>;tag=p1\r\nTo: <sip:{host}>\r\n"
                f"Call-ID: ping{time.monotonic_ns()}\r\nCSeq: 1 OPTIONS\r\n"
                "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            ).encode(),
            (host, port),
        )
        try:
            return s.recv(65535)
        except TimeoutError:
            return None


class Server:
    """A twistd process of ours, stopped by PID."""

    def __init__(self, plugin: str, args: list[str], cwd: Path, port: int) -> None:
        self.port = port
        self.log_path = cwd / f"{plugin}-{port}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [TWISTD, "-n", "--pidfile=", plugin, "--port", str(port), *args],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=cwd,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{plugin} exited: {self.output()}")
            if sip_ping(port, timeout=0.3) is not None:
                return
        self.stop()
        raise RuntimeError(f"{plugin} did not answer within 15 s: {self.output()}")

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(plugin: str = "sipproxy", *args: str, port: int | None = None) -> Server:
        server = Server(plugin, list(args), tmp_path, port or free_port())
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def sipp_binary() -> str:
    path = shutil.which("sipp")
    if path is None:
        if os.environ.get("SIPCALLING_REQUIRE_SIPP"):
            pytest.fail("sipp is not installed (Debian package sip-tester)")
        pytest.skip("sipp is not installed (Debian package sip-tester)")
    return path


def run_sipp(
    scenario: str, target: str, *args: str, transport: str = "u1", calls: int = 1,
    timeout: int = 20, cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run sipp to completion (bounded by `timeout` seconds) and return its result."""
    sf = scenario if scenario.startswith("-sn") else str(SCENARIOS / scenario)
    command = [
        sipp_binary(), target, "-i", "127.0.0.1", "-t", transport,
        "-m", str(calls), "-timeout", f"{timeout}s", "-timeout_error", "-nostdin",
        "-trace_err", "-trace_msg",
        *(sf.split() if scenario.startswith("-sn") else ["-sf", sf]),
        *args,
    ]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout + 10, cwd=cwd
    )
