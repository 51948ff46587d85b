"""UDP writes made while a read burst is delivered go out together after it
(sipcore.twisted.transport._Bursts), in order, and never get lost."""

from __future__ import annotations

from typing import Any

import pytest

from sipcore.twisted import transport
from sipcore.twisted.transport import BURST, _Bursts


class FakePort:
    """A Twisted UDP port's two methods _Bursts wraps; `datagrams` are what one
    doRead delivers, each handled by `handler`."""

    def __init__(self) -> None:
        self.written: list[tuple[bytes, tuple[str, int]]] = []
        self.datagrams: list[bytes] = []
        self.handler: Any = None
        self.fail_on: bytes | None = None

    def doRead(self) -> None:  # noqa: N802 - Twisted's spelling
        for data in self.datagrams:
            self.handler(data)

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        if data == self.fail_on:
            raise OSError("no route")
        self.written.append((data, addr))


ADDR = ("127.0.0.1", 5070)


def test_outside_a_burst_a_write_goes_out_at_once() -> None:
    port = FakePort()
    _Bursts(port)
    port.write(b"a", ADDR)
    assert port.written == [(b"a", ADDR)]


def test_writes_during_a_burst_go_out_after_it_in_order() -> None:
    port = FakePort()
    _Bursts(port)
    seen: list[int] = []

    def handler(data: bytes) -> None:
        seen.append(len(port.written))  # nothing written while the burst runs
        port.write(data.upper(), ADDR)

    port.handler = handler
    port.datagrams = [b"a", b"b", b"c"]
    port.doRead()
    assert seen == [0, 0, 0]
    assert port.written == [(b"A", ADDR), (b"B", ADDR), (b"C", ADDR)]
    port.write(b"d", ADDR)  # the burst is over: at once again
    assert port.written[-1] == (b"d", ADDR)


def test_a_long_burst_is_flushed_every_burst_datagrams() -> None:
    port = FakePort()
    _Bursts(port)
    sizes: list[int] = []

    def handler(data: bytes) -> None:
        sizes.append(len(port.written))
        port.write(data, ADDR)

    port.handler = handler
    port.datagrams = [str(n).encode() for n in range(BURST * 2 + 3)]
    port.doRead()
    assert sizes[BURST] == BURST and sizes[2 * BURST] == 2 * BURST
    assert [d for d, _ in port.written] == port.datagrams


def test_a_failed_write_is_logged_and_the_others_still_go(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    warnings: list[dict[str, Any]] = []
    monkeypatch.setattr(transport.log, "warn", lambda fmt, **kw: warnings.append(kw))
    port = FakePort()
    _Bursts(port)
    port.fail_on = b"b"
    port.handler = lambda data: port.write(data, ADDR)
    port.datagrams = [b"a", b"b", b"c"]
    port.doRead()
    assert [d for d, _ in port.written] == [b"a", b"c"]
    assert warnings and warnings[0]["host"] == "127.0.0.1"


def test_what_was_held_goes_out_even_if_the_read_raises() -> None:
    port = FakePort()
    _Bursts(port)

    def handler(data: bytes) -> None:
        port.write(data, ADDR)
        if data == b"b":
            raise RuntimeError("a bug below the port")

    port.handler = handler
    port.datagrams = [b"a", b"b", b"c"]
    with pytest.raises(RuntimeError):
        port.doRead()
    assert [d for d, _ in port.written] == [b"a", b"b"]
