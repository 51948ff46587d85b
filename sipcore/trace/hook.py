"""Build a process's `TraceWriter` from its twistd options (``--trace FILE``).

Kept apart from the service so that every role (proxy, registrar, redirect server,
and later the user agent) labels its trace the same way: ``"<role> <domains>"``,
e.g. ``"proxy a.lab b.lab"``. No Twisted import: the reactor is only a clock here.
"""

from __future__ import annotations

import sys
from typing import Any

from sipcore.trace.writer import DEFAULT_KEEP, DEFAULT_MAX_BYTES, TraceWriter


def role_name(role: object) -> str:
    """``ProxyRole`` -> ``proxy``; ``RedirectRole`` -> ``redirect``."""
    name = type(role).__name__
    for suffix in ("Role", "Service", "Server"):
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    return name.lower()


def tracer_from_config(config: Any, role: object, clock: Any) -> TraceWriter | None:
    """The writer for ``config['trace']``, or None when tracing is off or impossible.

    Optional settings (if the options define them): ``trace-max-bytes``,
    ``trace-keep``, ``trace-label``. A trace file that cannot be opened is reported
    in one line and the server runs without tracing: a lab must not lose its proxy
    to a typo in a trace path.
    """
    path = config.get("trace")
    if not path:
        return None
    kind = role_name(role)
    domains = " ".join(config.get("domains") or [])
    label = config.get("trace-label") or f"{kind} {domains}".strip()
    try:
        return TraceWriter(
            path, label=label, role=kind,
            max_bytes=int(config.get("trace-max-bytes") or DEFAULT_MAX_BYTES),
            keep=int(config.get("trace-keep") if config.get("trace-keep") is not None
                     else DEFAULT_KEEP),
            clock=clock,
        )
    except (OSError, ValueError) as err:
        print(f"--trace {path}: {err}; running without a trace", file=sys.stderr)
        return None
