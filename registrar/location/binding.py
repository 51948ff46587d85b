"""Value types of the location service and the pure rules for applying a REGISTER.

Everything here is free of I/O so the memory and sqlite backends share one
implementation of the RFC 3261 §10.3 / RFC 5626 §6 semantics; the redis backend
has to restate the same rules in Lua (see ``redis.py``) because the check
and the write must run atomically inside Redis.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote, unquote

__all__ = [
    "WILDCARD",
    "Binding",
    "LocationError",
    "Removal",
    "StaleCSeq",
    "Change",
    "apply_changes",
    "binding_from_dict",
    "binding_to_dict",
    "normalise_aor",
    "sort_bindings",
]

#: ``Removal(WILDCARD)`` is ``Contact: *`` (remove every binding of the AOR).
WILDCARD: Final = "*"

# Remaining-time rounding tolerance: expires_at is computed as now + N, and float
# arithmetic may leave it a hair above an integer; without the slack a freshly
# registered 3600 s binding would report 3601.
_REMAINING_SLACK: Final = 1e-6


class LocationError(Exception):
    """The store failed (cannot open, corrupt, unreachable). ``str()`` is one line."""


class StaleCSeq(LocationError):
    """RFC 3261 §10.3 step 6: a binding with the same Call-ID has a CSeq >= the request's.

    The whole update is aborted (nothing applied); the registrar answers 500.
    """

    def __init__(self, aor: str, contact: str, stored_cseq: int, request_cseq: int) -> None:
        super().__init__(
            f"stale CSeq for {aor} contact {contact}: stored {stored_cseq}, request {request_cseq}"
        )
        self.aor = aor
        self.contact = contact
        self.stored_cseq = stored_cseq
        self.request_cseq = request_cseq


#: RFC 3261 §25.1: what a user part may hold unescaped (unreserved, user-unreserved).
_USER_SAFE: Final = "-_.!~*'()&=+$,;?/"
#: uri text -> its AOR, bounded (the texts come from the network). A dict rather than
#: functools.lru_cache: the compiled callers reach it without a generic call.
_AORS: Final[dict[str, str]] = {}
_AORS_MAX: Final = 65536


def normalise_aor(uri: str) -> str:
    """Canonical address-of-record per RFC 3261 §10.3 step 5.

    URI parameters and headers and any password are dropped, the user part is
    unescaped where §19.1.4 says escaping makes no difference (it stays
    case-sensitive) and escaped where it must be, scheme and host are lower-cased. A
    port is kept: ``sip:a@example.com:5070`` is a different domain from the default
    one. Canonical means idempotent: an AOR normalises to itself, so a binding keeps
    its key however often it is normalised again (a replicated peer, a Binding).
    """
    aor = _AORS.get(uri)
    if aor is None:
        aor = _normalise_aor(uri)
        if len(_AORS) >= _AORS_MAX:
            _AORS.clear()
        _AORS[uri] = aor
    return aor


def _normalise_aor(uri: str) -> str:
    text = uri.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    scheme, sep, rest = text.partition(":")
    if not sep or not scheme or not rest:
        raise ValueError(f"not an address-of-record URI: {uri!r}")
    scheme = scheme.lower()
    if scheme not in ("sip", "sips"):
        # tel: and friends have no host to canonicalise; keep them as given.
        return f"{scheme}:{rest}"
    # '@' cannot appear unescaped in the user part, but ';' and '?' can, so the
    # user part must be split off before parameters/headers are stripped.
    user, at, hostpart = rest.partition("@")
    if not at:
        user, hostpart = "", rest
    for stop in (";", "?"):
        hostpart = hostpart.split(stop, 1)[0]
    if not hostpart:
        raise ValueError(f"address-of-record has no host: {uri!r}")
    host = hostpart.lower()
    if not at:
        return f"{scheme}:{host}"
    user = user.split(":", 1)[0]  # drop any password
    if "%" in user or not user.isascii() or not _plain_user(user):
        # %41 and A are the same user (§19.1.4); %25 stays escaped, or normalising
        # the result again would read it as an escape.
        user = quote(unquote(user), safe=_USER_SAFE)
    return f"{scheme}:{user}@{host}"


def _plain_user(user: str) -> bool:
    """Only characters a user part may hold unescaped (the usual case: no work)."""
    return all(c.isalnum() or c in _USER_SAFE for c in user)


@dataclass(frozen=True, slots=True)
class Binding:
    """One registered contact of an address-of-record."""

    aor: str
    contact: str
    expires_at: float
    q: float = 1.0
    call_id: str = ""
    cseq: int = 0
    path: tuple[str, ...] = ()
    instance_id: str | None = None
    reg_id: int | None = None
    received: str | None = None
    user_agent: str | None = None

    # Explicit __init__: mypyc compiles it natively; the dataclass-generated one runs
    # interpreted (~4x slower per object).
    def __init__(
        self,
        aor: str,
        contact: str,
        expires_at: float,
        q: float = 1.0,
        call_id: str = "",
        cseq: int = 0,
        path: tuple[str, ...] = (),
        instance_id: str | None = None,
        reg_id: int | None = None,
        received: str | None = None,
        user_agent: str | None = None,
    ) -> None:
        object.__setattr__(self, "aor", aor)
        object.__setattr__(self, "contact", contact)
        object.__setattr__(self, "expires_at", expires_at)
        object.__setattr__(self, "q", q)
        object.__setattr__(self, "call_id", call_id)
        object.__setattr__(self, "cseq", cseq)
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "instance_id", instance_id)
        object.__setattr__(self, "reg_id", reg_id)
        object.__setattr__(self, "received", received)
        object.__setattr__(self, "user_agent", user_agent)
        self.__post_init__()

    def __post_init__(self) -> None:
        # Normalising here means every backend keys AORs identically, whatever
        # spelling the registrar happened to pass.
        object.__setattr__(self, "aor", normalise_aor(self.aor))
        if not self.contact:
            raise ValueError("binding contact must not be empty")
        if not isinstance(self.path, tuple):
            object.__setattr__(self, "path", tuple(self.path))
        if not 0.0 <= self.q <= 1.0:
            raise ValueError(f"q must be within 0..1, got {self.q}")

    @property
    def key(self) -> str:
        """Identity of the binding within its AOR (RFC 5626 §6 vs RFC 3261 §10.3)."""
        return binding_key(self.contact, self.instance_id, self.reg_id)

    def remaining(self, now: float) -> int:
        """Whole seconds left at ``now`` (what the 200 OK's ``expires`` param says)."""
        return max(0, math.ceil(self.expires_at - now - _REMAINING_SLACK))


@dataclass(frozen=True, slots=True)
class Removal:
    """A contact with ``expires=0`` (or ``Contact: *`` when ``contact`` is WILDCARD).

    ``call_id``/``cseq`` are the REGISTER's; when given, the stale-CSeq rule applies
    to the removal too. ``instance_id``/``reg_id`` select an RFC 5626 flow binding.
    """

    contact: str
    call_id: str | None = None
    cseq: int | None = None
    instance_id: str | None = None
    reg_id: int | None = None

    # Explicit __init__: mypyc compiles it natively; the dataclass-generated one runs
    # interpreted (~4x slower per object).
    def __init__(
        self,
        contact: str,
        call_id: str | None = None,
        cseq: int | None = None,
        instance_id: str | None = None,
        reg_id: int | None = None,
    ) -> None:
        object.__setattr__(self, "contact", contact)
        object.__setattr__(self, "call_id", call_id)
        object.__setattr__(self, "cseq", cseq)
        object.__setattr__(self, "instance_id", instance_id)
        object.__setattr__(self, "reg_id", reg_id)

    @property
    def key(self) -> str:
        return binding_key(self.contact, self.instance_id, self.reg_id)


Change = Binding | Removal


def binding_key(contact: str, instance_id: str | None, reg_id: int | None) -> str:
    # With both +sip.instance and reg-id the flow, not the Contact URI, identifies the
    # binding (RFC 5626 §6): the same UA registers the same URI over several flows,
    # and a re-registration over a new flow must replace the old flow's binding.
    if instance_id is not None and reg_id is not None:
        return f"i:{reg_id}:{instance_id}"
    return f"c:{contact}"


def binding_to_dict(b: Binding) -> dict[str, Any]:
    return {
        "aor": b.aor,
        "contact": b.contact,
        "expires_at": b.expires_at,
        "q": b.q,
        "call_id": b.call_id,
        "cseq": b.cseq,
        "path": list(b.path),
        "instance_id": b.instance_id,
        "reg_id": b.reg_id,
        "received": b.received,
        "user_agent": b.user_agent,
    }


def binding_from_dict(d: Mapping[str, Any]) -> Binding:
    return Binding(
        aor=d["aor"],
        contact=d["contact"],
        expires_at=float(d["expires_at"]),
        q=float(d["q"]),
        call_id=d["call_id"],
        cseq=int(d["cseq"]),
        path=tuple(d.get("path") or ()),
        instance_id=d.get("instance_id"),
        reg_id=d.get("reg_id"),
        received=d.get("received"),
        user_agent=d.get("user_agent"),
    )


def binding_to_json(b: Binding) -> str:
    # repr-exact floats (json uses repr) so expiry survives a round trip bit-for-bit.
    return json.dumps(binding_to_dict(b), separators=(",", ":"))


def binding_from_json(text: str) -> Binding:
    return binding_from_dict(json.loads(text))


def sort_bindings(entries: Iterable[tuple[int, Binding]]) -> list[Binding]:
    """Highest q first, then the most recently written (highest sequence number)."""
    items = list(entries)
    if len(items) == 1:
        return [items[0][1]]  # the usual AOR: nothing to order
    items.sort(key=_sort_key)
    return [b for _, b in items]


def _sort_key(entry: tuple[int, Binding]) -> tuple[float, int]:
    return -entry[1].q, -entry[0]


@dataclass
class ApplyResult:
    """What ``apply_changes`` decided, for backends that persist a diff."""

    state: dict[str, tuple[int, Binding]]
    removed: set[str] = field(default_factory=set)
    written: dict[str, tuple[int, Binding]] = field(default_factory=dict)

    # Explicit __init__: mypyc compiles it natively; the dataclass-generated one runs
    # interpreted (~4x slower per object).
    def __init__(
        self,
        state: dict[str, tuple[int, Binding]],
        removed: set[str] | None = None,
        written: dict[str, tuple[int, Binding]] | None = None,
    ) -> None:
        self.state = state
        self.removed = set() if removed is None else removed
        self.written = {} if written is None else written


def apply_changes(
    aor: str,
    current: Mapping[str, tuple[int, Binding]],
    changes: Sequence[Change],
    now: float,
    check_cseq: bool = True,
) -> ApplyResult:
    """Apply one REGISTER's changes to an AOR's bindings, all or nothing.

    ``current`` maps binding key -> (sequence number, binding) and may hold expired
    bindings; they are dropped (and reported in ``removed``) and never take part in
    the CSeq check, as they no longer exist as far as the protocol is concerned.
    Raises StaleCSeq before touching anything.
    """
    # One pass for the live bindings and the highest sequence number (expired ones
    # count too, so a sequence number is never reused within the AOR).
    live: dict[str, tuple[int, Binding]] = {}
    seq = 0
    for k, v in current.items():
        if v[0] > seq:
            seq = v[0]
        if v[1].expires_at > now:
            live[k] = v
    removed = {k for k in current if k not in live} if len(live) < len(current) else set()
    keys = [change.key for change in changes]
    if check_cseq:
        _check_cseq(aor, live, changes, keys)
    # `live` is not read again: it becomes the new state in place.
    state = live
    written: dict[str, tuple[int, Binding]] = {}
    for change, key in zip(changes, keys):
        if isinstance(change, Binding):
            if change.aor != aor:
                raise ValueError(f"binding for {change.aor} in an update of {aor}")
            if change.expires_at <= now:
                # Expires: 0 written as a binding: a removal, not a dead row.
                if state.pop(key, None) is not None:
                    removed.add(key)
                written.pop(key, None)
                continue
            seq += 1
            state[key] = written[key] = (seq, change)
            removed.discard(key)
        elif change.contact == WILDCARD:
            removed.update(state)
            state.clear()
            written.clear()
        else:
            if state.pop(key, None) is not None:
                removed.add(key)
            written.pop(key, None)
    if removed:
        removed.difference_update(state)
    return ApplyResult(state, removed, written)


def _check_cseq(
    aor: str, live: Mapping[str, tuple[int, Binding]], changes: Sequence[Change],
    keys: Sequence[str],
) -> None:
    # Checked against the bindings as stored *before* this request, so a REGISTER
    # that lists the same contact twice does not trip over its own first write.
    for change, key in zip(changes, keys):
        if isinstance(change, Removal):
            if change.call_id is None or change.cseq is None:
                continue
            call_id, cseq = change.call_id, change.cseq
            if change.contact == WILDCARD:
                targets = list(live.values())
            else:
                hit = live.get(key)
                targets = [hit] if hit else []
        else:
            call_id, cseq = change.call_id, change.cseq
            hit = live.get(key)
            targets = [hit] if hit else []
        for _, old in targets:
            if old.call_id == call_id and old.cseq >= cseq:
                raise StaleCSeq(aor, old.contact, old.cseq, cseq)
