"""twistd plugins: `twistd sipproxy`, `twistd sipregistrar`, `twistd sipredirect`.

Kept tiny (Twisted scans this directory on every twistd start); the real modules are
imported lazily by dotted name.
"""

from twisted.application.service import ServiceMaker

sipproxy = ServiceMaker(
    "sipcalling SIP proxy",
    "proxy.tap",
    "Stateful SIP proxy with an embedded registrar (RFC 3261 §16, §10).",
    "sipproxy",
)
sipregistrar = ServiceMaker(
    "sipcalling SIP registrar",
    "registrar.tap",
    "SIP registrar alone (RFC 3261 §10).",
    "sipregistrar",
)
sipredirect = ServiceMaker(
    "sipcalling SIP redirect server",
    "proxy.redirect_tap",
    "SIP redirect server answering 3xx (RFC 3261 §8.3).",
    "sipredirect",
)
