"""SIP, SIPS, tel and other absolute URIs, and name-addr / addr-spec values.

URI components are stored *as received* (still %-escaped) so that ``str(uri)``
reproduces the original text; comparison (``==``) follows RFC 3261 section 19.1.4
and works on unescaped values.  Use :func:`unescape` or the ``*_unescaped``
properties where the decoded text matters.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Final

from sipcore.errors import ParseError

# --- character classes (RFC 3261 section 25.1) -------------------------------

_ESC = r"%[0-9A-Fa-f]{2}"
_UNRESERVED = r"A-Za-z0-9\-_.!~*'()"
_USER = rf"(?:[{_UNRESERVED}&=+$,;?/]|{_ESC})+"
_PASSWORD = rf"(?:[{_UNRESERVED}&=+$,]|{_ESC})*"
_PARAMCHAR = rf"(?:[{_UNRESERVED}\[\]/:&+$]|{_ESC})"
_HCHAR = rf"(?:[{_UNRESERVED}\[\]/?:+$]|{_ESC})"
_HOST = r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9\-.]*"

_SIP_URI_RE: Final = re.compile(
    rf"(?:(?P<user>{_USER})(?::(?P<password>{_PASSWORD}))?@)?"
    rf"(?P<host>{_HOST})"
    r"(?::(?P<port>[0-9]{1,5}))?"
    rf"(?P<params>(?:;{_PARAMCHAR}+(?:={_PARAMCHAR}+)?)*)"
    rf"(?:\?(?P<headers>{_HCHAR}+={_HCHAR}*(?:&{_HCHAR}+={_HCHAR}*)*))?"
)
_SCHEME_RE: Final = re.compile(r"([A-Za-z][A-Za-z0-9+\-.]*):")
_ABS_VALUE_RE: Final = re.compile(rf"(?:[{_UNRESERVED};/?:@&=+$,#\[\]]|{_ESC})+")
_TEL_RE: Final = re.compile(
    rf"(?P<number>[0-9A-Fa-f*#+\-.()pPwW]+)(?P<params>(?:;{_PARAMCHAR}+(?:={_PARAMCHAR}+)?)*)"
)
_ESCAPE_RE = re.compile(r"%([0-9A-Fa-f]{2})")
_BAD_ESCAPE_RE: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")
_TEL_VISUAL = str.maketrans("", "", "-.()")

_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_GEN_VALUE = r'"(?:[^"\\]|\\.)*"|[A-Za-z0-9\-.!%*_+`\'~:\[\]]+'
#: One ``;name[=value]`` header parameter, with the LWS RFC 3261 allows around it.
GEN_PARAM_RE: Final = re.compile(
    rf"[ \t]*;[ \t]*({_TOKEN})(?:[ \t]*=[ \t]*({_GEN_VALUE}))?[ \t]*", re.S
)
#: Parameters without whitespace or quoted strings: the fast path of parse_params.
_SIMPLE_PARAMS_RE: Final = re.compile(rf"(?:;{_TOKEN}(?:=[A-Za-z0-9\-.!%*_+`'~:\[\]]+)?)*")
_NA_QUOTED_RE: Final = re.compile(r'[ \t]*"((?:[^"\\]|\\.)*)"[ \t]*<([^<>]*)>', re.S)
_NA_TOKEN_RE: Final = re.compile(rf"[ \t]*((?:{_TOKEN}(?:[ \t]+{_TOKEN})*)?)[ \t]*<([^<>]*)>")
_ADDR_SPEC_RE: Final = re.compile(r'[ \t]*([^;<>" \t]+)[ \t]*')
_QUOTED_PAIR_RE: Final = re.compile(r"\\(.)", re.S)
_NEEDS_QUOTE_ESC_RE = re.compile(r'(["\\])')

# Parameters that, when present in either URI, must match (RFC 3261 19.1.4).
_MUST_MATCH_PARAMS: Final = ("user", "ttl", "method", "maddr", "transport")


def unescape(text: str) -> str:
    """Decode %HH escapes (as UTF-8, keeping undecodable bytes as surrogates)."""
    if "%" not in text:
        return text
    raw = _ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 16)), text)
    # chr() gave latin-1 code points for each byte; reinterpret as UTF-8.
    try:
        return raw.encode("latin-1").decode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        # Text already held non-latin-1 characters; keep the byte-wise decode.
        return raw


def _parse_params(text: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    if not text:
        return params
    for item in text[1:].split(";"):
        name, eq, value = item.partition("=")
        params[name.lower()] = value if eq else None
    return params


def _format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


@dataclass(slots=True, eq=False)
class SipURI:
    """A sip: or sips: URI; components stay %-escaped as received."""

    scheme: str = "sip"
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    # (snapshot of the fields, original text): lets str() return the exact text
    # received as long as nothing was changed since parsing.
    _orig: tuple[Any, str] | None = field(default=None, init=False, repr=False)

    # Explicit __init__: mypyc compiles it natively; the dataclass-generated one runs
    # interpreted (~4x slower per object).
    def __init__(
        self,
        scheme: str = "sip",
        user: str | None = None,
        password: str | None = None,
        host: str = "",
        port: int | None = None,
        params: dict[str, str | None] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.scheme = scheme
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.params = {} if params is None else params
        self.headers = {} if headers is None else headers
        self._orig = None

    def _snapshot(self) -> tuple[Any, ...]:
        return (
            self.scheme,
            self.user,
            self.password,
            self.host,
            self.port,
            tuple(self.params.items()),
            tuple(self.headers.items()),
        )

    def __str__(self) -> str:
        orig = self._orig
        if orig is not None and orig[0] == self._snapshot():
            return orig[1]
        parts = [self.scheme, ":"]
        if self.user is not None:
            parts.append(self.user)
            if self.password is not None:
                parts.append(":" + self.password)
            parts.append("@")
        parts.append(self.host)
        if self.port is not None:
            parts.append(f":{self.port}")
        parts.append(_format_params(self.params))
        if self.headers:
            parts.append("?" + "&".join(f"{k}={v}" for k, v in self.headers.items()))
        return "".join(parts)

    @property
    def transport(self) -> str | None:
        value = self.params.get("transport")
        return value.lower() if value else None

    @property
    def user_unescaped(self) -> str | None:
        return None if self.user is None else unescape(self.user)

    @property
    def password_unescaped(self) -> str | None:
        return None if self.password is None else unescape(self.password)

    def host_port(self) -> tuple[str, int | None]:
        return self.host, self.port

    def copy(self) -> SipURI:
        new = SipURI(
            self.scheme,
            self.user,
            self.password,
            self.host,
            self.port,
            dict(self.params),
            dict(self.headers),
        )
        new._orig = self._orig
        return new

    def with_params(self, **params: str | None) -> SipURI:
        """A copy with ``params`` set (a value of None means a flag like ``;lr``)."""
        new = self.copy()
        for name, value in params.items():
            new.params[name.lower()] = value
        return new

    def _cmp_key(self) -> tuple[Any, ...]:
        return (
            self.scheme,
            self.user_unescaped,
            self.password_unescaped,
            self.host.lower(),
            self.port,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SipURI):
            return NotImplemented
        if self._cmp_key() != other._cmp_key():
            return False
        mine = {k: unescape(v).lower() if v else v for k, v in self.params.items()}
        theirs = {k: unescape(v).lower() if v else v for k, v in other.params.items()}
        for name in _MUST_MATCH_PARAMS:
            if mine.get(name, "\0") != theirs.get(name, "\0"):
                return False
        for name in mine.keys() & theirs.keys():
            if mine[name] != theirs[name]:
                return False
        return _norm_headers(self.headers) == _norm_headers(other.headers)

    def __hash__(self) -> int:
        return hash(self._cmp_key())


def _norm_headers(headers: dict[str, str]) -> dict[str, str]:
    return {unescape(k).lower(): unescape(v) for k, v in headers.items()}


@dataclass(slots=True, eq=False)
class TelURI:
    """A tel: URI (RFC 3966); ``value`` is everything after ``tel:``."""

    value: str
    scheme: str = "tel"

    # Explicit __init__: mypyc compiles it natively; the dataclass-generated one runs
    # interpreted (~4x slower per object).
    def __init__(self, value: str, scheme: str = "tel") -> None:
        self.value = value
        self.scheme = scheme

    @property
    def number(self) -> str:
        return self.value.partition(";")[0]

    @property
    def params(self) -> dict[str, str | None]:
        rest = self.value.partition(";")
        return _parse_params(";" + rest[2]) if rest[1] else {}

    def __str__(self) -> str:
        return f"{self.scheme}:{self.value}"

    def copy(self) -> TelURI:
        return TelURI(self.value, self.scheme)

    def _cmp_key(self) -> tuple[Any, ...]:
        params = {k: unescape(v).lower() if v else v for k, v in self.params.items()}
        return (self.number.translate(_TEL_VISUAL).lower(), tuple(sorted(params.items())))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TelURI):
            return NotImplemented
        return self._cmp_key() == other._cmp_key()

    def __hash__(self) -> int:
        return hash(self._cmp_key())


@dataclass(slots=True, eq=False)
class AbsoluteURI:
    """Any other absolute URI (http:, urn:, isbn: ...), kept opaque."""

    scheme: str
    value: str

    # Explicit __init__: mypyc compiles it natively; the dataclass-generated one runs
    # interpreted (~4x slower per object).
    def __init__(self, scheme: str, value: str) -> None:
        self.scheme = scheme
        self.value = value

    def __str__(self) -> str:
        return f"{self.scheme}:{self.value}"

    def copy(self) -> AbsoluteURI:
        return AbsoluteURI(self.scheme, self.value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AbsoluteURI):
            return NotImplemented
        return self.scheme.lower() == other.scheme.lower() and self.value == other.value

    def __hash__(self) -> int:
        return hash((self.scheme.lower(), self.value))


URI = SipURI | TelURI | AbsoluteURI


def parse_uri(text: str) -> URI:
    """Parse an absolute URI; raises ParseError(400) if it is malformed.

    Any scheme is accepted (unknown ones as :class:`AbsoluteURI`); rejecting
    unsupported schemes with 416 is up to the caller (see ``Request.validate``).
    """
    snap = _SIP_CACHE.get(text)
    if snap is not None:
        return _from_snapshot(snap, text)
    m = _SCHEME_RE.match(text)
    if m is None:
        raise ParseError("Bad URI")
    scheme = m.group(1)
    rest = text[m.end() :]
    lower = scheme.lower()
    if lower == "sip" or lower == "sips":
        return _parse_sip(lower, rest, text)
    if lower == "tel":
        if _TEL_RE.fullmatch(rest) is None:
            raise ParseError("Bad tel URI")
        return TelURI(rest, lower)
    if _ABS_VALUE_RE.fullmatch(rest) is None or _BAD_ESCAPE_RE.search(rest):
        raise ParseError("Bad URI")
    return AbsoluteURI(scheme, rest)


class _SnapshotCache:
    """text -> the SipURI._snapshot() of a valid sip/sips URI, in two generations.

    The same From/To/Contact/Request-URI texts recur on every message of a dialog and
    every refresh of a registration; a hit (checked first thing in parse_uri) skips the
    scheme and URI regexes but still builds a fresh (mutable) SipURI.

    Bounded, since the texts come from the network: when the recent generation is full
    it becomes the older one (the one before is dropped), and a hit in the older one
    moves into the recent one. Texts in use therefore survive a turnover, which a
    cache cleared when full does not give: 10,000 users registering (an AOR and a
    Contact each) cleared a single 16,384-entry dict every few thousand REGISTERs.
    """

    __slots__ = ("recent", "older", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.recent: dict[str, tuple[Any, ...]] = {}
        self.older: dict[str, tuple[Any, ...]] = {}

    def get(self, text: str) -> tuple[Any, ...] | None:
        snap = self.recent.get(text)
        if snap is None:
            snap = self.older.get(text)
            if snap is not None:
                self.put(text, snap)
        return snap

    def put(self, text: str, snap: tuple[Any, ...]) -> None:
        if len(self.recent) >= self.size:
            self.older = self.recent
            self.recent = {}
        self.recent[text] = snap

    def clear(self) -> None:
        self.recent = {}
        self.older = {}

    def __len__(self) -> int:
        return len(self.recent) + len(self.older)


#: At most 2 x 16,384 texts (a few MiB).
_SIP_CACHE: Final = _SnapshotCache(16384)


def _from_snapshot(snap: tuple[Any, ...], text: str) -> SipURI:
    scheme, user, password, host, port, params, headers = snap
    # dict(()) is a generic call, about six times the cost of {}: most URIs have no
    # parameters and almost none has headers.
    uri = SipURI(scheme, user, password, host, port, dict(params) if params else {},
                 dict(headers) if headers else {})
    uri._orig = (snap, text)
    return uri


def _parse_sip(scheme: str, rest: str, text: str) -> SipURI:
    uri = _parse_sip_text(scheme, rest, text)
    _SIP_CACHE.put(text, uri._orig[0])  # type: ignore[index]
    return uri


def _parse_sip_text(scheme: str, rest: str, text: str) -> SipURI:
    m = _SIP_URI_RE.fullmatch(rest)
    if m is None:
        raise ParseError("Bad SIP URI")
    user, password, host, port_s, params_s, headers_s = m.groups()
    port = None
    if port_s is not None:
        port = int(port_s)
        if port > 65535:
            raise ParseError("Bad SIP URI port")
    if host[0] == "[":
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ParseError("Bad IPv6 reference") from None
    headers: dict[str, str] = {}
    if headers_s:
        for item in headers_s.split("&"):
            name, _, value = item.partition("=")
            headers[name] = value
    params = _parse_params(params_s)
    uri = SipURI(scheme, user, password, host, port, params, headers)
    # What uri._snapshot() gives, without the call.
    snap = (scheme, user, password, host, port, tuple(params.items()), tuple(headers.items()))
    uri._orig = (snap, text)
    return uri


def _quote(display: str) -> str:
    return '"' + _NEEDS_QUOTE_ESC_RE.sub(r"\\\1", display) + '"'


@dataclass(slots=True, eq=False)
class NameAddr:
    """``display-name <uri>;params`` (From, To, Contact, Route ... values)."""

    display_name: str | None
    uri: URI
    params: dict[str, str | None] = field(default_factory=dict)

    # Explicit __init__: mypyc compiles it natively; the dataclass-generated one runs
    # interpreted (~4x slower per object).
    def __init__(
        self, display_name: str | None, uri: URI, params: dict[str, str | None] | None = None
    ) -> None:
        self.display_name = display_name
        self.uri = uri
        self.params = {} if params is None else params

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        head = f"<{self.uri}>"
        if self.display_name is not None:
            head = f"{_quote(self.display_name)} {head}"
        return head + _format_params(self.params)

    def copy(self) -> NameAddr:
        return NameAddr(self.display_name, self.uri.copy(), dict(self.params))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NameAddr):
            return NotImplemented
        return (
            self.display_name == other.display_name
            and self.uri == other.uri
            and _norm_params(self.params) == _norm_params(other.params)
        )

    __hash__ = None  # type: ignore[assignment]


def _norm_params(params: dict[str, str | None]) -> dict[str, str | None]:
    return {k.lower(): v for k, v in params.items()}


def _word(text: str) -> bool:
    """Only letters, digits, '-' and '.' (all token characters), for ASCII text."""
    return text.isalnum() or text.replace("-", "").replace(".", "").isalnum()


def parse_params(text: str, pos: int = 0) -> dict[str, str | None]:
    """Parse ``;name=value`` header parameters from ``text[pos:]`` (names lower-cased).

    Values are kept as received (quoted strings keep their quotes).
    """
    params: dict[str, str | None] = {}
    end = len(text)
    if pos >= end:
        return params
    if text[pos] == ";":
        # The common case: ``(;token[=value])*`` with no LWS and no quotes, where
        # plain splits give exactly what the general loop below would. Names and
        # values of letters, digits, '-' and '.' (tag, expires, branch, received ...)
        # are checked with str methods, a fifth of the cost of the regex that checks
        # the rest.
        tail = text[pos + 1 :]
        if tail.isascii():  # (the regex's classes are ASCII)
            checked = False
            for item in tail.split(";"):
                name, eq, value = item.partition("=")
                if not checked and not (_word(name) and (not eq or _word(value))):
                    if not _SIMPLE_PARAMS_RE.fullmatch(text, pos):
                        break
                    checked = True  # the whole tail is valid
                params[name.lower()] = value if eq else None
            else:
                return params
            params = {}
    match = GEN_PARAM_RE.match
    while pos < end:
        m = match(text, pos)
        if m is None:
            if text[pos:].strip(" \t"):
                raise ParseError("Bad header parameters")
            break
        params[m.group(1).lower()] = m.group(2)
        pos = m.end()
    return params


def parse_name_addr(text: str) -> NameAddr:
    """Parse a name-addr or addr-spec value with its header parameters.

    In addr-spec form everything after the first ``;`` is a header parameter
    (RFC 3261 section 20), so such URIs cannot carry ``;``, ``?`` or ``,``.
    """
    if text[:1] == "<":
        # No display name (the usual From/To/Contact form): what _NA_TOKEN_RE
        # would match, found without the regexes.
        end = text.find(">", 1)
        if end > 0:
            inner = text[1:end]
            if "<" not in inner:
                return NameAddr(None, parse_uri(inner), parse_params(text, end + 1))
    m = _NA_QUOTED_RE.match(text)
    if m is not None:
        display: str | None = m.group(1)
        if "\\" in display:  # type: ignore[operator]
            display = _QUOTED_PAIR_RE.sub(r"\1", display)  # type: ignore[arg-type]
    else:
        m = _NA_TOKEN_RE.match(text)
        if m is not None:
            display = m.group(1) or None
        else:
            m = _ADDR_SPEC_RE.match(text)
            if m is None:
                raise ParseError("Bad name-addr")
            spec = m.group(1)
            if "?" in spec or "," in spec:
                raise ParseError("URI with headers must be in name-addr form")
            return NameAddr(None, parse_uri(spec), parse_params(text, m.end()))
    return NameAddr(display, parse_uri(m.group(2)), parse_params(text, m.end()))
