# -*- test-case-name: tests.proxy.test_validation -*-
"""Request validation for a proxy (RFC 3261 §16.3) and the loop-detecting branch (§16.6 step 8).

Pure functions: each check returns ``None`` when the request passes or a `Rejection`
naming the response to send. Nothing here knows about sockets or the reactor.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from sipcore.headers import Via
from sipcore.ids import MAGIC_COOKIE, random_hex
from sipcore.message import Request
from sipcore.uri import URI

__all__ = [
    "SUPPORTED_SCHEMES",
    "Rejection",
    "branch_loop_part",
    "check_loop",
    "check_max_forwards",
    "check_proxy_require",
    "check_scheme",
    "check_syntax",
    "loop_hash",
    "make_branch",
    "received_route",
]

#: §16.3 step 2: schemes we can route; anything else gets 416.
SUPPORTED_SCHEMES: Final = frozenset({"sip", "sips", "tel"})

#: §16.3 step 5: option tags a request may put in Proxy-Require. We implement none of
#: the proxy extensions that use it, so every tag is unsupported.
SUPPORTED_PROXY_EXTENSIONS: Final[frozenset[str]] = frozenset()


@dataclass(frozen=True, slots=True)
class Rejection:
    """A response the proxy must send instead of forwarding."""

    status: int
    reason: str | None = None
    headers: tuple[tuple[str, str], ...] = ()

    # Explicit __init__: mypyc compiles it natively; the dataclass-generated one runs
    # interpreted (~4x slower per object).
    def __init__(
        self, status: int, reason: str | None = None, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        object.__setattr__(self, "status", status)
        object.__setattr__(self, "reason", reason)
        object.__setattr__(self, "headers", headers)


def check_syntax(request: Request) -> None:
    """§16.3 step 1: parse every header the proxy relies on now, not halfway through.

    The transport validated the mandatory headers; Route, Record-Route, every Via and
    Max-Forwards are parsed lazily and would otherwise fail deep inside routing (or in a
    Deferred callback, where nobody answers). Raises `ParseError` (400 + reason).
    """
    _ = (request.vias, request.routes, request.record_routes, request.max_forwards)


def check_scheme(request: Request) -> Rejection | None:
    """§16.3 step 2: a Request-URI scheme we do not understand gets 416."""
    if request.uri.scheme.lower() not in SUPPORTED_SCHEMES:
        return Rejection(416)
    return None


def check_max_forwards(request: Request) -> Rejection | None:
    """§16.3 step 3: Max-Forwards 0 means the request may go no further (483).

    A missing Max-Forwards is allowed (§16.6 step 3 adds one); the OPTIONS exception
    (the element may answer an OPTIONS itself) is the caller's decision.
    """
    if request.max_forwards == 0:
        return Rejection(483)
    return None


def check_proxy_require(request: Request) -> Rejection | None:
    """§16.3 step 5: unknown Proxy-Require tags get 420 listing them in Unsupported."""
    unknown = [
        tag
        for value in request.headers.get_all("Proxy-Require")
        if (tag := value.strip()) and tag.lower() not in SUPPORTED_PROXY_EXTENSIONS
    ]
    if unknown:
        return Rejection(420, headers=(("Unsupported", ", ".join(unknown)),))
    return None


def _via_identity(via: Via) -> str:
    # received/rport are stamped hop by hop (§18.2.1, RFC 3581) and are not part of what
    # the previous hop sent; the rest is.
    return f"{via.transport} {via.host.lower()}:{via.port} {via.branch}"


def loop_hash(
    request: Request, prior_via: Via, as_received: tuple[URI, list[str]] | None = None
) -> str:
    """§16.6 step 8: hash of the fields that decide how this request is routed.

    RFC 3261 lists To tag, From tag, Call-ID, the Request-URI as received, the topmost
    Via as received, the CSeq number, Proxy-Require and Proxy-Authorization; we add the
    Route values (§16.6 step 8 says the value SHOULD reflect them). ``prior_via`` is the
    Via that was on top when the request reached us, so the same hash can be recomputed
    later from a request that has our Via above it (§16.3 step 4). ``as_received`` is
    the Request-URI and Route values noted before §16.4 rewrote them (`received_route`),
    so that the hash is only computed for requests that are really forwarded.
    """
    uri, routes = as_received or received_route(request)
    parts = [
        str(uri),
        request.to.tag or "",
        request.from_.tag or "",
        request.call_id,
        str(request.cseq.number),
        _via_identity(prior_via),
        "|".join(request.headers.get_all("Proxy-Require")),
        "|".join(request.headers.get_all("Proxy-Authorization")),
        "|".join(routes),
    ]
    digest = hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:16]


def received_route(request: Request) -> tuple[URI, list[str]]:
    """The routing fields `loop_hash` covers that §16.4 may change: note them first."""
    return request.uri, request.headers.get_all("Route")


def make_branch(loop_part: str, unique: str | None = None) -> str:
    """A Via branch: magic cookie, the loop hash, then a per-branch unique part.

    §16.6 step 8: the branch must be unique per client transaction (forks of one request
    differ by the unique part) while the loop part lets §16.3 step 4 recognise the
    request if it ever comes back unchanged.
    """
    return f"{MAGIC_COOKIE}{loop_part}.{unique or random_hex(4)}"


def branch_loop_part(branch: str | None) -> str | None:
    """The loop hash inside a branch made by `make_branch`, or None for other branches."""
    if not branch or not branch.startswith(MAGIC_COOKIE):
        return None
    body = branch[len(MAGIC_COOKIE) :]
    part, dot, _ = body.partition(".")
    return part if dot and len(part) == 16 else None


def check_loop(request: Request, is_own_via: Callable[[Via], bool]) -> Rejection | None:
    """§16.3 step 4: 482 if the request has been here before *unchanged*.

    For every Via of ours in the request, recompute the loop hash as we would have when
    we forwarded it (with the Via below ours as the then-topmost Via). Equal means a
    loop; different means a spiral (e.g. the Request-URI was rewritten elsewhere), which
    is legitimate and is forwarded again.
    """
    vias = request.vias
    for i, via in enumerate(vias[:-1]):
        if not is_own_via(via):
            continue
        part = branch_loop_part(via.branch)
        if part is not None and part == loop_hash(request, vias[i + 1]):
            return Rejection(482)
    return None
