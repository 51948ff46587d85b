"""Hypothesis strategies for valid SIP values and messages (reusable by any test).

Everything generated here is valid input for ``sipcore``: ``parse(m.serialise())``
must give back a message equal to ``m``.
"""

from __future__ import annotations

import string

from hypothesis import strategies as st

from sipcore.headers import CSeq, Via
from sipcore.message import Request, Response, header_key
from sipcore.uri import NameAddr, SipURI, TelURI

TOKEN_CHARS = string.ascii_letters + string.digits + "-.!%*_+`'~"
_UNRESERVED = string.ascii_letters + string.digits + "-_.!~*'()"
_HEX = "0123456789ABCDEFabcdef"

tokens = st.text(TOKEN_CHARS, min_size=1, max_size=12)
lower_tokens = st.text(string.ascii_lowercase + string.digits + "-", min_size=1, max_size=10)
escapes = st.builds(lambda a, b: f"%{a}{b}", st.sampled_from(_HEX), st.sampled_from(_HEX))


def _escaped_text(chars: str, min_size: int = 1, max_size: int = 10) -> st.SearchStrategy[str]:
    return st.lists(
        st.sampled_from(list(chars)) | escapes, min_size=min_size, max_size=max_size
    ).map("".join)


labels = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=8)
hostnames = st.lists(labels, min_size=1, max_size=4).map(".".join)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6_refs = st.ip_addresses(v=6).map(lambda ip: f"[{ip}]")
hosts = st.one_of(hostnames, ipv4, ipv6_refs)
ports = st.none() | st.integers(1, 65535)

users = _escaped_text(_UNRESERVED + "&=+$,;?/")
passwords = _escaped_text(_UNRESERVED + "&=+$,", min_size=0)
param_values = _escaped_text(_UNRESERVED + "[]/:&+$")
uri_params = st.dictionaries(lower_tokens, st.none() | param_values, max_size=3)
uri_headers = st.dictionaries(
    _escaped_text(_UNRESERVED), _escaped_text(_UNRESERVED + "[]/?:+$", min_size=0), max_size=2
)


@st.composite
def sip_uris(draw: st.DrawFn, with_headers: bool = True) -> SipURI:
    user = draw(st.none() | users)
    return SipURI(
        scheme=draw(st.sampled_from(["sip", "sips"])),
        user=user,
        password=draw(st.none() | passwords) if user is not None else None,
        host=draw(hosts),
        port=draw(ports),
        params=draw(uri_params),
        headers=draw(uri_headers) if with_headers else {},
    )


tel_uris = st.builds(
    lambda num, ctx: TelURI(num + (f";phone-context={ctx}" if ctx else "")),
    st.text("0123456789-.", min_size=1, max_size=12).map(lambda s: "+" + s),
    st.none() | hostnames,
)

# Display names: any printable text, including quotes and backslashes (escaped on
# output), but no control characters and no leading/trailing blanks.
display_names = st.none() | st.text(
    st.characters(blacklist_categories=("Cs", "Cc")), max_size=12
).map(lambda s: s.strip(" \t"))
gen_param_values = st.none() | tokens | hosts
header_params = st.dictionaries(lower_tokens, gen_param_values, max_size=3)


@st.composite
def name_addrs(draw: st.DrawFn, tag: bool | None = None) -> NameAddr:
    uri = draw(sip_uris() | tel_uris)
    params = draw(header_params)
    params.pop("tag", None)
    if tag or (tag is None and draw(st.booleans())):
        params["tag"] = draw(tokens)
    return NameAddr(draw(display_names), uri, params)


@st.composite
def vias(draw: st.DrawFn) -> Via:
    params = draw(st.dictionaries(lower_tokens, gen_param_values, max_size=3))
    # ttl and rport have checked values (a random name can spell them): drawn apart.
    params.pop("ttl", None)
    params.pop("rport", None)
    if draw(st.booleans()):
        params["rport"] = draw(st.none() | st.integers(1, 65535).map(str))
    params["branch"] = "z9hG4bK" + draw(tokens)
    return Via(
        transport=draw(st.sampled_from(["UDP", "TCP", "TLS", "SCTP", "WS"])),
        host=draw(hosts),
        port=draw(ports),
        params=params,
    )


# Extension headers must not collide with the ones a valid message constrains.
_RESERVED = {
    "via",
    "from",
    "to",
    "call-id",
    "cseq",
    "max-forwards",
    "content-length",
    "contact",
    "route",
    "record-route",
    "expires",
}
ext_names = tokens.filter(lambda n: header_key(n) not in _RESERVED)
ext_values = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30).map(
    lambda s: s.strip(" \t")
)
call_ids = st.builds(lambda a, b: f"{a}@{b}", tokens, hostnames)
methods = st.sampled_from(["INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "OPTIONS"]) | tokens
bodies = st.binary(max_size=200)


def _via_fields(draw: st.DrawFn) -> list[tuple[str, str]]:
    values = [str(v) for v in draw(st.lists(vias(), min_size=1, max_size=3))]
    fields = []
    while values:
        # Sometimes several Via values share one header field.
        take = draw(st.integers(1, len(values)))
        name = draw(st.sampled_from(["Via", "v", "VIA"]))
        fields.append((name, ", ".join(values[:take])))
        values = values[take:]
    return fields


def _common_fields(draw: st.DrawFn, method: str) -> list[tuple[str, str]]:
    fields = _via_fields(draw)
    fields.append((draw(st.sampled_from(["From", "f"])), str(draw(name_addrs(tag=True)))))
    fields.append((draw(st.sampled_from(["To", "t"])), str(draw(name_addrs()))))
    fields.append((draw(st.sampled_from(["Call-ID", "i"])), draw(call_ids)))
    fields.append(("CSeq", str(CSeq(draw(st.integers(0, 2**32 - 1)), method))))
    if draw(st.booleans()):
        fields.append(("Max-Forwards", str(draw(st.integers(0, 255)))))
    for _ in range(draw(st.integers(0, 2))):
        fields.append(("Contact", str(draw(name_addrs(tag=False)))))
    for _ in range(draw(st.integers(0, 2))):
        fields.append(("Route", f"<{draw(sip_uris(with_headers=False))}>"))
    fields.extend(draw(st.lists(st.tuples(ext_names, ext_values), max_size=4)))
    # Header order is free apart from the relative order of same-named fields.
    return draw(st.permutations(fields)) if draw(st.booleans()) else fields


@st.composite
def requests(draw: st.DrawFn) -> Request:
    method = draw(methods)
    fields = _common_fields(draw, method)
    body = draw(bodies)
    if body:
        fields.append(("Content-Type", "application/octet-stream"))
    uri = draw(sip_uris(with_headers=False) | tel_uris)
    return Request(method, uri, fields, body)


@st.composite
def responses(draw: st.DrawFn) -> Response:
    status = draw(st.integers(100, 699))
    reason = draw(st.none() | ext_values)
    method = draw(methods)
    fields = _common_fields(draw, method)
    return Response(status, reason, fields, draw(bodies))


messages = requests() | responses()
