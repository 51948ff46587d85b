"""Tones for ``sipclient --play`` and an FFT check of ``--record`` files.

Each phone plays its own pure tone, so a recording tells by its spectrum whom the
phone heard. The frequencies are well apart, inside the G.711 band (300-3400 Hz), and
each fits a whole number of periods in the one-second file, so the looped file plays
without a click that would smear the spectrum.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["TONES", "ToneCheck", "check_tones", "write_tone"]

TONES: dict[str, int] = {"alice": 500, "bob": 800, "carol": 1250}
TONE_RATE = 8000
#: A tone counts as heard when its band stands this far above the spectrum's median.
#: Measured on loopback through G.711: a tone that is there stands 110-170 dB out
#: (the median bin of a clean tone recording is nearly zero), one that is absent
#: 0-20 dB (leakage, G.711 quantisation), so 40 dB is far from both.
MIN_PROMINENCE_DB = 40.0
BAND_HZ = 15.0
MIN_SECONDS = 0.3


def write_tone(path: Path, frequency: int, seconds: float = 1.0, level: float = 0.25) -> None:
    """A 16-bit mono WAV at 8 kHz. `level` leaves headroom: a conference mixer sums
    the others' signals, and clipping would add harmonics that look like other tones."""
    t = np.arange(int(TONE_RATE * seconds)) / TONE_RATE
    samples = np.round(level * 32767 * np.sin(2 * np.pi * frequency * t)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(TONE_RATE)
        w.writeframes(samples.tobytes())


@dataclass(slots=True)
class ToneCheck:
    """Which expected tones a recording holds."""

    recording: str
    seconds: float
    levels_db: dict[str, float]  # name -> prominence above the median, in dB
    expected: list[str]
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and all(
            self.levels_db.get(name, 0.0) >= MIN_PROMINENCE_DB for name in self.expected
        )

    def describe(self) -> str:
        if self.error:
            return f"{self.recording}: {self.error}"
        parts = [
            f"{name} {TONES[name]} Hz {self.levels_db.get(name, 0.0):+.0f} dB"
            f"{'' if self.levels_db.get(name, 0.0) >= MIN_PROMINENCE_DB else ' (missing)'}"
            for name in self.expected
        ]
        return f"{self.recording} ({self.seconds:.1f} s): " + ", ".join(parts)


def _read(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
        raw = w.readframes(w.getnframes())
    if width != 2:
        raise ValueError(f"{8 * width}-bit samples")
    data = np.frombuffer(raw[: len(raw) - len(raw) % (2 * channels)], dtype="<i2")
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1)
    return data.astype(np.float64), rate


def check_tones(path: Path, expected: list[str]) -> ToneCheck:
    """How far each tone of `expected` (names in TONES) stands out in the recording."""
    try:
        samples, rate = _read(path)
    except (OSError, EOFError, wave.Error, ValueError) as err:
        return ToneCheck(path.name, 0.0, {}, expected, f"unreadable ({err})")
    seconds = len(samples) / rate if rate else 0.0
    if seconds < MIN_SECONDS:
        return ToneCheck(path.name, seconds, {}, expected, f"only {seconds:.2f} s of audio")
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    freqs = np.fft.rfftfreq(len(samples), 1.0 / rate)
    voice = (freqs >= 100) & (freqs <= 3600)
    floor = float(np.median(spectrum[voice])) or 1e-9
    levels: dict[str, float] = {}
    for name, frequency in TONES.items():
        band = (freqs >= frequency - BAND_HZ) & (freqs <= frequency + BAND_HZ)
        peak = float(spectrum[band].max()) if band.any() else 0.0
        levels[name] = 20 * np.log10(max(peak, 1e-9) / floor)
    return ToneCheck(path.name, seconds, levels, expected)
