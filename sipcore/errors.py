"""The single exception type for malformed SIP input."""

from __future__ import annotations

from typing import Any


class ParseError(ValueError):
    """Malformed SIP input.

    ``status`` is the SIP status code a server should answer with and ``reason``
    the reason phrase to use (e.g. ``ParseError("Bad CSeq")`` -> ``400 Bad CSeq``).

    ``message`` is set when the start line and header block were readable but the
    message failed validation (missing/bad mandatory headers): a server can then
    still build its error response from it.  ``messages`` is used by
    :class:`sipcore.message.StreamParser` for messages completed in the same
    ``feed()`` call before the error, so none are lost.
    """

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason, status)
        self.reason = reason
        self.status = status
        self.message: Any = None
        self.messages: list[Any] = []

    def __str__(self) -> str:
        return f"{self.status} {self.reason}"
