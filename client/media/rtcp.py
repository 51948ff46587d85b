"""RTCP packets (RFC 3550 §6.4–6.6): SR, RR, SDES, BYE and compound packets, plus the
NTP timestamp helpers and the round-trip-time computation of §6.4.1.

Pure values and bytes. Packet types this module does not model (APP, RTPFB, PSFB, XR)
parse into `RtcpUnknown` and serialise back unchanged, so a compound packet containing
feedback messages still round-trips.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

RTCP_VERSION = 2
HEADER_LEN = 4
REPORT_BLOCK_LEN = 24
SR_SENDER_INFO_LEN = 20
MAX_COUNT = 31  # the 5-bit RC/SC field

PT_SR = 200
PT_RR = 201
PT_SDES = 202
PT_BYE = 203
PT_APP = 204

# SDES item types (RFC 3550 §6.5)
SDES_END = 0
SDES_CNAME = 1
SDES_NAME = 2
SDES_EMAIL = 3
SDES_PHONE = 4
SDES_LOC = 5
SDES_TOOL = 6
SDES_NOTE = 7
SDES_PRIV = 8

# Seconds from the NTP epoch (1900) to the Unix epoch (1970).
NTP_UNIX_OFFSET = 2_208_988_800
NTP_FRAC = 1 << 32
SHORT_NTP_UNITS = 65536  # LSR/DLSR/RTT use 1/65536 s units (the middle 32 bits of NTP)
CUMULATIVE_LOST_MAX = 0x7FFFFF
CUMULATIVE_LOST_MIN = -0x800000

_HDR = struct.Struct("!BBH")
_BLOCK = struct.Struct("!IIIIII")
_SENDER_INFO = struct.Struct("!IIIII")


# ---------------------------------------------------------------- NTP helpers

def ntp_from_unix(t: float) -> int:
    """64-bit NTP timestamp (32.32 fixed point since 1900) for Unix time t."""
    whole = int(t // 1)
    frac = int(round((t - whole) * NTP_FRAC))
    if frac >= NTP_FRAC:  # rounding can carry into the seconds
        whole, frac = whole + 1, frac - NTP_FRAC
    return (((whole + NTP_UNIX_OFFSET) & 0xFFFFFFFF) << 32) | frac


def unix_from_ntp(ntp: int) -> float:
    return (ntp >> 32) - NTP_UNIX_OFFSET + (ntp & 0xFFFFFFFF) / NTP_FRAC


def ntp_middle32(ntp: int) -> int:
    """The middle 32 bits of a 64-bit NTP timestamp: the LSR value of §6.4.1."""
    return (ntp >> 16) & 0xFFFFFFFF


def seconds_to_short(seconds: float) -> int:
    """Seconds as a 16.16 fixed point value (DLSR units), clamped to 32 bits."""
    return max(0, min(0xFFFFFFFF, int(round(seconds * SHORT_NTP_UNITS))))


def round_trip_time(arrival_middle32: int, lsr: int, dlsr: int) -> float | None:
    """RTT in seconds per RFC 3550 §6.4.1: A - LSR - DLSR in 1/65536 s units.

    `arrival_middle32` is the middle 32 bits of our NTP clock when the report block
    arrived. Returns None when the peer has not yet received an SR from us (LSR == 0),
    because then the block carries no timing. A negative result (clock skew or a
    malformed block) is clamped to 0 rather than wrapping to ~18 hours.
    """
    if lsr == 0:
        return None
    diff = (arrival_middle32 - lsr - dlsr) & 0xFFFFFFFF
    if diff >= 0x80000000:
        return 0.0
    return diff / SHORT_NTP_UNITS


# ---------------------------------------------------------------- values

@dataclass(frozen=True, slots=True)
class ReportBlock:
    """One reception report (§6.4.1). `fraction_lost` is the raw 8-bit fixed point value
    (lost/expected * 256); `cumulative_lost` is signed (duplicates can make it negative)."""

    ssrc: int
    fraction_lost: int = 0
    cumulative_lost: int = 0
    highest_seq: int = 0  # extended highest sequence number received (cycles << 16 | seq)
    jitter: int = 0  # interarrival jitter in timestamp units
    lsr: int = 0
    dlsr: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.fraction_lost <= 255:
            raise ValueError(f"fraction lost {self.fraction_lost} out of range 0..255")
        if not CUMULATIVE_LOST_MIN <= self.cumulative_lost <= CUMULATIVE_LOST_MAX:
            raise ValueError(f"cumulative lost {self.cumulative_lost} does not fit 24 bits")
        for name in ("ssrc", "highest_seq", "jitter", "lsr", "dlsr"):
            v = getattr(self, name)
            if not 0 <= v <= 0xFFFFFFFF:
                raise ValueError(f"report block {name} {v} out of range")

    @property
    def fraction(self) -> float:
        return self.fraction_lost / 256.0

    def serialize(self) -> bytes:
        word2 = (self.fraction_lost << 24) | (self.cumulative_lost & 0xFFFFFF)
        return _BLOCK.pack(self.ssrc, word2, self.highest_seq, self.jitter, self.lsr, self.dlsr)

    @classmethod
    def parse(cls, data: bytes, offset: int = 0) -> ReportBlock:
        ssrc, word2, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(data, offset)
        lost = word2 & 0xFFFFFF
        if lost & 0x800000:
            lost -= 0x1000000
        return cls(ssrc, word2 >> 24, lost, highest, jitter, lsr, dlsr)


def _header(count: int, pt: int, body_len: int, padding: int = 0) -> bytes:
    total = HEADER_LEN + body_len + padding
    if total % 4:
        raise ValueError(f"RTCP packet length {total} not a multiple of 4")
    b0 = (RTCP_VERSION << 6) | (0x20 if padding else 0) | count
    return _HDR.pack(b0, pt, total // 4 - 1)


def _check_count(n: int, what: str) -> None:
    if n > MAX_COUNT:
        raise ValueError(f"too many {what}: {n} > {MAX_COUNT}")


@dataclass(frozen=True, slots=True)
class SenderReport:
    ssrc: int
    ntp_timestamp: int  # 64-bit NTP
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""  # profile-specific extension, kept verbatim

    packet_type = PT_SR

    def serialize(self) -> bytes:
        _check_count(len(self.reports), "report blocks")
        body = b"".join(
            [
                struct.pack("!I", self.ssrc),
                _SENDER_INFO.pack(
                    self.ntp_timestamp >> 32,
                    self.ntp_timestamp & 0xFFFFFFFF,
                    self.rtp_timestamp,
                    self.packet_count,
                    self.octet_count,
                ),
                *(r.serialize() for r in self.reports),
                self.extension,
            ]
        )
        return _header(len(self.reports), PT_SR, len(body)) + body


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    ssrc: int
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""

    packet_type = PT_RR

    def serialize(self) -> bytes:
        _check_count(len(self.reports), "report blocks")
        body = b"".join(
            [struct.pack("!I", self.ssrc), *(r.serialize() for r in self.reports), self.extension]
        )
        return _header(len(self.reports), PT_RR, len(body)) + body


@dataclass(frozen=True, slots=True)
class SdesChunk:
    ssrc: int
    items: tuple[tuple[int, bytes], ...] = ()  # (item type, value), END not included

    @property
    def cname(self) -> str | None:
        for kind, value in self.items:
            if kind == SDES_CNAME:
                return value.decode("utf-8", "replace")
        return None

    def serialize(self) -> bytes:
        out = bytearray(struct.pack("!I", self.ssrc))
        for kind, value in self.items:
            if not 1 <= kind <= 255:
                raise ValueError(f"SDES item type {kind} invalid")
            if len(value) > 255:
                raise ValueError(f"SDES item of {len(value)} octets exceeds 255")
            out += bytes([kind, len(value)]) + value
        # At least one null octet ends the item list, then pad to a 32-bit boundary.
        out += b"\x00"
        out += bytes(-len(out) % 4)
        return bytes(out)


@dataclass(frozen=True, slots=True)
class SourceDescription:
    chunks: tuple[SdesChunk, ...] = ()

    packet_type = PT_SDES

    @classmethod
    def with_cname(cls, ssrc: int, cname: str) -> SourceDescription:
        return cls((SdesChunk(ssrc, ((SDES_CNAME, cname.encode("utf-8")),)),))

    def serialize(self) -> bytes:
        _check_count(len(self.chunks), "SDES chunks")
        body = b"".join(c.serialize() for c in self.chunks)
        return _header(len(self.chunks), PT_SDES, len(body)) + body


@dataclass(frozen=True, slots=True)
class Bye:
    ssrcs: tuple[int, ...]
    reason: str | None = None

    packet_type = PT_BYE

    def serialize(self) -> bytes:
        _check_count(len(self.ssrcs), "BYE sources")
        body = bytearray(struct.pack(f"!{len(self.ssrcs)}I", *self.ssrcs))
        if self.reason is not None:
            raw = self.reason.encode("utf-8")
            if len(raw) > 255:
                raise ValueError("BYE reason longer than 255 octets")
            body += bytes([len(raw)]) + raw
            body += bytes(-len(body) % 4)
        return _header(len(self.ssrcs), PT_BYE, len(body)) + bytes(body)


@dataclass(frozen=True, slots=True)
class RtcpUnknown:
    """A packet type not modelled here, kept verbatim (body excludes the 4-byte header)."""

    packet_type: int
    count: int
    body: bytes = field(default=b"")

    def serialize(self) -> bytes:
        return _header(self.count, self.packet_type, len(self.body)) + self.body


RtcpPacket = SenderReport | ReceiverReport | SourceDescription | Bye | RtcpUnknown


# ---------------------------------------------------------------- parsing

def _parse_blocks(body: bytes, offset: int, count: int, what: str) -> tuple[ReportBlock, ...]:
    need = offset + count * REPORT_BLOCK_LEN
    if need > len(body):
        raise ValueError(f"RTCP {what} truncated: {count} report blocks need {need} body bytes")
    return tuple(ReportBlock.parse(body, offset + i * REPORT_BLOCK_LEN) for i in range(count))


def _parse_sr(count: int, body: bytes) -> SenderReport:
    if len(body) < 4 + SR_SENDER_INFO_LEN:
        raise ValueError("RTCP SR truncated: sender info incomplete")
    (ssrc,) = struct.unpack_from("!I", body, 0)
    msw, lsw, rtp_ts, pkts, octets = _SENDER_INFO.unpack_from(body, 4)
    start = 4 + SR_SENDER_INFO_LEN
    reports = _parse_blocks(body, start, count, "SR")
    ext = body[start + count * REPORT_BLOCK_LEN :]
    return SenderReport(ssrc, (msw << 32) | lsw, rtp_ts, pkts, octets, reports, bytes(ext))


def _parse_rr(count: int, body: bytes) -> ReceiverReport:
    if len(body) < 4:
        raise ValueError("RTCP RR truncated: no SSRC")
    (ssrc,) = struct.unpack_from("!I", body, 0)
    reports = _parse_blocks(body, 4, count, "RR")
    return ReceiverReport(ssrc, reports, bytes(body[4 + count * REPORT_BLOCK_LEN :]))


def _parse_sdes(count: int, body: bytes) -> SourceDescription:
    chunks = []
    pos = 0
    n = len(body)
    for _ in range(count):
        if pos + 4 > n:
            raise ValueError("RTCP SDES truncated: chunk SSRC missing")
        (ssrc,) = struct.unpack_from("!I", body, pos)
        pos += 4
        items = []
        while True:
            if pos >= n:
                raise ValueError("RTCP SDES chunk not terminated by a null item")
            kind = body[pos]
            if kind == SDES_END:
                pos += 1
                # Skip the null padding up to the next 32-bit boundary.
                pos += -pos % 4
                break
            if pos + 2 > n:
                raise ValueError("RTCP SDES item truncated")
            length = body[pos + 1]
            if pos + 2 + length > n:
                raise ValueError(f"RTCP SDES item length {length} runs past end of packet")
            items.append((kind, bytes(body[pos + 2 : pos + 2 + length])))
            pos += 2 + length
        chunks.append(SdesChunk(ssrc, tuple(items)))
    if pos > n:
        raise ValueError("RTCP SDES chunk padding runs past end of packet")
    return SourceDescription(tuple(chunks))


def _parse_bye(count: int, body: bytes) -> Bye:
    need = 4 * count
    if need > len(body):
        raise ValueError(f"RTCP BYE truncated: SC={count} needs {need} body bytes")
    ssrcs = struct.unpack_from(f"!{count}I", body, 0)
    reason = None
    if len(body) > need:
        length = body[need]
        if need + 1 + length > len(body):
            raise ValueError(f"RTCP BYE reason length {length} runs past end of packet")
        reason = body[need + 1 : need + 1 + length].decode("utf-8", "replace")
    return Bye(tuple(ssrcs), reason)


_PARSERS = {PT_SR: _parse_sr, PT_RR: _parse_rr, PT_SDES: _parse_sdes, PT_BYE: _parse_bye}


def parse_compound(data: bytes, *, strict: bool = True) -> list[RtcpPacket]:
    """Parse a compound RTCP packet into its packets, in order.

    Applies the validity checks of RFC 3550 A.2: version 2 everywhere, lengths that add
    up to the datagram size, padding only on the last packet, and (when `strict`) a first
    packet that is SR or RR. `strict=False` accepts reduced-size RTCP (RFC 5506).
    """
    n = len(data)
    if n < HEADER_LEN:
        raise ValueError(f"RTCP packet too short: {n} bytes")
    packets: list[RtcpPacket] = []
    pos = 0
    while pos < n:
        if pos + HEADER_LEN > n:
            raise ValueError(f"RTCP header truncated at offset {pos}")
        b0, pt, words = _HDR.unpack_from(data, pos)
        version = b0 >> 6
        if version != RTCP_VERSION:
            raise ValueError(f"unsupported RTCP version {version}")
        count = b0 & 0x1F
        length = 4 * (words + 1)
        end = pos + length
        if end > n:
            raise ValueError(
                f"RTCP length field ({words}) runs past end of datagram at offset {pos}"
            )
        if strict and not packets and pt not in (PT_SR, PT_RR):
            raise ValueError(f"compound RTCP must start with SR or RR, got type {pt}")
        body_end = end
        if b0 & 0x20:
            if end != n:
                raise ValueError("RTCP padding only allowed on the last packet of a compound")
            pad = data[end - 1]
            if pad == 0 or pad > length - HEADER_LEN:
                raise ValueError(f"RTCP padding count {pad} invalid for a {length}-byte packet")
            body_end = end - pad
        body = bytes(data[pos + HEADER_LEN : body_end])
        parser = _PARSERS.get(pt)
        packets.append(parser(count, body) if parser else RtcpUnknown(pt, count, body))
        pos = end
    return packets


def serialize_compound(packets: list[RtcpPacket] | tuple[RtcpPacket, ...]) -> bytes:
    return b"".join(p.serialize() for p in packets)
