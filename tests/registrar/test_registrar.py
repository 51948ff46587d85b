"""The registrar (RFC 3261 §10.3) driven with fake server transactions and a fake clock."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer, task

from proxy.routing import parse_received
from registrar.location import LocationError, open_location
from registrar.registrar import Registrar, aor_of, format_received
from registrar.tap import RegistrarRole
from registrar.users import Users
from sipcore.digest import Challenge, answer_challenge
from sipcore.message import Request, Response, parse
from sipcore.twisted.transport import Address

SOURCE = Address("UDP", "192.0.2.10", 5060)
START = 1_800_000_000.0


class FakeTx:
    """A server transaction that records what the TU sends."""

    def __init__(self) -> None:
        self.responses: list[Response] = []

    def send_response(self, response: Response) -> None:
        self.responses.append(response)

    @property
    def final(self) -> Response:
        finals = [r for r in self.responses if r.status >= 200]
        assert len(finals) == 1, self.responses
        return finals[0]


def register(
    *headers: str, to: str = "sip:alice@a.lab", uri: str = "sip:a.lab", call_id: str = "c1",
    cseq: int = 1, contact: str | None = "<sip:alice@192.0.2.10:5060>",
    expires: str | None = None,
) -> Request:
    lines = [
        f"REGISTER {uri} SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK" + f"{call_id}{cseq}",
        f"From: <{to}>;tag=f1",
        f"To: <{to}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        "Max-Forwards: 70",
    ]
    if contact is not None:
        lines.append(f"Contact: {contact}")
    if expires is not None:
        lines.append(f"Expires: {expires}")
    lines.extend(headers)
    message = parse(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


@pytest.fixture
def clock() -> task.Clock:
    c = task.Clock()
    c.advance(START)
    return c


@pytest.fixture
def registrar(clock: task.Clock) -> Registrar:
    return Registrar(["a.lab", "b.lab"], open_location("memory:", clock), clock)


@pytest.fixture
def auth_registrar(clock: task.Clock) -> Registrar:
    users = Users.from_passwords({"alice@a.lab": "secret", "bob@a.lab": "hunter2"})
    return Registrar(["a.lab"], open_location("memory:", clock), clock, users)


def send(registrar: Registrar, request: Request, source: Address = SOURCE) -> Response:
    tx = FakeTx()
    d = registrar.handle(request, tx, source)
    assert d.called  # the memory backend answers synchronously
    return tx.final


def contacts(response: Response) -> dict[str, int]:
    """Contact URI -> expires param, from a 200 OK."""
    out = {}
    for c in response.contacts:
        out[str(c.uri)] = c.expires
    return out


def bindings(registrar: Registrar, aor: str = "sip:alice@a.lab") -> list[Any]:
    d = registrar.location.get(aor)
    result: list[Any] = []
    d.addCallback(result.extend)
    return result


# -- add / refresh / remove / query ---------------------------------------------------


def test_add_binding_answers_200_with_contact_and_date(registrar):
    r = send(registrar, register(expires="300"))
    assert r.status == 200
    assert contacts(r) == {"sip:alice@192.0.2.10:5060": 300}
    assert r.headers.get("Date", "").endswith("GMT")
    assert r.to.tag  # §8.2.6.2: a UAS adds a To tag
    [b] = bindings(registrar)
    assert b.call_id == "c1" and b.cseq == 1 and b.received is None


def test_refresh_and_second_contact_lists_all_bindings(registrar, clock):
    send(registrar, register(expires="300"))
    clock.advance(100)
    r = send(registrar, register(cseq=2, contact="<sip:alice@192.0.2.10:5062>;expires=600"))
    assert contacts(r) == {"sip:alice@192.0.2.10:5060": 200, "sip:alice@192.0.2.10:5062": 600}
    r = send(registrar, register(cseq=3, expires="400"))
    assert contacts(r) == {"sip:alice@192.0.2.10:5060": 400, "sip:alice@192.0.2.10:5062": 600}


def test_remove_one_contact_with_expires_zero(registrar):
    send(registrar, register(expires="300"))
    send(registrar, register(cseq=2, contact="<sip:alice@192.0.2.10:5062>"))
    r = send(registrar, register(cseq=3, contact="<sip:alice@192.0.2.10:5060>;expires=0"))
    assert contacts(r) == {"sip:alice@192.0.2.10:5062": 3600}


def test_wildcard_removes_everything(registrar):
    send(registrar, register(expires="300"))
    send(registrar, register(cseq=2, call_id="other", contact="<sip:alice@192.0.2.10:5062>"))
    r = send(registrar, register(cseq=3, contact="*", expires="0"))
    assert r.status == 200 and r.contacts == []
    assert bindings(registrar) == []


@pytest.mark.parametrize("expires", [None, "300"])
def test_wildcard_needs_expires_zero(registrar, expires):
    r = send(registrar, register(contact="*", expires=expires))
    assert r.status == 400


def test_wildcard_mixed_with_contacts_is_400(registrar):
    r = send(registrar, register(contact="*, <sip:alice@192.0.2.10>", expires="0"))
    assert r.status == 400


def test_query_without_contact_lists_bindings_and_changes_nothing(registrar, clock):
    send(registrar, register(expires="300"))
    clock.advance(10)
    r = send(registrar, register(call_id="q", contact=None))
    assert r.status == 200
    assert contacts(r) == {"sip:alice@192.0.2.10:5060": 290}
    assert len(bindings(registrar)) == 1


def test_bindings_expire_with_the_clock(registrar, clock):
    send(registrar, register(expires="60"))
    clock.advance(61)
    assert contacts(send(registrar, register(call_id="q", contact=None))) == {}


# -- expiry rules ---------------------------------------------------------------------------


def test_default_expires_applies(registrar):
    r = send(registrar, register())
    assert contacts(r) == {"sip:alice@192.0.2.10:5060": 3600}


def test_contact_param_beats_expires_header(registrar):
    r = send(registrar, register(contact="<sip:alice@192.0.2.10>;expires=120", expires="900"))
    assert contacts(r) == {"sip:alice@192.0.2.10": 120}


@pytest.mark.parametrize(("contact", "expires"), [
    ("<sip:alice@192.0.2.10>", "30"),
    ("<sip:alice@192.0.2.10>;expires=1", "300"),
])
def test_too_brief_is_423_with_min_expires(registrar, contact, expires):
    r = send(registrar, register(contact=contact, expires=expires))
    assert r.status == 423
    assert r.headers.get("Min-Expires") == "60"
    assert bindings(registrar) == []


def test_long_expiry_is_capped(registrar):
    r = send(registrar, register(expires="999999"))
    assert contacts(r) == {"sip:alice@192.0.2.10:5060": 7200}


# -- malformed input --------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "reason_part"), [
    ({"expires": "abc"}, "Expires"),
    ({"expires": "4294967296"}, "Expires"),
    ({"contact": "<sip:alice@192.0.2.10>;expires=soon"}, "expires"),
    ({"contact": "<sip:alice@192.0.2.10>;q=7"}, "q"),
    ({"contact": "<sip:@@@>"}, ""),
    ({"contact": "<mailto:alice@a.lab>"}, "Scheme"),
    ({"contact": "<sip:alice@192.0.2.10>;+sip.instance=\"<urn:x>\";reg-id=zero"}, "reg-id"),
])
def test_malformed_contact_or_expires_is_400(registrar, kwargs, reason_part):
    r = send(registrar, register(**kwargs))
    assert r.status == 400
    assert reason_part in r.reason
    assert bindings(registrar) == []


def test_too_many_contacts_is_400(registrar):
    many = ", ".join(f"<sip:alice@192.0.2.10:{5000 + i}>" for i in range(21))
    r = send(registrar, register(contact=many))
    assert r.status == 400 and "Contacts" in r.reason
    many = ", ".join(f"<sip:alice@192.0.2.10:{5000 + i}>" for i in range(20))
    assert send(registrar, register(contact=many)).status == 200


# -- domains, AOR, Require -------------------------------------------------------------------


def test_foreign_request_uri_domain_is_404(registrar):
    assert send(registrar, register(uri="sip:c.lab")).status == 404


def test_non_sip_request_uri_is_416(registrar):
    assert send(registrar, register(uri="tel:+15551234")).status == 416


def test_foreign_to_domain_is_404(registrar):
    assert send(registrar, register(to="sip:alice@c.lab")).status == 404


def test_unknown_require_is_420_with_unsupported(registrar):
    r = send(registrar, register("Require: path, foo"))
    assert r.status == 420 and r.headers.get("Unsupported") == "foo"


def test_aor_of_normalises():
    assert aor_of("sips:alice@A.LAB:5061;transport=tls") == "sip:alice@a.lab"
    assert aor_of("<sip:al%69ce@a.lab>") == "sip:alice@a.lab"
    with pytest.raises(ValueError):
        aor_of("tel:+123")


# -- Call-ID / CSeq ordering (§10.3 step 6) ---------------------------------------------------


@pytest.mark.parametrize("cseq", [1, 5])
def test_same_call_id_not_higher_cseq_is_500(registrar, cseq):
    send(registrar, register(cseq=5, expires="300"))
    r = send(registrar, register(cseq=cseq, expires="900"))
    assert r.status == 500
    [b] = bindings(registrar)
    assert b.cseq == 5  # nothing applied


def test_stale_cseq_also_guards_wildcard(registrar):
    send(registrar, register(cseq=5))
    assert send(registrar, register(cseq=4, contact="*", expires="0")).status == 500
    assert len(bindings(registrar)) == 1


def test_other_call_id_replaces_whatever_cseq(registrar):
    send(registrar, register(cseq=5, expires="300"))
    r = send(registrar, register(call_id="c2", cseq=1, expires="900"))
    assert contacts(r) == {"sip:alice@192.0.2.10:5060": 900}
    assert bindings(registrar)[0].call_id == "c2"


# -- Path, outbound, NAT ---------------------------------------------------------------


def test_path_stored_in_order_and_echoed(registrar):
    r = send(registrar, register(
        "Path: <sip:edge1.a.lab;lr>", "Path: <sip:edge2.a.lab;lr>", "Supported: path"
    ))
    assert r.headers.get_all("Path") == ["<sip:edge1.a.lab;lr>", "<sip:edge2.a.lab;lr>"]
    assert "path" in r.headers.get("Supported", "")
    assert bindings(registrar)[0].path == ("<sip:edge1.a.lab;lr>", "<sip:edge2.a.lab;lr>")


def test_path_not_echoed_without_supported_path(registrar):
    r = send(registrar, register("Path: <sip:edge1.a.lab;lr>"))
    assert r.headers.get_all("Path") == []
    assert bindings(registrar)[0].path == ("<sip:edge1.a.lab;lr>",)


def test_outbound_instance_and_reg_id_stored_and_returned(registrar):
    contact = '<sip:alice@10.0.0.5:5060>;+sip.instance="<urn:uuid:1234>";reg-id=1'
    r = send(registrar, register(contact=contact))
    [c] = r.contacts
    assert c.params["+sip.instance"] == '"<urn:uuid:1234>"' and c.params["reg-id"] == "1"
    [b] = bindings(registrar)
    assert (b.instance_id, b.reg_id) == ('"<urn:uuid:1234>"', 1)
    assert parse_received(b.received) == SOURCE  # a flow is reached over itself


def test_nat_source_recorded_as_received(registrar):
    nat = Address("UDP", "203.0.113.9", 40123)
    send(registrar, register(contact="<sip:alice@10.0.0.5:5060>"), source=nat)
    [b] = bindings(registrar)
    assert b.received == format_received(nat) == "UDP 203.0.113.9:40123"
    assert parse_received(b.received) == nat
    # What the registrar writes is what the proxy reads back, IPv6 too.
    v6 = Address("TCP", "2001:db8::7", 5061)
    assert parse_received(format_received(v6)) == v6


# -- digest authentication ---------------------------------------------------------------


def challenges(response: Response) -> list[Challenge]:
    return [Challenge.parse(v) for v in response.headers.get_all("WWW-Authenticate")]


def authorised(
    challenge: Challenge, user: str = "alice", password: str = "secret", nc: int = 1,
    **kwargs: Any,
) -> Request:
    credentials = answer_challenge(challenge, "REGISTER", "sip:a.lab", user, password, nc=nc)
    return register(f"Authorization: {credentials}", **kwargs)


def test_challenge_offers_sha256_then_md5(auth_registrar):
    r = send(auth_registrar, register())
    assert r.status == 401
    assert [c.algorithm for c in challenges(r)] == ["SHA-256", "MD5"]
    assert all(c.realm == "a.lab" and not c.stale for c in challenges(r))
    assert bindings(auth_registrar) == []


@pytest.mark.parametrize("index", [0, 1], ids=["SHA-256", "MD5"])
def test_answered_challenge_registers(auth_registrar, index):
    challenge = challenges(send(auth_registrar, register()))[index]
    r = send(auth_registrar, authorised(challenge, cseq=2))
    assert r.status == 200
    assert len(bindings(auth_registrar)) == 1


def test_wrong_password_gets_fresh_challenge(auth_registrar):
    challenge = challenges(send(auth_registrar, register()))[0]
    r = send(auth_registrar, authorised(challenge, password="wrong", cseq=2))
    assert r.status == 401
    assert not any(c.stale for c in challenges(r))
    assert bindings(auth_registrar) == []


def test_replayed_nonce_count_gets_stale_rechallenge(auth_registrar):
    challenge = challenges(send(auth_registrar, register()))[0]
    assert send(auth_registrar, authorised(challenge, cseq=2)).status == 200
    r = send(auth_registrar, authorised(challenge, cseq=3))  # same nc=1 again
    assert r.status == 401
    assert all(c.stale for c in challenges(r))
    assert send(auth_registrar, authorised(challenge, nc=2, cseq=4)).status == 200


def test_expired_nonce_gets_stale_rechallenge(auth_registrar, clock):
    challenge = challenges(send(auth_registrar, register()))[0]
    clock.advance(301)
    r = send(auth_registrar, authorised(challenge, cseq=2))
    assert r.status == 401 and all(c.stale for c in challenges(r))
    fresh = challenges(r)[1]
    assert send(auth_registrar, authorised(fresh, cseq=3)).status == 200


def test_registering_someone_elses_aor_is_403(auth_registrar):
    challenge = challenges(send(auth_registrar, register(to="sip:bob@a.lab")))[0]
    r = send(auth_registrar, authorised(challenge, to="sip:bob@a.lab", cseq=2))
    assert r.status == 403
    assert bindings(auth_registrar, "sip:bob@a.lab") == []


def test_malformed_authorization_is_400(auth_registrar):
    assert send(auth_registrar, register("Authorization: Digest garbage")).status == 400


def test_credentials_for_another_realm_are_challenged(auth_registrar):
    challenge = challenges(send(auth_registrar, register()))[0]
    challenge.realm = "elsewhere"
    assert send(auth_registrar, authorised(challenge, cseq=2)).status == 401


def test_challenge_order_is_configurable(clock):
    users = Users.from_passwords({"alice@a.lab": "secret"})
    registrar = Registrar(["a.lab"], open_location("memory:", clock), clock, users,
                          auth_algorithms=["MD5", "SHA-256"])
    assert [c.algorithm for c in challenges(send(registrar, register()))] == ["MD5", "SHA-256"]


# -- failures: always one final response ----------------------------------------------------


class BrokenLocation:
    def __init__(self, exc: Exception, clock: Any) -> None:
        self.exc = exc
        self.clock = clock

    def update(self, aor: str, changes: Any) -> defer.Deferred:
        return defer.fail(self.exc)

    def get(self, aor: str) -> defer.Deferred:
        raise self.exc  # synchronously, which must be caught too


def test_store_failure_is_500_with_retry_after(clock):
    registrar = Registrar(["a.lab"], BrokenLocation(LocationError("down"), clock), clock)
    r = send(registrar, register())
    assert r.status == 500 and r.headers.get("Retry-After")
    r = send(registrar, register(contact=None))
    assert r.status == 500 and r.headers.get("Retry-After")


def test_unexpected_error_is_logged_500(clock):
    from twisted.logger import globalLogPublisher

    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        registrar = Registrar(["a.lab"], BrokenLocation(RuntimeError("bug"), clock), clock)
        assert send(registrar, register()).status == 500
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert any("log_failure" in e for e in events)


def test_slow_store_answers_once_when_it_fires(clock):
    pending: defer.Deferred = defer.Deferred()

    class Slow:
        def update(self, aor: str, changes: Any) -> defer.Deferred:
            return pending

    registrar = Registrar(["a.lab"], Slow(), clock)  # type: ignore[arg-type]
    tx = FakeTx()
    registrar.handle(register(), tx, SOURCE)
    assert tx.responses == []
    pending.callback([])
    assert [r.status for r in tx.responses] == [200]


# -- the sipregistrar role --------------------------------------------------------------------


@pytest.mark.parametrize(("method", "status"), [("INVITE", 405), ("FOO", 501)])
def test_role_refuses_other_methods_with_allow(registrar, method, status):
    request = register()
    request.method = method
    request.headers.set("CSeq", f"1 {method}")
    tx = FakeTx()
    RegistrarRole(registrar).request_received(request, tx, SOURCE)
    assert tx.final.status == status
    assert "REGISTER" in tx.final.headers.get("Allow", "")


def test_role_answers_options_and_register(registrar):
    role = RegistrarRole(registrar)
    tx = FakeTx()
    role.request_received(register(), tx, SOURCE)
    assert tx.final.status == 200
    options = register()
    options.method = "OPTIONS"
    options.headers.set("CSeq", "1 OPTIONS")
    tx = FakeTx()
    role.request_received(options, tx, SOURCE)
    assert tx.final.status == 200 and tx.final.headers.get("Allow")


def test_digest_uri_may_name_the_registrar_but_not_a_user(auth_registrar):
    challenge = challenges(send(auth_registrar, register()))[0]
    credentials = answer_challenge(challenge, "REGISTER", "sip:192.0.2.1:5060", "alice", "secret")
    assert send(auth_registrar, register(f"Authorization: {credentials}", cseq=2)).status == 200
    credentials = answer_challenge(challenge, "REGISTER", "sip:bob@a.lab", "alice", "secret", nc=2)
    assert send(auth_registrar, register(f"Authorization: {credentials}", cseq=3)).status == 401


def test_answer_needs_no_deferred_when_the_store_answers_at_once(registrar, clock):
    tx = FakeTx()
    assert registrar.answer(register(), tx, SOURCE) is None  # memory: answered already
    assert tx.final.status == 200
    bad = FakeTx()
    d = registrar.answer(register(uri="sip:c.lab"), bad, SOURCE)
    assert d is not None and d.called and bad.final.status == 404


def test_answer_returns_a_deferred_for_a_store_that_only_answers_later(clock):
    class Later:
        """A store with no synchronous forms (like sqlite: or redis:)."""

        def __init__(self) -> None:
            self.pending: list[defer.Deferred[Any]] = []

        def update(self, aor: str, changes: Any) -> defer.Deferred[Any]:
            d: defer.Deferred[Any] = defer.Deferred()
            self.pending.append(d)
            return d

    store = Later()
    registrar = Registrar(["a.lab"], store, clock)  # type: ignore[arg-type]
    tx = FakeTx()
    d = registrar.answer(register(), tx, SOURCE)
    assert d is not None and not d.called and tx.responses == []
    store.pending[0].callback([])
    assert d.called and tx.final.status == 200
