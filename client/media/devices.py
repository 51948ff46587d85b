# -*- test-case-name: tests.client.test_devices,tests.client.test_pyaudio_alsa -*-
"""Audio sources and sinks: 20 ms frames of int16 mono at a rate each device declares.

The RTP session owns the one frame clock (a LoopingCall every 20 ms) and calls
`source.read_frame()` / `sink.write_frame(pcm)` once per tick. Devices never block and
never pace: ALSA's file and null plugins have no clock of their own (a blocking write
returns at once), and a real sound card drifts against the network anyway, so pacing in
one place is the only way to keep the whole audio path in step.

    AudioSource   rate, frame_samples, read_frame() -> int16[frame_samples], close()
    AudioSink     rate, frame_samples, write_frame(int16[...]), close()

Implementations: PyAudioSource/PyAudioSink (microphone/speaker through PortAudio),
WavFileSource (--play, looped), WavFileSink (--record), ToneSource, SilenceSource,
NullSink, MemorySink (keeps what it was given; tests and diagnostics), TeeSink (one
frame to several sinks, each at its own rate).

Every failure to open something raises AudioError whose str() is one line naming the
file or device, ready for the CLI to print.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import wave
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import numpy as np

from .resample import Resampler

FRAME_MS = 20
# Rates whose 20 ms frame is a whole number of samples (rate divisible by 50). A WAV file
# at any other rate (11025, 22050 ...) is converted to FALLBACK_RATE as it is read.
FALLBACK_RATE = 48000
DEFAULT_DEVICE_RATE = 48000
# Rates tried, in order, when a PortAudio device refuses the one asked for.
DEVICE_RATE_CANDIDATES = (48000, 44100, 16000, 8000)
# A capture device that runs faster than our frame clock builds a backlog; beyond this
# many frames the oldest audio is dropped so mouth-to-ear delay stays bounded.
MAX_CAPTURE_BACKLOG_FRAMES = 4
# Frames per WAV read: large enough to keep file I/O rare, small enough to stay cheap.
WAV_READ_FRAMES = 4096
TONE_AMPLITUDE = 0.3  # of full scale: loud enough for tests, no clipping after resampling


class AudioError(Exception):
    """An audio device or file could not be opened or used; str() is one line."""


def frame_samples_for(rate: int) -> int:
    if rate <= 0 or rate * FRAME_MS % 1000:
        raise ValueError(f"sample rate {rate} Hz has no whole-sample {FRAME_MS} ms frame")
    return rate * FRAME_MS // 1000


# ------------------------------------------------------------------------ interfaces


class AudioSource(ABC):
    """Produces one frame of int16 mono per call; must return immediately."""

    rate: int

    @property
    def frame_samples(self) -> int:
        return frame_samples_for(self.rate)

    @abstractmethod
    def read_frame(self) -> np.ndarray: ...

    def close(self) -> None:  # noqa: B027 - most sources hold nothing to release
        pass


class AudioSink(ABC):
    """Consumes one frame of int16 mono per call; must return immediately."""

    rate: int

    @property
    def frame_samples(self) -> int:
        return frame_samples_for(self.rate)

    @abstractmethod
    def write_frame(self, pcm: np.ndarray) -> None: ...

    def close(self) -> None:  # noqa: B027
        pass


# ------------------------------------------------------------------------ generated


class SilenceSource(AudioSource):
    def __init__(self, rate: int = 8000) -> None:
        self.rate = rate
        self._frame = np.zeros(frame_samples_for(rate), dtype=np.int16)

    def read_frame(self) -> np.ndarray:
        return self._frame.copy()


class ToneSource(AudioSource):
    """A continuous sine. The phase is carried from frame to frame (computed from a
    running sample index), so frames join without clicks whatever the frequency."""

    def __init__(self, freq: float, rate: int = 8000, amplitude: float = TONE_AMPLITUDE) -> None:
        if not 0 < freq < rate / 2:
            raise ValueError(f"tone {freq} Hz not below the Nyquist frequency of {rate} Hz")
        self.freq = freq
        self.rate = rate
        self.amplitude = amplitude
        self._phase = 0.0  # radians at the start of the next frame, kept in [0, 2*pi)

    def read_frame(self) -> np.ndarray:
        n = self.frame_samples
        step = 2 * np.pi * self.freq / self.rate
        x = np.sin(self._phase + step * np.arange(n)) * self.amplitude * 32767
        # Wrapping the phase keeps float precision constant however long the call lasts.
        self._phase = (self._phase + step * n) % (2 * np.pi)
        return np.round(x).astype(np.int16)


class NullSink(AudioSink):
    def __init__(self, rate: int = 8000) -> None:
        self.rate = rate
        self.frames = 0

    def write_frame(self, pcm: np.ndarray) -> None:
        self.frames += 1


class MemorySink(AudioSink):
    """Keeps every frame written (bounded by `max_seconds`, oldest dropped)."""

    def __init__(self, rate: int = 8000, max_seconds: float = 600.0) -> None:
        self.rate = rate
        self._frames: list[np.ndarray] = []
        self._max_frames = max(1, int(max_seconds * 1000 / FRAME_MS))
        self.closed = False

    def write_frame(self, pcm: np.ndarray) -> None:
        self._frames.append(np.asarray(pcm, dtype=np.int16).copy())
        if len(self._frames) > self._max_frames:
            del self._frames[0]

    @property
    def samples(self) -> np.ndarray:
        if not self._frames:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(self._frames)

    def close(self) -> None:
        self.closed = True


class TeeSink(AudioSink):
    """Writes each frame to several sinks (speaker and --record file), converting to each
    one's rate with its own streaming resampler so every sink gets seamless audio."""

    def __init__(self, *sinks: AudioSink) -> None:
        if not sinks:
            raise ValueError("TeeSink needs at least one sink")
        self.sinks = sinks
        self.rate = sinks[0].rate
        self._resamplers = [
            None if s.rate == self.rate else Resampler(self.rate, s.rate) for s in sinks
        ]

    def write_frame(self, pcm: np.ndarray) -> None:
        for sink, rs in zip(self.sinks, self._resamplers, strict=True):
            sink.write_frame(pcm if rs is None else rs.process(pcm))

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


# ------------------------------------------------------------------------ WAV files


class WavFileSource(AudioSource):
    """--play: a 16-bit PCM WAV file of any rate and channel count, mixed down to mono and
    looped (or followed by silence with loop=False). Streamed from disk, so a long file
    costs no memory; a rate that is not a multiple of 50 Hz is resampled to 48 kHz."""

    def __init__(self, path: str, *, loop: bool = True) -> None:
        self.path = path
        self.loop = loop
        self.finished = False
        self.loops = 0  # how many times the file wrapped round
        try:
            self._wav = wave.open(path, "rb")
        except (OSError, EOFError, wave.Error) as exc:
            raise AudioError(f"cannot play {path}: {_reason(exc)}") from None
        try:
            self._check_format()
        except AudioError:
            self._wav.close()
            raise
        self.file_rate = self._wav.getframerate()
        self.channels = self._wav.getnchannels()
        self.rate = self.file_rate if self.file_rate % 50 == 0 else FALLBACK_RATE
        self._resampler = (
            Resampler(self.file_rate, self.rate) if self.rate != self.file_rate else None
        )
        self._buf = np.zeros(0, dtype=np.int16)

    def _check_format(self) -> None:
        w = self._wav
        if w.getsampwidth() != 2:
            raise AudioError(
                f"cannot play {self.path}: {8 * w.getsampwidth()}-bit samples, need 16-bit PCM WAV"
            )
        if w.getnframes() == 0:
            raise AudioError(f"cannot play {self.path}: the file holds no audio")
        if w.getframerate() < 1000:
            raise AudioError(f"cannot play {self.path}: sample rate {w.getframerate()} Hz")

    def _read_chunk(self) -> np.ndarray | None:
        try:
            raw = self._wav.readframes(WAV_READ_FRAMES)
        except (OSError, EOFError, wave.Error):
            raw = b""  # a truncated file: treat as its end
        if not raw:
            if not self.loop:
                return None
            self._wav.rewind()
            self.loops += 1
            raw = self._wav.readframes(WAV_READ_FRAMES)
            if not raw:
                return None
        # WAV is little-endian whatever the host; an odd trailing byte is dropped.
        usable = len(raw) - len(raw) % (2 * self.channels)
        data = np.frombuffer(raw[:usable], dtype="<i2")
        if self.channels > 1:
            # Mix down: average the channels in a wider type so the sum cannot overflow.
            data = data.reshape(-1, self.channels).astype(np.int32).mean(axis=1)
            data = np.round(data).astype(np.int16)
        else:
            data = data.astype(np.int16)
        if self._resampler is not None:
            data = self._resampler.process(data)
        return data

    def read_frame(self) -> np.ndarray:
        n = self.frame_samples
        while len(self._buf) < n and not self.finished:
            chunk = self._read_chunk()
            if chunk is None:
                self.finished = True
                break
            self._buf = np.concatenate([self._buf, chunk])
        out = np.zeros(n, dtype=np.int16)
        take = min(n, len(self._buf))
        out[:take] = self._buf[:take]
        self._buf = self._buf[take:]
        return out

    def close(self) -> None:
        self._wav.close()


class WavFileSink(AudioSink):
    """--record: 16-bit mono WAV of what the user hears. The wave module patches the
    RIFF/data sizes in the header on close(), so the session closes its sink on stop()
    (and the CLI stops sessions before the reactor exits)."""

    def __init__(self, path: str, rate: int = 16000) -> None:
        frame_samples_for(rate)
        self.path = path
        self.rate = rate
        self.frames = 0
        self._closed = False
        try:
            # Open the file ourselves: wave.open(path) leaves a half-built writer whose
            # destructor raises when the path cannot be created.
            self._file = open(path, "wb")  # closed in close()
        except OSError as exc:
            raise AudioError(f"cannot record to {path}: {_reason(exc)}") from None
        self._wav = wave.open(self._file, "wb")
        self._wav.setnchannels(1)
        self._wav.setsampwidth(2)
        self._wav.setframerate(rate)

    def write_frame(self, pcm: np.ndarray) -> None:
        if self._closed:
            return
        self._wav.writeframes(np.asarray(pcm, dtype="<i2").tobytes())
        self.frames += 1

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            # wave.close() writes the final sizes into the header; the file object is
            # ours to close because we opened it.
            with contextlib.suppress(OSError):
                self._wav.close()
            with contextlib.suppress(OSError):
                self._file.close()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, EOFError):
        return "the file is truncated"
    text = str(exc) or type(exc).__name__
    if isinstance(exc, wave.Error):
        return f"not a PCM WAV file ({text})"
    return text


# ------------------------------------------------------------------------ PortAudio

PYAUDIO_HINT = (
    "PyAudio is not installed: pip install PyAudio "
    "(it builds against the Debian package portaudio19-dev)"
)

_pa_instance: Any = None


def _silence_alsa_errors() -> None:
    """ALSA prints a line to stderr for every PCM in its config it cannot open while
    PortAudio enumerates devices ("Unknown PCM cards.pcm.rear" ...); those are not our
    errors and they would drown the CLI's one-line-per-event output."""
    name = ctypes.util.find_library("asound")
    if not name:
        return
    try:
        lib = ctypes.CDLL(name)
        handler_type = ctypes.CFUNCTYPE(
            None, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p
        )
        handler = handler_type(lambda *args: None)
        lib.snd_lib_error_set_handler(handler)
        # Keep the callback alive for the life of the process: ALSA holds a raw pointer.
        _silence_alsa_errors.handler = handler  # type: ignore[attr-defined]
    except (OSError, AttributeError):
        pass


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """PortAudio's JACK and OSS probes write straight to fd 2 during initialisation;
    SIPCALLING_AUDIO_DEBUG=1 keeps them for diagnosing a device problem."""
    if os.environ.get("SIPCALLING_AUDIO_DEBUG"):
        yield
        return
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _pyaudio() -> tuple[Any, Any]:
    """The pyaudio module and the process-wide PyAudio instance (Pa_Initialize is slow
    and probes every host API, so it happens once)."""
    global _pa_instance
    try:
        import pyaudio  # deferred: the rest of the media stack works without it
    except ImportError:
        raise AudioError(PYAUDIO_HINT) from None
    if _pa_instance is None:
        if not os.environ.get("SIPCALLING_AUDIO_DEBUG"):
            _silence_alsa_errors()
        # JACK would otherwise try to start a server just because we listed devices.
        os.environ.setdefault("JACK_NO_START_SERVER", "1")
        with _quiet_stderr():
            _pa_instance = pyaudio.PyAudio()
    return pyaudio, _pa_instance


def list_devices() -> list[dict[str, Any]]:
    """[{index, name, inputs, outputs, default_rate}] for `sipclient --list-audio-devices`."""
    _, pa = _pyaudio()
    out = []
    for i in range(pa.get_device_count()):
        info = pa.get_device_info_by_index(i)
        out.append(
            {
                "index": i,
                "name": info["name"],
                "inputs": int(info["maxInputChannels"]),
                "outputs": int(info["maxOutputChannels"]),
                "default_rate": int(info["defaultSampleRate"]),
            }
        )
    return out


def find_device(device: str | int | None, kind: str) -> tuple[int, str]:
    """Resolve --audio-device (None = the default; an index; an exact name; or a name
    fragment matching exactly one device) to (index, name) for `kind` 'input'/'output'."""
    _, pa = _pyaudio()
    channels_key = "maxInputChannels" if kind == "input" else "maxOutputChannels"
    if device is None or device == "":
        try:
            info = (
                pa.get_default_input_device_info()
                if kind == "input"
                else pa.get_default_output_device_info()
            )
        except OSError:
            raise AudioError(f"no default audio {kind} device") from None
        return int(info["index"]), str(info["name"])
    infos = [pa.get_device_info_by_index(i) for i in range(pa.get_device_count())]
    usable = [i for i in infos if int(i[channels_key]) > 0]
    spec = str(device).strip()
    if spec.isdigit():
        idx = int(spec)
        for info in usable:
            if int(info["index"]) == idx:
                return idx, str(info["name"])
        raise AudioError(f"audio {kind} device {spec} does not exist or has no {kind} channels")
    exact = [i for i in usable if str(i["name"]).lower() == spec.lower()]
    partial = [i for i in usable if spec.lower() in str(i["name"]).lower()]
    matches = exact or partial
    if len(matches) == 1:
        return int(matches[0]["index"]), str(matches[0]["name"])
    names = ", ".join(repr(str(i["name"])) for i in (matches or usable)) or "none"
    if not matches:
        raise AudioError(f"audio {kind} device {spec!r} not found (available: {names})")
    raise AudioError(f"audio {kind} device {spec!r} is ambiguous (matches: {names})")


def _open_stream(device: str | int | None, kind: str, rate: int | None) -> tuple[Any, int, str]:
    pyaudio, pa = _pyaudio()
    index, name = find_device(device, kind)
    info = pa.get_device_info_by_index(index)
    candidates: list[int] = []
    for r in (rate, int(info["defaultSampleRate"]), *DEVICE_RATE_CANDIDATES):
        if r and r % 50 == 0 and r not in candidates:
            candidates.append(r)
    last_error = "no usable sample rate"
    for r in candidates:
        kwargs: dict[str, Any] = {
            "format": pyaudio.paInt16,
            "channels": 1,
            "rate": r,
            "frames_per_buffer": frame_samples_for(r),
        }
        if kind == "input":
            kwargs.update(input=True, input_device_index=index)
        else:
            kwargs.update(output=True, output_device_index=index)
        try:
            with _quiet_stderr():
                stream = pa.open(**kwargs)
        except (OSError, ValueError) as exc:
            last_error = str(exc) or type(exc).__name__
            continue
        return stream, r, name
    raise AudioError(f"cannot open audio {kind} device {name!r}: {last_error}")


class PyAudioSource(AudioSource):
    """Microphone through PortAudio in blocking mode, but never blocking: each tick
    reads exactly one frame if one is available, otherwise returns silence."""

    def __init__(self, device: str | int | None = None, rate: int | None = None) -> None:
        self._stream, self.rate, self.device_name = _open_stream(
            device, "input", rate or DEFAULT_DEVICE_RATE
        )
        self.underruns = 0
        self.dropped_frames = 0
        self.errors = 0

    def read_frame(self) -> np.ndarray:
        n = self.frame_samples
        try:
            avail = self._stream.get_read_available()
            if avail < n:
                self.underruns += 1
                return np.zeros(n, dtype=np.int16)
            excess = avail - MAX_CAPTURE_BACKLOG_FRAMES * n
            if excess >= n:
                # Drop whole frames of the oldest audio to keep latency bounded.
                drop = excess - excess % n
                self._stream.read(drop, exception_on_overflow=False)
                self.dropped_frames += drop // n
            raw = self._stream.read(n, exception_on_overflow=False)
        except OSError:
            self.errors += 1
            return np.zeros(n, dtype=np.int16)
        return np.frombuffer(raw, dtype=np.int16).copy()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._stream.stop_stream()
            self._stream.close()


class PyAudioSink(AudioSink):
    """Speaker through PortAudio: each tick writes one frame if the device buffer has
    room for it, else drops it (the device clock is slower than ours)."""

    def __init__(self, device: str | int | None = None, rate: int | None = None) -> None:
        self._stream, self.rate, self.device_name = _open_stream(
            device, "output", rate or DEFAULT_DEVICE_RATE
        )
        self.dropped_frames = 0
        self.errors = 0

    def write_frame(self, pcm: np.ndarray) -> None:
        data = np.asarray(pcm, dtype=np.int16)
        try:
            if self._stream.get_write_available() < len(data):
                self.dropped_frames += 1
                return
            self._stream.write(data.tobytes(), exception_on_underflow=False)
        except OSError:
            self.errors += 1

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._stream.stop_stream()
            self._stream.close()
