"""Wrap-around arithmetic for RTP sequence numbers (16 bit) and timestamps (32 bit).

RTP counters wrap silently, so "a < b" is meaningless on raw values. Everything in
client.media compares counters through these helpers, which interpret the modular
difference as a signed number (serial-number arithmetic, as RFC 1982 does for DNS):
b is "after" a when (b - a) mod 2**bits falls in the lower half of the circle.
"""

from __future__ import annotations

SEQ_BITS = 16
TS_BITS = 32
SEQ_MOD = 1 << SEQ_BITS
TS_MOD = 1 << TS_BITS
SEQ_MASK = SEQ_MOD - 1
TS_MASK = TS_MOD - 1


def wrap_diff(a: int, b: int, bits: int) -> int:
    """Signed distance a - b on a circle of 2**bits, in [-2**(bits-1), 2**(bits-1))."""
    mod = 1 << bits
    half = mod >> 1
    return ((a - b + half) % mod) - half


def seq_diff(a: int, b: int) -> int:
    """Signed a - b for 16-bit sequence numbers (65535 -> 0 is +1)."""
    return wrap_diff(a, b, SEQ_BITS)


def ts_diff(a: int, b: int) -> int:
    """Signed a - b for 32-bit RTP timestamps."""
    return wrap_diff(a, b, TS_BITS)


def seq_add(a: int, n: int) -> int:
    return (a + n) & SEQ_MASK


def ts_add(a: int, n: int) -> int:
    return (a + n) & TS_MASK


def seq_lt(a: int, b: int) -> bool:
    """True when sequence number a comes before b."""
    return seq_diff(a, b) < 0


def ts_lt(a: int, b: int) -> bool:
    return ts_diff(a, b) < 0


class Unwrapper:
    """Extends a wrapping counter to an unbounded int, relative to the last value seen.

    Each new value is placed at the nearest point on the number line to the previous
    one, so reordering by less than half the counter range (32768 packets, or about
    74 hours of 8 kHz timestamps) is handled. The first value is returned unchanged, so
    extended values start within [0, 2**bits).
    """

    __slots__ = ("_bits", "_last")

    def __init__(self, bits: int) -> None:
        self._bits = bits
        self._last: int | None = None

    @property
    def last(self) -> int | None:
        return self._last

    def peek(self, value: int) -> int:
        """Extended value of `value` without moving the reference point."""
        if self._last is None:
            return value
        return self._last + wrap_diff(value, self._last, self._bits)

    def unwrap(self, value: int) -> int:
        """Extended value of `value`; moves the reference forward (never backward)."""
        ext = self.peek(value)
        if self._last is None or ext > self._last:
            self._last = ext
        return ext

    def reset(self) -> None:
        self._last = None
