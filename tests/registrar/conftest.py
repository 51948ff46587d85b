"""A real, throw-away redis-server for the registrar tests.

Started once per session on a free loopback port, with persistence off, in a temp
dir; stopped by killing exactly the PID we started. Absent redis-server means a
skip locally, but a failure when SIPCALLING_REQUIRE_REDIS is set (CI), so the
redis backend can never go silently untested there.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

_START_TIMEOUT = 10.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_command(port: int, *args: str, timeout: float = 2.0) -> bytes:
    """Send one command over a raw socket and return the raw reply (test plumbing)."""
    payload = f"*{len(args)}\r\n".encode()
    for a in args:
        data = a.encode()
        payload += b"$%d\r\n%s\r\n" % (len(data), data)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
    return reply


def start_redis_server(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start redis-server on a free loopback port; return (process, port).

    bench/location.py uses it too. Retried because another
    process may grab the port between our probe and redis binding it.
    """
    exe = shutil.which("redis-server")
    if exe is None:
        raise FileNotFoundError("redis-server not found on PATH")
    last_error = ""
    for _ in range(3):
        port = _free_port()
        log = workdir / f"redis-{port}.log"
        proc = subprocess.Popen(
            [
                exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(workdir), "--logfile", str(log),
                "--daemonize", "no",
            ],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if redis_command(port, "PING", timeout=0.5).startswith(b"+PONG"):
                    return proc, port
            except OSError:
                pass
            time.sleep(0.05)
        last_error = log.read_text(errors="replace")[-500:] if log.exists() else ""
        stop_redis_server(proc)
    raise RuntimeError(f"redis-server did not start: {last_error.strip()}")


def stop_redis_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()  # this PID only
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """Port of a running redis-server (127.0.0.1), for the whole session."""
    if shutil.which("redis-server") is None:
        if os.environ.get("SIPCALLING_REQUIRE_REDIS"):
            pytest.fail("redis-server not found but SIPCALLING_REQUIRE_REDIS is set")
        pytest.skip("redis-server not installed (set SIPCALLING_REQUIRE_REDIS to make this fail)")
    proc, port = start_redis_server(tmp_path_factory.mktemp("redis"))
    try:
        yield port
    finally:
        stop_redis_server(proc)


@pytest.fixture
def redis_port(redis_server: int) -> int:
    """The session's redis-server, emptied so each test starts from nothing."""
    assert redis_command(redis_server, "FLUSHALL").startswith(b"+OK")
    return redis_server
