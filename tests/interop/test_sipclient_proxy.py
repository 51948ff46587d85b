"""`sipclient` processes registering with and calling through a real `twistd -n sipproxy`.

The proxy runs with the memory location store; with `--users` it demands digest auth
for REGISTER (401) and for calls (407), which the clients answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.interop.sipclient_harness import SipClient

USERS = (
    "alice@a.lab plain:alicepw\n"
    "bob@a.lab plain:bobpw\n"
    "carol@a.lab plain:carolpw\n"
)
PASSWORDS = {"alice": "alicepw", "bob": "bobpw", "carol": "carolpw"}


@pytest.fixture
def lab(start_server: Callable[..., Any], tmp_path: Path) -> Iterator[Callable[..., SipClient]]:
    """Start the proxy on first use; `lab(user, *args, auth=False)` starts a client."""
    started: list[SipClient] = []
    proxies: dict[bool, Any] = {}

    def client(user: str, *args: str, auth: bool = False) -> SipClient:
        if auth not in proxies:
            extra: list[str] = []
            if auth:
                users = tmp_path / "users.txt"
                users.write_text(USERS)
                extra = ["--users", str(users)]
            proxies[auth] = start_server(
                "sipproxy", "--domain", "a.lab", "--location", "memory:", *extra
            )
        proxy = proxies[auth]
        creds = ["--password", PASSWORDS[user]] if auth else []
        c = SipClient(tmp_path, user, "--proxy", f"127.0.0.1:{proxy.port}", *creds, *args)
        started.append(c)
        c.expect(rf"registered sip:{user}@a\.lab expires=\d+$")
        return c

    yield client
    for c in started:
        c.stop()


def test_register_call_bye_unregister(lab: Callable[..., SipClient]) -> None:
    bob = lab("bob", "--auto-answer")
    alice = lab("alice")
    alice.send("call bob")
    alice.expect(r"call 1 ringing$")
    alice.expect(r"call 1 connected$")
    bob.expect(r"call 1 incoming sip:alice@a\.lab$")
    bob.expect(r"call 1 connected$")
    alice.send("hangup")
    alice.expect(r"call 1 ended hangup$")
    bob.expect(r"call 1 ended bye$")
    alice.send("quit")
    alice.expect(r"unregistered sip:alice@a\.lab$")
    assert alice.wait() == 0


def test_digest_auth_register_and_call(lab: Callable[..., SipClient]) -> None:
    bob = lab("bob", "--auto-answer", auth=True)
    alice = lab("alice", auth=True)
    alice.send("call bob")
    alice.expect(r"call 1 connected$")
    bob.expect(r"call 1 connected$")
    bob.send("hangup")
    alice.expect(r"call 1 ended bye$")
    # The proxy challenged both the REGISTER (401) and the INVITE (407).
    log = alice.stderr_tail(1_000_000)
    assert "401 Unauthorized cseq=1 REGISTER" in log
    assert "407 Proxy Authentication Required cseq=1 INVITE" in log


def test_busy_486(lab: Callable[..., SipClient]) -> None:
    lab("bob", "--busy")
    alice = lab("alice")
    alice.send("call bob")
    alice.expect(r"call 1 ended 486 Busy Here$")


def test_reject_603(lab: Callable[..., SipClient]) -> None:
    bob = lab("bob")
    alice = lab("alice")
    alice.send("call bob")
    bob.expect(r"call 1 incoming ")
    bob.send("reject 1")
    alice.expect(r"call 1 ended 603 Decline$")


def test_unknown_user_404(lab: Callable[..., SipClient]) -> None:
    alice = lab("alice")
    alice.send("call nobody")
    alice.expect(r"call 1 ended 4(04 Not Found|80 Temporarily Unavailable)$")


def test_cancel_487(lab: Callable[..., SipClient]) -> None:
    bob = lab("bob")
    alice = lab("alice")
    alice.send("call bob")
    alice.expect(r"call 1 ringing$")
    alice.send("hangup")
    alice.expect(r"call 1 ended 487 Request Terminated$")
    bob.expect(r"call 1 ended cancelled$")


def test_experiment_3_through_proxy(lab: Callable[..., SipClient]) -> None:
    bob = lab("bob")
    alice = lab("alice")
    carol = lab("carol")
    alice.send("call bob")
    bob.expect(r"call 1 incoming sip:alice@a\.lab$")
    bob.send("answer 1")
    alice.expect(r"call 1 connected$")
    carol.send("call bob")
    bob.expect(r"call 2 incoming sip:carol@a\.lab$")
    bob.send("hold 1")
    bob.expect(r"call 1 held$")
    alice.expect(r"call 1 remote-held$")
    bob.send("answer 2")
    carol.expect(r"call 1 connected$")
    bob.send("hangup 2")
    carol.expect(r"call 1 ended bye$")
    bob.send("resume 1")
    bob.expect(r"call 1 resumed$")
    alice.expect(r"call 1 remote-resumed$")
    alice.send("hangup")
    bob.expect(r"call 1 ended bye$")


def test_busy_when_in_call(lab: Callable[..., SipClient]) -> None:
    lab("bob", "--auto-answer", "--busy-when-in-call")
    alice = lab("alice")
    carol = lab("carol")
    alice.send("call bob")
    alice.expect(r"call 1 connected$")
    carol.send("call bob")
    carol.expect(r"call 1 ended 486 Busy Here$")


def test_wrong_password_exits_1_with_one_line(start_server: Callable[..., Any],
                                              tmp_path: Path) -> None:
    users = tmp_path / "users.txt"
    users.write_text(USERS)
    proxy = start_server("sipproxy", "--location", "memory:", "--users", str(users))
    alice = SipClient(tmp_path, "alice", "--proxy", f"127.0.0.1:{proxy.port}",
                      "--password", "not-alices")
    try:
        alice.expect(r"registration failed 401 Unauthorized$")
        assert alice.wait() == 1
        assert "registration with" in alice.stderr_tail()
        assert "wrong --password" in alice.stderr_tail()
    finally:
        alice.stop()
    assert proxy.alive()
