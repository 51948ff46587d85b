# -*- test-case-name: tests.interop.test_faults -*-
"""Process life cycle of the SIP servers: graceful drain on SIGTERM, users reload on SIGHUP.

Both `twistd sipproxy` and `twistd sipregistrar` run a `proxy.service.SipService`,
which uses the two helpers here:

- `drain(stack, role, clock, grace)` runs at stopService, before the sockets close:
  new out-of-dialog requests get 503 + Retry-After (a client or a load balancer then
  tries another server), in-dialog requests (BYE) still pass so calls can end, and
  pending INVITEs are given a moment, then CANCELled downstream (§16.10), and any
  caller still without a final response gets 503. Bounded by `grace` seconds.
- `reload_users(config, roles)` re-reads `config['users']` in place, so every holder
  of the `Users` object (proxy, registrar, their digest authenticators) sees the new
  accounts at once, and nonces already handed out stay valid.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.internet import defer, task
from twisted.logger import Logger

from sipcore.ids import new_tag
from sipcore.message import Request, make_response
from sipcore.transaction import ServerTransaction, State
from sipcore.twisted.transport import Address

log = Logger(namespace="proxy.lifecycle")

#: Retry-After (seconds) in the 503s sent while shutting down (RFC 3261 §21.5.4).
DRAIN_RETRY_AFTER = 5
#: How often the drain looks at what is still pending (seconds).
_POLL = 0.05


class _DrainingRole:
    """Stands in for the role on the stack during the drain; delegates everything but
    new out-of-dialog requests, which it refuses with 503."""

    def __init__(self, role: Any) -> None:
        self._role = role

    def __getattr__(self, name: str) -> Any:
        return getattr(self._role, name)

    def request_received(self, request: Request, tx: ServerTransaction, source: Address) -> None:
        if request.to.tag is not None:
            # In-dialog (BYE, re-INVITE of an established call): let it through so
            # calls set up before the shutdown can still be ended properly.
            self._role.request_received(request, tx, source)
            return
        response = make_response(request, 503, "Shutting Down", to_tag=new_tag())
        response.headers.add("Retry-After", str(DRAIN_RETRY_AFTER))
        tx.send_response(response)


def _pending_server_txs(stack: Any) -> list[ServerTransaction]:
    """Server transactions that still owe their client a final response."""
    return [
        tx for tx in list(stack.table)
        if isinstance(tx, ServerTransaction) and tx.final_response is None
        and tx.state is not State.TERMINATED
    ]


@defer.inlineCallbacks
def drain(stack: Any, role: Any, clock: Any, grace: float) -> Any:
    """Refuse new work, settle pending transactions; fires within about `grace` s."""
    if grace <= 0:
        return
    stack.role = _DrainingRole(role)
    start = clock.seconds()
    pending = _pending_server_txs(stack)
    log.info("shutting down: draining {n} pending transaction(s), at most {grace:g}s",
             n=len(pending), grace=grace)

    def elapsed() -> float:
        return clock.seconds() - start

    # 1. Half the grace for what is in flight to finish on its own (a call about to
    #    be answered, a REGISTER waiting on the store).
    while _pending_server_txs(stack) and elapsed() < grace / 2:
        yield task.deferLater(clock, _POLL, lambda: None)
    # 2. CANCEL the forwarded branches of INVITEs still ringing (§16.10); the callee's
    #    487 then goes upstream through the response context as usual.
    contexts = getattr(role, "contexts", None) or {}
    cancelled = 0
    for tx, context in list(contexts.items()):
        if tx.final_response is None and not context.cancelled:
            context.cancel()
            cancelled += 1
    while _pending_server_txs(stack) and elapsed() < grace:
        yield task.deferLater(clock, _POLL, lambda: None)
    # 3. Whoever still has no final response gets 503: better than silence until
    #    their Timer B/F fires.
    refused = 0
    for tx in _pending_server_txs(stack):
        response = make_response(tx.request, 503, "Shutting Down", to_tag=new_tag())
        response.headers.add("Retry-After", str(DRAIN_RETRY_AFTER))
        tx.send_response(response)
        refused += 1
    if refused or cancelled:
        # One reactor turn so the last responses and CANCELs are written out.
        yield task.deferLater(clock, _POLL, lambda: None)
    log.info("drained in {t:.2f}s ({c} INVITE(s) cancelled, {r} answered 503)",
             t=elapsed(), c=cancelled, r=refused)


def reload_users(path: str | None, holders: Iterable[Any]) -> bool:
    """Re-read the users file into the `Users` objects the `holders` use.

    Only the `users` objects already in use are changed, entry table swapped in one
    assignment, so authenticators built on them need no rebuilding. A file that does
    not load leaves every user as it was and logs one line. Returns success.
    """
    from registrar.users import UsersFileError, load_users

    if not path:
        log.info("SIGHUP: no --users file to reload")
        return False
    try:
        fresh = load_users(path)
    except (OSError, UsersFileError, UnicodeDecodeError) as err:
        log.error("users reload failed, keeping the old users: {error}",
                  error=" ".join(str(err).split()))
        return False
    seen: set[int] = set()
    for holder in holders:
        users = getattr(holder, "users", None)
        if users is None or id(users) in seen:
            continue
        seen.add(id(users))
        users.replace(fresh)
    log.info("reloaded {n} user(s) from {path}", n=len(fresh), path=path)
    return bool(seen)


__all__ = ["DRAIN_RETRY_AFTER", "drain", "reload_users"]

