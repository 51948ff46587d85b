"""Export traced messages as a classic pcap file (Ethernet / IPv4 or IPv6 / UDP or TCP).

Written with `struct` rather than a pcap library: the format is a 24-byte file header
plus a 16-byte header per packet, and synthesising the frames ourselves keeps the
package free of a dependency for ~100 lines of code.

Each message becomes one packet (TCP messages over 32 KiB are split into segments)
at the time it was sent (or received, if only the receiver traced it), between the
two lanes' addresses. TCP gets synthetic per-direction sequence and acknowledgement
numbers and no handshake; Wireshark's "Telephony → VoIP Calls" and "SIP Flows"
work on such captures. MAC addresses are made up from the IP addresses
(locally administered ``02:...``). Checksums are computed, so Wireshark shows no
checksum errors when it validates them.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from typing import BinaryIO

from sipcore.trace.reader import Arrow, parse_hostport

PCAP_MAGIC = 0xA1B2C3D4  # microsecond timestamps
LINKTYPE_ETHERNET = 1
SNAPLEN = 262144
TCP_SEGMENT = 32768
_ISN = 1_000_000  # first sequence number of every synthetic TCP direction

IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _mac(ip: IPAddr) -> bytes:
    return b"\x02" + ip.packed[-4:].rjust(4, b"\0") + b"\x01"


def _ip(host: str) -> IPAddr:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        # A lane is always an IP literal in practice; keep the packet rather than fail.
        return ipaddress.IPv4Address("0.0.0.0")


def _same_family(src: IPAddr, dst: IPAddr) -> tuple[IPAddr, IPAddr]:
    if src.version == dst.version:
        return src, dst

    def v6(a: IPAddr) -> IPAddr:
        return a if a.version == 6 else ipaddress.IPv6Address(f"::ffff:{a}")

    return v6(src), v6(dst)


def _l4(proto: int, src: IPAddr, dst: IPAddr, header: bytes, payload: bytes,
        csum_at: int) -> bytes:
    segment = header + payload
    if src.version == 4:
        pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, proto, len(segment))
    else:
        pseudo = src.packed + dst.packed + struct.pack("!IxxxB", len(segment), proto)
    csum = _checksum(pseudo + segment)
    if proto == 17 and csum == 0:
        csum = 0xFFFF  # RFC 768: a computed zero is sent as all ones
    return segment[:csum_at] + struct.pack("!H", csum) + segment[csum_at + 2:]


def _frame(proto: int, src: IPAddr, dst: IPAddr, segment: bytes, ident: int) -> bytes:
    if src.version == 4:
        header = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(segment), ident & 0xFFFF, 0x4000, 64, proto, 0,
            src.packed, dst.packed,
        )
        header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
        ethertype = 0x0800
    else:
        header = struct.pack("!IHBB16s16s", 6 << 28, len(segment), proto, 64,
                             src.packed, dst.packed)
        ethertype = 0x86DD
    return _mac(dst) + _mac(src) + struct.pack("!H", ethertype) + header + segment


class PcapWriter:
    """Packets into an open binary file."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.count = 0
        self._ident = 0
        self._next_seq: dict[tuple[object, ...], int] = {}
        out.write(struct.pack("<IHHiIII", PCAP_MAGIC, 2, 4, 0, 0, SNAPLEN, LINKTYPE_ETHERNET))

    def _packet(self, ts_us: int, frame: bytes) -> None:
        seconds, micros = divmod(ts_us, 1_000_000)
        self.out.write(struct.pack("<IIII", seconds, micros, len(frame), len(frame)) + frame)
        self.count += 1

    def udp(self, ts_us: int, src: tuple[IPAddr, int], dst: tuple[IPAddr, int],
            payload: bytes) -> None:
        (sip, sport), (dip, dport) = src, dst
        header = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0)
        segment = _l4(17, sip, dip, header, payload, 6)
        self._ident += 1
        self._packet(ts_us, _frame(17, sip, dip, segment, self._ident))

    def tcp(self, ts_us: int, src: tuple[IPAddr, int], dst: tuple[IPAddr, int],
            payload: bytes) -> None:
        (sip, sport), (dip, dport) = src, dst
        forward, backward = (sip, sport, dip, dport), (dip, dport, sip, sport)
        for start in range(0, max(len(payload), 1), TCP_SEGMENT):
            chunk = payload[start:start + TCP_SEGMENT]
            seq = self._next_seq.get(forward, _ISN)
            ack = self._next_seq.get(backward, _ISN)
            self._next_seq[forward] = (seq + len(chunk)) & 0xFFFFFFFF
            header = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, 0x18, 65535, 0, 0)
            segment = _l4(6, sip, dip, header, chunk, 16)
            self._ident += 1
            self._packet(ts_us, _frame(6, sip, dip, segment, self._ident))


def write_pcap(arrows: Iterable[Arrow], out: BinaryIO) -> int:
    """Write the messages as packets; returns the number of packets."""
    writer = PcapWriter(out)
    for a in arrows:
        (shost, sport), (dhost, dport) = parse_hostport(a.src), parse_hostport(a.dst)
        sip, dip = _same_family(_ip(shost), _ip(dhost))
        ts = a.sent_us if a.sent_us is not None else a.ts_us
        # A UDP datagram cannot exceed 65,507 bytes; anything larger went over a stream.
        if a.transport in ("TCP", "TLS", "WS", "WSS") or len(a.data) > 65507:
            # TLS is exported as the plaintext it carried: that is what students read.
            writer.tcp(ts, (sip, sport), (dip, dport), a.data)
        else:
            writer.udp(ts, (sip, sport), (dip, dport), a.data)
    return writer.count
