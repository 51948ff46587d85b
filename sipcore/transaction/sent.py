# -*- test-case-name: tests.sipcore.test_transaction_linger -*-
"""A final response reduced to the bytes that went on the wire.

A server transaction that has sent its final response only has to resend those same
bytes when a retransmitted request (or, for INVITE, Timer G) asks for them, for up to
Timer J/H/L: 32 s over UDP. Keeping the parsed `Response` (header list, parsed Via,
URIs, caches) for that long costs several KiB per transaction; `SentResponse` keeps
the serialised bytes, the status and the reason phrase, and re-parses the bytes on the
rare occasion something asks for more (a retransmission needs the top Via to be
routed, a log line wants the CSeq).
"""

from __future__ import annotations

from sipcore.message import Headers, Response, parse

__all__ = ["SentResponse"]


class SentResponse(Response):
    """A `Response` whose headers and body live only as serialised bytes.

    It is a `Response` (``isinstance`` checks, ``==`` against the original, which
    compares headers and body, hold), but read-only: ``headers`` and ``body`` are
    parsed from the bytes on each access, so nothing parsed is kept alive.

    Until :meth:`settle` is called it also holds the original response, so that the
    first transmission (routing by the top Via, logging) costs no re-parse and the
    bytes are serialised only once, by whoever sends them first.
    """

    __slots__ = ("_data", "_origin")

    # The base class's ``headers``/``body`` slots are shadowed by the properties below.
    def __init__(self, response: Response, data: bytes | None = None) -> None:  # noqa: D107
        # ``data``: the bytes ``response`` was parsed from, sent as they are.
        self.status = response.status
        self.reason = response.reason
        self.version = response.version
        self._origin: Response | None = response
        self._data: bytes | None = data

    def serialise(self) -> bytes:
        data = self._data
        if data is None:
            assert self._origin is not None
            data = self._data = self._origin.serialise()
        return data

    def settle(self) -> None:
        """Keep only the bytes from now on (serialising now if nobody has)."""
        self.serialise()
        self._origin = None

    def _parsed(self) -> Response:
        origin = self._origin
        if origin is not None:
            return origin
        message = parse(self.serialise())
        assert isinstance(message, Response)
        return message

    @property
    def headers(self) -> Headers:
        return self._parsed().headers

    @headers.setter
    def headers(self, value: Headers) -> None:
        raise AttributeError("SentResponse is read-only")

    @property
    def body(self) -> bytes:
        return self._parsed().body

    @body.setter
    def body(self, value: bytes) -> None:
        raise AttributeError("SentResponse is read-only")

    def copy(self) -> Response:
        return self._parsed().copy()

    def __repr__(self) -> str:
        return f"<SentResponse {self.status} {self.reason} ({len(self.serialise())} bytes)>"
