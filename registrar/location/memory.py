"""``memory:`` — the location service in process-local dicts.

No timers: expired bindings are dropped lazily when their AOR is read or updated,
and by ``purge_expired()``, which pops an expiry heap so that a purge costs
O(expired · log n) instead of a scan of every AOR.

The heap is an index of *times to look*, not of bindings: every stored binding has at
least one entry no later than its expiry. A refresh that moves the expiry later (the
usual REGISTER) leaves the heap alone, since the binding's earlier entry still comes
first; when that entry is popped, a binding still alive is pushed again at its current
expiry. So a binding costs one push per lifetime of its expiry rather than one per
refresh, and the heap seldom needs rebuilding (one entry per refresh made the heap
pushes and rebuilds 4-5% of a busy worker's CPU).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from heapq import heapify, heappop, heappush

from twisted.internet import defer
from zope.interface import classImplements

from registrar.location import Clock, LocationService, deferred_errors
from registrar.location.binding import (
    Binding,
    Change,
    apply_changes,
    normalise_aor,
    sort_bindings,
)

_Entry = tuple[int, Binding]


class MemoryLocationService:
    def __init__(self, clock: Clock | None = None) -> None:
        if clock is None:
            from twisted.internet import reactor

            clock = reactor  # type: ignore[assignment]
        self.clock: Clock = clock  # type: ignore[assignment]
        self._aors: dict[str, dict[str, _Entry]] = {}
        self._size = 0
        # (when to look, tie-breaker, aor, key); see the module docstring. Removed
        # bindings leave their entries behind rather than paying for a heap delete.
        self._heap: list[tuple[float, int, str, str]] = []
        self._tie = itertools.count()
        self._closed = False

    # -- LocationService -------------------------------------------------------

    @deferred_errors
    def get(self, aor: str) -> defer.Deferred[list[Binding]]:
        return defer.succeed(self.get_now(aor))

    @deferred_errors
    def update(self, aor: str, changes: Sequence[Change]) -> defer.Deferred[list[Binding]]:
        return defer.succeed(self.update_now(aor, changes))

    # -- synchronous forms ---------------------------------------------------------
    # The registrar and proxy call these when present (a dict answers at once, so a
    # Deferred per REGISTER/INVITE is pure overhead); they raise what get/update would
    # fail with. Other backends do not have them and stay asynchronous.

    def get_now(self, aor: str) -> list[Binding]:
        aor = normalise_aor(aor)
        entries = self._aors.get(aor)
        if not entries:
            return []
        now = self.clock.seconds()
        dead = [k for k, (_, b) in entries.items() if b.expires_at <= now]
        for k in dead:
            del entries[k]
        self._size -= len(dead)
        if not entries:
            del self._aors[aor]
        return sort_bindings(entries.values())

    def update_now(self, aor: str, changes: Sequence[Change]) -> list[Binding]:
        return self._apply(normalise_aor(aor), changes, check_cseq=True)

    def put_now(self, binding: Binding) -> None:
        self._apply(binding.aor, [binding], check_cseq=False)

    def put_newer_now(self, binding: Binding) -> bool:
        """Store a peer's binding unless it is older: False when the live binding of its
        key has the same Call-ID and a higher CSeq (replication's convergence rule; an
        equal CSeq is the same change again, and the later one wins).

        What ``update_now`` does for one binding without the CSeq rule's exception,
        the ``ApplyResult`` and the sorted result, which a replica throws away: most
        peer changes are refreshes of a binding this copy holds, one lookup and one
        store."""
        now = self.clock.seconds()
        aor = binding.aor  # normalised by Binding itself
        key = binding.key
        entries = self._aors.get(aor)
        old = entries.get(key) if entries is not None else None
        if old is not None:
            stored = old[1]
            if (stored.expires_at > now and stored.call_id == binding.call_id
                    and stored.cseq > binding.cseq):
                return False
        seq = 0
        general = entries is None or binding.expires_at <= now
        if entries is not None and not general:
            for entry in entries.values():
                if entry[1].expires_at <= now:
                    general = True
                    break
                if entry[0] > seq:
                    seq = entry[0]
        if general:
            # A new AOR, expired bindings to drop, or a put that expired on the way (a
            # removal): the general path.
            self._apply(aor, [binding], check_cseq=False)
            return True
        assert entries is not None
        entries[key] = (seq + 1, binding)
        if old is None:
            self._size += 1
        self._index(aor, key, binding, old)
        return True

    @deferred_errors
    def put(self, binding: Binding) -> defer.Deferred[None]:
        self.put_now(binding)
        return defer.succeed(None)

    @deferred_errors
    def remove(self, aor: str, contact: str) -> defer.Deferred[bool]:
        aor = normalise_aor(aor)
        entries = self._aors.get(aor, {})
        # Administrative removal is by Contact URI whatever the binding's key, so
        # RFC 5626 flow bindings of that contact go too.
        now = self.clock.seconds()
        keys = [k for k, (_, b) in entries.items() if b.contact == contact]
        live = any(entries[k][1].expires_at > now for k in keys)
        for k in keys:
            del entries[k]
        self._size -= len(keys)
        if not entries:
            self._aors.pop(aor, None)
        return defer.succeed(live)

    @deferred_errors
    def remove_all(self, aor: str) -> defer.Deferred[int]:
        aor = normalise_aor(aor)
        now = self.clock.seconds()
        entries = self._aors.pop(aor, {})
        self._size -= len(entries)
        return defer.succeed(sum(1 for _, b in entries.values() if b.expires_at > now))

    def purge_expired(self) -> defer.Deferred[int]:
        return defer.succeed(self._purge())

    def count(self) -> defer.Deferred[int]:
        # Read-only, so purge_expired() still reports what expired; costs
        # O(expired-but-unpurged), like a purge would.
        return defer.succeed(self._size - self._expired_stored(self.clock.seconds()))

    def aors(self) -> defer.Deferred[list[str]]:
        now = self.clock.seconds()
        return defer.succeed(
            sorted(
                aor
                for aor, entries in self._aors.items()
                if any(b.expires_at > now for _, b in entries.values())
            )
        )

    def close(self) -> defer.Deferred[None]:
        self._closed = True
        return defer.succeed(None)

    # -- internals ---------------------------------------------------------------

    def _apply(
        self, aor: str, changes: Sequence[Change], check_cseq: bool
    ) -> list[Binding]:
        now = self.clock.seconds()
        current = self._aors.get(aor, {})
        result = apply_changes(aor, current, changes, now, check_cseq=check_cseq)
        self._size += len(result.state) - len(current)
        if result.state:
            self._aors[aor] = result.state
        else:
            self._aors.pop(aor, None)
        for key, (_, b) in result.written.items():
            self._index(aor, key, b, current.get(key))
        return sort_bindings(result.state.values())

    def _index(
        self, aor: str, key: str, b: Binding, old: tuple[int, Binding] | None
    ) -> None:
        """Keep a heap entry no later than ``b``'s expiry; ``old``: what it replaced."""
        if old is not None and old[1].expires_at <= b.expires_at:
            return  # the entry that covers the old expiry comes first: enough
        heappush(self._heap, (b.expires_at, next(self._tie), aor, key))
        if len(self._heap) > 2 * self._size + 1024:
            self._rebuild_heap()

    def _purge(self) -> int:
        now = self.clock.seconds()
        heap = self._heap
        purged = 0
        while heap and heap[0][0] <= now:
            _, _, aor, key = heappop(heap)
            entries = self._aors.get(aor)
            if entries is None:
                continue
            entry = entries.get(key)
            if entry is None:
                continue  # removed since
            expires_at = entry[1].expires_at
            if expires_at > now:
                # Refreshed since: look again when it is due.
                heappush(heap, (expires_at, next(self._tie), aor, key))
                continue
            del entries[key]
            purged += 1
            if not entries:
                del self._aors[aor]
        self._size -= purged
        return purged

    def _expired_stored(self, now: float) -> int:
        """Expired bindings not yet dropped: walk the heap's subtree of keys <= now
        (every stored binding has an entry no later than its expiry)."""
        heap = self._heap
        found: set[tuple[str, str]] = set()  # a binding may have several entries
        stack = [0] if heap else []
        while stack:
            i = stack.pop()
            when, _, aor, key = heap[i]
            if when > now:
                continue  # heap order: nothing below this node is due either
            entry = self._aors.get(aor, {}).get(key)
            if entry is not None and entry[1].expires_at <= now:
                found.add((aor, key))
            stack.extend(j for j in (2 * i + 1, 2 * i + 2) if j < len(heap))
        return len(found)

    def _rebuild_heap(self) -> None:
        self._heap = [
            (b.expires_at, next(self._tie), aor, key)
            for aor, entries in self._aors.items()
            for key, (_, b) in entries.items()
        ]
        heapify(self._heap)


# Declared here, not with @implementer: a class decorator would make mypyc compile the
# class as a plain Python class (attribute and method lookups in dicts on every call).
classImplements(MemoryLocationService, LocationService)
