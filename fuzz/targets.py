"""Fuzz-target bodies shared by the atheris entry points and the pytest replay.

The invariant every check enforces: hostile bytes either parse or raise
`sipcore.errors.ParseError` — never any other exception, because the transport
only catches ParseError (anything else is a traceback in the log at best and a
dead connection at worst). Each ``check_*`` function lets any other exception
propagate, so atheris reports it as a crash and pytest as a failure.

Beyond "parses or ParseError" the checks also touch every structured accessor
(the message layer parses lazily, so a header that passed ``parse()`` can still
blow up later in a role), re-serialise what parsed, and compare whole-buffer
stream parsing with chunked stream parsing (TCP can split anywhere, RFC 3261 §18.3).
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable
from typing import Any

from sipcore.digest import parse_challenge, parse_credentials
from sipcore.errors import ParseError
from sipcore.malformed import error_response_for
from sipcore.message import Message, Request, Response, StreamParser, make_response, parse
from sipcore.sdp import parse_sdp
from sipcore.twisted.transport import Address, response_destination, stamp_received

__all__ = ["check_digest", "check_message", "check_sdp", "CHECKS"]

_SOURCE = Address("UDP", "192.0.2.1", 5060)


def _quiet(fn: Callable[[], Any]) -> Any:
    """Run one lazy accessor: ParseError is an allowed outcome, anything else is not."""
    try:
        return fn()
    except ParseError:
        return None


def _touch_uri(uri: Any) -> None:
    str(uri)
    hash(uri)
    assert uri == uri.copy()
    for name in ("transport", "user_unescaped", "password_unescaped"):
        if hasattr(uri, name):
            getattr(uri, name)
    if hasattr(uri, "host_port"):
        uri.host_port()


def _touch_name_addr(na: Any) -> None:
    _touch_uri(na.uri)
    na.tag  # noqa: B018 - property access is the point
    str(na)
    assert na == na.copy()


def _touch_message(msg: Message) -> None:
    headers = msg.headers
    for name in {name.lower() for name, _value in headers}:
        headers.get(name)
        headers.get_all(name)
    vias = _quiet(lambda: msg.vias) or []
    for via in vias:
        str(via)
        _ = (via.branch, via.received, via.rport, via.maddr, via.sent_by)
        _quiet(lambda v=via: v.ttl)
        _quiet(lambda v=via: response_destination(v))
    _quiet(lambda: msg.top_via)
    _quiet(lambda: str(msg.cseq))
    _quiet(lambda: msg.call_id)
    for get in (lambda: msg.from_, lambda: msg.to):
        na = _quiet(get)
        if na is not None:
            _touch_name_addr(na)
    for contact in _quiet(lambda: msg.contacts) or []:
        str(contact)
        _quiet(lambda c=contact: c.q)
        _quiet(lambda c=contact: c.expires)
        if not contact.is_wildcard:
            _touch_uri(contact.uri)
            contact.display_name  # noqa: B018
    for get_list in (lambda: msg.routes, lambda: msg.record_routes):
        for na in _quiet(get_list) or []:
            _touch_name_addr(na)
    _quiet(lambda: msg.max_forwards)
    _quiet(lambda: msg.expires)
    msg.content_type  # noqa: B018
    for key, parse_auth in (
        ("authorization", parse_credentials),
        ("proxy-authorization", parse_credentials),
        ("www-authenticate", parse_challenge),
        ("proxy-authenticate", parse_challenge),
    ):
        for value in headers.get_all(key):
            _check_auth_value(parse_auth, value)
    if msg.body:
        check_sdp(msg.body)

    wire = msg.serialise()
    copy = msg.copy()
    assert copy.serialise() == wire
    # What we send on must be parseable again or rejected cleanly.
    _quiet(lambda: parse(wire))
    if isinstance(msg, Request):
        _touch_uri(msg.uri)
        # What the transport does to every request it accepts.
        if _quiet(lambda: msg.top_via) is not None:
            stamped = msg.copy()
            _quiet(lambda: stamp_received(stamped, _SOURCE))
            stamped.serialise()
        if _quiet(lambda: (msg.to, msg.cseq)) is not None:
            make_response(msg, 400, "Fuzz").serialise()


def _stream_outcome(chunks: list[bytes]) -> tuple[list[bytes], int | None]:
    parser = StreamParser()
    out: list[bytes] = []
    for chunk in chunks:
        try:
            out.extend(m.serialise() for m in parser.feed(chunk))
        except ParseError as err:
            out.extend(m.serialise() for m in err.messages)
            return out, err.status
    return out, None


def _chunks(data: bytes) -> list[bytes]:
    """A deterministic, data-dependent split of ``data`` (reproducible crashes)."""
    rnd = random.Random(zlib.crc32(data))
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        step = rnd.choice((1, 2, 3, 7, 64, 1500))
        out.append(data[pos : pos + step])
        pos += step
    return out


def check_message(data: bytes) -> None:
    """parse(), StreamParser (whole and chunked) and every accessor on the result."""
    seen: set[bytes] = set()
    try:
        msg = parse(data)
    except ParseError as err:
        # The transport answers every malformed request from the raw bytes.
        response = error_response_for(data, err)
        if response is not None:
            response.serialise()
            assert isinstance(response, Response)
        # Roles may also see messages that failed validation (lazy accessors).
        unvalidated = _quiet(lambda: parse(data, validate=False))
        if unvalidated is not None:
            _touch_message(unvalidated)
    else:
        _touch_message(msg)
        seen.add(msg.serialise())

    whole = _stream_outcome([data])
    chunked = _stream_outcome(_chunks(data))
    # Framing must not depend on how TCP segmented the bytes.
    assert whole == chunked, (whole, chunked)
    for wire in whole[0]:
        if wire not in seen:
            seen.add(wire)
            _touch_message(parse(wire))


def _check_auth_value(parse_auth: Callable[[str], Any], text: str) -> None:
    try:
        value = parse_auth(text)
    except ParseError:
        return
    again = str(value)
    # What we serialise (e.g. a challenge we send) must read back identically.
    assert str(parse_auth(again)) == again, (text, again)


def check_digest(data: bytes) -> None:
    """Authorization / WWW-Authenticate values (RFC 7616, RFC 3261 §25.1)."""
    text = data.decode("utf-8", "surrogateescape")
    _check_auth_value(parse_credentials, text)
    _check_auth_value(parse_challenge, text)


def check_sdp(data: bytes) -> None:
    """parse_sdp() and every accessor; what parsed must serialise and parse again."""
    try:
        sd = parse_sdp(data)
    except ParseError:
        return
    for i, media in enumerate(sd.media):
        _ = (media.rejected, media.rtcp_mux, media.direction)
        for accessor in (
            lambda m=media: m.rtpmap,
            lambda m=media: m.fmtp,
            lambda m=media: m.ptime,
            lambda m=media: m.rtcp,
        ):
            _quiet(accessor)
        for fmt in list(getattr(media, "formats", []))[:8]:
            _quiet(lambda m=media, f=fmt: m.codec(f))
        for accessor in (
            lambda i=i: sd.connection_for(i),
            lambda i=i: sd.stream_address(i),
            lambda i=i: sd.rtcp_address(i),
            lambda i=i: sd.effective_direction(i),
            lambda i=i: sd.is_old_style_hold(i),
        ):
            _quiet(accessor)
    _ = sd.direction
    wire = sd.serialise()
    assert sd.copy().serialise() == wire
    again = parse_sdp(wire)
    assert again.serialise() == wire, (data, wire)


#: Target name (= corpus/crash directory name) -> check.
CHECKS: dict[str, Callable[[bytes], None]] = {
    "message": check_message,
    "sdp": check_sdp,
    "digest": check_digest,
}
