"""Tests for sipcore.offer_answer (RFC 3264)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipcore.offer_answer import (
    DEFAULT_CODECS,
    OPUS,
    PCMA,
    PCMU,
    TELEPHONE_EVENT,
    Codec,
    answer,
    answer_direction,
    build_offer,
    hold_offer,
    negotiate_streams,
    negotiated,
    resume_offer,
    update_version,
)
from sipcore.sdp import SessionDescription, parse_sdp

DIRS = ["sendrecv", "sendonly", "recvonly", "inactive"]


def crlf(*lines: str) -> str:
    return "".join(line + "\r\n" for line in lines)


def remote_offer(
    *media: str, conn: str = "203.0.113.5", session_attrs: tuple[str, ...] = ()
) -> SessionDescription:
    """A peer's offer, parsed from text so the tests exercise the real wire form."""
    return parse_sdp(
        crlf(
            "v=0",
            "o=peer 555 555 IN IP4 203.0.113.5",
            "s=-",
            f"c=IN IP4 {conn}",
            "t=0 0",
            *session_attrs,
            *media,
        )
    )


def fmts(sd: SessionDescription, i: int = 0) -> list[str]:
    return sd.media[i].formats


PCMU_OPUS_OFFER = (
    "m=audio 30000 RTP/AVP 96 0 101",
    "a=rtpmap:96 opus/48000/2",
    "a=fmtp:96 useinbandfec=1",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-15",
    "a=ptime:20",
)


# --------------------------------------------------------------------------- offers


def test_initial_offer_text() -> None:
    offer = build_offer(DEFAULT_CODECS, "192.0.2.1", 4000, session_id="123")
    assert str(offer) == crlf(
        "v=0",
        "o=- 123 1 IN IP4 192.0.2.1",
        "s=-",
        "c=IN IP4 192.0.2.1",
        "t=0 0",
        "m=audio 4000 RTP/AVP 0 8 111 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:111 opus/48000/2",
        "a=fmtp:111 minptime=10;useinbandfec=1",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ptime:20",
        "a=sendrecv",
    )
    assert parse_sdp(offer.serialise()) == offer


def test_offer_ipv6_and_random_session_id() -> None:
    a = build_offer([PCMU], "2001:db8::1", 4000, "recvonly")
    b = build_offer([PCMU], "2001:db8::1", 4000)
    assert a.origin.addrtype == "IP6" and a.connection is not None
    assert str(a.connection) == "IN IP6 2001:db8::1"
    assert a.origin.sess_id != b.origin.sess_id
    assert a.effective_direction(0) == "recvonly"


def test_offer_one_m_line_per_media_type_with_separate_ports() -> None:
    h264 = Codec("H264", 90000, 1, 97, "packetization-mode=1", media="video")
    offer = build_offer([PCMU, h264, PCMA], "192.0.2.1", 4000)
    assert [(m.media, m.port, m.formats) for m in offer.media] == [
        ("audio", 4000, ["0", "8"]),
        ("video", 4002, ["97"]),
    ]
    assert offer.media[1].ptime is None
    by_type = build_offer([PCMU, h264], "192.0.2.1", {"audio": 5000, "video": 6000})
    assert [m.port for m in by_type.media] == [5000, 6000]


def test_reoffer_keeps_origin_and_bumps_version_only_on_change() -> None:
    first = build_offer(DEFAULT_CODECS, "192.0.2.1", 4000, session_id="77")
    same = build_offer(DEFAULT_CODECS, "192.0.2.1", 4000, previous=first)
    assert same == first and same.origin.sess_version == 1
    changed = build_offer([PCMU], "192.0.2.1", 4000, previous=same)
    assert changed.origin.sess_id == "77"
    assert changed.origin.sess_version == 2
    again = build_offer([PCMU], "192.0.2.1", 4000, previous=changed)
    assert again.origin.sess_version == 2


def test_reoffer_never_drops_m_lines() -> None:
    h264 = Codec("H264", 90000, 1, 97, media="video")
    first = build_offer([PCMU, h264], "192.0.2.1", 4000)
    audio_only = build_offer([PCMU], "192.0.2.1", 4000, previous=first)
    assert [(m.media, m.port) for m in audio_only.media] == [("audio", 4000), ("video", 0)]
    assert audio_only.origin.sess_version == first.origin.sess_version + 1


def test_update_version_without_previous_is_a_no_op() -> None:
    offer = build_offer([PCMU], "192.0.2.1", 4000, session_id="1")
    update_version(None, offer)
    assert offer.origin.sess_version == 1


# --------------------------------------------------------------------------- answers


def test_pcmu_opus_offer_vs_pcmu_only_answerer() -> None:
    offer = remote_offer(*PCMU_OPUS_OFFER)
    ans = answer(offer, [PCMU, TELEPHONE_EVENT], "192.0.2.1", 4000, session_id="9")
    assert str(ans) == crlf(
        "v=0",
        "o=- 9 1 IN IP4 192.0.2.1",
        "s=-",
        "c=IN IP4 192.0.2.1",
        "t=0 0",
        "m=audio 4000 RTP/AVP 0 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ptime:20",
        "a=sendrecv",
    )
    result = negotiated(ans, offer)
    assert result is not None
    assert (result.remote_addr, result.remote_port) == ("203.0.113.5", 30000)
    assert (result.payload_type, result.clock_rate, result.codec.name) == (0, 8000, "PCMU")
    assert result.telephone_event_pt == 101
    assert result.send and result.recv and result.direction == "sendrecv"


def test_offerer_payload_type_numbers_and_order_are_kept() -> None:
    offer = remote_offer(
        "m=audio 30000 RTP/AVP 8 96 0 100",
        "a=rtpmap:96 OPUS/48000/2",
        "a=rtpmap:100 telephone-event/8000",
    )
    ans = answer(offer, DEFAULT_CODECS, "192.0.2.1", 4000)
    m = ans.media[0]
    # Offerer's numbers (opus 96, events 100) and order (PCMA first), not ours.
    assert m.formats == ["8", "96", "0", "100"]
    assert m.rtpmap["96"] == ("OPUS", 48000, 2)  # the offerer's spelling is echoed
    assert m.fmtp == {"96": "minptime=10;useinbandfec=1", "100": "0-16"}
    result = negotiated(ans, offer)
    assert result is not None and result.codec.name == "PCMA" and result.payload_type == 8
    assert result.telephone_event_pt == 100


def test_opus_chosen_at_offerers_dynamic_number() -> None:
    offer = remote_offer(*PCMU_OPUS_OFFER)
    ans = answer(offer, [OPUS, PCMU], "192.0.2.1", 4000)
    assert fmts(ans) == ["96", "0"]
    result = negotiated(ans, offer)
    assert result is not None
    assert (result.codec.name, result.payload_type, result.clock_rate) == ("opus", 96, 48000)
    assert result.codec.channels == 2
    assert result.codec.fmtp == "useinbandfec=1"  # the peer's receive parameters
    assert result.telephone_event_pt is None  # we did not offer events


def test_encoding_names_match_case_insensitively_and_by_clock_rate() -> None:
    offer = remote_offer(
        "m=audio 30000 RTP/AVP 97 98",
        "a=rtpmap:97 pcmu/16000",
        "a=rtpmap:98 pcmu/8000",
    )
    ans = answer(offer, [PCMU], "192.0.2.1", 4000)
    assert fmts(ans) == ["98"]


def test_no_common_codec_rejects_with_port_zero() -> None:
    offer = remote_offer("m=audio 30000 RTP/AVP 18 9", "a=rtpmap:18 G729/8000")
    ans = answer(offer, [PCMU, PCMA, TELEPHONE_EVENT], "192.0.2.1", 4000)
    m = ans.media[0]
    assert m.port == 0 and m.proto == "RTP/AVP" and m.formats == ["18", "9"]
    assert negotiated(ans, offer) is None
    assert negotiate_streams(ans, offer) == [None]


def test_only_telephone_event_in_common_is_no_common_codec() -> None:
    offer = remote_offer(
        "m=audio 30000 RTP/AVP 18 101",
        "a=rtpmap:101 telephone-event/8000",
    )
    assert answer(offer, DEFAULT_CODECS, "192.0.2.1", 4000).media[0].port == 0


def test_dynamic_payload_without_rtpmap_is_unusable() -> None:
    offer = remote_offer("m=audio 30000 RTP/AVP 96 0")
    assert fmts(answer(offer, [OPUS, PCMU], "192.0.2.1", 4000)) == ["0"]


def test_unsupported_media_proto_and_extra_streams_are_rejected_in_place() -> None:
    offer = remote_offer(
        "m=video 30002 RTP/AVP 31",
        "m=audio 30010 RTP/SAVP 0",
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz",
        "m=audio 30000 RTP/AVP 0",
        "m=audio 30020 RTP/AVP 0",
        "m=audio 0 RTP/AVP 0",
        "m=application 9 UDP/BFCP *",
    )
    ans = answer(offer, DEFAULT_CODECS, "192.0.2.1", 4000)
    assert [(m.media, m.port, m.proto, m.formats) for m in ans.media] == [
        ("video", 0, "RTP/AVP", ["31"]),
        ("audio", 0, "RTP/SAVP", ["0"]),
        ("audio", 4000, "RTP/AVP", ["0"]),
        ("audio", 0, "RTP/AVP", ["0"]),  # a second audio stream: one engine only
        ("audio", 0, "RTP/AVP", ["0"]),  # disabled in the offer
        ("application", 0, "UDP/BFCP", ["*"]),
    ]
    result = negotiated(ans, offer)
    assert result is not None and result.index == 2 and result.remote_port == 30000
    assert negotiated(ans, offer, "video") is None


def test_answer_to_ipv6_offer_uses_media_level_connection_and_rtcp() -> None:
    offer = parse_sdp(
        crlf(
            "v=0",
            "o=peer 1 1 IN IP6 2001:db8::5",
            "s=-",
            "c=IN IP6 2001:db8::5",
            "t=0 0",
            "m=audio 30000 RTP/AVP 0",
            "c=IN IP6 2001:db8::6",
            "a=rtcp:30011 IN IP6 2001:db8::7",
            "a=ptime:30",
        )
    )
    ans = answer(offer, [PCMU], "2001:db8::1", 4000)
    assert str(ans.connection) == "IN IP6 2001:db8::1"
    result = negotiated(ans, offer)
    assert result is not None
    assert (result.remote_addr, result.remote_port) == ("2001:db8::6", 30000)
    assert result.remote_rtcp == ("2001:db8::7", 30011)
    assert result.ptime == 30  # we send with the packetisation the peer asked for
    assert result.local_port == 4000


def test_telephone_event_prefers_the_codec_clock_rate() -> None:
    offer = remote_offer(
        "m=audio 30000 RTP/AVP 96 110 101",
        "a=rtpmap:96 opus/48000/2",
        "a=rtpmap:110 telephone-event/48000",
        "a=rtpmap:101 telephone-event/8000",
    )
    te48 = Codec("telephone-event", 48000, 1, 102, "0-16")
    ans = answer(offer, [OPUS, te48, TELEPHONE_EVENT], "192.0.2.1", 4000)
    assert fmts(ans) == ["96", "110", "101"]
    result = negotiated(ans, offer)
    assert result is not None and result.telephone_event_pt == 110
    # Only 8 kHz events in common: use them rather than none.
    ans8 = answer(offer, [OPUS, TELEPHONE_EVENT], "192.0.2.1", 4000)
    result8 = negotiated(ans8, offer)
    assert result8 is not None and result8.telephone_event_pt == 101


def test_offerer_side_uses_answerers_numbers_and_first_codec() -> None:
    ours = build_offer(DEFAULT_CODECS, "192.0.2.1", 4000)
    theirs = parse_sdp(
        crlf(
            "v=0",
            "o=peer 1 1 IN IP4 203.0.113.5",
            "s=-",
            "c=IN IP4 203.0.113.5",
            "t=0 0",
            # Reordered, and opus renumbered: allowed, if not recommended (§6.1).
            "m=audio 31000 RTP/AVP 112 8 101",
            "a=rtpmap:112 opus/48000/2",
            "a=rtpmap:101 telephone-event/8000",
        )
    )
    result = negotiated(ours, theirs)
    assert result is not None
    assert (result.codec.name, result.payload_type) == ("opus", 112)
    assert result.ptime == 20  # none in the answer: ours, else the default


def test_mismatched_m_lines_give_no_stream() -> None:
    ours = build_offer([PCMU], "192.0.2.1", 4000)
    theirs = remote_offer("m=video 30000 RTP/AVP 0")
    assert negotiate_streams(ours, theirs) == [None]
    no_addr = parse_sdp(crlf("v=0", "o=- 1 1 IN IP4 a", "s=-", "t=0 0", "m=audio 1 RTP/AVP 0"))
    assert negotiate_streams(ours, no_addr) == [None]


def test_reanswer_to_unchanged_offer_keeps_version() -> None:
    offer = remote_offer(*PCMU_OPUS_OFFER)
    first = answer(offer, DEFAULT_CODECS, "192.0.2.1", 4000, session_id="5")
    again = answer(offer, DEFAULT_CODECS, "192.0.2.1", 4000, previous=first)
    assert again == first and again.origin.sess_version == 1
    held = remote_offer(*PCMU_OPUS_OFFER, "a=sendonly")
    third = answer(held, DEFAULT_CODECS, "192.0.2.1", 4000, previous=again)
    assert third.origin.sess_id == "5" and third.origin.sess_version == 2
    assert third.effective_direction(0) == "recvonly"


def test_bad_direction_arguments_are_programming_errors() -> None:
    with pytest.raises(ValueError):
        build_offer([PCMU], "192.0.2.1", 4000, "both")
    with pytest.raises(ValueError):
        answer(remote_offer(*PCMU_OPUS_OFFER), [PCMU], "192.0.2.1", 4000, "both")
    with pytest.raises(ValueError):
        answer_direction("sendrecv", "both")


# --------------------------------------------------------------------------- directions

# RFC 3264 §6.1: (offered, wanted) -> answer.
DIRECTION_TABLE = {
    ("sendrecv", "sendrecv"): "sendrecv",
    ("sendrecv", "sendonly"): "sendonly",
    ("sendrecv", "recvonly"): "recvonly",
    ("sendrecv", "inactive"): "inactive",
    ("sendonly", "sendrecv"): "recvonly",
    ("sendonly", "sendonly"): "inactive",
    ("sendonly", "recvonly"): "recvonly",
    ("sendonly", "inactive"): "inactive",
    ("recvonly", "sendrecv"): "sendonly",
    ("recvonly", "sendonly"): "sendonly",
    ("recvonly", "recvonly"): "inactive",
    ("recvonly", "inactive"): "inactive",
    ("inactive", "sendrecv"): "inactive",
    ("inactive", "sendonly"): "inactive",
    ("inactive", "recvonly"): "inactive",
    ("inactive", "inactive"): "inactive",
}


@pytest.mark.parametrize(("offered", "wanted"), list(itertools.product(DIRS, DIRS)))
def test_direction_table(offered: str, wanted: str) -> None:
    expected = DIRECTION_TABLE[offered, wanted]
    assert answer_direction(offered, wanted) == expected

    offer = remote_offer(*PCMU_OPUS_OFFER, f"a={offered}")
    ans = answer(offer, DEFAULT_CODECS, "192.0.2.1", 4000, wanted)
    assert ans.media[0].direction == expected

    # The same outcome seen from both ends.
    ours = negotiated(ans, offer)
    theirs = negotiated(offer, ans)
    assert ours is not None and theirs is not None
    assert ours.direction == expected
    assert (theirs.send, theirs.recv) == (ours.recv, ours.send)


@pytest.mark.parametrize("offered", DIRS)
def test_session_level_direction_in_offer_is_honoured(offered: str) -> None:
    offer = remote_offer(*PCMU_OPUS_OFFER, session_attrs=(f"a={offered}",))
    ans = answer(offer, DEFAULT_CODECS, "192.0.2.1", 4000)
    assert ans.media[0].direction == DIRECTION_TABLE[offered, "sendrecv"]


# --------------------------------------------------------------------------- hold


def _offer_answer_pair() -> tuple[SessionDescription, SessionDescription]:
    ours = build_offer(DEFAULT_CODECS, "192.0.2.1", 4000, session_id="42")
    theirs = answer(ours, DEFAULT_CODECS, "203.0.113.5", 30000, session_id="900")
    return ours, theirs


def test_hold_then_resume_versions_and_directions() -> None:
    ours, theirs = _offer_answer_pair()
    assert ours.origin.sess_version == 1

    held = hold_offer(ours)
    assert held.effective_direction(0) == "sendonly"
    assert held.origin.sess_version == 2
    assert held.media[0].formats == ours.media[0].formats
    assert ours.effective_direction(0) == "sendrecv"  # the input is not modified

    # Holding again changes nothing: same description, same version (§8).
    assert hold_offer(held) == held

    # Peer answers recvonly: we send (music on hold), receive nothing.
    peer_held = answer(held, DEFAULT_CODECS, "203.0.113.5", 30000, previous=theirs)
    assert peer_held.effective_direction(0) == "recvonly"
    assert peer_held.origin.sess_version == theirs.origin.sess_version + 1
    result = negotiated(held, peer_held)
    assert result is not None and (result.send, result.recv) == (True, False)

    resumed = resume_offer(held)
    assert resumed.effective_direction(0) == "sendrecv"
    assert resumed.origin.sess_version == 3
    assert resume_offer(resumed) == resumed
    assert resumed.serialise().count(b"a=sendrecv") == 1


def test_hold_when_peer_already_holds_us_is_inactive() -> None:
    # The peer put us on hold: its offer was sendonly, so our answer was recvonly.
    peer_hold = remote_offer(*PCMU_OPUS_OFFER, "a=sendonly")
    our_answer = answer(peer_hold, DEFAULT_CODECS, "192.0.2.1", 4000, session_id="3")
    assert our_answer.effective_direction(0) == "recvonly"
    held = hold_offer(our_answer)
    assert held.effective_direction(0) == "inactive"
    assert held.origin.sess_version == our_answer.origin.sess_version + 1


def test_hold_consults_remote_description_when_given() -> None:
    ours, _ = _offer_answer_pair()
    remote_sendonly = remote_offer(*PCMU_OPUS_OFFER, "a=sendonly")
    assert hold_offer(ours, remote_sendonly).effective_direction(0) == "inactive"
    remote_old_hold = remote_offer(*PCMU_OPUS_OFFER, conn="0.0.0.0")
    assert hold_offer(ours, remote_old_hold).effective_direction(0) == "inactive"
    remote_normal = remote_offer(*PCMU_OPUS_OFFER)
    assert hold_offer(ours, remote_normal).effective_direction(0) == "sendonly"


def test_hold_leaves_rejected_streams_alone_and_overrides_session_direction() -> None:
    offer = remote_offer(
        *PCMU_OPUS_OFFER, "m=video 30002 RTP/AVP 31", session_attrs=("a=sendrecv",)
    )
    # A local description that uses a session-level direction.
    ours = answer(offer, DEFAULT_CODECS, "192.0.2.1", 4000)
    ours.media[0].set_direction(None)
    ours.set_direction("sendrecv")
    held = hold_offer(ours)
    assert held.media[0].direction == "sendonly"
    assert held.media[1].rejected and held.media[1].direction is None
    assert held.direction == "sendrecv"


def test_resume_to_a_peer_that_still_holds_us() -> None:
    ours, theirs = _offer_answer_pair()
    resumed = resume_offer(hold_offer(ours))
    # The peer keeps us on hold by answering sendonly.
    peer_answer = answer(resumed, DEFAULT_CODECS, "203.0.113.5", 30000, "sendonly")
    assert peer_answer.effective_direction(0) == "sendonly"
    result = negotiated(resumed, peer_answer)
    assert result is not None and (result.send, result.recv) == (False, True)


def test_old_style_hold_in_remote_offer() -> None:
    # RFC 2543 hold: c=0.0.0.0 with no direction attribute (§8.4).
    offer = remote_offer(*PCMU_OPUS_OFFER, conn="0.0.0.0")
    ans = answer(offer, DEFAULT_CODECS, "192.0.2.1", 4000)
    assert ans.effective_direction(0) == "recvonly"
    result = negotiated(ans, offer)
    assert result is not None
    assert result.remote_addr == "0.0.0.0"
    assert (result.send, result.recv) == (False, True)
    # With sendonly on top of 0.0.0.0, still no sending towards the peer.
    offer2 = remote_offer(*PCMU_OPUS_OFFER, "a=recvonly", conn="0.0.0.0")
    ans2 = answer(offer2, DEFAULT_CODECS, "192.0.2.1", 4000)
    assert ans2.effective_direction(0) == "inactive"


def test_old_style_hold_in_remote_answer() -> None:
    ours = build_offer(DEFAULT_CODECS, "192.0.2.1", 4000)
    theirs = parse_sdp(
        crlf(
            "v=0",
            "o=old 1 2 IN IP4 203.0.113.5",
            "s=-",
            "c=IN IP4 0.0.0.0",
            "t=0 0",
            "m=audio 30000 RTP/AVP 0",
        )
    )
    result = negotiated(ours, theirs)
    assert result is not None and not result.send and result.recv


# --------------------------------------------------------------------------- properties

_CODEC_POOL = [
    PCMU,
    PCMA,
    OPUS,
    TELEPHONE_EVENT,
    Codec("G722", 8000, 1, 9),
    Codec("G729", 8000, 1, 18),
    Codec("iLBC", 8000, 1, 97, "mode=30"),
    Codec("telephone-event", 48000, 1, 110),
]


@settings(max_examples=200)
@given(
    offered=st.lists(st.sampled_from(_CODEC_POOL), min_size=1, max_size=6, unique=True),
    ours=st.lists(st.sampled_from(_CODEC_POOL), min_size=0, max_size=6, unique=True),
    offered_dir=st.sampled_from(DIRS),
    wanted=st.sampled_from(DIRS),
)
def test_answer_properties(
    offered: list[Codec], ours: list[Codec], offered_dir: str, wanted: str
) -> None:
    offer = build_offer(offered, "203.0.113.5", 30000, offered_dir)
    ans = answer(parse_sdp(offer.serialise()), ours, "192.0.2.1", 4000, wanted)
    assert len(ans.media) == len(offer.media) == 1
    got = ans.media[0]
    real_common = [c for c in offered if not c.is_auxiliary and any(c == o for o in ours)]
    if not real_common:
        assert got.port == 0
        assert negotiated(ans, offer) is None
        return
    # A subsequence of the offer, in the offer's order, with the offer's numbers.
    offered_pts = offer.media[0].formats
    assert got.formats == [p for p in offered_pts if p in got.formats]
    assert {got.codec(p) for p in got.formats} <= {offer.media[0].codec(p) for p in got.formats}
    assert got.direction == answer_direction(offered_dir, wanted)
    result = negotiated(ans, offer)
    assert result is not None and result.codec.name == real_common[0].name
    assert parse_sdp(ans.serialise()) == ans
