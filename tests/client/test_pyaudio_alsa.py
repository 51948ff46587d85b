"""PyAudioSource/PyAudioSink against real ALSA devices that need no sound card.

tests/client/alsa/asound.conf defines two PCMs built on ALSA's `file` plugin over
`null`: "sipcalling_file" writes whatever is played to $SIPCALLING_ALSA_OUT and
"sipcalling_capture" records from $SIPCALLING_ALSA_IN, both as raw S16_LE mono 16 kHz.
PortAudio lists the PCMs of the ALSA configuration, so PyAudio opens them by name.

Each check runs in a child process: ALSA reads its configuration (ALSA_CONFIG_PATH) once
per process, and PortAudio enumerates devices once, so a fresh process is the only way to
be sure the test's configuration is the one in force.

Skipped only when PyAudio cannot be imported and SIPCALLING_REQUIRE_AUDIO is unset.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
ALSA_CONF = Path(__file__).resolve().parent / "alsa" / "asound.conf"
SYSTEM_ALSA_CONF = Path("/usr/share/alsa/alsa.conf")
DEVICE_RATE = 16000  # fixed by the slave definition in asound.conf

try:
    import pyaudio  # noqa: F401
except ImportError:
    HAVE_PYAUDIO = False
else:
    HAVE_PYAUDIO = True

pytestmark = pytest.mark.skipif(
    not HAVE_PYAUDIO and not os.environ.get("SIPCALLING_REQUIRE_AUDIO"),
    reason="PyAudio not installed (pip install PyAudio; Debian portaudio19-dev)",
)


def run_child(code: str, tmp_path: Path, **env: str) -> dict:
    config = f"{SYSTEM_ALSA_CONF}:{ALSA_CONF}" if SYSTEM_ALSA_CONF.exists() else str(ALSA_CONF)
    child_env = {
        **os.environ,
        "ALSA_CONFIG_PATH": config,
        "PYTHONPATH": str(ROOT),
        **env,
    }
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def peak_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(len(x))))
    return float(np.argmax(spec)) * rate / len(x)


PLAY = """
import json
from client.media.devices import PyAudioSink, ToneSource, list_devices
names = [d["name"] for d in list_devices()]
sink = PyAudioSink("sipcalling_file", rate=8000)
tone = ToneSource(440, 8000)
for _ in range(100):  # 2 s of 20 ms ticks
    sink.write_frame(tone.read_frame())
sink.close()
print(json.dumps({"names": names, "rate": sink.rate, "device": sink.device_name,
                  "dropped": sink.dropped_frames, "errors": sink.errors}))
"""


def test_pyaudio_sink_writes_tone_through_alsa_file_plugin(tmp_path: Path) -> None:
    out = tmp_path / "played.raw"
    result = run_child(PLAY, tmp_path, SIPCALLING_ALSA_OUT=str(out))
    assert "sipcalling_file" in result["names"]
    assert result["device"] == "sipcalling_file" and result["rate"] == 8000
    assert result["dropped"] == 0 and result["errors"] == 0
    pcm = np.frombuffer(out.read_bytes(), dtype="<i2")
    # 2 s at the device's 16 kHz (ALSA's plug converted our 8 kHz).
    assert abs(len(pcm) - 2 * DEVICE_RATE) <= DEVICE_RATE // 50
    assert np.std(pcm.astype(np.float64)) > 3000
    assert abs(peak_hz(pcm, DEVICE_RATE) - 440) <= 10


CAPTURE = """
import json
import numpy as np
from client.media.devices import PyAudioSource
src = PyAudioSource("sipcalling_capture", rate=16000)
frames = [src.read_frame() for _ in range(50)]
src.close()
pcm = np.concatenate(frames)
spec = np.abs(np.fft.rfft(pcm[len(pcm) // 2:].astype(float)))
print(json.dumps({"n": len(pcm), "frame": len(frames[0]), "std": float(pcm.std()),
                  "peak": float(np.argmax(spec)) * 16000 / (len(pcm) - len(pcm) // 2),
                  "underruns": src.underruns}))
"""


def test_pyaudio_source_reads_alsa_file_plugin(tmp_path: Path) -> None:
    infile = tmp_path / "mic.raw"
    t = np.arange(3 * DEVICE_RATE) / DEVICE_RATE
    infile.write_bytes((np.sin(2 * np.pi * 1000 * t) * 8000).astype("<i2").tobytes())
    result = run_child(CAPTURE, tmp_path, SIPCALLING_ALSA_IN=str(infile))
    assert result["frame"] == 320 and result["n"] == 50 * 320
    # A device without a clock always has data: every read yields a real frame.
    assert result["underruns"] == 0
    assert result["std"] > 3000
    assert abs(result["peak"] - 1000) <= 10


MISSING = """
import json
from client.media.devices import AudioError, PyAudioSink, PyAudioSource
msgs = []
for cls in (PyAudioSink, PyAudioSource):
    try:
        cls("no-such-device-xyz")
    except AudioError as exc:
        msgs.append(str(exc))
try:
    PyAudioSink("999")
except AudioError as exc:
    msgs.append(str(exc))
print(json.dumps({"msgs": msgs}))
"""


def test_unknown_device_is_one_line_error(tmp_path: Path) -> None:
    msgs = run_child(MISSING, tmp_path)["msgs"]
    assert len(msgs) == 3
    assert all("\n" not in m for m in msgs)
    assert "audio output device 'no-such-device-xyz' not found" in msgs[0]
    assert "sipcalling_file" in msgs[0]  # the message lists what is available
    assert "audio input device 'no-such-device-xyz' not found" in msgs[1]
    assert "audio output device 999 does not exist" in msgs[2]
