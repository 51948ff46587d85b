"""proxy.core.to_aor: the To field's AOR without formatting the parsed URI back to text.

It must key exactly as ``normalise_aor(str(request.to.uri))``, the form it replaces
(the proxy's known AORs, 480 against 404), whatever shape the To field has.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.core import to_aor
from registrar.location import normalise_aor
from sipcore.message import ParseError, Request, parse

_users = st.sampled_from(["alice", "Alice", "al%69ce", "a.b-c_d", "bob%25x", "+4930123", "x;y"])
_hosts = st.sampled_from(["a.lab", "A.Lab", "192.0.2.7", "[2001:db8::1]", "EXAMPLE.com"])
_ports = st.sampled_from(["", ":5060", ":5070"])
_params = st.sampled_from(["", ";transport=udp", ";lr", ";user=phone;x=Y"])
_headers = st.sampled_from(["", "?subject=hi", "?a=b&c=d"])
_schemes = st.sampled_from(["sip", "sips", "SIP"])
_names = st.sampled_from(["", '"Alice" ', "Alice ", '"A <b>" '])
_tags = st.sampled_from(["", ";tag=abc", ";tag=x;p=\"q>\""])
_field_names = st.sampled_from(["To", "t", "TO"])


def register(field: str, value: str) -> bytes:
    return (
        "REGISTER sip:a.lab SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKtoaor\r\n"
        "Max-Forwards: 70\r\n"
        f"{field}: {value}\r\n"
        "From: <sip:alice@a.lab>;tag=f\r\n"
        "Call-ID: to-aor@test\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"
    ).encode()


@given(_schemes, _users, _hosts, _ports, _params, _headers, _names, _tags, _field_names,
       st.booleans())
def test_to_aor_keys_as_the_formatted_uri(
    scheme: str, user: str, host: str, port: str, params: str, headers: str, name: str,
    tag: str, field: str, angle: bool,
) -> None:
    uri = f"{scheme}:{user}@{host}{port}{params}{headers}"
    value = f"{name}<{uri}>{tag}" if angle or name or params or headers else f"{uri}{tag}"
    try:
        request = parse(register(field, value))
    except ParseError:
        return  # the parser refused the combination: nothing reaches the proxy
    assert isinstance(request, Request)
    try:
        expected = normalise_aor(str(request.to.uri))
    except ValueError:
        with pytest.raises(ValueError):
            to_aor(request)
        return
    assert to_aor(request) == expected


def test_a_bare_angle_uri_is_read_as_received() -> None:
    request = parse(register("To", "<sip:Al%69ce@A.Lab:5070;transport=udp>"))
    assert isinstance(request, Request)
    assert to_aor(request) == "sip:Alice@a.lab:5070"
