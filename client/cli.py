# -*- test-case-name: tests.interop.test_sipclient_calls -*-
"""``sipclient``: a SIP user agent on the console, driven by stdin, reporting on stdout.

Usage (see ``sipclient --help``)::

    sipclient --domain a.lab --user alice [--password PW] [--proxy HOST:PORT] [--port N]
              [--interface IP] [--auto-answer] [--busy] [--busy-when-in-call]
              [--play FILE.wav] [--record FILE.wav] [--call URI] [--hangup-after SECONDS]
              [--codec opus|pcmu|pcma] [--ring-timeout SECONDS] [--no-register] [--verbose]

Commands, one per line on stdin (``N`` is a call number; without it the most recent
call that fits is meant)::

    call URI [CODEC]    place a call (URI may be "bob", "bob@b.lab" or "sip:bob@b.lab");
                        CODEC (opus, pcmu, pcma) overrides --codec for this call
    invite URI [CODEC]  call URI and, once connected, mix it with the calls we are in
    answer [N]          answer a ringing incoming call
    reject [N]          decline a ringing incoming call (603 Decline)
    hangup [N|all]      hang up (CANCEL before the answer, 603 while ringing here, else BYE)
    hold [N]            put a call on hold (re-INVITE with a=sendonly)
    resume [N]          take it off hold (re-INVITE with a=sendrecv)
    conference          resume every connected call and mix them locally, N-1: each
                        participant hears all the others and us (needs the media engine);
                        one hanging up leaves the rest mixed; our leaving (hangup all,
                        quit) ends every call
    dtmf DIGITS [N]     send DTMF (RFC 4733 telephone-events: 0-9 * # A-D)
    status              print the registration and every call
    quit                hang up everything, unregister and exit

Output grammar: one line per event, space separated, first word says what it is; a
line never wraps and nothing else goes to stdout (diagnostics go to stderr with
``--verbose``)::

    ready <contact-uri>                         listening (first line; gives the port)
    registered <aor> expires=<seconds>          REGISTER (or its refresh) succeeded
    unregistered <aor>
    registration failed <status> <reason>
    call <n> outgoing <uri>
    call <n> incoming <from-uri>
    call <n> redirected <uri>                   following a 3xx Contact
    call <n> ringing | early | connected
    call <n> held | resumed                     we put it on hold / took it off
    call <n> remote-held | remote-resumed       the peer did
    call <n> hold-failed <status> <reason>      (also resume-failed)
    call <n> ended <why>
        why = <status> <reason>   a final response: ours (e.g. 486 Busy Here, 603 Decline,
                                  480 Temporarily Unavailable) or the peer's
            | bye                 the peer hung up
            | hangup              we hung up
            | cancelled           the caller cancelled before we answered
            | error <text>        anything else (no ACK, no usable SDP ...)
    call <n> dtmf <digit>                       the peer sent a DTMF digit (RFC 4733)
    call <n> dtmf-sent <digits>                 our digits are queued for sending
    conference on <n>,<n>[,...]                 we mix these calls (again after a change)
    conference off                              down to one call: plain audio again
    status registration <unregistered|registering|registered|failed|disabled>
    status call <n> <state> <outgoing|incoming> <uri>
    status media <n> <key>=<value> ...          the media engine's counters (talking calls)
    error: <text>                               a bad command; the client carries on

Exit status: 0 normally (with ``--call``: 0 if the call was connected, 1 if not);
1 when the first registration fails (bad password, no proxy: one line on stderr);
2 for bad options or files (one line on stderr).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys
from typing import Any, NoReturn

from client.call import Call
from client.media_hook import MediaOptions, load_media_factory
from client.ua import UAConfig, UserAgent
from sipcore.errors import ParseError
from sipcore.twisted.transport import Address

__all__ = ["main", "parse_args"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, as the design asks, not argparse's usage block.
        self.exit(2, f"sipclient: error: {message}\n")


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port_s = text.rpartition(":")
    if not sep or not host or not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port_s)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < 10**6:
        raise argparse.ArgumentTypeError(f"out of range: {text!r}")
    return value


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"not a port: {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="sipclient", description="SIP user agent (see the module docstring).")
    p.add_argument("--domain", required=True, help="our SIP domain, e.g. a.lab")
    p.add_argument("--user", required=True, help="our user name, e.g. alice")
    p.add_argument("--password", default=os.environ.get("SIPCLIENT_PASSWORD"),
                   help="digest password (default: $SIPCLIENT_PASSWORD)")
    p.add_argument("--proxy", type=_host_port, default=("127.0.0.1", 5060),
                   metavar="HOST:PORT", help="outbound proxy/registrar (default 127.0.0.1:5060)")
    p.add_argument("--port", type=_port, default=0, help="local SIP port (0: any)")
    p.add_argument("--interface", default="127.0.0.1", help="local IP address")
    p.add_argument("--auto-answer", action="store_true", help="answer incoming calls at once")
    p.add_argument("--busy", action="store_true", help="answer every call 486 Busy Here")
    p.add_argument("--busy-when-in-call", action="store_true",
                   help="486 Busy Here while another call is active")
    p.add_argument("--play", metavar="FILE.wav", help="send this WAV file instead of the mic")
    p.add_argument("--record", metavar="FILE.wav", help="record received audio to this file")
    p.add_argument("--call", metavar="URI", help="call URI, wait for the end, exit")
    p.add_argument("--hangup-after", type=_seconds, metavar="SECONDS",
                   help="hang up calls this long after they connect")
    p.add_argument("--codec", choices=("opus", "pcmu", "pcma"), default="pcmu",
                   help="preferred codec (default pcmu)")
    p.add_argument("--ring-timeout", type=_seconds, default=60.0, metavar="SECONDS",
                   help="answer 480 if an incoming call is not answered in time (default 60)")
    p.add_argument("--expires", type=int, default=3600, help="registration expiry asked for")
    p.add_argument("--no-register", action="store_true", help="do not REGISTER")
    p.add_argument("--verbose", action="store_true", help="log SIP traffic to stderr")
    p.add_argument("--moh", metavar="FILE.wav",
                   help="music on hold: played to a peer we put on hold")
    p.add_argument("--audio-device", metavar="NAME",
                   help="sound device (name, part of a name, or index; 'none': no sound card)")
    p.add_argument("--trace", metavar="FILE",
                   help="append every SIP message to FILE (JSON lines, see sipcalling-trace)")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check the options; exits 2 with one line on stderr when they are bad."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        ipaddress.ip_address(args.interface)
    except ValueError:
        parser.error(f"--interface must be an IP address, got {args.interface!r}")
    host, port = args.proxy
    try:
        ipaddress.ip_address(host)
    except ValueError:
        try:
            host = socket.gethostbyname(host)
        except OSError:
            parser.error(f"cannot resolve proxy host {host!r}")
    args.proxy = (host, port)
    args.media = MediaOptions(play=args.play, record=args.record, codec=args.codec,
                              moh=args.moh, audio_device=args.audio_device)
    try:
        from client.media.devices import AudioError
        from client.media.session import check_media_options
    except ImportError:  # no media engine (numpy missing): NullMedia opens no files
        pass
    else:
        try:
            # Open --play/--moh/--record once now: a bad file is one line at startup,
            # not a failure at the first call.
            check_media_options(args.media)
        except (AudioError, OSError, ValueError) as err:
            parser.error(str(err))
    if not 0 <= args.expires <= 2**31:
        parser.error("--expires out of range")
    for name in ("user", "domain"):
        value = getattr(args, name)
        if not value or any(c in value for c in " \t<>@;:\"") :
            parser.error(f"bad --{name} {value!r}")
    return args


class App:
    """Glue between the UA, the console and the reactor."""

    def __init__(self, args: argparse.Namespace, reactor: Any) -> None:
        self.args = args
        self.reactor = reactor
        self.exit_code = 0
        self.stopping = False
        self.main_call: Call | None = None
        factory, self.media_kind = load_media_factory()
        self.media_factory = factory
        config = UAConfig(
            domain=args.domain, user=args.user, password=args.password,
            proxy=Address("UDP", args.proxy[0], args.proxy[1]),
            auto_answer=args.auto_answer, busy=args.busy,
            busy_when_in_call=args.busy_when_in_call, ring_timeout=args.ring_timeout,
            codec=args.codec, register=not args.no_register, expires=args.expires,
            media=args.media,
        )
        self.ua = UserAgent(config, reactor, self.report, reactor=reactor,
                            media_factory=factory)

    # -- output ---------------------------------------------------------------------------
    def write(self, line: str) -> None:
        # Synchronous, flushed writes: a script waiting for a line must get it even when
        # the process exits right after (the reactor would drop a pending async write).
        data = (line.replace("\n", " ") + "\n").encode("utf-8", "replace")
        try:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
        except (BrokenPipeError, OSError):
            pass  # nobody is listening any more; keep running the calls

    def report(self, line: str) -> None:
        self.write(line)
        words = line.split()
        if len(words) >= 3 and words[0] == "call":
            self._call_event(int(words[1]), words[2])

    def _call_event(self, number: int, event: str) -> None:
        call = self.ua.find_call(number)
        if call is None:
            return
        if event == "connected" and self.args.hangup_after:
            call.set_timer("hangup-after", self.reactor.callLater(
                self.args.hangup_after, self._hangup_after, call))
        if event == "ended" and call is self.main_call:
            self.exit_code = 0 if call.connected else 1
            self.reactor.callLater(0, self.quit)

    def _hangup_after(self, call: Call) -> None:
        if call.talking:
            self.ua.hangup(call)

    # -- life cycle -----------------------------------------------------------------------
    def start(self) -> None:
        self.write(f"ready {self.ua.contact_uri}")
        if self.ua.config.register:
            self.ua.register().addCallback(self._first_registration)
        elif self.args.call:
            self._place_main_call()

    def _first_registration(self, status: int) -> None:
        """A phone that cannot register at start is misconfigured: say why and exit 1.

        Later refresh failures only print their line: calls in progress go on and the
        UA keeps retrying, as the registrar may come back.
        """
        if 200 <= status < 300:
            if self.args.call:
                self._place_main_call()
            return
        host, port = self.args.proxy
        why = {401: "credentials refused (wrong --password?)",
               403: "refused by the registrar",
               407: "credentials refused (wrong --password?)",
               408: "no answer (is a proxy running there?)"}.get(status, f"status {status}")
        sys.stderr.write(f"sipclient: error: registration with {host}:{port} failed: {why}\n")
        self.exit_code = 1
        self.quit()

    def _place_main_call(self) -> None:
        try:
            self.main_call = self.ua.call(self.args.call)
        except ParseError as err:
            self.write(f"error: bad URI: {err.reason}")
            self.exit_code = 1
            self.quit()
            return
        if self.main_call.state == "ended":
            self.exit_code = 1
            self.reactor.callLater(0, self.quit)

    def quit(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        d = self.ua.shutdown()
        d.addBoth(lambda _: self.reactor.stop() if self.reactor.running else None)

    def before_shutdown(self) -> Any:
        """Ctrl-C / SIGTERM: still hang up and unregister (bounded) before exiting."""
        if self.stopping:
            return None
        self.stopping = True
        return self.ua.shutdown()

    # -- commands -------------------------------------------------------------------------
    def command(self, line: str) -> None:
        words = line.split()
        if not words or words[0].startswith("#"):
            return
        name, rest = words[0].lower(), words[1:]
        handler = getattr(self, f"cmd_{name}", None)
        if handler is None:
            self.write(f"error: unknown command {name!r}")
            return
        try:
            handler(rest)
        except (ValueError, ParseError) as err:
            text = err.reason if isinstance(err, ParseError) else str(err)
            self.write(f"error: {text}")

    def _pick(self, rest: list[str], states: tuple[str, ...], what: str) -> Call:
        if len(rest) > 1:
            raise ValueError("too many arguments")
        number = None
        if rest:
            if not rest[0].isdigit():
                raise ValueError(f"not a call number: {rest[0]!r}")
            number = int(rest[0])
        call = self.ua.find_call(number, states)
        if call is None or (number is not None and call.state not in states):
            raise ValueError(f"no call to {what}" if number is None
                             else f"call {number} cannot {what} now")
        return call

    def cmd_call(self, rest: list[str]) -> None:
        if len(rest) not in (1, 2):
            raise ValueError("usage: call URI [opus|pcmu|pcma]")
        self.ua.call(rest[0], rest[1].lower() if len(rest) == 2 else None)

    def cmd_answer(self, rest: list[str]) -> None:
        self.ua.answer(self._pick(rest, ("incoming",), "answer"))

    def cmd_reject(self, rest: list[str]) -> None:
        self.ua.reject(self._pick(rest, ("incoming",), "reject"))

    def cmd_hangup(self, rest: list[str]) -> None:
        states = ("calling", "ringing", "early", "incoming", "confirmed", "held",
                  "remote-held", "both-held")
        if rest == ["all"]:
            calls = [c for c in self.ua.calls if c.state in states]
            if not calls:
                raise ValueError("no call to hang up")
            for call in calls:
                if call.state in states:  # an earlier hangup may have ended it
                    self.ua.hangup(call)
            return
        self.ua.hangup(self._pick(rest, states, "hang up"))

    def cmd_hold(self, rest: list[str]) -> None:
        self.ua.hold(self._pick(rest, ("confirmed", "remote-held"), "hold"))

    def cmd_resume(self, rest: list[str]) -> None:
        self.ua.resume(self._pick(rest, ("held", "both-held"), "resume"))

    def cmd_invite(self, rest: list[str]) -> None:
        if len(rest) not in (1, 2):
            raise ValueError("usage: invite URI [opus|pcmu|pcma]")
        self.ua.invite(rest[0], rest[1].lower() if len(rest) == 2 else None)

    def cmd_conference(self, rest: list[str]) -> None:
        if rest:
            raise ValueError("usage: conference")
        self.ua.conference()  # reports `conference on N,M`

    def cmd_dtmf(self, rest: list[str]) -> None:
        if len(rest) not in (1, 2):
            raise ValueError("usage: dtmf DIGITS [N]")
        call = self._pick(rest[1:], ("confirmed", "remote-held"), "send DTMF")
        queued = self.ua.send_dtmf(call, rest[0])
        self.write(f"call {call.number} dtmf-sent {rest[0][:queued]}")

    def cmd_status(self, rest: list[str]) -> None:
        state = self.ua.registration.state if self.ua.config.register else "disabled"
        self.write(f"status registration {state}")
        if self.ua.conference_calls:
            numbers = ",".join(str(c.number) for c in self.ua.conference_calls)
            self.write(f"status conference {numbers}")
        for call in self.ua.calls:
            self.write(f"status call {call.number} {call.state} {call.direction} {call.remote}")
            if call.media is not None and call.talking:
                try:
                    stats = call.media.stats()
                except Exception:  # noqa: BLE001 - status must not fail on media trouble
                    continue
                fields = " ".join(f"{k}={v}" for k, v in stats.items())
                self.write(f"status media {call.number} {fields}".rstrip())

    def cmd_help(self, rest: list[str]) -> None:
        self.write("help call invite answer reject hangup hold resume dtmf conference status quit")

    def cmd_quit(self, rest: list[str]) -> None:
        self.quit()

    cmd_exit = cmd_quit


def _console_protocol(app: App) -> Any:
    from twisted.internet.interfaces import IHalfCloseableProtocol
    from twisted.protocols.basic import LineOnlyReceiver
    from zope.interface import implementer

    @implementer(IHalfCloseableProtocol)
    class Console(LineOnlyReceiver):
        delimiter = b"\n"
        MAX_LENGTH = 4096

        def lineReceived(self, line: bytes) -> None:  # noqa: N802
            app.command(line.decode("utf-8", "replace").strip())

        def lineLengthExceeded(self, line: bytes) -> None:  # noqa: N802
            app.write("error: line too long")

        def readConnectionLost(self) -> None:  # noqa: N802
            # EOF on stdin: an interactive session ends; with --call the call decides.
            if not app.args.call:
                app.quit()

        def writeConnectionLost(self) -> None:  # noqa: N802
            pass

        def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
            pass

    return Console()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from twisted.internet import reactor, stdio
    from twisted.internet.error import CannotListenError

    from sipcore.twisted.stack import SipStack

    if args.verbose:
        from twisted.logger import globalLogBeginner, textFileLogObserver

        globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)],
                                         redirectStandardIO=False)
    tracer = None
    if args.trace:
        from sipcore.trace.writer import TraceWriter

        try:
            tracer = TraceWriter(args.trace, label=f"{args.user}@{args.domain}", role="ua",
                                 clock=reactor)
        except (OSError, ValueError) as err:
            sys.stderr.write(f"sipclient: error: --trace {args.trace}: {err}\n")
            return 2
        # Last, after the hang-ups and unregistration have been sent and traced.
        reactor.addSystemEventTrigger("after", "shutdown", tracer.close)
    app = App(args, reactor)
    stack = SipStack(reactor, app.ua, interface=args.interface, port=args.port,
                     transports=("UDP",), log_messages=args.verbose, tracer=tracer)
    app.ua.stack = stack
    try:
        stack.start()
    except CannotListenError as err:
        sys.stderr.write(f"sipclient: error: cannot listen on {args.interface}:{args.port}: "
                         f"{err.socketError}\n")
        return 2
    # StandardIO reads the commands; its writer gets /dev/null because output goes out
    # synchronously through sys.stdout (StandardIO would make fd 1 non-blocking).
    stdio.StandardIO(_console_protocol(app), stdout=os.open(os.devnull, os.O_WRONLY))
    reactor.addSystemEventTrigger("before", "shutdown", app.before_shutdown)
    reactor.callWhenRunning(app.start)
    reactor.run()
    return app.exit_code


if __name__ == "__main__":
    sys.exit(main())
