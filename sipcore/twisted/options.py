# -*- test-case-name: tests.sipcore.test_options -*-
"""Command-line options shared by the twistd plugins (sipproxy, sipregistrar, sipredirect).

Each option is validated in `postOptions` so a bad value stops twistd with a one-line
`UsageError` before any socket is opened.
"""

from __future__ import annotations

import ipaddress
import os

from twisted.python import usage

from sipcore.errors import ParseError
from sipcore.twisted.protection import ProtectionConfig, parse_network, parse_rate
from sipcore.twisted.tls import TLSConfigError, server_context
from sipcore.uri import SipURI, parse_uri

DEFAULT_LOCATION = "sqlite:var/location.sqlite"


def parse_hostport(text: str, default_port: int = 5060) -> tuple[str, int]:
    """`HOST[:PORT]` or `[IPv6][:PORT]` -> (host, port); raises UsageError."""
    text = text.strip()
    if not text:
        raise usage.UsageError("empty HOST:PORT")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise usage.UsageError(f"bad address {text!r}: unclosed '['")
        port_text = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise usage.UsageError(f"bad address {text!r}")
    elif text.count(":") > 1:
        host, port_text = text, ""  # a bare IPv6 literal
    else:
        host, _, port_text = text.partition(":")
    port = default_port
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise usage.UsageError(f"bad port in {text!r}")
        port = int(port_text)
    if not host:
        raise usage.UsageError(f"missing host in {text!r}")
    return host, port


def check_port(value: str, what: str = "port") -> int:
    if not value.isdigit() or not 0 <= int(value) < 65536:
        raise usage.UsageError(f"invalid {what}: {value!r}")
    return int(value)


def check_interface(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise usage.UsageError(f"invalid interface address: {value!r}") from None
    return value


def check_domain(value: str) -> str:
    value = value.strip().lower()
    if not value or any(c in value for c in " \t;,:@/<>\"") or len(value) > 253:
        raise usage.UsageError(f"invalid domain: {value!r}")
    return value


class ServerOptions(usage.Options):
    """Options every server role takes."""

    optParameters = [
        ["interface", "i", "127.0.0.1", "IP address to listen on."],
        ["port", "p", "5060", "UDP and TCP port to listen on."],
        ["tls-port", None, None, "TLS port (needs --tls-cert and --tls-key)."],
        ["tls-cert", None, None, "PEM certificate file for TLS."],
        ["tls-key", None, None, "PEM private key file for TLS."],
        ["tls-ca", None, None, "Require TLS clients to present a certificate signed by this CA."],
        ["location", "l", DEFAULT_LOCATION,
         "Location store: memory: | sqlite:PATH | redis://HOST:PORT/DB."],
        ["users", "u", None, "Users file; when given, requests need digest authentication."],
        ["trace", None, None, "Write every SIP message to this JSON-lines file."],
        ["web", None, None, "Serve the status page and /metrics on this TCP port."],
        ["trace-max-bytes", None, "10000000", "Rotate the trace file at this size."],
        ["trace-keep", None, "5", "Rotated trace files kept (FILE.1 ... FILE.N)."],
        ["trace-label", None, None, "Name of this process in ladder diagrams."],
        # Registrar (RFC 3261 §10.3) and digest authentication (RFC 8760).
        ["min-expires", None, "60", "Shortest registration accepted (423 below it)."],
        ["max-expires", None, "7200", "Longer registrations are cut to this."],
        ["default-expires", None, "3600", "Registration time when the UA asks for none."],
        ["auth-algorithms", None, "SHA-256,MD5",
         "Digest algorithms offered, most preferred first (RFC 8760 §2.4)."],
        # Flood protection and resource bounds (sipcore.twisted.protection).
        ["pike-ban", None, "30", "Seconds a source over --pike-rate is ignored."],
        ["pike-table", None, "100000", "Most source IPs the rate limiter tracks (LRU)."],
        ["max-connections-per-ip", None, "64",
         "Concurrent inbound TCP/TLS connections per IP (0: unlimited)."],
        ["max-connections", None, "10000",
         "Concurrent inbound TCP/TLS connections in total (0: unlimited)."],
        ["idle-timeout", None, "300", "Close TCP/TLS connections idle this many seconds."],
        ["max-transactions", None, "40000",
         "In-progress transactions above which new requests get 503 (0: no cap)."],
        ["max-lingering", None, "1000000",
         "Answered transactions still absorbing retransmissions (Timer J etc., ~1.2 KB"
         " each) above which new requests get 503 (0: no cap)."],
        ["max-lag", None, "2",
         "Reactor lag in seconds above which new requests get 503 (0: off)."],
        ["max-queue-delay", None, "0.25",
         "Seconds the oldest unread UDP datagram may have waited before new calls"
         " (INVITE) get 503 (0: off)."],
        ["max-request-age", None, "0.4",
         "Seconds a UDP request may have waited unread before it is dropped (0: off):"
         " below T1 (0.5 s), so that what is answered is answered before its sender"
         " retransmits it."],
        ["retry-after", None, "5", "Retry-After seconds in overload 503 answers."],
        # Brute-force protection of digest auth (registrar.bruteforce).
        ["auth-fail-limit", None, "5/60",
         "N/SECONDS: N failed authentications from one IP within SECONDS lock it out"
         " (0: off)."],
        ["auth-lockout", None, "60", "Seconds an IP over --auth-fail-limit gets 403."],
        # Graceful stop (proxy.lifecycle.drain).
        ["shutdown-grace", None, "2",
         "Seconds SIGTERM waits for pending transactions (new requests get 503) before"
         " cancelling them and exiting (0: stop at once)."],
    ]
    optFlags = [
        ["quiet", "q", "Do not log one line per SIP message."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["domains"] = []
        self["routes"] = {}
        self["tls-context"] = None
        self["pike-rate"] = "2000/2"
        self["trusted"] = []
        self["protection"] = None

    def opt_domain(self, value: str) -> None:
        """A domain this server is responsible for (repeatable)."""
        self["domains"].append(check_domain(value))

    opt_d = opt_domain

    def opt_route(self, value: str) -> None:
        """Static route DOMAIN=HOST:PORT for another domain (repeatable)."""
        domain, sep, target = value.partition("=")
        if not sep:
            raise usage.UsageError(f"--route wants DOMAIN=HOST:PORT, got {value!r}")
        self["routes"][check_domain(domain)] = parse_hostport(target)

    def opt_pike_rate(self, value: str) -> None:
        """Per-IP limit N/SECONDS (e.g. 2000/2, the default); 0 disables."""
        try:
            parse_rate(value)
        except ValueError as err:
            raise usage.UsageError(f"--pike-rate: {err}") from None
        self["pike-rate"] = value

    def opt_pike(self, value: str) -> None:
        """The same as --pike-rate."""
        # A method, not `opt_pike = opt_pike_rate`: Twisted's usage text cannot list a
        # long-named alias (KeyError), which turned every usage error into a traceback.
        self.opt_pike_rate(value)

    def opt_trusted(self, value: str) -> None:
        """Network (CIDR) exempt from per-IP rate/connection limits, auth lockout and,
        in the proxy, digest auth (a peer proxy, a PBX; repeatable)."""
        try:
            self["trusted"].append(parse_network(value))
        except ValueError as err:
            raise usage.UsageError(f"--trusted: {err}") from None

    def _protection(self) -> ProtectionConfig:
        def number(name: str, kind: type = int) -> float:
            try:
                value = kind(self[name])
            except ValueError:
                value = -1
            if not value >= 0:  # also NaN
                raise usage.UsageError(f"--{name}: want a number >= 0, got {self[name]!r}")
            return value

        requests, window = parse_rate(self["pike-rate"])
        return ProtectionConfig(
            pike_requests=requests,
            pike_window=window,
            pike_ban=number("pike-ban", float),
            pike_max_ips=max(1, int(number("pike-table"))),
            trusted=tuple(self["trusted"]),
            max_connections_per_ip=int(number("max-connections-per-ip")),
            max_connections=int(number("max-connections")),
            idle_timeout=number("idle-timeout", float) or 300.0,
            max_transactions=int(number("max-transactions")),
            max_lingering=int(number("max-lingering")),
            max_lag=number("max-lag", float),
            max_queue_delay=number("max-queue-delay", float),
            max_request_age=number("max-request-age", float),
            retry_after=int(number("retry-after")),
        )

    def _auth_guard_options(self) -> None:
        try:
            self["auth-fail-limit"] = parse_rate(str(self["auth-fail-limit"]))
        except ValueError as err:
            raise usage.UsageError(f"--auth-fail-limit: {err}") from None
        try:
            lockout = float(self["auth-lockout"])
        except ValueError:
            lockout = -1.0
        if not 0 < lockout <= 86400:
            raise usage.UsageError(
                f"--auth-lockout wants seconds in (0, 86400], got {self['auth-lockout']!r}"
            )
        self["auth-lockout"] = lockout

    def _registrar_options(self) -> None:
        from registrar.users import UsersFileError, load_users
        from sipcore.digest import UnsupportedAlgorithm, canonical_algorithm

        for name in ("min-expires", "max-expires", "default-expires", "trace-max-bytes",
                     "trace-keep"):
            value = str(self[name])
            if not value.isdigit() or not 0 < int(value) < 2**31:
                raise usage.UsageError(f"--{name} wants a positive number, got {value!r}")
            self[name] = int(value)
        if not self["min-expires"] <= self["default-expires"] <= self["max-expires"]:
            raise usage.UsageError("need --min-expires <= --default-expires <= --max-expires")
        try:
            names = str(self["auth-algorithms"]).split(",")
            algorithms = [canonical_algorithm(a.strip()) for a in names]
        except UnsupportedAlgorithm as err:
            raise usage.UsageError(f"--auth-algorithms: {err}") from None
        self["auth-algorithms"] = ",".join(algorithms)
        self["users-db"] = None
        if self["users"] is not None:
            # Loaded now so a bad users file is a one-line error before any socket opens.
            try:
                self["users-db"] = load_users(self["users"])
            except (OSError, UsersFileError) as err:
                raise usage.UsageError(f"--users: {err}") from None

    def postOptions(self) -> None:  # noqa: N802
        self._registrar_options()
        self["port"] = check_port(self["port"])
        if self["web"] is not None:
            self["web"] = check_port(self["web"], "web port")
        self["protection"] = self._protection()
        self._auth_guard_options()
        self["interface"] = check_interface(self["interface"])
        try:
            grace = float(self["shutdown-grace"])
        except ValueError:
            grace = -1.0
        if not 0 <= grace <= 3600:
            raise usage.UsageError(
                f"--shutdown-grace wants seconds in [0, 3600], got {self['shutdown-grace']!r}"
            )
        self["shutdown-grace"] = grace
        if self["tls-port"] is not None:
            self["tls-port"] = check_port(self["tls-port"], "TLS port")
            for name in ("tls-cert", "tls-key"):
                path = self[name]
                if not path:
                    raise usage.UsageError(f"--tls-port needs --{name}")
                if not os.path.isfile(path):
                    raise usage.UsageError(f"--{name}: no such file: {path}")
            try:
                self["tls-context"] = server_context(
                    self["tls-cert"], self["tls-key"], self["tls-ca"]
                )
            except TLSConfigError as err:
                raise usage.UsageError(str(err)) from None
        if self["users"] is not None and not os.path.isfile(self["users"]):
            raise usage.UsageError(f"--users: no such file: {self['users']}")
        location = self["location"]
        if not location.startswith(("memory:", "sqlite:", "redis://")):
            raise usage.UsageError(
                f"--location {location!r}: use memory:, sqlite:PATH or redis://HOST:PORT/DB"
            )


def load_or_create_secret(path: str) -> bytes:
    """32 random bytes kept in `path` (mode 0600), made on first use.

    Kept on disk, not per process, so that dialogs set up before a restart, or through
    another worker, still carry a Record-Route this process accepts.
    """
    try:
        with open(path, "rb") as f:
            secret = f.read()
        if len(secret) >= 16:
            return secret
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    secret = os.urandom(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secret)
    return secret


class ProxyOptions(ServerOptions):
    """`twistd sipproxy`: the proxy with its embedded registrar."""

    optParameters = [
        ["redirect-server", None, None,
         "Ask this redirect server (HOST:PORT) about foreign domains."],
        ["dns", None, None, "DNS server (HOST:PORT) for RFC 3263 NAPTR/SRV/A lookups."],
        ["rr-secret-file", None, "var/rr-secret",
         "With --users: key that signs our Record-Route (created if missing; share it "
         "between the workers and restarts of one proxy)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["upstreams"] = []

    def opt_upstream(self, value: str) -> None:
        """Last-resort next hop sip:HOST:PORT, e.g. a PBX (repeatable; failover in order)."""
        try:
            uri = parse_uri(value)
        except ParseError:
            uri = None
        if not isinstance(uri, SipURI):
            raise usage.UsageError(f"--upstream wants sip:HOST[:PORT], got {value!r}")
        self["upstreams"].append(uri)

    def postOptions(self) -> None:  # noqa: N802
        super().postOptions()
        if not self["domains"]:
            self["domains"] = ["a.lab"]
        if self["redirect-server"] is not None:
            self["redirect-server"] = parse_hostport(self["redirect-server"])
        if self["dns"] is not None:
            self["dns"] = parse_hostport(self["dns"], 53)
        self["rr-secret"] = b""
        if self["users"] is not None:
            try:
                self["rr-secret"] = load_or_create_secret(self["rr-secret-file"])
            except OSError as err:
                raise usage.UsageError(f"--rr-secret-file: {err}") from None

