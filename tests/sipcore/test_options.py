"""Command-line options of the twistd plugins: good values parse, bad ones are one-line errors."""

from __future__ import annotations

import pytest
from twisted.python import usage

from sipcore.twisted.options import ProxyOptions, ServerOptions, parse_hostport


def parsed(*argv: str, kind=ProxyOptions):
    options = kind()
    options.parseOptions(list(argv))
    return options


def test_defaults():
    options = parsed()
    assert options["domains"] == ["a.lab"]
    assert options["interface"] == "127.0.0.1"
    assert options["port"] == 5060
    assert options["location"] == "sqlite:var/location.sqlite"
    assert options["upstreams"] == []


def test_overload_limits_reach_the_protection_config():
    config = parsed("--max-queue-delay", "0.1", "--max-lag", "0")["protection"]
    assert (config.max_queue_delay, config.max_lag) == (0.1, 0.0)
    assert parsed()["protection"].max_queue_delay == 0.25
    assert parsed()["protection"].max_request_age == 0.4  # below T1
    assert parsed("--max-request-age", "0")["protection"].max_request_age == 0.0


@pytest.mark.parametrize("value", ["-1", "nan", "soon"])
def test_a_bad_overload_limit_is_a_usage_error(value):
    with pytest.raises(usage.UsageError, match="--max-request-age: want a number >= 0"):
        parsed("--max-request-age", value)


def test_repeatable_options():
    options = parsed(
        "--domain", "A.Lab", "--domain", "c.lab", "--route", "b.lab=127.0.0.3:5070",
        "--route", "d.lab=[::1]", "--upstream", "sip:127.0.0.9:5080",
        "--upstream", "sip:127.0.0.10", "--redirect-server", "127.0.0.4:5062",
        "--dns", "127.0.0.53",
    )
    assert options["domains"] == ["a.lab", "c.lab"]
    assert options["routes"] == {"b.lab": ("127.0.0.3", 5070), "d.lab": ("::1", 5060)}
    assert [str(u) for u in options["upstreams"]] == ["sip:127.0.0.9:5080", "sip:127.0.0.10"]
    assert options["redirect-server"] == ("127.0.0.4", 5062)
    assert options["dns"] == ("127.0.0.53", 53)


@pytest.mark.parametrize(
    "argv",
    [
        ["--port", "70000"],
        ["--port", "x"],
        ["--interface", "not-an-ip"],
        ["--domain", "a lab"],
        ["--route", "b.lab"],
        ["--route", "b.lab=host:0"],
        ["--route", "b.lab=[::1"],
        ["--upstream", "http://x"],
        ["--location", "mysql://x"],
        ["--users", "/nonexistent/users"],
        ["--tls-port", "5061"],
        ["--redirect-server", ":5060"],
        ["--web", "-1"],
        ["--max-queue-delay", "-0.1"],
        ["--max-queue-delay", "soon"],
    ],
)
def test_bad_values_are_usage_errors(argv):
    with pytest.raises(usage.UsageError) as info:
        parsed(*argv)
    assert "\n" not in str(info.value)


def test_server_options_do_not_invent_a_domain():
    assert parsed(kind=ServerOptions)["domains"] == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1", ("127.0.0.1", 5060)),
        ("127.0.0.1:5070", ("127.0.0.1", 5070)),
        ("[2001:db8::1]:5070", ("2001:db8::1", 5070)),
        ("2001:db8::1", ("2001:db8::1", 5060)),
        ("proxy.b.lab", ("proxy.b.lab", 5060)),
    ],
)
def test_parse_hostport(text, expected):
    assert parse_hostport(text) == expected
