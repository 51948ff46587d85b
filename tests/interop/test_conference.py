"""End-system conferencing (experiment 4) with real `sipclient` processes through a
real `twistd -n sipproxy --location memory:`.

Each client plays its own pure tone (--play) and records what it hears (--record); an
FFT of the recordings shows who heard whom. The conference time is bounded (a few
seconds of real audio); every wait is bounded by the harness.
"""

from __future__ import annotations

import json
import time
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from client.media import opus
from tests.interop.sipclient_harness import SipClient

WAV_RATE = 16000
REC_RATE = 16000  # client.media.session.DEFAULT_RECORD_RATE
MIX_SECONDS = 3.0
TONES = {"alice": 440.0, "bob": 660.0, "carol": 880.0, "dave": 1100.0}
# The codec of a leg: Opus for one and PCMU for the other when libopus is there.
SECOND_CODEC = "opus" if opus.available() else "pcmu"


def write_tone(path: Path, freq: float) -> None:
    # One second of whole cycles, so the looped file has no click at the wrap.
    t = np.arange(WAV_RATE) / WAV_RATE
    pcm = np.round(np.sin(2 * np.pi * freq * t) * 8000).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(WAV_RATE)
        w.writeframes(pcm.tobytes())


def read_tail(path: Path, seconds: float, skip_end: float = 0.3) -> np.ndarray:
    """The last `seconds` of a recording, minus `skip_end` (the hang-up moment)."""
    with wave.open(str(path), "rb") as w:
        assert w.getframerate() == REC_RATE
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    end = len(pcm) - int(skip_end * REC_RATE)
    start = end - int(seconds * REC_RATE)
    assert start > 0, f"{path.name}: only {len(pcm) / REC_RATE:.2f} s recorded"
    return pcm[start:end].astype(np.float64)


def focus_contacts(trace: Path) -> int:
    """How many INVITEs (in or out of dialog) the proxy saw with a Contact ;isfocus."""
    count = 0
    for line in trace.read_text().splitlines():
        msg = json.loads(line).get("msg", "")
        if msg.startswith("INVITE ") and any(
            h.lower().startswith(("contact:", "m:")) and ";isfocus" in h
            for h in msg.split("\r\n")
        ):
            count += 1
    return count


def energy(x: np.ndarray, freq: float, width: float = 25.0) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    f = np.fft.rfftfreq(len(x), 1 / REC_RATE)
    return float(spec[(f > freq - width) & (f < freq + width)].sum())


def assert_hears(rec: Path, heard: list[str], not_heard: str) -> None:
    x = read_tail(rec, 1.5)
    levels = {name: energy(x, TONES[name]) for name in [*heard, not_heard]}
    weakest = min(levels[n] for n in heard)
    # Each heard tone clearly present, and of comparable strength (none lost in the mix).
    assert weakest > 0.05 * max(levels[n] for n in heard), (rec.name, levels)
    assert levels[not_heard] < 0.05 * weakest, (rec.name, levels)
    assert np.std(x) > 1000, (rec.name, "silence")


@pytest.fixture
def lab(start_server: Callable[..., Any], tmp_path: Path
        ) -> Iterator[Callable[..., tuple[SipClient, Path]]]:
    """`lab(user, *args)`: a client registered with the proxy, playing its tone and
    recording to tmp_path/<user>.wav."""
    started: list[SipClient] = []
    proxy: list[Any] = []

    def client(user: str, *args: str) -> tuple[SipClient, Path]:
        if not proxy:
            proxy.append(start_server("sipproxy", "--domain", "a.lab", "--location", "memory:",
                                      "--trace", str(tmp_path / "trace.jsonl")))
        play, rec = tmp_path / f"{user}-tone.wav", tmp_path / f"{user}.wav"
        write_tone(play, TONES[user])
        c = SipClient(tmp_path, user, "--proxy", f"127.0.0.1:{proxy[0].port}",
                      "--play", str(play), "--record", str(rec), *args)
        started.append(c)
        c.expect(rf"registered sip:{user}@a\.lab expires=\d+$")
        return c, rec

    yield client
    for c in started:
        c.stop()


def form_conference(lab: Callable[..., tuple[SipClient, Path]]
                    ) -> dict[str, tuple[SipClient, Path]]:
    """A calls B (PCMU), holds B, calls C (Opus), then `conference`."""
    peers = {name: lab(name, "--auto-answer") for name in ("bob", "carol")}
    peers["alice"] = lab("alice", "--codec", "pcmu")
    alice, bob, carol = (peers[n][0] for n in ("alice", "bob", "carol"))
    alice.send("call bob")
    alice.expect(r"call 1 connected$")
    bob.expect(r"call 1 connected$")
    alice.send("hold 1")
    alice.expect(r"call 1 held$")
    bob.expect(r"call 1 remote-held$")
    alice.send(f"call carol {SECOND_CODEC}")
    alice.expect(r"call 2 connected$")
    carol.expect(r"call 1 connected$")
    alice.send("conference")
    alice.expect(r"conference on 1,2$")
    alice.expect(r"call 1 resumed$")  # the held leg was taken off hold for the mix
    bob.expect(r"call 1 remote-resumed$")
    return peers


def test_three_party_conference_n_minus_1(lab: Callable[..., tuple[SipClient, Path]]) -> None:
    peers = form_conference(lab)
    (alice, a_rec), (bob, b_rec), (carol, c_rec) = (peers[n] for n in ("alice", "bob", "carol"))
    alice.send("status")
    alice.expect(r"status conference 1,2$")
    status = alice.expect(r"status media 2 ")
    assert f"codec={'opus' if SECOND_CODEC == 'opus' else 'PCMU'}" in status
    time.sleep(MIX_SECONDS)  # real audio flowing; the assertions below are on content
    alice.send("quit")  # the mixer leaves: the conference dissolves
    bob.expect(r"call 1 ended bye$")
    carol.expect(r"call 1 ended bye$")
    assert alice.wait() == 0
    # RFC 4579: while mixing, our re-INVITE's Contact announced a focus.
    assert focus_contacts(a_rec.parent / "trace.jsonl") >= 1
    assert bob.quit() == 0
    assert carol.quit() == 0
    assert_hears(b_rec, ["alice", "carol"], not_heard="bob")
    assert_hears(c_rec, ["alice", "bob"], not_heard="carol")
    assert_hears(a_rec, ["bob", "carol"], not_heard="alice")


def test_participant_leaves_then_plain_call(lab: Callable[..., tuple[SipClient, Path]]) -> None:
    peers = form_conference(lab)
    (alice, _), (bob, _), (carol, c_rec) = (peers[n] for n in ("alice", "bob", "carol"))
    bob.send("hangup")
    alice.expect(r"call 1 ended bye$")
    alice.expect(r"conference off$")
    time.sleep(2.0)
    # Carol still talks to alice, directly again: she hears alice, not bob.
    alice.send("hangup all")
    alice.expect(r"call 2 ended hangup$")
    carol.expect(r"call 1 ended bye$")
    assert carol.quit() == 0
    x = read_tail(c_rec, 1.2)
    assert energy(x, TONES["bob"]) < 0.05 * energy(x, TONES["alice"])
    assert alice.quit() == 0


def test_cascaded_conference(lab: Callable[..., tuple[SipClient, Path]]) -> None:
    """Carol, a participant of alice's conference, mixes dave in with `invite`: alice
    and carol both mix, and everybody hears everybody (the tones cross two mixers)."""
    peers = form_conference(lab)
    dave, d_rec = lab("dave", "--auto-answer")
    (alice, a_rec), (bob, b_rec), (carol, c_rec) = (peers[n] for n in ("alice", "bob", "carol"))
    carol.send("invite dave")
    carol.expect(r"call 2 connected$")
    carol.expect(r"conference on 1,2$")
    dave.expect(r"call 1 connected$")
    time.sleep(MIX_SECONDS)
    alice.send("hangup all")
    bob.expect(r"call 1 ended bye$")
    carol.expect(r"call 1 ended bye$")
    carol.expect(r"conference off$")  # carol and dave carry on as a plain call
    carol.send("quit")
    dave.expect(r"call 1 ended bye$")
    for c in (alice, bob, carol, dave):
        assert c.quit() == 0
    # Recordings end when their last call ends; take the conference part for each.
    assert_hears(b_rec, ["alice", "carol", "dave"], not_heard="bob")
    assert_hears(a_rec, ["bob", "carol", "dave"], not_heard="alice")
    # Dave's recording ends after carol's quit, alice's last call ended before: skip
    # the tail where only carol was left.
    assert_hears_window(d_rec, ["alice", "bob", "carol"], not_heard="dave")


def assert_hears_window(rec: Path, heard: list[str], not_heard: str) -> None:
    x = read_tail(rec, 1.2, skip_end=0.0)
    whole = x
    # The tail of dave's file may hold a moment with carol only; search 0.5 s windows
    # from the end backwards for the conference part (bounded: at most 3 s).
    for back in np.arange(0.0, 3.0, 0.25):
        x = read_tail(rec, 1.2, skip_end=float(back))
        levels = {name: energy(x, TONES[name]) for name in [*heard, not_heard]}
        if min(levels[n] for n in heard) > 0.05 * max(levels[n] for n in heard):
            assert levels[not_heard] < 0.05 * min(levels[n] for n in heard), levels
            return
    raise AssertionError(f"{rec.name}: never heard {heard} together (std {np.std(whole)})")
