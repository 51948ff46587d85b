# -*- test-case-name: tests.client.test_ua -*-
"""The seam between call control and media.

The user agent allocates one :class:`MediaSession` per call *before* it writes SDP, so
the offer/answer carries a real, bound RTP port; it then drives the session as
offer/answer progresses:

* ``start(local_rtp_port, remote_addr, remote_port, codec, direction, ...)`` once both
  SDPs are known (the call is connected);
* ``update(direction=..., remote_addr=..., remote_port=..., codec=...)`` after a re-INVITE
  (hold: ``sendonly``/``recvonly``/``inactive``, resume: ``sendrecv``; RFC 3264 §8.4);
* ``stop()`` when the call ends (also for a call that never connected);
* ``stats()`` for the ``status`` command.

A factory builds sessions: ``factory(reactor, interface, options) -> MediaSession``.
The real one lives in ``client.media.session`` (``create_session``) and plays/records
audio. The factory may also offer ``conference(sessions: list[MediaSession]) -> mixer``,
which mixes the given (started) calls locally on one frame clock (each hears the others
and the local microphone, N-1); the mixer answers ``add(session)``, ``remove(session)``
(the session carries on alone) and ``dissolve()``, and a session that is stopped leaves
it by itself (client.media.mixer). Without it the ``conference`` command is refused.
:class:`NullMedia` only binds the RTP port and discards what arrives, so call control
works without audio hardware or codecs.
:func:`load_media_factory` picks the real one when it can be imported.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.protocol import DatagramProtocol

from sipcore.offer_answer import Codec

__all__ = [
    "MediaFactory",
    "MediaOptions",
    "MediaSession",
    "NullMedia",
    "load_media_factory",
]


@dataclass(frozen=True, slots=True)
class MediaOptions:
    """What the command line says about media (see client/cli.py)."""

    play: str | None = None  # a WAV file to send instead of the microphone
    record: str | None = None  # a WAV file to write what we receive to
    codec: str = "pcmu"  # preferred codec name: opus, pcmu or pcma
    moh: str | None = None  # a WAV file played to a peer we put on hold
    audio_device: str | None = None  # PortAudio device name/index; "none": no sound card


class MediaSession(Protocol):
    """One call's RTP stream (RFC 3550), driven by the user agent."""

    #: The bound (even, RFC 3550 §11) local RTP port, known right after construction.
    local_port: int

    def start(
        self,
        local_rtp_port: int,
        remote_addr: str,
        remote_port: int,
        codec: Codec,
        direction: str,
        *,
        ptime: int = 20,
        telephone_event_pt: int | None = None,
        remote_rtcp: tuple[str, int] | None = None,
    ) -> None: ...

    def update(
        self,
        direction: str | None = None,
        remote_addr: str | None = None,
        remote_port: int | None = None,
        codec: Codec | None = None,
    ) -> None: ...

    def stop(self) -> None: ...

    def stats(self) -> dict[str, Any]: ...


MediaFactory = Callable[[Any, str, MediaOptions], MediaSession]


class _Discard(DatagramProtocol):
    def __init__(self) -> None:
        self.packets = 0
        self.octets = 0

    def datagramReceived(self, data: bytes, addr: Any) -> None:  # noqa: N802
        self.packets += 1
        self.octets += len(data)


class NullMedia:
    """A session that binds an RTP port, counts what arrives and sends nothing."""

    def __init__(self, reactor: Any, interface: str, options: MediaOptions | None = None) -> None:
        self.options = options or MediaOptions()
        self._port, self._proto = _bind_even(reactor, interface)
        self.local_port: int = self._port.getHost().port
        self.direction = "inactive"
        self.remote: tuple[str, int] | None = None
        self.codec: Codec | None = None
        self.running = False

    def start(
        self,
        local_rtp_port: int,
        remote_addr: str,
        remote_port: int,
        codec: Codec,
        direction: str,
        *,
        ptime: int = 20,
        telephone_event_pt: int | None = None,
        remote_rtcp: tuple[str, int] | None = None,
    ) -> None:
        self.remote = (remote_addr, remote_port)
        self.codec = codec
        self.direction = direction
        self.running = True

    def update(
        self,
        direction: str | None = None,
        remote_addr: str | None = None,
        remote_port: int | None = None,
        codec: Codec | None = None,
    ) -> None:
        if direction is not None:
            self.direction = direction
        if remote_addr is not None and remote_port is not None:
            self.remote = (remote_addr, remote_port)
        if codec is not None:
            self.codec = codec

    def stop(self) -> None:
        self.running = False
        if self._port is not None:
            self._port.stopListening()
            self._port = None

    def stats(self) -> dict[str, Any]:
        return {
            "codec": self.codec.name if self.codec else None,
            "direction": self.direction,
            "packets_received": self._proto.packets,
            "octets_received": self._proto.octets,
        }


def _bind_even(reactor: Any, interface: str) -> tuple[Any, _Discard]:
    """Bind a UDP port, preferring an even one (RFC 3550 §11: RTP on even ports)."""
    for attempt in range(16):
        # A fresh protocol each time: a DatagramProtocol belongs to one port.
        proto = _Discard()
        port = reactor.listenUDP(0, proto, interface=interface)
        if port.getHost().port % 2 == 0 or attempt == 15:
            return port, proto
        port.stopListening()
    raise AssertionError("unreachable")


def load_media_factory() -> tuple[MediaFactory, str]:
    """The real media engine if ``client.media.session`` imports, else NullMedia.

    Returns the factory and a short name for logs (``"audio"`` or ``"null"``).
    """
    try:
        module = importlib.import_module("client.media.session")
        factory = module.create_session
    except (ImportError, AttributeError):
        return NullMedia, "null"
    return factory, "audio"
