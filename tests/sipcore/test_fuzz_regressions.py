"""Parser robustness: fuzz corpus and crash replay, bounded fuzzing, size limits.

The invariant (fuzz/targets.py): any input either parses or raises ParseError —
whole, or through StreamParser in arbitrary chunks — and every structured accessor
on what parsed does the same. Crashes found by the fuzzer are kept under
fuzz/crashes/<target>/ and replayed here forever, next to a readable test each.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sipcore.auth_params import parse_auth_header
from sipcore.digest import parse_challenge
from sipcore.errors import ParseError
from sipcore.limits import (
    MAX_CONTACTS,
    MAX_HEADER_LINE,
    MAX_HEADERS,
    MAX_MESSAGE_SIZE,
    MAX_ROUTES,
    MAX_URI_LENGTH,
    MAX_VIAS,
)
from sipcore.malformed import error_response_for
from sipcore.message import StreamParser, parse

ROOT = Path(__file__).resolve().parents[2]
FUZZ = ROOT / "fuzz"


def _load_targets():
    spec = importlib.util.spec_from_file_location("fuzz_targets", FUZZ / "targets.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


targets = _load_targets()


def _inputs(kind: str) -> list[Path]:
    found = []
    for target in targets.CHECKS:
        folder = FUZZ / kind / target
        found += sorted(p for p in folder.iterdir() if p.is_file() and p.name != ".keep")
    return found


CORPUS = _inputs("corpus")
CRASHES = _inputs("crashes")


def test_corpus_is_seeded():
    names = {p.parent.name for p in CORPUS}
    assert names == set(targets.CHECKS)
    rfc4475 = {p.name for p in (ROOT / "tests" / "vectors" / "rfc4475").glob("*.dat")}
    assert rfc4475 <= {p.name for p in CORPUS if p.parent.name == "message"}


@pytest.mark.parametrize("path", CORPUS + CRASHES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_replay(path: Path):
    """Only ParseError escapes (the check re-raises anything else)."""
    targets.CHECKS[path.parent.name](path.read_bytes())


# -- the crashes the fuzzer found, as readable regression tests -------------------------


def test_salvaged_via_with_bare_cr_does_not_crash():
    # Found by fuzz_message: a bare CR inside the Via of a malformed request went into
    # Headers.add(), which refuses CR (header injection) with ValueError, so the
    # transport's reject() raised instead of answering.
    data = (
        b"OPTIONS sip:a.lab SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx\r;rport\r\n"
        b"From: <sip:a@a.lab>;tag=1\r\nTo: <sip:a.lab>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n"
    )
    with pytest.raises(ParseError) as info:
        parse(data)
    response = error_response_for(data, info.value)
    assert response is not None and response.status == 400
    assert b"\r;" not in response.serialise()


def test_quoted_pair_cannot_smuggle_control_characters():
    # Found by fuzz_digest: `\<BS>` in a quoted string parsed, but the value could not
    # be serialised again (quote() refuses controls), so a UAC echoing a hostile realm
    # or nonce in its Authorization crashed.
    with pytest.raises(ParseError, match="Control character"):
        parse_challenge('Digest realm="a\\\x08b", nonce="n"')
    with pytest.raises(ParseError, match="Control character"):
        parse_auth_header('Digest nonce="\\\x7f"')
    assert parse_challenge('Digest realm="a\\"b\\\\", nonce="n"').realm == 'a"b\\'
    assert parse_challenge('Digest realm="a\\\tb", nonce="n"').realm == "a\tb"


# -- limits (sipcore.limits) --------------------------------------------------------------


def request(extra: bytes = b"", uri: bytes = b"sip:a.lab", body: bytes = b"") -> bytes:
    return (
        b"OPTIONS " + uri + b" SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKlim\r\n"
        b"From: <sip:a@a.lab>;tag=1\r\nTo: <sip:a.lab>\r\nCall-ID: lim\r\n"
        b"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n" + extra
        + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


def status(data: bytes) -> int | None:
    try:
        parse(data)
    except ParseError as err:
        return err.status
    return None


def _list(name: bytes, count: int, one_line: bool) -> bytes:
    values = [b"<sip:h%d.lab;lr>" % i for i in range(count)]
    if name == b"Via":
        values = [b"SIP/2.0/UDP h%d.lab;branch=z9hG4bK%d" % (i, i) for i in range(count)]
    if one_line:
        return name + b": " + b", ".join(values) + b"\r\n"
    return b"".join(name + b": " + v + b"\r\n" for v in values)


@pytest.mark.parametrize("one_line", [False, True])
@pytest.mark.parametrize(
    ("name", "limit"),
    [(b"Via", MAX_VIAS - 1), (b"Route", MAX_ROUTES), (b"Record-Route", MAX_ROUTES),
     (b"Contact", MAX_CONTACTS)],
)
def test_list_header_limits(name, limit, one_line):
    # Via: the request() template has one already.
    assert status(request(_list(name, limit, one_line))) is None
    data = request(_list(name, limit + 1, one_line))
    with pytest.raises(ParseError, match=f"Too Many {name.decode()} Values") as info:
        parse(data)
    assert info.value.status == 400
    response = error_response_for(data, info.value)
    assert response is not None and response.status == 400


def test_commas_inside_quotes_do_not_count():
    contacts = b"Contact: " + b", ".join(
        b'"a,b,c,d" <sip:u%d@h.lab>' % i for i in range(MAX_CONTACTS)
    ) + b"\r\n"
    assert parse(request(contacts)).contacts[-1].display_name == "a,b,c,d"


def test_size_limits():
    assert status(request(body=b"x" * MAX_MESSAGE_SIZE)) == 513
    assert status(request(b"X-A: 1\r\n" * MAX_HEADERS)) == 400
    assert status(request(b"X-A: " + b"a" * MAX_HEADER_LINE + b"\r\n")) == 400
    assert status(request(uri=b"sip:" + b"a" * MAX_URI_LENGTH + b"@a.lab")) == 414
    assert status(request(uri=b"sip:" + b"a" * 1000 + b"@a.lab")) is None


def test_stream_refuses_huge_content_length_without_buffering():
    parser = StreamParser()
    head = request().replace(b"Content-Length: 0", b"Content-Length: 99999999")
    with pytest.raises(ParseError) as info:
        parser.feed(head)
    assert info.value.status == 513
    assert parser.buffered <= len(head)


def test_stream_refuses_endless_header_block():
    parser = StreamParser()
    with pytest.raises(ParseError) as info:
        for _ in range(100):
            parser.feed(b"X-Pad: " + b"a" * 1000 + b"\r\n")
    assert info.value.status == 513


# -- bounded fuzzing (CI) -------------------------------------------------------------------

FUZZ_SECONDS = float(os.environ.get("SIPCALLING_FUZZ_SECONDS", "24"))
# Share of the time budget per target: the message target covers the most code.
SHARE = {"message": 0.5, "sdp": 0.25, "digest": 0.25}


def _atheris_available() -> bool:
    return importlib.util.find_spec("atheris") is not None


@pytest.mark.timeout(int(FUZZ_SECONDS) + 300)
@pytest.mark.parametrize("target", list(SHARE))
def test_fuzz_for_a_bounded_time(target: str, tmp_path: Path):
    if FUZZ_SECONDS <= 0:
        pytest.skip("SIPCALLING_FUZZ_SECONDS=0")
    if not _atheris_available():
        if os.environ.get("SIPCALLING_REQUIRE_FUZZ"):
            pytest.fail("atheris is not installed (pip install atheris)")
        pytest.skip("atheris is not installed")
    seconds = max(1, round(FUZZ_SECONDS * SHARE[target]))
    new_corpus = tmp_path / "corpus"
    new_corpus.mkdir()
    command = [
        sys.executable, str(FUZZ / f"fuzz_{target}.py"),
        f"-max_total_time={seconds}", "-timeout=10", "-rss_limit_mb=2048",
        f"-dict={FUZZ / 'sip.dict'}", f"-artifact_prefix={tmp_path}/",
        "-print_final_stats=1",
        # New inputs go to the temporary directory; the repository corpus is read only.
        str(new_corpus), str(FUZZ / "corpus" / target),
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 240, cwd=ROOT,
    )
    artifacts = sorted(p for p in tmp_path.iterdir() if p.is_file())
    if result.returncode != 0 or artifacts:
        found = "\n".join(f"{p.name}: {p.read_bytes()[:400]!r}" for p in artifacts)
        pytest.fail(
            f"fuzz_{target} failed (exit {result.returncode}); add the input to "
            f"fuzz/crashes/{target}/ and fix the parser.\n{found}\n"
            + result.stderr[-4000:]
        )


def test_via_rport_must_be_a_port_number():
    # Found by fuzz_message: `rport=5n` parsed, then response_destination() (RFC 3261
    # §18.2.2 routing of a response by its Via) raised ValueError from int().
    from sipcore.headers import Via
    from sipcore.twisted.transport import response_destination

    for bad in ("5n", "70000", "", '"5"'):
        with pytest.raises(ParseError, match="Bad (Via rport|header parameters)"):
            Via.parse(f"SIP/2.0/UDP h;rport={bad};branch=z9hG4bK1")
    assert Via.parse("SIP/2.0/UDP h;rport").rport == ""
    via = Via.parse("SIP/2.0/UDP h:5070;rport=5071;received=192.0.2.1")
    assert response_destination(via).port == 5071
