# -*- test-case-name: tests.registrar.test_bruteforce -*-
"""Brute-force protection for digest authentication, shared by the registrar and the proxy.

A SIP server on a public address gets password-guessing traffic (sipvicious
`svcrack` and friends) within hours. Digest (RFC 3261 §22, RFC 7616) itself has no
answer to that: every wrong guess just earns a new 401/407. `AuthGuard` adds two
brakes, both driven by an injected clock (`seconds()`), so tests use
`twisted.internet.task.Clock` and never sleep:

1. **Per source IP lockout.** `limit` failed authentications from one IP within
   `window` seconds lock that IP out for `lockout` seconds. While locked out, every
   request of it that would need authentication (REGISTER, and proxied requests the
   proxy would challenge) is answered `403 Forbidden` without looking at the
   credentials, so guesses stop costing us hash work and stop being worth sending.
   We answer rather than drop: a dropped UDP request is retransmitted for 32 s
   (RFC 3261 §17.1.2.2, Timer F) and a dropped TCP one leaves a transaction open, so
   dropping costs a well-meaning but misconfigured phone (the usual "attacker" on a
   small site) more and tells its user nothing; a 403 ends the transaction at once
   and says why. One warning is logged per lockout, never one per request.
2. **Per account delay.** An attacker spreading guesses for one account over many
   IPs escapes (1). So failures are also counted per account (`user@realm`), and
   after `aor_free` of them each further 401/407 for that account is sent only after
   `aor_base_delay * 2**(n - aor_free - 1)` seconds, capped at `aor_max_delay`
   (below the 32 s Timer B/F of RFC 3261 §17.1, so honest clients never time out).
   The account is never locked: that would hand every stranger a way to lock real
   users out. A successful authentication for the account resets its count.

Failures are what `sipcore.digest` calls FAILED (wrong password, unknown user, a
nonce we never issued ...). A request without credentials (the first leg of every
normal login), STALE and REPLAY are not failures: in those the password was right or
never tried. Sources in `trusted` (e.g. a peer proxy forwarding many users' requests)
are never locked out, though their accounts still count.

Memory is bounded: both tables are LRUs (`max_sources`, `max_accounts`); callers
should only count accounts that exist, so random user names cannot churn the table.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Container
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.logger import Logger

__all__ = ["AuthGuard", "AuthGuardConfig", "SecondsClock", "guard_from_config"]

log = Logger(namespace="registrar.bruteforce")


class SecondsClock(Protocol):
    def seconds(self) -> float: ...


@dataclass(frozen=True, slots=True)
class AuthGuardConfig:
    """Every knob; `limit` 0 turns the per-IP lockout off, `aor_max_delay` 0 the delay."""

    #: Failed authentications from one IP within `window` seconds that trigger a lockout.
    limit: int = 5
    window: float = 60.0
    #: Seconds a source is locked out.
    lockout: float = 60.0
    #: Most source IPs tracked at once (LRU); each costs about `limit` floats.
    max_sources: int = 100_000
    #: Failures per account answered without delay.
    aor_free: int = 3
    #: Delay of the first delayed answer, doubling with each further failure.
    aor_base_delay: float = 0.5
    #: Cap of the per-account delay (keep it well under Timer B/F, 32 s).
    aor_max_delay: float = 8.0
    #: An account with no failure for this many seconds starts again from zero.
    aor_forget: float = 300.0
    #: Most accounts tracked at once (LRU).
    max_accounts: int = 100_000


class _Source:
    __slots__ = ("failures", "locked_until", "refused")

    def __init__(self, limit: int) -> None:
        # Only the newest `limit` failure times matter for "limit within window".
        self.failures: deque[float] = deque(maxlen=max(1, limit))
        self.locked_until = 0.0
        self.refused = 0


class _Account:
    __slots__ = ("count", "last")

    def __init__(self, now: float) -> None:
        self.count = 0
        self.last = now


class AuthGuard:
    """Per-IP lockout and per-account delay for failed digest authentications.

    The caller asks `locked(host)` before checking credentials (True: answer 403),
    reports each outcome with `failed(host, account)` (returns the seconds to wait
    before sending the 401/407) or `succeeded(account)`.
    """

    def __init__(
        self,
        clock: SecondsClock,
        config: AuthGuardConfig | None = None,
        trusted: Container[str] = (),
    ) -> None:
        self.clock = clock
        self.config = config or AuthGuardConfig()
        self.trusted = trusted
        self._sources: OrderedDict[str, _Source] = OrderedDict()
        self._accounts: OrderedDict[str, _Account] = OrderedDict()
        self.lockouts = 0  # total so far, for status pages and tests

    # -- per source ------------------------------------------------------------------

    def locked(self, host: str) -> bool:
        """Is `host` locked out now? Counts the refusal if so."""
        source = self._sources.get(host)
        if source is None or source.locked_until <= self.clock.seconds():
            return False
        source.refused += 1
        return True

    def failed(self, host: str, account: str | None = None) -> float:
        """One failed authentication from `host` (for `account`, if it exists).

        Returns how many seconds the caller should hold the 401/407 back (0: send now).
        """
        now = self.clock.seconds()
        config = self.config
        if config.limit > 0 and host not in self.trusted:
            self._count_source(host, now)
        if account is None or config.aor_max_delay <= 0:
            return 0.0
        return self._count_account(account, now)

    def succeeded(self, account: str | None) -> None:
        """The account's owner proved the password: forget its failures.

        The source's failures are kept: otherwise an attacker holding one valid
        account could interleave logins to stay below the lockout threshold.
        """
        if account is not None:
            self._accounts.pop(account, None)

    def _count_source(self, host: str, now: float) -> None:
        config = self.config
        table = self._sources
        source = table.get(host)
        if source is None:
            source = table[host] = _Source(config.limit)
            self._trim_sources(now)
        else:
            table.move_to_end(host)
        if source.locked_until > now:
            return  # already locked (a request checked before the lockout began)
        failures = source.failures
        failures.append(now)
        if len(failures) >= config.limit and now - failures[0] <= config.window:
            source.locked_until = now + config.lockout
            source.refused = 0
            failures.clear()  # after the lockout, a fresh allowance
            self.lockouts += 1
            log.warn(
                "auth: locking out {host} for {lockout:g} s after {limit} failed"
                " authentications within {window:g} s",
                host=host, lockout=config.lockout, limit=config.limit, window=config.window,
            )

    def _trim_sources(self, now: float) -> None:
        # Over the cap, drop the least recently active source; a locked one is moved
        # to the back instead (a lockout must outlive LRU order), looking at a few at
        # most so that the work per failure stays O(1).
        table = self._sources
        for _ in range(4):
            if len(table) <= self.config.max_sources:
                return
            host, source = next(iter(table.items()))
            if source.locked_until > now:
                table.move_to_end(host)
            else:
                del table[host]
        while len(table) > self.config.max_sources:
            table.popitem(last=False)  # all locked: the cap still wins

    # -- per account -------------------------------------------------------------------

    def _count_account(self, account: str, now: float) -> float:
        config = self.config
        table = self._accounts
        entry = table.get(account)
        if entry is None or now - entry.last > config.aor_forget:
            entry = _Account(now)
            table[account] = entry
        table.move_to_end(account)
        while len(table) > config.max_accounts:
            table.popitem(last=False)
        entry.count += 1
        entry.last = now
        return self.delay_for(entry.count)

    def delay_for(self, failures: int) -> float:
        """The hold-back after the `failures`-th failure in a row for one account."""
        config = self.config
        excess = failures - config.aor_free
        if excess <= 0:
            return 0.0
        # 2**excess overflows to inf for huge counts only past ~1000; cap the exponent.
        return min(config.aor_max_delay, config.aor_base_delay * 2.0 ** min(excess - 1, 64))

    # -- introspection -----------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._sources)

    def __bool__(self) -> bool:
        # A guard with empty tables is still a guard: `if guard:` must not mean
        # "if anything was tracked yet" (which __len__ alone would make it).
        return True

    @property
    def accounts(self) -> int:
        return len(self._accounts)

    def account_failures(self, account: str) -> int:
        entry = self._accounts.get(account)
        return 0 if entry is None else entry.count


def guard_from_config(config: Any, clock: SecondsClock) -> AuthGuard:
    """An `AuthGuard` from twistd options (`auth-fail-limit`, `auth-lockout`, `trusted`).

    Missing options fall back to the `AuthGuardConfig` defaults, so a bare dict works.
    """
    from sipcore.twisted.protection import Trusted

    kwargs: dict[str, Any] = {}
    limit = config.get("auth-fail-limit")
    if limit is not None:
        kwargs["limit"], kwargs["window"] = limit
    lockout = config.get("auth-lockout")
    if lockout is not None:
        kwargs["lockout"] = float(lockout)
    trusted = Trusted(tuple(config.get("trusted") or ()))
    return AuthGuard(clock, AuthGuardConfig(**kwargs), trusted)
