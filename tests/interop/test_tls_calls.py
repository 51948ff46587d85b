"""SIP over TLS end to end through `twistd -n sipproxy --tls-port` (RFC 3261 §26.3.1).

The certificates come from deploy/make-lab-ca.sh; the TLS client is Python's ssl
module with the lab CA and hostname checking on (sipclient speaks UDP only). The
caller registers and calls over TLS; the callee is a sipp UAS registered over UDP,
so the proxy bridges TLS to UDP. Plain TCP aimed at the TLS port must be refused
without harm.
"""

from __future__ import annotations

import re
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from tests.interop.conftest import free_port, sip_ping
from tests.interop.sip_helpers import Callees

pytestmark = pytest.mark.timeout(90)

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "make-lab-ca.sh"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    work = tmp_path_factory.mktemp("tlscalls")
    result = subprocess.run(["bash", str(SCRIPT), str(work / "pki")], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return work / "pki"


@pytest.fixture
def proxy(start_server, pki):
    tls_port = free_port()
    server = start_server(
        "sipproxy", "--domain", "a.lab", "--location", "memory:", "--tls-port", str(tls_port),
        "--tls-cert", str(pki / "a.lab.crt"), "--tls-key", str(pki / "a.lab.key"),
    )
    server.tls_port = tls_port
    return server


@pytest.fixture
def callees(tmp_path):
    started = Callees(tmp_path)
    yield started
    started.stop_all()


class TlsUA:
    """A minimal UA on one TLS connection: sends requests, reads framed messages."""

    def __init__(self, port: int, ca: Path) -> None:
        context = ssl.create_default_context(cafile=str(ca))  # hostname checks on
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = context.wrap_socket(raw, server_hostname="a.lab")
        self.local = self.sock.getsockname()[1]
        self.buffer = b""

    def send(self, text: str) -> None:
        self.sock.sendall(text.replace("@LOCAL@", str(self.local)).encode())

    def read(self, timeout: float = 10.0) -> str:
        """The next whole message (Content-Length framing, §18.3)."""
        deadline = time.monotonic() + timeout
        while True:
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if sep:
                match = re.search(rb"^Content-Length:\s*(\d+)", head, re.M | re.I)
                length = int(match.group(1)) if match else 0
                if len(rest) >= length:
                    self.buffer = rest[length:]
                    return (head + sep + rest[:length]).decode()
            self.sock.settimeout(max(0.1, deadline - time.monotonic()))
            chunk = self.sock.recv(65535)
            if not chunk:
                raise ConnectionError("proxy closed the connection")
            self.buffer += chunk
            if time.monotonic() > deadline:
                raise TimeoutError("no complete message")

    def final(self, timeout: float = 15.0) -> str:
        """Skip provisional responses; the final one."""
        while True:
            message = self.read(timeout)
            if not message.startswith("SIP/2.0 1"):
                return message

    def close(self) -> None:
        self.sock.close()


def headers(message: str, name: str) -> list[str]:
    return re.findall(rf"^{name}:\s*(.*?)$", message.replace("\r\n", "\n"), re.M | re.I)


def test_register_and_call_over_tls(proxy, pki, callees):
    bob = callees("uas_answer.xml", proxy.port)  # registered over UDP
    ua = TlsUA(proxy.tls_port, pki / "ca.crt")
    try:
        via = "Via: SIP/2.0/TLS 127.0.0.1:@LOCAL@;branch=z9hG4bK{}\r\n"
        ua.send(
            "REGISTER sip:a.lab SIP/2.0\r\n" + via.format("treg1") +
            "From: <sip:alice@a.lab>;tag=a1\r\nTo: <sip:alice@a.lab>\r\n"
            "Call-ID: tls-reg\r\nCSeq: 1 REGISTER\r\n"
            "Contact: <sip:alice@127.0.0.1:@LOCAL@;transport=tls>;expires=300\r\n"
            "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        assert ua.final().startswith("SIP/2.0 200"), "REGISTER over TLS"

        sdp = ("v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
               "t=0 0\r\nm=audio 40000 RTP/AVP 0\r\n")
        common = ("From: <sip:alice@a.lab>;tag=a2\r\nTo: <sip:bob@a.lab>{to_tag}\r\n"
                  "Call-ID: tls-call\r\nCSeq: {cseq}\r\nMax-Forwards: 70\r\n")
        ua.send(
            "INVITE sip:bob@a.lab SIP/2.0\r\n" + via.format("tinv1") +
            common.format(to_tag="", cseq="1 INVITE") +
            "Contact: <sip:alice@127.0.0.1:@LOCAL@;transport=tls>\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}"
        )
        ok = ua.final()
        assert ok.startswith("SIP/2.0 200"), ok
        to_tag = re.search(r";tag=([^;\s]+)", headers(ok, "To")[0]).group(1)
        contact = re.search(r"<([^>]+)>", headers(ok, "Contact")[0]).group(1)
        # §12.1.2: the route set is the Record-Route, reversed, for the UAC.
        routes = [r for value in reversed(headers(ok, "Record-Route"))
                  for r in reversed([v.strip() for v in value.split(",")])]
        assert routes, "the proxy record-routes"
        route_lines = "".join(f"Route: {r}\r\n" for r in routes)
        dialog = common.format(to_tag=f";tag={to_tag}", cseq="{}")
        ua.send(f"ACK {contact} SIP/2.0\r\n" + via.format("tack1") + route_lines +
                dialog.format("1 ACK") + "Content-Length: 0\r\n\r\n")
        ua.send(f"BYE {contact} SIP/2.0\r\n" + via.format("tbye1") + route_lines +
                dialog.format("2 BYE") + "Content-Length: 0\r\n\r\n")
        assert ua.final().startswith("SIP/2.0 200"), "BYE through the proxy"
    finally:
        ua.close()
    assert bob.wait(15) == 0, bob.output()
    assert proxy.alive()


def test_plain_tcp_to_the_tls_port_is_refused_cleanly(proxy):
    with socket.create_connection(("127.0.0.1", proxy.tls_port), timeout=5) as raw:
        local = raw.getsockname()[1]
        raw.sendall(
            (
                "OPTIONS sip:a.lab SIP/2.0\r\n"
                f"Via: SIP/2.0/TCP 127.0.0.1:{local};branch=z9hG4bKplain\r\n"
                "From: <sip:x@a.lab>;tag=1\r\nTo: <sip:a.lab>\r\nCall-ID: plain-on-tls\r\n"
                "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            ).encode()
        )
        received = b""
        try:
            while True:
                chunk = raw.recv(65535)
                if not chunk:
                    break  # closed by the proxy: the expected end
                received += chunk
        except ConnectionResetError:
            pass
    # Whatever came back (a TLS alert at most) is no SIP response.
    assert not received.startswith(b"SIP/2.0")
    assert proxy.alive() and sip_ping(proxy.port) is not None
    assert "Traceback" not in proxy.output()
