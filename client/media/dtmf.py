"""RFC 4733 telephone-event: payload encode/decode, the packet train for one digit, and a
receiver that reports each digit once despite the redundant packets.

Payload (RFC 4733 §2.3):  event (8) | E (1) | R (1) | volume (6) | duration (16)

One digit is sent as (§2.5.1): a first packet with the marker bit, updates every packet
interval with the duration so far, then three identical end packets (E bit) carrying the
final duration, so that one or two losses do not lose the end. All packets of one event
share the event's start timestamp; sequence numbers increase as for any RTP packet.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .rtp import RtpPacket
from .seqnum import seq_add

PAYLOAD_LEN = 4
DEFAULT_PAYLOAD_TYPE = 101
DEFAULT_CLOCK_RATE = 8000
DEFAULT_DURATION_MS = 100  # long enough for any gateway to regenerate the tone
DEFAULT_INTERVAL_MS = 20  # one update per audio packet time
DEFAULT_VOLUME = 10  # -10 dBm0, a typical DTMF level
END_PACKET_COUNT = 3  # RFC 4733 §2.5.1.4 recommends three end packets
MAX_VOLUME = 63
MAX_DURATION = 0xFFFF

DIGITS = "0123456789*#ABCD"
EVENT_FLASH = 16
_DIGIT_TO_EVENT = {d: i for i, d in enumerate(DIGITS)}
_PAYLOAD = struct.Struct("!BBH")


def digit_to_event(digit: str) -> int:
    try:
        return _DIGIT_TO_EVENT[digit.upper()]
    except KeyError:
        raise ValueError(f"not a DTMF digit: {digit!r}") from None


def event_to_digit(event: int) -> str | None:
    return DIGITS[event] if 0 <= event < len(DIGITS) else None


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    event: int
    end: bool = False
    volume: int = DEFAULT_VOLUME  # -dBm0, 0..63
    duration: int = 0  # timestamp units since the event's start

    def __post_init__(self) -> None:
        if not 0 <= self.event <= 255:
            raise ValueError(f"telephone-event code {self.event} out of range")
        if not 0 <= self.volume <= MAX_VOLUME:
            raise ValueError(f"telephone-event volume {self.volume} out of range 0..63")
        if not 0 <= self.duration <= MAX_DURATION:
            raise ValueError(f"telephone-event duration {self.duration} out of range")

    @property
    def digit(self) -> str | None:
        return event_to_digit(self.event)

    def serialize(self) -> bytes:
        return _PAYLOAD.pack(
            self.event, (0x80 if self.end else 0) | self.volume, self.duration
        )

    @classmethod
    def parse(cls, payload: bytes) -> TelephoneEvent:
        # §2.3: several events may be stacked in one payload (redundancy); the first
        # four octets are the current event.
        if len(payload) < PAYLOAD_LEN:
            raise ValueError(f"telephone-event payload too short: {len(payload)} bytes")
        event, flags, duration = _PAYLOAD.unpack_from(payload, 0)
        # The R bit is reserved: ignored on receipt (§2.3.3).
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)


def dtmf_packets(
    digit: str,
    *,
    ssrc: int,
    sequence: int,
    timestamp: int,
    payload_type: int = DEFAULT_PAYLOAD_TYPE,
    clock_rate: int = DEFAULT_CLOCK_RATE,
    duration_ms: int = DEFAULT_DURATION_MS,
    interval_ms: int = DEFAULT_INTERVAL_MS,
    volume: int = DEFAULT_VOLUME,
) -> list[RtpPacket]:
    """The RTP packets for one digit, in send order; send one every `interval_ms`
    (the end packets may go back to back). The next free sequence number is
    `sequence + len(result)`; audio resumes with a timestamp past the event."""
    event = digit_to_event(digit)
    step = clock_rate * interval_ms // 1000
    total = clock_rate * duration_ms // 1000
    if step <= 0 or total <= 0:
        raise ValueError("DTMF duration and interval must be positive")
    if total > MAX_DURATION:
        # Longer events need segmenting (§2.5.1.3); a DTMF key press never does.
        raise ValueError(f"DTMF duration {duration_ms} ms exceeds the 16-bit duration field")
    packets = []
    updates = list(range(step, total, step)) + [total]
    for i, dur in enumerate(updates):
        packets.append(
            RtpPacket(
                payload_type=payload_type,
                sequence=seq_add(sequence, i),
                timestamp=timestamp,
                ssrc=ssrc,
                marker=i == 0,
                payload=TelephoneEvent(event, False, volume, dur).serialize(),
            )
        )
    end_payload = TelephoneEvent(event, True, volume, total).serialize()
    for j in range(END_PACKET_COUNT):
        packets.append(
            RtpPacket(
                payload_type=payload_type,
                sequence=seq_add(sequence, len(updates) + j),
                timestamp=timestamp,
                ssrc=ssrc,
                payload=end_payload,
            )
        )
    return packets


class DtmfReceiver:
    """Reports each event once: the first packet seen for a new (ssrc, timestamp) pair.

    Keyed by timestamp because all packets of an event share it (§2.5.2.1); reporting on
    the first packet rather than on the end gives the lowest latency for IVR menus.
    """

    def __init__(self) -> None:
        self._last: tuple[int, int] | None = None

    def feed(self, packet: RtpPacket) -> str | None:
        ev = TelephoneEvent.parse(packet.payload)
        key = (packet.ssrc, packet.timestamp)
        if key == self._last:
            return None
        self._last = key
        return ev.digit
