"""pcap export: parsed back with a tiny reader (no dpkt needed)."""

from __future__ import annotations

import io
import struct
from pathlib import Path

from sipcore.trace.pcap import _checksum, write_pcap
from sipcore.trace.reader import Trace
from sipcore.trace.writer import TraceWriter
from tests.sipcore.test_trace_flow import FLOW, Addr, write_traces


def read_pcap(data: bytes) -> tuple[int, list[tuple[int, bytes]]]:
    magic, major, minor, _, _, _, linktype = struct.unpack("<IHHiIII", data[:24])
    assert (magic, major, minor) == (0xA1B2C3D4, 2, 4)
    packets, pos = [], 24
    while pos < len(data):
        sec, usec, incl, orig = struct.unpack("<IIII", data[pos:pos + 16])
        assert incl == orig
        packets.append((sec * 1_000_000 + usec, data[pos + 16:pos + 16 + incl]))
        pos += 16 + incl
    assert pos == len(data)
    return linktype, packets


def decode(frame: bytes) -> dict:
    ethertype = struct.unpack("!H", frame[12:14])[0]
    ip = frame[14:]
    if ethertype == 0x0800:
        ihl = (ip[0] & 0xF) * 4
        assert _checksum(ip[:ihl]) == 0  # the IPv4 header checksum is right
        proto, src, dst = ip[9], ip[12:16], ip[16:20]
        total = struct.unpack("!H", ip[2:4])[0]
        l4 = ip[ihl:total]
        pseudo = src + dst + struct.pack("!BBH", 0, proto, len(l4))
    else:
        assert ethertype == 0x86DD
        proto, src, dst = ip[6], ip[8:24], ip[24:40]
        l4 = ip[40:40 + struct.unpack("!H", ip[4:6])[0]]
        pseudo = src + dst + struct.pack("!IxxxB", len(l4), proto)
    assert _checksum(pseudo + l4) == 0  # UDP/TCP checksum is right
    sport, dport = struct.unpack("!HH", l4[:4])
    if proto == 17:
        assert struct.unpack("!H", l4[4:6])[0] == len(l4)
        payload, seq = l4[8:], None
    else:
        assert proto == 6
        seq = struct.unpack("!I", l4[4:8])[0]
        payload = l4[(l4[12] >> 4) * 4:]
    return {"proto": proto, "src": src, "dst": dst, "sport": sport, "dport": dport,
            "payload": payload, "seq": seq}


def test_udp_packets_carry_the_sip_bytes(tmp_path: Path) -> None:
    trace = Trace.load([str(p) for p in write_traces(tmp_path)], lambda w: None)
    out = io.BytesIO()
    count = write_pcap(trace.arrows, out)
    linktype, packets = read_pcap(out.getvalue())
    assert linktype == 1 and count == len(packets) == len(FLOW)
    for (ts, frame), arrow, (src, dst, data) in zip(packets, trace.arrows, FLOW):
        p = decode(frame)
        assert p["proto"] == 17
        assert p["payload"] == data
        assert (p["sport"], p["dport"]) == (src[1], dst[1])
        assert p["src"] == bytes([127, 0, 0, 1])
        assert ts == arrow.sent_us or (arrow.sent_us is None and ts == arrow.received_us)


def test_tcp_and_ipv6_with_sequence_numbers(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    writer = TraceWriter(path, label="proxy")
    here, there = Addr("TCP", "::1", 5060), Addr("TCP", "::1", 5070)
    a, b = FLOW[0][2], FLOW[1][2]
    writer("in", a, here, there)
    writer("out", b, here, there)
    writer("in", a, here, there)
    writer.close()
    trace = Trace.load([str(path)], lambda w: None)
    out = io.BytesIO()
    write_pcap(trace.arrows, out)
    _, packets = read_pcap(out.getvalue())
    decoded = [decode(frame) for _, frame in packets]
    assert [p["proto"] for p in decoded] == [6, 6, 6]
    assert [p["payload"] for p in decoded] == [a, b, a]
    assert decoded[0]["src"] == bytes(15) + b"\x01"
    # Sequence numbers advance by the bytes sent in each direction.
    assert decoded[2]["seq"] - decoded[0]["seq"] == len(a)
    assert decoded[1]["sport"] == 5060 and decoded[1]["dport"] == 5070


def _ones_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def test_dpkt_reads_what_wireshark_would(tmp_path: Path) -> None:
    """An independent pcap reader (dpkt) sees the same SIP messages, checksums valid."""
    import dpkt

    trace = Trace.load([str(p) for p in write_traces(tmp_path)], lambda w: None)
    path = tmp_path / "call.pcap"
    with open(path, "wb") as f:
        write_pcap(trace.arrows, f)
    payloads = []
    with open(path, "rb") as f:
        for _ts, frame in dpkt.pcap.Reader(f):
            ip = dpkt.ethernet.Ethernet(frame).data
            udp = ip.data
            assert isinstance(udp, dpkt.udp.UDP)
            # RFC 768: the one's complement sum over pseudo-header, UDP header and data,
            # checksum included, is all ones when the checksum is right.
            pseudo = ip.src + ip.dst + struct.pack("!BBH", 0, 17, udp.ulen)
            assert _ones_sum(pseudo + bytes(udp)) == 0xFFFF
            payloads.append(udp.data)
    assert payloads == [data for _src, _dst, data in FLOW]
