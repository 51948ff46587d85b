"""Errors a real `twistd -n sipproxy` must answer clearly and survive: Max-Forwards 0,
a routing loop (482 via §16.3 loop detection), bad Route / Via values (400)."""

from __future__ import annotations

import pytest

from tests.interop.conftest import free_port, sip_ping
from tests.interop.sip_helpers import sip_request, status_of
from tests.interop.test_proxy_calls import call, explain

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def proxy(start_server):
    port = free_port()
    # c.lab is routed to the proxy itself: a loop.
    return start_server("sipproxy", "--domain", "a.lab", "--location", "memory:",
                        "--route", f"c.lab=127.0.0.1:{port}", port=port)


def test_max_forwards_zero_is_483(proxy, tmp_path):
    result = call(proxy.port, tmp_path, "uac_fail.xml", status=483, maxfwd=0)
    assert result.returncode == 0, explain(result, tmp_path)


def test_routing_loop_is_482(proxy, tmp_path):
    result = call(proxy.port, tmp_path, "uac_fail.xml", domain="c.lab", status=482, maxfwd=70)
    assert result.returncode == 0, explain(result, tmp_path)
    assert proxy.alive()


def bad_request(port: int, header: str) -> str:
    return (
        f"OPTIONS sip:bob@a.lab SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:@LOCAL@;branch=z9hG4bKbad1;rport\r\n"
        f"{header}\r\n"
        "From: <sip:alice@a.lab>;tag=1\r\nTo: <sip:bob@a.lab>\r\nCall-ID: bad-1\r\n"
        "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("Route: <sip:127.0.0.1;lr", b"Bad name-addr"),
        ("Route: not a uri at all", b""),
        ("Via: SIP/2.0/UDP", b"Bad Via"),
        ("Proxy-Require: foo", b""),
    ],
)
def test_bad_header_gets_a_clear_answer(proxy, header, reason):
    answer = sip_request(proxy.port, bad_request(proxy.port, header))
    expected = 420 if header.startswith("Proxy-Require") else 400
    assert status_of(answer) == expected, answer
    assert reason in answer.split(b"\r\n")[0]
    assert status_of(sip_ping(proxy.port)) == 200
    assert proxy.alive()


def test_unsupported_scheme_is_416(proxy):
    text = bad_request(proxy.port, "Subject: x").replace(
        "OPTIONS sip:bob@a.lab", "OPTIONS http://example.com/"
    )
    assert status_of(sip_request(proxy.port, text)) == 416
    assert proxy.alive()
