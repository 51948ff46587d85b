"""G.711 PCMU/PCMA."""

from __future__ import annotations

import numpy as np
import pytest

from client.media import g711
from client.media.codecs import get_codec, get_decoder, get_encoder

ALL = np.arange(-32768, 32768, dtype=np.int16)


def test_known_code_points():
    zero = np.zeros(1, dtype=np.int16)
    assert g711.ulaw_encode(zero) == b"\xff"
    assert g711.alaw_encode(zero) == b"\xd5"
    assert g711.ulaw_decode(b"\xff")[0] == 0
    assert g711.ulaw_decode(b"\x7f")[0] == 0  # mu-law's "negative zero"
    assert g711.alaw_decode(b"\xd5")[0] == 8  # A-law has no zero: smallest step is +/-8
    assert g711.ulaw_decode(b"\x00")[0] == -32124  # full scale
    assert g711.ulaw_decode(b"\x80")[0] == 32124
    assert g711.alaw_decode(b"\xaa")[0] == 32256
    assert g711.alaw_decode(b"\x2a")[0] == -32256


@pytest.mark.parametrize("law", ["PCMU", "PCMA"])
def test_round_trip_within_quantisation(law):
    enc, dec = get_encoder(law), get_decoder(law)
    y = dec.decode(enc.encode(ALL)).astype(np.int32)
    x = ALL.astype(np.int32)
    err = np.abs(y - x)
    # Logarithmic quantiser: each segment has 16 steps, so half a step is about 1/32 of
    # |x| (a little more for mu-law, whose segments are offset by the bias of 132).
    mid = (np.abs(x) >= 1024) & (np.abs(x) < 32000)
    assert (err[mid] / np.abs(x[mid])).max() < 0.034
    assert err[np.abs(x) < 64].max() <= 8  # fine steps near zero
    assert y.dtype == np.int32 and len(y) == len(x)


@pytest.mark.parametrize("law", ["PCMU", "PCMA"])
def test_decode_encode_idempotent(law):
    codes = bytes(range(256))
    enc, dec = get_encoder(law), get_decoder(law)
    again = enc.encode(dec.decode(codes))
    same = sum(a == b for a, b in zip(again, codes))
    assert same == (255 if law == "PCMU" else 256)  # 0x7F (-0) re-encodes as 0xFF (+0)


def test_encode_rejects_float():
    with pytest.raises(ValueError, match="int16"):
        g711.ulaw_encode(np.zeros(4))


def test_registry():
    info = get_codec("pcmu")
    assert (info.payload_type, info.clock_rate, info.frame_samples) == (0, 8000, 160)
    assert get_codec("PCMA").payload_type == 8
    assert get_codec("opus").rtpmap == "opus/48000/2"
    assert get_codec("PCMU").rtpmap == "PCMU/8000"
    assert get_codec("telephone-event").payload_type == 101
    with pytest.raises(ValueError, match="not an audio codec"):
        get_encoder("telephone-event")
    with pytest.raises(KeyError, match="unknown codec"):
        get_codec("g729")


def test_plc_repeat_with_fade():
    enc, dec = get_encoder("PCMU"), get_decoder("PCMU")
    frame = np.full(160, 8000, dtype=np.int16)
    good = dec.decode(enc.encode(frame))
    c1 = dec.conceal()
    c2 = dec.conceal(b"ignored")
    assert len(c1) == len(c2) == 160
    assert c1[0] == good[0]  # continuous with the last good frame
    assert abs(int(c1[-1])) < abs(int(good[-1]))  # fading
    assert abs(int(c2[0]) - good[0] * 0.5) <= 1
    for _ in range(g711.PLC_MAX_FRAMES):
        last = dec.conceal()
    assert not last.any()  # silence after the limit
    dec.decode(enc.encode(frame))
    assert dec.conceal()[0] == good[0]  # a good frame resets the fade
