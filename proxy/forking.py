# -*- test-case-name: tests.proxy.test_forking -*-
"""Request forwarding (RFC 3261 §16.6) and the response context (§16.7), sans-IO.

A `ResponseContext` owns the branches of one proxied request. It decides when to start
branches (parallel within a q group, the next group when a group fails), what to do
with each response (forward provisionals and 2xx at once, CANCEL the others after a 2xx
or 6xx, recurse on 3xx), runs Timer C (§16.8), and when everything is over picks the
best final response (§16.7 step 6-7).

The owner supplies a `ForkEnv`: it builds and sends the branch request (resolving the
next hop), sends CANCELs, and delivers responses upstream. Tests use a fake env and
`twisted.internet.task.Clock`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, Protocol

from proxy.routing import Target
from sipcore.ids import new_tag
from sipcore.message import Request, Response, make_response
from sipcore.transaction import Clock, DelayedCall, Timers, schedule
from sipcore.uri import SipURI

__all__ = [
    "Branch",
    "BranchState",
    "ForkEnv",
    "ResponseContext",
    "build_branch_request",
    "build_cancel",
    "choose_best",
]

#: §16.7 step 6: within the 4xx class, prefer responses that let the client retry.
_PREFERRED_4XX = (401, 407, 415, 420, 484)
#: Default Timer C: "greater than 3 minutes" (§16.6 step 11).
DEFAULT_TIMER_C = 181.0
#: A branch recursing on 3xx may add at most this many targets in total (bounded work).
MAX_TARGETS = 16


def build_branch_request(
    request: Request,
    target: Target,
    via: str,
    record_route: str | None,
) -> Request:
    """The request for one target, per §16.6 steps 1-8 (the caller resolves step 7).

    ``via`` is our complete Via value (with a fresh branch); ``record_route`` is our
    Record-Route value for dialog-creating requests, else None.
    """
    out = request.copy()  # step 1
    out.uri = target.uri.copy()  # step 2
    mf = request.max_forwards
    out.headers.set("Max-Forwards", str(70 if mf is None else mf - 1))  # step 3
    if record_route is not None:  # step 4
        out.headers.prepend("Record-Route", record_route)
    for route in reversed(target.routes):  # step 6: e.g. a Path (RFC 3327 §5.3)
        out.headers.prepend("Route", route)
    out.headers.prepend("Via", via)  # step 8
    return out


def build_cancel(request: Request) -> Request:
    """§9.1: a CANCEL matching a request we sent (same Request-URI, Call-ID, From, To,
    CSeq number and top Via, hence the same branch; the Routes of the request)."""
    cancel = Request("CANCEL", request.uri.copy())
    headers = cancel.headers
    headers.add("Via", request.headers.get_all("Via")[0])
    for route in request.headers.get_all("Route"):
        headers.add("Route", route)
    headers.add("Max-Forwards", "70")
    for name in ("From", "To", "Call-ID"):
        headers.add(name, request.headers.get(name) or "")
    headers.add("CSeq", f"{request.cseq.number} CANCEL")
    return cancel


def _rank(status: int) -> tuple[int, int]:
    """Sort key: lower is better (§16.7 step 6)."""
    klass = status // 100
    if klass == 6:
        return (0, 0)
    preferred = 0 if klass == 4 and status in _PREFERRED_4XX else 1
    return (klass, preferred)


def choose_best(responses: list[Response]) -> Response | None:
    """§16.7 step 6-7: the final response to send upstream when every branch is done.

    6xx beats everything; otherwise the lowest class wins, preferring 401/407/415/420/484
    within 4xx; 503 becomes 500 (a 503 would make the client think *we* are overloaded);
    a 401/407 carries the challenges of every 401/407 received (§16.7 step 7).
    """
    finals = [r for r in responses if r.status >= 200]
    if not finals:
        return None
    best = min(finals, key=lambda r: _rank(r.status)).copy()
    if best.status == 503:
        best.status, best.reason = 500, "Server Internal Error"
    if best.status in (401, 407):
        for name in ("WWW-Authenticate", "Proxy-Authenticate"):
            have = set(best.headers.get_all(name))
            for other in finals:
                if other.status in (401, 407):
                    for value in other.headers.get_all(name):
                        if value not in have:
                            best.headers.add(name, value)
                            have.add(value)
    return best


class ForkEnv(Protocol):
    """What a response context needs from its owner."""

    clock: Clock
    timers: Timers

    def send_branch(self, branch: Branch) -> None:
        """Build, resolve and send ``branch``'s request; then call ``branch.sent(tx)``
        or ``branch.context.branch_failed(branch, status)``."""

    def send_cancel(self, branch: Branch) -> None:
        """Send a CANCEL for ``branch.request`` to ``branch.dest`` (§9.1)."""

    def forward_response(self, context: ResponseContext, response: Response) -> None:
        """Send ``response`` (our Via already removed) upstream."""


class BranchState(enum.Enum):
    RESOLVING = "resolving"  # waiting for the env to send it
    TRYING = "trying"  # sent, nothing back yet
    PROCEEDING = "proceeding"  # a provisional came back: a CANCEL may now be sent (§9.1)
    DONE = "done"  # a final response (real or synthetic) is recorded


class Branch:
    """One client transaction of a proxied request: the ClientTU of that transaction."""

    def __init__(self, context: ResponseContext, target: Target, group: int) -> None:
        self.context = context
        self.target = target
        self.group = group
        self.state = BranchState.RESOLVING
        self.request: Request | None = None  # set by the env before sending
        self.dest: Any = None  # the Address the env sent it to
        self.tx: Any = None
        self.final: Response | None = None
        self.cancel_wanted = False
        self.cancel_sent = False
        self.timer_c_fired = False
        self._timers: dict[str, DelayedCall] = {}

    def __repr__(self) -> str:
        return f"<Branch {self.target.uri} {self.state.value}>"

    # -- from the env -------------------------------------------------------------------
    def sent(self, tx: Any) -> None:
        """The env created the client transaction."""
        self.tx = tx
        if self.state is BranchState.RESOLVING:
            self.state = BranchState.TRYING
            self.context._branch_sent(self)

    # -- ClientTU -------------------------------------------------------------------------
    def response_received(self, tx: Any, response: Response) -> None:
        # §16.7 step 3: remove our own Via; what is left routes the response upstream.
        response = response.copy()
        response.headers.pop_first("Via")
        self.context._branch_response(self, response)

    def timed_out(self, tx: Any) -> None:
        # §16.7 step 1 / §16.8: a client transaction timing out counts as a 408.
        self.context._branch_synthetic(self, 408)

    def transport_failed(self, tx: Any) -> None:
        # §16.7 step 1 (and RFC 3263 §4.3): a transport error counts as a 503.
        self.context._branch_synthetic(self, 503)

    def terminated(self, tx: Any) -> None:
        pass

    # -- timers ---------------------------------------------------------------------------
    def start_timer(self, name: str, delay: float, callback: Callable[[], None]) -> None:
        self.stop_timer(name)
        self._timers[name] = schedule(self.context.env.clock, delay, self._fire, name, callback)

    def _fire(self, name: str, callback: Callable[[], None]) -> None:
        self._timers.pop(name, None)
        callback()

    def stop_timer(self, *names: str) -> None:
        for name in names or tuple(self._timers):
            call = self._timers.pop(name, None)
            if call is not None and call.active():
                call.cancel()

    @property
    def running_timers(self) -> frozenset[str]:
        return frozenset(n for n, c in self._timers.items() if c.active())


class ResponseContext:
    """All branches of one proxied request (§16.7)."""

    def __init__(
        self,
        request: Request,
        groups: list[list[Target]],
        env: ForkEnv,
        timer_c: float = DEFAULT_TIMER_C,
        recurse: bool = True,
    ) -> None:
        #: None once the context is settled (see `_release`).
        self.request: Request | None = request
        self.is_invite = request.method == "INVITE"
        self.pending_groups = [list(g) for g in groups if g]
        self.env = env
        self.timer_c = timer_c
        self.recurse = recurse
        self.branches: list[Branch] = []
        self.responses: list[Response] = []  # final responses eligible for §16.7 step 6
        self.final_sent: Response | None = None
        self.got_2xx = False
        self.got_6xx = False
        self.cancelled = False
        self._group = -1
        self._seen_targets = {str(t.uri) + str(t.dest) for g in groups for t in g}
        self._to_tag = new_tag()

    # -- driving ----------------------------------------------------------------------
    def start(self) -> None:
        if not self.pending_groups:
            self._finish()
            return
        self._start_next_group()

    def cancel(self) -> None:
        """The upstream client cancelled (§16.10): CANCEL every pending branch."""
        self.cancelled = True
        self.pending_groups.clear()
        self._cancel_pending()
        self._check_done()

    @property
    def done(self) -> bool:
        return all(b.state is BranchState.DONE for b in self.branches) and (
            self.final_sent is not None or self.got_2xx
        )

    # -- internals ----------------------------------------------------------------------
    def _start_next_group(self) -> None:
        group = self.pending_groups.pop(0)
        self._group += 1
        for target in group:
            self._start_branch(target)

    def _start_branch(self, target: Target) -> None:
        branch = Branch(self, target, self._group)
        self.branches.append(branch)
        self.env.send_branch(branch)

    def _branch_sent(self, branch: Branch) -> None:
        if self.is_invite:
            # §16.6 step 11: Timer C bounds how long an INVITE branch may ring.
            branch.start_timer("C", self.timer_c, lambda: self._timer_c_fired(branch))
        if branch.target.no_answer_timeout is not None:
            branch.start_timer(
                "no-answer", branch.target.no_answer_timeout,
                lambda: self._no_answer(branch),
            )
        if branch.cancel_wanted:
            # Cancelled while resolving: nothing was answered yet, so §9.1 forbids a
            # CANCEL; wait for a provisional (handled in _branch_response).
            pass

    def _no_answer(self, branch: Branch) -> None:
        # No response at all, not even 100: the next hop is most likely dead; fail over
        # now instead of after Timer B (RFC 3263 §4.3 leaves the timeout to us).
        if branch.state is BranchState.TRYING:
            self._branch_synthetic(branch, 408)

    def _timer_c_fired(self, branch: Branch) -> None:
        # §16.8: with a provisional, CANCEL the branch; without one, act as on a 408.
        branch.timer_c_fired = True
        if branch.state is BranchState.PROCEEDING:
            self._cancel_branch(branch)
        elif branch.state is BranchState.TRYING:
            self._branch_synthetic(branch, 408)

    def _branch_synthetic(self, branch: Branch, status: int) -> None:
        if branch.state is BranchState.DONE:
            return
        assert self.request is not None  # released only once every branch is done
        response = make_response(self.request, status, to_tag=self._to_tag)
        self._record_final(branch, response)

    def branch_failed(self, branch: Branch, status: int) -> None:
        """The env could not send the branch (no route, DNS failure ...)."""
        self._branch_synthetic(branch, status)

    def _branch_response(self, branch: Branch, response: Response) -> None:
        status = response.status
        if status < 200:
            if branch.state in (BranchState.TRYING, BranchState.RESOLVING):
                branch.state = BranchState.PROCEEDING
                branch.stop_timer("no-answer")
            if branch.state is not BranchState.PROCEEDING:
                return
            if branch.cancel_wanted and not branch.cancel_sent:
                self._send_cancel(branch)  # §9.1: now that something was answered
                return
            if status == 100:
                return  # §16.7 step 5: 100 Trying is hop by hop, never forwarded
            if self.is_invite and not branch.cancel_sent:
                branch.start_timer("C", self.timer_c, lambda: self._timer_c_fired(branch))
            if self.final_sent is None and not self.got_2xx and not self.cancelled:
                self.env.forward_response(self, response)  # §16.7 step 5
            return
        if 200 <= status < 300:
            # §16.7 step 5 / RFC 6026: every 2xx goes upstream at once, even from a
            # branch we already cancelled or gave up on: the callee has answered.
            first = not self.got_2xx
            self.got_2xx = True
            if branch.state is not BranchState.DONE:
                branch.state = BranchState.DONE
                branch.final = response
                branch.stop_timer()
            self.pending_groups.clear()
            self.env.forward_response(self, response)
            if first:
                self._cancel_pending()  # §16.7 step 10 / §16.10: the others lose
                self._check_done()
            return
        if branch.state is BranchState.DONE:
            return
        if 300 <= status < 400 and self._recurse(branch, response):
            branch.state = BranchState.DONE
            branch.final = response
            branch.stop_timer()
            self._check_done()
            return
        if branch.timer_c_fired and status == 487:
            # Our own Timer C CANCEL produced this 487: upstream, that is a timeout.
            assert self.request is not None
            response = make_response(self.request, 408, to_tag=self._to_tag)
        self._record_final(branch, response)

    def _recurse(self, branch: Branch, response: Response) -> bool:
        """§16.7 step 4/6: add the Contacts of a 3xx to the target set and try them.

        Returns True if at least one new target was started (then the 3xx itself is
        not a candidate for the best response: recursion replaces it).
        """
        if not self.recurse or self.cancelled or self.got_6xx:
            return False
        try:
            contacts = response.contacts
        except ValueError:
            return False
        started = False
        for contact in sorted(contacts, key=lambda c: -(c.q if c.q is not None else 1.0)):
            if contact.is_wildcard or not isinstance(contact.uri, SipURI):
                continue
            uri = contact.uri.copy()
            key = str(uri) + "None"
            if key in self._seen_targets or len(self._seen_targets) >= MAX_TARGETS:
                continue
            self._seen_targets.add(key)
            self._start_branch(Target(uri, label="recursed"))
            started = True
        return started

    def _record_final(self, branch: Branch, response: Response) -> None:
        branch.state = BranchState.DONE
        branch.final = response
        branch.stop_timer()
        self.responses.append(response)
        if response.status >= 600:
            # §16.7 step 5: a 6xx ends the search: CANCEL the rest, start nothing new.
            self.got_6xx = True
            self.pending_groups.clear()
            self._cancel_pending()
        self._check_done()

    def _cancel_pending(self) -> None:
        for branch in self.branches:
            if branch.state is not BranchState.DONE:
                self._cancel_branch(branch)

    def _cancel_branch(self, branch: Branch) -> None:
        if not self.is_invite:
            return  # only INVITE can be cancelled (§9.1); non-INVITE just completes
        branch.cancel_wanted = True
        if branch.state is BranchState.PROCEEDING and not branch.cancel_sent:
            self._send_cancel(branch)
        # Whatever happens to the CANCEL, do not wait for this branch forever: a UAS
        # that never answers would otherwise keep the context (and the caller) hanging.
        if "cancel-guard" not in branch.running_timers:
            branch.start_timer(
                "cancel-guard", self.env.timers.b,
                lambda: self._branch_synthetic(branch, 408 if branch.timer_c_fired else 487),
            )

    def _send_cancel(self, branch: Branch) -> None:
        branch.cancel_sent = True
        branch.stop_timer("C")
        self.env.send_cancel(branch)

    def _group_may_fail_over(self, group: int) -> bool:
        members = [b for b in self.branches if b.group == group]
        for b in members:
            allowed = b.target.failover_on
            status = b.final.status if b.final is not None else 408
            if allowed is not None and status not in allowed:
                return False
        return True

    def _check_done(self) -> None:
        if any(b.state is not BranchState.DONE for b in self.branches):
            return
        if (
            self.pending_groups
            and not (self.got_2xx or self.got_6xx or self.cancelled)
            and self._group_may_fail_over(self._group)
        ):
            self._start_next_group()
            return
        self._finish()

    def _finish(self) -> None:
        if self.got_2xx or self.final_sent is not None:
            self._release()
            return
        best = choose_best(self.responses)
        if best is None:
            # §16.7 step 6: no final response at all (e.g. nothing to try) -> 408.
            assert self.request is not None
            best = make_response(self.request, 408, to_tag=self._to_tag)
        self.final_sent = best
        self.env.forward_response(self, best)
        self._release()

    def _release(self) -> None:
        """Every branch is done and the final answer went upstream: drop the messages.

        The context lives on until the server transaction ends (Timer L, 32 s after a
        2xx over UDP) only to pass late 2xx (retransmissions, other forks) upstream,
        which needs none of them: an answered call then costs a few hundred bytes of
        proxy state instead of every parsed request and response it saw.
        """
        self.request = None
        self.responses = []
        self._seen_targets = set()
        for branch in self.branches:
            branch.request = None
            branch.final = None
            release = getattr(branch.tx, "release_request", None)
            if release is not None:
                release()
        # A late 2xx reaches us through its branch (branch.context), never through this
        # list, which only served the branches still running. Without it the context
        # and its branches form no cycle: refcounting frees the call when its last
        # transaction ends, instead of the garbage collector (64 objects a call, and
        # collections of 200,000 objects pausing the proxy for 0.75 s at 1,200 calls/s).
        self.branches = []
