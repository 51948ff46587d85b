"""The location service: the registrar's store of bindings (RFC 3261 §10).

Three backends share one contract (``LocationService``), chosen by URL:

- ``memory:`` — a process-local dict; for tests and single-process deployments
  that can afford to lose registrations on restart.
- ``sqlite:PATH`` — the embedded default; survives restarts, and several processes
  on one host may share the file.
- ``redis://HOST:PORT/DB`` — shared by many processes/hosts (scale-out).

Every method returns a Deferred. Time comes from an injected clock (anything with
``seconds()``; the reactor by default) so tests drive expiry with
``twisted.internet.task.Clock``. ``expires_at`` values are absolute times on that
clock; with the reactor that is wall-clock epoch seconds, which is what makes them
meaningful to another process or after a restart.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from twisted.internet import defer
from zope.interface import Attribute, Interface

from registrar.location.binding import (
    WILDCARD,
    Binding,
    Change,
    LocationError,
    Removal,
    StaleCSeq,
    normalise_aor,
)

__all__ = [
    "WILDCARD",
    "Binding",
    "Change",
    "Clock",
    "ILocationService",
    "LocationError",
    "LocationService",
    "Removal",
    "StaleCSeq",
    "normalise_aor",
    "open_location",
]


class Clock(Protocol):
    def seconds(self) -> float: ...


class LocationService(Interface):
    """Store of registrar bindings. All methods return Deferreds.

    AOR arguments are normalised with ``normalise_aor``. Bindings whose
    ``expires_at`` is not after ``clock.seconds()`` are invisible to every read.
    """

    clock = Attribute("The clock (``seconds()``) expiry is measured against.")

    def get(aor: str) -> Any:
        """-> list[Binding]: unexpired bindings, highest q first, then most recent."""

    def put(binding: Binding) -> Any:
        """-> None: add or refresh one binding, without the CSeq check.

        Identity is (aor, contact), or (aor, instance_id, reg_id) when both are set
        (RFC 5626: a new flow's contact replaces the old flow's).
        """

    def remove(aor: str, contact: str) -> Any:
        """-> bool: remove every binding of ``aor`` whose contact is ``contact``."""

    def remove_all(aor: str) -> Any:
        """-> int: remove every binding of ``aor`` (``Contact: *``); count removed."""

    def update(aor: str, changes: list[Change]) -> Any:
        """-> list[Binding]: apply one REGISTER's changes atomically; return the result.

        Bindings are upserts, ``Removal``s deletions (``Removal(WILDCARD)`` = all).
        If a change targets an existing binding with the same Call-ID and a CSeq >=
        the change's, fails with StaleCSeq and applies nothing. Concurrent updates
        (also from other processes sharing the store) serialise per AOR.
        """

    def purge_expired() -> Any:
        """-> int: delete the expired bindings still stored; return how many.

        Backends may already have dropped some lazily (when their AOR was read or
        updated); those are not counted again.
        """

    def count() -> Any:
        """-> int: number of unexpired bindings."""

    def aors() -> Any:
        """-> list[str]: sorted AORs that have at least one unexpired binding."""

    def close() -> Any:
        """-> None: release connections/threads; the instance is unusable after."""


ILocationService = LocationService

_F = TypeVar("_F", bound=Callable[..., Any])


def deferred_errors(method: _F) -> _F:
    """Turn a synchronous exception (e.g. a malformed AOR) into a failed Deferred.

    Callers chain errbacks on every LocationService call; an exception escaping
    before the Deferred exists would bypass them.
    """

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except Exception:
            return defer.fail()

    return wrapper  # type: ignore[return-value]


_FORMS = "'memory:', 'sqlite:PATH' or 'redis://HOST:PORT/DB'"


def open_location(url: str, clock: Clock | None = None) -> Any:
    """Open the backend named by ``url``; ValueError (one line) for a bad URL.

    Opening sqlite is synchronous (schema set-up at start-up) and raises
    LocationError for a corrupt or unwritable file; redis connects lazily, and
    an unreachable server shows up as LocationError from the first operation.
    """
    if not isinstance(url, str):
        raise ValueError(f"location URL must be a string: expected {_FORMS}")
    scheme, sep, rest = url.partition(":")
    scheme = scheme.lower()
    if sep and scheme == "memory" and rest in ("", "//"):
        from registrar.location.memory import MemoryLocationService

        return MemoryLocationService(clock=clock)
    if sep and scheme == "sqlite" and rest:
        from registrar.location.sqlite import SqliteLocationService

        return SqliteLocationService(rest, clock=clock)
    if sep and scheme == "redis" and rest.startswith("//"):
        host, port, db, password = _parse_redis(url)
        from registrar.location.redis import RedisLocationService

        return RedisLocationService(host, port, db, password=password, clock=clock)
    raise ValueError(f"unsupported location URL {url!r}: expected {_FORMS}")


def _parse_redis(url: str) -> tuple[str, int, int, str | None]:
    bad = ValueError(f"bad redis location URL {url!r}: expected {_FORMS}")
    try:
        parts = urlsplit(url)
        port = parts.port or 6379
    except ValueError:
        raise bad from None
    if not parts.hostname or parts.query or parts.fragment:
        raise bad
    db_text = parts.path.strip("/") or "0"
    if not db_text.isdigit():
        raise bad
    return parts.hostname, port, int(db_text), parts.password
