# -*- test-case-name: tests.sipcore.test_digest -*-
"""SIP digest authentication: RFC 3261 §22 on top of RFC 7616 (RFC 2617) and RFC 8760.

Three layers, each usable alone:

1. **Wire values.** `Challenge` (a `WWW-Authenticate`/`Proxy-Authenticate` value) and
   `Credentials` (an `Authorization`/`Proxy-Authorization` value), each with
   `parse(text)` (raises `ParseError`, status 400) and `str()`. Note RFC 3261 §7.3.1:
   these four headers are never comma-combined, so one header field is one value.
2. **Arithmetic.** `compute_ha1` and `compute_response` for MD5, MD5-sess, SHA-256,
   SHA-256-sess, SHA-512-256(-sess); qop=auth, qop=auth-int and the RFC 2069 form without
   qop. `answer_challenge` is the client side (our UA and the tests).
3. **Server policy.** `DigestAuthenticator` issues stateless nonces, verifies credentials
   and remembers nonce counts to stop replays. Time comes from an injected clock with a
   `seconds()` method (the reactor, `twisted.internet.task.Clock`, or any fake).

How a server uses `DigestAuthenticator.verify`'s outcome:

- `OK`: proceed; `result.username` is the authenticated user.
- `STALE`: the password was right but the nonce is too old (or its history was
  forgotten): answer 401/407 with `challenge(stale=True)`, and the UA retries silently.
- `REPLAY`: a nonce count did not increase. Answer 401/407 with `challenge(stale=True)`
  too: an attacker gains nothing from a fresh challenge, and a confused but honest UA
  recovers without prompting its user.
- `FAILED`: wrong password, unknown user, wrong realm, forged nonce ...: answer 401/407
  with `challenge()` (or 403 after repeated failures, the caller's policy).
  `result.reason` says why, for logs only: never send it to the peer, it would help
  user enumeration.

The registrar answers 401 with WWW-Authenticate and reads Authorization; a proxy answers
407 with Proxy-Authenticate and reads Proxy-Authorization (RFC 3261 §22.3).
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import secrets
import struct
import urllib.parse
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from sipcore.auth_params import format_auth_header, parse_auth_header
from sipcore.errors import ParseError

__all__ = [
    "ALGORITHMS",
    "AuthOutcome",
    "AuthResult",
    "Challenge",
    "Credentials",
    "DigestAuthenticator",
    "HA1Store",
    "SecondsClock",
    "UnsupportedAlgorithm",
    "answer_challenge",
    "base_algorithm",
    "canonical_algorithm",
    "choose_challenge",
    "compute_ha1",
    "compute_response",
    "is_session_algorithm",
    "parse_challenge",
    "parse_credentials",
]


# --------------------------------------------------------------------------- algorithms

# Canonical name -> hashlib name. The "-sess" variants share the hash of their base.
# RFC 8760 §2 registers SHA-256 and SHA-512-256 for SIP; RFC 7616 §3.2 names them the same.
_HASHES = {
    "MD5": "md5",
    "SHA-256": "sha256",
    "SHA-512-256": "sha512_256",
}
ALGORITHMS: tuple[str, ...] = tuple(name for base in _HASHES for name in (base, f"{base}-sess"))
_BY_LOWER = {name.lower(): name for name in ALGORITHMS}


class UnsupportedAlgorithm(ValueError):
    """An algorithm name this module cannot compute."""


def canonical_algorithm(name: str | None) -> str:
    """Spell an algorithm the way RFC 7616 does; None (absent) means MD5 (RFC 7616 §3.3).

    Algorithm tokens compare case-insensitively, so `md5-SESS` becomes `MD5-sess`.
    """
    if name is None:
        return "MD5"
    try:
        return _BY_LOWER[name.lower()]
    except KeyError:
        raise UnsupportedAlgorithm(f"unsupported digest algorithm {name!r}") from None


def is_session_algorithm(algorithm: str) -> bool:
    return canonical_algorithm(algorithm).endswith("-sess")


def base_algorithm(algorithm: str) -> str:
    """`MD5-sess` -> `MD5`: the algorithm whose HA1 a users store keeps."""
    name = canonical_algorithm(algorithm)
    return name[: -len("-sess")] if name.endswith("-sess") else name


def _hash_hex(algorithm: str, data: bytes) -> str:
    return hashlib.new(_HASHES[base_algorithm(algorithm)], data).hexdigest()


def _h(algorithm: str, *parts: str) -> str:
    # RFC 7616 §3.4: strings are hashed as UTF-8 joined by ":" (charset=UTF-8; for the
    # ASCII that SIP users overwhelmingly have, ISO-8859-1 gives the same bytes).
    return _hash_hex(algorithm, ":".join(parts).encode("utf-8"))


def compute_ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """H(username:realm:password), the value a users file stores (RFC 7616 §3.4.2).

    For a -sess algorithm this is still the *base* HA1; `compute_response` folds in the
    nonce and cnonce, because those are per-session and cannot be stored.
    """
    return _h(algorithm, username, realm, password)


def compute_response(
    algorithm: str,
    ha1: str,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The `response` value, from a base HA1 (RFC 7616 §3.4.1-3.4.3, RFC 2617 §3.2.2).

    qop None is the RFC 2069 form, `H(HA1:nonce:HA2)`, still sent by some old UAs.
    Raises ValueError when the parameters cannot go together.
    """
    algorithm = canonical_algorithm(algorithm)
    if qop is not None:
        qop = qop.lower()
        if qop not in ("auth", "auth-int"):
            raise ValueError(f"unsupported qop {qop!r}")
        if nc is None or cnonce is None:
            raise ValueError("qop requires nc and cnonce")
    if is_session_algorithm(algorithm):
        # RFC 7616 §3.4.2: HA1 = H(H(user:realm:pw):nonce:cnonce). A cnonce only exists
        # with qop, so -sess without qop is meaningless.
        if cnonce is None:
            raise ValueError(f"{algorithm} requires a cnonce")
        ha1 = _h(algorithm, ha1, nonce, cnonce)
    if qop == "auth-int":
        # RFC 7616 §3.4.3: A2 covers the body too; SIP bodies are bytes already.
        ha2 = _h(algorithm, method, uri, _hash_hex(algorithm, body))
    else:
        ha2 = _h(algorithm, method, uri)
    if qop is None:
        return _h(algorithm, ha1, nonce, ha2)
    assert nc is not None and cnonce is not None
    return _h(algorithm, ha1, nonce, nc, cnonce, qop, ha2)


# --------------------------------------------------------------------------- wire values

_DIGEST = "digest"


def _parse_digest(text: str, what: str) -> dict[str, str]:
    scheme, params = parse_auth_header(text)
    if scheme.lower() != _DIGEST:
        raise ParseError(f"Unsupported auth scheme {scheme[:20]} in {what}")
    return params


def _canonical_or_raw(name: str) -> str:
    # Unknown algorithms are kept as written rather than refused: a challenge list may
    # mix algorithms, and the client simply skips the ones it cannot do.
    try:
        return canonical_algorithm(name)
    except UnsupportedAlgorithm:
        return name


def _is_true(value: str | None) -> bool:
    # RFC 7616 §3.3: anything but case-insensitive "true" is false.
    return value is not None and value.lower() == "true"


_CHALLENGE_KNOWN = frozenset(
    ("realm", "nonce", "algorithm", "qop", "opaque", "stale", "domain", "userhash")
)


@dataclass(slots=True)
class Challenge:
    """One `Digest` challenge (RFC 7616 §3.3, RFC 3261 §25.1 `digest-cln`).

    `qop` is the offered list; empty means the server is an RFC 2069 one. `domain` is
    kept raw (a space-separated URI list). Unknown parameters (e.g. `charset`) ride in
    `extra` so a parsed challenge re-serialises with them.
    """

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ("auth",)
    opaque: str | None = None
    stale: bool = False
    domain: str | None = None
    userhash: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Challenge:
        params = _parse_digest(text, "challenge")
        for required in ("realm", "nonce"):
            if required not in params:
                raise ParseError(f"Digest challenge without {required}")
        qop = params.get("qop")
        return cls(
            realm=params["realm"],
            nonce=params["nonce"],
            algorithm=_canonical_or_raw(params.get("algorithm", "MD5")),
            qop=tuple(q.strip().lower() for q in qop.split(",") if q.strip()) if qop else (),
            opaque=params.get("opaque"),
            stale=_is_true(params.get("stale")),
            domain=params.get("domain"),
            userhash=_is_true(params.get("userhash")),
            extra={k: v for k, v in params.items() if k not in _CHALLENGE_KNOWN},
        )

    def __str__(self) -> str:
        # RFC 7616 §3.3 quoting: realm, domain, nonce, opaque, qop quoted; the rest tokens.
        params: list[tuple[str, str, bool]] = [("realm", self.realm, True)]
        if self.domain is not None:
            params.append(("domain", self.domain, True))
        params.append(("nonce", self.nonce, True))
        if self.opaque is not None:
            params.append(("opaque", self.opaque, True))
        if self.stale:
            params.append(("stale", "true", False))
        params.append(("algorithm", self.algorithm, False))
        if self.qop:
            params.append(("qop", ",".join(self.qop), True))
        if self.userhash:
            params.append(("userhash", "true", False))
        params.extend((k, v, False) for k, v in self.extra.items())
        return format_auth_header("Digest", params)


_CREDENTIALS_KNOWN = frozenset(
    (
        "username",
        "username*",
        "realm",
        "nonce",
        "uri",
        "response",
        "algorithm",
        "cnonce",
        "nc",
        "qop",
        "opaque",
        "userhash",
    )
)
_HEX = frozenset("0123456789abcdefABCDEF")


def _decode_ext_value(value: str) -> str:
    """RFC 8187 `charset'lang'pct-encoded`, as RFC 7616 §3.4.4 allows for `username*`."""
    try:
        charset, _lang, encoded = value.split("'", 2)
    except ValueError:
        raise ParseError("Malformed username* parameter") from None
    if charset.lower() != "utf-8":
        raise ParseError("Unsupported charset in username*")
    try:
        return urllib.parse.unquote(encoded, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise ParseError("Username* is not valid UTF-8") from None


@dataclass(slots=True)
class Credentials:
    """One `Digest` credentials value (RFC 7616 §3.4, RFC 3261 §25.1 `digest-response`).

    `algorithm` None means the parameter was absent (MD5). `nc` is the 8-hex-digit wire
    form, because the response hashes it exactly as sent; `nonce_count` is its value.
    """

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str | None = None
    cnonce: str | None = None
    nc: str | None = None
    qop: str | None = None
    opaque: str | None = None
    userhash: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def nonce_count(self) -> int | None:
        return None if self.nc is None else int(self.nc, 16)

    @classmethod
    def parse(cls, text: str) -> Credentials:
        params = _parse_digest(text, "credentials")
        if "username*" in params:
            # RFC 7616 §3.4.4: username and username* are mutually exclusive.
            if "username" in params:
                raise ParseError("Both username and username* in credentials")
            params["username"] = _decode_ext_value(params["username*"])
        for required in ("username", "realm", "nonce", "uri", "response"):
            if required not in params:
                raise ParseError(f"Digest credentials without {required}")
        qop = params.get("qop")
        nc = params.get("nc")
        cnonce = params.get("cnonce")
        if qop is not None:
            qop = qop.lower()
            # RFC 7616 §3.4: with qop, cnonce and nc MUST be present.
            if cnonce is None or nc is None:
                raise ParseError("Digest credentials with qop but without cnonce/nc")
        if nc is not None and (len(nc) != 8 or not set(nc) <= _HEX):
            raise ParseError("Nonce count is not 8 hex digits")
        algorithm = params.get("algorithm")
        return cls(
            username=params["username"],
            realm=params["realm"],
            nonce=params["nonce"],
            uri=params["uri"],
            response=params["response"],
            algorithm=None if algorithm is None else _canonical_or_raw(algorithm),
            cnonce=cnonce,
            nc=nc,
            qop=qop,
            opaque=params.get("opaque"),
            userhash=_is_true(params.get("userhash")),
            extra={k: v for k, v in params.items() if k not in _CREDENTIALS_KNOWN},
        )

    def __str__(self) -> str:
        # RFC 3261 §25.1 / RFC 7616 §3.4: qop and nc are bare tokens, the rest quoted.
        params: list[tuple[str, str, bool]] = [
            ("username", self.username, True),
            ("realm", self.realm, True),
            ("nonce", self.nonce, True),
            ("uri", self.uri, True),
            ("response", self.response, True),
        ]
        if self.algorithm is not None:
            params.append(("algorithm", self.algorithm, False))
        if self.cnonce is not None:
            params.append(("cnonce", self.cnonce, True))
        if self.opaque is not None:
            params.append(("opaque", self.opaque, True))
        if self.qop is not None:
            params.append(("qop", self.qop, False))
        if self.nc is not None:
            params.append(("nc", self.nc, False))
        if self.userhash:
            params.append(("userhash", "true", False))
        params.extend((k, v, False) for k, v in self.extra.items())
        return format_auth_header("Digest", params)


def parse_challenge(text: str) -> Challenge:
    return Challenge.parse(text)


def parse_credentials(text: str) -> Credentials:
    return Credentials.parse(text)


# --------------------------------------------------------------------------- client side


def choose_challenge(challenges: Iterable[Challenge]) -> Challenge | None:
    """The first challenge we can answer (RFC 8760 §2.4: servers list them by
    preference, and the UAC takes the topmost one whose algorithm it supports)."""
    for challenge in challenges:
        if challenge.algorithm in ALGORITHMS and (
            not challenge.qop or {"auth", "auth-int"} & set(challenge.qop)
        ):
            return challenge
    return None


def answer_challenge(
    challenge: Challenge,
    method: str,
    uri: str,
    username: str,
    password: str,
    body: bytes = b"",
    nc: int = 1,
    cnonce: str | None = None,
) -> Credentials:
    """Build the credentials answering `challenge` for a request (RFC 3261 §22.2-22.3).

    Picks qop=auth when offered, else auth-int (which covers `body`), else the RFC 2069
    form. `nc` counts the requests this UA has sent with this nonce, starting at 1.
    Raises `UnsupportedAlgorithm`, or ValueError when nothing offered can be answered.
    """
    algorithm = canonical_algorithm(challenge.algorithm)
    if not challenge.qop:
        qop = None
    elif "auth" in challenge.qop:
        qop = "auth"
    elif "auth-int" in challenge.qop:
        qop = "auth-int"
    else:
        raise ValueError(f"no supported qop in {challenge.qop!r}")
    if not 0 < nc <= 0xFFFFFFFF:
        raise ValueError("nonce count out of range")
    nc_text = f"{nc:08x}" if qop else None
    if qop and cnonce is None:
        cnonce = secrets.token_hex(16)
    if not qop:
        cnonce = None
    ha1 = compute_ha1(algorithm, username, challenge.realm, password)
    wire_username = username
    if challenge.userhash:
        # RFC 7616 §3.4.4: send H(username:realm) so the name is not visible on the wire.
        wire_username = _h(algorithm, username, challenge.realm)
    return Credentials(
        username=wire_username,
        realm=challenge.realm,
        nonce=challenge.nonce,
        uri=uri,
        response=compute_response(
            algorithm, ha1, challenge.nonce, method, uri, qop, nc_text, cnonce, body
        ),
        algorithm=algorithm,
        cnonce=cnonce,
        nc=nc_text,
        qop=qop,
        opaque=challenge.opaque,
        userhash=challenge.userhash,
    )


# --------------------------------------------------------------------------- server side


class SecondsClock(Protocol):
    """The one part of `IReactorTime` this module needs."""

    def seconds(self) -> float: ...


class HA1Store(Protocol):
    """Where the authenticator finds users (`registrar.users.Users` is one).

    `algorithm` is a base algorithm name (`MD5`, `SHA-256`, `SHA-512-256`); the answer
    is H(user:realm:password) in lower-case hex, or None for an unknown user or a user
    with no secret for that algorithm.
    """

    def ha1(self, user: str, realm: str, algorithm: str) -> str | None: ...


class AuthOutcome(enum.Enum):
    OK = "ok"
    STALE = "stale"
    FAILED = "failed"
    REPLAY = "replay"


@dataclass(frozen=True, slots=True)
class AuthResult:
    outcome: AuthOutcome
    username: str | None = None  # set for OK (and STALE/REPLAY: the password was right)
    reason: str = ""  # for logs, never for the wire

    @property
    def ok(self) -> bool:
        return self.outcome is AuthOutcome.OK


# Nonce layout: 8-byte issue time in ms | 12 random bytes | 16-byte truncated HMAC.
_NONCE_TIME = struct.Struct(">Q")
_NONCE_RANDOM = 12
_NONCE_MAC = 16
_NONCE_LEN = _NONCE_TIME.size + _NONCE_RANDOM + _NONCE_MAC
# A nonce used in the RFC 2069 form (no nc) is single-use: record it with a count above
# any real 32-bit nc so that any later use of it counts as a replay.
_SINGLE_USE = 1 << 32
_DUMMY_HA1 = "0" * 64
_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class DigestAuthenticator:
    """Issues challenges and checks credentials for one realm (RFC 3261 §22.1, §22.4).

    Nonces are stateless: each carries its issue time, randomness and an HMAC under a
    per-process secret, so any nonce we made can be verified without storing it, and
    one we did not make is refused. After `nonce_ttl` seconds a nonce is stale: a
    correct answer earns a `stale=true` rechallenge rather than a failure.

    Replay protection keeps, per nonce used, the highest nonce count seen, in an LRU
    capped at `max_tracked_nonces`. When a live nonce is evicted we raise a watermark
    to its issue time; any nonce not in the table but issued at or before the watermark
    may have been used before, so it is answered STALE (the UA gets a fresh nonce)
    instead of trusted. Memory stays bounded and replays are never accepted.

    `algorithms` are offered in order (RFC 8760 §2.4: most preferred first).
    """

    def __init__(
        self,
        realm: str,
        users: HA1Store,
        clock: SecondsClock,
        nonce_ttl: float = 300,
        secret: bytes | None = None,
        *,
        algorithms: Iterable[str] = ("SHA-256", "MD5"),
        qop: Iterable[str] = ("auth",),
        max_tracked_nonces: int = 100_000,
        allow_rfc2069: bool = True,
    ) -> None:
        self.realm = realm
        self.users = users
        self.clock = clock
        self.nonce_ttl = nonce_ttl
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        self.algorithms = tuple(canonical_algorithm(a) for a in algorithms)
        if not self.algorithms:
            raise ValueError("at least one algorithm must be offered")
        self.qop = tuple(qop)
        self.allow_rfc2069 = allow_rfc2069
        self.max_tracked_nonces = max_tracked_nonces
        # nonce -> [issue time in ms, highest nonce count accepted]
        self._seen: OrderedDict[str, list[int]] = OrderedDict()
        self._forgotten_up_to_ms = -1

    # -- nonces

    def _now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    def _mac(self, stamp_and_random: bytes) -> bytes:
        # The realm is in the MAC so a nonce from one realm's challenge is refused by
        # another authenticator sharing the secret.
        message = self.realm.encode("utf-8") + b"\0" + stamp_and_random
        return hmac.new(self._secret, message, hashlib.sha256).digest()[:_NONCE_MAC]

    def new_nonce(self) -> str:
        body = _NONCE_TIME.pack(max(self._now_ms(), 0)) + secrets.token_bytes(_NONCE_RANDOM)
        raw = body + self._mac(body)
        # base64url without padding is all token characters, so it survives lenient peers.
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def _nonce_issued_ms(self, nonce: str) -> int | None:
        """The issue time of a nonce we made, or None for anything else."""
        # Only the canonical spelling: the decoder would also take "+" for "-", and two
        # spellings of one nonce must not get two replay-table entries.
        if len(nonce) != (_NONCE_LEN * 4 + 2) // 3 or not set(nonce) <= _B64URL:
            return None
        try:
            raw = base64.urlsafe_b64decode(nonce.encode("ascii") + b"=" * (-len(nonce) % 4))
        except (UnicodeEncodeError, binascii.Error, ValueError):
            return None
        if len(raw) != _NONCE_LEN:
            return None
        body, mac = raw[:-_NONCE_MAC], raw[-_NONCE_MAC:]
        if not hmac.compare_digest(mac, self._mac(body)):
            return None
        (issued,) = _NONCE_TIME.unpack_from(body)
        return int(issued)

    def _is_expired(self, issued_ms: int) -> bool:
        # abs(): a clock stepped far back (wall-clock reactor) must not make nonces
        # immortal.
        return abs(self._now_ms() - issued_ms) > self.nonce_ttl * 1000

    # -- challenges

    def challenge(self, stale: bool = False) -> list[Challenge]:
        """One challenge per offered algorithm, sharing one nonce (RFC 8760 §2.4)."""
        nonce = self.new_nonce()
        return [
            Challenge(realm=self.realm, nonce=nonce, algorithm=a, qop=self.qop, stale=stale)
            for a in self.algorithms
        ]

    def challenge_header_values(self, stale: bool = False) -> list[str]:
        """The header values for a 401/407, one field each, in order of preference."""
        return [str(c) for c in self.challenge(stale)]

    # -- verification

    def verify(
        self,
        method: str,
        credentials: Credentials,
        body: bytes = b"",
        request_uri: str | None = None,
    ) -> AuthResult:
        """Check `credentials` sent with a `method` request (RFC 3261 §22.4, RFC 7616 §3.4).

        Pass `request_uri` to require the digest uri to equal it exactly (RFC 7616
        §3.4.6); proxies that rewrite the Request-URI may prefer to leave it out.
        """
        failed = AuthOutcome.FAILED
        if credentials.realm != self.realm:
            return AuthResult(failed, reason=f"realm {credentials.realm!r} is not ours")
        if not credentials.uri:
            return AuthResult(failed, reason="credentials without uri")
        if request_uri is not None and credentials.uri != request_uri:
            return AuthResult(failed, reason="digest uri differs from Request-URI")
        try:
            algorithm = canonical_algorithm(credentials.algorithm)
        except UnsupportedAlgorithm:
            return AuthResult(failed, reason=f"algorithm {credentials.algorithm!r} unknown")
        if algorithm not in self.algorithms:
            # Never accept an algorithm we did not offer: no downgrade to MD5 when an
            # operator has switched it off.
            return AuthResult(failed, reason=f"algorithm {algorithm} not offered")
        qop = credentials.qop
        if qop is None:
            if not self.allow_rfc2069:
                return AuthResult(failed, reason="credentials without qop")
            if is_session_algorithm(algorithm):
                return AuthResult(failed, reason=f"{algorithm} without qop")
        elif qop not in ("auth", "auth-int") or credentials.nc is None:
            return AuthResult(failed, reason=f"qop {qop!r} unusable")
        issued_ms = self._nonce_issued_ms(credentials.nonce)
        if issued_ms is None:
            return AuthResult(failed, reason="nonce not issued by us")
        if credentials.userhash:
            return AuthResult(failed, reason="userhash is not supported")

        username = credentials.username
        ha1 = self.users.ha1(username, self.realm, base_algorithm(algorithm))
        try:
            expected = compute_response(
                algorithm,
                ha1 if ha1 is not None else _DUMMY_HA1,  # same work: no timing oracle
                credentials.nonce,
                method,
                credentials.uri,
                qop,
                credentials.nc,
                credentials.cnonce,
                body,
            )
        except ValueError as e:
            return AuthResult(failed, reason=str(e))
        matches = hmac.compare_digest(
            expected.encode("ascii"), credentials.response.lower().encode("utf-8")
        )
        if ha1 is None:
            return AuthResult(failed, reason=f"unknown user {username!r}")
        if not matches:
            return AuthResult(failed, reason=f"wrong response for {username!r}")

        if self._is_expired(issued_ms):
            return AuthResult(AuthOutcome.STALE, username, "nonce expired")
        count = _SINGLE_USE if credentials.nc is None else int(credentials.nc, 16)
        return self._check_nonce_count(credentials.nonce, issued_ms, count, username)

    def _check_nonce_count(
        self, nonce: str, issued_ms: int, count: int, username: str
    ) -> AuthResult:
        # Only reached with a correct response, so nobody without the password can burn
        # a victim's nonce counts.
        entry = self._seen.get(nonce)
        if entry is None:
            if issued_ms <= self._forgotten_up_to_ms:
                return AuthResult(AuthOutcome.STALE, username, "nonce history forgotten")
            self._seen[nonce] = [issued_ms, count]
            self._evict()
            return AuthResult(AuthOutcome.OK, username)
        if count <= entry[1]:
            return AuthResult(AuthOutcome.REPLAY, username, "nonce count did not increase")
        entry[1] = count
        self._seen.move_to_end(nonce)
        return AuthResult(AuthOutcome.OK, username)

    def _evict(self) -> None:
        """Drop expired entries at the cold end, then the coldest while over the cap.

        Every eviction raises the watermark (see the class docstring). For an expired
        entry that costs nothing: anything issued that early is stale anyway. Each
        entry is popped at most once, so this is amortised O(1) per verify.
        """
        seen = self._seen
        while seen:
            nonce, (issued_ms, _count) = next(iter(seen.items()))
            if len(seen) <= self.max_tracked_nonces and not self._is_expired(issued_ms):
                break
            del seen[nonce]
            self._forgotten_up_to_ms = max(self._forgotten_up_to_ms, issued_ms)

    def verify_header(
        self, method: str, value: str, body: bytes = b"", request_uri: str | None = None
    ) -> AuthResult:
        """Parse an Authorization/Proxy-Authorization value and verify it.

        Raises `ParseError` for a malformed value (the caller answers 400).
        """
        return self.verify(method, Credentials.parse(value), body, request_uri)
