"""The ``--web`` status page of a real `twistd -n sipproxy`, after a real sipp call.

sipp registers alice and bob (each from the port it will use), alice calls bob through
the proxy (INVITE / 180 / 200 / ACK / BYE), then:

* ``/metrics`` is scraped and parsed with prometheus_client's own parser;
* a real headless Chromium (Playwright driving Debian's /usr/bin/chromium; Playwright's
  downloaded browsers are never used) loads ``/``, finds both registrations, follows
  the call's ladder link and reads the arrows of the ladder diagram.

Without Chromium (or the playwright module) the browser test skips, or fails when
SIPCALLING_REQUIRE_BROWSER is set (as CI does).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.interop.conftest import free_port, run_sipp
from tests.interop.sip_helpers import SippCallee

pytestmark = pytest.mark.timeout(120)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


@pytest.fixture
def proxy(start_server):
    web = free_port()
    server = start_server(
        "sipproxy", "--domain", "a.lab", "--location", "memory:", "--web", str(web)
    )
    server.web = web
    return server


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode("utf-8")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode("utf-8")


def sipp_register(proxy_port: int, user: str, port: int, tmp_path: Path) -> None:
    """sipp's REGISTER from `port`, so the Contact is where `user` will answer."""
    result = run_sipp(
        "register.xml", f"127.0.0.1:{proxy_port}", "-p", str(port),
        "-key", "user", user, "-key", "domain", "a.lab", cwd=tmp_path, timeout=15,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def register_and_call(proxy: Any, tmp_path: Path) -> None:
    alice_port, bob_port = free_port(), free_port()
    sipp_register(proxy.port, "alice", alice_port, tmp_path)
    sipp_register(proxy.port, "bob", bob_port, tmp_path)
    bob = SippCallee("uas_answer.xml", bob_port, tmp_path)
    try:
        result = run_sipp(
            "uac_call.xml", f"127.0.0.1:{proxy.port}", "-p", str(alice_port),
            "-s", "bob", "-key", "domain", "a.lab", "-key", "from", "alice",
            "-key", "fromdomain", "a.lab", "-message_file", str(tmp_path / "uac.msg"),
            cwd=tmp_path, timeout=30,
        )
        assert result.returncode == 0, result.stdout[-2500:]
        assert bob.wait(20) == 0, bob.output()
    finally:
        bob.stop()


def metric_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def test_metrics_and_status_json_after_a_call(proxy, tmp_path):
    register_and_call(proxy, tmp_path)
    base = f"http://127.0.0.1:{proxy.web}"

    status, text = fetch(base + "/metrics")
    assert status == 200
    m = metric_values(text)
    assert m[("sip_requests_received_total", (("method", "INVITE"),))] >= 1
    assert m[("sip_requests_received_total", (("method", "REGISTER"),))] >= 2
    assert m[("sip_requests_sent_total", (("method", "INVITE"),))] >= 1
    assert m[("sip_responses_sent_total", (("method", "INVITE"), ("status", "200")))] >= 1
    assert m[("sip_responses_received_total", (("method", "INVITE"), ("status", "180")))] >= 1
    assert m[("sip_calls_total", (("outcome", "answered"),))] == 1
    assert m[("sip_calls_active", ())] == 0
    assert m[("sip_registrations", ())] == 2
    assert m[("sip_registered_aors", ())] == 2
    assert m[("sip_request_latency_seconds_count", (("method", "INVITE"),))] >= 1
    assert m[("sip_request_latency_seconds_count", (("method", "REGISTER"),))] == 2

    status, text = fetch(base + "/status.json")
    assert status == 200
    snap = json.loads(text)
    aors = {item["aor"]: item["contacts"] for item in snap["registrations"]["shown"]}
    assert set(aors) == {"sip:alice@a.lab", "sip:bob@a.lab"}
    assert aors["sip:bob@a.lab"][0]["user_agent"] == "sipp"
    [call] = snap["calls"]["recent"]
    assert (call["from"], call["to"], call["status"], call["outcome"]) == (
        "alice@a.lab", "bob@a.lab", 200, "answered")
    assert call["ended_by"] == "BYE"

    assert fetch(base + "/no/such/page")[0] == 404
    assert fetch(base + "/calls/not-a-call-id.html")[0] == 404
    assert proxy.alive()


def browser_or_skip() -> Any:
    required = bool(os.environ.get("SIPCALLING_REQUIRE_BROWSER"))
    why = None
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        why = "Chromium is not installed (Debian package chromium)"
    else:
        try:
            from playwright.sync_api import expect, sync_playwright
        except ImportError:
            why = "the playwright module is not installed (pip install -e '.[test]')"
    if why is not None:
        if required:
            pytest.fail(why)
        pytest.skip(why)
    return sync_playwright, expect


def test_status_page_in_a_real_browser(proxy, tmp_path):
    sync_playwright, expect = browser_or_skip()
    register_and_call(proxy, tmp_path)
    base = f"http://127.0.0.1:{proxy.web}"
    executable = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile, sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            profile, executable_path=executable, headless=True, args=CHROMIUM_ARGS,
        )
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(base + "/")
            registrations = page.locator("#registrations").inner_text()
            assert "sip:alice@a.lab" in registrations
            assert "sip:bob@a.lab" in registrations
            recent = page.locator("#recent-calls")
            assert "alice@a.lab" in recent.inner_text()
            assert "200 OK" in recent.inner_text()

            # The page refreshes itself from /panels: the live marker says so.
            # (Waited for through a selector: the page's CSP forbids eval().)
            expect(page.locator("#live")).to_have_text(re.compile(r"^live · "), timeout=10_000)
            recent.locator("a.callid").first.click()
            page.wait_for_selector("svg.flow g.msg")
            labels = page.locator("svg.flow g.msg text.label").all_text_contents()
            titles = [label.split(" ")[0] for label in labels]
            for expected in ("INVITE", "180", "200", "ACK", "BYE"):
                assert expected in titles, labels
            # Order of the call as the caller saw it.
            assert titles.index("INVITE") < titles.index("180") < titles.index("ACK") \
                < titles.index("BYE")
            # Clicking an arrow shows the whole message in the side panel.
            page.locator("svg.flow g.msg").first.click()
            assert page.locator("#panel pre.sip").inner_text().startswith("INVITE sip:bob@a.lab")
            assert errors == []
        finally:
            browser.close()
    assert proxy.alive()
