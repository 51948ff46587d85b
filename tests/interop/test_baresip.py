"""Interoperability with a real SIP phone: baresip (Debian package baresip-core).

baresip runs headless from tests/interop/baresip/ (config templates): a sine as its
microphone, ALSA's null device as its speaker, the sndfile module dumping what it
decodes, ctrl_tcp for commands and call events. It registers with a real
`twistd sipproxy` like any phone would, then

- sipclient calls baresip (auto-answer): connected, hold and resume from sipclient,
  hang up; sipclient's 440 Hz tone must be what baresip decoded, and baresip's sine
  what sipclient recorded;
- baresip calls sipclient (--auto-answer): connected, baresip hangs up.

Every wait is bounded; baresip is stopped by its PID.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from string import Template
from typing import Any

import pytest

from client.media import opus
from tests.interop.conftest import free_port
from tests.interop.sipclient_harness import SipClient
from tests.interop.test_audio_e2e import analyse, read_wav, write_tone

CONFIG_DIR = Path(__file__).parent / "baresip"
MODULE_DIRS = ("/usr/lib/baresip/modules", "/usr/local/lib/baresip/modules",
               "/usr/lib/x86_64-linux-gnu/baresip/modules")
BARESIP_SINE_HZ = 1000  # not 440: each side must hear the *other* side's tone
SIPCLIENT_TONE_HZ = 440


def _baresip() -> tuple[str, str]:
    """(binary, module directory), or skip/fail naming the Debian package."""
    binary = shutil.which("baresip")
    modules = next((d for d in MODULE_DIRS if Path(d, "ctrl_tcp.so").exists()), None)
    if binary is None or modules is None:
        message = "baresip is not installed (Debian package baresip-core)"
        if os.environ.get("SIPCALLING_REQUIRE_BARESIP"):
            pytest.fail(message)
        pytest.skip(message)
    return binary, modules


class Baresip:
    """One baresip process and a ctrl_tcp connection to it."""

    def __init__(self, workdir: Path, proxy_port: int, user: str = "carol",
                 codecs: str = "PCMU") -> None:
        binary, modules = _baresip()
        self.user = user
        self.cfg = workdir / "baresip-cfg"
        self.snd = workdir / "baresip-snd"
        self.cfg.mkdir()
        self.snd.mkdir()
        self.ctrl_port = free_port()
        fields = {
            "module_path": modules, "sip_port": free_port(), "ctrl_port": self.ctrl_port,
            "sine_hz": BARESIP_SINE_HZ, "snd_path": self.snd, "user": user,
            "proxy_port": proxy_port, "codecs": codecs,
        }
        for name in ("config", "accounts"):
            text = Template((CONFIG_DIR / name).read_text()).substitute(fields)
            (self.cfg / name).write_text(text)
        self.log_path = workdir / "baresip.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([binary, "-f", str(self.cfg)], stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT, cwd=workdir)
        self.events: list[dict[str, Any]] = []
        self._responses: dict[str, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self._token = 0
        self.sock = self._connect()
        threading.Thread(target=self._read, daemon=True).start()

    def _connect(self) -> socket.socket:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"baresip exited: {self.log()}")
            try:
                return socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=1)
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"baresip's ctrl_tcp did not come up: {self.log()}")

    def log(self) -> str:
        self._log.flush()
        # The status line is rewritten with \r many times a second; keep the real lines.
        text = self.log_path.read_text(errors="replace")
        return "\n".join(line for line in text.splitlines() if "audio=" not in line)[-3000:]

    # -- ctrl_tcp: JSON in netstrings ("LEN:{...},"), both ways -----------------------
    def _read(self) -> None:
        buf = b""
        self.sock.settimeout(None)
        while True:
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            while True:
                colon = buf.find(b":")
                if colon < 0 or not buf[:colon].isdigit():
                    break
                size = int(buf[:colon])
                if len(buf) < colon + 1 + size + 1:
                    break
                message = json.loads(buf[colon + 1 : colon + 1 + size])
                buf = buf[colon + 2 + size :]
                with self._cond:
                    if message.get("event"):
                        self.events.append(message)
                    elif message.get("response"):
                        self._responses[str(message.get("token"))] = message
                    self._cond.notify_all()

    def command(self, name: str, params: str = "", timeout: float = 5.0) -> dict[str, Any]:
        self._token += 1
        token = str(self._token)
        body = json.dumps({"command": name, "params": params, "token": token}).encode()
        self.sock.sendall(str(len(body)).encode() + b":" + body + b",")
        with self._cond:
            if not self._cond.wait_for(lambda: token in self._responses, timeout):
                raise AssertionError(f"baresip: no answer to {name!r}: {self.log()}")
            return self._responses.pop(token)

    def expect_event(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        """The first event of type `kind` not yet consumed by an earlier expect."""
        with self._cond:
            found: list[dict[str, Any]] = []

            def seen() -> bool:
                for event in self.events:
                    if event.get("type") == kind and not event.get("_taken"):
                        event["_taken"] = True
                        found.append(event)
                        return True
                return False

            if not self._cond.wait_for(seen, timeout):
                kinds = [e.get("type") for e in self.events]
                raise AssertionError(f"baresip: no {kind} within {timeout} s; events "
                                     f"{kinds}; log: {self.log()}")
            return found[0]

    def wait_registered(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # reginfo lists each account with "OK" (in ANSI colour) once its REGISTER
            # got a 2xx.
            data = re.sub(r"\x1b\[[0-9;]*m", "", self.command("reginfo").get("data", ""))
            if re.search(r"\bOK\b", data):
                return
            time.sleep(0.2)
        raise AssertionError(f"baresip did not register: {self.log()}")

    def decoded_audio(self) -> Path:
        dumps = sorted(self.snd.glob("*-dec.wav"))
        assert dumps, f"baresip's sndfile wrote nothing: {self.log()}"
        return dumps[-1]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(8)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.sock.close()
        self._log.close()


@pytest.fixture
def lab(start_server: Callable[..., Any], tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The proxy, a registered baresip (as carol) and a sipclient starter."""
    _baresip()
    proxy = start_server("sipproxy", "--domain", "a.lab", "--location", "memory:")
    clients: list[SipClient] = []
    phones: list[Baresip] = []

    def client(user: str, *args: str) -> SipClient:
        c = SipClient(tmp_path, user, "--proxy", f"127.0.0.1:{proxy.port}", *args)
        clients.append(c)
        c.expect(rf"registered sip:{user}@a\.lab expires=\d+$")
        return c

    def phone(codecs: str = "PCMU") -> Baresip:
        p = Baresip(tmp_path, proxy.port, codecs=codecs)
        phones.append(p)
        p.wait_registered()
        return p

    try:
        yield {"proxy": proxy, "client": client, "phone": phone}
    finally:
        for c in clients:
            c.stop()
        for p in phones:
            p.stop()


def _peak(path: Path) -> tuple[float, float]:
    pcm, rate = read_wav(path)
    peak, rms, _ = analyse(pcm, rate)
    return peak, rms


CODECS = [
    ("pcmu", "PCMU"),
    pytest.param("opus", "opus/48000/2", marks=pytest.mark.skipif(
        not opus.available(), reason=f"libopus missing: {opus.INSTALL_HINT}")),
]


@pytest.mark.parametrize(("codec", "baresip_codecs"), CODECS)
def test_sipclient_calls_baresip_hold_resume_hangup(
    lab: dict[str, Any], tmp_path: Path, codec: str, baresip_codecs: str
) -> None:
    phone = lab["phone"](baresip_codecs)
    tone, rec = tmp_path / "tone.wav", tmp_path / "alice.wav"
    write_tone(tone)
    alice = lab["client"]("alice", "--play", str(tone), "--record", str(rec),
                          "--codec", codec)
    alice.send("call carol")
    alice.expect(r"call 1 connected$")
    phone.expect_event("CALL_ESTABLISHED")
    time.sleep(1.0)
    alice.send("status")
    media = alice.expect(r"status media 1 ")
    assert f"codec={'PCMU' if codec == 'pcmu' else 'opus'}" in media
    received = int(re.search(r"packets_received=(\d+)", media).group(1))  # type: ignore[union-attr]
    assert received >= 20, media  # baresip's RTP reaches us

    alice.send("hold")
    alice.expect(r"call 1 held$")
    alice.send("status")
    alice.expect(r"status call 1 held outgoing sip:carol@a\.lab$")
    assert "direction=sendonly" in alice.expect(r"status media 1 ")
    alice.send("resume")
    alice.expect(r"call 1 resumed$")
    time.sleep(0.5)
    alice.send("hangup")
    alice.expect(r"call 1 ended hangup$")
    phone.expect_event("CALL_CLOSED")
    assert alice.quit() == 0

    # Audio both ways: baresip decoded our 440 Hz, we recorded its sine.
    peak, rms = _peak(phone.decoded_audio())
    assert abs(peak - SIPCLIENT_TONE_HZ) <= 5 and rms > 1000, (peak, rms)
    peak, rms = _peak(rec)
    assert abs(peak - BARESIP_SINE_HZ) <= 5 and rms > 1000, (peak, rms)


def test_baresip_calls_sipclient(lab: dict[str, Any], tmp_path: Path) -> None:
    phone = lab["phone"]()
    rec = tmp_path / "bob.wav"
    bob = lab["client"]("bob", "--auto-answer", "--record", str(rec))
    assert phone.command("dial", "sip:bob@a.lab")["ok"]
    bob.expect(r"call 1 incoming sip:carol@a\.lab$")
    bob.expect(r"call 1 connected$")
    phone.expect_event("CALL_ESTABLISHED")
    time.sleep(1.0)
    assert phone.command("hangup")["ok"]
    bob.expect(r"call 1 ended bye$")
    phone.expect_event("CALL_CLOSED")
    assert bob.quit() == 0
    peak, rms = _peak(rec)
    assert abs(peak - BARESIP_SINE_HZ) <= 5 and rms > 1000, (peak, rms)
