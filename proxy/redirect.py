# -*- test-case-name: tests.proxy.test_redirect -*-
"""The redirect server (RFC 3261 §8.3, §21.3): it answers where a user is, never forwards.

For a Request-URI ``sip:user@domain``:

- bindings in the location service -> ``302 Moved Temporarily`` with one Contact per
  binding, carrying its ``q`` and remaining ``expires`` (§8.3, §20.10);
- a domain in the static map (``--route DOMAIN=HOST:PORT``) -> 302 with
  ``Contact: <sip:user@HOST:PORT>``: "ask the server of that domain";
- one of our domains but nobody registered -> 480 if the user is in the users file,
  404 otherwise; any other domain -> ``604 Does Not Exist Anywhere``.

OPTIONS to the server itself is answered (§11); ACKs are absorbed (the server
transaction eats the ACK for a non-2xx; a stray ACK is dropped).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.logger import Logger

from proxy.routing import LocalIdentity
from registrar.location import normalise_aor, open_location
from sipcore.errors import ParseError
from sipcore.ids import new_tag
from sipcore.message import Request, Response, make_response
from sipcore.transaction import ServerTransaction
from sipcore.twisted.role import BaseRole
from sipcore.twisted.transport import Address
from sipcore.uri import SipURI

__all__ = ["RedirectRole", "contact_value", "route_contact"]

log = Logger(namespace="proxy.redirect")


def contact_value(contact: str, q: float, expires: int) -> str:
    """A 3xx Contact value with its preference and lifetime (§8.3, §20.10)."""
    inner = contact if contact.startswith("<") else f"<{contact}>"
    return f"{inner};q={q:.3g};expires={expires}"


def route_contact(uri: SipURI, host: str, port: int) -> str:
    """``sip:user@HOST:PORT``: the same user, at the server of its domain."""
    host_text = f"[{host}]" if ":" in host else host
    user = f"{uri.user}@" if uri.user is not None else ""
    return f"<{uri.scheme}:{user}{host_text}:{port}>"


class RedirectRole(BaseRole):
    """Answers every request with where to send it (3xx) or why not (4xx/6xx)."""

    def __init__(self, config: Any, clock: Any) -> None:
        self.config = config
        self.clock = clock
        self.domains = frozenset(config.get("domains") or [])
        self.routes: dict[str, tuple[str, int]] = dict(config.get("routes") or {})
        self.users: Any = None
        if config.get("users"):
            from registrar.users import load_users

            self.users = load_users(config["users"])
        self.location: Any = None

    def start(self) -> None:
        self.location = open_location(self.config.get("location") or "memory:", self.clock)

    def stop(self) -> Any:
        return self.location.close() if self.location is not None else None

    @property
    def me(self) -> LocalIdentity:
        endpoint = self.stack.endpoint
        return LocalIdentity(endpoint.interface, endpoint.port, self.domains)

    def request_received(self, request: Request, tx: ServerTransaction, source: Address) -> None:
        try:
            self._request(request, tx)
        except ParseError as err:
            tx.send_response(make_response(request, err.status, err.reason, to_tag=new_tag()))

    def _answer(
        self, tx: ServerTransaction, request: Request, status: int, contacts: Sequence[str] = ()
    ) -> None:
        response: Response = make_response(request, status, to_tag=new_tag())
        for value in contacts:
            response.headers.add("Contact", value)
        tx.send_response(response)

    def _request(self, request: Request, tx: ServerTransaction) -> None:
        uri = request.uri
        if request.max_forwards == 0 and request.method != "OPTIONS":
            self._answer(tx, request, 483)
            return
        if not isinstance(uri, SipURI) or uri.scheme not in ("sip", "sips"):
            self._answer(tx, request, 416)
            return
        if uri.user is None and (self.me.is_me(uri) or uri.host.lower() in self.domains):
            # Addressed to the server itself (§11): OPTIONS gets our capabilities.
            if request.method == "OPTIONS":
                tx.send_response(self.capabilities(request))
            else:
                self._answer(tx, request, 405 if request.method == "REGISTER" else 404)
            return
        if uri.user is None:
            self._answer(tx, request, 604)
            return
        try:
            aor = normalise_aor(f"{uri.scheme}:{uri.user}@{uri.host}")
        except ValueError:
            self._answer(tx, request, 400)
            return
        d = self.location.get(aor)
        d.addCallback(self._found, request, tx, uri, aor)
        d.addErrback(self._failed, request, tx)

    def _found(
        self, bindings: list[Any], request: Request, tx: ServerTransaction, uri: SipURI, aor: str
    ) -> None:
        now = self.clock.seconds()
        if bindings:
            contacts = [contact_value(b.contact, b.q, b.remaining(now)) for b in bindings]
            self._answer(tx, request, 302, contacts)
            return
        domain = uri.host.lower()
        route = self.routes.get(domain)
        if route is not None:
            self._answer(tx, request, 302, [route_contact(uri, *route)])
        elif domain in self.domains:
            known = self.users is not None and f"{uri.user}@{domain}" in self.users
            self._answer(tx, request, 480 if known else 404)
        else:
            self._answer(tx, request, 604)  # §21.6.2: we know this user exists nowhere

    def _failed(self, failure: Any, request: Request, tx: ServerTransaction) -> None:
        log.failure("location lookup failed", failure)
        self._answer(tx, request, 500)
