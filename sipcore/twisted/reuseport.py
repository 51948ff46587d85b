# -*- test-case-name: tests.sipcore.test_reuseport -*-
"""Which of the workers sharing a UDP port (SO_REUSEPORT) gets a datagram.

Left to itself, Linux picks a socket of the group by a hash of the source and
destination address, seeded at random: a flow always reaches the same socket (what
SIP transactions need: a retransmission or a CANCEL must reach the worker holding its
transaction), but with few flows the spread is lumpy. Four flows over two workers
come out 3:1 or 4:0 more often than 2:2; measured with `bench/register.py` (4 sipp
processes, 2 workers): one run 60% and 61% CPU, the next 12% and 90%, and then the
busy worker is the limit.

`spread_by_source_port` attaches a classic BPF program (SO_ATTACH_REUSEPORT_CBPF,
Linux 4.6+) that picks the socket at index `socket_index(source port, N)`: a
multiplicative hash of the port, taken from its high bits (Linux hands out ephemeral
ports of one parity to bind(), so `port mod 2` would send every such client to one
worker). Still one socket per flow, and published: a load generator can choose ports
that spread evenly (bench/sipplib.free_udp_ports), which a seeded hash does not allow.
The index is the socket's place in the kernel's group (the order the workers bound
the port; a worker that restarts takes the place its predecessor left), and while a
worker is missing, an index past the group's end falls back to the kernel's hash.
"""

from __future__ import annotations

import ctypes
import socket
import struct

__all__ = ["socket_index", "source_port_program", "spread_by_source_port"]

SO_ATTACH_REUSEPORT_CBPF = 51  # <asm-generic/socket.h>

# Classic BPF opcodes (<linux/filter.h>, <linux/bpf_common.h>).
_LD, _LDX, _ALU, _RET = 0x00, 0x01, 0x04, 0x06
_H, _B = 0x08, 0x10
_ABS, _IND, _MSH = 0x20, 0x40, 0xA0
_MUL, _RSH, _MOD, _K, _A = 0x20, 0x70, 0x90, 0x00, 0x10
#: Offsets from here on are relative to the network (IP) header: the program runs with
#: the packet's data at the UDP payload.
_SKF_NET_OFF = -0x100000
_IPV6_HEADER = 40  # extension headers before UDP are not expected on a SIP port
#: Knuth's multiplicative hash: 2**32 / golden ratio, odd.
_MULTIPLIER = 2654435761


def socket_index(source_port: int, sockets: int) -> int:
    """The group index the program picks for a datagram from `source_port`."""
    return (((source_port * _MULTIPLIER) & 0xFFFFFFFF) >> 16) % sockets


def _insn(code: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, 0, 0, k & 0xFFFFFFFF)


def source_port_program(family: int, sockets: int) -> bytes:
    """The program: `socket_index` of the UDP source port (struct sock_filter[])."""
    if sockets < 1:
        raise ValueError("a reuseport group has at least one socket")
    if family == socket.AF_INET:
        load = [
            _insn(_LDX | _B | _MSH, _SKF_NET_OFF),  # X = IPv4 header length (IHL * 4)
            _insn(_LD | _H | _IND, _SKF_NET_OFF),  # A = the UDP header's source port
        ]
    elif family == socket.AF_INET6:
        load = [_insn(_LD | _H | _ABS, _SKF_NET_OFF + _IPV6_HEADER)]
    else:
        raise ValueError(f"no reuseport program for address family {family}")
    spread = [
        _insn(_ALU | _MUL | _K, _MULTIPLIER),  # 32-bit: wraps as `& 0xFFFFFFFF` does
        _insn(_ALU | _RSH | _K, 16),
        _insn(_ALU | _MOD | _K, sockets),
    ]
    return b"".join([*load, *spread, _insn(_RET | _A, 0)])


def spread_by_source_port(sock: socket.socket, sockets: int) -> None:
    """Give `sock`'s reuseport group the source-port program; OSError if refused."""
    program = source_port_program(sock.family, sockets)
    buffer = ctypes.create_string_buffer(program, len(program))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }: the kernel
    # copies the instructions during the call, so `buffer` need only outlive it.
    fprog = struct.pack("HP", len(program) // 8, ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
