"""NullMedia: binds a real (even) RTP port so the SDP carries it; the loader falls back."""

from __future__ import annotations

from twisted.internet import reactor

from client.media_hook import NullMedia, load_media_factory
from sipcore.offer_answer import PCMU


def test_null_media_binds_an_even_port_and_records_state() -> None:
    media = NullMedia(reactor, "127.0.0.1")
    try:
        assert media.local_port > 0
        assert media.local_port % 2 == 0
        media.start(media.local_port, "127.0.0.1", 40000, PCMU, "sendrecv")
        media.update(direction="sendonly")
        stats = media.stats()
        assert stats["codec"] == "PCMU" and stats["direction"] == "sendonly"
    finally:
        media.stop()
    media.stop()  # idempotent


def test_loader_returns_a_factory() -> None:
    factory, kind = load_media_factory()
    assert kind in ("audio", "null")
    assert callable(factory)
