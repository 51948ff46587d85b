"""Property tests: round-trips, and robustness against arbitrary/mutated input."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipcore.errors import ParseError
from sipcore.message import Message, StreamParser, parse
from tests.strategies import messages

_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_ACCESSORS = (
    "vias",
    "top_via",
    "cseq",
    "call_id",
    "from_",
    "to",
    "contacts",
    "max_forwards",
    "expires",
    "routes",
    "record_routes",
)


def _touch_everything(msg: Message) -> None:
    """Every accessor either works or raises ParseError; never anything else."""
    for name in _ACCESSORS:
        try:
            value = getattr(msg, name)
        except ParseError:
            continue
        # Derived properties must not fail once the value parsed.
        if name == "contacts":
            for c in value:
                if not c.is_wildcard:
                    str(c.uri)
                try:
                    c.q, c.expires  # noqa: B018
                except ParseError:
                    pass
        elif name == "top_via":
            _ = (value.branch, value.received, value.rport, value.maddr, value.sent_by)
            try:
                value.ttl  # noqa: B018
            except ParseError:
                pass
        elif name in ("from_", "to"):
            _ = (value.tag, str(value))
    msg.serialise()
    msg.copy()


@_SETTINGS
@given(messages)
def test_generated_messages_round_trip(msg: Message) -> None:
    data = msg.serialise()
    again = parse(data)
    assert again == msg
    # Serialising the parsed message gives the same bytes (raw lines kept).
    assert again.serialise() == data
    assert bytes(again) == data
    # The structured view agrees with what was generated.
    assert again.vias == msg.vias
    assert again.cseq == msg.cseq
    assert again.from_ == msg.from_
    assert again.to == msg.to
    assert again.contacts == msg.contacts
    assert again.routes == msg.routes


@_SETTINGS
@given(st.lists(messages, min_size=1, max_size=3), st.data())
def test_stream_parser_reassembles_any_chunking(msgs: list[Message], data: st.DataObject) -> None:
    stream = b"".join(b"\r\n\r\n" * data.draw(st.integers(0, 1)) + m.serialise() for m in msgs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    parser = StreamParser()
    out = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        out.extend(parser.feed(stream[prev:cut]))
        prev = cut
    assert out == msgs
    assert parser.buffered == 0


def _check_bytes(data: bytes) -> None:
    try:
        msg = parse(data)
    except ParseError as e:
        assert 400 <= e.status <= 699
    else:
        _touch_everything(msg)
    try:
        msg = parse(data, validate=False)
    except ParseError:
        pass
    else:
        _touch_everything(msg)


def _check_stream(data: bytes, cuts: list[int]) -> None:
    parser = StreamParser()
    prev = 0
    try:
        for cut in [*sorted(cuts), len(data)]:
            for msg in parser.feed(data[prev:cut]):
                _touch_everything(msg)
            prev = cut
    except ParseError:
        pass


@_SETTINGS
@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=5))
def test_arbitrary_bytes_only_raise_parse_error(data: bytes, cuts: list[int]) -> None:
    _check_bytes(data)
    _check_stream(data, [c for c in cuts if c <= len(data)])


_INSERTS = [b"\r", b"\n", b"\r\n", b"\x00", b":", b"<", b">", b'"', b",", b";", b" ", b"\t", b"%"]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(messages).serialise())
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["truncate", "flip", "insert", "delete"]))
        pos = draw(st.integers(0, len(data)))
        if kind == "truncate":
            del data[pos:]
        elif kind == "flip" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[pos:pos] = draw(st.sampled_from(_INSERTS))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
    return bytes(data)


@_SETTINGS
@given(mutated(), st.lists(st.integers(0, 2000), max_size=6))
def test_mutated_messages_only_raise_parse_error(data: bytes, cuts: list[int]) -> None:
    _check_bytes(data)
    _check_stream(data, [c for c in cuts if c <= len(data)])
