"""Shared atheris entry point: ``python fuzz/fuzz_<target>.py [libFuzzer args] [corpus dirs]``.

Only ``sipcore`` is instrumented (coverage feedback comes from our parser, not
from Twisted or the standard library), which keeps executions per second high.
"""

from __future__ import annotations

import os
import sys


def main(target: str) -> None:
    import atheris

    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    for path in (root, here):
        if path not in sys.path:
            sys.path.insert(0, path)
    with atheris.instrument_imports(include=["sipcore"]):
        import sipcore.digest  # noqa: F401
        import sipcore.malformed  # noqa: F401
        import sipcore.message  # noqa: F401
        import sipcore.sdp  # noqa: F401
    import targets

    check = targets.CHECKS[target]
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()
