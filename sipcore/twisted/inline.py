"""``inlineCallbacks`` for generator functions in mypyc-compiled modules.

Twisted's ``inlineCallbacks`` insists on a real ``types.GeneratorType``; a compiled
generator is not one. This module must stay interpreted: its trampoline is a plain
generator that delegates (``yield from``) to the compiled one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator
from typing import Any

from twisted.internet import defer


def inline_callbacks(f: Callable[..., Generator[Any, Any, Any]]) -> Callable[..., Any]:
    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        def trampoline() -> Generator[Any, Any, Any]:
            return (yield from f(*args, **kwargs))

        return defer.inlineCallbacks(trampoline)()

    return wrapper
