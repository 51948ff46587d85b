# -*- test-case-name: tests.client.test_session -*-
"""One call's audio stream over RTP/RTCP (RFC 3550) on Twisted: the I/O shell around the
pure blocks in client.media (packets, codecs, jitter buffer, statistics, DTMF).

    session = RtpSession(reactor, "192.0.2.1", source, sink)
    port = session.bind()              # RTP on an even port, RTCP on port + 1 (§11)
    ... SDP offer/answer carries `port` ...
    session.start(port, remote_addr, remote_port, codec, "sendrecv")
    session.update(direction="sendonly")       # re-INVITE: hold (RFC 3264 §8.4)
    session.send_dtmf("123#")                  # RFC 4733 telephone-events
    session.stats()                            # counters for the `status` command
    session.stop()                             # RTCP BYE, sockets and devices closed

`create_session(reactor, interface, options)` is the factory client.media_hook loads: it
opens the devices the command line asks for and returns a bound session.

One clock drives everything: a LoopingCall every 20 ms on the injected clock (the reactor
in production, task.Clock in tests). Each tick reads one frame from the source, sends it,
takes one frame from the jitter buffer and writes it to the sink. Devices never pace
(see devices.py), so capture, network and playout all run at this one rate and cannot
drift apart inside the process. In a conference the mixer (client.media.mixer) stops
that LoopingCall and drives tick_receive()/tick_send() of every leg from its own single
clock instead (attach/detach).

Robustness: nothing a peer sends can raise out of datagramReceived or stop the tick:
malformed datagrams, unknown payload types and foreign SSRCs are counted and dropped;
a failing tick is logged once and counted.
"""

from __future__ import annotations

import os
import random
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

import numpy as np
from twisted.internet import task
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.error import CannotListenError, InvalidAddressError, MessageLengthError
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from sipcore.offer_answer import Codec, NegotiatedMedia

from . import codecs
from .codecs import CodecInfo, Decoder, Encoder
from .devices import (
    AudioError,
    AudioSink,
    AudioSource,
    NullSink,
    PyAudioSink,
    PyAudioSource,
    SilenceSource,
    TeeSink,
    WavFileSink,
    WavFileSource,
)
from .dtmf import DtmfReceiver, TelephoneEvent, digit_to_event, dtmf_packets
from .jitterbuffer import Frame, JitterBuffer, Lost
from .mixer import DevicePool, Mixer
from .resample import Resampler
from .rtcp import (
    Bye,
    ReceiverReport,
    ReportBlock,
    RtcpPacket,
    SenderReport,
    SourceDescription,
    ntp_from_unix,
    ntp_middle32,
    parse_compound,
    round_trip_time,
    serialize_compound,
)
from .rtp import RtpPacket, looks_like_rtcp
from .seqnum import seq_add, ts_add
from .stats import ReceiverStats

__all__ = ["MediaError", "RtpSession", "check_media_options", "conference", "create_session"]

log = Logger()

FRAME_MS = 20
FRAME_S = FRAME_MS / 1000
RTCP_INTERVAL = 5.0  # RFC 3550 §6.2 minimum interval; one stream needs no scaling
RTCP_RANDOM_MIN, RTCP_RANDOM_MAX = 0.5, 1.5  # §6.3.1: avoid synchronised reports
# A reactor that stalls (GC, a slow disk) makes the LoopingCall skip ticks; catching up
# keeps RTP timestamps in step with real time, but only this far, so a long stall
# does not burst a second of audio at once.
MAX_CATCHUP_TICKS = 5
# Packets in a row from a new SSRC before we follow it (the peer restarted its stream,
# e.g. after a re-INVITE); fewer are strays (a late old stream, spoofing) and dropped.
SSRC_SWITCH_PACKETS = 5
DTMF_GAP_TICKS = 3  # 60 ms of audio between two digits: enough for any detector
DTMF_MAX_QUEUE = 64
BIND_ATTEMPTS = 32
MAX_OUTPUT_BACKLOG_FRAMES = 5  # bound on decoded audio waiting for the sink
DEFAULT_RECORD_RATE = 16000

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
UNSPECIFIED_ADDRESSES = ("0.0.0.0", "::")


class MediaError(ValueError):
    """A media request that cannot be honoured (unknown codec, port in use ...)."""


def _direction_flags(direction: str) -> tuple[bool, bool]:
    if direction not in DIRECTIONS:
        raise MediaError(f"not an SDP direction: {direction!r}")
    return direction in ("sendrecv", "sendonly"), direction in ("sendrecv", "recvonly")


class _FrameFifo:
    """Re-cuts a stream of variable-length chunks into exact frames: resamplers and
    codecs with other packet sizes (a peer sending 10 ms Opus) hand over chunks whose
    length is not one frame; devices and encoders want exactly one."""

    def __init__(self, frame_samples: int, max_frames: int = MAX_OUTPUT_BACKLOG_FRAMES) -> None:
        self.frame_samples = frame_samples
        self.max_samples = frame_samples * max_frames
        self._buf = np.zeros(0, dtype=np.int16)

    def push(self, pcm: np.ndarray) -> None:
        self._buf = np.concatenate([self._buf, np.asarray(pcm, dtype=np.int16)])
        if len(self._buf) > self.max_samples:
            self._buf = self._buf[-self.max_samples :]

    def pop(self) -> np.ndarray:
        n = self.frame_samples
        out = np.zeros(n, dtype=np.int16)
        take = min(n, len(self._buf))
        out[:take] = self._buf[:take]
        self._buf = self._buf[take:]
        return out


class _RtpProtocol(DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, tuple[str, int]], None]) -> None:
        self._on_datagram = on_datagram

    def datagramReceived(self, data: bytes, addr: Any) -> None:  # Twisted names it
        self._on_datagram(data, (addr[0], addr[1]))


class RtpSession:
    """Symmetric RTP (RFC 4961): we send from the ports we receive on, so a peer (or a
    NAT) that answers to the source address reaches us."""

    def __init__(
        self,
        reactor: Any,
        local_host: str,
        source: AudioSource,
        sink: AudioSink,
        *,
        clock: Any = None,
        moh: AudioSource | None = None,
        cname: str | None = None,
        on_dtmf: Callable[[str], None] | None = None,
        rtcp_interval: float = RTCP_INTERVAL,
        rng: random.Random | None = None,
    ) -> None:
        self._reactor = reactor
        self._clock = clock if clock is not None else reactor
        self.local_host = local_host
        self.source = source
        self.sink = sink
        self.moh = moh
        self.on_dtmf = on_dtmf
        self.rtcp_interval = rtcp_interval
        self._rng = rng if rng is not None else random.SystemRandom()
        # RFC 3550 §8: random SSRC, initial sequence number and timestamp, so a
        # known-plaintext attack on an encrypted stream gets no head start.
        self.ssrc = self._rng.getrandbits(32)
        self.cname = cname or f"{self._rng.getrandbits(48):012x}@{local_host}"
        self._seq = self._rng.getrandbits(16)
        self._ts = self._rng.getrandbits(32)

        self.local_port = 0
        self.rtcp_port = 0
        self._rtp_listener: Any = None
        self._rtcp_listener: Any = None

        self._running = False
        self._stopped = False
        self._loop: task.LoopingCall | None = None
        # A conference mixer that drives this session's ticks instead of _loop.
        self._driver: Any = None
        self._rtcp_call: Any = None
        self._shutdown_trigger: Any = None

        self.direction = "inactive"
        self._send = False
        self._recv = False
        self._remote: tuple[str, int] | None = None
        self._remote_rtcp: tuple[str, int] | None = None
        self._codec: Codec | None = None
        self._info: CodecInfo | None = None
        self._encoder: Encoder | None = None
        self._decoders: dict[int, Decoder] = {}
        self._te_pt: int | None = None
        self.ptime = FRAME_MS
        self._jb: JitterBuffer | None = None
        self._in_rs: Resampler | None = None
        self._moh_rs: Resampler | None = None
        self._out_rs: Resampler | None = None
        self._send_fifo: _FrameFifo | None = None
        self._out_fifo = _FrameFifo(sink.frame_samples)
        self._marker_next = True

        # What we sent: for SR sender info and stats.
        self.packets_sent = 0
        self.bytes_sent = 0  # payload octets, as the SR octet count (§6.4.1) counts them
        self._sent_at_reports: deque[int] = deque([0, 0], maxlen=2)
        self._tick_time: float | None = None
        self._tick_ts = self._ts

        # What we received.
        self._rx: ReceiverStats | None = None
        self._ssrc_candidate: tuple[int, int] | None = None  # (ssrc, packets in a row)
        self.packets_received = 0
        self.bytes_received = 0
        self.last_source: tuple[str, int] | None = None
        self.remote_cname: str | None = None
        self.remote_bye = False
        self._dtmf_rx = DtmfReceiver()
        self.received_digits: list[str] = []

        # RTCP results.
        self.rtt: float | None = None
        self.remote_fraction_lost: float | None = None
        self.remote_jitter: float | None = None  # seconds, the peer's view of our stream
        self.remote_cumulative_lost: int | None = None

        # DTMF sending.
        self._dtmf_queue: deque[str] = deque()
        self._dtmf_train: deque[RtpPacket] = deque()
        self._dtmf_gap = 0
        self.dtmf_sent = 0

        self.counters: dict[str, int] = dict.fromkeys(
            (
                "malformed",
                "foreign_ssrc",
                "unknown_payload_type",
                "ignored",
                "rtcp_sent",
                "rtcp_received",
                "rtcp_malformed",
                "sr_received",
                "send_errors",
                "decode_errors",
                "tick_errors",
                "ticks",
                "skipped_ticks",
            ),
            0,
        )

    # ------------------------------------------------------------------ sockets

    def bind(self, port: int = 0) -> int:
        """Bind RTP on `port` (0: any free even port) and RTCP on port + 1; returns the
        RTP port so the SDP can carry it before negotiation."""
        if self._rtp_listener is not None:
            return self.local_port
        if port:
            if port % 2:
                log.warn("RTP port {port} is odd; RFC 3550 §11 wants even", port=port)
            try:
                rtp = self._listen(port, self._rtp_datagram)
            except CannotListenError as exc:
                raise MediaError(f"cannot bind RTP port {port}: {exc.socketError}") from None
            try:
                rtcp = self._listen(port + 1, self._rtcp_datagram)
            except CannotListenError as exc:
                rtp.stopListening()
                raise MediaError(f"cannot bind RTCP port {port + 1}: {exc.socketError}") from None
        else:
            for _ in range(BIND_ATTEMPTS):
                try:
                    rtp = self._listen(0, self._rtp_datagram)
                except CannotListenError as exc:
                    raise MediaError(
                        f"cannot bind an RTP port on {self.local_host}: {exc.socketError}"
                    ) from None
                p = rtp.getHost().port
                if p % 2 == 0 and p < 65535:
                    try:
                        rtcp = self._listen(p + 1, self._rtcp_datagram)
                        break
                    except CannotListenError:
                        pass  # RTCP's port is taken: try another pair
                rtp.stopListening()
            else:
                raise MediaError(
                    f"no free even RTP port with a free RTCP port on {self.local_host}"
                )
        self._rtp_listener, self._rtcp_listener = rtp, rtcp
        self.local_port = rtp.getHost().port
        self.rtcp_port = rtcp.getHost().port
        return self.local_port

    def _listen(self, port: int, handler: Callable[[bytes, tuple[str, int]], None]) -> Any:
        return self._reactor.listenUDP(port, _RtpProtocol(handler), interface=self.local_host)

    # ------------------------------------------------------------------ control

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
        """Begin media once offer/answer is complete (the MediaSession interface of
        client.media_hook). `direction` is ours: 'sendonly' means we send only."""
        if self._stopped:
            raise MediaError("session already stopped")
        if self._rtp_listener is None:
            self.bind(local_rtp_port)
        elif local_rtp_port and local_rtp_port != self.local_port:
            log.warn(
                "start() for port {asked} but RTP is bound to {bound}",
                asked=local_rtp_port,
                bound=self.local_port,
            )
        self._set_codec(codec)
        self._te_pt = telephone_event_pt
        self.ptime = ptime  # noted for stats; we always send 20 ms frames, as most peers do
        self._set_remote(remote_addr, remote_port, remote_rtcp)
        self._set_direction(direction)
        if self._running:
            return
        self._running = True
        if self._driver is None:
            self._start_loop()
        # §6.2: the first report goes out after half an interval so a short call still
        # gets one, randomised like every other.
        self._schedule_rtcp(initial=True)
        if hasattr(self._reactor, "addSystemEventTrigger"):
            # The WAV header is only complete once the sink is closed.
            self._shutdown_trigger = self._reactor.addSystemEventTrigger(
                "before", "shutdown", self.stop
            )

    def start_negotiated(self, media: NegotiatedMedia) -> None:
        self.start(
            media.local_port,
            media.remote_addr,
            media.remote_port,
            media.codec,
            media.direction,
            ptime=media.ptime,
            telephone_event_pt=media.telephone_event_pt,
            remote_rtcp=media.remote_rtcp,
        )

    def update(
        self,
        direction: str | None = None,
        remote_addr: str | None = None,
        remote_port: int | None = None,
        codec: Codec | None = None,
        *,
        remote_rtcp: tuple[str, int] | None = None,
        telephone_event_pt: int | None = None,
    ) -> None:
        """Apply a re-INVITE's outcome: hold/resume, a new remote address, a new codec."""
        if self._stopped:
            return
        if codec is not None and codec != self._codec:
            self._set_codec(codec)
        if remote_addr is not None or remote_port is not None:
            addr = remote_addr if remote_addr is not None else self._remote_host()
            port = remote_port if remote_port is not None else self._remote_port()
            if addr is not None and port is not None:
                self._set_remote(addr, port, remote_rtcp)
        elif remote_rtcp is not None:
            self._remote_rtcp = remote_rtcp
        if telephone_event_pt is not None:
            self._te_pt = telephone_event_pt
        if direction is not None:
            self._set_direction(direction)

    def update_negotiated(self, media: NegotiatedMedia) -> None:
        self.update(
            media.direction,
            media.remote_addr,
            media.remote_port,
            media.codec,
            remote_rtcp=media.remote_rtcp,
            telephone_event_pt=media.telephone_event_pt,
        )

    def send_dtmf(self, digits: str) -> int:
        """Queue RFC 4733 events; returns how many digits were queued (0 when we are not
        sending or the peer did not negotiate telephone-event). Bad digits raise."""
        events = [d for d in digits if not d.isspace()]
        for d in events:
            digit_to_event(d)  # validate all before queuing any
        if self._te_pt is None or not self._send or self._stopped:
            return 0
        room = DTMF_MAX_QUEUE - len(self._dtmf_queue)
        self._dtmf_queue.extend(events[:room])
        return min(len(events), room)

    def stop(self) -> None:
        """RTCP BYE (§6.6), then close sockets and devices. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        self._stop_loop()
        if self._rtcp_call is not None and self._rtcp_call.active():
            self._rtcp_call.cancel()
        if self._running and self._rtcp_listener is not None:
            self._send_rtcp(bye=True)
        self._running = False
        for listener in (self._rtp_listener, self._rtcp_listener):
            if listener is not None:
                listener.stopListening()
        self._rtp_listener = self._rtcp_listener = None
        if self._shutdown_trigger is not None:
            try:
                self._reactor.removeSystemEventTrigger(self._shutdown_trigger)
            except (ValueError, KeyError, TypeError):
                pass  # already firing: we are being called by it
            self._shutdown_trigger = None
        for dev in (self.source, self.moh, self.sink):
            if dev is not None:
                try:
                    dev.close()
                except Exception:
                    log.failure("closing audio device failed")

    # ------------------------------------------------------------------ conference seam

    @property
    def clock(self) -> Any:
        return self._clock

    def _start_loop(self) -> None:
        self._loop = task.LoopingCall.withCount(self._on_ticks)
        self._loop.clock = self._clock
        self._loop.start(FRAME_S, now=False).addErrback(
            lambda f: log.failure("media clock stopped", f)
        )

    def _stop_loop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def attach(
        self, driver: Any, source: AudioSource, sink: AudioSink
    ) -> tuple[AudioSource, AudioSink]:
        """Hand this session to a conference mixer (client.media.mixer): our own frame
        clock stops, `driver` calls tick_receive()/tick_send() instead, and `source`/
        `sink` replace our devices. Returns our devices, which the caller now holds."""
        if self._stopped:
            raise MediaError("session already stopped")
        self._stop_loop()
        self._driver = driver
        old = (self.source, self.sink)
        self._set_devices(source, sink)
        return old

    def detach(self, source: AudioSource, sink: AudioSink) -> None:
        """Leave the mixer: take `source`/`sink` (our devices) back and our own clock."""
        self._driver = None
        self._set_devices(source, sink)
        if self._running and not self._stopped:
            self._start_loop()

    def _set_devices(self, source: AudioSource, sink: AudioSink) -> None:
        self.source, self.sink = source, sink
        self._out_fifo = _FrameFifo(sink.frame_samples)
        if self._info is not None:
            # Same conversions as _set_codec, for the new device rates.
            self._in_rs = Resampler(source.rate, self._info.clock_rate)
            self._out_rs = Resampler(self._info.clock_rate, sink.rate)
            self._send_fifo = _FrameFifo(self._info.frame_samples)

    def tick_receive(self) -> None:
        """First half of a mixer-driven tick: play out one frame into the sink."""
        if self._info is None or self._stopped:
            return
        try:
            self.counters["ticks"] += 1
            now = self._clock.seconds()
            self._tick_time, self._tick_ts = now, self._ts
            self._receive_tick(now)
        except Exception:
            self._tick_failed()

    def tick_send(self) -> None:
        """Second half: read one frame from the source (the mix) and send it."""
        if self._info is None or self._stopped:
            return
        try:
            self._send_tick()
        except Exception:
            self._tick_failed()

    def skip_frames(self, count: int) -> None:
        """Frames the driving clock could not run (a stalled reactor): keep the RTP
        timeline in step with real time, as _on_ticks does for our own clock."""
        if self._info is None or count <= 0:
            return
        self._ts = ts_add(self._ts, count * self._info.frame_samples)
        self.counters["skipped_ticks"] += count
        self._marker_next = True

    def _tick_failed(self) -> None:
        self.counters["tick_errors"] += 1
        if self.counters["tick_errors"] == 1:
            log.failure("media tick failed (further failures are only counted)")

    # ------------------------------------------------------------------ state

    @property
    def running(self) -> bool:
        return self._running

    @property
    def sending(self) -> bool:
        return self._send

    @property
    def receiving(self) -> bool:
        return self._recv

    def _remote_host(self) -> str | None:
        return self._remote[0] if self._remote else None

    def _remote_port(self) -> int | None:
        return self._remote[1] if self._remote else None

    def _set_direction(self, direction: str) -> None:
        send, recv = _direction_flags(direction)
        if send and not self._send:
            self._marker_next = True  # §5.1: first packet after silence
        if not send:
            self._dtmf_queue.clear()
            self._dtmf_train.clear()
        self.direction = direction
        self._send, self._recv = send, recv

    def _set_remote(self, addr: str, port: int, rtcp: tuple[str, int] | None) -> None:
        if not port or addr in UNSPECIFIED_ADDRESSES:
            # A rejected stream (port 0), or RFC 2543 hold (c=0.0.0.0, RFC 3264 §8.4):
            # nothing to send to. Writing to 0.0.0.0 would reach our own host on Linux.
            self._remote = self._remote_rtcp = None
            return
        if not (isIPAddress(addr) or isIPv6Address(addr)):
            # SDP may carry a host name; UDP writes need an address.
            self._remote = self._remote_rtcp = None
            self._reactor.resolve(addr).addCallbacks(
                lambda ip: self._set_remote(ip, port, rtcp),
                lambda f: log.warn("cannot resolve media host {host}: {e}", host=addr, e=f.value),
            )
            return
        self._remote = (addr, port)
        # RFC 3605: a=rtcp when given, else the next port up (RFC 3550 §11).
        self._remote_rtcp = rtcp if rtcp is not None else (addr, port + 1)

    def _set_codec(self, codec: Codec) -> None:
        try:
            info = codecs.get_codec(codec.name)
        except KeyError:
            raise MediaError(f"unsupported codec {codec.name!r}") from None
        if info.encoder_factory is None or info.decoder_factory is None:
            raise MediaError(f"{codec.name} is not an audio codec")
        if info.clock_rate != codec.clock_rate:
            raise MediaError(f"{codec.name} at {codec.clock_rate} Hz is not supported")
        encoder = info.encoder_factory()  # may raise OpusUnavailableError: let it
        decoder = info.decoder_factory()
        changed_rate = self._info is None or self._info.clock_rate != info.clock_rate
        self._codec, self._info, self._encoder = codec, info, encoder
        self._decoders = {codec.payload_type: decoder}
        if info.payload_type != codec.payload_type:
            # The peer should send with the number our SDP gave; accept our registry's
            # default too, in case the PT numbers differ between offer and answer.
            self._decoders[info.payload_type] = decoder
        if changed_rate or self._jb is None:
            self._jb = JitterBuffer(info.clock_rate, info.frame_samples)
            if self._rx is not None:
                self._rx.clock_rate = info.clock_rate
        self._in_rs = Resampler(self.source.rate, info.clock_rate)
        self._moh_rs = Resampler(self.moh.rate, info.clock_rate) if self.moh else None
        self._out_rs = Resampler(info.clock_rate, self.sink.rate)
        self._send_fifo = _FrameFifo(info.frame_samples)
        self._marker_next = True

    def _decoder_for(self, pt: int) -> Decoder | None:
        dec = self._decoders.get(pt)
        if dec is None and self._info is not None and self._info.clock_rate == 8000:
            # RFC 3264 §6.1 lets the answerer send any codec of the answer; G.711 is
            # the usual switch, and both laws share the 8 kHz timeline.
            other = codecs.by_payload_type(pt)
            if other is not None and other.name in ("PCMU", "PCMA") and other.payload_type < 96:
                assert other.decoder_factory is not None
                dec = self._decoders[pt] = other.decoder_factory()
        return dec

    @property
    def _holding_peer(self) -> bool:
        # We offered sendonly (RFC 3264 §8.4) and the answer agreed: music-on-hold time.
        return self._send and not self._recv

    # ------------------------------------------------------------------ the frame clock

    def _on_ticks(self, count: int) -> None:
        run = min(count, MAX_CATCHUP_TICKS)
        if count > run:
            # Skipped time still passes on the RTP timeline (§5.1: timestamps follow
            # the sampling clock), so the receiver sees a gap, not a time warp.
            self.skip_frames(count - run)
        for _ in range(run):
            try:
                self._tick()
            except Exception:
                self._tick_failed()

    def _tick(self) -> None:
        if self._info is None:
            return
        self.counters["ticks"] += 1
        now = self._clock.seconds()
        self._tick_time, self._tick_ts = now, self._ts
        self._send_tick()
        self._receive_tick(now)

    def _send_tick(self) -> None:
        info, fifo, encoder = self._info, self._send_fifo, self._encoder
        assert info is not None and fifo is not None and encoder is not None
        assert self._in_rs is not None
        # Read the microphone every tick even when not sending, so it never backs up.
        pcm = self._in_rs.process(self.source.read_frame())
        if self.moh is not None and self._holding_peer and self._moh_rs is not None:
            pcm = self._moh_rs.process(self.moh.read_frame())
        fifo.push(pcm)
        frame = fifo.pop()
        if self._send and self._remote is not None:
            if self._dtmf_train or (self._dtmf_queue and self._dtmf_gap == 0):
                self._send_dtmf_tick()
            else:
                if self._dtmf_gap:
                    self._dtmf_gap -= 1
                payload = encoder.encode(frame)
                self._send_rtp(
                    RtpPacket(
                        payload_type=self._codec.payload_type if self._codec else 0,
                        sequence=self._next_seq(),
                        timestamp=self._ts,
                        ssrc=self.ssrc,
                        payload=payload,
                        marker=self._marker_next,
                    )
                )
                self._marker_next = False
        elif not self._send:
            self._marker_next = True
        self._ts = ts_add(self._ts, info.frame_samples)

    def _send_dtmf_tick(self) -> None:
        assert self._info is not None and self._te_pt is not None
        if not self._dtmf_train:
            digit = self._dtmf_queue.popleft()
            # All packets of one event carry its start timestamp (RFC 4733 §2.5.1.2);
            # the audio clock keeps running underneath, one frame per tick.
            self._dtmf_train.extend(
                dtmf_packets(
                    digit,
                    ssrc=self.ssrc,
                    sequence=self._seq,
                    timestamp=self._ts,
                    payload_type=self._te_pt,
                    clock_rate=self._info.clock_rate,
                    interval_ms=FRAME_MS,
                )
            )
        pkt = self._dtmf_train.popleft()
        batch = [pkt]
        if TelephoneEvent.parse(pkt.payload).end:
            # The three end packets go back to back (§2.5.1.4 allows it).
            batch.extend(self._dtmf_train)
            self._dtmf_train.clear()
        for p in batch:
            self._send_rtp(replace(p, sequence=self._next_seq()))
        if not self._dtmf_train:
            self.dtmf_sent += 1
            self._dtmf_gap = DTMF_GAP_TICKS
            self._marker_next = True  # the audio after an event starts a new spurt

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq = seq_add(seq, 1)
        return seq

    def _send_rtp(self, packet: RtpPacket) -> None:
        if self._rtp_listener is None or self._remote is None:
            return
        try:
            self._rtp_listener.write(packet.serialize(), self._remote)
        except (OSError, MessageLengthError, InvalidAddressError):
            self.counters["send_errors"] += 1
            return
        self.packets_sent += 1
        self.bytes_sent += len(packet.payload)

    def _receive_tick(self, now: float) -> None:
        info, jb, out_rs = self._info, self._jb, self._out_rs
        assert info is not None and jb is not None and out_rs is not None
        pcm: np.ndarray | None = None
        if self._recv:
            item = jb.get(now)
            if isinstance(item, Frame):
                dec = self._decoder_for(item.payload_type)
                if dec is not None:
                    try:
                        pcm = dec.decode(item.payload)
                    except Exception:  # a corrupt payload is the peer's problem, not ours
                        self.counters["decode_errors"] += 1
                        pcm = self._conceal(dec, None)
            elif isinstance(item, Lost):
                dec = self._decoders.get(self._codec.payload_type) if self._codec else None
                if dec is not None:
                    pcm = self._conceal(dec, item.next_payload)
        if pcm is None:
            pcm = np.zeros(info.frame_samples, dtype=np.int16)
        self._out_fifo.push(out_rs.process(pcm))
        self.sink.write_frame(self._out_fifo.pop())

    def _conceal(self, dec: Decoder, next_payload: bytes | None) -> np.ndarray | None:
        try:
            return dec.conceal(next_payload)
        except Exception:
            self.counters["decode_errors"] += 1
            return None

    # ------------------------------------------------------------------ receiving RTP

    def _rtp_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self._handle_rtp(data, addr)
        except Exception:
            self.counters["malformed"] += 1
            log.failure("unexpected error handling an RTP datagram from {addr}", addr=addr)

    def _handle_rtp(self, data: bytes, addr: tuple[str, int]) -> None:
        if looks_like_rtcp(data):
            # A peer using rtcp-mux (RFC 5761) sends its reports here.
            self._handle_rtcp(data, addr)
            return
        try:
            packet = RtpPacket.parse(data)
        except ValueError:
            self.counters["malformed"] += 1
            return
        if not self._running or not self._recv or self._info is None:
            self.counters["ignored"] += 1
            return
        if not self._accept_ssrc(packet.ssrc):
            self.counters["foreign_ssrc"] += 1
            return
        now = self._clock.seconds()
        assert self._rx is not None and self._jb is not None
        self.last_source = addr
        self.packets_received += 1
        self.bytes_received += len(packet.payload)
        self._rx.update(packet.sequence, packet.timestamp, now)
        pt = packet.payload_type
        if self._te_pt is not None and pt == self._te_pt:
            self._receive_dtmf(packet)
        elif self._decoder_for(pt) is not None:
            self._jb.put(packet, now)
        else:
            self.counters["unknown_payload_type"] += 1

    def _accept_ssrc(self, ssrc: int) -> bool:
        if self._rx is None:
            self._rx = ReceiverStats(ssrc, self._info.clock_rate if self._info else 8000)
            return True
        if ssrc == self._rx.ssrc:
            self._ssrc_candidate = None
            return True
        cand = self._ssrc_candidate
        count = cand[1] + 1 if cand is not None and cand[0] == ssrc else 1
        if count >= SSRC_SWITCH_PACKETS:
            self._ssrc_candidate = None
            self._rx = ReceiverStats(ssrc, self._rx.clock_rate)
            return True
        self._ssrc_candidate = (ssrc, count)
        return False

    def _receive_dtmf(self, packet: RtpPacket) -> None:
        try:
            digit = self._dtmf_rx.feed(packet)
        except ValueError:
            self.counters["malformed"] += 1
            return
        if digit is None:
            return
        self.received_digits.append(digit)
        if self.on_dtmf is not None:
            try:
                self.on_dtmf(digit)
            except Exception:
                log.failure("DTMF callback failed")

    # ------------------------------------------------------------------ RTCP

    def _rtcp_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self._handle_rtcp(data, addr)
        except Exception:
            self.counters["rtcp_malformed"] += 1
            log.failure("unexpected error handling an RTCP datagram from {addr}", addr=addr)

    def _handle_rtcp(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            packets = parse_compound(data, strict=False)
        except ValueError:
            self.counters["rtcp_malformed"] += 1
            return
        self.counters["rtcp_received"] += 1
        now = self._clock.seconds()
        for p in packets:
            if isinstance(p, SenderReport):
                self.counters["sr_received"] += 1
                if self._rx is None:
                    # An SR before any RTP (the peer holds us): keep its LSR so our
                    # reports still let the peer measure RTT.
                    rate = self._info.clock_rate if self._info else 8000
                    self._rx = ReceiverStats(p.ssrc, rate)
                if p.ssrc == self._rx.ssrc:
                    self._rx.on_sender_report(p.ntp_timestamp, now)
                self._handle_blocks(p.reports, now)
            elif isinstance(p, ReceiverReport):
                self._handle_blocks(p.reports, now)
            elif isinstance(p, SourceDescription):
                for chunk in p.chunks:
                    if chunk.cname and (self._rx is None or chunk.ssrc == self._rx.ssrc):
                        self.remote_cname = chunk.cname
            elif isinstance(p, Bye):
                if self._rx is None or self._rx.ssrc in p.ssrcs:
                    self.remote_bye = True

    def _handle_blocks(self, blocks: tuple[ReportBlock, ...], now: float) -> None:
        for block in blocks:
            if block.ssrc != self.ssrc:
                continue  # a report about some other source (a conference)
            rtt = round_trip_time(ntp_middle32(ntp_from_unix(now)), block.lsr, block.dlsr)
            if rtt is not None:
                self.rtt = rtt
            self.remote_fraction_lost = block.fraction
            self.remote_cumulative_lost = block.cumulative_lost
            rate = self._info.clock_rate if self._info else 8000
            self.remote_jitter = block.jitter / rate

    def _schedule_rtcp(self, initial: bool = False) -> None:
        interval = self.rtcp_interval * self._rng.uniform(RTCP_RANDOM_MIN, RTCP_RANDOM_MAX)
        if initial:
            interval /= 2
        self._rtcp_call = self._clock.callLater(interval, self._rtcp_timer)

    def _rtcp_timer(self) -> None:
        try:
            self._send_rtcp()
        except Exception:
            log.failure("sending RTCP failed")
        if self._running:
            self._schedule_rtcp()

    def _rtp_timestamp_at(self, now: float) -> int:
        """The RTP timestamp matching `now` on our sampling clock, for the SR (§6.4.1)."""
        if self._tick_time is None or self._info is None:
            return self._ts
        elapsed = max(0.0, now - self._tick_time)
        return ts_add(self._tick_ts, int(round(elapsed * self._info.clock_rate)))

    def build_report(self, now: float) -> list[RtcpPacket]:
        """SR if we sent RTP since the report before last (§6.4), else RR; plus SDES."""
        blocks: tuple[ReportBlock, ...] = ()
        if self._rx is not None:
            blocks = (self._rx.report_block(now),)
        report: RtcpPacket
        if self.packets_sent > self._sent_at_reports[0]:
            report = SenderReport(
                ssrc=self.ssrc,
                ntp_timestamp=ntp_from_unix(now),
                rtp_timestamp=self._rtp_timestamp_at(now),
                packet_count=self.packets_sent & 0xFFFFFFFF,
                octet_count=self.bytes_sent & 0xFFFFFFFF,
                reports=blocks,
            )
        else:
            report = ReceiverReport(self.ssrc, blocks)
        self._sent_at_reports.append(self.packets_sent)
        return [report, SourceDescription.with_cname(self.ssrc, self.cname)]

    def _send_rtcp(self, bye: bool = False) -> None:
        if self._rtcp_listener is None or self._remote_rtcp is None:
            return
        packets = self.build_report(self._clock.seconds())
        if bye:
            packets.append(Bye((self.ssrc,)))
        try:
            self._rtcp_listener.write(serialize_compound(packets), self._remote_rtcp)
        except (OSError, MessageLengthError, InvalidAddressError):
            self.counters["send_errors"] += 1
            return
        self.counters["rtcp_sent"] += 1

    # ------------------------------------------------------------------ stats

    def stats(self) -> dict[str, Any]:
        rx = self._rx
        rate = self._info.clock_rate if self._info else 8000
        expected = rx.expected if rx is not None else 0
        lost = rx.cumulative_lost if rx is not None else 0
        out: dict[str, Any] = {
            "codec": self._codec.name if self._codec else None,
            "payload_type": self._codec.payload_type if self._codec else None,
            "clock_rate": rate,
            "direction": self.direction,
            "local_port": self.local_port,
            "local_rtcp_port": self.rtcp_port,
            "remote": f"{self._remote[0]}:{self._remote[1]}" if self._remote else None,
            "last_source": (
                f"{self.last_source[0]}:{self.last_source[1]}" if self.last_source else None
            ),
            "ssrc": self.ssrc,
            "remote_ssrc": rx.ssrc if rx is not None else None,
            "remote_cname": self.remote_cname,
            "remote_bye": self.remote_bye,
            "packets_sent": self.packets_sent,
            "bytes_sent": self.bytes_sent,
            "packets_received": self.packets_received,
            "bytes_received": self.bytes_received,
            "packets_lost": max(0, lost),
            "loss_fraction": (max(0, lost) / expected) if expected > 0 else 0.0,
            "jitter_ms": (rx.jitter / rate * 1000) if rx is not None else 0.0,
            "rtt_ms": self.rtt * 1000 if self.rtt is not None else None,
            "remote_loss_fraction": self.remote_fraction_lost,
            "remote_jitter_ms": (
                self.remote_jitter * 1000 if self.remote_jitter is not None else None
            ),
            "dtmf_sent": self.dtmf_sent,
            "dtmf_received": len(self.received_digits),
            **self.counters,
        }
        if self._jb is not None:
            out["jitter_buffer"] = {
                **asdict(self._jb.stats),
                "target_delay_ms": self._jb.target_delay * 1000,
                "depth": self._jb.depth,
            }
        return out


# ---------------------------------------------------------------------- factory


def check_media_options(options: Any) -> None:
    """Open and close --play/--record/--moh once so the CLI can refuse a bad file at
    startup with one line (AudioError), rather than at the first call."""
    for attr in ("play", "moh"):
        path = getattr(options, attr, None)
        if path:
            WavFileSource(path).close()
    record = getattr(options, "record", None)
    if record:
        WavFileSink(record).close()


def _open_source(options: Any) -> AudioSource:
    if getattr(options, "play", None):
        return WavFileSource(options.play)
    device = getattr(options, "audio_device", None)
    if device == "none":
        return SilenceSource()
    try:
        return PyAudioSource(device)
    except AudioError as exc:
        if device:
            raise  # the user named a device: not finding it is an error
        log.warn("no microphone ({e}); sending silence", e=exc)
        return SilenceSource()


def _open_sink(options: Any) -> AudioSink:
    sinks: list[AudioSink] = []
    device = getattr(options, "audio_device", None)
    if device != "none":
        try:
            sinks.append(PyAudioSink(device))
        except AudioError as exc:
            if device:
                raise
            log.warn("no speaker ({e}); not playing received audio", e=exc)
    if getattr(options, "record", None):
        sinks.append(WavFileSink(options.record, DEFAULT_RECORD_RATE))
    if not sinks:
        return NullSink()
    return sinks[0] if len(sinks) == 1 else TeeSink(*sinks)


# The phone's microphone/speaker (or --play/--record files) are opened once per process
# and shared by every call's session (see client.media.mixer.DevicePool): two calls must
# not open the same WAV file for writing twice, and a conference mixes them anyway.
_DEVICES = DevicePool()


def _device_keys(options: Any) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    device = getattr(options, "audio_device", None)
    play = getattr(options, "play", None)
    record = getattr(options, "record", None)
    return (
        ("source", os.path.abspath(play) if play else None, device),
        ("sink", os.path.abspath(record) if record else None, device),
    )


def create_session(reactor: Any, interface: str, options: Any) -> RtpSession:
    """The MediaFactory of client.media_hook: devices from `options` (MediaOptions:
    play, record; optional audio_device, moh), bound to `interface`. Raises AudioError
    (one line) for a bad file or a named device that cannot be opened, MediaError when
    no port can be bound. Sessions of one process share the devices (DevicePool)."""
    source_key, sink_key = _device_keys(options)
    source: AudioSource = _DEVICES.source(source_key, lambda: _open_source(options))
    try:
        sink: AudioSink = _DEVICES.sink(sink_key, lambda: _open_sink(options))
    except Exception:
        source.close()
        raise
    moh_path = getattr(options, "moh", None)
    moh: AudioSource | None = None
    try:
        if moh_path:
            moh = WavFileSource(moh_path)
        session = RtpSession(reactor, interface, source, sink, moh=moh)
        session.bind()
    except Exception:
        for dev in (source, sink, moh):
            if dev is not None:
                dev.close()
        raise
    return session


def conference(sessions: list[RtpSession], *, normalise: bool = False) -> Mixer:
    """The optional `conference` capability of the media factory (client.media_hook):
    one mixer, on the sessions' clock, driving every given (started) session."""
    if not sessions:
        raise MediaError("a conference needs at least one session")
    mixer = Mixer(sessions[0].clock, normalise=normalise)
    for session in sessions:
        mixer.add(session)
    return mixer


# client.media_hook looks the capability up on the factory it loaded.
create_session.conference = conference  # type: ignore[attr-defined]
