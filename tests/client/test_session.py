"""RtpSession: two sessions talking over real loopback UDP.

The real reactor moves the datagrams; a task.Clock drives the 20 ms frame clock and the
RTCP timer, advanced one tick at a time with a couple of reactor iterations in between
so each tick's packets are delivered before the next tick plays them out. Nothing sleeps.
"""

from __future__ import annotations

import random
import socket
import wave
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.task import deferLater

from client.media import opus
from client.media.devices import AudioError, MemorySink, SilenceSource, ToneSource
from client.media.rtcp import ReceiverReport, SenderReport, parse_compound
from client.media.rtp import RtpPacket
from client.media.session import (
    SSRC_SWITCH_PACKETS,
    MediaError,
    RtpSession,
    check_media_options,
    create_session,
)
from sipcore.offer_answer import OPUS, PCMA, PCMU, Codec, NegotiatedMedia

LOOPBACK = "127.0.0.1"
TICK = 0.02
SINK_RATE = 16000
TE_PT = 101


def peak_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(len(x))))
    return float(np.argmax(spec)) * rate / len(x)


async def iterate(n: int = 2) -> None:
    """Let the reactor run n iterations: enough for a loopback datagram written in the
    previous step to be read and handed to its protocol."""
    for _ in range(n):
        await deferLater(reactor, 0, lambda: None)


async def pump(clock: task.Clock, ticks: int) -> None:
    for _ in range(ticks):
        clock.advance(TICK)
        await iterate()


class Pair:
    """Session A (sends a 440 Hz tone) and session B (records into memory)."""

    def __init__(self, clock: task.Clock, codec: Codec, *, moh: bool = False) -> None:
        self.clock = clock
        self.codec = codec
        self.a_sink = MemorySink(SINK_RATE)
        self.b_sink = MemorySink(SINK_RATE)
        self.a = RtpSession(
            reactor,
            LOOPBACK,
            ToneSource(440, 8000),
            self.a_sink,
            clock=clock,
            moh=ToneSource(1000, 8000) if moh else None,
            rtcp_interval=1.0,
            rng=random.Random(1),
        )
        self.b = RtpSession(
            reactor,
            LOOPBACK,
            SilenceSource(8000),
            self.b_sink,
            clock=clock,
            rtcp_interval=1.0,
            rng=random.Random(2),
        )
        self.a.bind()
        self.b.bind()

    def start(self, a_dir: str = "sendrecv", b_dir: str = "sendrecv") -> None:
        self.a.start(
            self.a.local_port,
            LOOPBACK,
            self.b.local_port,
            self.codec,
            a_dir,
            telephone_event_pt=TE_PT,
        )
        self.b.start(
            self.b.local_port,
            LOOPBACK,
            self.a.local_port,
            self.codec,
            b_dir,
            telephone_event_pt=TE_PT,
        )

    def stop(self) -> None:
        self.a.stop()
        self.b.stop()


@pytest.fixture
def clock() -> task.Clock:
    return task.Clock()


@pytest.fixture
def pairs(clock: task.Clock) -> Iterator[list[Pair]]:
    made: list[Pair] = []
    yield made
    for p in made:
        p.stop()


def make_pair(pairs: list[Pair], clock: task.Clock, codec: Codec, **kw: bool) -> Pair:
    p = Pair(clock, codec, **kw)
    pairs.append(p)
    return p


# ---------------------------------------------------------------- binding


def test_bind_gives_even_rtp_port_and_rtcp_next(clock: task.Clock) -> None:
    s = RtpSession(reactor, LOOPBACK, SilenceSource(), MemorySink(), clock=clock)
    try:
        port = s.bind()
        assert port == s.local_port and port % 2 == 0
        assert s.rtcp_port == port + 1
        assert s.bind() == port  # idempotent
    finally:
        s.stop()


def test_bind_taken_port_is_a_clear_error(clock: task.Clock) -> None:
    s1 = RtpSession(reactor, LOOPBACK, SilenceSource(), MemorySink(), clock=clock)
    s2 = RtpSession(reactor, LOOPBACK, SilenceSource(), MemorySink(), clock=clock)
    try:
        port = s1.bind()
        with pytest.raises(MediaError, match=f"cannot bind RTP port {port}"):
            s2.bind(port)
    finally:
        s1.stop()
        s2.stop()


# ---------------------------------------------------------------- audio end to end


@pytest.mark.parametrize(
    "codec",
    [
        PCMU,
        PCMA,
        pytest.param(
            OPUS, marks=pytest.mark.skipif(not opus.available(), reason=opus.INSTALL_HINT)
        ),
    ],
    ids=["pcmu", "pcma", "opus"],
)
@pytest_twisted.ensureDeferred
async def test_tone_crosses_loopback(pairs: list[Pair], clock: task.Clock, codec: Codec) -> None:
    p = make_pair(pairs, clock, codec)
    p.start()
    await pump(clock, 100)  # 2 s
    rec = p.b_sink.samples
    assert len(rec) == 100 * SINK_RATE // 50
    last = rec[-SINK_RATE:]  # the last second: well past jitter-buffer start-up
    assert np.std(last.astype(np.float64)) > 2000  # a real tone, not concealment
    assert abs(peak_hz(last, SINK_RATE) - 440) <= 5
    sa, sb = p.a.stats(), p.b.stats()
    assert sa["packets_sent"] >= 95 and sb["packets_received"] >= 95
    assert sb["codec"] == codec.name and sb["packets_lost"] == 0
    assert sb["jitter_buffer"]["played"] >= 90
    # B sends silence, so A hears (almost) nothing.
    assert np.abs(p.a_sink.samples[-SINK_RATE:]).max() < 200


@pytest_twisted.ensureDeferred
async def test_symmetric_rtp_source_port(pairs: list[Pair], clock: task.Clock) -> None:
    p = make_pair(pairs, clock, PCMU)
    p.start()
    await pump(clock, 10)
    # RFC 4961: A's packets come from the port A receives on.
    assert p.b.last_source == (LOOPBACK, p.a.local_port)
    assert p.a.last_source == (LOOPBACK, p.b.local_port)


@pytest_twisted.ensureDeferred
async def test_negotiated_media_start(pairs: list[Pair], clock: task.Clock) -> None:
    p = make_pair(pairs, clock, PCMU)
    for me, peer in ((p.a, p.b), (p.b, p.a)):
        me.start_negotiated(
            NegotiatedMedia(
                index=0,
                media="audio",
                local_port=me.local_port,
                remote_addr=LOOPBACK,
                remote_port=peer.local_port,
                remote_rtcp=None,
                codec=PCMU,
                telephone_event_pt=TE_PT,
                ptime=20,
                send=True,
                recv=True,
            )
        )
    await pump(clock, 20)
    assert p.b.stats()["packets_received"] >= 15
    assert p.a.stats()["direction"] == "sendrecv"


# ---------------------------------------------------------------- hold


@pytest_twisted.ensureDeferred
async def test_hold_directions_stop_sending(pairs: list[Pair], clock: task.Clock) -> None:
    p = make_pair(pairs, clock, PCMU)
    p.start()
    await pump(clock, 20)
    # A holds B (RFC 3264 §8.4): A sendonly, B recvonly. B receives, B does not send.
    p.a.update(direction="sendonly")
    p.b.update(direction="recvonly")
    await iterate()
    a_rx, b_rx, b_tx = p.a.packets_received, p.b.packets_received, p.b.packets_sent
    await pump(clock, 20)
    assert p.b.packets_received >= b_rx + 18  # A still sends
    assert p.b.packets_sent == b_tx  # recvonly: B sends nothing
    assert p.a.packets_received == a_rx
    # Both inactive: nobody sends.
    p.a.update(direction="inactive")
    p.b.update(direction="inactive")
    await iterate()
    a_tx, b_tx = p.a.packets_sent, p.b.packets_sent
    await pump(clock, 20)
    assert (p.a.packets_sent, p.b.packets_sent) == (a_tx, b_tx)
    # Resume: the first packet carries the marker bit again.
    p.a.update(direction="sendrecv")
    p.b.update(direction="sendrecv")
    await pump(clock, 30)
    assert p.b.packets_received > b_rx + 40
    tail = p.b_sink.samples[-SINK_RATE // 4 :]
    assert abs(peak_hz(tail, SINK_RATE) - 440) <= 20  # audio is back after resume


@pytest_twisted.ensureDeferred
async def test_music_on_hold_when_holding_the_peer(pairs: list[Pair], clock: task.Clock) -> None:
    p = make_pair(pairs, clock, PCMU, moh=True)
    p.start()
    await pump(clock, 30)
    assert abs(peak_hz(p.b_sink.samples[-SINK_RATE // 2 :], SINK_RATE) - 440) <= 10
    p.a.update(direction="sendonly")  # A holds B: B hears A's music on hold
    p.b.update(direction="recvonly")
    await pump(clock, 60)
    assert abs(peak_hz(p.b_sink.samples[-SINK_RATE // 2 :], SINK_RATE) - 1000) <= 10


# ---------------------------------------------------------------- RTCP


@pytest_twisted.ensureDeferred
async def test_rtcp_reports_and_rtt(pairs: list[Pair], clock: task.Clock) -> None:
    p = make_pair(pairs, clock, PCMU)
    p.start()
    await pump(clock, 200)  # 4 s with a 1 s (randomised 0.5-1.5x) interval
    sa, sb = p.a.stats(), p.b.stats()
    assert sa["rtcp_sent"] >= 2 and sb["rtcp_received"] >= 2
    assert sb["sr_received"] >= 1 and sa["sr_received"] >= 1
    assert sa["rtt_ms"] is not None and sa["rtt_ms"] >= 0
    assert sb["rtt_ms"] is not None and sb["rtt_ms"] >= 0
    assert sb["remote_cname"] == p.a.cname
    assert sa["remote_loss_fraction"] == 0.0
    assert sb["remote_ssrc"] == p.a.ssrc
    # A stops: B sees the RTCP BYE.
    p.a.stop()
    await iterate()
    assert p.b.remote_bye


def test_report_is_sr_after_sending_else_rr(clock: task.Clock) -> None:
    s = RtpSession(reactor, LOOPBACK, SilenceSource(), MemorySink(), clock=clock)
    try:
        packets = s.build_report(clock.seconds())
        assert isinstance(packets[0], ReceiverReport)
        s.packets_sent = 10
        packets = s.build_report(clock.seconds())
        assert isinstance(packets[0], SenderReport) and packets[0].packet_count == 10
        # §6.4: still an SR for the report after the one that covered the sending.
        assert isinstance(s.build_report(clock.seconds())[0], SenderReport)
        assert isinstance(s.build_report(clock.seconds())[0], ReceiverReport)
    finally:
        s.stop()


@pytest_twisted.ensureDeferred
async def test_rtcp_interval_is_randomised(pairs: list[Pair], clock: task.Clock) -> None:
    p = make_pair(pairs, clock, PCMU)
    p.start()
    got: list[float] = []
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    raw.bind((LOOPBACK, 0))
    raw.setblocking(False)
    try:
        # Point A's RTCP at our socket and note when each report is written.
        p.a.update(remote_rtcp=raw.getsockname())
        for _ in range(500):  # 10 s
            clock.advance(TICK)
            try:
                data = raw.recv(2048)
            except BlockingIOError:
                continue
            assert isinstance(parse_compound(data)[0], SenderReport | ReceiverReport)
            got.append(clock.seconds())
    finally:
        raw.close()
    gaps = np.diff(got)
    assert len(gaps) >= 5
    assert all(0.5 - TICK <= g <= 1.5 + TICK for g in gaps)
    assert len({round(g, 2) for g in gaps}) > 1  # not a fixed period


# ---------------------------------------------------------------- DTMF


@pytest_twisted.ensureDeferred
async def test_dtmf_digits_cross(pairs: list[Pair], clock: task.Clock) -> None:
    p = make_pair(pairs, clock, PCMU)
    heard: list[str] = []
    p.b.on_dtmf = heard.append
    p.start()
    await pump(clock, 5)
    assert p.a.send_dtmf("12#*9") == 5
    await pump(clock, 60)
    assert heard == ["1", "2", "#", "*", "9"]
    assert p.b.received_digits == heard
    assert p.a.stats()["dtmf_sent"] == 5
    # Audio resumes after the digits.
    assert abs(peak_hz(p.b_sink.samples[-SINK_RATE // 2 :], SINK_RATE) - 440) <= 10


def test_dtmf_bad_digit_raises_and_hold_refuses(clock: task.Clock) -> None:
    s = RtpSession(reactor, LOOPBACK, SilenceSource(), MemorySink(), clock=clock)
    try:
        s.bind()
        s.start(s.local_port, LOOPBACK, 9, PCMU, "recvonly", telephone_event_pt=TE_PT)
        with pytest.raises(ValueError):
            s.send_dtmf("1x")
        assert s.send_dtmf("1") == 0  # not sending while held
        s.update(direction="sendrecv")
        assert s.send_dtmf("1 2") == 2
    finally:
        s.stop()


# ---------------------------------------------------------------- robustness


@pytest_twisted.ensureDeferred
async def test_malformed_datagrams_counted_and_ignored(
    pairs: list[Pair], clock: task.Clock
) -> None:
    p = make_pair(pairs, clock, PCMU)
    p.start()
    junk = [
        b"",
        b"\x00",
        b"hello world, not RTP",
        b"\x80",  # too short
        bytes([0x40, 0, 0, 1]) + bytes(8),  # version 1
        bytes([0x8F, 0, 0, 1]) + bytes(8),  # CSRC count runs past the end
        bytes([0xA0, 0, 0, 1]) + bytes(8),  # padding bit, no padding
        bytes([0x80, 0xC8, 0, 50]) + bytes(8),  # RTCP-looking, length past the end
    ]
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for j in junk:
            raw.sendto(j, (LOOPBACK, p.b.local_port))
            raw.sendto(j, (LOOPBACK, p.b.rtcp_port))
        # A stranger's well-formed RTP with another SSRC is dropped, not played.
        for i in range(3):
            raw.sendto(
                RtpPacket(0, i, i * 160, 0xDEAD, bytes(160)).serialize(),
                (LOOPBACK, p.b.local_port),
            )
        await pump(clock, 50)
    finally:
        raw.close()
    s = p.b.stats()
    assert s["malformed"] == len(junk) - 1  # the RTCP-looking one is counted as RTCP
    assert s["rtcp_malformed"] >= len(junk)
    assert s["tick_errors"] == 0
    assert p.b.running
    assert abs(peak_hz(p.b_sink.samples[-SINK_RATE // 2 :], SINK_RATE) - 440) <= 10
    assert s["remote_ssrc"] == p.a.ssrc


@pytest_twisted.ensureDeferred
async def test_ssrc_lock_and_confirmed_switch(clock: task.Clock) -> None:
    s = RtpSession(reactor, LOOPBACK, SilenceSource(), MemorySink(), clock=clock)
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    raw.bind((LOOPBACK, 0))

    def send(ssrc: int, seqs: range) -> None:
        for i in seqs:
            pkt = RtpPacket(0, i, i * 160, ssrc, bytes(160))
            raw.sendto(pkt.serialize(), (LOOPBACK, s.local_port))

    try:
        s.bind()
        s.start(s.local_port, LOOPBACK, raw.getsockname()[1], PCMU, "recvonly")
        send(1, range(5))
        await iterate()
        send(2, range(100, 102))  # two strays: dropped, the lock holds
        await iterate()
        assert s.stats()["remote_ssrc"] == 1 and s.stats()["foreign_ssrc"] == 2
        send(2, range(102, 110))  # the new source persists: the peer restarted
        await iterate()
        st = s.stats()
        assert st["remote_ssrc"] == 2
        assert st["foreign_ssrc"] == SSRC_SWITCH_PACKETS - 1
    finally:
        raw.close()
        s.stop()


def test_unknown_codec_is_media_error(clock: task.Clock) -> None:
    s = RtpSession(reactor, LOOPBACK, SilenceSource(), MemorySink(), clock=clock)
    try:
        s.bind()
        with pytest.raises(MediaError, match="unsupported codec"):
            s.start(s.local_port, LOOPBACK, 9, Codec("G729", 8000, 1, 18), "sendrecv")
    finally:
        s.stop()


@pytest_twisted.ensureDeferred
async def test_stop_is_idempotent_and_closes_devices(pairs: list[Pair], clock: task.Clock) -> None:
    p = make_pair(pairs, clock, PCMU)
    p.start()
    await pump(clock, 5)
    p.a.stop()
    p.a.stop()
    assert p.a_sink.closed and not p.a.running
    sent = p.a.packets_sent
    await pump(clock, 5)
    assert p.a.packets_sent == sent
    p.a.update(direction="sendrecv")  # after stop: ignored, no error


# ---------------------------------------------------------------- the media_hook factory


@pytest_twisted.ensureDeferred
async def test_factory_plays_wav_and_records_wav_in_real_time(tmp_path: Path) -> None:
    """The production path: create_session via client.media_hook, the reactor as the
    frame clock, --play and --record files. Waits real time but asserts no speed."""
    from client.media_hook import MediaOptions, load_media_factory

    factory, name = load_media_factory()
    assert name == "audio" and factory is create_session
    t = np.arange(8000) / 8000
    tone = (np.sin(2 * np.pi * 440 * t) * 10000).astype("<i2")
    play = tmp_path / "tone.wav"
    with wave.open(str(play), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(tone.tobytes())
    record = tmp_path / "heard.wav"
    # audio_device="none": no PortAudio in this test, whatever the machine has.
    a_opts = replace_opts(MediaOptions(play=str(play)), audio_device="none")
    b_opts = replace_opts(MediaOptions(record=str(record)), audio_device="none")
    check_media_options(a_opts)
    a = factory(reactor, LOOPBACK, a_opts)
    b = factory(reactor, LOOPBACK, b_opts)
    try:
        assert a.local_port % 2 == 0 and b.local_port % 2 == 0
        a.start(a.local_port, LOOPBACK, b.local_port, PCMU, "sendrecv")
        b.start(b.local_port, LOOPBACK, a.local_port, PCMU, "sendrecv")
        await deferLater(reactor, 1.0, lambda: None)
    finally:
        a.stop()
        b.stop()
    with wave.open(str(record), "rb") as w:
        rate = w.getframerate()
        heard = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    assert len(heard) > rate // 4
    assert abs(peak_hz(heard[len(heard) // 2 :], rate) - 440) <= 10


def replace_opts(options: object, **extra: object) -> SimpleNamespace:
    """MediaOptions plus fields the CLI may add later (audio_device, moh)."""
    fields = {k: getattr(options, k) for k in ("play", "record", "codec")}
    return SimpleNamespace(**fields, **extra)


def test_check_media_options_rejects_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_text("nope")
    with pytest.raises(AudioError, match="cannot play"):
        check_media_options(SimpleNamespace(play=str(bad), record=None))
    with pytest.raises(AudioError, match="cannot record to"):
        check_media_options(SimpleNamespace(play=None, record=str(tmp_path / "x" / "y.wav")))


@pytest_twisted.ensureDeferred
async def test_old_style_hold_address_sends_nothing(pairs: list[Pair], clock: task.Clock) -> None:
    p = make_pair(pairs, clock, PCMU)
    p.start()
    await pump(clock, 5)
    # RFC 2543 hold: c=0.0.0.0 with the direction left at sendrecv.
    p.a.update(remote_addr="0.0.0.0", remote_port=p.b.local_port)
    await iterate()
    sent = p.a.packets_sent
    await pump(clock, 10)
    assert p.a.packets_sent == sent and p.a.stats()["send_errors"] == 0
    p.a.update(remote_addr=LOOPBACK, remote_port=p.b.local_port)
    await pump(clock, 5)
    assert p.a.packets_sent > sent
