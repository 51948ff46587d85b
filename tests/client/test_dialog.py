"""RFC 3261 §12 dialog state: creation on both sides, in-dialog requests, routing."""

from __future__ import annotations

import pytest

from sipcore.dialog import Dialog, next_hop
from sipcore.message import Request, Response, parse

INVITE = (
    "INVITE sip:bob@b.lab SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa1\r\n"
    "Max-Forwards: 70\r\n"
    "From: Alice <sip:alice@a.lab>;tag=atag\r\n"
    "To: <sip:bob@b.lab>\r\n"
    "Call-ID: cid-1\r\n"
    "CSeq: 7 INVITE\r\n"
    "Contact: <sip:alice@10.0.0.1:5060>\r\n"
    "Record-Route: <sip:p2.b.lab;lr>, <sip:p1.a.lab;lr>\r\n"
    "Content-Length: 0\r\n\r\n"
)

OK = (
    "SIP/2.0 200 OK\r\n"
    "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa1\r\n"
    "From: Alice <sip:alice@a.lab>;tag=atag\r\n"
    "To: <sip:bob@b.lab>;tag=btag\r\n"
    "Call-ID: cid-1\r\n"
    "CSeq: 7 INVITE\r\n"
    "Contact: <sip:bob@10.0.0.2:5062>\r\n"
    "Record-Route: <sip:p2.b.lab;lr>, <sip:p1.a.lab;lr>\r\n"
    "Content-Length: 0\r\n\r\n"
)


def _invite() -> Request:
    msg = parse(INVITE.encode())
    assert isinstance(msg, Request)
    return msg


def _ok() -> Response:
    msg = parse(OK.encode())
    assert isinstance(msg, Response)
    return msg


def test_uac_dialog_from_2xx() -> None:
    d = Dialog.from_uac(_invite(), _ok())
    assert d.id == ("cid-1", "atag", "btag")
    assert d.state == "confirmed"
    assert d.local_seq == 7 and d.remote_seq is None
    assert str(d.remote_target) == "sip:bob@10.0.0.2:5062"
    # §12.1.2: the UAC reverses the Record-Route.
    assert [str(r.uri) for r in d.route_set] == ["sip:p1.a.lab;lr", "sip:p2.b.lab;lr"]
    assert d.local_uri.tag is None and d.remote_uri.tag is None


def test_uas_dialog_keeps_record_route_order() -> None:
    d = Dialog.from_uas(_invite(), "btag", confirmed=True)
    assert d.id == ("cid-1", "btag", "atag")
    assert d.remote_seq == 7 and d.local_seq is None
    assert str(d.remote_target) == "sip:alice@10.0.0.1:5060"
    assert [str(r.uri) for r in d.route_set] == ["sip:p2.b.lab;lr", "sip:p1.a.lab;lr"]


def test_loose_route_request() -> None:
    d = Dialog.from_uac(_invite(), _ok())
    bye = d.create_request("BYE")
    assert str(bye.uri) == "sip:bob@10.0.0.2:5062"
    assert bye.headers.get_all("Route") == ["<sip:p1.a.lab;lr>", "<sip:p2.b.lab;lr>"]
    assert bye.cseq.number == 8 and bye.cseq.method == "BYE"
    assert bye.from_.tag == "atag" and bye.to.tag == "btag"
    assert bye.call_id == "cid-1"
    assert str(next_hop(bye)) == "sip:p1.a.lab;lr"
    assert "Via" not in bye.headers


def test_strict_router() -> None:
    ok = _ok()
    ok.headers.set("Record-Route", "<sip:p2.b.lab;lr>, <sip:strict.a.lab;method=INVITE>")
    d = Dialog.from_uac(_invite(), ok)
    req = d.create_request("INFO")
    # §12.2.1.1: the strict router's URI becomes the Request-URI (method param dropped)
    # and the remote target goes last in Route.
    assert str(req.uri) == "sip:strict.a.lab"
    assert req.headers.get_all("Route") == ["<sip:p2.b.lab;lr>", "<sip:bob@10.0.0.2:5062>"]


def test_no_route_set_goes_to_target() -> None:
    ok = _ok()
    ok.headers.remove("Record-Route")
    d = Dialog.from_uac(_invite(), ok)
    req = d.create_request("BYE")
    assert "Route" not in req.headers
    assert next_hop(req) == d.remote_target


def test_ack_uses_invite_cseq_and_no_increment() -> None:
    d = Dialog.from_uac(_invite(), _ok())
    ack = d.create_ack(7)
    assert ack.cseq.number == 7 and ack.cseq.method == "ACK"
    assert d.local_seq == 7


def test_remote_cseq_order() -> None:
    d = Dialog.from_uas(_invite(), "btag")
    req = d.create_request("BYE")  # shape only; pretend it came from the peer
    req.headers.set("CSeq", "6 BYE")
    assert not d.check_remote_cseq(req)  # §12.2.2: lower than 7 → 500
    req.headers.set("CSeq", "9 BYE")
    assert d.check_remote_cseq(req)
    assert d.remote_seq == 9


def test_uas_first_request_starts_at_one_then_counts() -> None:
    d = Dialog.from_uas(_invite(), "btag")
    assert d.create_request("BYE").cseq.number == 1
    assert d.create_request("INVITE").cseq.number == 2


def test_target_refresh() -> None:
    d = Dialog.from_uac(_invite(), _ok())
    reinvite_ok = _ok()
    reinvite_ok.headers.set("Contact", "<sip:bob@10.0.0.9:6000>")
    d.refresh_target(reinvite_ok)
    assert str(d.remote_target) == "sip:bob@10.0.0.9:6000"
    # The route set is fixed at creation (§12.2.1.2).
    assert len(d.route_set) == 2


def test_early_dialog_and_ids() -> None:
    ringing = _ok()
    ringing.status, ringing.reason = 180, "Ringing"
    d = Dialog.from_uac(_invite(), ringing)
    assert d.state == "early"
    d.confirm(_ok())
    assert d.state == "confirmed"
    assert Dialog.id_of_received(_ok()) == ("cid-1", "atag", "btag")
    assert Dialog.id_of_received(_invite()) is None  # no To tag yet


def test_uac_needs_remote_tag() -> None:
    ok = _ok()
    ok.headers.set("To", "<sip:bob@b.lab>")
    with pytest.raises(ValueError):
        Dialog.from_uac(_invite(), ok)


def test_uas_needs_contact() -> None:
    invite = _invite()
    invite.headers.remove("Contact")
    with pytest.raises(ValueError):
        Dialog.from_uas(invite, "btag")
