# -*- test-case-name: tests.proxy.test_core -*-
"""The proxy role (RFC 3261 §16): what happens to each request the stack hands over.

Per request: validate (§16.3, `proxy.validation`), preprocess Route (§16.4,
`proxy.routing`), authorise (§22.3, when a users file is given), determine the target
set (§16.5: location service for our domains; for others the static map, the redirect
server, RFC 3263 DNS, then the upstreams), then forward in a `ResponseContext`
(§16.6-16.7, `proxy.forking`). ACKs for 2xx and stray responses are forwarded
statelessly (§16.7 step 10, §16.11, RFC 6026).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Final

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from proxy.forking import (
    DEFAULT_TIMER_C,
    Branch,
    ResponseContext,
    build_branch_request,
    build_cancel,
)
from proxy.resolver import SipResolver
from proxy.routing import (
    DIALOG_CREATING,
    Decision,
    LocalIdentity,
    Target,
    classify,
    is_ip_literal,
    parse_received,
    preprocess_routes,
    q_groups,
    uri_address,
)
from proxy.validation import (
    Rejection,
    check_loop,
    check_max_forwards,
    check_proxy_require,
    check_scheme,
    check_syntax,
    loop_hash,
    make_branch,
    received_route,
)
from registrar.bruteforce import AuthGuard, guard_from_config
from registrar.location import LocationError, open_location
from sipcore.digest import AuthOutcome, Credentials, DigestAuthenticator
from sipcore.errors import ParseError
from sipcore.ids import new_tag
from sipcore.message import Request, Response, make_response
from sipcore.transaction import ServerInviteTransaction, ServerTxHandle, State, Timers
from sipcore.transaction.base import NULL_TU
from sipcore.twisted.inline import inline_callbacks
from sipcore.twisted.protection import Trusted
from sipcore.twisted.role import BaseRole
from sipcore.twisted.transport import Address
from sipcore.uri import SipURI, parse_name_addr

log = Logger(namespace="proxy.core")

#: `_targets_now` answer meaning "only a Deferred can tell" (None is a valid result).
_ASYNC: Final = object()

#: RFC 3263 §4.3 fail-over: an upstream that does not answer at all within this many
#: seconds is given up for the next one (Timer B, 32 s, would be the RFC's worst case).
DEFAULT_FAILOVER_TIMEOUT = 5.0
#: Statuses that move a call on to the next upstream (a transport error counts as 503).
UPSTREAM_FAILOVER = frozenset({408, 503})
#: How many AORs we remember as "known" for 480-versus-404 without a users file.
MAX_KNOWN_AORS = 100_000
#: Retry-After seconds when the location store cannot be read (as registrar.RETRY_AFTER).
LOCATION_RETRY_AFTER = 5


class _Forwarder:
    """The `ForkEnv` of one proxied request: ties a response context to the stack."""

    def __init__(
        self, role: ProxyRole, tx: ServerTxHandle, request: Request, loop_part: str,
        source: Address,
    ) -> None:
        self.role = role
        self.tx = tx
        self.request: Request | None = request
        self.loop_part = loop_part
        self.source = source
        self.clock = role.clock
        self.timers = role.timers

    def send_branch(self, branch: Branch) -> None:
        self.role._send_branch(self, branch)

    def send_cancel(self, branch: Branch) -> None:
        if branch.request is None or branch.dest is None:
            return
        self.role.stack.send_request(build_cancel(branch.request), branch.dest, NULL_TU)

    def forward_response(self, context: ResponseContext, response: Response) -> None:
        tx = self.tx
        if tx.state is State.TERMINATED:
            # The server transaction is gone (Timer L expired) but a 2xx retransmission
            # still came: forward it statelessly by its Via (RFC 6026 §7.2 / §16.7 step 10).
            # A non-INVITE one has answered once and for all (§16.7 step 5).
            if context.is_invite and 200 <= response.status < 300:
                self.role.stack.send_response_stateless(response, self.source)
            return
        tx.send_response(response)


class ProxyRole(BaseRole):
    """A stateful, forking, record-routing proxy for ``config['domains']``."""

    # Late 2xx go upstream statelessly (stray_response, _Forwarder.forward_response),
    # so an Accepted INVITE transaction is only a lookup: the table keeps that, flat.
    retire_accepted_invites = True

    def __init__(self, config: Any, clock: Any) -> None:
        self.config = config
        self.clock = clock
        self.domains = frozenset(config.get("domains") or [])
        self.timers = Timers()
        self.timer_c = float(config.get("timer-c") or DEFAULT_TIMER_C)
        self.failover_timeout = float(config.get("failover-timeout") or DEFAULT_FAILOVER_TIMEOUT)
        self.routes: dict[str, tuple[str, int]] = dict(config.get("routes") or {})
        self.redirect_server: tuple[str, int] | None = config.get("redirect-server")
        self.upstreams: list[SipURI] = list(config.get("upstreams") or [])
        self.resolver = SipResolver(clock, self.routes, config.get("dns"))
        self.users: Any = None
        self.authenticators: dict[str, DigestAuthenticator] | None = None
        if config.get("users"):
            from registrar.users import load_users

            self.users = load_users(config["users"])
            self.authenticators = {
                d: DigestAuthenticator(d, self.users, clock) for d in self.domains
            }
        # --trusted peers skip digest auth and may relay (see _authorise); with users,
        # one AuthGuard (registrar.bruteforce) serves this proxy and its registrar.
        self.trusted = Trusted(tuple(config.get("trusted") or ()))
        # Signs our Record-Route when we authenticate: in-dialog requests skip the 407
        # only if their Route carries the mark of their own dialog (no relay by forged
        # Route). Without --users nothing is authenticated, so nothing is signed.
        self.rr_secret: bytes = config.get("rr-secret") or b""
        if self.users is not None and not self.rr_secret:
            self.rr_secret = os.urandom(32)
        self.auth_guard: AuthGuard | None = None
        if self.users is not None:
            self.auth_guard = guard_from_config(config, clock)
        self.location: Any = None
        self.registrar: Any = None
        self.contexts: dict[ServerTxHandle, ResponseContext] = {}
        self.known_aors: set[str] = set()
        self._me: LocalIdentity | None = None

    # -- life cycle ----------------------------------------------------------------------
    def start(self) -> None:
        from registrar.location.replicated import open_for_workers
        from registrar.registrar import Registrar

        # `--workers N` with memory: each worker's copy is replicated to the others.
        self.location = open_for_workers(
            open_location(self.config.get("location") or "memory:", self.clock),
            self.config, on_aor=self._note_aor,
        )
        # RFC 3261 §10.3 REGISTER processing; `auth-algorithms` ("MD5,SHA-256") reorders
        # the 401 challenges for UAs that only read the first one (sipp 3.6).
        algorithms = self.config.get("auth-algorithms") or "SHA-256,MD5"
        self.registrar = Registrar(
            self.domains, self.location, self.clock, self.users,
            auth_algorithms=[a.strip() for a in algorithms.split(",") if a.strip()],
            auth_guard=self.auth_guard,
        )
        self.registrar.on_update = self._note_aor

    def stop(self) -> Any:
        if self.location is not None:
            return self.location.close()
        return None

    @property
    def me(self) -> LocalIdentity:
        if self._me is None or self._me.port == 0:
            endpoint = self.stack.endpoint
            self._me = LocalIdentity(
                endpoint.interface, endpoint.port, self.domains,
                via_port=getattr(endpoint, "send_port", None),
                via_ports=frozenset(self.config.get("worker-ports") or ()),
                rr_secret=self.rr_secret,
            )
        return self._me

    # -- requests ------------------------------------------------------------------------
    def request_received(self, request: Request, tx: ServerTxHandle, source: Address) -> None:
        try:
            self._request(request, tx, source)
        except ParseError as err:
            # A header we needed turned out malformed: answer through the transaction so
            # it terminates normally (the endpoint's own reject would bypass it).
            self._reply(tx, request, err.status, err.reason)

    def _reply(
        self, tx: ServerTxHandle, request: Request, status: int, reason: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        response = make_response(request, status, reason, to_tag=new_tag())
        for name, value in headers:
            response.headers.add(name, value)
        tx.send_response(response)

    def _reject(self, tx: ServerTxHandle, request: Request, rejection: Rejection) -> None:
        self._reply(tx, request, rejection.status, rejection.reason, rejection.headers)

    def _request(self, request: Request, tx: ServerTxHandle, source: Address) -> None:
        me = self.me
        check_syntax(request)  # §16.3 step 1
        rejection = check_scheme(request)  # step 2
        if rejection is None and check_max_forwards(request) is not None:  # step 3
            if request.method == "OPTIONS" and classify(request, me).kind == "local":
                tx.send_response(self.capabilities(request))  # §16.3 step 3 / §11
                return
            rejection = Rejection(483)
        rejection = rejection or check_loop(request, me.is_own_via)  # step 4
        rejection = rejection or check_proxy_require(request)  # step 5
        if rejection is not None:
            self._reject(tx, request, rejection)
            return
        # §16.6 step 8: the loop hash covers the request as it reached us; it is only
        # computed if the request is forwarded (a REGISTER for us never is).
        as_received = received_route(request)
        popped = preprocess_routes(request, me)  # §16.4: the Route of ours it removed
        decision = classify(request, me)
        if request.method == "REGISTER" and decision.kind in ("lookup", "local"):
            # REGISTER for one of our domains: the registrar's business (§10.3).
            self._registrar_handle(request, tx, source)
            return
        if decision.kind == "local":
            if request.method == "OPTIONS":
                tx.send_response(self.capabilities(request))
            else:
                self._reply(tx, request, 404)
            return
        refusal = self._authorise(request, decision, popped, source)  # §16.3 step 6, §22.3
        if refusal is not None:
            self._send_refusal(tx, *refusal)
            return
        if isinstance(tx, ServerInviteTransaction):
            # §16.2: a stateful proxy sends 100 at once for INVITE, so the client stops
            # retransmitting while we look up and fork.
            tx.send_response(make_response(request, 100))
        loop_part = loop_hash(request, request.top_via, as_received)
        env = _Forwarder(self, tx, request, loop_part, source)
        targets = self._targets_now(request, decision)
        if targets is not _ASYNC:
            # Known at once (a Route, or the memory: store): no Deferred chain.
            try:
                self._start_context(targets, env)
            except Exception:
                self._targets_failed(Failure(), env)
            return
        d = self._targets(request, decision)
        d.addCallback(self._start_context, env)
        d.addErrback(self._targets_failed, env)

    def _registrar_handle(self, request: Request, tx: ServerTxHandle, source: Address) -> None:
        # Hook for the registrar (RFC 3261 §10.3): `self.registrar` answers REGISTER
        # through `tx` and writes the `.location` the proxy reads bindings from; it
        # tells `_note_aor` each AOR it updated (480 rather than 404 once they are gone).
        self.registrar.answer(request, tx, source)

    def _note_aor(self, aor: str) -> None:
        """Remember an AOR that registered (here or, replicated, on another worker)."""
        known = self.known_aors
        if len(known) >= MAX_KNOWN_AORS:
            known.clear()  # bounded: forgetting only turns a later 480 into a 404
        known.add(aor)

    # -- authorisation (§22.3; the no-open-relay policy) ------------------------------------
    def _authorise(
        self, request: Request, decision: Decision, popped: SipURI | None, source: Address
    ) -> tuple[Response, float] | None:
        """None to go on, else the response refusing the request and how many seconds
        to hold it back (registrar.bruteforce's per-account delay).

        Local users must prove who they are (407) to go anywhere; others may only reach
        our users (403 "Relaying Denied": no open relay). In-dialog requests that came
        back to us through our own Record-Route were authorised when the dialog was set
        up. Sources in --trusted (a peer proxy, a PBX) are authenticated by their
        address: they neither get 407 nor are kept from other domains.
        """
        if self.authenticators is None:
            return None
        if request.to.tag is not None and self.me.authorised_dialog(popped, request.call_id):
            return None
        if source.host in self.trusted:
            return None
        from_uri = request.from_.uri
        realm = from_uri.host.lower() if isinstance(from_uri, SipURI) else ""
        auth = self.authenticators.get(realm)
        if auth is None:
            if decision.kind in ("lookup", "local"):
                return None
            return make_response(request, 403, "Relaying Denied", to_tag=new_tag()), 0.0
        guard = self.auth_guard
        if guard is not None and guard.locked(source.host):
            # registrar.bruteforce: locked out after repeated failures (RFC 3261 §21.4.4).
            refused = make_response(request, 403, "Too Many Failed Authentications",
                                    to_tag=new_tag())
            return refused, 0.0
        stale = False
        failed_account: str | None = None
        failed = False
        for value in request.headers.get_all("Proxy-Authorization"):
            credentials = Credentials.parse(value)  # ParseError -> 400
            if credentials.realm != realm:
                continue
            result = auth.verify(request.method, credentials)
            account: str | None = f"{credentials.username}@{realm}"
            if account not in self.users:
                account = None  # count real accounts only (bounded, unchurnable)
            if result.ok:
                if guard is not None:
                    guard.succeeded(account)
                if result.username != getattr(from_uri, "user", None):
                    return make_response(request, 403, "Forbidden", to_tag=new_tag()), 0.0
                self._strip_credentials(request, realm)
                return None
            if result.outcome is AuthOutcome.FAILED:
                failed, failed_account = True, account
            stale = result.outcome in (AuthOutcome.STALE, AuthOutcome.REPLAY)
        # One failure per request, however many credentials it carried.
        delay = 0.0
        if guard is not None and failed:
            delay = guard.failed(source.host, failed_account)
        challenge = make_response(request, 407, to_tag=new_tag())
        for value in auth.challenge_header_values(stale):
            challenge.headers.add("Proxy-Authenticate", value)
        return challenge, delay

    def _send_refusal(self, tx: ServerTxHandle, response: Response, delay: float) -> None:
        if delay <= 0:
            tx.send_response(response)
            return

        def send() -> None:
            # The client may have given up (CANCEL -> 487, transport error) meanwhile.
            if tx.final_response is None and tx.state is not State.TERMINATED:
                tx.send_response(response)

        self.clock.callLater(delay, send)

    @staticmethod
    def _strip_credentials(request: Request, realm: str) -> None:
        # §22.3: our own credentials are consumed here; others' travel on.
        values = request.headers.get_all("Proxy-Authorization")
        request.headers.remove("Proxy-Authorization")
        for value in values:
            if Credentials.parse(value).realm != realm:
                request.headers.add("Proxy-Authorization", value)

    # -- target determination (§16.5) ------------------------------------------------------
    def _targets(self, request: Request, decision: Decision) -> defer.Deferred[Any]:
        uri = request.uri
        if decision.kind == "route":
            return defer.succeed([[Target(uri)]])
        if decision.kind == "lookup":
            return self._lookup(request, decision.aors)
        return self._foreign(uri)

    def _targets_now(self, request: Request, decision: Decision) -> Any:
        """`_targets`' result when it needs no waiting, else `_ASYNC`."""
        if decision.kind == "route":
            return [[Target(request.uri)]]
        if decision.kind == "lookup":
            get_now = getattr(self.location, "get_now", None)
            if get_now is not None:
                targets: list[Target] = []
                for aor in decision.aors:
                    self._add_targets(targets, get_now(aor))
                    if targets:
                        break
                return self._lookup_result(targets, decision.aors)
        if decision.kind == "foreign":
            return self._foreign_now(request.uri)
        return _ASYNC

    def _add_targets(self, targets: list[Target], bindings: Any) -> None:
        for binding in bindings:
            target = self._binding_target(binding)
            if target is not None:
                targets.append(target)

    @inline_callbacks
    def _lookup(self, request: Request, aors: tuple[str, ...]) -> Any:
        targets: list[Target] = []
        for aor in aors:
            bindings = yield self.location.get(aor)
            self._add_targets(targets, bindings)
            if targets:
                break
        return self._lookup_result(targets, aors)

    def _lookup_result(self, targets: list[Target], aors: tuple[str, ...]) -> Any:
        if targets:
            return q_groups(targets)
        known = any(self._known(aor) for aor in aors)
        # §16.5 / §21.4.18: the user exists but is not reachable now -> 480, else 404.
        return Rejection(480) if known else Rejection(404)

    def _known(self, aor: str) -> bool:
        if aor in self.known_aors:
            return True
        if self.users is not None:
            _scheme, _, address = aor.partition(":")
            return address in self.users
        return False

    @staticmethod
    def _binding_target(binding: Any) -> Target | None:
        try:
            contact = binding.contact
            uri = parse_name_addr(contact).uri if contact.startswith("<") else None
            if uri is None:
                from sipcore.uri import parse_uri

                uri = parse_uri(contact)
        except ParseError:
            log.warn("unusable binding contact {c!r}", c=binding.contact)
            return None
        return Target(
            uri,
            dest=parse_received(binding.received),
            routes=tuple(binding.path),
            q=binding.q,
            label=binding.aor,
        )

    def _foreign_now(self, uri: Any) -> Any:
        """`_foreign`'s answer when it needs no waiting (a --route, an address), else
        `_ASYNC`: in-dialog requests to a Contact take this path, with no Deferred."""
        if isinstance(uri, SipURI):
            host = uri.host.lower()
            direct = self.resolver.static_route(host)
            if direct is not None:
                return [[Target(uri, dest=direct, label="route")]]
            if is_ip_literal(host):
                # An address, not a domain (a Contact, a recursed 3xx): send it there.
                return [[Target(uri)]]
        return _ASYNC

    @inline_callbacks
    def _foreign(self, uri: Any) -> Any:
        """The cross-domain order: --route, --redirect-server, DNS, --upstream."""
        now = self._foreign_now(uri)
        if now is not _ASYNC:
            return now
        if isinstance(uri, SipURI):
            if self.redirect_server is not None:
                # The redirect server is asked like any next hop; its 3xx is recursed
                # on in the response context (§16.7 step 6, via _recurse).
                host_, port = self.redirect_server
                return [[Target(uri, dest=Address("UDP", host_, port), label="redirect")]]
            if self.resolver.dns is not None:
                addresses = yield self.resolver.resolve(uri)
                if addresses:
                    # RFC 3263 §4.3: try the servers in order, moving on only when one
                    # fails to answer (timeout/transport) or is unavailable.
                    return [
                        [Target(uri, dest=a, failover_on=UPSTREAM_FAILOVER,
                                no_answer_timeout=self.failover_timeout, label="dns")]
                        for a in addresses
                    ]
        if self.upstreams:
            groups = []
            for up in self.upstreams:
                addresses = yield self.resolver.resolve(up)
                for a in addresses[:1]:
                    groups.append([Target(uri, dest=a, failover_on=UPSTREAM_FAILOVER,
                                          no_answer_timeout=self.failover_timeout,
                                          label="upstream")])
            if groups:
                return groups
        if isinstance(uri, SipURI) and self.resolver.dns is None:
            # Last resort: the system resolver on the Request-URI's host.
            return [[Target(uri)]]
        return Rejection(404, "No Route To Domain")

    # -- forwarding ------------------------------------------------------------------------
    def _start_context(self, targets: Any, env: _Forwarder) -> None:
        tx, request = env.tx, env.request
        if tx.final_response is not None or tx.state is State.TERMINATED:
            return  # cancelled (or failed) while we were looking up
        assert request is not None
        if isinstance(targets, Rejection):
            self._reject(tx, request, targets)
            return
        context = ResponseContext(request, targets, env, timer_c=self.timer_c)
        self.contexts[tx] = context
        context.start()
        # From here on the context holds the request (and drops it once the call is
        # answered and every branch is done, while the transactions wait out Timer L/M).
        env.request = None

    def _targets_failed(self, failure: Any, env: _Forwarder) -> None:
        if failure.check(LocationError):
            # The store is down (Redis gone, SQLite locked): one line, and a 500 the
            # caller may retry (RFC 3261 §21.5.1 + Retry-After), as the registrar does.
            log.error("location lookup failed: {error}", error=str(failure.value))
            if env.tx.final_response is None and env.request is not None:
                self._reply(env.tx, env.request, 500, "Location Store Unavailable",
                            (("Retry-After", str(LOCATION_RETRY_AFTER)),))
            return
        log.failure("target determination failed", failure)
        if env.tx.final_response is None and env.request is not None:
            self._reply(env.tx, env.request, 500)

    def _send_branch(self, env: _Forwarder, branch: Branch) -> None:
        """§16.6 steps 5-10 for one target: find the next hop, build, send."""
        target = branch.target
        request = branch.context.request
        assert request is not None  # a context that still starts branches keeps it
        first_route = target.routes[0] if target.routes else None
        if first_route is None and request.routes:
            first_route = request.headers.get_all("Route")[0]
        d: defer.Deferred[list[Address]] | None = None
        dest = target.dest
        if dest is None:
            hop = parse_name_addr(first_route).uri if first_route else target.uri
            if not isinstance(hop, SipURI):
                branch.context.branch_failed(branch, 416)
                return
            # An IP-literal hop is what the resolver would answer at once anyway.
            dest = uri_address(hop)
            if dest is None:
                d = self.resolver.resolve(hop)

        def send(addresses: list[Address]) -> None:
            if not addresses:
                branch.context.branch_failed(branch, 404)
                return
            if branch.cancel_wanted and branch.context.cancelled:
                branch.context.branch_failed(branch, 487)
                return
            dest = addresses[0]
            record_route = None
            if request.method in DIALOG_CREATING and request.to.tag is None:
                record_route = self.me.record_route(env.source.transport, request.call_id)
            via = self.me.via(dest.transport, make_branch(env.loop_part))
            out = build_branch_request(request, target, via, record_route)
            branch.request = out
            branch.dest = dest
            tx = self.stack.send_request(out, dest, branch)
            branch.sent(tx)

        def failed(failure: Any) -> None:
            log.failure("sending a branch failed", failure)
            branch.context.branch_failed(branch, 500)

        if d is None:
            # The next hop is known (a binding's received address, a static route).
            try:
                send([dest])  # type: ignore[list-item]
            except Exception:
                failed(Failure())
            return
        d.addCallback(send)
        d.addErrback(failed)

    # -- CANCEL, ACK, stray responses -------------------------------------------------------
    def cancel_received(
        self, cancel: Request, invite_tx: ServerTxHandle, source: Address
    ) -> None:
        # §16.10: the stack answered the CANCEL 200; we end the INVITE with 487 and
        # CANCEL every pending branch (each only once it has a provisional, §9.1).
        if invite_tx.final_response is None and invite_tx.request is not None:
            invite_tx.send_response(make_response(invite_tx.request, 487, to_tag=new_tag()))
        context = self.contexts.get(invite_tx)
        if context is not None:
            context.cancel()

    def server_tx_ended(self, tx: ServerTxHandle, reason: str) -> None:
        self.contexts.pop(tx, None)

    def ack_received(self, ack: Request, source: Address) -> None:
        """An ACK for a 2xx: forward it statelessly along the route set (§16.11)."""
        try:
            self._forward_ack(ack, source)
        except ParseError as err:
            log.info("dropping bad ACK from {source}: {err}", source=str(source), err=err)

    def _forward_ack(self, ack: Request, source: Address | None = None) -> None:
        me = self.me
        check_syntax(ack)
        if ack.max_forwards == 0 or check_loop(ack, me.is_own_via) is not None:
            return
        top = ack.top_via
        part = loop_hash(ack, top)
        # §16.11: a stateless forward must give a retransmission the same branch.
        unique = hashlib.sha256(f"{top.branch}|{top.host}|{top.port}".encode()).hexdigest()[:8]
        popped = preprocess_routes(ack, me)
        decision = classify(ack, me)
        if decision.kind in ("local", "lookup"):
            log.debug("ACK for {uri} has nowhere to go", uri=str(ack.uri))
            return
        if (self.authenticators is not None
                and not me.authorised_dialog(popped, ack.call_id)
                and (source is None or source.host not in self.trusted)):
            # No open relay for ACKs either: an ACK cannot be challenged (RFC 3261
            # §22.1), so with --users we only pass on those that follow our own
            # Record-Route, i.e. belong to a dialog we authorised.
            log.debug("not relaying ACK for {uri}: not via our route", uri=str(ack.uri))
            return
        first_route = ack.headers.get_all("Route")[0] if ack.routes else None
        hop = parse_name_addr(first_route).uri if first_route else ack.uri
        if not isinstance(hop, SipURI):
            return

        def send(addresses: list[Address]) -> None:
            if not addresses:
                return
            dest = addresses[0]
            out = build_branch_request(
                ack, Target(ack.uri), me.via(dest.transport, make_branch(part, unique)), None
            )
            self.stack.send_stateless(out, dest)

        direct = uri_address(hop)
        if direct is not None:
            send([direct])  # an IP-literal hop (the usual Contact): no Deferred
        else:
            self.resolver.resolve(hop).addCallback(send)

    def stray_response(self, response: Response, source: Address) -> None:
        """A response no client transaction wants, e.g. a 2xx retransmission after the
        transaction ended: strip our Via and forward it statelessly (§16.7 step 10)."""
        try:
            vias = response.vias
            if len(vias) < 2 or not self.me.is_own_via(vias[0]) or response.status == 100:
                return
        except ParseError:
            return
        out = response.copy()
        out.headers.pop_first("Via")
        self.stack.send_response_stateless(out)
