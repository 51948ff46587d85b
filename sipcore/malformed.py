# -*- test-case-name: tests.sipcore.test_malformed -*-
"""Answering requests that failed to parse.

A server must answer a malformed request with the error its `ParseError` carries
(RFC 3261 §8.2, §16.3), but a response can only be routed if the request's Via header
survived. This module salvages the headers a response copies (§8.2.6.2) from the raw
bytes, tolerating whatever else is broken, and builds that response. It is not a second
parser: it never interprets anything but the Via it needs to address the answer.
"""

from __future__ import annotations

import re

from sipcore.errors import ParseError
from sipcore.headers import Via
from sipcore.ids import new_tag
from sipcore.message import Headers, Response

# Long and compact names of the headers a response copies, in the order it carries them.
_COPIED = {
    "via": "Via", "v": "Via",
    "from": "From", "f": "From",
    "to": "To", "t": "To",
    "call-id": "Call-ID", "i": "Call-ID",
    "cseq": "CSeq",
}
_REQUEST_LINE = re.compile(rb"^[A-Za-z!%*_+`'~.-]+ \S")
_HEADER = re.compile(r"^([A-Za-z-]+)[ \t]*:[ \t]*(.*)$")
_TAG = re.compile(r";\s*tag\s*=", re.IGNORECASE)
# Salvage only from the head of the message; a header block larger than this is not
# worth answering (the ParseError for it is 513 anyway, and the Via is near the top).
_SALVAGE_LIMIT = 16384


def _from_parsed(request: object, err: ParseError) -> Response | None:
    """The request's head parsed but failed validation: copy its raw header values."""
    headers = getattr(request, "headers", None)
    if headers is None:
        return None
    raw = b"X / SIP/2.0\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers
    ).encode("utf-8", "surrogateescape")
    return _salvage(raw, err)


def error_response_for(data: bytes, err: ParseError) -> Response | None:
    """Return the response to send for a request that raised `err`, or None.

    None means the bytes are not a request, or carry no usable Via: such input is
    dropped, as no response could reach its sender reliably.
    """
    if not _REQUEST_LINE.match(data):
        return None
    parsed = err.message
    if parsed is not None and not isinstance(parsed, Response):
        salvaged = _from_parsed(parsed, err)
        if salvaged is not None:
            return salvaged
    return _salvage(data, err)


def _salvage(data: bytes, err: ParseError) -> Response | None:
    head = data[:_SALVAGE_LIMIT].split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    text = head.decode("utf-8", "surrogateescape")
    # A bare CR ends a line too: it cannot be copied into a header value (the
    # response would carry an injected line), and RFC 3261 §7.3.1 only knows CRLF.
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")[1:]
    found: dict[str, list[str]] = {}
    for line in lines:
        if line[:1] in (" ", "\t"):
            continue  # a folded continuation: the copied headers rarely fold; skip it
        match = _HEADER.match(line)
        if match is None:
            continue
        name = _COPIED.get(match.group(1).lower())
        if name is not None:
            found.setdefault(name, []).append(match.group(2).strip())
    vias = found.get("Via")
    if not vias:
        return None
    try:
        Via.parse(vias[0].split(",")[0])
    except ParseError:
        return None
    headers = Headers()
    for value in vias:
        headers.add("Via", value)
    for name in ("From", "To", "Call-ID", "CSeq"):
        values = found.get(name)
        if values:
            value = values[0]
            if name == "To" and not _TAG.search(value):
                value = f"{value};tag={new_tag()}"
            headers.add(name, value)
    return Response(err.status, err.reason, headers)
