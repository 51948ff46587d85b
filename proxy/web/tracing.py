"""Combine tracer hooks: the transport has one ``tracer`` slot, ``--trace`` and ``--web``
both want every message."""

from __future__ import annotations

from typing import Any


class FanOut:
    """Calls each hook in order. Holds no state of its own, so nothing to close."""

    __slots__ = ("hooks",)

    def __init__(self, hooks: tuple[Any, ...]) -> None:
        self.hooks = hooks

    def __call__(self, direction: str, data: bytes, local: Any, remote: Any) -> None:
        for hook in self.hooks:
            hook(direction, data, local, remote)


def fan_out(*hooks: Any) -> Any:
    """One hook for the given ones (None entries skipped): None, the hook itself, or a
    `FanOut` — so the common single-hook case costs no extra call per message."""
    live = tuple(h for h in hooks if h is not None)
    if not live:
        return None
    if len(live) == 1:
        return live[0]
    return FanOut(live)
