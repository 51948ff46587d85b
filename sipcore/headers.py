"""Structured header values: Via, CSeq, Contact, and comma-list splitting.

Each type has a ``parse(text)`` classmethod raising :class:`ParseError` and a
``__str__`` that serialises it.  Parsed objects are snapshots: changing one does
not change the message it came from; write it back with the message's
``headers`` API (e.g. ``msg.headers.replace_first("Via", str(via))``).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Final

from sipcore.errors import ParseError
from sipcore.limits import MAX_CSEQ
from sipcore.uri import URI, NameAddr, parse_name_addr, parse_params

_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_VIA_RE: Final = re.compile(
    rf"[ \t]*({_TOKEN})[ \t]*/[ \t]*({_TOKEN})[ \t]*/[ \t]*({_TOKEN})[ \t]+"
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9\-.]*)"
    r"(?:[ \t]*:[ \t]*([0-9]{1,5}))?"
)
_SENT_BY_RE = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9\-.]*)(?::([0-9]{1,5}))?")
_CSEQ_RE: Final = re.compile(rf"[ \t]*([0-9]{{1,10}})[ \t]+({_TOKEN})[ \t]*")
_Q_RE: Final = re.compile(r"(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)")


def split_header_list(text: str) -> list[str]:
    """Split a comma-separated header value, honouring quotes and ``<...>``.

    Elements are stripped of surrounding whitespace; empty elements are kept
    (so callers can reject them) except that a value without any comma gives
    exactly one element.
    """
    if "," not in text:
        return [text.strip(" \t")]
    items: list[str] = []
    start = 0
    in_quote = in_angle = False
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if in_quote:
            if c == "\\":
                i += 1
            elif c == '"':
                in_quote = False
        elif c == '"':
            in_quote = True
        elif c == "<":
            in_angle = True
        elif c == ">":
            in_angle = False
        elif c == "," and not in_angle:
            items.append(text[start:i].strip(" \t"))
            start = i + 1
        i += 1
    items.append(text[start:].strip(" \t"))
    return items


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1], flags=re.S)
    return value


def parse_int(text: str, what: str, maximum: int) -> int:
    """A non-negative decimal integer no larger than ``maximum``, else ParseError."""
    text = text.strip(" \t")
    # The regex [0-9]{1,10} without the regex; isascii() because isdigit() alone
    # would take non-ASCII digits such as '²'.
    if not (0 < len(text) <= 10 and text.isascii() and text.isdigit()):
        raise ParseError(f"Bad {what}")
    value = int(text)
    if value > maximum:
        raise ParseError(f"Bad {what}")
    return value


@dataclass(slots=True)
class Via:
    """One Via value: ``SIP/2.0/UDP host:port;branch=...``."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    protocol: str = "SIP/2.0"

    # Explicit __init__: mypyc compiles it natively; the dataclass-generated one runs
    # interpreted (~4x slower per object).
    def __init__(
        self,
        transport: str,
        host: str,
        port: int | None = None,
        params: dict[str, str | None] | None = None,
        protocol: str = "SIP/2.0",
    ) -> None:
        self.transport = transport
        self.host = host
        self.port = port
        self.params = {} if params is None else params
        self.protocol = protocol

    # The parse classmethods here build `Via(...)`, `CSeq(...)`, not `cls(...)`: compiled
    # code then calls the native constructor directly, not generically through the type
    # object (three per REGISTER). None of these classes is subclassed.
    @classmethod
    def parse(cls, text: str) -> Via:
        # The usual form, "SIP/2.0/UDP host:port;params", without the Via regex: the
        # sent-by of a client recurs on every request it sends (see _sent_by). Any
        # doubt goes to the general parser, which also words the error.
        if text.startswith("SIP/2.0/"):
            space = text.find(" ", 8)
            transport = _TRANSPORTS.get(text[8:space]) if space > 8 else None
            if transport is not None:
                semi = text.find(";", space + 1)
                sent_by = text[space + 1 :] if semi < 0 else text[space + 1 : semi]
                hostport = _SENT_BY.get(sent_by)
                if hostport is None:
                    hostport = _sent_by(sent_by)
                if hostport is not None:
                    params = {} if semi < 0 else parse_params(text, semi)
                    _check_via_params(params)
                    return Via(transport, hostport[0], hostport[1], params, "SIP/2.0")
        return cls.parse_general(text)

    @classmethod
    def parse_general(cls, text: str) -> Via:
        """Any Via value the grammar allows (LWS around the slashes and the colon,
        other protocol names and transports): what :meth:`parse` falls back to."""
        m = _VIA_RE.match(text)
        if m is None:
            raise ParseError("Bad Via")
        name, version, transport, host, port_s = m.groups()
        port = None
        if port_s is not None:
            port = int(port_s)
            if port > 65535:
                raise ParseError("Bad Via port")
        if host[0] == "[":
            try:
                ipaddress.IPv6Address(host[1:-1])
            except ValueError:
                raise ParseError("Bad Via host") from None
        params = parse_params(text, m.end())
        _check_via_params(params)
        return Via(transport.upper(), host, port, params, f"{name.upper()}/{version}")

    def __str__(self) -> str:
        # One join over the pieces: no generator object and no f-string per parameter
        # (a Via is formatted for every request a proxy stamps or forwards).
        parts = [self.protocol, "/", self.transport, " ", self.host]
        if self.port is not None:
            parts.append(":")
            parts.append(str(self.port))
        for k, v in self.params.items():
            parts.append(";")
            parts.append(k)
            if v is not None:
                parts.append("=")
                parts.append(v)
        return "".join(parts)

    def _param(self, name: str) -> str | None:
        value = self.params.get(name, False)
        if value is False:
            return None
        return value or ""  # type: ignore[return-value]

    @property
    def branch(self) -> str | None:
        value = self.params.get("branch", False)
        return None if value is False else value or ""  # type: ignore[return-value]

    @property
    def received(self) -> str | None:
        value = self.params.get("received", False)
        return None if value is False else value or ""  # type: ignore[return-value]

    @property
    def rport(self) -> str | None:
        """None if absent, '' if present without a value (RFC 3581 request), else the port."""
        value = self.params.get("rport", False)
        return None if value is False else value or ""  # type: ignore[return-value]

    @property
    def maddr(self) -> str | None:
        value = self.params.get("maddr", False)
        return None if value is False else value or ""  # type: ignore[return-value]

    @property
    def ttl(self) -> int | None:
        value = self.params.get("ttl")
        return None if value is None else int(value)

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return self.host, self.port

    def copy(self) -> Via:
        return Via(self.transport, self.host, self.port, dict(self.params), self.protocol)


def _check_via_params(params: dict[str, str | None]) -> None:
    if "ttl" in params:
        parse_int(params["ttl"] or "", "Via ttl", 255)
    rport = params.get("rport")
    if rport is not None:
        # RFC 3581 §3: response-port = "rport" [EQUAL 1*DIGIT]. Checked here because
        # a response is routed by it (RFC 3261 §18.2.2): int() must not fail later.
        parse_int(rport, "Via rport", 65535)


#: Transports as written -> as kept, for Via.parse's plain form.
_TRANSPORTS: Final = {
    t: t.upper() for u in ("UDP", "TCP", "TLS", "SCTP", "WS", "WSS") for t in (u, u.lower())
}

#: sent-by text -> (host, port), for texts `_sent_by` accepted. Bounded, since the
#: texts come from the network: emptied when full.
_SENT_BY: Final[dict[str, tuple[str, int | None]]] = {}
_SENT_BY_MAX = 4096


def _sent_by(text: str) -> tuple[str, int | None] | None:
    """A valid ``host[:port]`` without LWS, split (and remembered); None for anything
    else, which the general parser then accepts or rejects."""
    m = _SENT_BY_RE.fullmatch(text)
    if m is None:
        return None
    host, port_s = m.groups()
    port = None
    if port_s is not None:
        port = int(port_s)
        if port > 65535:
            return None
    if host[0] == "[":
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return None
    if len(_SENT_BY) >= _SENT_BY_MAX:
        _SENT_BY.clear()
    hostport = (host, port)
    _SENT_BY[text] = hostport
    return hostport


@dataclass(slots=True)
class CSeq:
    number: int
    method: str

    # Explicit __init__: mypyc compiles it natively; the dataclass-generated one runs
    # interpreted (~4x slower per object).
    def __init__(self, number: int, method: str) -> None:
        self.number = number
        self.method = method

    @classmethod
    def parse(cls, text: str) -> CSeq:
        # The usual "1 REGISTER" without the regex (a tenth of its cost); anything
        # else (LWS, tabs, a method not all letters and digits) goes to it.
        # (isascii is the one call here without a compiled primitive: made once.)
        digits, space, method = text.partition(" ")
        if (space and digits.isdigit() and len(digits) <= 10 and method.isalnum()
                and text.isascii()):
            number = int(digits)
            if number <= MAX_CSEQ:
                return CSeq(number, method)
        m = _CSEQ_RE.fullmatch(text)
        if m is None:
            raise ParseError("Bad CSeq")
        number = int(m.group(1))
        if number > MAX_CSEQ:
            raise ParseError("Bad CSeq")
        return CSeq(number, m.group(2))

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


@dataclass(slots=True)
class Contact:
    """A Contact value: ``*`` (``name_addr`` is None) or a name-addr with params."""

    name_addr: NameAddr | None

    # Explicit __init__: mypyc compiles it natively; the dataclass-generated one runs
    # interpreted (~4x slower per object).
    def __init__(self, name_addr: NameAddr | None) -> None:
        self.name_addr = name_addr

    @classmethod
    def parse(cls, text: str) -> Contact:
        if text.strip(" \t") == "*":
            return Contact(None)
        return Contact(parse_name_addr(text))

    @classmethod
    def wildcard(cls) -> Contact:
        return Contact(None)

    @property
    def is_wildcard(self) -> bool:
        return self.name_addr is None

    def _na(self) -> NameAddr:
        if self.name_addr is None:
            raise ParseError("Wildcard Contact has no address")
        return self.name_addr

    @property
    def uri(self) -> URI:
        return self._na().uri

    @property
    def display_name(self) -> str | None:
        return self._na().display_name

    @property
    def params(self) -> dict[str, str | None]:
        return {} if self.name_addr is None else self.name_addr.params

    @property
    def q(self) -> float | None:
        """The q parameter (0..1, RFC 3261 section 20.10), None if absent."""
        value = self.params.get("q")
        if value is None:
            if "q" in self.params:
                raise ParseError("Bad Contact q")
            return None
        value = _unquote(value)
        if _Q_RE.fullmatch(value) is None:
            raise ParseError("Bad Contact q")
        return float(value)

    @property
    def expires(self) -> int | None:
        """The expires parameter in seconds, None if absent."""
        if "expires" not in self.params:
            return None
        value = self.params["expires"]
        if value is None:
            raise ParseError("Bad Contact expires")
        return parse_int(_unquote(value), "Contact expires", 2**32 - 1)

    def __str__(self) -> str:
        return "*" if self.name_addr is None else str(self.name_addr)
