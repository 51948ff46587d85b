# -*- test-case-name: tests.interop.test_registrar_sipp -*-
"""`twistd sipregistrar`: the registrar alone (RFC 3261 §10), no proxying."""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet import reactor

from proxy.service import SipService
from registrar.registrar import Registrar, build_registrar
from sipcore.message import KNOWN_METHODS, Request, make_response
from sipcore.transaction import ServerTransaction
from sipcore.twisted.options import ServerOptions
from sipcore.twisted.role import BaseRole
from sipcore.twisted.transport import Address

ALLOW = "REGISTER, OPTIONS"


class Options(ServerOptions):
    synopsis = "[options]"
    longdesc = "A SIP registrar for the given domains (default a.lab)."

    def postOptions(self) -> None:  # noqa: N802
        super().postOptions()
        if not self["domains"]:
            self["domains"] = ["a.lab"]


class RegistrarRole(BaseRole):
    """REGISTER via the Registrar, OPTIONS via BaseRole, anything else refused."""

    def __init__(self, registrar: Registrar) -> None:
        self.registrar = registrar

    def request_received(self, request: Request, tx: ServerTransaction, source: Address) -> None:
        if request.method == "REGISTER":
            self.registrar.answer(request, tx, source)
        elif request.method == "OPTIONS":
            super().request_received(request, tx, source)
        else:
            # §21.4.6: 405 for a method we know but do not offer, 501 (§21.5.2) for
            # one we do not know; both carry Allow.
            status = 405 if request.method in KNOWN_METHODS else 501
            response = make_response(request, status)
            response.headers.add("Allow", ALLOW)
            tx.send_response(response)

    def stop(self) -> Any:
        return self.registrar.location.close()


def makeService(config: Options) -> service.IService:  # noqa: N802 - twistd's name
    from sipcore.twisted.gctune import tune

    tune()  # a long-running server: see sipcore.twisted.gctune for why

    def build(clock: Any) -> RegistrarRole:
        return RegistrarRole(build_registrar(config, clock))

    return SipService(config, build, reactor)
