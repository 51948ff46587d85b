"""RTP fixed header, CSRC list and header extension (RFC 3550 §5.1, §5.3.1).

Pure bytes <-> value conversion. `RtpPacket.parse(data).serialize() == data` for every
input that parses: padding and extension bytes are kept verbatim so that a relay can
forward a packet without changing it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

RTP_VERSION = 2
FIXED_HEADER_LEN = 12
MAX_CSRC = 15
MAX_PAYLOAD_TYPE = 127
EXTENSION_HEADER_LEN = 4

_FIXED = struct.Struct("!BBHII")
_EXT = struct.Struct("!HH")


@dataclass(frozen=True, slots=True)
class RtpExtension:
    """The one header extension RFC 3550 §5.3.1 allows: a 16-bit profile id and data
    whose length is a multiple of 4 (RFC 8285 one/two-byte elements live inside `data`)."""

    profile: int
    data: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.profile <= 0xFFFF:
            raise ValueError(f"RTP extension profile {self.profile} out of range")
        if len(self.data) % 4:
            raise ValueError(f"RTP extension data length {len(self.data)} not a multiple of 4")
        if len(self.data) // 4 > 0xFFFF:
            raise ValueError("RTP extension data too long")


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One RTP packet. `padding` holds the raw padding octets (last one = their count),
    empty when the P bit is clear; use `make_padding(n)` to build it."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrcs: tuple[int, ...] = field(default=())
    extension: RtpExtension | None = None
    padding: bytes = b""

    def __post_init__(self) -> None:
        # Validating here means an RtpPacket that exists always serialises.
        if not 0 <= self.payload_type <= MAX_PAYLOAD_TYPE:
            raise ValueError(f"RTP payload type {self.payload_type} out of range 0..127")
        if not 0 <= self.sequence <= 0xFFFF:
            raise ValueError(f"RTP sequence number {self.sequence} out of range")
        if not 0 <= self.timestamp <= 0xFFFFFFFF:
            raise ValueError(f"RTP timestamp {self.timestamp} out of range")
        if not 0 <= self.ssrc <= 0xFFFFFFFF:
            raise ValueError(f"RTP SSRC {self.ssrc} out of range")
        if len(self.csrcs) > MAX_CSRC:
            raise ValueError(f"RTP CSRC count {len(self.csrcs)} exceeds {MAX_CSRC}")
        for c in self.csrcs:
            if not 0 <= c <= 0xFFFFFFFF:
                raise ValueError(f"RTP CSRC {c} out of range")
        if self.padding and self.padding[-1] != len(self.padding):
            raise ValueError(
                f"RTP padding count octet {self.padding[-1]} != padding length {len(self.padding)}"
            )
        if len(self.padding) > 255:
            raise ValueError("RTP padding longer than 255 octets")

    @staticmethod
    def make_padding(n: int) -> bytes:
        """n padding octets (1..255): zeros then the count, as RFC 3550 §5.1 describes."""
        if not 1 <= n <= 255:
            raise ValueError(f"RTP padding length {n} out of range 1..255")
        return bytes(n - 1) + bytes([n])

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Parse one RTP packet; any malformation raises ValueError with the reason."""
        n = len(data)
        if n < FIXED_HEADER_LEN:
            raise ValueError(f"RTP packet too short: {n} bytes, need at least {FIXED_HEADER_LEN}")
        b0, b1, seq, ts, ssrc = _FIXED.unpack_from(data, 0)
        version = b0 >> 6
        if version != RTP_VERSION:
            raise ValueError(f"unsupported RTP version {version}")
        has_padding = bool(b0 & 0x20)
        has_ext = bool(b0 & 0x10)
        cc = b0 & 0x0F
        offset = FIXED_HEADER_LEN + 4 * cc
        if offset > n:
            raise ValueError(f"RTP CSRC list truncated: CC={cc} needs {offset} bytes, have {n}")
        csrcs = struct.unpack_from(f"!{cc}I", data, FIXED_HEADER_LEN) if cc else ()
        extension = None
        if has_ext:
            if offset + EXTENSION_HEADER_LEN > n:
                raise ValueError("RTP header extension truncated: no room for its 4-byte header")
            profile, words = _EXT.unpack_from(data, offset)
            offset += EXTENSION_HEADER_LEN
            end = offset + 4 * words
            if end > n:
                raise ValueError(
                    f"RTP header extension length {words} words runs past end of packet"
                )
            extension = RtpExtension(profile, bytes(data[offset:end]))
            offset = end
        end = n
        padding = b""
        if has_padding:
            if n == offset:
                raise ValueError("RTP padding bit set but packet has no padding octets")
            count = data[-1]
            if count == 0:
                raise ValueError("RTP padding count is zero")
            if offset + count > n:
                raise ValueError(f"RTP padding count {count} exceeds the {n - offset} bytes left")
            end = n - count
            padding = bytes(data[end:])
        return cls(
            payload_type=b1 & 0x7F,
            sequence=seq,
            timestamp=ts,
            ssrc=ssrc,
            payload=bytes(data[offset:end]),
            marker=bool(b1 & 0x80),
            csrcs=tuple(csrcs),
            extension=extension,
            padding=padding,
        )

    def serialize(self) -> bytes:
        b0 = (RTP_VERSION << 6) | len(self.csrcs)
        if self.padding:
            b0 |= 0x20
        if self.extension is not None:
            b0 |= 0x10
        b1 = (0x80 if self.marker else 0) | self.payload_type
        parts = [_FIXED.pack(b0, b1, self.sequence, self.timestamp, self.ssrc)]
        if self.csrcs:
            parts.append(struct.pack(f"!{len(self.csrcs)}I", *self.csrcs))
        if self.extension is not None:
            parts.append(_EXT.pack(self.extension.profile, len(self.extension.data) // 4))
            parts.append(self.extension.data)
        parts.append(self.payload)
        parts.append(self.padding)
        return b"".join(parts)

    @property
    def header_length(self) -> int:
        ext = 0 if self.extension is None else EXTENSION_HEADER_LEN + len(self.extension.data)
        return FIXED_HEADER_LEN + 4 * len(self.csrcs) + ext


def looks_like_rtcp(data: bytes) -> bool:
    """RFC 5761 §4 demultiplexing on a shared (rtcp-mux) port: RTCP packet types 192..223
    occupy the byte where RTP has marker+payload type, so test that byte's value."""
    return len(data) >= 2 and (data[0] >> 6) == RTP_VERSION and 192 <= data[1] <= 223
