# -*- test-case-name: tests.sipcore.test_transaction_client -*-
"""RFC 3261 Table 4 timer values, plus RFC 6026's Timers L and M.

A timer whose RFC value is "not started on a reliable transport" (A, E, G) is ``None``
here when ``reliable`` is true; the wait timers D, I, J and K are ``0.0`` on a reliable
transport, which the state machines treat as "go to Terminated at once".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["DEFAULT_TIMERS", "TRYING_DELAY", "Timers"]

#: §17.2.1: an INVITE server transaction MUST send 100 Trying itself if the TU has not
#: sent a provisional (or final) response within 200 ms.
TRYING_DELAY = 0.2


@dataclass(frozen=True, slots=True)
class Timers:
    """T1/T2/T4 (§17.1.1.1, §17.1.2.2) and the timers derived from them.

    ``reliable`` selects the column of Table 4. A transaction passes its own ``reliable``
    flag through :meth:`for_transport`, so callers normally build ``Timers(t1=...)`` once
    and share it.
    """

    t1: float = 0.5  # RTT estimate (§17.1.1.1)
    t2: float = 4.0  # cap for non-INVITE request and INVITE response retransmits
    t4: float = 5.0  # maximum time a message stays in the network
    reliable: bool = False

    def for_transport(self, reliable: bool) -> Timers:
        if reliable == self.reliable:
            return self
        return dataclasses.replace(self, reliable=reliable)

    # -- client INVITE (§17.1.1.2) -------------------------------------------------
    @property
    def a(self) -> float | None:
        """INVITE retransmit interval, initial value; doubles each time."""
        return None if self.reliable else self.t1

    @property
    def b(self) -> float:
        """INVITE transaction timeout."""
        return 64 * self.t1

    @property
    def d(self) -> float:
        """Wait for response retransmits: "> 32 s for UDP" (Table 4), 0 when reliable.

        32 s is 64*T1 with the default T1; we keep at least that so a small T1 does not
        shorten the window in which the server may still retransmit its final response.
        """
        return 0.0 if self.reliable else max(32.0, 64 * self.t1)

    # -- client non-INVITE (§17.1.2.2) -------------------------------------------------
    @property
    def e(self) -> float | None:
        """Non-INVITE retransmit interval, initial value; doubles up to T2."""
        return None if self.reliable else self.t1

    @property
    def f(self) -> float:
        """Non-INVITE transaction timeout."""
        return 64 * self.t1

    @property
    def k(self) -> float:
        """Wait for response retransmits."""
        return 0.0 if self.reliable else self.t4

    # -- server INVITE (§17.2.1) -------------------------------------------------------
    @property
    def g(self) -> float | None:
        """INVITE final response retransmit interval, initial value; doubles up to T2."""
        return None if self.reliable else self.t1

    @property
    def h(self) -> float:
        """Wait time for ACK receipt."""
        return 64 * self.t1

    @property
    def i(self) -> float:
        """Wait time for ACK retransmits."""
        return 0.0 if self.reliable else self.t4

    # -- server non-INVITE (§17.2.2) ---------------------------------------------------
    @property
    def j(self) -> float:
        """Wait time for non-INVITE request retransmits."""
        return 0.0 if self.reliable else 64 * self.t1

    # -- RFC 6026 Accepted state ---------------------------------------------------------
    @property
    def l(self) -> float:  # noqa: E743 - the RFC's name for it
        """Server INVITE: wait time for accepted INVITE request retransmits (RFC 6026 §8.7)."""
        return 64 * self.t1

    @property
    def m(self) -> float:
        """Client INVITE: wait time for retransmission of 2xx responses (RFC 6026 §8.4)."""
        return 64 * self.t1


DEFAULT_TIMERS = Timers()
