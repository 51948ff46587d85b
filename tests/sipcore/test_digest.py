"""Tests for sipcore.digest and sipcore.auth_params."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock

from sipcore.auth_params import parse_auth_header
from sipcore.digest import (
    AuthOutcome,
    Challenge,
    Credentials,
    DigestAuthenticator,
    UnsupportedAlgorithm,
    answer_challenge,
    choose_challenge,
    compute_ha1,
    compute_response,
    parse_challenge,
    parse_credentials,
)
from sipcore.errors import ParseError

REALM = "a.lab"
URI = "sip:a.lab"


class PasswordUsers:
    """A tiny HA1Store fake: plain passwords in a dict keyed by (user, realm)."""

    def __init__(self, passwords: dict[tuple[str, str], str]) -> None:
        self.passwords = passwords

    def ha1(self, user: str, realm: str, algorithm: str) -> str | None:
        password = self.passwords.get((user, realm))
        return None if password is None else compute_ha1(algorithm, user, realm, password)


class StoredHA1Users:
    """An HA1Store fake that only knows precomputed HA1s, like a hashed users file."""

    def __init__(self, user: str, realm: str, password: str) -> None:
        self.table = {
            (user, realm, alg): compute_ha1(alg, user, realm, password)
            for alg in ("MD5", "SHA-256")
        }

    def ha1(self, user: str, realm: str, algorithm: str) -> str | None:
        return self.table.get((user, realm, algorithm))


def make_auth(clock: Clock | None = None, **kw: object) -> DigestAuthenticator:
    users = PasswordUsers({("alice", REALM): "secret", ("bob", REALM): "hunter2"})
    return DigestAuthenticator(REALM, users, clock or Clock(), **kw)  # type: ignore[arg-type]


def challenge_for(auth: DigestAuthenticator, algorithm: str) -> Challenge:
    return next(c for c in auth.challenge() if c.algorithm == algorithm)


# ------------------------------------------------------------------ known answers


def test_rfc2617_section_3_5_md5_qop_auth() -> None:
    ha1 = compute_ha1("MD5", "Mufasa", "testrealm@host.com", "Circle Of Life")
    response = compute_response(
        "MD5",
        ha1,
        "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        "GET",
        "/dir/index.html",
        qop="auth",
        nc="00000001",
        cnonce="0a4f113b",
    )
    assert response == "6629fae49393a05397450978507c4ef1"


def test_rfc2617_example_via_answer_challenge() -> None:
    challenge = parse_challenge(
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
        'opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    creds = answer_challenge(
        challenge, "GET", "/dir/index.html", "Mufasa", "Circle Of Life", cnonce="0a4f113b"
    )
    assert creds.response == "6629fae49393a05397450978507c4ef1"
    assert creds.qop == "auth" and creds.nc == "00000001"
    assert creds.opaque == "5ccc069c403ebaf9f0171e9517f40e41"
    assert creds.algorithm == "MD5"


RFC7616_CHALLENGE = (
    'Digest\r\n realm="http-auth@example.org",\r\n qop="auth, auth-int",\r\n'
    " algorithm=SHA-256,\r\n"
    ' nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",\r\n'
    ' opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
)
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ],
)
def test_rfc7616_section_3_9_1(algorithm: str, expected: str) -> None:
    challenge = parse_challenge(RFC7616_CHALLENGE.replace("SHA-256", algorithm))
    assert challenge.realm == "http-auth@example.org"
    assert challenge.qop == ("auth", "auth-int")
    assert challenge.algorithm == algorithm
    creds = answer_challenge(
        challenge, "GET", "/dir/index.html", "Mufasa", "Circle of Life", cnonce=RFC7616_CNONCE
    )
    assert creds.response == expected
    # The credentials as RFC 7616 prints them parse back to the same values.
    wire = parse_credentials(
        'Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", '
        f'algorithm={algorithm}, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
        f'nc=00000001, cnonce="{RFC7616_CNONCE}", qop=auth, response="{expected}", '
        'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    )
    assert wire == creds


def test_rfc2069_form_without_qop() -> None:
    challenge = Challenge(realm="r", nonce="n", algorithm="MD5", qop=())
    creds = answer_challenge(challenge, "REGISTER", URI, "alice", "pw")
    assert creds.qop is None and creds.nc is None and creds.cnonce is None
    ha1 = compute_ha1("MD5", "alice", "r", "pw")
    ha2 = hashlib.md5(f"REGISTER:{URI}".encode()).hexdigest()
    assert creds.response == hashlib.md5(f"{ha1}:n:{ha2}".encode()).hexdigest()
    assert "qop" not in str(creds) and "nc=" not in str(creds)


def test_session_algorithm_needs_qop() -> None:
    with pytest.raises(ValueError):
        compute_response("MD5-sess", "0" * 32, "n", "GET", "/", qop=None)
    with pytest.raises(UnsupportedAlgorithm):
        compute_ha1("SHA-1", "a", "b", "c")


def test_auth_int_covers_body() -> None:
    challenge = Challenge(realm=REALM, nonce="n", qop=("auth-int",))
    one = answer_challenge(challenge, "MESSAGE", URI, "a", "p", body=b"hi", cnonce="c")
    two = answer_challenge(challenge, "MESSAGE", URI, "a", "p", body=b"ho", cnonce="c")
    assert one.qop == "auth-int" and one.response != two.response


def test_userhash_client() -> None:
    challenge = Challenge(realm=REALM, nonce="n", algorithm="SHA-256", userhash=True)
    creds = answer_challenge(challenge, "REGISTER", URI, "alice", "secret")
    assert creds.userhash and creds.username != "alice" and len(creds.username) == 64


# ------------------------------------------------------------------ client <-> server


@pytest.mark.parametrize("algorithm", ["MD5", "MD5-sess", "SHA-256", "SHA-256-sess"])
@pytest.mark.parametrize("stored", [False, True])
def test_round_trip(algorithm: str, stored: bool) -> None:
    users = StoredHA1Users("alice", REALM, "secret") if stored else None
    auth = DigestAuthenticator(
        REALM,
        users or PasswordUsers({("alice", REALM): "secret"}),
        Clock(),
        algorithms=(algorithm,),
    )
    [challenge] = auth.challenge()
    assert challenge.algorithm == algorithm
    # Through the wire form both ways, as a real exchange would be.
    challenge = parse_challenge(str(challenge))
    creds = answer_challenge(challenge, "REGISTER", URI, "alice", "secret")
    result = auth.verify("REGISTER", parse_credentials(str(creds)))
    assert result.outcome is AuthOutcome.OK and result.username == "alice"


def test_challenge_offers_sha256_then_md5_with_one_nonce() -> None:
    auth = make_auth()
    challenges = auth.challenge()
    assert [c.algorithm for c in challenges] == ["SHA-256", "MD5"]
    assert len({c.nonce for c in challenges}) == 1
    assert all(c.qop == ("auth",) and not c.stale and c.realm == REALM for c in challenges)
    values = auth.challenge_header_values(stale=True)
    assert values[0].startswith("Digest ") and "algorithm=SHA-256" in values[0]
    assert all("stale=true" in v for v in values)
    assert choose_challenge(map(parse_challenge, values)).algorithm == "SHA-256"  # type: ignore[union-attr]


def test_choose_challenge_skips_unknown_algorithms() -> None:
    odd = Challenge(realm=REALM, nonce="n", algorithm="SHA-3-999")
    md5 = Challenge(realm=REALM, nonce="n", algorithm="MD5")
    assert choose_challenge([odd, md5]) is md5
    assert choose_challenge([odd]) is None


def test_wrong_password_fails() -> None:
    auth = make_auth()
    creds = answer_challenge(challenge_for(auth, "SHA-256"), "REGISTER", URI, "alice", "nope")
    result = auth.verify("REGISTER", creds)
    assert result.outcome is AuthOutcome.FAILED and not result.ok


def test_unknown_user_fails() -> None:
    auth = make_auth()
    creds = answer_challenge(challenge_for(auth, "MD5"), "REGISTER", URI, "mallory", "x")
    assert auth.verify("REGISTER", creds).outcome is AuthOutcome.FAILED


def test_wrong_method_fails() -> None:
    auth = make_auth()
    creds = answer_challenge(challenge_for(auth, "MD5"), "REGISTER", URI, "alice", "secret")
    assert auth.verify("INVITE", creds).outcome is AuthOutcome.FAILED


def test_bad_realm_fails() -> None:
    auth = make_auth()
    challenge = challenge_for(auth, "MD5")
    challenge.realm = "b.lab"
    creds = answer_challenge(challenge, "REGISTER", URI, "alice", "secret")
    assert auth.verify("REGISTER", creds).outcome is AuthOutcome.FAILED


def test_uri_must_be_present_and_may_be_pinned() -> None:
    auth = make_auth()
    creds = answer_challenge(challenge_for(auth, "MD5"), "REGISTER", URI, "alice", "secret")
    assert auth.verify("REGISTER", creds, request_uri="sip:b.lab").outcome is AuthOutcome.FAILED
    assert auth.verify("REGISTER", creds, request_uri=URI).ok
    empty = answer_challenge(challenge_for(auth, "MD5"), "REGISTER", "", "alice", "secret")
    assert auth.verify("REGISTER", empty).outcome is AuthOutcome.FAILED


def test_algorithm_not_offered_fails() -> None:
    auth = make_auth(algorithms=("SHA-256",))
    md5 = Challenge(realm=REALM, nonce=auth.new_nonce(), algorithm="MD5")
    creds = answer_challenge(md5, "REGISTER", URI, "alice", "secret")
    assert auth.verify("REGISTER", creds).outcome is AuthOutcome.FAILED


def test_forged_nonce_fails() -> None:
    auth = make_auth()
    real = challenge_for(auth, "MD5")
    # A well-formed nonce from another process (different secret) is not ours.
    other = DigestAuthenticator(REALM, PasswordUsers({}), Clock())
    for nonce in (
        other.new_nonce(),
        "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        real.nonce[:-1] + "A" if real.nonce[-1] != "A" else real.nonce[:-1] + "B",
        "é" * 48,
    ):
        forged = Challenge(realm=REALM, nonce=nonce, algorithm="MD5")
        creds = answer_challenge(forged, "REGISTER", URI, "alice", "secret")
        result = auth.verify("REGISTER", creds)
        assert result.outcome is AuthOutcome.FAILED, nonce
        assert result.reason == "nonce not issued by us"


def test_nonce_alternative_base64_spelling_is_refused() -> None:
    auth = make_auth()
    nonce = auth.new_nonce()
    while "-" not in nonce and "_" not in nonce:
        nonce = auth.new_nonce()
    respelt = nonce.replace("-", "+").replace("_", "/")
    creds = answer_challenge(
        Challenge(realm=REALM, nonce=respelt), "REGISTER", URI, "alice", "secret"
    )
    assert auth.verify("REGISTER", creds).outcome is AuthOutcome.FAILED


def test_nonce_from_other_realm_with_same_secret_fails() -> None:
    users = PasswordUsers({("alice", REALM): "secret", ("alice", "b.lab"): "secret"})
    a = DigestAuthenticator(REALM, users, Clock(), secret=b"k" * 32)
    b = DigestAuthenticator("b.lab", users, Clock(), secret=b"k" * 32)
    challenge = challenge_for(b, "MD5")
    challenge.realm = REALM
    creds = answer_challenge(challenge, "REGISTER", URI, "alice", "secret")
    assert a.verify("REGISTER", creds).outcome is AuthOutcome.FAILED


def test_increasing_nc_accepted_and_replay_refused() -> None:
    auth = make_auth()
    challenge = challenge_for(auth, "SHA-256")
    for nc in (1, 2, 5):
        creds = answer_challenge(challenge, "REGISTER", URI, "alice", "secret", nc=nc)
        assert auth.verify("REGISTER", creds).ok, nc
    replayed = answer_challenge(challenge, "REGISTER", URI, "alice", "secret", nc=5)
    result = auth.verify("REGISTER", replayed)
    assert result.outcome is AuthOutcome.REPLAY and result.username == "alice"
    lower = answer_challenge(challenge, "REGISTER", URI, "alice", "secret", nc=3)
    assert auth.verify("REGISTER", lower).outcome is AuthOutcome.REPLAY
    assert auth.verify(
        "REGISTER", answer_challenge(challenge, "REGISTER", URI, "alice", "secret", nc=6)
    ).ok


def test_exact_replay_of_same_credentials() -> None:
    auth = make_auth()
    creds = answer_challenge(challenge_for(auth, "MD5"), "REGISTER", URI, "alice", "secret")
    assert auth.verify("REGISTER", creds).ok
    assert auth.verify("REGISTER", creds).outcome is AuthOutcome.REPLAY


def test_failed_attempt_does_not_consume_nonce_count() -> None:
    auth = make_auth()
    challenge = challenge_for(auth, "MD5")
    bad = answer_challenge(challenge, "REGISTER", URI, "alice", "wrong", nc=0xFFFFFFFF)
    assert auth.verify("REGISTER", bad).outcome is AuthOutcome.FAILED
    good = answer_challenge(challenge, "REGISTER", URI, "alice", "secret", nc=1)
    assert auth.verify("REGISTER", good).ok


def test_rfc2069_nonce_is_single_use() -> None:
    auth = make_auth()
    challenge = challenge_for(auth, "MD5")
    challenge.qop = ()
    creds = answer_challenge(challenge, "REGISTER", URI, "alice", "secret")
    assert auth.verify("REGISTER", creds).ok
    assert auth.verify("REGISTER", creds).outcome is AuthOutcome.REPLAY
    strict = make_auth(allow_rfc2069=False)
    challenge = challenge_for(strict, "MD5")
    challenge.qop = ()
    creds = answer_challenge(challenge, "REGISTER", URI, "alice", "secret")
    assert strict.verify("REGISTER", creds).outcome is AuthOutcome.FAILED


def test_expired_nonce_is_stale_only_with_right_password() -> None:
    clock = Clock()
    auth = make_auth(clock, nonce_ttl=300)
    challenge = challenge_for(auth, "SHA-256")
    clock.advance(299)
    assert auth.verify(
        "REGISTER", answer_challenge(challenge, "REGISTER", URI, "alice", "secret", nc=1)
    ).ok
    clock.advance(2)
    result = auth.verify(
        "REGISTER", answer_challenge(challenge, "REGISTER", URI, "alice", "secret", nc=2)
    )
    assert result.outcome is AuthOutcome.STALE and result.username == "alice"
    wrong = answer_challenge(challenge, "REGISTER", URI, "alice", "nope", nc=3)
    assert auth.verify("REGISTER", wrong).outcome is AuthOutcome.FAILED
    # The UA answers the stale=true rechallenge and gets in.
    fresh = challenge_for(auth, "SHA-256")
    assert auth.verify("REGISTER", answer_challenge(fresh, "REGISTER", URI, "alice", "secret")).ok


class FakeClock:
    """Only seconds(): all the authenticator may use."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def seconds(self) -> float:
        return self.now


def test_any_object_with_seconds_is_a_clock() -> None:
    clock = FakeClock()
    auth = DigestAuthenticator(REALM, PasswordUsers({("alice", REALM): "s"}), clock, 10)
    challenge = challenge_for(auth, "MD5")
    clock.now += 11
    creds = answer_challenge(challenge, "REGISTER", URI, "alice", "s")
    assert auth.verify("REGISTER", creds).outcome is AuthOutcome.STALE
    # A clock stepped far backwards does not make the nonce valid forever either.
    clock.now -= 1000
    creds = answer_challenge(challenge, "REGISTER", URI, "alice", "s", nc=2)
    assert auth.verify("REGISTER", creds).outcome is AuthOutcome.STALE


def test_replay_table_is_bounded_and_forgotten_nonces_are_stale() -> None:
    clock = Clock()
    auth = make_auth(clock, max_tracked_nonces=3)
    used = []
    for _ in range(5):
        clock.advance(1)
        challenge = challenge_for(auth, "MD5")
        creds = answer_challenge(challenge, "REGISTER", URI, "alice", "secret")
        assert auth.verify("REGISTER", creds).ok
        used.append(challenge)
    assert len(auth._seen) == 3
    # The two oldest were evicted: replaying them must not be accepted as new.
    for challenge in used[:2]:
        creds = answer_challenge(challenge, "REGISTER", URI, "alice", "secret")
        assert auth.verify("REGISTER", creds).outcome is AuthOutcome.STALE
    # A never-used nonce issued after the eviction watermark is still fine.
    clock.advance(1)
    creds = answer_challenge(challenge_for(auth, "MD5"), "REGISTER", URI, "alice", "secret")
    assert auth.verify("REGISTER", creds).ok


def test_expired_nonces_leave_the_replay_table() -> None:
    clock = Clock()
    auth = make_auth(clock, nonce_ttl=10)
    for _ in range(3):
        creds = answer_challenge(challenge_for(auth, "MD5"), "REGISTER", URI, "alice", "secret")
        assert auth.verify("REGISTER", creds).ok
    assert len(auth._seen) == 3
    clock.advance(11)
    creds = answer_challenge(challenge_for(auth, "MD5"), "REGISTER", URI, "alice", "secret")
    assert auth.verify("REGISTER", creds).ok
    assert len(auth._seen) == 1


def test_userhash_credentials_fail_cleanly() -> None:
    auth = make_auth()
    challenge = challenge_for(auth, "SHA-256")
    challenge.userhash = True
    creds = answer_challenge(challenge, "REGISTER", URI, "alice", "secret")
    assert auth.verify("REGISTER", creds).outcome is AuthOutcome.FAILED


def test_verify_header_parses() -> None:
    auth = make_auth()
    creds = answer_challenge(challenge_for(auth, "MD5"), "REGISTER", URI, "bob", "hunter2")
    assert auth.verify_header("REGISTER", str(creds)).username == "bob"
    with pytest.raises(ParseError):
        auth.verify_header("REGISTER", "Digest username=")


def test_response_case_insensitive() -> None:
    auth = make_auth()
    creds = answer_challenge(challenge_for(auth, "MD5"), "REGISTER", URI, "alice", "secret")
    creds.response = creds.response.upper()
    assert auth.verify("REGISTER", creds).ok


# ------------------------------------------------------------------ header syntax


def test_parse_tolerates_case_and_whitespace() -> None:
    c = parse_challenge(
        '  dIgEsT   REALM = "a.lab" ,NONCE="abc",  Algorithm = md5-SESS , '
        'QOP="auth" , stale = TRUE, , domain="sip:a.lab sip:b.lab", charset=UTF-8,'
    )
    assert c == Challenge(
        realm="a.lab",
        nonce="abc",
        algorithm="MD5-sess",
        qop=("auth",),
        stale=True,
        domain="sip:a.lab sip:b.lab",
        extra={"charset": "UTF-8"},
    )


def test_parse_tab_and_folded_lws() -> None:
    c = parse_challenge('Digest\trealm="a.lab",\r\n\tnonce="n"')
    assert (c.realm, c.nonce, c.qop, c.algorithm) == ("a.lab", "n", (), "MD5")


def test_escaped_quotes_round_trip() -> None:
    c = Challenge(realm='we "quote" \\ here', nonce="n", opaque='o"')
    text = str(c)
    assert r'realm="we \"quote\" \\ here"' in text
    assert parse_challenge(text) == c
    creds = Credentials(
        username='al"ice', realm=REALM, nonce="n", uri='sip:x@a.lab;a="b"', response="00"
    )
    assert parse_credentials(str(creds)) == creds


def test_credentials_serialise_tokens_bare() -> None:
    creds = Credentials(
        username="alice",
        realm=REALM,
        nonce="n",
        uri=URI,
        response="ab",
        algorithm="SHA-256",
        cnonce="c",
        nc="0000000a",
        qop="auth",
    )
    text = str(creds)
    assert "qop=auth" in text and "nc=0000000a" in text and "algorithm=SHA-256" in text
    assert 'uri="sip:a.lab"' in text
    assert parse_credentials(text) == creds
    assert creds.nonce_count == 10


def test_credentials_lenient_unquoted_uri() -> None:
    creds = parse_credentials(
        'Digest username="alice", realm="a.lab", nonce="n", uri=sip:bob@a.lab, response=ab'
    )
    assert creds.uri == "sip:bob@a.lab" and creds.qop is None


def test_username_star() -> None:
    creds = parse_credentials(
        'Digest username*=UTF-8\'\'J%C3%A4s%C3%B8n%20Doe, realm="a.lab", nonce="n", '
        'uri="sip:a.lab", response="ab"'
    )
    assert creds.username == "Jäsøn Doe"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "Missing auth scheme"),
        ("Digest", "No parameters after auth scheme Digest"),
        ("Digest   ", "No parameters after auth scheme Digest"),
        ("Digest,realm=x", "Auth scheme not followed by whitespace"),
        ('Digest realm="a', "Unterminated quoted string in auth header"),
        ('Digest realm="a\\', "Unterminated quoted string in auth header"),
        ("Digest realm", "Auth parameter realm has no value"),
        ("Digest realm=", "Auth parameter realm has an empty value"),
        ("Digest realm=,nonce=n", "Auth parameter realm has an empty value"),
        ('Digest realm="a" nonce="b"', "Expected comma after auth parameter realm"),
        ('Digest realm="a", realm="b", nonce=n', "Duplicate auth parameter realm"),
        ('Digest REALM="a", realm="b", nonce=n', "Duplicate auth parameter realm"),
        ('Digest "realm"=a', "Bad character '\"' in auth parameter name"),
        ('Digest realm="a\x00", nonce=n', "Control character in quoted string"),
        ('Digest realm="a\r\nVia: x", nonce=n', "Control character in quoted string"),
        ('Basic realm="a"', "Unsupported auth scheme Basic in challenge"),
        ('Digest nonce="n"', "Digest challenge without realm"),
        ('Digest realm="r"', "Digest challenge without nonce"),
    ],
)
def test_challenge_parse_errors(text: str, reason: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_challenge(text)
    assert info.value.reason == reason
    assert info.value.status == 400


CREDS = 'Digest username="a", realm="r", nonce="n", uri="sip:r", response="ab"'


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (CREDS.replace('uri="sip:r", ', ""), "Digest credentials without uri"),
        (CREDS.replace('username="a", ', ""), "Digest credentials without username"),
        (CREDS + ", qop=auth", "Digest credentials with qop but without cnonce/nc"),
        (CREDS + ", qop=auth, nc=1, cnonce=c", "Nonce count is not 8 hex digits"),
        (CREDS + ", qop=auth, nc=0000000g, cnonce=c", "Nonce count is not 8 hex digits"),
        (CREDS + ", username*=UTF-8''x", "Both username and username* in credentials"),
        (CREDS.replace('username="a"', "username*=latin1''x"), "Unsupported charset in username*"),
        (CREDS.replace('username="a"', "username*=x"), "Malformed username* parameter"),
        (CREDS.replace('username="a"', "username*=UTF-8''%FF"), "Username* is not valid UTF-8"),
    ],
)
def test_credentials_parse_errors(text: str, reason: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_credentials(text)
    assert info.value.reason == reason


def test_serialise_refuses_header_injection() -> None:
    with pytest.raises(ValueError):
        str(Challenge(realm="a\r\nVia: evil", nonce="n"))


# ------------------------------------------------------------------ properties

_text = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), max_size=30)
_token = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~",
    min_size=1,
    max_size=12,
)


@given(st.text(max_size=200))
def test_challenge_parser_raises_only_parse_error(text: str) -> None:
    for parse in (parse_challenge, parse_credentials, parse_auth_header):
        try:
            parse(text)
        except ParseError:
            pass


@given(
    st.lists(
        st.sampled_from(
            [
                "Digest",
                " ",
                "\t",
                ",",
                "=",
                '"',
                "\\",
                "realm",
                "nonce",
                "uri",
                "qop",
                "nc",
                "username*",
                "UTF-8''",
                "%",
                "auth",
                "00000001",
                "x",
                "\r\n",
                "é",
            ]
        ),
        max_size=40,
    )
)
def test_header_parser_structured_garbage(parts: list[str]) -> None:
    text = "".join(parts)
    for parse in (parse_challenge, parse_credentials):
        try:
            parse(text)
        except ParseError:
            pass


@given(
    realm=_text,
    nonce=_text,
    algorithm=st.sampled_from(["MD5", "MD5-sess", "SHA-256", "SHA-256-sess", "X-42"]),
    qop=st.lists(st.sampled_from(["auth", "auth-int", "token"]), unique=True).map(tuple),
    opaque=st.none() | _text,
    stale=st.booleans(),
    domain=st.none() | _text,
    userhash=st.booleans(),
    extra=st.dictionaries(
        _token.filter(
            lambda t: (
                t.lower() == t
                and t
                not in (
                    "realm",
                    "nonce",
                    "algorithm",
                    "qop",
                    "opaque",
                    "stale",
                    "domain",
                    "userhash",
                )
            )
        ),
        _text.filter(bool),
    ),
)
def test_challenge_round_trip(
    realm: str,
    nonce: str,
    algorithm: str,
    qop: tuple[str, ...],
    opaque: str | None,
    stale: bool,
    domain: str | None,
    userhash: bool,
    extra: dict[str, str],
) -> None:
    c = Challenge(realm, nonce, algorithm, qop, opaque, stale, domain, userhash, extra)
    assert parse_challenge(str(c)) == c


@given(
    username=_text,
    realm=_text,
    nonce=_text,
    uri=_text.filter(bool),
    response=_text,
    cnonce=_text,
    nc=st.integers(0, 0xFFFFFFFF),
    opaque=st.none() | _text,
)
def test_credentials_round_trip(
    username: str,
    realm: str,
    nonce: str,
    uri: str,
    response: str,
    cnonce: str,
    nc: int,
    opaque: str | None,
) -> None:
    creds = Credentials(
        username, realm, nonce, uri, response, "SHA-256", cnonce, f"{nc:08x}", "auth", opaque
    )
    assert parse_credentials(str(creds)) == creds


def test_digest_module_is_twisted_free() -> None:
    code = "import sys, sipcore.digest; assert 'twisted' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
