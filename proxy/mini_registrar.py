# -*- test-case-name: tests.proxy.test_core -*-
"""A stand-in REGISTER handler (RFC 3261 §10.3) until `registrar.registrar.Registrar` lands.

It does the minimum the proxy's tests need: optional digest auth (401), add/refresh/
remove bindings in the shared location service, answer 200 with the current bindings.
The real registrar (issue 3) replaces it in `ProxyRole._registrar_handle`; delete this
module then.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from registrar.location import Binding, Removal, normalise_aor
from sipcore.digest import Credentials, DigestAuthenticator
from sipcore.ids import new_tag
from sipcore.message import Request, make_response
from sipcore.twisted.transport import Address

log = Logger(namespace="proxy.mini_registrar")

DEFAULT_EXPIRES = 3600
MAX_EXPIRES = 86400


class MiniRegistrar:
    def __init__(
        self, location: Any, clock: Any, authenticators: dict[str, DigestAuthenticator] | None
    ) -> None:
        self.location = location
        self.clock = clock
        self.authenticators = authenticators

    def aor_of(self, uri: Any) -> str:
        return normalise_aor(str(uri))

    def handle(self, request: Request, tx: Any, source: Address) -> None:
        tag = new_tag()
        to_uri = request.to.uri
        aor = self.aor_of(to_uri)
        if self.authenticators is not None:
            realm = getattr(to_uri, "host", "").lower()
            auth = self.authenticators.get(realm)
            ok = False
            stale = False
            if auth is not None:
                for value in request.headers.get_all("Authorization"):
                    creds = Credentials.parse(value)
                    if creds.realm != realm:
                        continue
                    result = auth.verify(request.method, creds)
                    ok = result.ok and result.username == getattr(to_uri, "user", None)
                    stale = result.outcome.value in ("stale", "replay")
            if not ok:
                response = make_response(request, 401 if auth else 403, to_tag=tag)
                if auth is not None:
                    for value in auth.challenge_header_values(stale):
                        response.headers.add("WWW-Authenticate", value)
                tx.send_response(response)
                return
        now = self.clock.seconds()
        default = request.expires if request.expires is not None else DEFAULT_EXPIRES
        changes: list[Any] = []
        contacts = request.contacts
        call_id, cseq = request.call_id, request.cseq.number
        if contacts and contacts[0].is_wildcard:
            changes.append(Removal("*", call_id, cseq))
        path = tuple(request.headers.get_all("Path"))
        for contact in contacts:
            if contact.is_wildcard:
                continue
            expires = min(contact.expires if contact.expires is not None else default,
                          MAX_EXPIRES)
            uri = str(contact.uri)
            if expires == 0:
                changes.append(Removal(uri, call_id, cseq))
            else:
                changes.append(Binding(
                    aor, uri, now + expires, q=contact.q if contact.q is not None else 1.0,
                    call_id=call_id, cseq=cseq, path=path,
                    # NAT: remember where the REGISTER came from only when the
                    # Contact names another host (a private address behind NAT).
                    received=(
                        None if getattr(contact.uri, "host", "") == source.host
                        else f"{source.transport} {source.host}:{source.port}"
                    ),
                ))
        d = self.location.update(aor, changes) if changes else self.location.get(aor)

        def answer(bindings: list[Binding]) -> None:
            response = make_response(request, 200, to_tag=tag)
            for b in bindings:
                response.headers.add(
                    "Contact", f"<{b.contact}>;expires={b.remaining(self.clock.seconds())}"
                )
            tx.send_response(response)

        def failed(failure: Any) -> None:
            log.warn("REGISTER for {aor} failed: {err}", aor=aor, err=failure.getErrorMessage())
            tx.send_response(make_response(request, 500, to_tag=tag))

        d.addCallbacks(answer, failed)

