"""Audio sources and sinks that need no hardware: tone, silence, WAV files, memory, tee."""

from __future__ import annotations

import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from client.media.devices import (
    AudioError,
    MemorySink,
    NullSink,
    SilenceSource,
    TeeSink,
    ToneSource,
    WavFileSink,
    WavFileSource,
    frame_samples_for,
)


def peak_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(len(x))))
    return float(np.argmax(spec)) * rate / len(x)


def write_wav(
    path: Path, samples: np.ndarray, rate: int, channels: int = 1, width: int = 2
) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples).astype(f"<i{width}").tobytes())
    return path


def test_frame_samples() -> None:
    assert frame_samples_for(8000) == 160
    assert frame_samples_for(48000) == 960
    assert frame_samples_for(44100) == 882
    with pytest.raises(ValueError):
        frame_samples_for(11025)


# ---------------------------------------------------------------- generated


def test_tone_is_continuous_and_at_its_frequency() -> None:
    src = ToneSource(440, 8000)
    frames = [src.read_frame() for _ in range(100)]
    assert all(f.dtype == np.int16 and f.shape == (160,) for f in frames)
    pcm = np.concatenate(frames)
    t = np.arange(len(pcm)) / 8000
    ideal = np.round(np.sin(2 * np.pi * 440 * t) * src.amplitude * 32767)
    # Phase carried across frames: the concatenation is one unbroken sine.
    assert np.max(np.abs(pcm - ideal)) <= 2
    assert abs(peak_hz(pcm, 8000) - 440) <= 1


def test_tone_above_nyquist_rejected() -> None:
    with pytest.raises(ValueError, match="Nyquist"):
        ToneSource(5000, 8000)


def test_silence_and_null() -> None:
    s = SilenceSource(16000)
    assert s.read_frame().shape == (320,) and not s.read_frame().any()
    sink = NullSink()
    sink.write_frame(np.zeros(160, dtype=np.int16))
    assert sink.frames == 1


def test_memory_sink_bounded() -> None:
    sink = MemorySink(8000, max_seconds=0.1)  # five frames
    for i in range(8):
        sink.write_frame(np.full(160, i, dtype=np.int16))
    assert len(sink.samples) == 5 * 160 and sink.samples[0] == 3


def test_tee_sink_resamples_per_sink() -> None:
    a, b = MemorySink(8000), MemorySink(16000)
    tee = TeeSink(a, b)
    src = ToneSource(440, 8000)
    for _ in range(50):
        tee.write_frame(src.read_frame())
    tee.close()
    assert a.closed and b.closed
    assert len(a.samples) == 50 * 160 and len(b.samples) == 50 * 320
    assert abs(peak_hz(b.samples[1600:], 16000) - 440) <= 2


# ---------------------------------------------------------------- WAV source


def test_wav_loops(tmp_path: Path) -> None:
    data = np.arange(1000, dtype=np.int16)  # 6.25 frames: the loop crosses a frame
    src = WavFileSource(str(write_wav(tmp_path / "a.wav", data, 8000)))
    assert src.rate == 8000
    out = np.concatenate([src.read_frame() for _ in range(20)])
    assert np.array_equal(out, np.tile(data, 4)[: 20 * 160])
    assert src.loops >= 3 and not src.finished
    src.close()


def test_wav_no_loop_ends_in_silence(tmp_path: Path) -> None:
    data = np.full(200, 7, dtype=np.int16)
    src = WavFileSource(str(write_wav(tmp_path / "a.wav", data, 8000)), loop=False)
    out = np.concatenate([src.read_frame() for _ in range(3)])
    assert (out[:200] == 7).all() and not out[200:].any()
    assert src.finished


def test_wav_stereo_mixed_to_mono(tmp_path: Path) -> None:
    stereo = np.tile(np.array([1000, 3000], dtype=np.int16), 320)  # 320 frames L,R
    src = WavFileSource(str(write_wav(tmp_path / "s.wav", stereo, 16000, channels=2)))
    assert src.rate == 16000 and src.frame_samples == 320
    assert (src.read_frame() == 2000).all()


def test_wav_odd_rate_is_resampled(tmp_path: Path) -> None:
    t = np.arange(11025) / 11025
    tone = np.round(np.sin(2 * np.pi * 440 * t) * 10000)
    src = WavFileSource(str(write_wav(tmp_path / "o.wav", tone, 11025)))
    assert src.file_rate == 11025 and src.rate == 48000
    pcm = np.concatenate([src.read_frame() for _ in range(50)])
    assert abs(peak_hz(pcm[4800:], 48000) - 440) <= 2


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"this is not a wav file at all", "not a PCM WAV file"),
        (b"", "truncated"),
    ],
)
def test_bad_wav_is_one_line_error(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(AudioError) as info:
        WavFileSource(str(path))
    msg = str(info.value)
    assert msg.startswith(f"cannot play {path}: ") and reason in msg
    assert "\n" not in msg


def test_missing_wav(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="cannot play .*nope.wav: No such file"):
        WavFileSource(str(tmp_path / "nope.wav"))


def test_8bit_wav_rejected(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "u8.wav", np.full(800, 128), 8000, width=1)
    with pytest.raises(AudioError, match="8-bit samples, need 16-bit PCM WAV"):
        WavFileSource(str(path))


def test_empty_wav_rejected(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "e.wav", np.zeros(0), 8000)
    with pytest.raises(AudioError, match="holds no audio"):
        WavFileSource(str(path))


# ---------------------------------------------------------------- WAV sink


def test_wav_sink_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "rec.wav"
    sink = WavFileSink(str(path), 16000)
    src = ToneSource(440, 16000)
    frames = [src.read_frame() for _ in range(25)]
    for f in frames:
        sink.write_frame(f)
    sink.close()
    sink.close()  # idempotent
    sink.write_frame(frames[0])  # after close: ignored
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
        assert w.getnframes() == 25 * 320  # header finalised with the real length
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    assert np.array_equal(data, np.concatenate(frames))
    # What we record plays back through WavFileSource unchanged.
    back = WavFileSource(str(path), loop=False)
    assert np.array_equal(back.read_frame(), frames[0])


def test_wav_sink_bad_path_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="cannot record to .*: No such file or directory"):
        WavFileSink(str(tmp_path / "no" / "such" / "dir.wav"))


def test_devices_module_is_twisted_free() -> None:
    # Only session.py is the Twisted boundary of client.media (docs/architecture.md).
    code = "import sys, client.media.devices; assert 'twisted' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
