"""`twistd -n sipproxy` as a real process: OPTIONS from real sipp, and hostile input.

RFC 4475 vectors are sent as they are on the wire; the proxy must answer what it can
address with the status its parser chose and stay up for everybody else.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.interop.conftest import run_sipp, sip_ping

VECTORS = Path(__file__).parent.parent / "vectors" / "rfc4475"


def udp_exchange(port: int, data: bytes, timeout: float = 1.0) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(data, ("127.0.0.1", port))
        try:
            return s.recv(65535)
        except TimeoutError:
            return None


def tcp_exchange(port: int, data: bytes, timeout: float = 2.0) -> bytes:
    """Send `data`, read until the proxy closes the connection or `timeout` passes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        try:
            while chunk := s.recv(65535):
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks):
                    break
        except TimeoutError:
            pass
        return b"".join(chunks)


def status_of(answer: bytes | None) -> int | None:
    if not answer:
        return None
    return int(answer.split(b" ", 2)[1])


@pytest.fixture
def proxy(start_server, tmp_path):
    return start_server("sipproxy", "--domain", "a.lab", "--location", "memory:")


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_sipp_options_ping(proxy, tmp_path, transport):
    result = run_sipp(
        "options.xml", f"127.0.0.1:{proxy.port}", transport=transport, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert proxy.alive()


def test_udp_garbage_is_dropped(proxy):
    for junk in [b"\x00\xff" * 50, b"hello world", b"SIP/2.0\r\n\r\n", b"\r\n\r\n" * 3,
                 b"INVITE\r\n\r\n", bytes(range(256)) * 20]:
        assert udp_exchange(proxy.port, junk, timeout=0.3) is None
    assert status_of(sip_ping(proxy.port)) == 200
    assert proxy.alive()


@pytest.mark.parametrize(
    ("vector", "status"),
    [("badvers", 505), ("ncl", 400), ("insuf", 400), ("scalar02", 400), ("mismatch01", 400)],
)
def test_udp_malformed_request_gets_its_error(proxy, vector, status):
    answer = udp_exchange(proxy.port, (VECTORS / f"{vector}.dat").read_bytes())
    assert status_of(answer) == status, answer
    assert status_of(sip_ping(proxy.port)) == 200


def test_tcp_malformed_request_answered_then_closed(proxy):
    data = (VECTORS / "badvers.dat").read_bytes()
    # Over a stream, framing needs a Content-Length; badvers has one.
    assert status_of(tcp_exchange(proxy.port, data)) == 505
    garbage = tcp_exchange(proxy.port, b"\x00\x01 not sip at all\r\n\r\n")
    assert garbage == b""
    assert status_of(sip_ping(proxy.port)) == 200
    assert proxy.alive()


def test_tcp_stream_without_content_length_is_rejected(proxy):
    request = (
        b"OPTIONS sip:a.lab SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKtcp1\r\n"
        b"From: <sip:x@a.lab>;tag=1\r\nTo: <sip:a.lab>\r\nCall-ID: tcpncl\r\n"
        b"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n\r\n"
    )
    assert status_of(tcp_exchange(proxy.port, request)) == 400
    assert proxy.alive()
