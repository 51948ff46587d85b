"""The regex-free fast paths of parse_params and CSeq.parse answer exactly what the
general parsers do.

A leading space sends a value to the general parser (the fast paths take only values
without LWS), so each property compares a value with the same value after a space.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sipcore.errors import ParseError
from sipcore.headers import CSeq
from sipcore.uri import parse_params

# Letters and digits, the other token characters, value-only ones, separators and what
# neither path accepts unquoted (non-ASCII letters and digits too: str.isalnum takes them).
_ALPHABET = "aZ09-.!%*_+`'~:[];= \t\",@<>/\\éß²"


def _outcome(parse, text):
    try:
        return parse(text)
    except ParseError as err:
        return ("ParseError", err.reason)


@settings(max_examples=400)
@given(st.text(alphabet=_ALPHABET, max_size=30))
@example("tag=abc;lr")
@example("x=a b")
@example("x=a\tb;y")
@example("x=a-b.c/d")
@example("branch=z9hG4bK-1-0;rport")
@example("maddr=[2001:db8::1];received=192.0.2.1")
@example("a=;b")
@example("a=1;;b")
@example("a==b")
@example('tag="q"')
@example("x=é")
@example("é=1")
def test_parse_params_fast_path_agrees_with_the_general_loop(tail):
    text = ";" + tail
    assert _outcome(parse_params, text) == _outcome(parse_params, " " + text)


def test_parse_params_fast_path_with_an_offset():
    text = "<sip:a@b.lab>;tag=x1;expires=60"
    assert parse_params(text, 13) == {"tag": "x1", "expires": "60"}
    assert parse_params(text, len(text)) == {}


@given(st.text(alphabet="0123456789² \tINVITEregister-.!~é", max_size=20))
@example("1 REGISTER")
@example("4294967295 INVITE")
@example("4294967296 INVITE")
@example("12345678901 INVITE")
@example("1  INVITE")
@example("1 INVITE ")
@example("² INVITE")
@example("1 INVITé")
@example("1 X-Y")
def test_cseq_fast_path_agrees_with_the_regex(text):
    assert _outcome(CSeq.parse, text) == _outcome(CSeq.parse, " " + text)


@pytest.mark.parametrize("text", ["1 REGISTER", "70 INVITE"])
def test_cseq_fast_path_reads_the_usual_value(text):
    number, method = text.split(" ")
    cseq = CSeq.parse(text)
    assert (cseq.number, cseq.method) == (int(number), method)
