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
Linux 4.6+) that picks the socket at index ``source port mod N`` instead: still one
socket per flow, spread evenly over flows with consecutive ports, and predictable.
The index is the socket's place in the kernel's group (the order the workers bound
the port; a worker that restarts takes the place its predecessor left), and while a
worker is missing, an index past the group's end falls back to the kernel's hash.
Clients with random source ports spread as they did with the hash.
"""

from __future__ import annotations

import ctypes
import socket
import struct

__all__ = ["source_port_program", "spread_by_source_port"]

SO_ATTACH_REUSEPORT_CBPF = 51  # <asm-generic/socket.h>

# Classic BPF opcodes (<linux/filter.h>, <linux/bpf_common.h>).
_LD, _LDX, _ALU, _RET = 0x00, 0x01, 0x04, 0x06
_H, _B = 0x08, 0x10
_ABS, _IND, _MSH = 0x20, 0x40, 0xA0
_MOD, _K, _A = 0x90, 0x00, 0x10
#: Offsets from here on are relative to the network (IP) header: the program runs with
#: the packet's data at the UDP payload.
_SKF_NET_OFF = -0x100000
_IPV6_HEADER = 40  # extension headers before UDP are not expected on a SIP port


def _insn(code: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, 0, 0, k & 0xFFFFFFFF)


def source_port_program(family: int, sockets: int) -> bytes:
    """The program: return the UDP source port mod `sockets` (struct sock_filter[])."""
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
    return b"".join([*load, _insn(_ALU | _MOD | _K, sockets), _insn(_RET | _A, 0)])


def spread_by_source_port(sock: socket.socket, sockets: int) -> None:
    """Give `sock`'s reuseport group the source-port program; OSError if refused."""
    program = source_port_program(sock.family, sockets)
    buffer = ctypes.create_string_buffer(program, len(program))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }: the kernel
    # copies the instructions during the call, so `buffer` need only outlive it.
    fprog = struct.pack("HP", len(program) // 8, ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
