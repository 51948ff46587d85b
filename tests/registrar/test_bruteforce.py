"""registrar.bruteforce: per-IP lockout, per-account delay, bounded tables; and its use
by the registrar and the proxy. All time comes from `task.Clock`: nothing sleeps."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import task
from twisted.logger import Logger

import registrar.bruteforce as bruteforce
from registrar.bruteforce import AuthGuard, AuthGuardConfig, guard_from_config
from registrar.location import open_location
from registrar.registrar import Registrar
from registrar.users import Users
from sipcore.digest import Challenge, answer_challenge
from sipcore.message import Request, Response
from sipcore.twisted.protection import Trusted, parse_network
from sipcore.twisted.transport import Address
from tests.registrar.test_registrar import FakeTx, register

START = 1_800_000_000.0


@pytest.fixture
def clock() -> task.Clock:
    c = task.Clock()
    c.advance(START)
    return c


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every log event the module emits."""
    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(
        bruteforce, "log", Logger(namespace="registrar.bruteforce", observer=seen.append)
    )
    return seen


def lockout_lines(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if "locking out" in e["log_format"]]


# -- per source lockout ------------------------------------------------------------------


def test_five_failures_within_the_window_lock_the_source_out(clock, events):
    guard = AuthGuard(clock)
    for _ in range(4):
        guard.failed("192.0.2.1")
        clock.advance(10)
        assert not guard.locked("192.0.2.1")
    guard.failed("192.0.2.1")  # the 5th within 40 s
    assert guard.locked("192.0.2.1")
    assert not guard.locked("192.0.2.2")  # nobody else
    assert guard.lockouts == 1
    clock.advance(59.9)
    assert guard.locked("192.0.2.1")
    clock.advance(0.2)
    assert not guard.locked("192.0.2.1")  # after the 60 s default lockout


def test_failures_spread_beyond_the_window_never_lock(clock):
    guard = AuthGuard(clock, AuthGuardConfig(limit=5, window=60))
    for _ in range(50):
        guard.failed("192.0.2.1")
        clock.advance(15.1)  # 5 failures span 60.4 s > 60 s
        assert not guard.locked("192.0.2.1")


def test_one_log_line_per_lockout_however_many_refusals(clock, events):
    guard = AuthGuard(clock, AuthGuardConfig(limit=3, window=10, lockout=30))
    for _ in range(3):
        guard.failed("192.0.2.1")
    for _ in range(100):
        assert guard.locked("192.0.2.1")
        guard.failed("192.0.2.1")  # failures during a lockout do not extend it
    [line] = lockout_lines(events)
    assert line["host"] == "192.0.2.1" and line["lockout"] == 30
    clock.advance(30.1)
    assert not guard.locked("192.0.2.1")
    # A fresh allowance after the lockout, then a second lockout and a second line.
    guard.failed("192.0.2.1")
    guard.failed("192.0.2.1")
    assert not guard.locked("192.0.2.1")
    guard.failed("192.0.2.1")
    assert guard.locked("192.0.2.1")
    assert len(lockout_lines(events)) == 2
    assert guard.lockouts == 2


def test_trusted_sources_are_never_locked_out(clock):
    trusted = Trusted((parse_network("10.0.0.0/8"),))
    guard = AuthGuard(clock, AuthGuardConfig(limit=2), trusted)
    for _ in range(10):
        guard.failed("10.1.2.3")
    assert not guard.locked("10.1.2.3")
    assert len(guard) == 0  # not even tracked
    guard.failed("192.0.2.9")
    guard.failed("192.0.2.9")
    assert guard.locked("192.0.2.9")


def test_limit_zero_turns_the_lockout_off(clock):
    guard = AuthGuard(clock, AuthGuardConfig(limit=0))
    for _ in range(100):
        guard.failed("192.0.2.1")
    assert not guard.locked("192.0.2.1") and len(guard) == 0


def test_source_table_is_a_bounded_lru_that_keeps_lockouts(clock):
    guard = AuthGuard(clock, AuthGuardConfig(limit=2, max_sources=10))
    guard.failed("198.51.100.1")
    guard.failed("198.51.100.1")
    assert guard.locked("198.51.100.1")
    for i in range(1000):  # a spray of one-off failures from many addresses
        guard.failed(f"203.0.{i // 256}.{i % 256}")
        assert len(guard) <= 10
    assert guard.locked("198.51.100.1")  # rotated, not evicted, while locked


# -- per account delay --------------------------------------------------------------------


def test_account_delay_grows_exponentially_and_is_capped(clock):
    guard = AuthGuard(clock, AuthGuardConfig(limit=0))  # isolate the per-account part
    delays = [guard.failed(f"198.51.100.{i}", "alice@a.lab") for i in range(10)]
    assert delays == [0, 0, 0, 0.5, 1, 2, 4, 8, 8, 8]
    assert guard.account_failures("alice@a.lab") == 10
    assert guard.failed("198.51.100.99", "bob@a.lab") == 0  # per account
    assert guard.failed("198.51.100.99") == 0  # no (existing) account: no delay


def test_success_resets_the_account_but_not_the_source(clock):
    guard = AuthGuard(clock, AuthGuardConfig(limit=5))
    for _ in range(4):
        guard.failed("192.0.2.1", "alice@a.lab")
    guard.succeeded("alice@a.lab")
    assert guard.account_failures("alice@a.lab") == 0
    assert guard.failed("192.0.2.1", "alice@a.lab") == 0
    # ... but the source's 5th failure still locks it: a valid login in between must
    # not let an attacker keep guessing from one address.
    assert guard.locked("192.0.2.1")


def test_an_account_quiet_for_aor_forget_starts_again(clock):
    guard = AuthGuard(clock, AuthGuardConfig(limit=0, aor_forget=300))
    for _ in range(6):
        guard.failed("192.0.2.1", "alice@a.lab")
    clock.advance(300.1)
    assert guard.failed("192.0.2.1", "alice@a.lab") == 0
    assert guard.account_failures("alice@a.lab") == 1


def test_account_table_is_bounded(clock):
    guard = AuthGuard(clock, AuthGuardConfig(limit=0, max_accounts=5))
    for i in range(100):
        guard.failed("192.0.2.1", f"user{i}@a.lab")
    assert guard.accounts == 5


def test_guard_from_config_reads_the_options(clock):
    config = {"auth-fail-limit": (3, 20.0), "auth-lockout": 120.0,
              "trusted": [parse_network("127.0.0.2")]}
    guard = guard_from_config(config, clock)
    assert (guard.config.limit, guard.config.window, guard.config.lockout) == (3, 20.0, 120.0)
    assert "127.0.0.2" in guard.trusted and "127.0.0.1" not in guard.trusted
    assert guard_from_config({}, clock).config == AuthGuardConfig()


# -- through the registrar ----------------------------------------------------------------

ATTACKER = Address("UDP", "203.0.113.66", 5060)
HONEST = Address("UDP", "192.0.2.10", 5060)


@pytest.fixture
def guarded(clock: task.Clock) -> Registrar:
    users = Users.from_passwords({"alice@a.lab": "secret"})
    guard = AuthGuard(clock, AuthGuardConfig(limit=5, window=60, lockout=60))
    return Registrar(["a.lab"], open_location("memory:", clock), clock, users,
                     auth_guard=guard)


def attempt(registrar: Registrar, source: Address, password: str, cseq: int) -> FakeTx:
    """A REGISTER answered 401, then one with credentials; returns the second's tx."""
    first = FakeTx()
    registrar.handle(register(cseq=cseq), first, source)
    [challenge] = [Challenge.parse(v) for v in first.final.headers.get_all("WWW-Authenticate")
                   if "SHA-256" in v]
    credentials = answer_challenge(challenge, "REGISTER", "sip:a.lab", "alice", password)
    tx = FakeTx()
    registrar.handle(register(f"Authorization: {credentials}", cseq=cseq + 1), tx, source)
    return tx


def final(tx: FakeTx) -> Response | None:
    finals = [r for r in tx.responses if r.status >= 200]
    return finals[0] if finals else None


def test_registrar_locks_out_a_guessing_source(guarded, clock, events):
    for i in range(5):
        tx = attempt(guarded, ATTACKER, f"guess{i}", cseq=10 * i)
        clock.advance(1)  # flush any per-account delay
        assert final(tx).status == 401
    # Locked: even the right password gets 403 now, and a bare REGISTER too.
    tx = FakeTx()
    guarded.handle(register(cseq=100), tx, ATTACKER)
    assert tx.final.status == 403 and tx.final.reason == "Too Many Failed Authentications"
    assert len(lockout_lines(events)) == 1
    # Another source with the right password is not affected.
    assert final(attempt(guarded, HONEST, "secret", cseq=200)).status == 200
    clock.advance(61)
    assert final(attempt(guarded, ATTACKER, "secret", cseq=300)).status == 200


def test_registrar_delays_401s_for_a_guessed_account(guarded, clock):
    sources = [Address("UDP", f"198.51.100.{i}", 5060) for i in range(6)]
    for i in range(3):  # one guess per source: no lockout, but the account counts
        assert final(attempt(guarded, sources[i], "nope", cseq=10 * i)).status == 401
    tx = attempt(guarded, sources[3], "nope", cseq=40)
    assert final(tx) is None  # the 4th failure's 401 is held back 0.5 s ...
    clock.advance(0.49)
    assert final(tx) is None
    clock.advance(0.02)
    assert final(tx).status == 401  # ... then sent
    tx = attempt(guarded, sources[4], "nope", cseq=50)
    clock.advance(0.99)
    assert final(tx) is None
    clock.advance(0.02)
    assert final(tx).status == 401
    # The owner logs in (undelayed: success is never held back) and resets the count.
    assert final(attempt(guarded, sources[5], "secret", cseq=60)).status == 200
    assert final(attempt(guarded, sources[5], "nope", cseq=70)).status == 401


def test_unknown_users_are_not_counted_per_account(guarded, clock):
    first = FakeTx()
    guarded.handle(register(to="sip:mallory@a.lab"), first, HONEST)
    challenge = Challenge.parse(first.final.headers.get_all("WWW-Authenticate")[0])
    credentials = answer_challenge(challenge, "REGISTER", "sip:a.lab", "mallory", "x")
    tx = FakeTx()
    guarded.handle(register(f"Authorization: {credentials}", to="sip:mallory@a.lab",
                            cseq=2), tx, HONEST)
    assert tx.final.status == 401
    assert guarded.auth_guard is not None and guarded.auth_guard.accounts == 0


# -- through the proxy ----------------------------------------------------------------------


def invite(*headers: str, from_: str = "sip:alice@a.lab", to: str = "sip:dave@c.lab",
           branch: str = "z9hG4bKinv1") -> Request:
    from sipcore.message import parse

    lines = [
        f"INVITE {to} SIP/2.0",
        f"Via: SIP/2.0/UDP 192.0.2.10:5060;branch={branch}",
        f"From: <{from_}>;tag=f1", f"To: <{to}>", f"Call-ID: {branch}",
        "CSeq: 1 INVITE", "Max-Forwards: 70", "Contact: <sip:alice@192.0.2.10>",
        *headers,
    ]
    message = parse(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


def test_proxy_shares_one_guard_with_its_registrar_and_honours_trusted(clock, tmp_path):
    from proxy.core import ProxyRole
    from proxy.routing import LocalIdentity, classify

    users = tmp_path / "users"
    users.write_text("alice@a.lab plain:secret\n")
    config = {"domains": ["a.lab"], "users": str(users), "location": "memory:",
              "auth-fail-limit": (2, 60.0), "trusted": [parse_network("10.9.9.9")]}
    role = ProxyRole(config, clock)
    role.start()
    assert role.registrar.auth_guard is role.auth_guard is not None
    role._me = LocalIdentity("192.0.2.1", 5060, frozenset({"a.lab"}))

    def authorise(request: Request, host: str) -> tuple[Response, float] | None:
        # popped=None: no Route of ours was removed (not an in-dialog request).
        return role._authorise(request, classify(request, role.me), None,
                               Address("UDP", host, 5060))

    refusal = authorise(invite(), "203.0.113.7")
    assert refusal is not None and refusal[0].status == 407
    challenge = Challenge.parse(refusal[0].headers.get_all("Proxy-Authenticate")[0])
    for i in range(2):
        bad = answer_challenge(challenge, "INVITE", "sip:dave@c.lab", "alice", f"g{i}")
        refusal = authorise(invite(f"Proxy-Authorization: {bad}", branch=f"z9hG4bKb{i}"),
                            "203.0.113.7")
        assert refusal is not None and refusal[0].status == 407
    refusal = authorise(invite(branch="z9hG4bKlocked"), "203.0.113.7")
    assert refusal is not None and refusal[0].status == 403
    # The registrar behind the same proxy refuses that source too: one guard.
    assert role.auth_guard.locked("203.0.113.7")
    # A trusted peer is neither challenged nor kept from other domains.
    assert authorise(invite(from_="sip:x@elsewhere.example"), "10.9.9.9") is None
    assert authorise(invite(), "10.9.9.9") is None
    # An untrusted foreign sender may not relay to another foreign domain.
    refusal = authorise(invite(from_="sip:x@elsewhere.example"), "203.0.113.8")
    assert refusal is not None and refusal[0].status == 403


# -- the command-line options ---------------------------------------------------------------


def test_options_parse_and_validate():
    from twisted.python import usage

    from registrar.tap import Options

    options = Options()
    options.parseOptions(["--location", "memory:", "--auth-fail-limit", "3/20",
                          "--auth-lockout", "120", "--trusted", "127.0.0.2/32"])
    assert options["auth-fail-limit"] == (3, 20.0) and options["auth-lockout"] == 120.0
    defaults = Options()
    defaults.parseOptions(["--location", "memory:"])
    assert defaults["auth-fail-limit"] == (5, 60.0) and defaults["auth-lockout"] == 60.0
    for bad in (["--auth-fail-limit", "lots"], ["--auth-lockout", "0"],
                ["--auth-lockout", "soon"]):
        with pytest.raises(usage.UsageError, match="--auth-"):
            Options().parseOptions(["--location", "memory:", *bad])


def test_proxy_holds_a_delayed_407_and_drops_it_if_the_transaction_ended(clock):
    from proxy.core import ProxyRole
    from sipcore.message import make_response
    from sipcore.transaction import State

    class Tx:
        final_response: Response | None = None
        state = State.PROCEEDING

        def __init__(self) -> None:
            self.sent: list[Response] = []

        def send_response(self, response: Response) -> None:
            self.sent.append(response)

    role = ProxyRole({"domains": ["a.lab"]}, clock)
    response = make_response(invite(), 407)
    held, ended = Tx(), Tx()
    role._send_refusal(held, response, 0.5)
    role._send_refusal(ended, response, 0.5)
    ended.state = State.TERMINATED  # e.g. CANCELled meanwhile
    clock.advance(0.49)
    assert held.sent == []
    clock.advance(0.02)
    assert held.sent == [response] and ended.sent == []
