"""SDP parsing and serialisation (RFC 8866, which obsoletes RFC 4566).

The model is deliberately lossless for what a SIP user agent meets in practice:
every line of a well-formed description is kept, including attributes and line
types this module does not understand, so that a description can be parsed,
inspected, modified and written back without silently dropping anything a peer
put there.  Serialisation always uses CRLF and the field order of RFC 8866 §5;
input in that order therefore round-trips byte for byte.

Parsing is lenient where real devices are sloppy (LF-only line ends, blank
lines, session-level fields in a non-canonical order, an omitted ``t=``) and
strict where a mistake would make the description unusable (missing ``v=``,
``o=`` or ``s=``, malformed ``o=``/``c=``/``m=``/``b=``/``t=`` lines, bad
numbers).  Every problem with the input is reported as
:class:`sipcore.errors.ParseError`; nothing else escapes :func:`parse_sdp` for
str or bytes input.

Offer/answer logic lives in :mod:`sipcore.offer_answer`; this module knows
only the syntax and a few read-only conveniences (rtpmap, fmtp, ptime,
direction, rtcp, effective connection address).
"""

from __future__ import annotations

import copy
import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from sipcore.errors import ParseError

__all__ = [
    "DIRECTIONS",
    "STATIC_PAYLOAD_TYPES",
    "Bandwidth",
    "Connection",
    "MediaDescription",
    "Origin",
    "RtpMap",
    "Rtcp",
    "SessionDescription",
    "Timing",
    "parse_sdp",
]

#: The four RFC 3264 §5.1 direction attributes.
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
_DEFAULT_DIRECTION = "sendrecv"

# Line types this module models.  Anything else (``y=``/``f=`` from GB28181,
# vendor extensions ...) is kept verbatim in ``extra_lines`` of its level.
_SESSION_ONLY = frozenset("vosueprtz")

# RFC 2543 put the connection address to 0.0.0.0 to hold a call; RFC 3264 §8.4
# asks us to still understand it.  "::" is its occasional IPv6 equivalent.
_HOLD_ADDRESSES = frozenset({"0.0.0.0", "::"})

# SDP separates fields with a single space; tabs and runs of spaces are
# tolerated on input.  str.split() is avoided on purpose: it would also split on
# exotic Unicode whitespace, which is not a separator in SDP.
_FIELD_SEP = re.compile(r"[ \t]+")
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9])?")


class RtpMap(NamedTuple):
    """One ``a=rtpmap`` value: ``<encoding>/<clock rate>[/<channels>]``."""

    encoding: str
    clock_rate: int
    channels: int | None = None  # None when the line omits it (means 1 for audio)


# RFC 3551 tables 4 and 5: payload types usable without an a=rtpmap line.
STATIC_PAYLOAD_TYPES: dict[str, RtpMap] = {
    "0": RtpMap("PCMU", 8000, 1),
    "3": RtpMap("GSM", 8000, 1),
    "4": RtpMap("G723", 8000, 1),
    "5": RtpMap("DVI4", 8000, 1),
    "6": RtpMap("DVI4", 16000, 1),
    "7": RtpMap("LPC", 8000, 1),
    "8": RtpMap("PCMA", 8000, 1),
    "9": RtpMap("G722", 8000, 1),
    "10": RtpMap("L16", 44100, 2),
    "11": RtpMap("L16", 44100, 1),
    "12": RtpMap("QCELP", 8000, 1),
    "13": RtpMap("CN", 8000, 1),
    "14": RtpMap("MPA", 90000, None),
    "15": RtpMap("G728", 8000, 1),
    "16": RtpMap("DVI4", 11025, 1),
    "17": RtpMap("DVI4", 22050, 1),
    "18": RtpMap("G729", 8000, 1),
    "25": RtpMap("CelB", 90000, None),
    "26": RtpMap("JPEG", 90000, None),
    "28": RtpMap("nv", 90000, None),
    "31": RtpMap("H261", 90000, None),
    "32": RtpMap("MPV", 90000, None),
    "33": RtpMap("MP2T", 90000, None),
    "34": RtpMap("H263", 90000, None),
}


def _uint(text: str) -> int | None:
    # int() alone would accept "+5", " 5", "5_000" and non-ASCII digits.
    if text and text.isascii() and text.isdigit():
        return int(text)
    return None


def _fields(value: str) -> list[str]:
    value = value.strip(" \t")
    return _FIELD_SEP.split(value) if value else []


# --------------------------------------------------------------------------- model


@dataclass(slots=True)
class Origin:
    """``o=<username> <sess-id> <sess-version> <nettype> <addrtype> <address>``."""

    username: str = "-"
    # Kept as text: it is only an identifier and some peers send values that do
    # not survive an int round-trip (leading zeros, > 64 bits).
    sess_id: str = "0"
    # An int because RFC 3264 §8 has us increment it.
    sess_version: int = 0
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "0.0.0.0"

    def __str__(self) -> str:
        return (
            f"{self.username} {self.sess_id} {self.sess_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass(slots=True)
class Connection:
    """``c=<nettype> <addrtype> <connection-address>``.

    ``address`` is kept verbatim, including a multicast ``/ttl[/count]`` suffix;
    :attr:`host` strips it.
    """

    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "0.0.0.0"

    @property
    def host(self) -> str:
        return self.address.split("/", 1)[0]

    @property
    def is_hold(self) -> bool:
        """True for the RFC 2543 style hold address (c=IN IP4 0.0.0.0)."""
        return self.host in _HOLD_ADDRESSES

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


@dataclass(slots=True)
class Bandwidth:
    """``b=<bwtype>:<bandwidth>`` (kbit/s for AS/CT, bit/s for TIAS)."""

    bwtype: str
    bandwidth: int

    def __str__(self) -> str:
        return f"{self.bwtype}:{self.bandwidth}"


@dataclass(slots=True)
class Timing:
    """``t=<start> <stop>`` plus its ``r=`` repeat lines (kept verbatim)."""

    start: int = 0
    stop: int = 0
    repeats: list[str] = field(default_factory=list)


class Rtcp(NamedTuple):
    """RFC 3605 ``a=rtcp:<port> [<nettype> <addrtype> <address>]``."""

    port: int
    nettype: str | None = None
    addrtype: str | None = None
    address: str | None = None


Attribute = tuple[str, str | None]


class _AttributeMixin:
    """Ordered attribute list helpers shared by session and media level.

    Attribute names are compared exactly: RFC 8866 does not make them
    case-insensitive and every deployed stack sends them in lower case.
    """

    __slots__ = ()
    attributes: list[Attribute]

    def get_attribute(self, name: str) -> str | None:
        """Value of the first ``a=name``; None if absent *or* valueless."""
        for n, v in self.attributes:
            if n == name:
                return v
        return None

    def get_attributes(self, name: str) -> list[str | None]:
        return [v for n, v in self.attributes if n == name]

    def has_attribute(self, name: str) -> bool:
        return any(n == name for n, _ in self.attributes)

    def add_attribute(self, name: str, value: str | None = None) -> None:
        self.attributes.append((name, value))

    def remove_attribute(self, name: str) -> None:
        self.attributes[:] = [(n, v) for n, v in self.attributes if n != name]

    def set_attribute(self, name: str, value: str | None = None) -> None:
        """Replace every ``a=name`` by one, at the position of the first."""
        self._replace_attributes(lambda n: n == name, (name, value))

    @property
    def direction(self) -> str | None:
        """This level's own direction attribute, or None if it has none.

        Use :meth:`SessionDescription.effective_direction` for the value that
        applies to a stream (media level overrides session level, default
        sendrecv).
        """
        for n, _ in self.attributes:
            if n in DIRECTIONS:
                return n
        return None

    def set_direction(self, direction: str | None) -> None:
        """Set (or with None remove) this level's direction attribute in place."""
        if direction is not None and direction not in DIRECTIONS:
            raise ValueError(f"not an SDP direction: {direction!r}")
        self._replace_attributes(
            lambda n: n in DIRECTIONS, None if direction is None else (direction, None)
        )

    def _replace_attributes(self, match: Callable[[str], bool], new: Attribute | None) -> None:
        # Keeping the position of the replaced attribute keeps re-offers
        # textually close to the previous version, which helps peers that diff.
        out: list[Attribute] = []
        placed = new is None
        for n, v in self.attributes:
            if match(n):
                if new is not None and not placed:
                    out.append(new)
                    placed = True
                continue
            out.append((n, v))
        if new is not None and not placed:
            out.append(new)
        self.attributes[:] = out


@dataclass(slots=True)
class MediaDescription(_AttributeMixin):
    """One ``m=`` section: ``m=<media> <port>[/<number>] <proto> <fmt> ...``."""

    media: str
    port: int
    proto: str
    formats: list[str] = field(default_factory=list)
    number_of_ports: int | None = None
    title: str | None = None  # i=
    connection: Connection | None = None
    # RFC 8866 §5.7 allows several c= lines per media (layered multicast);
    # unicast user agents only use ``connection``, the rest are kept for fidelity.
    extra_connections: list[Connection] = field(default_factory=list)
    bandwidths: list[Bandwidth] = field(default_factory=list)
    key: str | None = None  # k= (obsolete, kept verbatim)
    attributes: list[Attribute] = field(default_factory=list)
    # Lines of unknown type as (letter, value); written after the attributes,
    # which is where the common extensions (GB28181 y=/f=) put them.
    extra_lines: list[tuple[str, str]] = field(default_factory=list)

    @property
    def rejected(self) -> bool:
        """Port 0 means a rejected or disabled stream (RFC 3264 §5.1, §6)."""
        return self.port == 0

    @property
    def rtpmap(self) -> dict[str, RtpMap]:
        """``a=rtpmap`` lines by payload type; malformed ones are skipped.

        Skipping (rather than raising) keeps one odd attribute from making the
        whole description unusable; the line itself is still preserved.
        """
        out: dict[str, RtpMap] = {}
        for value in self.get_attributes("rtpmap"):
            parsed = _parse_rtpmap(value)
            if parsed is not None and parsed[0] not in out:
                out[parsed[0]] = parsed[1]
        return out

    @property
    def fmtp(self) -> dict[str, str]:
        """``a=fmtp`` parameters by payload type (first line per type wins)."""
        out: dict[str, str] = {}
        for value in self.get_attributes("fmtp"):
            if not value:
                continue
            pt, _, params = value.partition(" ")
            if pt and pt not in out:
                out[pt] = params.strip(" \t")
        return out

    @property
    def ptime(self) -> int | None:
        """``a=ptime`` in milliseconds (fractions, which some stacks send, truncated)."""
        value = self.get_attribute("ptime")
        if value is None:
            return None
        whole = value.strip(" \t").split(".", 1)[0]
        n = _uint(whole)
        return n if n else None

    @property
    def rtcp(self) -> Rtcp | None:
        """RFC 3605 ``a=rtcp``; None if absent or malformed."""
        value = self.get_attribute("rtcp")
        if value is None:
            return None
        parts = _fields(value)
        port = _uint(parts[0]) if parts else None
        if port is None or port > 65535:
            return None
        if len(parts) == 4:
            return Rtcp(port, parts[1], parts[2], parts[3])
        return Rtcp(port)

    @property
    def rtcp_mux(self) -> bool:
        return self.has_attribute("rtcp-mux")

    def codec(self, pt: str) -> RtpMap | None:
        """Encoding of payload type ``pt``: its rtpmap, else the RFC 3551 static one."""
        mapped = self.rtpmap.get(pt)
        if mapped is not None:
            return mapped
        return STATIC_PAYLOAD_TYPES.get(pt)

    def lines(self) -> list[str]:
        port = str(self.port)
        if self.number_of_ports is not None:
            port += f"/{self.number_of_ports}"
        m = " ".join([self.media, port, self.proto, *self.formats])
        out = [f"m={m}"]
        if self.title is not None:
            out.append(f"i={self.title}")
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out.extend(f"c={c}" for c in self.extra_connections)
        out.extend(f"b={b}" for b in self.bandwidths)
        if self.key is not None:
            out.append(f"k={self.key}")
        out.extend(_attribute_line(a) for a in self.attributes)
        out.extend(f"{t}={v}" for t, v in self.extra_lines)
        return out


@dataclass(slots=True)
class SessionDescription(_AttributeMixin):
    """A whole SDP body."""

    version: int = 0
    origin: Origin = field(default_factory=Origin)
    session_name: str = "-"  # s=; RFC 8866 recommends "-" when there is none
    info: str | None = None  # i=
    uri: str | None = None  # u=
    emails: list[str] = field(default_factory=list)  # e=
    phones: list[str] = field(default_factory=list)  # p=
    connection: Connection | None = None
    bandwidths: list[Bandwidth] = field(default_factory=list)
    timing: list[Timing] = field(default_factory=list)
    time_zones: str | None = None  # z= (kept verbatim)
    key: str | None = None  # k=
    attributes: list[Attribute] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    extra_lines: list[tuple[str, str]] = field(default_factory=list)

    # -- parse / serialise

    @classmethod
    def parse(cls, data: bytes | str) -> SessionDescription:
        return parse_sdp(data)

    def lines(self) -> list[str]:
        out = [f"v={self.version}", f"o={self.origin}", f"s={self.session_name}"]
        if self.info is not None:
            out.append(f"i={self.info}")
        if self.uri is not None:
            out.append(f"u={self.uri}")
        out.extend(f"e={e}" for e in self.emails)
        out.extend(f"p={p}" for p in self.phones)
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out.extend(f"b={b}" for b in self.bandwidths)
        # t= is mandatory; "t=0 0" (unbounded) is what an omitted one meant.
        for t in self.timing or [Timing()]:
            out.append(f"t={t.start} {t.stop}")
            out.extend(f"r={r}" for r in t.repeats)
        if self.time_zones is not None:
            out.append(f"z={self.time_zones}")
        if self.key is not None:
            out.append(f"k={self.key}")
        out.extend(_attribute_line(a) for a in self.attributes)
        out.extend(f"{t}={v}" for t, v in self.extra_lines)
        for m in self.media:
            out.extend(m.lines())
        return out

    def __str__(self) -> str:
        lines = self.lines()
        for line in lines:
            # A CR or LF inside a value would let a caller (or a value copied
            # from a peer) inject lines; that is a programming error, not input.
            if "\r" in line or "\n" in line or "\x00" in line:
                raise ValueError(f"SDP field contains CR, LF or NUL: {line!r}")
        return "\r\n".join(lines) + "\r\n"

    def serialise(self) -> bytes:
        return str(self).encode("utf-8")

    __bytes__ = serialise

    def copy(self) -> SessionDescription:
        return copy.deepcopy(self)

    # -- per-stream conveniences

    def _media(self, media: MediaDescription | int) -> MediaDescription:
        return self.media[media] if isinstance(media, int) else media

    def connection_for(self, media: MediaDescription | int) -> Connection | None:
        """The c= that applies to a stream: media level, else session level."""
        m = self._media(media)
        return m.connection if m.connection is not None else self.connection

    def stream_address(self, media: MediaDescription | int) -> tuple[str, int] | None:
        """(host, RTP port) to send a stream to; None without any c= line."""
        m = self._media(media)
        conn = self.connection_for(m)
        if conn is None:
            return None
        return conn.host, m.port

    def rtcp_address(self, media: MediaDescription | int) -> tuple[str, int] | None:
        """Where RTCP goes: a=rtcp (RFC 3605), rtcp-mux, else RTP port + 1."""
        m = self._media(media)
        rtp = self.stream_address(m)
        if rtp is None:
            return None
        rtcp = m.rtcp
        if rtcp is not None:
            return (rtcp.address.split("/", 1)[0] if rtcp.address else rtp[0]), rtcp.port
        if m.rtcp_mux:
            return rtp
        return rtp[0], rtp[1] + 1

    def effective_direction(self, media: MediaDescription | int) -> str:
        """Direction attribute in force for a stream (RFC 3264 §5.1)."""
        m = self._media(media)
        return m.direction or self.direction or _DEFAULT_DIRECTION

    def is_old_style_hold(self, media: MediaDescription | int) -> bool:
        """True if the stream's c= is 0.0.0.0, the RFC 2543 way of holding."""
        conn = self.connection_for(media)
        return conn is not None and conn.is_hold


def _attribute_line(attr: Attribute) -> str:
    name, value = attr
    return f"a={name}" if value is None else f"a={name}:{value}"


def _parse_rtpmap(value: str | None) -> tuple[str, RtpMap] | None:
    if not value:
        return None
    pt, _, rest = value.strip(" \t").partition(" ")
    parts = rest.strip(" \t").split("/")
    if not pt or len(parts) not in (2, 3) or not parts[0]:
        return None
    rate = _uint(parts[1])
    if rate is None:
        return None
    channels = None
    if len(parts) == 3:
        channels = _uint(parts[2])
        if channels is None:
            return None
    return pt, RtpMap(parts[0], rate, channels)


# --------------------------------------------------------------------------- parser


def _parse_origin(value: str) -> Origin:
    parts = _fields(value)
    if len(parts) != 6:
        raise ParseError(f"bad o= line: expected 6 fields, got {len(parts)}")
    version = _uint(parts[2])
    if version is None:
        raise ParseError("bad o= line: session version is not a number")
    return Origin(parts[0], parts[1], version, parts[3], parts[4], parts[5])


def _check_host(addrtype: str, host: str) -> bool:
    # A literal must be a valid address; anything else must at least look like
    # a host name (RFC 8866 allows FQDNs in c=).
    if addrtype == "IP4":
        if re.fullmatch(r"[0-9.]+", host):
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                return False
            return True
    elif ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
        return True
    return _HOSTNAME.fullmatch(host) is not None


def _parse_connection(value: str) -> Connection:
    parts = _fields(value)
    if len(parts) != 3:
        raise ParseError(f"bad c= line: expected 3 fields, got {len(parts)}")
    nettype, addrtype, address = parts
    if addrtype not in ("IP4", "IP6"):
        raise ParseError(f"bad c= line: unsupported address type {addrtype[:16]!r}")
    host, *suffix = address.split("/")
    # IP4 multicast carries /ttl[/count], IP6 multicast only /count.
    if len(suffix) > (2 if addrtype == "IP4" else 1) or any(_uint(s) is None for s in suffix):
        raise ParseError("bad c= line: malformed multicast suffix")
    if not _check_host(addrtype, host):
        raise ParseError(f"bad c= line: invalid {addrtype} address {host[:64]!r}")
    return Connection(nettype, addrtype, address)


def _parse_bandwidth(value: str) -> Bandwidth:
    bwtype, sep, amount = value.partition(":")
    bw = _uint(amount)
    if not sep or not bwtype or bw is None:
        raise ParseError("bad b= line: expected <type>:<number>")
    return Bandwidth(bwtype, bw)


def _parse_timing(value: str) -> Timing:
    parts = _fields(value)
    nums = [_uint(p) for p in parts]
    if len(parts) != 2 or nums[0] is None or nums[1] is None:
        raise ParseError("bad t= line: expected <start> <stop>")
    return Timing(nums[0], nums[1])


def _parse_media(value: str) -> MediaDescription:
    parts = _fields(value)
    # RFC 8866 wants at least one format, but rejected streams from some
    # stacks have none; a missing proto is what makes the line meaningless.
    if len(parts) < 3:
        raise ParseError("bad m= line: expected <media> <port> <proto> <fmt> ...")
    media, port_text, proto, *formats = parts
    port_part, sep, count_part = port_text.partition("/")
    port = _uint(port_part)
    if port is None or port > 65535:
        raise ParseError(f"bad m= line: invalid port {port_text[:16]!r}")
    count = None
    if sep:
        count = _uint(count_part)
        if not count:
            raise ParseError(f"bad m= line: invalid number of ports {port_text[:16]!r}")
    if "RTP/" in proto.upper():
        for fmt in formats:
            pt = _uint(fmt)
            if pt is None or pt > 127:
                raise ParseError(f"bad m= line: invalid RTP payload type {fmt[:16]!r}")
    return MediaDescription(media, port, proto, formats, number_of_ports=count)


def _parse_attribute(value: str) -> Attribute:
    name, sep, attr_value = value.partition(":")
    if not name:
        raise ParseError("bad a= line: empty attribute name")
    return name, (attr_value if sep else None)


def _lines(text: str) -> Iterator[tuple[str, str]]:
    for raw in text.split("\n"):
        line = raw[:-1] if raw.endswith("\r") else raw
        if not line:
            continue  # blank lines, including the one after the final CRLF
        if "\r" in line:
            raise ParseError("bare CR inside an SDP line")
        kind = line[0]
        if len(line) < 2 or line[1] != "=" or not ("a" <= kind <= "z"):
            raise ParseError(f"malformed SDP line {line[:32]!r}")
        yield kind, line[2:]


def parse_sdp(data: bytes | str) -> SessionDescription:
    """Parse an SDP body (CRLF or LF line ends) or raise :class:`ParseError`."""
    if isinstance(data, bytes | bytearray | memoryview):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError("SDP is not valid UTF-8") from None
    elif isinstance(data, str):
        text = data
        try:
            # Lone surrogates cannot come off the wire and could not be
            # serialised again; reject them here rather than on the way out.
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ParseError("SDP is not valid UTF-8") from None
    else:
        raise TypeError(f"SDP must be bytes or str, not {type(data).__name__}")
    if "\x00" in text:
        raise ParseError("NUL character in SDP")

    sd = SessionDescription()
    seen: set[str] = set()
    media: MediaDescription | None = None
    first = True

    def once(kind: str, where: set[str], level: str) -> None:
        if kind in where:
            raise ParseError(f"duplicate {kind}= line at {level} level")
        where.add(kind)

    media_seen: set[str] = set()
    for kind, value in _lines(text):
        if first:
            if kind != "v":
                raise ParseError("missing v= line: SDP must start with v=")
            first = False
        if kind == "m":
            media = _parse_media(value)
            sd.media.append(media)
            media_seen = set()
            continue
        if media is not None:
            if kind in _SESSION_ONLY:
                raise ParseError(f"{kind}= line not allowed in a media description")
            if kind == "a":
                media.attributes.append(_parse_attribute(value))
            elif kind == "c":
                conn = _parse_connection(value)
                if media.connection is None:
                    media.connection = conn
                else:
                    media.extra_connections.append(conn)
            elif kind == "b":
                media.bandwidths.append(_parse_bandwidth(value))
            elif kind == "i":
                once(kind, media_seen, "media")
                media.title = value
            elif kind == "k":
                once(kind, media_seen, "media")
                media.key = value
            else:
                media.extra_lines.append((kind, value))
            continue

        if kind == "a":
            sd.attributes.append(_parse_attribute(value))
        elif kind == "v":
            once(kind, seen, "session")
            if value != "0":
                raise ParseError(f"unsupported SDP version {value[:16]!r}")
            sd.version = 0
        elif kind == "o":
            once(kind, seen, "session")
            sd.origin = _parse_origin(value)
        elif kind == "s":
            once(kind, seen, "session")
            sd.session_name = value
        elif kind == "i":
            once(kind, seen, "session")
            sd.info = value
        elif kind == "u":
            once(kind, seen, "session")
            sd.uri = value
        elif kind == "e":
            sd.emails.append(value)
        elif kind == "p":
            sd.phones.append(value)
        elif kind == "c":
            once(kind, seen, "session")
            sd.connection = _parse_connection(value)
        elif kind == "b":
            sd.bandwidths.append(_parse_bandwidth(value))
        elif kind == "t":
            sd.timing.append(_parse_timing(value))
        elif kind == "r":
            if not sd.timing:
                raise ParseError("r= line without a preceding t= line")
            sd.timing[-1].repeats.append(value)
        elif kind == "z":
            once(kind, seen, "session")
            sd.time_zones = value
        elif kind == "k":
            once(kind, seen, "session")
            sd.key = value
        else:
            sd.extra_lines.append((kind, value))

    if first:
        raise ParseError("empty SDP")
    if "o" not in seen:
        raise ParseError("missing o= line")
    if "s" not in seen:
        raise ParseError("missing s= line")
    return sd
