"""Helpers for the proxy interop tests: REGISTER from the test, sipp callee processes,
scenario templates. Every wait is bounded; every process is ended by its PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.interop.conftest import SCENARIOS, sipp_binary


def sip_request(
    port: int, text: str, timeout: float = 2.0, bind_port: int = 0, host: str = "127.0.0.1"
) -> bytes | None:
    """Send one request over UDP to host:port; return the first final answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", bind_port))
        local = s.getsockname()[1]
        s.settimeout(timeout)
        s.sendto(text.replace("@LOCAL@", str(local)).encode(), (host, port))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = s.recv(65535)
            except TimeoutError:
                return None
            if not data.startswith(b"SIP/2.0 1"):
                return data
        return None


def status_of(answer: bytes | None) -> int | None:
    return None if not answer else int(answer.split(b" ", 2)[1])


def register(
    proxy_port: int, user: str, domain: str, contact_port: int, expires: int = 300,
    q: float | None = None, call_id: str | None = None, cseq: int = 1,
    host: str = "127.0.0.1",
) -> int | None:
    """REGISTER user@domain -> sip:user@127.0.0.1:contact_port through the proxy.

    Sent *from* contact_port (register before the callee binds it), so the registrar
    sees no NAT and the proxy calls the Contact itself.
    """
    q_param = f";q={q}" if q is not None else ""
    call_id = call_id or f"reg-{user}-{contact_port}-{time.monotonic_ns()}"
    text = (
        f"REGISTER sip:{domain} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:@LOCAL@;branch=z9hG4bKreg{time.monotonic_ns()};rport\r\n"
        f"From: <sip:{user}@{domain}>;tag=r{contact_port}\r\n"
        f"To: <sip:{user}@{domain}>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n"
        f"Contact: <sip:{user}@127.0.0.1:{contact_port}>{q_param};expires={expires}\r\n"
        "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    return status_of(sip_request(proxy_port, text, bind_port=contact_port, host=host))


def template(name: str, dest_dir: Path, **subs: object) -> str:
    """A copy of scenarios/NAME with @KEY@ replaced by each value, as an absolute path."""
    text = (SCENARIOS / name).read_text()
    for key, value in subs.items():
        text = text.replace(f"@{key.upper()}@", str(value))
    out = dest_dir / f"{Path(name).stem}-{'-'.join(str(v) for v in subs.values())}.xml"
    out.write_text(text)
    return str(out)


class SippCallee:
    """A sipp UAS in the background, on its own port; `wait()` is bounded."""

    def __init__(self, scenario: str, port: int, cwd: Path, timeout: int = 30) -> None:
        sf = scenario if scenario.startswith("/") else str(SCENARIOS / scenario)
        self.port = port
        self.cwd = cwd
        self.log_path = cwd / f"uas-{port}.out"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sipp_binary(), "-sf", sf, "-i", "127.0.0.1", "-p", str(port), "-m", "1",
             "-t", "u1", "-timeout", f"{timeout}s", "-timeout_error", "-nostdin",
             "-trace_msg", "-trace_err", "-message_file", str(cwd / f"uas-{port}.msg")],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=cwd,
        )
        time.sleep(0.2)  # let it bind before anybody calls

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            return -1

    def messages(self) -> str:
        path = self.cwd / f"uas-{self.port}.msg"
        return path.read_text(errors="replace") if path.exists() else ""

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace") + self.messages()[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()


class Callees:
    """Starts sipp callees, each registered (from its own port) before it binds."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[SippCallee] = []

    def __call__(
        self, scenario: str, registrar_port: int | None, user: str = "bob",
        domain: str = "a.lab", **subs: object,
    ) -> SippCallee:
        from tests.interop.conftest import free_port

        sf = template(scenario, self.tmp_path, **subs) if subs else scenario
        port = free_port()
        if registrar_port is not None:
            assert register(registrar_port, user, domain, port) == 200
        callee = SippCallee(sf, port, self.tmp_path)
        self.started.append(callee)
        return callee

    def stop_all(self) -> None:
        for callee in self.started:
            callee.stop()
