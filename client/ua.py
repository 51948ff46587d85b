# -*- test-case-name: tests.client.test_ua -*-
"""The user agent role (RFC 3261 §8, §10, §12-15) on a :class:`SipStack`.

One :class:`UserAgent` is one SIP identity (``sip:user@domain``) with a local contact.
It registers (§10.2, digest auth §22), places and answers calls, and keeps a
:class:`client.call.Call` per call. Everything it does is reported as one console line
through the ``report`` callback (grammar in client/cli.py).

Where requests go: out-of-dialog requests go to the configured outbound proxy unless
their Request-URI names an IP address (then straight there, handy against a peer
without a proxy); in-dialog requests go to the first Route or the remote target
(§8.1.2, §12.2.1.1) when that is an IP address, else to the outbound proxy as well.
DNS (RFC 3263) is the proxy's business in this lab.

Timers (ring timeout, 2xx retransmission §13.3.1.4, registration refresh, the §14.1
glare back-off) all go through the injected clock, so tests drive them with
``twisted.internet.task.Clock``.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from client.call import Call
from client.media_hook import MediaFactory, MediaOptions, NullMedia
from sipcore.dialog import Dialog, DialogId, next_hop
from sipcore.digest import Challenge, answer_challenge, choose_challenge
from sipcore.errors import ParseError
from sipcore.ids import new_branch, new_call_id, new_tag
from sipcore.message import KNOWN_METHODS, Headers, Request, Response, make_response
from sipcore.offer_answer import (
    OPUS,
    PCMA,
    PCMU,
    TELEPHONE_EVENT,
    Codec,
    answer,
    build_offer,
    hold_offer,
    negotiated,
    resume_offer,
)
from sipcore.sdp import SessionDescription, parse_sdp
from sipcore.transaction import ServerInviteTransaction, ServerTransaction, State
from sipcore.twisted.role import ACCEPT, BaseRole
from sipcore.twisted.transport import Address
from sipcore.uri import NameAddr, SipURI, parse_uri

__all__ = ["UAConfig", "UserAgent", "codec_preference"]

log = Logger(namespace="client.ua")

USER_AGENT = "sipcalling-sipclient/0.1"
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS"
MAX_REDIRECTS = 5
MAX_AUTH_ATTEMPTS = 2
REGISTER_RETRY = 60.0  # seconds between attempts after a failed registration
CODECS = {"opus": OPUS, "pcmu": PCMU, "pcma": PCMA}


def codec_preference(first: str) -> list[Codec]:
    """Our capabilities with ``first`` preferred (RFC 3264 §5.1: list order is
    preference), telephone-event (RFC 4733) last."""
    chosen = CODECS[first]
    return [chosen, *(c for c in (OPUS, PCMU, PCMA) if c is not chosen), TELEPHONE_EVENT]


@dataclass
class UAConfig:
    domain: str
    user: str
    password: str | None = None
    proxy: Address = Address("UDP", "127.0.0.1", 5060)
    display_name: str | None = None
    auto_answer: bool = False
    busy: bool = False
    busy_when_in_call: bool = False
    ring_timeout: float = 60.0
    codec: str = "pcmu"
    register: bool = True
    expires: int = 3600
    media: MediaOptions = field(default_factory=MediaOptions)


class _TU:
    """A ClientTU that forwards to plain callables (one per request kind)."""

    __slots__ = ("on_response", "on_failure")

    def __init__(
        self,
        on_response: Callable[[Any, Response], None],
        on_failure: Callable[[Any, int, str], None] | None = None,
    ) -> None:
        self.on_response = on_response
        self.on_failure = on_failure

    def response_received(self, tx: Any, response: Response) -> None:
        self.on_response(tx, response)

    def timed_out(self, tx: Any) -> None:
        if self.on_failure is not None:
            self.on_failure(tx, 408, "Request Timeout")

    def transport_failed(self, tx: Any) -> None:
        if self.on_failure is not None:
            self.on_failure(tx, 503, "Service Unavailable")

    def terminated(self, tx: Any) -> None:
        pass


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _sdp_of(message: Request | Response) -> SessionDescription | None:
    """The SDP body, None if there is none; ParseError if it is malformed."""
    if not message.body:
        return None
    ctype = (message.content_type or "application/sdp").split(";")[0].strip().lower()
    if ctype != "application/sdp":
        raise ParseError("Unsupported body type", 415)
    return parse_sdp(message.body)


def _offered_direction(sd: SessionDescription) -> str:
    """The direction of the first audio stream as its author meant it (c=0.0.0.0 is the
    RFC 2543 way of saying "do not send to me", RFC 3264 §8.4)."""
    for m in sd.media:
        if m.media == "audio" and not m.rejected:
            direction = sd.effective_direction(m)
            if sd.is_old_style_hold(m):
                direction = {"sendrecv": "sendonly", "recvonly": "inactive"}.get(
                    direction, direction
                )
            return direction
    return "inactive"


class _Registration:
    def __init__(self, aor: SipURI) -> None:
        self.aor = aor
        self.call_id = new_call_id()
        self.tag = new_tag()
        self.cseq = 0
        self.state = "unregistered"  # unregistered | registering | registered | failed
        self.expires = 0
        self.refresh: Any = None
        self.waiters: list[Deferred[int]] = []


class UserAgent(BaseRole):
    """Registration, calls and the SIP side of hold/resume; see the module docstring."""

    def __init__(
        self,
        config: UAConfig,
        clock: Any,
        report: Callable[[str], None],
        *,
        reactor: Any = None,
        media_factory: MediaFactory = NullMedia,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.reactor = reactor if reactor is not None else clock
        self.report = report
        self.media_factory = media_factory
        self.rng = rng or random.Random()
        self.stack: Any = None
        self.aor = SipURI("sip", config.user, None, config.domain)
        self.codecs = codec_preference(config.codec)
        self.calls: list[Call] = []
        self.dialogs: dict[DialogId, Call] = {}
        self._next_number = 1
        self._nonce_counts: dict[str, int] = {}
        self.registration = _Registration(self.aor)
        self._pending: set[Deferred[Any]] = set()
        # End-system conference (RFC 4579 §3, "focus" = us): the mixing calls, in order.
        self.conference_calls: list[Call] = []
        self.mixer: Any = None

    # ------------------------------------------------------------------ addresses
    @property
    def local(self) -> Address:
        return self.stack.endpoint.local_address("UDP")

    @property
    def contact_uri(self) -> SipURI:
        local = self.local
        return SipURI("sip", self.config.user, None, local.host, local.port)

    @property
    def contact(self) -> str:
        return f"<{self.contact_uri}>"

    @property
    def focus(self) -> bool:
        return self.mixer is not None

    @property
    def dialog_contact(self) -> str:
        """Our Contact for INVITE dialogs: with ;isfocus (RFC 4579 §4.2 / RFC 3840) while
        we mix a conference, so a conference-aware peer knows it talks to a focus. The
        REGISTER binding keeps the plain contact."""
        return f"{self.contact};isfocus" if self.focus else self.contact

    @property
    def timers(self) -> Any:
        return self.stack.timers

    def _destination(self, request: Request) -> Address:
        uri = next_hop(request)
        if isinstance(uri, SipURI) and _is_ip(uri.host):
            transport = (uri.transport or "udp").upper()
            if transport != "UDP":
                transport = "UDP"  # this UA speaks UDP only; the proxy bridges the rest
            return Address(transport, uri.host.strip("[]"), uri.port or 5060)
        return self.config.proxy

    def _via(self, branch: str | None = None) -> str:
        local = self.local
        return f"SIP/2.0/UDP {local.host}:{local.port};rport;branch={branch or new_branch()}"

    def _send(self, request: Request, tu: _TU, dest: Address | None = None) -> Any:
        """Put a fresh Via on ``request`` and send it in a new client transaction."""
        request.headers.remove("Via")
        request.headers.prepend("Via", self._via())
        return self.stack.send_request(request, dest or self._destination(request), tu)

    def _new_request(
        self, method: str, uri: Any, to: NameAddr, call_id: str, tag: str, cseq: int,
    ) -> Request:
        """An out-of-dialog request (§8.1.1), without Via."""
        headers = Headers()
        headers.add("Max-Forwards", "70")
        me = NameAddr(self.config.display_name, self.aor.copy(), {"tag": tag})
        headers.add("From", str(me))
        headers.add("To", str(to))
        headers.add("Call-ID", call_id)
        headers.add("CSeq", f"{cseq} {method}")
        headers.add("Contact", self.dialog_contact if method == "INVITE" else self.contact)
        headers.add("User-Agent", USER_AGENT)
        return Request(method, uri, headers)

    # ------------------------------------------------------------------ digest auth
    def _authorize(self, request: Request, response: Response, attempts: int) -> bool:
        """Add credentials answering ``response``'s challenge to ``request`` (§22.2).

        False when we cannot or should not retry: no password, no usable challenge,
        or the server refused credentials we already sent for a non-stale nonce.
        """
        if self.config.password is None:
            return False
        is_proxy = response.status == 407
        challenge_header = "Proxy-Authenticate" if is_proxy else "WWW-Authenticate"
        auth_header = "Proxy-Authorization" if is_proxy else "Authorization"
        challenges = []
        for value in response.headers.get_all(challenge_header):
            try:
                challenges.append(Challenge.parse(value))
            except ParseError:
                continue
        challenge = choose_challenge(challenges)
        if challenge is None:
            return False
        if attempts >= MAX_AUTH_ATTEMPTS and not challenge.stale:
            return False
        # §22.3 / RFC 7616 §3.4: nc counts the requests sent with this nonce.
        nc = self._nonce_counts.get(challenge.nonce, 0) + 1
        if len(self._nonce_counts) > 64:
            self._nonce_counts.clear()
        self._nonce_counts[challenge.nonce] = nc
        try:
            creds = answer_challenge(
                challenge, request.method, str(request.uri), self.config.user,
                self.config.password, request.body, nc,
            )
        except ValueError:
            return False
        request.headers.remove(auth_header)
        request.headers.add(auth_header, str(creds))
        return True

    # ------------------------------------------------------------------ registration
    def register(self, expires: int | None = None) -> Deferred[int]:
        """REGISTER our contact (§10.2); the Deferred fires with the final status."""
        reg = self.registration
        d: Deferred[int] = Deferred()
        reg.waiters.append(d)
        self._send_register(self.config.expires if expires is None else expires, 0)
        return d

    def unregister(self) -> Deferred[int]:
        reg = self.registration
        if reg.refresh is not None and reg.refresh.active():
            reg.refresh.cancel()
        if reg.state not in ("registered", "registering"):
            return succeed(0)
        return self.register(0)

    def _send_register(self, expires: int, attempts: int, request: Request | None = None) -> None:
        reg = self.registration
        reg.cseq += 1  # §10.2.4: same Call-ID, CSeq going up, for every REGISTER
        if request is None:
            request = self._new_request(
                "REGISTER", SipURI("sip", None, None, self.config.domain),
                NameAddr(None, self.aor.copy()), reg.call_id, reg.tag, reg.cseq,
            )
            request.headers.add("Expires", str(expires))
        else:
            request.headers.set("CSeq", f"{reg.cseq} REGISTER")
        if expires:
            reg.state = "registering"

        def on_response(tx: Any, response: Response) -> None:
            self._register_response(request, response, expires, attempts)

        def on_failure(tx: Any, status: int, reason: str) -> None:
            self._register_done(expires, status, reason)

        self._send(request, _TU(on_response, on_failure), self.config.proxy)

    def _register_response(
        self, request: Request, response: Response, expires: int, attempts: int
    ) -> None:
        status = response.status
        if status < 200:
            return
        if status in (401, 407) and self._authorize(request, response, attempts):
            self._send_register(expires, attempts + 1, request)
            return
        if status == 423 and expires:
            # §10.2.8: Interval Too Brief; retry with the Min-Expires the registrar wants.
            try:
                minimum = int(response.headers.get("Min-Expires") or "")
            except ValueError:
                minimum = 0
            if minimum > expires:
                request.headers.set("Expires", str(minimum))
                self._send_register(minimum, attempts, request)
                return
        granted = expires
        if 200 <= status < 300 and expires:
            granted = self._granted_expires(response, expires)
        self._register_done(expires, status, response.reason, granted)

    def _granted_expires(self, response: Response, asked: int) -> int:
        """§10.2.4: the expiry of *our* binding in the 200 (Contact param, else Expires)."""
        mine = self.contact_uri
        try:
            for contact in response.contacts:
                if not contact.is_wildcard and contact.uri == mine:
                    if contact.expires is not None:
                        return contact.expires
            if response.expires is not None:
                return response.expires
        except ParseError:
            pass
        return asked

    def _register_done(
        self, expires: int, status: int, reason: str, granted: int | None = None
    ) -> None:
        reg = self.registration
        aor = str(self.aor)
        if 200 <= status < 300:
            if expires:
                reg.state = "registered"
                reg.expires = granted or expires
                self.report(f"registered {aor} expires={reg.expires}")
                # Refresh a little before expiry ("expires-10%") so the binding never lapses.
                delay = max(1.0, reg.expires * 0.9)
                if reg.refresh is not None and reg.refresh.active():
                    reg.refresh.cancel()
                reg.refresh = self.clock.callLater(delay, self._refresh)
            else:
                reg.state = "unregistered"
                self.report(f"unregistered {aor}")
        else:
            reg.state = "failed" if expires else "unregistered"
            self.report(f"registration failed {status} {reason}")
            if expires:
                # Keep trying, slowly: the registrar may come back (RFC 5626 §4.5 spirit).
                if reg.refresh is not None and reg.refresh.active():
                    reg.refresh.cancel()
                reg.refresh = self.clock.callLater(REGISTER_RETRY, self._refresh)
        waiters, reg.waiters = reg.waiters, []
        for d in waiters:
            d.callback(status)

    def _refresh(self) -> None:
        self.registration.refresh = None
        self._send_register(self.config.expires, 0)

    # ------------------------------------------------------------------ call lookup
    def _new_call(self, direction: str, remote: str) -> Call:
        call = Call(self._next_number, direction, remote, self.report)
        self._next_number += 1
        self.calls.append(call)
        return call

    def find_call(self, number: int | None, states: tuple[str, ...] | None = None) -> Call | None:
        """Call ``number``, or (None) the most recent call in one of ``states``."""
        if number is not None:
            return next((c for c in self.calls if c.number == number), None)
        for call in reversed(self.calls):
            if states is None or call.state in states:
                return call
        return None

    def active_calls(self) -> list[Call]:
        return [c for c in self.calls if c.active]

    def _forget(self, call: Call) -> None:
        if call.dialog is not None and self.dialogs.get(call.dialog.id) is call:
            del self.dialogs[call.dialog.id]

    def _end(self, call: Call, reason: str) -> None:
        call.end(reason)
        self._forget(call)
        if call in self.conference_calls:
            self._conference_left(call)
        # Keep a bounded history for `status`.
        ended = [c for c in self.calls if c.state == "ended"]
        for old in ended[:-20]:
            self.calls.remove(old)

    def _new_media(self, call: Call) -> bool:
        try:
            call.media = self.media_factory(self.reactor, self.local.host, self.config.media)
        except Exception as err:  # noqa: BLE001 - any media failure ends just this call
            log.failure("media setup failed")
            self.report(f"error media: {err}")
            return False
        if hasattr(call.media, "on_dtmf"):
            # RFC 4733 digits the peer sends: one line each, like every other event.
            call.media.on_dtmf = lambda digit: self.report(f"call {call.number} dtmf {digit}")
        return True

    def send_dtmf(self, call: Call, digits: str) -> int:
        """Send RFC 4733 telephone-events on `call`; how many digits were queued.

        ValueError for a digit outside 0-9, *, #, A-D, or when the media engine or the
        peer cannot carry them (no telephone-event negotiated, or we are not sending)."""
        send = getattr(call.media, "send_dtmf", None)
        if send is None:
            raise ValueError("DTMF needs the media engine")
        queued = int(send(digits))
        if queued == 0:
            raise ValueError("the peer did not accept telephone-event, or we are on hold")
        return queued

    # ------------------------------------------------------------------ outgoing calls
    def target_uri(self, text: str) -> Any:
        """``bob``, ``bob@b.lab`` or a full URI → the URI to call (ParseError if bad)."""
        text = text.strip()
        if not text.lower().startswith(("sip:", "sips:", "tel:")):
            text = "sip:" + (text if "@" in text else f"{text}@{self.config.domain}")
        uri = parse_uri(text)
        if not isinstance(uri, SipURI) or not uri.host:
            raise ParseError("only sip: and sips: URIs can be called")
        return uri

    def call(self, target: str, codec: str | None = None) -> Call:
        """Place a call (§13.2.1), preferring ``codec`` (opus, pcmu, pcma) for this call
        only if given. Raises ParseError for a bad target, ValueError for a bad codec."""
        if codec is not None and codec not in CODECS:
            raise ValueError(f"unknown codec {codec!r} (opus, pcmu or pcma)")
        uri = self.target_uri(target)
        call = self._new_call("outgoing", str(uri))
        call.move("calling")
        if not self._new_media(call):
            self._end(call, "error media")
            return call
        offer = build_offer(
            codec_preference(codec) if codec is not None else self.codecs,
            self.local.host, call.media.local_port, username=self.config.user,
        )
        call.local_sdp = offer
        invite = self._new_request(
            "INVITE", uri, NameAddr(None, uri.copy()), new_call_id(), new_tag(), 1
        )
        invite.headers.add("Allow", ALLOW)
        invite.headers.add("Content-Type", "application/sdp")
        invite.body = offer.serialise()
        call.extra.update(redirects=0, targets=[], tried={str(uri)}, auth=0)
        self._send_invite(call, invite)
        return call

    def _send_invite(self, call: Call, invite: Request) -> None:
        call.invite = invite
        call.extra["provisional"] = False
        tu = _TU(
            lambda tx, resp: self._invite_response(call, tx, resp),
            lambda tx, status, reason: self._invite_failed(call, tx, status, reason),
        )
        call.invite_tx = self._send(invite, tu)
        call.extra["invite_dest"] = self._destination(invite)

    def _invite_failed(self, call: Call, tx: Any, status: int, reason: str) -> None:
        if tx is call.invite_tx and call.state in ("calling", "ringing", "early"):
            self._end(call, f"{status} {reason}")

    def _invite_response(self, call: Call, tx: Any, response: Response) -> None:
        status = response.status
        if 200 <= status < 300:
            self._invite_2xx(call, tx, response)
            return
        if tx is not call.invite_tx or call.state == "ended":
            return
        if status < 200:
            self._provisional(call, response)
            return
        # 300-699: the transaction ACKs it (§17.1.1.3); we decide what comes next.
        if status in (401, 407) and not call.extra.get("cancelled"):
            retry = call.invite.copy()
            if self._authorize(retry, response, call.extra["auth"]):
                call.extra["auth"] += 1
                retry.headers.set("CSeq", f"{retry.cseq.number + 1} INVITE")
                self._send_invite(call, retry)
                return
        if 300 <= status < 400 and not call.extra.get("cancelled"):
            self._queue_redirects(call, response)
        if call.extra["targets"] and not call.extra.get("cancelled"):
            self._next_target(call)
            return
        self._end(call, f"{status} {response.reason}")

    def _provisional(self, call: Call, response: Response) -> None:
        call.extra["provisional"] = True
        if call.extra.get("cancel_pending"):
            # §9.1: a CANCEL may only follow a provisional response; now we can send it.
            self._send_cancel(call)
            return
        if response.status == 100:
            return
        if response.to.tag and call.dialog is None:
            try:
                call.dialog = Dialog.from_uac(call.invite, response)  # early dialog (§12.1.2)
            except (ValueError, ParseError):
                call.dialog = None
        if response.status == 183:
            call.move("early")
        elif call.state == "calling" or (call.state == "early" and response.status == 180):
            call.move("ringing")

    def _queue_redirects(self, call: Call, response: Response) -> None:
        """§8.1.3.4: try the Contacts of a 3xx, highest q first (bounded)."""
        try:
            contacts = [c for c in response.contacts if not c.is_wildcard]
            ranked = sorted(contacts, key=lambda c: -(c.q if c.q is not None else 1.0))
        except ParseError:
            return
        new = []
        for contact in ranked:
            uri = contact.uri
            if isinstance(uri, SipURI) and str(uri) not in call.extra["tried"]:
                new.append(uri.copy())
        # Recursion: the newest redirect's targets come before older alternatives.
        call.extra["targets"][:0] = new

    def _next_target(self, call: Call) -> None:
        if call.extra["redirects"] >= MAX_REDIRECTS:
            call.extra["targets"].clear()
            self._end(call, "482 Loop Detected")
            return
        target = call.extra["targets"].pop(0)
        call.extra["redirects"] += 1
        call.extra["tried"].add(str(target))
        call.dialog = None
        self.report(f"call {call.number} redirected {target}")
        invite = call.invite.copy()
        invite.uri = target
        invite.headers.remove("Authorization")
        invite.headers.remove("Proxy-Authorization")
        # Same Call-ID, From and To; CSeq goes up (§8.1.3.4 → a new request, §8.1.1.5).
        invite.headers.set("CSeq", f"{invite.cseq.number + 1} INVITE")
        call.extra["auth"] = 0
        self._send_invite(call, invite)

    def _invite_2xx(self, call: Call, tx: Any, response: Response) -> None:
        did = Dialog.id_of_received(response)
        cseq = response.cseq.number
        known = self.dialogs.get(did) if did else None
        if known is not None:
            # A retransmitted 2xx: the ACK was lost (§13.2.2.4), send it again.
            self._resend_ack(known, cseq)
            return
        try:
            dialog = Dialog.from_uac(call.invite if tx is call.invite_tx else tx.request, response)
        except (ValueError, ParseError):
            log.warn("2xx without a usable To tag dropped")
            return
        dialog.confirm(response)
        self._send_ack(dialog, cseq, call)
        if tx is not call.invite_tx or call.talking or call.state == "ended" \
                or call.extra.get("cancelled"):
            # A 2xx from another fork, to an older INVITE, or one that beat our CANCEL
            # (§9.1, §13.2.2.4): acknowledge it, then end that dialog at once.
            self._bye_dialog(dialog)
            if call.state in ("calling", "ringing", "early"):
                self._end(call, "hangup")
            return
        call.dialog = dialog
        self.dialogs[dialog.id] = call
        call.cancel_timer("cancel")
        try:
            remote = _sdp_of(response)
        except ParseError:
            remote = None
        media = negotiated(call.local_sdp, remote) if remote is not None else None
        if media is None:
            # §13.2.2.4: a 2xx without a usable answer is still ACKed; then we hang up.
            self._bye_dialog(dialog)
            self._forget(call)
            self._end(call, "error no usable SDP answer")
            return
        call.remote_sdp = remote
        self._start_media(call)
        call.move("confirmed")
        if call.extra.get("join_conference"):
            self._join_when_connected(call)

    def _send_ack(self, dialog: Dialog, cseq: int, call: Call | None) -> None:
        """§13.2.2.4: the ACK for a 2xx is sent by the UA core, statelessly, along the
        dialog's route; it has its own branch and is resent for every retransmitted 2xx."""
        ack = dialog.create_ack(cseq)
        ack.headers.prepend("Via", self._via())
        if call is not None:
            source = call.invite if call.invite is not None else None
            for name in ("Authorization", "Proxy-Authorization"):
                value = source.headers.get(name) if source is not None else None
                if value is not None and cseq == source.cseq.number:
                    ack.headers.add(name, value)
            call.extra.setdefault("acks", {})[cseq] = ack
        self.stack.send_stateless(ack, self._destination(ack))

    def _resend_ack(self, call: Call, cseq: int) -> None:
        ack = call.extra.get("acks", {}).get(cseq)
        if ack is not None:
            self.stack.send_stateless(ack, self._destination(ack))

    def _bye_dialog(self, dialog: Dialog) -> None:
        bye = dialog.create_request("BYE")
        self._send_bye_request(bye, 0)

    def _send_bye_request(self, bye: Request, attempts: int) -> Deferred[Any]:
        done: Deferred[Any] = Deferred()
        self._pending.add(done)

        def finish(_: Any = None) -> None:
            self._pending.discard(done)
            if not done.called:
                done.callback(None)

        def on_response(tx: Any, response: Response) -> None:
            if response.status < 200:
                return
            if response.status in (401, 407) and self._authorize(bye, response, attempts):
                bye.headers.set("CSeq", f"{bye.cseq.number + 1} BYE")
                self._send_bye_request(bye, attempts + 1).addBoth(finish)
                return
            finish()

        self._send(bye, _TU(on_response, lambda tx, s, r: finish()))
        return done

    def _send_cancel(self, call: Call) -> None:
        """§9.1: CANCEL copies the INVITE's Request-URI, Call-ID, To, From, CSeq number,
        Route and top Via (same branch, so it reaches the same server transaction)."""
        call.extra.pop("cancel_pending", None)
        invite = call.invite
        headers = Headers()
        headers.add("Via", invite.headers.get_all("Via")[0])
        for route in invite.headers.get_all("Route"):
            headers.add("Route", route)
        headers.add("Max-Forwards", "70")
        for name in ("From", "To", "Call-ID"):
            headers.add(name, invite.headers.get(name) or "")
        headers.add("CSeq", f"{invite.cseq.number} CANCEL")
        cancel = Request("CANCEL", invite.uri.copy(), headers)
        self.stack.send_request(cancel, call.extra["invite_dest"], _TU(lambda tx, r: None))

    def _cancel(self, call: Call) -> None:
        call.extra["cancelled"] = True
        call.extra["targets"] = []
        if call.extra.get("provisional"):
            self._send_cancel(call)
        else:
            call.extra["cancel_pending"] = True
        # §9.1: if no final response arrives 64*T1 after the CANCEL, give up on it.
        call.set_timer("cancel", self.clock.callLater(
            64 * self.timers.t1, self._cancel_timeout, call))

    def _cancel_timeout(self, call: Call) -> None:
        if call.state in ("calling", "ringing", "early"):
            self._end(call, "487 Request Terminated")

    # ------------------------------------------------------------------ incoming requests
    def request_received(self, request: Request, tx: ServerTransaction, source: Address) -> None:
        try:
            self._dispatch(request, tx)
        except ParseError as err:
            self._respond(tx, request, err.status, err.reason)
        except Exception:
            # Bad input must never take the client down; answer 500 if still possible.
            log.failure("handling {method} failed", method=request.method)
            self._respond(tx, request, 500)

    def _respond(
        self, tx: ServerTransaction, request: Request, status: int, reason: str | None = None,
        tag: str | None = None, headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> Response | None:
        if tx.state is State.TERMINATED:
            return None
        try:
            has_tag = request.to.tag is not None
        except ParseError:
            has_tag = True
        response = make_response(
            request, status, reason, to_tag=None if has_tag else (tag or new_tag())
        )
        if request.method == "INVITE" and (status == 180 or 200 <= status < 300):
            # §12.1.1: dialog-creating responses carry our Contact (the remote target).
            response.headers.add("Contact", self.dialog_contact)
            if not has_tag:
                # §12.1.1: and the request's Record-Route, in order, so that the caller's
                # in-dialog requests (ACK, BYE, re-INVITE) traverse the same proxies.
                for value in request.headers.get_all("Record-Route"):
                    response.headers.add("Record-Route", value)
        for name, value in headers or ():
            response.headers.add(name, value)
        if body:
            response.headers.add("Content-Type", "application/sdp")
            response.body = body
        tx.send_response(response)
        return response

    def _dispatch(self, request: Request, tx: ServerTransaction) -> None:
        method = request.method
        if request.to.tag is not None:
            self._in_dialog(request, tx)
            return
        uri = request.uri
        if isinstance(uri, SipURI) and uri.user is not None and uri.user != self.config.user:
            # §8.2.2.1: not for us.
            self._respond(tx, request, 404)
            return
        if method == "INVITE":
            self._invite_received(request, tx)
        elif method == "OPTIONS":
            self._respond(tx, request, 200, headers=self._capabilities())
        elif method == "BYE":
            self._respond(tx, request, 481)
        elif method in KNOWN_METHODS:
            self._respond(tx, request, 405, headers=[("Allow", ALLOW)])
        else:
            self._respond(tx, request, 501)

    def _capabilities(self) -> list[tuple[str, str]]:
        """§11.2: what an OPTIONS answer advertises."""
        return [("Allow", ALLOW), ("Accept", ACCEPT), ("User-Agent", USER_AGENT)]

    def _in_dialog(self, request: Request, tx: ServerTransaction) -> None:
        did = Dialog.id_of_received(request)
        call = self.dialogs.get(did) if did else None
        if call is None:
            # §12.2.2: a request for a dialog we do not know.
            if request.method == "OPTIONS":
                self._respond(tx, request, 200, headers=self._capabilities())
            else:
                self._respond(tx, request, 481)
            return
        if not call.dialog.check_remote_cseq(request):
            self._respond(tx, request, 500, "Out Of Order CSeq")
            return
        method = request.method
        if method == "BYE":
            self._respond(tx, request, 200)
            if call.state == "incoming" and call.server_tx is not None:
                # §15.1.2: a BYE for a call we have not answered also ends the INVITE.
                self._respond(call.server_tx, call.invite, 487, tag=call.dialog.local_tag)
            self._end(call, "bye")
        elif method == "INVITE":
            self._reinvite_received(call, request, tx)
        elif method == "OPTIONS":
            self._respond(tx, request, 200, headers=self._capabilities())
        elif method == "INFO":
            self._respond(tx, request, 200)  # e.g. SIP INFO DTMF: accepted, ignored
        elif method in KNOWN_METHODS:
            self._respond(tx, request, 405, headers=[("Allow", ALLOW)])
        else:
            self._respond(tx, request, 501)

    def _busy(self) -> bool:
        if self.config.busy:
            return True
        return self.config.busy_when_in_call and any(c.active for c in self.calls)

    def _invite_received(self, request: Request, tx: ServerTransaction) -> None:
        # §8.2.2.2: the same request arriving over another path (forked) is a merge.
        tag = request.from_.tag
        for other in self.calls:
            inv = other.invite
            if other.direction == "incoming" and other.active and inv is not None and \
                    inv.call_id == request.call_id and inv.from_.tag == tag and \
                    inv.cseq.number == request.cseq.number:
                self._respond(tx, request, 482)
                return
        busy = self._busy()
        try:
            offer = _sdp_of(request)
        except ParseError as err:
            status = 415 if err.status == 415 else 488
            headers = [("Accept", ACCEPT)] if status == 415 else None
            self._respond(tx, request, status, headers=headers)
            return
        local_tag = new_tag()
        try:
            dialog = Dialog.from_uas(request, local_tag)
        except (ValueError, ParseError):
            self._respond(tx, request, 400, "Missing Contact or From tag")
            return
        call = self._new_call("incoming", str(request.from_.uri))
        call.invite = request
        call.server_tx = tx
        call.dialog = dialog
        call.extra["offer"] = offer
        call.move("incoming")
        if busy:
            self._reject(call, 486)
            return
        if offer is not None:
            # §13.3.1.3 / RFC 3264 §6: nothing we can accept in the offer → 488.
            probe = answer(offer, self.codecs, "127.0.0.1", 2)
            if not any(not m.rejected for m in probe.media):
                self._reject(call, 488)
                return
        if not self._new_media(call):
            self._reject(call, 500)
            return
        self.dialogs[dialog.id] = call
        self._respond(tx, request, 180, tag=local_tag)
        call.set_timer("ring", self.clock.callLater(
            self.config.ring_timeout, self._ring_timeout, call))
        if self.config.auto_answer:
            self.answer(call)

    def _ring_timeout(self, call: Call) -> None:
        if call.state == "incoming":
            self._reject(call, 480)

    def _reject(self, call: Call, status: int) -> None:
        response = self._respond(call.server_tx, call.invite, status, tag=call.dialog.local_tag)
        reason = response.reason if response is not None else str(status)
        self._end(call, f"{status} {reason}")

    def answer(self, call: Call) -> None:
        """Accept a ringing incoming call with a 200 carrying our SDP (§13.3.1.4)."""
        if call.state != "incoming":
            raise ValueError(f"call {call.number} is not ringing")
        offer = call.extra.get("offer")
        local_host = self.local.host
        port = call.media.local_port
        if offer is not None:
            sdp = answer(offer, self.codecs, local_host, port, username=self.config.user)
        else:
            # No offer in the INVITE: we offer in the 2xx, the answer comes in the ACK.
            sdp = build_offer(self.codecs, local_host, port, username=self.config.user)
        call.local_sdp = sdp
        call.cancel_timer("ring")
        response = self._respond(
            call.server_tx, call.invite, 200, tag=call.dialog.local_tag,
            headers=[("Allow", ALLOW)], body=sdp.serialise(),
        )
        if response is None:
            self._end(call, "error transaction gone")
            return
        call.dialog.confirm()
        self._retransmit_2xx(call, call.server_tx, response, call.invite.cseq.number)
        if offer is not None:
            call.remote_sdp = offer
            self._start_media(call)
        call.move("confirmed")

    def _start_media(self, call: Call) -> None:
        media = negotiated(call.local_sdp, call.remote_sdp)
        if media is None or call.media is None:
            return
        if call.extra.get("media_started"):
            call.media.update(media.direction, media.remote_addr, media.remote_port, media.codec)
            return
        call.extra["media_started"] = True
        call.media.start(
            media.local_port, media.remote_addr, media.remote_port, media.codec,
            media.direction, ptime=media.ptime, telephone_event_pt=media.telephone_event_pt,
            remote_rtcp=media.remote_rtcp,
        )

    def _retransmit_2xx(self, call: Call, tx: Any, response: Response, cseq: int) -> None:
        """§13.3.1.4: the UAS core resends its 2xx (T1, doubling to T2) until the ACK
        comes; after 64*T1 without one it ends the dialog with a BYE."""
        call.extra["awaiting_ack"] = cseq
        timers = self.timers

        def again(interval: float) -> None:
            if call.extra.get("awaiting_ack") != cseq or call.state == "ended":
                return
            tx.send_response(response)
            call.set_timer("2xx", self.clock.callLater(
                min(interval * 2, timers.t2), again, min(interval * 2, timers.t2)))

        def give_up() -> None:
            if call.extra.get("awaiting_ack") == cseq and call.state != "ended":
                call.extra.pop("awaiting_ack", None)
                self._bye_dialog(call.dialog)
                self._end(call, "error no ACK")

        call.set_timer("2xx", self.clock.callLater(timers.t1, again, timers.t1))
        call.set_timer("2xx-giveup", self.clock.callLater(64 * timers.t1, give_up))

    def ack_received(self, ack: Request, source: Address) -> None:
        """An ACK matching no transaction: the ACK for a 2xx we sent (§13.3.1.4)."""
        try:
            did = Dialog.id_of_received(ack)
            call = self.dialogs.get(did) if did else None
            if call is None or call.extra.get("awaiting_ack") != ack.cseq.number:
                return
            call.extra.pop("awaiting_ack", None)
            call.cancel_timer("2xx")
            call.cancel_timer("2xx-giveup")
            if call.extra.pop("offer_in_2xx", False) or call.remote_sdp is None:
                # We offered in the 2xx: the answer is in the ACK (§13.2.2.4).
                try:
                    remote = _sdp_of(ack)
                except ParseError:
                    remote = None
                if remote is not None:
                    call.remote_sdp = remote
                    self._start_media(call)
        except ParseError:
            log.warn("malformed ACK dropped")

    def server_ack_received(self, tx: ServerTransaction, ack: Request) -> None:
        self.ack_received(ack, Address("UDP", "0.0.0.0", 0))

    def cancel_received(
        self, cancel: Request, invite_tx: ServerInviteTransaction, source: Address
    ) -> None:
        """§9.2: the stack answered the CANCEL; we answer the INVITE 487 and end it."""
        call = next((c for c in self.calls if c.server_tx is invite_tx), None)
        if call is None or call.state != "incoming":
            super().cancel_received(cancel, invite_tx, source)
            return
        self._respond(invite_tx, call.invite, 487, tag=call.dialog.local_tag)
        self._end(call, "cancelled")

    def stray_response(self, response: Response, source: Address) -> None:
        """A 2xx to an INVITE whose transaction is gone: our ACK was lost (§13.2.2.4)."""
        try:
            if not (200 <= response.status < 300 and response.cseq.method == "INVITE"):
                return
            did = Dialog.id_of_received(response)
        except ParseError:
            return
        call = self.dialogs.get(did) if did else None
        if call is not None:
            self._resend_ack(call, response.cseq.number)

    # ------------------------------------------------------------------ user commands
    def hangup(self, call: Call) -> None:
        """End a call whatever its state: CANCEL, decline or BYE (§9.1, §15.1.1)."""
        state = call.state
        if state in ("calling", "ringing", "early"):
            self._cancel(call)
        elif state == "incoming":
            self._reject(call, 603)
        elif call.talking:
            call.extra.pop("awaiting_ack", None)
            self._bye_dialog(call.dialog)
            self._end(call, "hangup")
        else:
            raise ValueError(f"call {call.number} is {state}")

    def reject(self, call: Call, status: int = 603) -> None:
        if call.state != "incoming":
            raise ValueError(f"call {call.number} is not ringing")
        self._reject(call, status)

    def hold(self, call: Call) -> None:
        if not call.talking or call.local_hold:
            raise ValueError(f"call {call.number} cannot be held ({call.state})")
        self._reinvite(call, "hold")

    def resume(self, call: Call) -> None:
        if not call.local_hold:
            raise ValueError(f"call {call.number} is not held")
        self._reinvite(call, "resume")

    def _reinvite(self, call: Call, kind: str) -> None:
        """Send a re-INVITE changing the stream direction (§14.1, RFC 3264 §8.4)."""
        if call.extra.get("reinvite") is not None or call.extra.get("glare_retry"):
            raise ValueError(f"call {call.number}: a re-INVITE is already in progress")
        if kind == "hold":
            sdp = hold_offer(call.local_sdp, call.remote_sdp)
        else:
            sdp = resume_offer(call.local_sdp)
        request = call.dialog.create_request(
            "INVITE", contact=self.dialog_contact, body=sdp.serialise(),
            extra=[("Allow", ALLOW), ("User-Agent", USER_AGENT)],
        )
        self._send_reinvite(call, kind, sdp, request, 0)

    def _send_reinvite(
        self, call: Call, kind: str, sdp: SessionDescription, request: Request, attempts: int
    ) -> None:
        state = {"kind": kind, "sdp": sdp, "request": request}
        call.extra["reinvite"] = state
        tu = _TU(
            lambda tx, resp: self._reinvite_response(call, state, resp, attempts),
            lambda tx, status, reason: self._reinvite_failed(call, state, status, reason),
        )
        state["tx"] = self._send(request, tu)

    def _reinvite_response(
        self, call: Call, state: dict[str, Any], response: Response, attempts: int
    ) -> None:
        status = response.status
        cseq = response.cseq.number
        if 200 <= status < 300:
            if call.extra.get("reinvite") is not state:
                if call.dialog is not None:
                    self._resend_ack(call, cseq)
                return
            call.extra["reinvite"] = None
            self._send_ack(call.dialog, cseq, call)
            call.dialog.refresh_target(response)
            try:
                remote = _sdp_of(response)
            except ParseError:
                remote = None
            if remote is not None:
                call.local_sdp = state["sdp"]
                call.remote_sdp = remote
                self._start_media(call)
            call.set_hold(local=state["kind"] == "hold")
            return
        if status < 200 or call.extra.get("reinvite") is not state:
            return
        call.extra["reinvite"] = None
        if status in (401, 407):
            retry = state["request"].copy()
            if self._authorize(retry, response, attempts):
                retry.headers.set("CSeq", f"{call.dialog.next_cseq()} INVITE")
                self._send_reinvite(call, state["kind"], state["sdp"], retry, attempts + 1)
                return
        if status == 491:
            # §14.1 glare: retry after a random delay; the Call-ID owner waits 2.1-4 s,
            # the other side 0-2 s (in units of 10 ms), so one of them wins.
            if call.direction == "outgoing":
                delay = self.rng.randint(210, 400) / 100
            else:
                delay = self.rng.randint(0, 200) / 100
            call.extra["glare_retry"] = True
            call.set_timer("glare", self.clock.callLater(delay, self._glare_retry, call,
                                                         state["kind"]))
            return
        self._reinvite_failed(call, state, status, response.reason)

    def _glare_retry(self, call: Call, kind: str) -> None:
        call.extra["glare_retry"] = False
        if not call.talking:
            return
        if (kind == "hold") == call.local_hold:
            return  # nothing left to do
        try:
            self._reinvite(call, kind)
        except ValueError:
            pass

    def _reinvite_failed(
        self, call: Call, state: dict[str, Any], status: int, reason: str
    ) -> None:
        if call.extra.get("reinvite") is state:
            call.extra["reinvite"] = None
        if call.state == "ended":
            return
        if status in (408, 481):
            # §14.1: the dialog is gone or unreachable; end it.
            if status == 408:
                self._bye_dialog(call.dialog)
            self._end(call, f"{status} {reason}")
            return
        # §14.1: any other failure leaves the session as it was.
        self.report(f"call {call.number} {state['kind']}-failed {status} {reason}")

    def _reinvite_received(self, call: Call, request: Request, tx: ServerTransaction) -> None:
        pending = call.extra.get("reinvite")
        if pending is not None and pending["tx"].state in (State.CALLING, State.PROCEEDING):
            # §14.2: our own re-INVITE is still pending: glare.
            self._respond(tx, request, 491)
            return
        if call.extra.get("awaiting_ack") is not None or not call.talking:
            # §14.2: we have not finished the previous INVITE ourselves.
            self._respond(tx, request, 500, headers=[
                ("Retry-After", str(self.rng.randint(0, 10)))])
            return
        try:
            offer = _sdp_of(request)
        except ParseError:
            self._respond(tx, request, 488)
            return
        call.dialog.refresh_target(request)
        if offer is None:
            # Offer in our 2xx, answer in the ACK: offer what we have now.
            sdp = call.local_sdp
            call.extra["offer_in_2xx"] = True
        else:
            wanted = "sendonly" if call.local_hold else "sendrecv"
            port = call.media.local_port if call.media is not None else 9
            sdp = answer(offer, self.codecs, self.local.host, port, wanted,
                         previous=call.local_sdp, username=self.config.user)
            if not any(not m.rejected for m in sdp.media):
                self._respond(tx, request, 488)
                return
        response = self._respond(tx, request, 200, headers=[("Allow", ALLOW)],
                                 body=sdp.serialise())
        if response is None:
            return
        call.local_sdp = sdp
        self._retransmit_2xx(call, tx, response, request.cseq.number)
        if offer is not None:
            call.remote_sdp = offer
            self._start_media(call)
            held = _offered_direction(offer) in ("sendonly", "inactive")
            call.set_hold(remote=held)

    # ------------------------------------------------------------------ conference
    def conference(self, calls: list[Call] | None = None) -> list[Call]:
        """Mix ``calls`` (default: every talking call) locally, N-1 (RFC 4579 §3: we are
        the focus; the others need not know). Held calls are resumed. Calls added to a
        running conference just join it. Returns the conference's calls; ValueError
        when there is nothing to mix or no mixer in the media engine."""
        mix = getattr(self.media_factory, "conference", None)
        if mix is None:
            raise ValueError("conference needs the media engine (client.media.session)")
        if calls is None:
            calls = [c for c in self.calls if c.talking]
        calls = [c for c in calls if c.talking and c.media is not None]
        new = [c for c in calls if c not in self.conference_calls]
        if len(self.conference_calls) + len(new) < 2:
            raise ValueError("a conference needs at least two connected calls")
        if not new:
            raise ValueError("those calls are already in the conference")
        try:
            if self.mixer is None:
                self.mixer = mix([c.media for c in new])
            else:
                for c in new:
                    self.mixer.add(c.media)
        except Exception as err:  # noqa: BLE001 - a media failure refuses the command only
            log.failure("conference setup failed")
            raise ValueError(f"conference failed: {err}") from None
        self.conference_calls.extend(new)
        # Resume after the mixer exists, so the re-INVITE's Contact says ;isfocus.
        for c in new:
            if c.local_hold and c.extra.get("reinvite") is None \
                    and not c.extra.get("glare_retry"):
                self.resume(c)
        self._report_conference()
        return list(self.conference_calls)

    def invite(self, target: str, codec: str | None = None) -> Call:
        """Place a call that joins the conference (or forms one with the calls we are
        in) when it connects; a plain call when there is nobody else."""
        call = self.call(target, codec)
        call.extra["join_conference"] = True
        return call

    def _join_when_connected(self, call: Call) -> None:
        others = [c for c in self.calls if c.talking and c is not call]
        if not others and not self.conference_calls:
            return  # everybody else left while it rang: just a call
        try:
            self.conference([*others, call] if not self.conference_calls else [call])
        except ValueError as err:
            self.report(f"error: {err}")

    def _conference_left(self, call: Call) -> None:
        """A participant's call ended (its session left the mixer on stop())."""
        self.conference_calls.remove(call)
        if len(self.conference_calls) >= 2:
            self._report_conference()
            return
        # One left: a plain call again with its own clock and devices.
        mixer, self.mixer = self.mixer, None
        if mixer is not None:
            mixer.dissolve()
        self.conference_calls.clear()
        self.report("conference off")

    def _report_conference(self) -> None:
        numbers = ",".join(str(c.number) for c in self.conference_calls)
        self.report(f"conference on {numbers}")

    # ------------------------------------------------------------------ shutdown
    def shutdown(self) -> Deferred[Any]:
        """Hang up every call and unregister; fires when done (bounded by timeouts)."""
        for call in list(self.calls):
            if call.active:
                try:
                    self.hangup(call)
                except ValueError:
                    pass
        waits: list[Deferred[Any]] = list(self._pending)
        if self.config.register:
            waits.append(self.unregister())
        from twisted.internet.defer import DeferredList

        done: Deferred[Any] = Deferred()
        timer = self.clock.callLater(
            4.0, lambda: done.called or done.callback(None))
        dl = DeferredList(waits, consumeErrors=True)

        def fire(_: Any) -> None:
            if timer.active():
                timer.cancel()
            if not done.called:
                done.callback(None)

        dl.addBoth(fire)
        return done
