"""The ``--web`` status server: the observer fed with literal SIP messages, the
Prometheus text parsed back, the pages rendered through twisted.web (DummyRequest and
one real listening port)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, task
from twisted.web.resource import getChildForRequest
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from proxy.web.metrics import build_registry
from proxy.web.pages import build_root, call_href
from proxy.web.status import StatusObserver, outcome_of
from proxy.web.tracing import FanOut, fan_out
from registrar.location import Binding
from registrar.location.memory import MemoryLocationService
from sipcore.errors import ParseError
from sipcore.twisted.transport import Address, SipEndpoint

PROXY = Address("UDP", "127.0.0.1", 5060)
ALICE = Address("UDP", "127.0.0.1", 5070)
BOB = Address("UDP", "127.0.0.1", 5080)


# -- literal SIP ----------------------------------------------------------------------------


def request(method: str, call_id: str = "call-1", cseq: int = 1, branch: str = "z9hG4bKa1",
            to_tag: str | None = None, cseq_method: str | None = None,
            ruri: str = "sip:bob@a.lab") -> bytes:
    to = "<sip:bob@a.lab>" + (f";tag={to_tag}" if to_tag else "")
    return (
        f"{method} {ruri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport\r\n"
        f'From: "Alice" <sip:alice@a.lab>;tag=al1\r\nTo: {to}\r\n'
        f"Call-ID: {call_id}\r\nCSeq: {cseq} {cseq_method or method}\r\n"
        "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def response(status: int, reason: str, method: str = "INVITE", call_id: str = "call-1",
             cseq: int = 1, branch: str = "z9hG4bKa1", to_tag: str | None = "bb1") -> bytes:
    to = "<sip:bob@a.lab>" + (f";tag={to_tag}" if to_tag else "")
    return (
        f"SIP/2.0 {status} {reason}\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport=5070\r\n"
        f"From: <sip:alice@a.lab>;tag=al1\r\nTo: {to}\r\n"
        f"Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
    ).encode()


class Now:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def now() -> Now:
    return Now()


@pytest.fixture
def obs(now: Now) -> StatusObserver:
    return StatusObserver("proxy a.lab", "proxy", now=now)


def up_in(obs: StatusObserver, data: bytes) -> None:  # from the caller
    obs("in", data, PROXY, ALICE)


def up_out(obs: StatusObserver, data: bytes) -> None:  # to the caller
    obs("out", data, PROXY, ALICE)


def down_out(obs: StatusObserver, data: bytes) -> None:  # to the callee
    obs("out", data, PROXY, BOB)


def down_in(obs: StatusObserver, data: bytes) -> None:  # from the callee
    obs("in", data, PROXY, BOB)


def answered_call(obs: StatusObserver, now: Now, call_id: str = "call-1") -> None:
    """INVITE / 100 / 180 / 200 / ACK / BYE / 200 through the proxy."""
    up_in(obs, request("INVITE", call_id))
    now.t += 0.002
    up_out(obs, response(100, "Trying", call_id=call_id, to_tag=None))
    down_out(obs, request("INVITE", call_id, branch="z9hG4bKp1"))
    down_in(obs, response(180, "Ringing", call_id=call_id, branch="z9hG4bKp1"))
    up_out(obs, response(180, "Ringing", call_id=call_id))
    now.t += 1
    down_in(obs, response(200, "OK", call_id=call_id, branch="z9hG4bKp1"))
    up_out(obs, response(200, "OK", call_id=call_id))
    up_in(obs, request("ACK", call_id, branch="z9hG4bKa2", to_tag="bb1"))
    down_out(obs, request("ACK", call_id, branch="z9hG4bKp2", to_tag="bb1"))
    now.t += 10
    up_in(obs, request("BYE", call_id, cseq=2, branch="z9hG4bKa3", to_tag="bb1"))
    down_out(obs, request("BYE", call_id, cseq=2, branch="z9hG4bKp3", to_tag="bb1"))
    down_in(obs, response(200, "OK", "BYE", call_id, 2, "z9hG4bKp3"))
    up_out(obs, response(200, "OK", "BYE", call_id, 2, "z9hG4bKa3"))


def metrics(obs: StatusObserver) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client import generate_latest

    text = generate_latest(build_registry(obs)).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


# -- the call table ---------------------------------------------------------------------------


def test_answered_call_goes_through_its_states(obs, now):
    start = now.t
    up_in(obs, request("INVITE"))
    [call] = obs.active_calls()
    assert (call.state, call.caller, call.callee) == ("trying", "alice@a.lab", "bob@a.lab")
    up_out(obs, response(100, "Trying", to_tag=None))
    assert call.state == "trying"
    up_out(obs, response(180, "Ringing"))
    assert call.state == "ringing"
    now.t += 2
    up_out(obs, response(200, "OK"))
    assert call.state == "connected" and call.answered == start + 2
    now.t += 30
    up_in(obs, request("BYE", cseq=2, branch="z9hG4bKb", to_tag="bb1"))
    assert obs.active_calls() == []
    [ended] = obs.recent_calls()
    assert ended is call
    assert (call.state, call.status, call.reason, call.outcome, call.ended_by) == (
        "ended", 200, "OK", "answered", "BYE")
    assert call.duration(now.t) == 32 and call.talk_time(now.t) == 30
    assert obs.call_outcomes["answered"] == 1


def test_whole_call_through_the_proxy_is_one_call_with_every_message(obs, now):
    answered_call(obs, now)
    [call] = obs.recent_calls()
    assert len(call.messages) == 13
    assert obs.call_outcomes == {**dict.fromkeys(obs.call_outcomes, 0), "answered": 1}
    records = obs.records_for("call-1")
    assert [r.direction for r in records][:3] == ["in", "out", "out"]
    assert records[0].message.method == "INVITE"


@pytest.mark.parametrize(("status", "outcome"), [
    (486, "busy"), (603, "declined"), (404, "not_found"), (480, "no_answer"),
    (302, "redirected"), (500, "failed"),
])
def test_final_error_ends_the_call_with_its_outcome(obs, status, outcome):
    up_in(obs, request("INVITE"))
    up_out(obs, response(status, "Whatever"))
    [call] = obs.recent_calls()
    assert (call.status, call.outcome, call.ended_by) == (status, outcome, str(status))
    assert obs.call_outcomes[outcome] == 1 and obs.active == 0


def test_cancel_then_487_is_cancelled(obs):
    up_in(obs, request("INVITE"))
    up_out(obs, response(180, "Ringing"))
    up_in(obs, request("CANCEL", branch="z9hG4bKa1"))
    assert obs.active_calls()[0].state == "cancelling"
    up_out(obs, response(200, "OK", "CANCEL"))
    assert obs.active_calls()[0].state == "cancelling"  # the 200 is the CANCEL's
    up_out(obs, response(487, "Request Terminated"))
    assert obs.recent_calls()[0].outcome == "cancelled"


def test_reinvite_and_its_failure_do_not_end_the_call(obs):
    up_in(obs, request("INVITE"))
    up_out(obs, response(200, "OK"))
    up_in(obs, request("INVITE", cseq=2, branch="z9hG4bKre", to_tag="bb1"))
    up_out(obs, response(491, "Request Pending", cseq=2, branch="z9hG4bKre"))
    assert [c.state for c in obs.active_calls()] == ["connected"]
    assert len(obs.calls) == 1


def test_retransmissions_do_not_make_new_calls(obs):
    up_in(obs, request("INVITE"))
    up_in(obs, request("INVITE"))
    assert len(obs.active_calls()) == 1
    up_out(obs, response(486, "Busy Here"))
    up_in(obs, request("INVITE"))  # retransmitted after the final response
    assert obs.active_calls() == [] and len(obs.recent_calls()) == 1
    assert obs.call_outcomes["busy"] == 1


def test_mid_dialog_invite_of_an_unknown_call_is_not_a_call(obs):
    up_in(obs, request("INVITE", to_tag="xx"))
    assert obs.active_calls() == []


def test_quiet_calls_expire(obs, now):
    up_in(obs, request("INVITE", "early"))
    up_in(obs, request("INVITE", "talking", branch="z9hG4bKt"))
    up_out(obs, response(200, "OK", call_id="talking", branch="z9hG4bKt"))
    now.t += obs.early_timeout + 1
    assert [c.call_id for c in obs.active_calls()] == ["talking"]
    assert obs.recent_calls()[0].outcome == "timeout"
    now.t += obs.call_timeout
    assert obs.active_calls() == []


def test_buffers_are_bounded(now):
    obs = StatusObserver(now=now, max_messages=10, max_recent=3, per_call_messages=4)
    for i in range(6):
        answered_call(obs, now, call_id=f"c{i}")
    assert len(obs.ring) == 10
    assert [c.call_id for c in obs.recent_calls()] == ["c5", "c4", "c3"]
    assert set(obs.calls) == {b"c3", b"c4", b"c5"}  # older calls forgotten
    assert all(len(c.messages) == 4 for c in obs.recent_calls())
    assert obs.records_for("c0") == []


def test_active_calls_are_capped(now):
    obs = StatusObserver(now=now, max_active=2)
    for i in range(3):
        up_in(obs, request("INVITE", f"c{i}", branch=f"z9hG4bK{i}"))
    assert [c.call_id for c in obs.active_calls()] == ["c0", "c1"]


def test_compact_headers_and_unknown_methods():
    obs = StatusObserver()
    compact = (
        b"INVITE sip:bob@a.lab SIP/2.0\r\nv: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKc\r\n"
        b"f: <sip:alice@a.lab>;tag=1\r\nt: <sip:bob@a.lab>\r\ni: compact-1\r\n"
        b"CSeq: 7 INVITE\r\nl: 0\r\n\r\n"
    )
    obs("in", compact, PROXY, ALICE)
    assert [c.call_id for c in obs.active_calls()] == ["compact-1"]
    assert obs.active_calls()[0].cseq == 7
    obs("in", request("FROBNICATE"), PROXY, ALICE)
    obs("in", request("frobnicate2", branch="z9hG4bKx"), PROXY, ALICE)
    assert obs.requests_in == {b"INVITE": 1, b"other": 2}


def test_the_hook_never_raises(obs, capsys):
    for data in (b"", b"\r\n\r\n", b"SIP/2.0 \r\n", b"\xff\xfe garbage", b"INVITE"):
        obs("in", data, PROXY, ALICE)
    obs("in", request("INVITE"), None, None)  # addresses are only read when rendering
    assert obs.messages_seen == 6


# -- latency, metrics --------------------------------------------------------------------------


def test_latency_invite_to_first_response_register_to_final(obs, now):
    answered_call(obs, now)  # 100 Trying went up 2 ms after the INVITE came in
    hist = obs.latency[b"INVITE"]
    assert hist.count == 1 and hist.total == pytest.approx(0.002, abs=1e-6)
    up_in(obs, request("REGISTER", "reg", branch="z9hG4bKr", ruri="sip:a.lab"))
    now.t += 0.5
    up_out(obs, response(100, "Trying", "REGISTER", "reg", branch="z9hG4bKr"))
    now.t += 0.25
    up_out(obs, response(200, "OK", "REGISTER", "reg", branch="z9hG4bKr"))
    reg = obs.latency[b"REGISTER"]
    assert reg.count == 1 and reg.total == pytest.approx(0.75, abs=1e-6)


def test_metrics_text(obs, now):
    answered_call(obs, now)
    up_in(obs, request("OPTIONS", "o", branch="z9hG4bKo"))
    up_out(obs, response(200, "OK", "OPTIONS", "o", branch="z9hG4bKo"))
    obs.parse_error(400)
    obs.parse_error(400)
    obs.parse_error(505)
    m = metrics(obs)
    assert m[("sip_requests_received_total", (("method", "INVITE"),))] == 1
    assert m[("sip_requests_received_total", (("method", "ACK"),))] == 1
    assert m[("sip_requests_sent_total", (("method", "BYE"),))] == 1
    assert m[("sip_responses_sent_total", (("method", "INVITE"), ("status", "180")))] == 1
    assert m[("sip_responses_sent_total", (("method", "OPTIONS"), ("status", "200")))] == 1
    assert m[("sip_responses_received_total", (("method", "INVITE"), ("status", "200")))] == 1
    assert m[("sip_parse_errors_total", (("status", "400"),))] == 2
    assert m[("sip_parse_errors_total", (("status", "505"),))] == 1
    assert m[("sip_calls_total", (("outcome", "answered"),))] == 1
    assert m[("sip_calls_total", (("outcome", "busy"),))] == 0
    assert m[("sip_calls_active", ())] == 0
    assert m[("sip_request_latency_seconds_count", (("method", "INVITE"),))] == 1
    assert m[("sip_request_latency_seconds_bucket", (("le", "0.0025"), ("method", "INVITE")))] == 1
    assert m[("sip_request_latency_seconds_bucket", (("le", "0.001"), ("method", "INVITE")))] == 0
    assert m[("sip_transactions", (("kind", "server_invite"),))] == 0


def test_registries_are_per_process_objects(now):
    one, two = StatusObserver(now=now), StatusObserver(now=now)
    up_in(one, request("INVITE"))
    assert metrics(one)[("sip_requests_received_total", (("method", "INVITE"),))] == 1
    assert ("sip_requests_received_total", (("method", "INVITE"),)) not in metrics(two)


def test_outcome_of():
    assert [outcome_of(s) for s in (200, 301, 486, 600, 603, 487, 408, 604, 503)] == [
        "answered", "redirected", "busy", "busy", "declined", "cancelled", "no_answer",
        "not_found", "failed"]


# -- attaching to a stack ------------------------------------------------------------------------


class FakeTx:
    def __init__(self, state: str) -> None:
        self.state = state


class ServerInviteTransaction(FakeTx):
    pass


class ClientNonInviteTransaction(FakeTx):
    pass


class FakeStack:
    def __init__(self) -> None:
        # A real endpoint that never listens: its reject() path is what is observed.
        self.endpoint = SipEndpoint(task.Clock(), handler=None, log_messages=False)
        self.table = [ServerInviteTransaction("Proceeding"), ServerInviteTransaction("Proceeding"),
                      ClientNonInviteTransaction("Trying")]


class FakeRole:
    def __init__(self, clock: Any) -> None:
        self.location = MemoryLocationService(clock)


def test_attach_counts_parse_errors_and_reads_the_table(obs):
    stack = FakeStack()
    obs.attach(stack, None)
    stack.endpoint.reject(b"x", ParseError("Bad CSeq", 400), ALICE, None)
    stack.endpoint.reject(b"x", err=ParseError("Version", 505), source=ALICE, stream=None)
    assert obs.parse_errors == {400: 1, 505: 1}
    assert obs.transactions() == {("server_invite", "Proceeding"): 2,
                                  ("client_non_invite", "Trying"): 1}
    m = metrics(obs)
    assert m[("sip_transactions", (("kind", "server_invite"),))] == 2
    assert obs.sip_address == "127.0.0.1:5060"


def test_fan_out():
    seen: list[tuple[str, Any]] = []

    def a(*args: Any) -> None:
        seen.append(("a", args[0]))

    def b(*args: Any) -> None:
        seen.append(("b", args[0]))

    assert fan_out(None, None) is None
    assert fan_out(None, a) is a
    both = fan_out(a, None, b)
    assert isinstance(both, FanOut)
    both("in", b"", PROXY, ALICE)
    assert seen == [("a", "in"), ("b", "in")]


# -- pages (DummyRequest) -----------------------------------------------------------------------


@pytest.fixture
def site(now):
    clock = task.Clock()
    clock.advance(now.t)
    obs = StatusObserver("proxy a.lab", "proxy", now=now)
    role = FakeRole(clock)
    obs.attach(FakeStack(), role)
    for user, port, q in (("alice", 5070, 1.0), ("bob", 5080, 0.5)):
        role.location.put(Binding(
            aor=f"sip:{user}@a.lab", contact=f"sip:{user}@127.0.0.1:{port}",
            expires_at=clock.seconds() + 300, q=q, user_agent=f"<b>{user}-phone</b>",
            call_id=f"reg-{user}", cseq=1,
        ))
    return obs, build_root(obs, build_registry(obs))


def get(root: Any, path: str) -> tuple[int, dict[bytes, bytes], str]:
    segments = [s.encode() for s in path.lstrip("/").split("/")]
    from urllib.parse import unquote_to_bytes

    req = DummyRequest([unquote_to_bytes(s) for s in segments])
    resource = getChildForRequest(root, req)
    result = resource.render(req)
    if result is not NOT_DONE_YET:
        req.write(result)
        req.finish()
    assert req.finished, "the page did not finish synchronously"
    headers = {k.lower(): v[0] for k, v in req.responseHeaders.getAllRawHeaders()}
    return req.responseCode or 200, headers, b"".join(req.written).decode()


def test_status_page_lists_registrations_and_calls(site, now):
    obs, root = site
    answered_call(obs, now)
    up_in(obs, request("INVITE", "live-call", branch="z9hG4bKl"))
    code, headers, html = get(root, "/")
    assert code == 200 and headers[b"content-type"].startswith(b"text/html")
    assert b"default-src 'none'" in headers[b"content-security-policy"]
    assert "sip:alice@a.lab" in html and "sip:bob@127.0.0.1:5080" in html
    assert "&lt;b&gt;bob-phone&lt;/b&gt;" in html and "<b>bob-phone" not in html
    assert 'href="/calls/live-call.html"' in html and 'href="/calls/call-1.html"' in html
    assert "200 OK" in html and "answered" in html and "trying" in html
    code, _, panels = get(root, "/panels")
    assert code == 200 and "<html" not in panels and "sip:alice@a.lab" in panels


def test_status_json(site, now):
    obs, root = site
    answered_call(obs, now)
    code, headers, text = get(root, "/status.json")
    assert code == 200 and headers[b"content-type"].startswith(b"application/json")
    snap = json.loads(text)
    assert snap["registrations"]["aors"] == 2
    bob = snap["registrations"]["shown"][1]
    assert bob["aor"] == "sip:bob@a.lab"
    assert bob["contacts"][0]["q"] == 0.5 and bob["contacts"][0]["expires_in"] == 300
    assert snap["calls"]["recent"][0]["outcome"] == "answered"
    assert snap["transactions"]["total"] == 3


def test_metrics_page_refreshes_registration_counts(site):
    obs, root = site
    code, headers, text = get(root, "/metrics")
    assert code == 200 and headers[b"content-type"].startswith(b"text/plain; version=")
    samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples["sip_registrations"] == 2 and samples["sip_registered_aors"] == 2


def test_ladder_page(site, now):
    obs, root = site
    answered_call(obs, now)
    code, headers, html = get(root, "/calls/call-1.html")
    assert code == 200 and headers[b"content-type"].startswith(b"text/html")
    for label in ("INVITE bob@a.lab", "180 Ringing", "200 OK", "ACK", "BYE"):
        assert label in html
    assert "proxy a.lab" in html and '<a href="/"' in html
    # REGISTER flows (and any other Call-ID) come from the general message buffer.
    up_in(obs, request("REGISTER", "reg-x", branch="z9hG4bKr", ruri="sip:a.lab"))
    assert get(root, "/calls/reg-x.html")[0] == 200


def test_hostile_call_id_is_escaped_everywhere(site, now):
    obs, root = site
    evil = '<script>alert("x")</script>@a.lab/../"q'
    up_in(obs, request("INVITE", evil, branch="z9hG4bKe"))
    up_out(obs, response(486, "Busy <i>Here</i>", call_id=evil, branch="z9hG4bKe"))
    _, _, html = get(root, "/")
    assert "<script>alert" not in html and "&lt;script&gt;alert" in html
    assert "<i>Here" not in html
    href = call_href(evil)
    assert "/" not in href[len("/calls/"):] and "<" not in href
    assert f'href="{href}"' in html
    code, _, ladder = get(root, href)
    assert code == 200 and "<script>alert" not in ladder
    code, _, missing = get(root, "/calls/%3Cscript%3Enope.html")
    assert code == 404 and "&lt;script&gt;nope" in missing and "<script>nope" not in missing


@pytest.mark.parametrize("path", [
    "/nope", "/calls/", "/calls/unknown.html", "/calls/call-1", "/calls/a/b.html",
    "/status.json/more", "/metrics/x", "/panels/x", "/calls/%FF.html",
])
def test_unknown_paths_are_404(site, now, path):
    obs, root = site
    answered_call(obs, now)
    code, headers, html = get(root, path)
    assert code == 404 and "Not found" in html
    assert headers[b"content-type"].startswith(b"text/html")


class _StoreDown:
    """The real store, except that listing AORs fails as an unreachable Redis would."""

    def __init__(self, real):
        self.real = real

    def aors(self):
        return defer.fail(RuntimeError("redis is down"))

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_broken_location_store_shows_an_error(site):
    obs, root = site
    obs.role_obj.location = _StoreDown(obs.role_obj.location)
    code, _, html = get(root, "/")
    assert code == 200 and "Location service unavailable: redis is down" in html
    code, _, text = get(root, "/metrics")  # still answers, with the last known counts
    assert code == 200 and "sip_registrations" in text


# -- the real thing: SipService with --web 0 ------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_sipproxy_with_web_serves_over_http(tmp_path):
    from twisted.internet import threads

    from proxy.tap import Options, makeService

    def fetch(url: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    options = Options()
    options.parseOptions(["--domain", "a.lab", "--location", "memory:", "--port", "0",
                          "--web", "0", "--quiet", "--trace", str(tmp_path / "t.jsonl")])
    service = makeService(options)
    service.startService()
    try:
        web = service.web
        assert isinstance(service.stack.endpoint.tracer, FanOut)  # --trace and --web
        base = f"http://127.0.0.1:{web.port}"
        # urllib in a thread: the reactor must keep running to answer it.
        code, body = await threads.deferToThread(fetch, base + "/")
        assert code == 200 and "sipcalling · proxy a.lab" in body
        code, _ = await threads.deferToThread(fetch, base + "/x")
        assert code == 404
    finally:
        await service.stopService()
    assert web.listening is None
