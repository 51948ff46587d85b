"""RFC 3264 offer/answer on top of :mod:`sipcore.sdp`.

Everything here is a pure function from descriptions to descriptions; the
dialog layer decides *when* to offer or answer and keeps the last local and
remote SDP, which is all the state these functions need:

* :func:`build_offer` — an initial offer (or, with ``previous``, a re-offer).
* :func:`answer` — the answer to a remote offer (§6).
* :func:`hold_offer` / :func:`resume_offer` — re-offers changing direction (§8.4).
* :func:`negotiated` — what the media layer needs once both sides are known.

The user agent has one media engine per media type, so :func:`answer` accepts
at most one stream of each type and rejects the rest (port 0), which §6 allows.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from sipcore.sdp import (
    DIRECTIONS,
    Connection,
    MediaDescription,
    Origin,
    RtpMap,
    SessionDescription,
    Timing,
)

__all__ = [
    "DEFAULT_CODECS",
    "OPUS",
    "PCMA",
    "PCMU",
    "TELEPHONE_EVENT",
    "Codec",
    "NegotiatedMedia",
    "answer",
    "answer_direction",
    "build_offer",
    "hold_offer",
    "negotiate_streams",
    "negotiated",
    "resume_offer",
    "update_version",
]

DEFAULT_PTIME = 20

# Encodings that only make sense next to a real codec: a stream whose only
# common format is one of these is useless and gets rejected.
_AUXILIARY = frozenset({"telephone-event", "cn", "red", "ulpfec", "rtx"})


@dataclass(frozen=True, slots=True)
class Codec:
    """A local capability, or (in :class:`NegotiatedMedia`) the peer's codec.

    ``payload_type`` is our preferred number; in an answer the offerer's number
    is used instead (§6.1).  ``channels`` is 1 unless the rtpmap says otherwise.
    """

    name: str
    clock_rate: int
    channels: int = 1
    payload_type: int = 96
    fmtp: str | None = None
    media: str = "audio"

    @property
    def is_auxiliary(self) -> bool:
        return self.name.lower() in _AUXILIARY

    def matches(self, mapped: RtpMap) -> bool:
        # Encoding names are case-insensitive (RFC 4855 §3); a missing channel
        # count means one channel (RFC 8866 §6.6).
        return (
            mapped.encoding.lower() == self.name.lower()
            and mapped.clock_rate == self.clock_rate
            and (mapped.channels or 1) == self.channels
        )

    def rtpmap_value(self, pt: int | str, encoding: str | None = None) -> str:
        value = f"{pt} {encoding or self.name}/{self.clock_rate}"
        # Audio rtpmaps always carry the channel count when it is not 1;
        # opus is always written /2 per RFC 7587 §7.
        if self.channels != 1:
            value += f"/{self.channels}"
        return value


PCMU = Codec("PCMU", 8000, 1, 0)
PCMA = Codec("PCMA", 8000, 1, 8)
OPUS = Codec("opus", 48000, 2, 111, "minptime=10;useinbandfec=1")
TELEPHONE_EVENT = Codec("telephone-event", 8000, 1, 101, "0-16")
DEFAULT_CODECS: tuple[Codec, ...] = (PCMU, PCMA, OPUS, TELEPHONE_EVENT)


@dataclass(frozen=True, slots=True)
class NegotiatedMedia:
    """The outcome of offer/answer for one stream, as the media layer needs it."""

    index: int  # m-line position
    media: str
    local_port: int
    remote_addr: str
    remote_port: int
    remote_rtcp: tuple[str, int] | None
    codec: Codec  # what we send: the peer's payload type number and fmtp
    telephone_event_pt: int | None
    ptime: int  # packetisation we should send with (the peer's a=ptime)
    send: bool
    recv: bool

    @property
    def payload_type(self) -> int:
        return self.codec.payload_type

    @property
    def clock_rate(self) -> int:
        return self.codec.clock_rate

    @property
    def direction(self) -> str:
        return _direction(self.send, self.recv)


# --------------------------------------------------------------------------- helpers


def _direction(send: bool, recv: bool) -> str:
    if send and recv:
        return "sendrecv"
    if send:
        return "sendonly"
    if recv:
        return "recvonly"
    return "inactive"


def _sends(direction: str) -> bool:
    return direction in ("sendrecv", "sendonly")


def _recvs(direction: str) -> bool:
    return direction in ("sendrecv", "recvonly")


def _check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"not an SDP direction: {direction!r}")


def _stream_direction(sd: SessionDescription, m: MediaDescription) -> str:
    """Effective direction of a stream as its author meant it.

    c=0.0.0.0 (RFC 2543 hold, RFC 3264 §8.4) means the author does not want to
    receive, whatever the direction attribute says.
    """
    direction = sd.effective_direction(m)
    if sd.is_old_style_hold(m):
        direction = _direction(_sends(direction), False)
    return direction


def answer_direction(offered: str, wanted: str) -> str:
    """RFC 3264 §6.1 direction table: we can only send if the offerer receives
    and only receive if the offerer sends."""
    _check_direction(offered)
    _check_direction(wanted)
    return _direction(_sends(wanted) and _recvs(offered), _recvs(wanted) and _sends(offered))


def _addrtype(addr: str) -> str:
    try:
        return "IP6" if ipaddress.ip_address(addr).version == 6 else "IP4"
    except ValueError:
        return "IP4"  # a host name; IP4 is what every peer assumes for those


def _new_origin(local_addr: str, session_id: str | None, username: str) -> Origin:
    # RFC 8866 §5.2 suggests an NTP timestamp; a random 62-bit number is just
    # as unique and does not leak the clock.
    sess_id = session_id if session_id is not None else str(secrets.randbits(62))
    return Origin(username, sess_id, 1, "IN", _addrtype(local_addr), local_addr)


def _skeleton(origin: Origin, local_addr: str, session_name: str) -> SessionDescription:
    return SessionDescription(
        origin=origin,
        session_name=session_name,
        connection=Connection("IN", _addrtype(local_addr), local_addr),
        timing=[Timing(0, 0)],
    )


def _port_for(local_port: int | Mapping[str, int], media: str, nth: int) -> int | None:
    if isinstance(local_port, Mapping):
        return local_port.get(media)
    # A single port is for the first stream; further streams take the next
    # even ports, leaving the odd one after each for RTCP (RFC 3550 §11).
    return local_port + 2 * nth


def update_version(previous: SessionDescription | None, candidate: SessionDescription) -> None:
    """Give ``candidate`` the origin of ``previous`` with the right version.

    RFC 3264 §8: all o= fields stay as they were except the version, which goes
    up by exactly one when anything in the description changed and stays put
    when nothing did (so an unchanged re-offer/answer is recognisably so).
    Modifies ``candidate`` in place.
    """
    if previous is None:
        return
    candidate.origin = replace(previous.origin)
    if candidate != previous:
        candidate.origin.sess_version = previous.origin.sess_version + 1


def _media_line(
    media: str,
    port: int,
    proto: str,
    formats: Sequence[tuple[str, Codec, str]],
    direction: str,
    ptime: int | None,
) -> MediaDescription:
    """An m= section listing ``(pt, codec, encoding spelling)`` in order."""
    m = MediaDescription(media, port, proto, [pt for pt, _, _ in formats])
    for pt, codec, spelling in formats:
        # rtpmap even for static types: it costs nothing and some peers ignore
        # static assignments they do not recognise.
        m.add_attribute("rtpmap", codec.rtpmap_value(pt, spelling))
        if codec.fmtp:
            m.add_attribute("fmtp", f"{pt} {codec.fmtp}")
    if ptime:
        m.add_attribute("ptime", str(ptime))
    # Always explicit, even for the sendrecv default: several deployed stacks
    # keep the previous direction when the attribute is missing in a re-offer.
    m.add_attribute(direction)
    return m


def _rejected(offered: MediaDescription) -> MediaDescription:
    # §6: a rejected stream keeps media type, proto and at least one of the
    # offered formats, with port 0; nothing else is needed.
    return MediaDescription(offered.media, 0, offered.proto, list(offered.formats) or ["0"])


# --------------------------------------------------------------------------- offer


def build_offer(
    capabilities: Iterable[Codec],
    local_addr: str,
    local_port: int | Mapping[str, int],
    direction: str = "sendrecv",
    *,
    ptime: int | None = DEFAULT_PTIME,
    proto: str = "RTP/AVP",
    previous: SessionDescription | None = None,
    session_id: str | None = None,
    username: str = "-",
    session_name: str = "-",
) -> SessionDescription:
    """An offer with one m= line per media type in ``capabilities`` (first-seen order).

    Codecs are listed in capability order with their preferred payload types.
    With ``previous`` (our last SDP in this session) this is a re-offer: the
    origin is kept, the version follows :func:`update_version`, and m= lines
    beyond those we now offer are kept disabled (port 0) because §8 forbids
    removing m= lines.
    """
    _check_direction(direction)
    by_media: dict[str, list[Codec]] = {}
    for codec in capabilities:
        by_media.setdefault(codec.media, []).append(codec)

    sd = _skeleton(_new_origin(local_addr, session_id, username), local_addr, session_name)
    for nth, (media, codecs) in enumerate(by_media.items()):
        port = _port_for(local_port, media, nth)
        if port is None:
            continue
        formats = [(str(c.payload_type), c, c.name) for c in codecs]
        sd.media.append(
            _media_line(media, port, proto, formats, direction, ptime if media == "audio" else None)
        )
    if previous is not None:
        for old in previous.media[len(sd.media) :]:
            sd.media.append(_rejected(old))
    update_version(previous, sd)
    return sd


# --------------------------------------------------------------------------- answer


def _common_formats(
    offered: MediaDescription, capabilities: Sequence[Codec]
) -> list[tuple[str, Codec, str]]:
    """Offered formats we support, in the offerer's order with its numbers (§6.1)."""
    out: list[tuple[str, Codec, str]] = []
    for pt in offered.formats:
        mapped = offered.codec(pt)
        if mapped is None:
            continue  # a dynamic type without rtpmap is unusable
        for codec in capabilities:
            if codec.media == offered.media and codec.matches(mapped):
                out.append((pt, codec, mapped.encoding))
                break
    return out


def answer(
    offer: SessionDescription,
    capabilities: Iterable[Codec],
    local_addr: str,
    local_port: int | Mapping[str, int],
    direction_wanted: str = "sendrecv",
    *,
    ptime: int | None = DEFAULT_PTIME,
    supported_protos: Iterable[str] = ("RTP/AVP",),
    previous: SessionDescription | None = None,
    session_id: str | None = None,
    username: str = "-",
    session_name: str = "-",
) -> SessionDescription:
    """The RFC 3264 §6 answer to ``offer``.

    Same number and order of m= lines; each stream is either accepted with the
    intersection of codecs (offerer's payload types and order, telephone-event
    kept when both sides have it) or rejected with port 0 (unsupported media or
    proto, no common real codec, stream disabled in the offer, or a second
    stream of a type already accepted).  ``previous`` is our last SDP in this
    session, for the o= rules of §8.
    """
    _check_direction(direction_wanted)
    caps = list(capabilities)
    protos = set(supported_protos)
    sd = _skeleton(_new_origin(local_addr, session_id, username), local_addr, session_name)
    accepted: set[str] = set()
    for offered in offer.media:
        port = None
        if not offered.rejected and offered.proto in protos and offered.media not in accepted:
            port = _port_for(local_port, offered.media, len(accepted))
        formats = _common_formats(offered, caps) if port else []
        if not any(not codec.is_auxiliary for _, codec, _ in formats):
            sd.media.append(_rejected(offered))
            continue
        assert port is not None
        accepted.add(offered.media)
        direction = answer_direction(_stream_direction(offer, offered), direction_wanted)
        sd.media.append(
            _media_line(
                offered.media,
                port,
                offered.proto,
                formats,
                direction,
                ptime if offered.media == "audio" else None,
            )
        )
    update_version(previous, sd)
    return sd


# --------------------------------------------------------------------------- hold


def hold_offer(
    previous_local: SessionDescription, remote: SessionDescription | None = None
) -> SessionDescription:
    """Re-offer putting every active stream on hold (RFC 3264 §8.4, RFC 6337 §5).

    Holding means we stop receiving: sendrecv becomes sendonly.  If the peer
    already holds us (our last SDP was recvonly/inactive, or ``remote`` is
    sendonly/inactive/c=0.0.0.0), nobody wants media any more and the stream
    becomes inactive.
    """
    sd = previous_local.copy()
    for i, m in enumerate(sd.media):
        if m.rejected:
            continue
        current = sd.effective_direction(m)
        send = _sends(current)
        if remote is not None and i < len(remote.media):
            send = send and _recvs(_stream_direction(remote, remote.media[i]))
        _set_stream_direction(sd, m, _direction(send, False))
    update_version(previous_local, sd)
    return sd


def resume_offer(
    previous_local: SessionDescription, direction: str = "sendrecv"
) -> SessionDescription:
    """Re-offer taking every active stream off hold (sendrecv by default).

    Offering sendrecv is right even if the peer still holds us: its answer
    will then say sendonly, and :func:`negotiated` works out the rest.
    """
    _check_direction(direction)
    sd = previous_local.copy()
    for m in sd.media:
        if not m.rejected:
            _set_stream_direction(sd, m, direction)
    update_version(previous_local, sd)
    return sd


def _set_stream_direction(sd: SessionDescription, m: MediaDescription, direction: str) -> None:
    # Only touch the m= section if it changes something, so a no-op hold or
    # resume yields an identical description and keeps the o= version (§8).
    if sd.effective_direction(m) != direction:
        m.set_direction(direction)


# --------------------------------------------------------------------------- result


def _negotiate(
    index: int, local: SessionDescription, remote: SessionDescription
) -> NegotiatedMedia | None:
    lm, rm = local.media[index], remote.media[index]
    if lm.rejected or rm.rejected or lm.media != rm.media:
        return None
    addr = remote.stream_address(rm)
    if addr is None:
        return None

    local_codecs = [c for c in (lm.codec(pt) for pt in lm.formats) if c is not None]

    def ours(mapped: RtpMap) -> bool:
        probe = Codec(mapped.encoding, mapped.clock_rate, mapped.channels or 1)
        return any(probe.matches(c) for c in local_codecs)

    # Walk the *remote* list: if the remote SDP is the answer its order is the
    # answerer's preference; if it is the offer, our answer kept its order
    # anyway.  Either way the first entry is "first common in the answer", and
    # the remote's payload type number is the one it expects to receive.
    codec: Codec | None = None
    events: list[tuple[int, int]] = []  # (pt, clock rate)
    for pt in rm.formats:
        mapped = rm.codec(pt)
        if mapped is None or not ours(mapped):
            continue
        name = mapped.encoding.lower()
        if name == "telephone-event":
            events.append((int(pt), mapped.clock_rate))
        elif codec is None and name not in _AUXILIARY:
            codec = Codec(
                mapped.encoding,
                mapped.clock_rate,
                mapped.channels or 1,
                int(pt),
                rm.fmtp.get(pt),
                rm.media,
            )
    if codec is None:
        return None

    # RFC 4733 §2.1: events should use the clock rate of the audio codec;
    # fall back to any (8000 with opus is common in practice).
    event_pt = next((pt for pt, rate in events if rate == codec.clock_rate), None)
    if event_pt is None and events:
        event_pt = events[0][0]

    local_dir = _stream_direction(local, lm)
    remote_dir = _stream_direction(remote, rm)
    return NegotiatedMedia(
        index=index,
        media=rm.media,
        local_port=lm.port,
        remote_addr=addr[0],
        remote_port=addr[1],
        remote_rtcp=remote.rtcp_address(rm),
        codec=codec,
        telephone_event_pt=event_pt,
        ptime=rm.ptime or lm.ptime or DEFAULT_PTIME,
        send=_sends(local_dir) and _recvs(remote_dir),
        recv=_recvs(local_dir) and _sends(remote_dir),
    )


def negotiate_streams(
    local: SessionDescription, remote: SessionDescription
) -> list[NegotiatedMedia | None]:
    """:class:`NegotiatedMedia` per m= line position; None where no media flows
    (rejected stream, no common codec, no address)."""
    return [_negotiate(i, local, remote) for i in range(min(len(local.media), len(remote.media)))]


def negotiated(
    local: SessionDescription, remote: SessionDescription, media: str = "audio"
) -> NegotiatedMedia | None:
    """The first usable stream of type ``media`` once offer and answer are known.

    ``local``/``remote`` are our and the peer's SDP, whichever was the offer.
    """
    for result in negotiate_streams(local, remote):
        if result is not None and result.media == media:
            return result
    return None
