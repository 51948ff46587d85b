# -*- test-case-name: tests.registrar.test_registrar -*-
"""REGISTER processing: RFC 3261 §10.3 with Path (RFC 3327) and outbound keys (RFC 5626).

`Registrar.handle(request, tx, source)` runs the §10.3 steps in order and always ends
with exactly one final response through `tx.send_response`:

1. the Request-URI names one of our domains (else 404; 416 for a non-SIP scheme);
2. every Require option-tag is one we support (else 420 + Unsupported);
3. with a users file, digest authentication (401 + one WWW-Authenticate per
   algorithm, `stale=true` for STALE/REPLAY; 403 when the authenticated user is not
   the To AOR's user);
4. the To AOR is in our domain (else 404) and, with users, a known user (else 404);
5. Contact/Expires checks (400 with a reason, 423 + Min-Expires);
6. one atomic `location.update()` applying the changes with the Call-ID/CSeq rule
   (`StaleCSeq` -> 500, the store failing -> 500 + Retry-After);
7. 200 OK listing every current binding with its remaining `expires`, plus Date.

Bindings remember where the REGISTER came from (`received`, `UDP HOST:PORT`) when
the proxy should route there rather than to the Contact: when the source is not
the Contact's host:port (a NAT rewrote it, RFC 3581 §1) or the UA registered an
RFC 5626 flow (instance + reg-id), which must be reached over that same flow. A
TCP/TLS source port is ephemeral, so for those only a different host counts.
"""

from __future__ import annotations

import email.utils
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from registrar.bruteforce import AuthGuard
from registrar.location import (
    WILDCARD,
    Binding,
    Change,
    LocationError,
    LocationService,
    Removal,
    StaleCSeq,
    normalise_aor,
)
from registrar.users import Users
from sipcore.digest import AuthOutcome, AuthResult, Credentials, DigestAuthenticator
from sipcore.errors import ParseError
from sipcore.headers import Contact
from sipcore.ids import new_tag
from sipcore.message import Request, Response, make_response
from sipcore.transaction import ResponseSink
from sipcore.twisted.transport import Address
from sipcore.uri import NameAddr, SipURI, parse_uri

__all__ = [
    "SUPPORTED_OPTIONS",
    "Registrar",
    "RegisterError",
    "aor_of",
    "format_received",
]

log = Logger(namespace="registrar")

#: Option-tags a REGISTER may Require of us (RFC 3261 §10.3 step 2): Path storage
#: (RFC 3327) and the registrar half of outbound (instance/reg-id keys, RFC 5626 §6).
SUPPORTED_OPTIONS: Final = frozenset({"path", "outbound"})
#: Seconds a client should wait before retrying after the store failed (RFC 3261 §20.33).
RETRY_AFTER = 5
_MAX_USER_AGENT: Final = 256


class RegisterError(Exception):
    """Ends processing with a final response: status, reason and extra headers."""

    def __init__(
        self, status: int, reason: str | None = None, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason
        self.headers = list(headers)
        #: Seconds to hold the response back (registrar.bruteforce per-account delay).
        self.delay = 0.0


def aor_of(uri: Any) -> str:
    """The address-of-record key for a URI, name-addr or URI text.

    `sip:user@host` with the host lower-cased and scheme, port, password and
    parameters dropped (RFC 3261 §10.3 step 5); sips AORs fold onto sip so a UA
    registering over TLS is found by a plain-sip lookup. The user part is unescaped
    by the location service's own `normalise_aor`, so both agree on every key.
    Raises ValueError for URIs that cannot be an AOR (tel:, no host).
    """
    if isinstance(uri, NameAddr):
        uri = uri.uri
    if isinstance(uri, str):
        try:
            uri = parse_uri(uri.strip().removeprefix("<").removesuffix(">"))
        except ParseError as e:
            raise ValueError(f"not a SIP URI: {e.reason}") from None
    if not isinstance(uri, SipURI) or not uri.host:
        raise ValueError(f"not a SIP address-of-record: {uri}")
    host = uri.host.lower()
    return normalise_aor(f"sip:{uri.user}@{host}" if uri.user else f"sip:{host}")


def format_received(source: Address) -> str:
    """`UDP HOST:PORT` (IPv6 in brackets; `str(Address)`): where a REGISTER came from.

    `proxy.routing.parse_received` reads this spelling back (the proxy routes to it).
    """
    return str(source)


@dataclass(slots=True)
class _Plan:
    """What one REGISTER asks of the location service."""

    aor: str
    changes: list[Change]
    query_only: bool
    #: The request's Path values when already read (the 200 may echo them).
    path: tuple[str, ...] | None = None

    # Explicit __init__: mypyc compiles it natively; the dataclass-generated one runs
    # interpreted (~4x slower per object).
    def __init__(
        self,
        aor: str,
        changes: list[Change],
        query_only: bool,
        path: tuple[str, ...] | None = None,
    ) -> None:
        self.aor = aor
        self.changes = changes
        self.query_only = query_only
        self.path = path


class _Reply:
    """Sends the one final response of a REGISTER answered through a Deferred chain
    (an asynchronous store, an error, a delayed 401)."""

    __slots__ = ("registrar", "request", "tx", "to_tag", "sent")

    def __init__(
        self, registrar: Registrar, request: Request, tx: ResponseSink, to_tag: str
    ) -> None:
        self.registrar = registrar
        self.request = request
        self.tx = tx
        self.to_tag = to_tag
        self.sent = False

    def send(self, response: Response) -> None:
        if self.sent:
            return  # exactly one final response, whatever went wrong after it
        self.sent = True
        self.tx.send_response(response)

    def ok(self, bindings: list[Binding]) -> None:
        self.send(self.registrar._ok(self.request, bindings, self.to_tag))

    def answer_error(self, failure: Failure) -> defer.Deferred | None:
        registrar = self.registrar
        delay = getattr(failure.value, "delay", 0.0)
        if delay > 0:
            # registrar.bruteforce: a repeated 401 for one account is held back.
            response = registrar._error_response(self.request, failure, self.to_tag)
            return task.deferLater(registrar.clock, delay, self.send, response)
        self.send(registrar._error_response(self.request, failure, self.to_tag))
        return None

    def internal_error(self, failure: Failure) -> None:
        self.send(self.registrar._internal_error(self.request, failure, self.to_tag))


class Registrar:
    """The RFC 3261 §10.3 registrar over a `LocationService`."""

    def __init__(
        self,
        domains: Iterable[str],
        location: LocationService,
        clock: Any,
        users: Users | None = None,
        min_expires: int = 60,
        max_expires: int = 7200,
        default_expires: int = 3600,
        *,
        max_contacts: int = 20,
        auth_algorithms: Iterable[str] = ("SHA-256", "MD5"),
        nonce_ttl: float = 300,
        auth_guard: AuthGuard | None = None,
    ) -> None:
        if not 0 < min_expires <= default_expires <= max_expires:
            raise ValueError("need 0 < min_expires <= default_expires <= max_expires")
        self.domains = {d.lower() for d in domains}
        self.location = location
        self.clock = clock
        self.users = users
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.default_expires = default_expires
        self.max_contacts = max_contacts
        # RFC 8760 §2.4: challenges in order of preference, SHA-256 first by default.
        self.auth_algorithms = tuple(auth_algorithms)
        self.nonce_ttl = nonce_ttl
        # Brute-force brakes (per-IP lockout, per-account delay); None: none.
        self.auth_guard = auth_guard
        # One authenticator per realm (= domain, as the users file defines it), all
        # under one secret; created on first use so unused domains cost nothing.
        self._secret = secrets.token_bytes(32)
        self._authenticators: dict[str, DigestAuthenticator] = {}
        # Date header text for one whole second of `clock` (many 200s share it).
        self._date_second: int | None = None
        self._date_text = ""
        #: Called with the AOR of every REGISTER whose changes the store applied (the
        #: proxy's known AORs: 480 rather than 404 once the bindings are gone). The AOR
        #: is the store's key, computed once here rather than again by the caller.
        self.on_update: Callable[[str], None] | None = None

    @property
    def location(self) -> LocationService:
        return self._location

    @location.setter
    def location(self, store: LocationService) -> None:
        self._location = store
        # Looked up per store rather than per REGISTER: the synchronous forms (memory:)
        # or None for a store that only answers through Deferreds.
        self._get_now = getattr(store, "get_now", None)
        self._update_now = getattr(store, "update_now", None)

    # -- entry point ------------------------------------------------------------------

    def handle(self, request: Request, tx: ResponseSink, source: Address) -> defer.Deferred:
        """Process one REGISTER; fires (with None) once the final response is sent."""
        d = self.answer(request, tx, source)
        return defer.succeed(None) if d is None else d

    def answer(
        self, request: Request, tx: ResponseSink, source: Address
    ) -> defer.Deferred | None:
        """`handle` for callers that need no Deferred on the usual path: None when the
        store answered at once and the 200 is sent; otherwise a Deferred that fires once
        the final response is sent (fired already for an error found at once)."""
        to_tag = new_tag()
        sent = False
        reply: _Reply | None = None
        try:
            plan = self._check(request, source)
            bindings = self._apply_now(plan)
            if bindings is not None:
                if not plan.query_only and self.on_update is not None:
                    self.on_update(plan.aor)
                # A store that answers synchronously (memory:): no Deferred chain and
                # no per-request callback objects.
                response = self._ok(request, bindings, to_tag, plan.path)
                sent = True
                tx.send_response(response)
                return None
            reply = _Reply(self, request, tx, to_tag)
            d = self._apply(plan)
            if not plan.query_only:
                d.addCallback(self._updated, plan.aor)
            d.addCallback(reply.ok)
        except Exception:
            d = defer.fail()
            if reply is None:
                reply = _Reply(self, request, tx, to_tag)
                # A send that raised still counts: exactly one final response.
                reply.sent = sent
        d.addErrback(reply.answer_error)
        # A failure while building the error response itself must not escape either.
        d.addErrback(reply.internal_error)
        return d

    # -- the checks, in RFC 3261 §10.3 order ---------------------------------------------

    def _check(self, request: Request, source: Address) -> _Plan:
        realm = self._check_request_uri(request)
        self._check_require(request)
        if self.users is not None:
            self._authenticate(request, realm, source)
        aor = self._check_to(request)
        return self._plan(request, aor, source)

    def _check_request_uri(self, request: Request) -> str:
        """Step 1: the Request-URI names the domain whose bindings are changed."""
        uri = request.uri
        if not isinstance(uri, SipURI):
            raise RegisterError(416)
        host = uri.host.lower()
        if host not in self.domains:
            raise RegisterError(404, "Domain Not Served Here")
        return host

    def _check_require(self, request: Request) -> None:
        """Step 2: §8.2.2.3, 420 listing the option-tags we do not understand."""
        values = request.headers.get_all("Require")
        if not values:
            return
        required = [t.strip() for t in values]
        unknown = [t for t in required if t.lower() not in SUPPORTED_OPTIONS]
        if unknown:
            raise RegisterError(420, None, [("Unsupported", ", ".join(unknown))])

    def _check_to(self, request: Request) -> str:
        """Step 4 (and 3's identity rule): the AOR must be ours and, with users, known."""
        try:
            aor = aor_of(request.to)
        except ValueError:
            raise RegisterError(404, "Not A SIP AOR") from None
        to_uri = request.to.uri
        assert isinstance(to_uri, SipURI)
        if to_uri.host.lower() not in self.domains or not to_uri.user:
            raise RegisterError(404, "Domain Not Served Here")
        if self.users is not None and _users_key(aor) not in self.users:
            raise RegisterError(404)
        return aor

    # -- step 3: authentication (RFC 3261 §22.4, RFC 8760) -----------------------------

    def _authenticator(self, realm: str) -> DigestAuthenticator:
        auth = self._authenticators.get(realm)
        if auth is None:
            assert self.users is not None
            auth = self._authenticators[realm] = DigestAuthenticator(
                realm, self.users, self.clock, self.nonce_ttl, self._secret,
                algorithms=self.auth_algorithms,
            )
        return auth

    def _authenticate(self, request: Request, realm: str, source: Address) -> None:
        guard = self.auth_guard
        if guard is not None and guard.locked(source.host):
            # registrar.bruteforce: a source locked out after repeated failures gets
            # 403 (RFC 3261 §21.4.4: understood, refused, do not retry) unread.
            raise RegisterError(403, "Too Many Failed Authentications")
        auth = self._authenticator(realm)
        credentials = self._credentials_for(request, realm)
        if credentials is None:
            raise self._challenge(auth, stale=False)
        if not _digest_uri_acceptable(credentials.uri, request):
            log.info("REGISTER auth failed: digest uri {uri!r}", uri=credentials.uri)
            raise self._challenge(auth, stale=False)
        result = auth.verify(request.method, credentials, request.body)
        if result.outcome in (AuthOutcome.STALE, AuthOutcome.REPLAY):
            # sipcore.digest: the password was right, so let the UA retry silently.
            raise self._challenge(auth, stale=True)
        account = self._account(credentials.username, realm)
        if not result.ok:
            log.info("REGISTER auth failed: {reason}", reason=result.reason)
            challenge = self._challenge(auth, stale=False)
            if guard is not None:
                challenge.delay = guard.failed(source.host, account)
            raise challenge
        if guard is not None:
            guard.succeeded(account)
        self._check_identity(request, result, realm)

    def _account(self, username: str, realm: str) -> str | None:
        """`user@realm` when that user exists: only real accounts are counted, so
        guesses at random names cannot churn the brute-force tables."""
        key = f"{username}@{realm}"
        return key if self.users is not None and key in self.users else None

    def _credentials_for(self, request: Request, realm: str) -> Credentials | None:
        """The Authorization value for our realm (§22.4: one per realm may be present)."""
        for value in request.headers.get_all("Authorization"):
            try:
                credentials = Credentials.parse(value)
            except ParseError as e:
                raise RegisterError(400, e.reason) from None
            if credentials.realm.lower() == realm:
                return credentials
        return None

    def _check_identity(self, request: Request, result: AuthResult, realm: str) -> None:
        """§10.3 step 3: the authenticated user may only register their own AOR."""
        to_uri = request.to.uri
        if not isinstance(to_uri, SipURI):
            raise RegisterError(404, "Not A SIP AOR")
        own = aor_of(f"sip:{result.username}@{realm}") if result.username else ""
        try:
            target = aor_of(to_uri)
        except ValueError:
            raise RegisterError(404, "Not A SIP AOR") from None
        if own != target:
            log.info("{user} may not register {aor}", user=own, aor=target)
            raise RegisterError(403, "Not Your AOR")

    def _challenge(self, auth: DigestAuthenticator, stale: bool) -> RegisterError:
        values = auth.challenge_header_values(stale=stale)
        return RegisterError(401, None, [("WWW-Authenticate", v) for v in values])

    # -- step 5: contacts and expiry ------------------------------------------------

    def _plan(self, request: Request, aor: str, source: Address) -> _Plan:
        contacts, header_expires = _parse_contacts(request)
        if not contacts:
            return _Plan(aor, [], query_only=True)
        call_id, cseq = request.call_id, request.cseq.number
        if contacts[0].is_wildcard:
            # §10.3 step 6: "*" is only valid alone (the parser enforced that) and with
            # Expires: 0; it removes every binding, subject to the Call-ID/CSeq rule.
            if header_expires != 0:
                raise RegisterError(400, "Wildcard Contact Requires Expires 0")
            return _Plan(aor, [Removal(WILDCARD, call_id, cseq)], query_only=False)
        if len(contacts) > self.max_contacts:
            raise RegisterError(400, "Too Many Contacts")
        path = tuple(request.headers.get_all("Path"))
        user_agent = (request.headers.get("User-Agent") or "")[:_MAX_USER_AGENT] or None
        now = self.clock.seconds()
        changes: list[Change] = []
        for contact in contacts:
            expires = self._expiry(contact, header_expires)
            changes.append(
                _change(aor, contact, expires, now, call_id, cseq, path, source, user_agent)
            )
        return _Plan(aor, changes, query_only=False, path=path)

    def _expiry(self, contact: Contact, header_expires: int | None) -> int:
        """§10.3 step 6: contact param, else Expires header, else our default."""
        try:
            expires = contact.expires
        except ParseError as e:
            raise RegisterError(400, e.reason) from None
        if expires is None:
            expires = header_expires if header_expires is not None else self.default_expires
        if expires == 0:
            return 0
        if expires < self.min_expires:
            # §10.3 step 6 / §20.23: too brief, tell the UA our minimum.
            raise RegisterError(423, None, [("Min-Expires", str(self.min_expires))])
        return min(expires, self.max_expires)

    # -- step 6: the store ---------------------------------------------------------

    def _apply_now(self, plan: _Plan) -> list[Binding] | None:
        """The store's answer at once if it offers synchronous forms, else None."""
        if plan.query_only:
            get_now = self._get_now
            return None if get_now is None else list(get_now(plan.aor))
        update_now = self._update_now
        return None if update_now is None else list(update_now(plan.aor, plan.changes))

    def _apply(self, plan: _Plan) -> defer.Deferred:
        if plan.query_only:
            return defer.maybeDeferred(self.location.get, plan.aor)  # type: ignore[call-overload]
        return defer.maybeDeferred(  # type: ignore[call-overload]
            self.location.update, plan.aor, plan.changes
        )

    def _updated(self, bindings: list[Binding], aor: str) -> list[Binding]:
        if self.on_update is not None:
            self.on_update(aor)
        return bindings

    # -- responses ---------------------------------------------------------------------

    def _ok(
        self, request: Request, bindings: list[Binding], to_tag: str,
        path: tuple[str, ...] | None = None,
    ) -> Response:
        """Step 8: 200 with every current binding and its remaining time, plus Date.

        `path`: the request's Path values if the caller has them already."""
        response = make_response(request, 200, to_tag=to_tag)
        headers = response.headers
        now = self.clock.seconds()
        for binding in bindings:
            headers.add("Contact", _contact_value(binding, now))
        if _lists(request, "Supported", "path"):
            # RFC 3327 §5.3: echo the Path we stored, so the UA learns its route set.
            for value in request.headers.get_all("Path") if path is None else path:
                headers.add("Path", value)
        headers.add("Supported", "path, outbound")
        headers.add("Date", self._date(now))
        return response

    def _date(self, now: float) -> str:
        """`formatdate(now, usegmt=True)`, formatted once per second of the clock."""
        second = int(now)
        if not 0 <= now - second <= 0.999999:
            # Negative times, or so close to the next second that formatdate's
            # rounding to microseconds would already show that second.
            return email.utils.formatdate(now, usegmt=True)
        if second != self._date_second:
            self._date_text = email.utils.formatdate(second, usegmt=True)
            self._date_second = second
        return self._date_text

    def _error_response(self, request: Request, failure: Failure, to_tag: str) -> Response:
        exc = failure.value
        if isinstance(exc, RegisterError):
            response = make_response(request, exc.status, exc.reason, to_tag=to_tag)
            for name, value in exc.headers:
                response.headers.add(name, value)
            return response
        if isinstance(exc, ParseError):
            # A header the parser accepted lazily turned out malformed (Contact, Expires).
            return make_response(request, exc.status, exc.reason, to_tag=to_tag)
        if isinstance(exc, StaleCSeq):
            # §10.3 step 6: same Call-ID, CSeq not higher: the update is aborted and the
            # request fails; 500 is what deployed registrars and UAs agree on.
            log.info("REGISTER refused: {error}", error=str(exc))
            return make_response(request, 500, "Stale CSeq", to_tag=to_tag)
        if isinstance(exc, LocationError):
            log.error("location store failed: {error}", error=str(exc))
            response = make_response(request, 500, "Location Store Unavailable", to_tag=to_tag)
            response.headers.add("Retry-After", str(RETRY_AFTER))
            return response
        return self._internal_error(request, failure, to_tag)

    def _internal_error(self, request: Request, failure: Failure, to_tag: str) -> Response:
        log.failure("REGISTER processing failed", failure)
        response = make_response(request, 500, to_tag=to_tag)
        response.headers.add("Retry-After", str(RETRY_AFTER))
        return response


def build_registrar(config: Any, clock: Any) -> Registrar:
    """A Registrar from twistd options (`twistd sipproxy` and `twistd sipregistrar`).

    Reads `domains`, `location`, `users` (a path, or already-loaded `users-db`) and,
    when the options define them, `min-expires`, `max-expires`, `default-expires` and
    `auth-algorithms` (a comma-separated preference list).
    """
    from registrar.location import open_location
    from registrar.users import load_users

    users = config.get("users-db")
    if users is None and config.get("users"):
        users = load_users(config["users"])
    kwargs: dict[str, Any] = {}
    for option, name in (
        ("min-expires", "min_expires"),
        ("max-expires", "max_expires"),
        ("default-expires", "default_expires"),
    ):
        if config.get(option) is not None:
            kwargs[name] = int(config[option])
    if config.get("auth-algorithms"):
        kwargs["auth_algorithms"] = [
            a.strip() for a in str(config["auth-algorithms"]).split(",") if a.strip()
        ]
    if users is not None:
        from registrar.bruteforce import guard_from_config

        kwargs["auth_guard"] = guard_from_config(config, clock)
    return Registrar(
        config.get("domains") or ["a.lab"],
        open_location(config.get("location") or "memory:", clock),
        clock,
        users,
        **kwargs,
    )


# -- helpers -----------------------------------------------------------------------


def _users_key(aor: str) -> str:
    """`sip:alice@a.lab` -> `alice@a.lab`, the users file's spelling."""
    return aor.split(":", 1)[1]


def _digest_uri_acceptable(uri_text: str, request: Request) -> bool:
    """RFC 7616 §3.4.6 asks for the digest uri to be the Request-URI. Deployed UAs (sipp
    among them) put the registrar's address there instead, so any user-less SIP URI is
    taken: a REGISTER's target never has a user part, and the method, nonce and nonce
    count already bind the credentials to one REGISTER."""
    if uri_text == str(request.uri):
        return True
    try:
        uri = parse_uri(uri_text)
    except ParseError:
        return False
    return isinstance(uri, SipURI) and uri.user is None


def _lists(request: Request, header: str, tag: str) -> bool:
    values = request.headers.get_all(header)
    return bool(values) and any(t.strip().lower() == tag for t in values)


def _parse_contacts(request: Request) -> tuple[list[Contact], int | None]:
    """Contacts and the Expires header, as 400s with the parser's reason if malformed."""
    try:
        return request.contacts, request.expires
    except ParseError as e:
        raise RegisterError(400, e.reason) from None


def _outbound_keys(contact: Contact) -> tuple[str | None, int | None]:
    """RFC 5626 §6: +sip.instance and reg-id; reg-id alone is ignored."""
    params = contact.params
    instance = params.get("+sip.instance")
    if not instance:
        return None, None
    reg_id_text = params.get("reg-id")
    if reg_id_text is None:
        return instance, None
    if not reg_id_text.isdigit() or not 0 < int(reg_id_text) < 2**31:
        raise RegisterError(400, "Bad reg-id")
    return instance, int(reg_id_text)


def _change(
    aor: str, contact: Contact, expires: int, now: float, call_id: str, cseq: int,
    path: tuple[str, ...], source: Address, user_agent: str | None,
) -> Change:
    sip_uri = contact.uri
    if not isinstance(sip_uri, SipURI):
        # We only register what a SIP proxy can route to (§10.2.1 allows any scheme,
        # but nothing downstream of us can use a mailto: or tel: contact).
        raise RegisterError(400, "Unsupported Contact URI Scheme")
    uri = str(sip_uri)
    instance, reg_id = _outbound_keys(contact)
    received = _nat_received(sip_uri, source, outbound=reg_id is not None)
    if expires == 0:
        return Removal(uri, call_id, cseq, instance, reg_id)
    try:
        q = contact.q
    except ParseError as e:
        raise RegisterError(400, e.reason) from None
    return Binding(
        aor=aor, contact=uri, expires_at=now + expires, q=1.0 if q is None else q,
        call_id=call_id, cseq=cseq, path=path, instance_id=instance, reg_id=reg_id,
        received=received, user_agent=user_agent,
    )


def _nat_received(uri: SipURI, source: Address, outbound: bool) -> str | None:
    """The source address when the proxy must route there instead of the Contact."""
    if outbound:
        return format_received(source)  # RFC 5626 §6: reach the UA over its flow
    host = uri.host
    # The usual UA writes its address as it sends from it: equal as is, no case folding.
    if host != source.host and host.strip("[]").lower() != source.host.lower():
        return format_received(source)  # behind a NAT (or a confused UA)
    default_port = 5061 if uri.scheme == "sips" else 5060
    if source.transport == "UDP" and (uri.port or default_port) != source.port:
        return format_received(source)  # a port-translating NAT
    return None


def _contact_value(binding: Binding, now: float) -> str:
    """`<uri>;expires=N[;q=..][;+sip.instance=..;reg-id=..]` (§10.3 step 8, RFC 5626 §6)."""
    value = f"<{binding.contact}>;expires={binding.remaining(now)}"
    if binding.q != 1.0:
        value += f";q={binding.q:g}"
    if binding.instance_id is not None:
        value += f";+sip.instance={binding.instance_id}"
        if binding.reg_id is not None:
            value += f";reg-id={binding.reg_id}"
    return value
