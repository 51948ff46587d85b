# -*- test-case-name: tests.proxy.test_core -*-
"""The proxy role (RFC 3261 §16): what happens to each request the stack hands over."""

from __future__ import annotations

from typing import Any

from sipcore.message import Request
from sipcore.transaction import ServerTransaction
from sipcore.twisted.role import BaseRole
from sipcore.twisted.transport import Address


class ProxyRole(BaseRole):
    """Answers OPTIONS for itself; routing arrives with the proxy issue."""

    def __init__(self, config: Any, clock: Any) -> None:
        self.config = config
        self.clock = clock
        self.domains = set(config.get("domains") or [])

    def request_received(self, request: Request, tx: ServerTransaction, source: Address) -> None:
        super().request_received(request, tx, source)
