"""``sipclient`` with a trace file: ``python -m proxy.lab.traced_client --trace FILE
[--trace-label NAME] -- <sipclient options>``.

sipclient has no ``--trace`` option yet (client/ belongs to another work stream), but
the ladder diagrams are much clearer when the phones are traced too: every arrow then
has both ends, and retransmissions or losses between phone and proxy show. So this
launcher gives the stack the same `TraceWriter` the servers use before handing over to
the unchanged ``client.cli.main``. Once sipclient grows ``--trace`` this module can go.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["main"]


def _install_tracer(path: str, label: str) -> None:
    import sipcore.twisted.stack as stack_module
    from sipcore.trace.writer import TraceWriter

    base = stack_module.SipStack

    class TracedSipStack(base):  # type: ignore[misc, valid-type]
        def __init__(self, reactor: Any, role: Any, timers: Any = None, **endpoint: Any):
            # The reactor is the writer's flush clock, as for the servers.
            endpoint.setdefault(
                "tracer", TraceWriter(path, label=label, role="ua", clock=reactor)
            )
            super().__init__(reactor, role, timers, **endpoint)

    # client.cli imports SipStack from this module inside main(), so the
    # replacement must be in place before main() runs.
    stack_module.SipStack = TracedSipStack  # type: ignore[misc]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        split = argv.index("--")
    except ValueError:
        split = len(argv)
    parser = argparse.ArgumentParser(prog="traced_client")
    parser.add_argument("--trace", required=True, metavar="FILE")
    parser.add_argument("--trace-label", default="", metavar="NAME")
    own = parser.parse_args(argv[:split])
    _install_tracer(own.trace, own.trace_label)
    from client.cli import main as sipclient_main

    return sipclient_main(argv[split + 1:])


if __name__ == "__main__":
    sys.exit(main())
