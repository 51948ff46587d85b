"""Answers to requests that failed to parse (sipcore.malformed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipcore.errors import ParseError
from sipcore.malformed import error_response_for
from sipcore.message import parse

VECTORS = Path(__file__).parent.parent / "vectors" / "rfc4475"


def _error(data: bytes) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse(data)
    return info.value


def test_version_error_copies_headers_and_adds_to_tag():
    data = (VECTORS / "badvers.dat").read_bytes()
    response = error_response_for(data, _error(data))
    assert response is not None
    assert response.status == 505
    assert response.call_id == "badvers.31417@c.example.com"
    assert response.cseq.method == "OPTIONS"
    assert response.to.tag  # §8.2.6.2: a To tag when the request had none (here it had one)


def test_missing_from_still_answered_400():
    data = (VECTORS / "insuf.dat").read_bytes()
    response = error_response_for(data, _error(data))
    assert response is not None and response.status == 400
    assert "From" not in response.headers


def test_response_bytes_are_not_answered():
    data = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCSeq: x\r\n\r\n"
    assert error_response_for(data, ParseError("Bad CSeq")) is None


def test_request_without_via_is_not_answered():
    data = b"INVITE sip:a@b SIP/2.0\r\nCSeq: 1 INVITE\r\n\r\n"
    assert error_response_for(data, ParseError("Missing Via header")) is None


def test_request_with_broken_via_is_not_answered():
    data = b"INVITE sip:a@b SIP/2.0\r\nVia: ???\r\nCSeq: 1 INVITE\r\n\r\n"
    assert error_response_for(data, ParseError("Bad Via")) is None


def test_to_tag_added_when_missing():
    data = (
        b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK9\r\n"
        b"To: <sip:a@b>\r\nCSeq: 1 INVITE\r\n\r\n"
    )
    response = error_response_for(data, ParseError("CSeq Method Mismatch"))
    assert response is not None and response.to.tag


@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_raise(data):
    response = error_response_for(data, ParseError("x"))
    if response is not None:
        parse(response.serialise())  # what we send is itself well-formed enough to parse
