# -*- test-case-name: tests.proxy.test_routing -*-
"""Route preprocessing (RFC 3261 §16.4) and target determination (§16.5), pure.

`LocalIdentity` knows which URIs mean "this proxy"; `preprocess_routes` applies §16.4;
`classify` decides what kind of target set a request has; `Target` is one entry of the
target set, and `q_groups` orders bindings for parallel-then-sequential forking.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from sipcore.headers import Via
from sipcore.message import Request
from sipcore.twisted.transport import Address, address
from sipcore.uri import URI, SipURI, parse_name_addr, parse_uri

__all__ = [
    "DIALOG_CREATING",
    "Decision",
    "LocalIdentity",
    "Target",
    "classify",
    "is_ip_literal",
    "parse_received",
    "preprocess_routes",
    "q_groups",
    "uri_address",
]

#: Requests that may create a dialog, so we Record-Route them (§16.6 step 4; RFC 6665
#: for SUBSCRIBE, RFC 3515 for REFER).
DIALOG_CREATING = frozenset({"INVITE", "SUBSCRIBE", "REFER", "NOTIFY"})

DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}
#: The Record-Route parameter carrying our per-dialog mark (`LocalIdentity.dialog_mark`).
DIALOG_MARK = "dlg"


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
#: What ipaddress.IPv4Address accepts (no leading zeros): the common case, checked
#: without building an address object or raising.
_DOTTED_QUAD_RE = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
_LITERAL_CACHE: dict[str, bool] = {}


def is_ip_literal(host: str) -> bool:
    if _DOTTED_QUAD_RE.fullmatch(host):
        return True
    hit = _LITERAL_CACHE.get(host)
    if hit is None:
        try:
            ipaddress.ip_address(host.strip("[]"))
            hit = True
        except ValueError:
            hit = False
        if len(_LITERAL_CACHE) >= 4096:
            _LITERAL_CACHE.clear()  # bounded: hosts come from the network
        _LITERAL_CACHE[host] = hit
    return hit


def _default_port(uri: SipURI) -> int:
    if uri.scheme == "sips" or uri.transport == "tls":
        return 5061
    return 5060


def uri_address(uri: SipURI) -> Address | None:
    """The next hop for a URI whose host is an IP literal (§18.1.1), else None.

    ``maddr`` wins over the host (§16.6 step 6 / §18.1.1); the transport comes from the
    ``transport`` parameter, TLS for sips, UDP otherwise.
    """
    host = uri.params.get("maddr") or uri.host
    if not is_ip_literal(host):
        return None
    transport = (uri.transport or ("tls" if uri.scheme == "sips" else "udp")).upper()
    return address(transport, host.strip("[]"), uri.port or _default_port(uri))


def parse_received(text: str | None) -> Address | None:
    """The address a registrar stored as a binding's NAT source, in any usual spelling.

    Accepts ``UDP 1.2.3.4:5060`` (`Address.__str__`), ``sip:1.2.3.4:5060;transport=tcp``
    and ``1.2.3.4:5060``; anything unusable gives None (the Contact is used instead).
    """
    if not text:
        return None
    text = text.strip()
    transport = "UDP"
    head, sep, rest = text.partition(" ")
    if sep and head.upper() in ("UDP", "TCP", "TLS"):
        transport, text = head.upper(), rest.strip()
    if text.lower().startswith(("sip:", "sips:")):
        try:
            uri = parse_uri(text)
        except ValueError:
            return None
        return uri_address(uri) if isinstance(uri, SipURI) else None
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not is_ip_literal(host):
        return None
    return address(transport, host.strip("[]"), int(port))


@dataclass(frozen=True, slots=True)
class LocalIdentity:
    """The addresses and domains that mean "this proxy"."""

    host: str
    port: int
    domains: frozenset[str] = frozenset()
    #: `--workers`: the port this worker sends requests from (its Via sent-by), and
    #: every worker's, so that a Via of a sibling counts as ours (loop detection).
    via_port: int | None = None
    via_ports: frozenset[int] = frozenset()
    #: With --users: the key that signs our Record-Route per dialog (see `dialog_mark`),
    #: so that only requests of dialogs we authorised skip authentication later.
    rr_secret: bytes = b""

    # Explicit __init__: mypyc compiles it natively; the dataclass-generated one runs
    # interpreted (~4x slower per object).
    def __init__(
        self,
        host: str,
        port: int,
        domains: frozenset[str] = frozenset(),
        via_port: int | None = None,
        via_ports: frozenset[int] = frozenset(),
        rr_secret: bytes = b"",
    ) -> None:
        object.__setattr__(self, "host", host)
        object.__setattr__(self, "port", port)
        object.__setattr__(self, "domains", domains)
        object.__setattr__(self, "via_port", via_port)
        object.__setattr__(self, "via_ports", via_ports)
        object.__setattr__(self, "rr_secret", rr_secret)

    def is_me(self, uri: URI) -> bool:
        """The URI names this element's address (§16.4: a Route or Request-URI value
        we put into Record-Route, or a request addressed to us)."""
        if not isinstance(uri, SipURI):
            return False
        host, mine = uri.host, self.host
        if host != mine:
            # Most requests name another host (a domain, a user agent): lower-casing
            # keeps an ASCII host's length, so a different one settles it unread.
            if len(host) != len(mine) and host[:1] != "[" and host != "localhost":
                return False
            host = host.strip("[]").lower()
            if host != mine.lower() and not (host == "localhost" and mine == "127.0.0.1"):
                return False
        return (uri.port or _default_port(uri)) == self.port

    def is_my_domain(self, uri: URI) -> bool:
        return isinstance(uri, SipURI) and uri.host.lower() in self.domains

    def is_own_via(self, via: Via) -> bool:
        if via.host.strip("[]").lower() != self.host.lower():
            return False
        port = via.port or 5060
        return port == self.port or port in self.via_ports

    def record_route(self, transport: str = "UDP", call_id: str | None = None) -> str:
        """The Record-Route value we insert (§16.6 step 4): loose routing, our address,
        and, when we authenticate, a mark binding it to the dialog's Call-ID."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        param = "" if transport.upper() == "UDP" else f";transport={transport.lower()}"
        if self.rr_secret and call_id is not None:
            param += f";{DIALOG_MARK}={self.dialog_mark(call_id)}"
        return f"<sip:{host}:{self.port}{param};lr>"

    def dialog_mark(self, call_id: str) -> str:
        """HMAC of the Call-ID: a Route carrying it was Record-Routed by us for a dialog
        whose set-up we authorised. Call-ID rather than tags because the callee's tag
        does not exist yet when the INVITE is record-routed; it is the same both ways."""
        digest = hmac.new(self.rr_secret, call_id.encode("utf-8", "surrogateescape"),
                          hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:12]).decode()

    def authorised_dialog(self, popped: SipURI | None, call_id: str) -> bool:
        """The Route we removed (§16.4) carries our mark for this Call-ID."""
        if popped is None:
            return False
        if not self.rr_secret:
            return True  # no authentication configured: nothing to prove
        mark = popped.params.get(DIALOG_MARK)
        return mark is not None and hmac.compare_digest(mark, self.dialog_mark(call_id))

    def via(self, transport: str, branch: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = self.via_port if self.via_port and transport.upper() == "UDP" else self.port
        return f"SIP/2.0/{transport.upper()} {host}:{port};branch={branch}"


def preprocess_routes(request: Request, me: LocalIdentity) -> SipURI | None:
    """RFC 3261 §16.4, in place. Returns the Route naming us that was removed, if any.

    1. The Request-URI is a value we Record-Routed: the previous hop is a strict router
       (RFC 2543), which put the remote target into the last Route. Restore it.
    2. The top Route names us: remove it (loose routing, §16.12).
    """
    popped: SipURI | None = None
    if me.is_me(request.uri) and "Route" in request.headers:
        routes = request.headers.get_all("Route")
        if isinstance(request.uri, SipURI):
            popped = request.uri
        request.uri = parse_name_addr(routes[-1]).uri
        request.headers.remove("Route")
        for value in routes[:-1]:
            request.headers.add("Route", value)
    parsed = request.routes
    if parsed and me.is_me(parsed[0].uri):
        uri = parsed[0].uri
        request.headers.pop_first("Route")
        if isinstance(uri, SipURI):
            popped = uri
    return popped


@dataclass(frozen=True, slots=True)
class Target:
    """One entry of the target set (§16.5) and how to reach it.

    ``uri`` becomes the Request-URI of the branch; ``routes`` are pushed as Route
    headers (a binding's Path, RFC 3327); ``dest`` overrides the next hop (static
    route, upstream, NAT-received address); ``failover_on`` lists the statuses that let
    the next sequential group run (None: any non-2xx, non-6xx); ``no_answer_timeout``
    gives up on a branch that got no response at all (a dead upstream) that much sooner
    than Timer B.
    """

    uri: URI
    dest: Address | None = None
    routes: tuple[str, ...] = ()
    q: float = 1.0
    failover_on: frozenset[int] | None = None
    no_answer_timeout: float | None = None
    label: str = ""
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    # Explicit __init__: mypyc compiles it natively; the dataclass-generated one runs
    # interpreted (~4x slower per object).
    def __init__(
        self,
        uri: URI,
        dest: Address | None = None,
        routes: tuple[str, ...] = (),
        q: float = 1.0,
        failover_on: frozenset[int] | None = None,
        no_answer_timeout: float | None = None,
        label: str = "",
        extra: dict[str, str] | None = None,
    ) -> None:
        object.__setattr__(self, "uri", uri)
        object.__setattr__(self, "dest", dest)
        object.__setattr__(self, "routes", routes)
        object.__setattr__(self, "q", q)
        object.__setattr__(self, "failover_on", failover_on)
        object.__setattr__(self, "no_answer_timeout", no_answer_timeout)
        object.__setattr__(self, "label", label)
        object.__setattr__(self, "extra", {} if extra is None else extra)


def q_groups(targets: Iterable[Target]) -> list[list[Target]]:
    """Parallel within a q value, sequential across q values, highest first (§16.6)."""
    groups: dict[float, list[Target]] = {}
    for target in targets:
        groups.setdefault(target.q, []).append(target)
    return [groups[q] for q in sorted(groups, reverse=True)]


@dataclass(frozen=True, slots=True)
class Decision:
    """What §16.5 says to do with a (preprocessed) request.

    kind: ``"local"`` (addressed to this element: answer it), ``"lookup"`` (one of our
    domains: consult the location service for ``aors``), ``"route"`` (a Route remains:
    forward to the Request-URI via it), ``"foreign"`` (another domain or an address).
    """

    kind: str
    aors: tuple[str, ...] = ()

    # Explicit __init__: mypyc compiles it natively; the dataclass-generated one runs
    # interpreted (~4x slower per object).
    def __init__(self, kind: str, aors: tuple[str, ...] = ()) -> None:
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "aors", aors)


def _aor(user: str, host: str, scheme: str = "sip") -> str:
    return f"{'sips' if scheme == 'sips' else 'sip'}:{user}@{host.lower()}"


def classify(request: Request, me: LocalIdentity) -> Decision:
    """§16.5: the target set comes from a Route, our location service, or elsewhere."""
    uri = request.uri
    if request.routes:
        # §16.4/§16.6: with a Route left after preprocessing the Request-URI is the
        # remote target; the Route says where to send it. Nothing to look up.
        return Decision("route")
    if not isinstance(uri, SipURI):
        return Decision("foreign")
    if me.is_me(uri):
        if uri.user is None:
            return Decision("local")
        # A user at our address (e.g. the Contact a redirect server handed out): look
        # the user up in the domain of the To header if it is ours, else in all ours.
        to = request.to.uri
        domains = sorted(me.domains)
        if isinstance(to, SipURI) and to.host.lower() in me.domains:
            domains.remove(to.host.lower())
            domains.insert(0, to.host.lower())
        return Decision("lookup", tuple(_aor(uri.user, d, uri.scheme) for d in domains))
    if me.is_my_domain(uri):
        if uri.user is None:
            return Decision("local")
        return Decision("lookup", (_aor(uri.user, uri.host, uri.scheme),))
    return Decision("foreign")
