# -*- test-case-name: tests.client.test_ua -*-
"""A call as the user sees it: a numbered state machine that reports its changes.

States and the moves between them (anything else is refused with ``ValueError``)::

    idle ──► calling ──► ringing ──► early ──► confirmed ◄──► held
      │         │           │          │          ▲  ▲           ▲
      │         │           └──────────┴──────────┘  └► remote-held ◄┐
      └──► incoming (rings here) ──────────────────────►           both-held
    any state but ended ──► ended

``calling``: our INVITE is out; ``ringing``: a 180 came back (or, incoming, we ring);
``early``: an early dialog with session progress (183); ``confirmed``: talking;
``held``: we put the peer on hold; ``remote-held``: the peer holds us; ``both-held``:
both (RFC 3264 §8.4: the stream is then ``inactive``).

Each change is reported once through the ``report`` callback as one line (the grammar is
in client/cli.py). The SIP details (dialog, transactions, SDP) hang off the call but are
driven by :mod:`client.ua`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["ACTIVE_STATES", "Call", "TALKING_STATES"]

TALKING_STATES = frozenset({"confirmed", "held", "remote-held", "both-held"})
ACTIVE_STATES = frozenset({"calling", "ringing", "early", "incoming"}) | TALKING_STATES

_ALLOWED: dict[str, frozenset[str]] = {
    "idle": frozenset({"calling", "incoming"}),
    "calling": frozenset({"ringing", "early", "confirmed"}),
    "ringing": frozenset({"early", "confirmed"}),
    "early": frozenset({"ringing", "confirmed"}),
    "incoming": frozenset({"confirmed"}),
    "confirmed": frozenset({"held", "remote-held"}),
    "held": frozenset({"confirmed", "both-held"}),
    "remote-held": frozenset({"confirmed", "both-held"}),
    "both-held": frozenset({"held", "remote-held"}),
    "ended": frozenset(),
}

# What a move into a talking state is called on the console, by (old, new).
_HOLD_EVENTS = {
    ("confirmed", "held"): "held",
    ("remote-held", "both-held"): "held",
    ("held", "confirmed"): "resumed",
    ("both-held", "remote-held"): "resumed",
    ("confirmed", "remote-held"): "remote-held",
    ("held", "both-held"): "remote-held",
    ("remote-held", "confirmed"): "remote-resumed",
    ("both-held", "held"): "remote-resumed",
}


class Call:
    """One call: number, direction, peer, state; SIP state is attached by the UA."""

    def __init__(
        self, number: int, direction: str, remote: str, report: Callable[[str], None]
    ) -> None:
        self.number = number
        self.direction = direction  # "outgoing" | "incoming"
        self.remote = remote  # the peer's URI as the user should see it
        self.state = "idle"
        self.connected = False  # ever reached confirmed
        self.end_reason: str | None = None
        self._report = report
        # -- SIP state, owned by client.ua.UserAgent ---------------------------------------
        self.dialog: Any = None  # sipcore.dialog.Dialog once there is one
        self.invite: Any = None  # the INVITE we sent (latest, after auth/redirect)
        self.invite_tx: Any = None  # its client transaction / the server tx of theirs
        self.server_tx: Any = None
        self.media: Any = None  # client.media_hook.MediaSession
        self.local_sdp: Any = None
        self.remote_sdp: Any = None
        self.timers: dict[str, Any] = {}
        self.extra: dict[str, Any] = {}

    # -- state machine ---------------------------------------------------------------------
    def move(self, new: str) -> None:
        """Change state and report it; a move to the same state is silent."""
        old = self.state
        if new == old:
            return
        if new not in _ALLOWED[old]:
            raise ValueError(f"call {self.number}: {old} -> {new} not allowed")
        self.state = new
        if new == "calling":
            self._report(f"call {self.number} outgoing {self.remote}")
        elif new == "incoming":
            self._report(f"call {self.number} incoming {self.remote}")
        elif new == "ringing":
            self._report(f"call {self.number} ringing")
        elif new == "early":
            self._report(f"call {self.number} early")
        elif new == "confirmed" and old in ("calling", "ringing", "early", "incoming"):
            self.connected = True
            self._report(f"call {self.number} connected")
        else:
            self._report(f"call {self.number} {_HOLD_EVENTS[(old, new)]}")

    def end(self, reason: str) -> None:
        """Move to ended (once) and report ``call N ended REASON``."""
        if self.state == "ended":
            return
        self.state = "ended"
        self.end_reason = reason
        self.cancel_timers()
        if self.media is not None:
            try:
                self.media.stop()
            finally:
                self.media = None
        self._report(f"call {self.number} ended {reason}")

    # -- hold bookkeeping ------------------------------------------------------------------
    @property
    def local_hold(self) -> bool:
        return self.state in ("held", "both-held")

    @property
    def remote_hold(self) -> bool:
        return self.state in ("remote-held", "both-held")

    def set_hold(self, local: bool | None = None, remote: bool | None = None) -> None:
        """Move to the talking state matching the two hold flags."""
        if self.state not in TALKING_STATES:
            return
        lh = self.local_hold if local is None else local
        rh = self.remote_hold if remote is None else remote
        target = {
            (False, False): "confirmed",
            (True, False): "held",
            (False, True): "remote-held",
            (True, True): "both-held",
        }[(lh, rh)]
        if target == self.state:
            return
        # Changing both flags at once is two moves (e.g. held -> remote-held).
        if lh != self.local_hold and rh != self.remote_hold:
            self.move(_via(self.state, target))
        self.move(target)

    # -- timers ----------------------------------------------------------------------------
    def set_timer(self, name: str, call: Any) -> None:
        self.cancel_timer(name)
        self.timers[name] = call

    def cancel_timer(self, name: str) -> None:
        call = self.timers.pop(name, None)
        if call is not None and call.active():
            call.cancel()

    def cancel_timers(self) -> None:
        for name in list(self.timers):
            self.cancel_timer(name)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def talking(self) -> bool:
        return self.state in TALKING_STATES

    def __repr__(self) -> str:
        return f"<Call {self.number} {self.direction} {self.remote} {self.state}>"


def _via(old: str, new: str) -> str:
    """The intermediate state when both hold flags change at once."""
    if {old, new} == {"held", "remote-held"}:
        return "both-held" if old == "held" else "confirmed"
    if {old, new} == {"confirmed", "both-held"}:
        return "held" if old == "confirmed" else "remote-held"
    return new
