"""SIP requests and responses: parsing, framing, serialisation.

Performance notes (this code is on every hot path): the header block is decoded
and split once; header values stay raw strings and structured views (Via, CSeq,
From/To, Contact ...) are parsed on first access and kept on the ``Headers``
object, which drops a view whenever a field it comes from changes.  Each header
field also keeps its raw line(s) so an unmodified message serialises back byte for
byte (only Content-Length is recomputed from the body).

Structured values returned by the accessors are snapshots; to change a header,
go through ``msg.headers`` (``set``/``replace_first``/``prepend`` ...).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final, final

from mypy_extensions import mypyc_attr

from sipcore.errors import ParseError
from sipcore.headers import Contact, CSeq, Via, parse_int, split_header_list
from sipcore.limits import (
    MAX_CONTACTS,
    MAX_HEADER_LINE,
    MAX_HEADERS,
    MAX_MESSAGE_SIZE,
    MAX_ROUTES,
    MAX_URI_LENGTH,
    MAX_VIAS,
)
from sipcore.status import reason_for
from sipcore.uri import URI, NameAddr, SipURI, parse_name_addr, parse_uri

__all__ = [
    "COMPACT_FORMS",
    "LIST_HEADERS",
    "KNOWN_METHODS",
    "Headers",
    "Message",
    "Request",
    "Response",
    "StreamParser",
    "header_key",
    "make_response",
    "parse",
]

#: Compact header names (RFC 3261 section 7.3.3 and the IANA SIP header registry).
COMPACT_FORMS: Final[dict[str, str]] = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}

#: Headers whose value is a comma-separated list, so that one field may carry
#: several values (RFC 3261 section 7.3.1).  Authorization & co. are *not* here:
#: commas inside them do not separate values.
LIST_HEADERS: Final = frozenset(
    {
        "via",
        "route",
        "record-route",
        "contact",
        "path",
        "service-route",
        "allow",
        "allow-events",
        "supported",
        "require",
        "proxy-require",
        "unsupported",
        "accept",
        "accept-encoding",
        "accept-language",
        "content-encoding",
        "content-language",
        "alert-info",
        "call-info",
        "error-info",
        "in-reply-to",
        "warning",
        "reason",
        "accept-contact",
        "reject-contact",
        "request-disposition",
        "security-client",
        "security-server",
        "security-verify",
    }
)

KNOWN_METHODS: Final = frozenset(
    {
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "REGISTER",
        "OPTIONS",
        "PRACK",
        "SUBSCRIBE",
        "NOTIFY",
        "PUBLISH",
        "INFO",
        "REFER",
        "MESSAGE",
        "UPDATE",
    }
)

# Canonical spelling used in error reasons for missing/duplicated headers.
_PRETTY: Final = {
    "via": "Via",
    "from": "From",
    "to": "To",
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "max-forwards": "Max-Forwards",
    "content-length": "Content-Length",
}
_REQUIRED: Final = ("via", "from", "to", "call-id", "cseq")
_REQUIRED_SET: Final = frozenset(_REQUIRED)
_SINGLE: Final = ("from", "to", "call-id", "cseq", "max-forwards")
_RESPONSE_COPY: Final = frozenset({"via", "from", "to", "call-id", "cseq"})
_RESPONSE_COPY_100: Final = _RESPONSE_COPY | {"timestamp"}
# Caps on list-valued headers: every proxy walks them on each hop, so a request with
# thousands of Vias or Routes is an amplification attack, not a call (sipcore.limits).
_LIST_LIMITS: Final = {
    "via": MAX_VIAS, "route": MAX_ROUTES, "record-route": MAX_ROUTES, "contact": MAX_CONTACTS,
}
# With no commas in list fields and at most this many fields, no cap can be exceeded.
_MIN_LIST_LIMIT: Final = min(_LIST_LIMITS.values())

_TOKEN_RE: Final = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_REQ_LINE_RE: Final = re.compile(r"([^ \t]+)[ \t]+([^ \t]+)[ \t]+([^ \t]+)[ \t]*")
_VERSION_RE = re.compile(r"SIP/([0-9]{1,5})\.([0-9]{1,5})", re.I)
_STATUS_RE: Final = re.compile(r"([0-9]{3})(?: (.*))?", re.S)
_FOLD_RE: Final = re.compile(r"[ \t]*\r\n[ \t]+")

# name as written -> canonical key; filled lazily, bounded so that hostile
# traffic with random header names cannot grow it without limit.
_KEYS: Final[dict[str, str]] = {}
_KEYS_MAX = 4096


def header_key(name: str) -> str:
    """The canonical (lower-case, long-form) key for a header name."""
    try:
        return _KEYS[name]
    except KeyError:
        pass
    low = name.lower()
    key = COMPACT_FORMS.get(low, low)
    if len(_KEYS) < _KEYS_MAX and _TOKEN_RE.fullmatch(name):
        _KEYS[name] = key
    return key


def _checked(name: str, value: object) -> tuple[str, str, str]:
    """(key, name, value) for a field set through the API, or ValueError.

    `value` may be anything with a str() (an int, a Via): annotated `object` so that
    the mypyc-compiled build converts it too rather than refusing it."""
    key = _KEYS.get(name)
    if key is None:
        # Only valid tokens ever enter _KEYS, so a hit needs no regex check.
        if _TOKEN_RE.fullmatch(name) is None:
            raise ValueError(f"invalid header name {name!r}")
        key = header_key(name)
    text = value if type(value) is str else str(value)
    if "\r" in text or "\n" in text:
        raise ValueError("header value must not contain CR or LF")
    return key, name, text


@final
class _Field:
    """One header field: `key` (the name in lower case, long form), `name` as written,
    `value` with folding undone, `raw` line(s) as received or None when created or
    changed locally. Never changed once made: copies of a Headers share them.

    A class rather than a 4-tuple: compiled, reading `f.key` is one load, where a
    typed tuple taken from a list is unboxed (four type checks and reference counts)
    on every step of every header search."""

    __slots__ = ("key", "name", "value", "raw")

    def __init__(self, key: str, name: str, value: str, raw: str | None) -> None:
        self.key = key
        self.name = name
        self.value = value
        self.raw = raw

    def __repr__(self) -> str:
        return f"_Field({self.key!r}, {self.name!r}, {self.value!r}, {self.raw!r})"


class Headers:
    """Ordered, case-insensitive multi-map of header fields.

    The `_v_*` slots keep parsed views of some fields (Message's accessors fill them;
    `_changed` empties those a changed field feeds). Slots rather than a dict: compiled,
    each is one load or store, where a dict lookup took about 200 instructions and a
    REGISTER made about 35 of them."""

    __slots__ = ("_fields", "_v_top_via", "_v_vias", "_v_server_key", "_v_cseq",
                 "_v_call_id", "_v_from", "_v_to", "_v_max_forwards", "_v_contacts",
                 "_v_routes", "_v_record_routes")

    _fields: list[_Field]
    _v_top_via: Via | None
    _v_vias: list[Via] | None
    # sipcore.transaction.keys.server_key's answer (it depends on the top Via only).
    _v_server_key: tuple[Any, ...] | None
    _v_cseq: CSeq | None
    _v_call_id: str | None
    _v_from: NameAddr | None
    _v_to: NameAddr | None
    _v_max_forwards: int | None
    _v_contacts: list[Contact] | None
    _v_routes: list[NameAddr] | None
    _v_record_routes: list[NameAddr] | None

    def __init__(
        self, items: Headers | Mapping[str, str] | Iterable[tuple[str, str]] | None = None
    ) -> None:
        self._fields = []
        self._drop_views()
        if items is None:
            return
        if isinstance(items, Headers):
            self._fields = list(items._fields)
            return
        pairs = items.items() if isinstance(items, Mapping) else items
        for name, value in pairs:
            self.add(name, value)

    # -- reading ---------------------------------------------------------------
    def get(self, name: str, default: str | None = None) -> str | None:
        """The first field's (whole) value."""
        key = _KEYS.get(name) or header_key(name)
        for f in self._fields:
            if f.key == key:
                return f.value
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value; list-valued headers are split on commas (empty items dropped)."""
        key = _KEYS.get(name) or header_key(name)
        if key in LIST_HEADERS:
            out: list[str] = []
            for f in self._fields:
                if f.key == key:
                    value = f.value
                    if "," in value:
                        out.extend(v for v in split_header_list(value) if v)
                    else:
                        # What split_header_list gives for a comma-free value.
                        value = value.strip(" \t")
                        if value:
                            out.append(value)
            return out
        return [f.value for f in self._fields if f.key == key]

    def _values_strict(self, key: str) -> list[str]:
        # Like get_all, but an empty list element is malformed input.
        out: list[str] = []
        for f in self._fields:
            if f.key == key:
                value = f.value
                if "," not in value:
                    value = value.strip(" \t")
                    if not value:
                        raise ParseError(f"Empty {_PRETTY.get(key, key)} value")
                    out.append(value)
                    continue
                for v in split_header_list(value):
                    if not v:
                        raise ParseError(f"Empty {_PRETTY.get(key, key)} value")
                    out.append(v)
        return out

    def _first(self, key: str) -> str | None:
        # get() for a canonical key: the accessors' fast path.
        for f in self._fields:
            if f.key == key:
                return f.value
        return None

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = _KEYS.get(name) or header_key(name)
        for f in self._fields:
            if f.key == key:
                return True
        return False

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((f.name, f.value) for f in self._fields)

    def items(self) -> list[tuple[str, str]]:
        return [(f.name, f.value) for f in self._fields]

    def __len__(self) -> int:
        return len(self._fields)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        mine = [(f.key, f.value) for f in self._fields]
        return mine == [(f.key, f.value) for f in other._fields]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"

    def copy(self) -> Headers:
        return Headers(self)

    # -- writing ---------------------------------------------------------------
    def _drop_views(self) -> None:
        self._v_top_via = None
        self._v_vias = None
        self._v_server_key = None
        self._v_cseq = None
        self._v_call_id = None
        self._v_from = None
        self._v_to = None
        self._v_max_forwards = None
        self._v_contacts = None
        self._v_routes = None
        self._v_record_routes = None

    def _changed(self, key: str | None = None) -> None:
        # Only the structured views built from `key` go stale: a proxy that stamps
        # the top Via (or pops a Route) keeps its parsed From/To/CSeq/Contact.
        if key is None:
            self._drop_views()
        elif key == "via":
            self._v_top_via = None
            self._v_vias = None
            self._v_server_key = None
        elif key == "route":
            self._v_routes = None
        elif key == "record-route":
            self._v_record_routes = None
        elif key == "contact":
            self._v_contacts = None
        elif key == "cseq":
            self._v_cseq = None
        elif key == "call-id":
            self._v_call_id = None
        elif key == "from":
            self._v_from = None
        elif key == "to":
            self._v_to = None
        elif key == "max-forwards":
            self._v_max_forwards = None

    def add(self, name: str, value: object) -> None:
        """Append a field."""
        key, name, text = _checked(name, value)
        self._fields.append(_Field(key, name, text, None))
        self._changed(key)

    def prepend(self, name: str, value: object) -> None:
        """Insert a field before the first field of that name (or at the top)."""
        key, name, text = _checked(name, value)
        fields = self._fields
        pos = next((i for i, f in enumerate(fields) if f.key == key), 0)
        fields.insert(pos, _Field(key, name, text, None))
        self._changed(key)

    def set(self, name: str, value: object) -> None:
        """Replace every field of that name with one field, kept in the first's place."""
        key, name, text = _checked(name, value)
        new = _Field(key, name, text, None)
        fields: list[_Field] = []
        placed = False
        for f in self._fields:
            if f.key == key:
                if not placed:
                    fields.append(new)
                    placed = True
            else:
                fields.append(f)
        if not placed:
            fields.append(new)
        self._fields = fields
        self._changed(key)

    def remove(self, name: str) -> None:
        """Remove every field of that name (no error if there is none)."""
        key = header_key(name)
        self._fields = [f for f in self._fields if f.key != key]
        self._changed(key)

    def __delitem__(self, name: str) -> None:
        self.remove(name)

    def pop_first(self, name: str) -> str | None:
        """Remove and return the first *value*, splitting a combined list field."""
        key = header_key(name)
        fields = self._fields
        for i, f in enumerate(fields):
            if f.key == key:
                self._changed(key)
                if key in LIST_HEADERS and "," in f.value:
                    items = split_header_list(f.value)
                    if len(items) > 1:
                        fields[i] = _Field(key, f.name, ", ".join(items[1:]), None)
                        return items[0]
                del fields[i]
                return f.value
        return None

    def replace_first(self, name: str, value: object) -> None:
        """Replace the first *value* (e.g. the top Via), or add the field if absent."""
        key, name, text = _checked(name, value)
        fields = self._fields
        for i, f in enumerate(fields):
            if f.key == key:
                if key in LIST_HEADERS and "," in f.value:
                    items = split_header_list(f.value)
                    items[0] = text
                    text = ", ".join(items)
                fields[i] = _Field(key, f.name, text, None)
                self._changed(key)
                return
        self.add(name, text)


def _as_headers(headers: Any) -> Headers:
    if headers is None:
        return Headers()
    if isinstance(headers, Headers):
        return headers
    return Headers(headers)


# SentResponse (sipcore/transaction/sent.py) subclasses Response.
@mypyc_attr(allow_interpreted_subclasses=True)
class Message:
    """Common part of requests and responses."""

    __slots__ = ("_headers", "_body", "version")

    _headers: Headers
    _body: bytes
    version: str

    # Properties, not plain attributes, so that SentResponse can override them
    # (mypyc binds attribute access statically; property access is virtual).
    @property
    def headers(self) -> Headers:
        return self._headers

    @headers.setter
    def headers(self, value: Headers) -> None:
        self._headers = value

    @property
    def body(self) -> bytes:
        return self._body

    @body.setter
    def body(self, value: bytes) -> None:
        self._body = value

    # -- structured accessors (lazy, cached, raise ParseError) ------------------
    def _require(self, key: str) -> str:
        value = self.headers._first(key)
        if value is None:
            raise ParseError(f"Missing {_PRETTY.get(key, key)} header")
        return value

    @property
    def vias(self) -> list[Via]:
        headers = self.headers
        vias = headers._v_vias
        if vias is None:
            values = headers._values_strict("via")
            top = headers._v_top_via
            if top is not None and values:
                # The top value was parsed already (every message needs it first).
                vias = [top]
                vias.extend(Via.parse(v) for v in values[1:])
            else:
                vias = [Via.parse(v) for v in values]
            headers._v_vias = vias
        return vias

    @property
    def top_via(self) -> Via:
        headers = self.headers
        via = headers._v_top_via
        if via is None:
            vias = headers._v_vias
            if vias is not None:
                if not vias:
                    raise ParseError("Missing Via header")
                via = vias[0]
            else:
                value = headers._first("via")
                if value is None:
                    raise ParseError("Missing Via header")
                if "," in value:
                    value = split_header_list(value)[0]
                via = Via.parse(value)
            headers._v_top_via = via
        return via

    @property
    def cseq(self) -> CSeq:
        headers = self.headers
        cseq = headers._v_cseq
        if cseq is None:
            value = headers._first("cseq")
            if value is None:
                raise ParseError("Missing CSeq header")
            cseq = headers._v_cseq = CSeq.parse(value)
        return cseq

    @property
    def call_id(self) -> str:
        headers = self.headers
        value = headers._v_call_id
        if value is None:
            value = headers._first("call-id")
            if value is None:
                raise ParseError("Missing Call-ID header")
            if not value or " " in value or "\t" in value:
                raise ParseError("Bad Call-ID")
            headers._v_call_id = value
        return value

    @property
    def from_(self) -> NameAddr:
        headers = self.headers
        value = headers._v_from
        if value is None:
            text = headers._first("from")
            if text is None:
                raise ParseError("Missing From header")
            value = headers._v_from = parse_name_addr(text)
        return value

    @property
    def to(self) -> NameAddr:
        headers = self.headers
        value = headers._v_to
        if value is None:
            text = headers._first("to")
            if text is None:
                raise ParseError("Missing To header")
            value = headers._v_to = parse_name_addr(text)
        return value

    @property
    def contacts(self) -> list[Contact]:
        headers = self.headers
        value = headers._v_contacts
        if value is None:
            value = [Contact.parse(v) for v in headers._values_strict("contact")]
            if len(value) > 1 and any(c.is_wildcard for c in value):
                raise ParseError("Wildcard Contact mixed with others")
            headers._v_contacts = value
        return value

    @property
    def max_forwards(self) -> int | None:
        headers = self.headers
        value = headers._v_max_forwards
        if value is None:
            text = headers._first("max-forwards")
            if text is None:
                return None
            value = headers._v_max_forwards = parse_int(text, "Max-Forwards", 255)
        return value

    @property
    def expires(self) -> int | None:
        value = self.headers.get("expires")
        return None if value is None else parse_int(value, "Expires", 2**32 - 1)

    @property
    def routes(self) -> list[NameAddr]:
        headers = self.headers
        value = headers._v_routes
        if value is None:
            value = [parse_name_addr(v) for v in headers._values_strict("route")]
            headers._v_routes = value
        return value

    @property
    def record_routes(self) -> list[NameAddr]:
        headers = self.headers
        value = headers._v_record_routes
        if value is None:
            value = [parse_name_addr(v) for v in headers._values_strict("record-route")]
            headers._v_record_routes = value
        return value

    @property
    def content_type(self) -> str | None:
        return self.headers.get("content-type")

    def set_top_via(self, via: Via) -> None:
        """Write a (modified) top Via back, e.g. after adding received/rport."""
        self.headers.replace_first("Via", str(via))
        # What was just written is what a re-parse would give: keep it, as a copy so
        # that the caller's object stays theirs (accessors return snapshots).
        self.headers._v_top_via = via.copy()

    # -- validation --------------------------------------------------------------
    def _validate_common(self) -> None:
        headers = self.headers
        fields = headers._fields
        # Upper bounds on list values (fields + commas); exact counts only when over a
        # cap.  Usually no list field has a comma and there are fewer fields than the
        # smallest cap, so nothing can be over one and no counting is needed.
        values: dict[str, int] | None = None
        for f in fields:
            if f.key in _LIST_LIMITS and "," in f.value:
                values = {}
                for g in fields:
                    if g.key in _LIST_LIMITS:
                        values[g.key] = values.get(g.key, 0) + g.value.count(",") + 1
                break
        keys = [f.key for f in fields]
        if values is None and len(keys) > _MIN_LIST_LIMIT:
            values = {}
            for key in keys:
                if key in _LIST_LIMITS:
                    values[key] = values.get(key, 0) + 1
        if values:
            for key, count in values.items():
                limit = _LIST_LIMITS[key]
                if count > limit and len(headers.get_all(key)) > limit:
                    name = {"route": "Route", "record-route": "Record-Route"}.get(key)
                    name = name or _PRETTY.get(key) or key.title()
                    raise ParseError(f"Too Many {name} Values (limit {limit})")
        # One set, built in C, answers both checks for the usual message; the loops
        # only run to name what is missing, or when some header repeats.
        present = set(keys)
        if not _REQUIRED_SET <= present:
            for key in _REQUIRED:
                if key not in present:
                    raise ParseError(f"Missing {_PRETTY[key]} header")
        if len(present) != len(keys):
            for key in _SINGLE:
                if keys.count(key) > 1:
                    raise ParseError(f"Multiple {_PRETTY[key]} headers")
        # Parse (and cache) what every server needs, so errors surface here.
        _ = (self.cseq, self.top_via, self.from_, self.to, self.call_id, self.max_forwards)

    def validate(self) -> None:
        raise NotImplementedError

    # -- serialisation -------------------------------------------------------------
    def start_line(self) -> str:
        raise NotImplementedError

    def serialise(self) -> bytes:
        body = self.body
        blen = str(len(body))
        # The pieces of every line go into one list for one join: a field added or
        # changed here (no raw text) costs no "name: value" string of its own. (Called
        # as `parts.append`: compiled, that is a direct list append, where a bound
        # method kept in a local is a generic call.)
        parts = [self.start_line()]
        have_cl = False
        for f in self.headers._fields:
            key, value, raw = f.key, f.value, f.raw
            if key == "content-length":
                if have_cl:
                    continue  # a duplicate would be a framing error downstream
                have_cl = True
                if raw is not None and value == blen:
                    parts.append("\r\n")
                    parts.append(raw)
                    continue
                value = blen
            elif raw is not None:
                parts.append("\r\n")
                parts.append(raw)
                continue
            parts.append("\r\n")
            parts.append(f.name)
            parts.append(": ")
            parts.append(value)
        if not have_cl:
            parts.append("\r\nContent-Length: ")
            parts.append(blen)
        parts.append("\r\n\r\n")
        return "".join(parts).encode("utf-8", "surrogateescape") + body

    def __bytes__(self) -> bytes:
        return self.serialise()

    def _cmp_headers(self) -> list[tuple[str, str]]:
        return [(f.key, f.value) for f in self.headers._fields if f.key != "content-length"]

    __hash__ = None  # type: ignore[assignment]


class Request(Message):
    __slots__ = ("method", "uri")

    method: str
    uri: URI

    def __init__(
        self,
        method: str,
        uri: URI | str,
        headers: Headers | Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        body: bytes = b"",
        version: str = "SIP/2.0",
    ) -> None:
        self.method = method
        self.uri = parse_uri(uri) if isinstance(uri, str) else uri
        self.headers = _as_headers(headers)
        # bytes(x) is a generic call from compiled code: copy only what
        # is not bytes already (a bytearray, a memoryview).
        self.body = body if type(body) is bytes else bytes(body)
        self.version = version

    def start_line(self) -> str:
        return f"{self.method} {self.uri} {self.version}"

    def validate(self, schemes: Iterable[str] | None = None) -> None:
        """Check what a server needs before processing; raise ParseError if not.

        ``schemes``, when given, lists the Request-URI schemes the caller serves;
        any other scheme gives 416 (RFC 3261 section 8.2.2.1).  parse() calls this
        without ``schemes`` because a parser must accept unknown schemes (RFC 4475
        section 3.3.2).
        """
        if schemes is not None and self.uri.scheme.lower() not in schemes:
            raise ParseError("Unsupported URI Scheme", 416)
        self._validate_common()
        if self.cseq.method != self.method:
            # RFC 4475 3.1.2.18: 501 is better for unknown methods.
            status = 400 if self.method in KNOWN_METHODS else 501
            raise ParseError("CSeq Method Mismatch", status)
        if isinstance(self.uri, SipURI) and self.uri.headers:
            # RFC 3261 19.1.1: headers are not allowed in a Request-URI.
            raise ParseError("Headers in Request-URI")

    def copy(self) -> Request:
        return Request(self.method, self.uri.copy(), self.headers.copy(), self.body, self.version)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Request):
            return NotImplemented
        return (
            self.method == other.method
            and self.uri == other.uri
            and self.version == other.version
            and self.body == other.body
            and self._cmp_headers() == other._cmp_headers()
        )

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


# SentResponse (sipcore/transaction/sent.py) subclasses Response.
@mypyc_attr(allow_interpreted_subclasses=True)
class Response(Message):
    __slots__ = ("status", "reason")

    status: int
    reason: str

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: Headers | Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        body: bytes = b"",
        version: str = "SIP/2.0",
    ) -> None:
        self.status = status
        self.reason = reason_for(status) if reason is None else reason
        self.headers = _as_headers(headers)
        self.body = body if type(body) is bytes else bytes(body)  # as in Request
        self.version = version

    def start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    def validate(self) -> None:
        """Check the headers a client needs to match and process a response."""
        self._validate_common()

    def copy(self) -> Response:
        return Response(self.status, self.reason, self.headers.copy(), self.body, self.version)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Response):
            return NotImplemented
        return (
            self.status == other.status
            and self.reason == other.reason
            and self.version == other.version
            and self.body == other.body
            and self._cmp_headers() == other._cmp_headers()
        )

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


# --- parsing -------------------------------------------------------------------


def _parse_start_line(line: str, headers: Headers) -> Request | Response:
    if line[:4].upper() == "SIP/":
        version, _, rest = line.partition(" ")
        _check_version(version)
        m = _STATUS_RE.fullmatch(rest)
        if m is None:
            raise ParseError("Bad Status-Line")
        status = int(m.group(1))
        if status < 100:
            raise ParseError("Bad Status-Line")
        return Response(status, m.group(2) or "", headers)
    parts = line.split(" ")
    if (
        len(parts) == 3
        and parts[2] == "SIP/2.0"
        and parts[0] in KNOWN_METHODS
        and parts[1]
        and "\t" not in line
    ):
        # The usual line: exactly what the regex and checks below would accept.
        method, uri_text = parts[0], parts[1]
    else:
        m = _REQ_LINE_RE.fullmatch(line)
        if m is None:
            raise ParseError("Bad Request-Line")
        method, uri_text, version = m.groups()
        if _TOKEN_RE.fullmatch(method) is None:
            raise ParseError("Bad Method")
        _check_version(version)
    if len(uri_text) > MAX_URI_LENGTH:
        raise ParseError("Request-URI Too Long", 414)
    return Request(method, parse_uri(uri_text), headers)


def _check_version(version: str) -> None:
    if version == "SIP/2.0":
        return
    m = _VERSION_RE.fullmatch(version)
    if m is None:
        raise ParseError("Bad SIP-Version")
    if (int(m.group(1)), int(m.group(2))) != (2, 0):
        raise ParseError("Version Not Supported", 505)


def _parse_head(head_bytes: bytes) -> tuple[Request | Response, int | None]:
    """Parse start line + header block (no trailing blank line)."""
    head = head_bytes.decode("utf-8", "surrogateescape")
    lines = head.split("\r\n")
    n = len(lines)
    if head.count("\n") != n - 1 or head.count("\r") != n - 1:
        raise ParseError("Bare CR or LF in header")
    headers = Headers()
    msg = _parse_start_line(lines[0], headers)
    raw_lines = lines
    folded = "\r\n " in head or "\r\n\t" in head
    if folded:
        raw_lines = [lines[0]]
        for line in lines[1:]:
            if line[:1] in (" ", "\t"):
                if len(raw_lines) == 1:
                    raise ParseError("Continuation line before first header")
                raw_lines[-1] += "\r\n" + line
            else:
                raw_lines.append(line)
    if len(raw_lines) - 1 > MAX_HEADERS:
        raise ParseError("Too Many Headers")
    fields: list[_Field] = []
    keys = _KEYS
    clen: str | None = None
    # No line can be longer than the whole block: then skip the per-line check.
    check_len = len(head) > MAX_HEADER_LINE
    for i in range(1, len(raw_lines)):
        raw = raw_lines[i]
        colon = raw.find(":")
        if colon <= 0:
            raise ParseError("Empty header name" if colon == 0 else "Header without colon")
        if check_len and len(raw) > MAX_HEADER_LINE:
            raise ParseError("Header Line Too Long")
        name = raw[:colon]
        key = keys.get(name)
        if key is None:
            name = name.rstrip(" \t")
            if _TOKEN_RE.fullmatch(name) is None:
                raise ParseError("Bad header name")
            key = header_key(name)
        # Only a folded line holds a CR (the bare CR/LF check above): unfold it.
        if folded and "\r" in raw:
            value = _FOLD_RE.sub(" ", raw[colon + 1 :]).strip(" \t")
        else:
            # The value without the spaces and tabs around it, cut out in one slice
            # (partition and strip made four strings and a tuple per line).
            start = colon + 1
            end = len(raw)
            while start < end and (raw[start] == " " or raw[start] == "\t"):
                start += 1
            while end > start and (raw[end - 1] == " " or raw[end - 1] == "\t"):
                end -= 1
            value = raw[start:end]
        if key == "content-length":
            if clen is not None:
                raise ParseError("Multiple Content-Length headers")
            clen = value
        fields.append(_Field(key, name, value, raw))  # a direct list append when compiled
    headers._fields = fields
    return msg, (None if clen is None else _content_length(clen))


def _content_length(value: str) -> int:
    return parse_int(value, "Content-Length", 2**31)


def _validated(msg: Request | Response) -> Request | Response:
    try:
        msg.validate()
    except ParseError as e:
        e.message = msg
        raise
    return msg


def parse(data: bytes, *, validate: bool = True) -> Request | Response:
    """Parse one whole message, e.g. a UDP datagram (RFC 3261 section 18.3).

    Without Content-Length the rest of the datagram is the body; octets past
    Content-Length are discarded; a shorter body is a ParseError.  With
    ``validate`` (the default) the mandatory headers are checked too
    (see ``Request.validate``/``Response.validate``).
    """
    if len(data) > MAX_MESSAGE_SIZE:
        raise ParseError("Message Too Large", 513)
    start = 0
    # Stray CRLFs before the start line (keep-alives, RFC 3261 7.5) are ignored.
    while data[start : start + 2] == b"\r\n":
        start += 2
    end = data.find(b"\r\n\r\n", start)
    if end >= 0:
        body_start = end + 4
    elif data.endswith(b"\r\n") and len(data) - start > 2:
        end, body_start = len(data) - 2, len(data)
    else:
        raise ParseError("Incomplete message" if data[start:] else "Empty message")
    msg, clen = _parse_head(data[start:end])
    body = data[body_start:]
    if clen is not None:
        if clen > len(body):
            raise ParseError("Content-Length larger than body")
        if clen < len(body):
            body = body[:clen]
    msg.body = body
    return _validated(msg) if validate else msg


class StreamParser:
    """Incremental framing for stream transports (TCP/TLS, RFC 3261 section 18.3).

    ``feed()`` returns the messages completed so far.  Content-Length is required;
    CRLF keep-alives (RFC 5626) between messages are skipped.  A framing error
    is unrecoverable: it raises ParseError (with ``.messages`` holding messages
    completed earlier in the same call) and every later ``feed()`` raises again.
    """

    __slots__ = ("max_size", "validate", "_buf", "_scan", "_pending", "_error")

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE, *, validate: bool = True) -> None:
        self.max_size = max_size
        self.validate = validate
        self._buf = bytearray()
        self._scan = 0  # where to resume looking for the end of the header block
        self._pending: tuple[Request | Response, int, int] | None = None
        self._error: ParseError | None = None

    def feed(self, data: bytes) -> list[Request | Response]:
        if self._error is not None:
            raise self._error
        self._buf += data
        out: list[Request | Response] = []
        try:
            while True:
                msg = self._next()
                if msg is None:
                    return out
                out.append(msg)
        except ParseError as e:
            e.messages = out
            self._error = e
            raise

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a returned message."""
        return len(self._buf)

    def _next(self) -> Request | Response | None:
        buf = self._buf
        if self._pending is None:
            i = 0
            n = len(buf)
            while i < n and buf[i] in (13, 10):
                i += 1
            if i:
                del buf[:i]
                self._scan = 0
            if not buf:
                return None
            end = buf.find(b"\r\n\r\n", self._scan)
            if end < 0:
                if len(buf) > self.max_size:
                    raise ParseError("Message Too Large", 513)
                self._scan = max(0, len(buf) - 3)
                return None
            if end + 4 > self.max_size:
                raise ParseError("Message Too Large", 513)
            msg, clen = _parse_head(bytes(buf[:end]))
            if clen is None:
                raise ParseError("Missing Content-Length")
            total = end + 4 + clen
            if total > self.max_size:
                raise ParseError("Message Too Large", 513)
            self._pending = (msg, end + 4, total)
        msg, body_start, total = self._pending
        if len(buf) < total:
            return None
        msg.body = bytes(buf[body_start:total])
        del buf[:total]
        self._pending = None
        self._scan = 0
        return _validated(msg) if self.validate else msg


def make_response(
    request: Request, status: int, reason: str | None = None, to_tag: str | None = None
) -> Response:
    """Build a response to ``request`` per RFC 3261 section 8.2.6.2.

    Via, From, To, Call-ID and CSeq are copied as received (in their order);
    ``to_tag`` is added to To unless it already has a tag; a 100 Trying also
    copies Timestamp.
    """
    req_headers = request.headers
    copy = _RESPONSE_COPY_100 if status == 100 else _RESPONSE_COPY
    fields: list[_Field] = []
    for f in req_headers._fields:
        if f.key in copy:
            if f.key == "to" and to_tag is not None and request.to.tag is None:
                f = _Field("to", f.name, f"{f.value};tag={to_tag}", None)
            fields.append(f)
    headers = Headers()
    headers._fields = fields
    # The Via fields were copied verbatim, so the request's parsed top Via is the
    # response's too: routing the response (§18.2.2) need not parse it again.
    top = req_headers._v_top_via
    if top is not None:
        headers._v_top_via = top.copy()
    return Response(status, reason, headers)
