# -*- test-case-name: tests.sipcore.test_digest -*-
"""The generic `scheme auth-param, auth-param, ...` syntax of SIP/HTTP auth headers.

RFC 3261 §25.1 (and RFC 7235 §2.1, which it mirrors) gives every challenge and every
credentials value the same shape::

    challenge    = auth-scheme LWS auth-param *(COMMA auth-param)
    auth-param   = auth-param-name EQUAL ( token / quoted-string )
    quoted-string = SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE
    quoted-pair  = "\\" (%x00-09 / %x0B-0C / %x0E-7F)

This module knows that grammar and nothing about Digest; `sipcore.digest` gives the
parameters their meaning.

Deliberate leniencies (a 400 to a real phone costs more than a loose parser):

- An unquoted value may be any run of visible characters other than `,` `"` and `\\`,
  not only a `token`: some UAs send `uri=sip:bob@b.lab` or base64 nonces unquoted.
- Empty list elements (`a=1,,b=2`, trailing commas) are skipped, as RFC 7230 §7 allows.
- LWS is any mix of SP, HTAB, CR and LF outside quotes (folding is normally undone by
  the message layer already).

Strictness that remains: a parameter name must be a token and appear once
(RFC 7235 §2.1), every parameter needs `=` and a value, quotes must close, control
characters other than HTAB are refused inside quoted strings, and a scheme must be
followed by at least one parameter.
"""

from __future__ import annotations

from collections.abc import Iterable

from sipcore.errors import ParseError

# RFC 3261 §25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")
_LWS = " \t\r\n"
# What may end an unquoted value besides the end of text.
_UNQUOTED_STOP = frozenset(_LWS + ',"\\')


def is_token(text: str) -> bool:
    return bool(text) and all(c in TOKEN_CHARS for c in text)


def _skip_lws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _LWS:
        pos += 1
    return pos


def _read_token(text: str, pos: int) -> tuple[str, int]:
    start = pos
    while pos < len(text) and text[pos] in TOKEN_CHARS:
        pos += 1
    return text[start:pos], pos


def _read_quoted(text: str, pos: int) -> tuple[str, int]:
    """Read a quoted-string starting at the opening quote; return (unescaped, end)."""
    out: list[str] = []
    pos += 1
    while pos < len(text):
        char = text[pos]
        if char == '"':
            return "".join(out), pos + 1
        if char == "\\":
            if pos + 1 >= len(text):
                break
            escaped = text[pos + 1]
            # quoted-pair excludes CR and LF: an escaped line break would let a value
            # smuggle a header boundary.
            if escaped in "\r\n":
                raise ParseError("Line break escaped in quoted string")
            # Nor may it smuggle other control characters past the check below: they
            # could never be quoted again (see `quote`), e.g. when a UAC echoes a
            # challenge's realm/nonce/opaque (RFC 7230 §3.2.6 quoted-pair is VCHAR/WSP).
            if (escaped < " " and escaped != "\t") or escaped == "\x7f":
                raise ParseError("Control character in quoted string")
            out.append(escaped)
            pos += 2
            continue
        if (char < " " and char != "\t") or char == "\x7f":
            raise ParseError("Control character in quoted string")
        out.append(char)
        pos += 1
    raise ParseError("Unterminated quoted string in auth header")


def _read_unquoted(text: str, pos: int) -> tuple[str, int]:
    start = pos
    while pos < len(text) and text[pos] not in _UNQUOTED_STOP:
        if text[pos] < " " or text[pos] == "\x7f":
            raise ParseError("Control character in auth parameter")
        pos += 1
    return text[start:pos], pos


def parse_auth_header(text: str) -> tuple[str, dict[str, str]]:
    """Split one challenge or credentials value into (scheme, params).

    The scheme is returned as written; parameter names are lower-cased (they are
    case-insensitive, RFC 7235 §2.1) and values unquoted. Raises `ParseError` (400).
    """
    pos = _skip_lws(text, 0)
    scheme, pos = _read_token(text, pos)
    if not scheme:
        raise ParseError("Missing auth scheme")
    after_scheme = pos
    pos = _skip_lws(text, pos)
    if pos >= len(text):
        raise ParseError(f"No parameters after auth scheme {scheme[:20]}")
    if pos == after_scheme:
        raise ParseError("Auth scheme not followed by whitespace")

    params: dict[str, str] = {}
    while True:
        pos = _skip_lws(text, pos)
        if pos >= len(text):
            break
        if text[pos] == ",":  # empty list element
            pos += 1
            continue
        name, pos = _read_token(text, pos)
        if not name:
            raise ParseError(f"Bad character {text[pos]!r} in auth parameter name")
        pos = _skip_lws(text, pos)
        if pos >= len(text) or text[pos] != "=":
            raise ParseError(f"Auth parameter {name[:20]} has no value")
        pos = _skip_lws(text, pos + 1)
        if pos < len(text) and text[pos] == '"':
            value, pos = _read_quoted(text, pos)
        else:
            value, pos = _read_unquoted(text, pos)
            if not value:
                raise ParseError(f"Auth parameter {name[:20]} has an empty value")
        key = name.lower()
        if key in params:
            raise ParseError(f"Duplicate auth parameter {key[:20]}")
        params[key] = value
        pos = _skip_lws(text, pos)
        if pos < len(text):
            if text[pos] != ",":
                raise ParseError(f"Expected comma after auth parameter {name[:20]}")
            pos += 1
    if not params:
        raise ParseError(f"No parameters after auth scheme {scheme[:20]}")
    return scheme, params


def quote(value: str) -> str:
    """Serialise `value` as a quoted-string, escaping `"` and `\\`.

    Raises ValueError for CR, LF or other control characters: they cannot be carried in
    a quoted-string, and writing them would inject header lines.
    """
    if any((c < " " and c != "\t") or c == "\x7f" for c in value):
        raise ValueError("control character in auth parameter value")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_auth_header(scheme: str, params: Iterable[tuple[str, str, bool]]) -> str:
    """Build `scheme name=value, ...` from (name, value, quoted) triples.

    An unquoted value that is not a token is quoted anyway, so the output always parses.
    """
    if not is_token(scheme):
        raise ValueError(f"bad auth scheme {scheme!r}")
    parts = []
    for name, value, quoted in params:
        if not is_token(name):
            raise ValueError(f"bad auth parameter name {name!r}")
        rendered = value if (not quoted and is_token(value)) else quote(value)
        parts.append(f"{name}={rendered}")
    return f"{scheme} " + ", ".join(parts)
