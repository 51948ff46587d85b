"""The redirect server's answers (§8.3), through a fake stack."""

from __future__ import annotations

from twisted.internet import task

from proxy.redirect import RedirectRole
from registrar.location import Binding
from sipcore.twisted.transport import Address
from tests.proxy.fakes import FakeServerTx, FakeStack, invite


def make_role(tmp_path=None, users=None):
    clock = task.Clock()
    clock.advance(1000)
    config = {"domains": ["a.lab"], "location": "memory:", "routes": {"b.lab": ("10.0.0.9", 5090)}}
    if users:
        (tmp_path / "u").write_text(users)
        config["users"] = str(tmp_path / "u")
    role = RedirectRole(config, clock)
    role.stack = FakeStack()
    role.start()
    return role, clock


def ask(role, uri, method="INVITE"):
    req = invite(uri, method=method)
    tx = FakeServerTx(req)
    role.request_received(req, tx, Address("UDP", "10.0.0.1", 5070))
    return tx.sent[-1]


def test_registered_user_gets_302_with_q_and_expires():
    role, clock = make_role()
    role.location.put(Binding("sip:bob@a.lab", "sip:bob@10.0.0.2:5080", 1600, q=0.7))
    role.location.put(Binding("sip:bob@a.lab", "sip:bob@10.0.0.3:5080", 1300, q=1.0))
    answer = ask(role, "sip:bob@a.lab")
    assert answer.status == 302
    assert answer.to.tag
    assert answer.headers.get_all("Contact") == [
        "<sip:bob@10.0.0.3:5080>;q=1;expires=300",
        "<sip:bob@10.0.0.2:5080>;q=0.7;expires=600",
    ]


def test_routed_domain_points_at_its_server():
    role, _ = make_role()
    answer = ask(role, "sip:bob@b.lab")
    assert answer.status == 302
    assert answer.headers.get("Contact") == "<sip:bob@10.0.0.9:5090>"


def test_unknown_local_user_404_known_480_elsewhere_604(tmp_path):
    role, _ = make_role(tmp_path, "carol@a.lab plain:x\n")
    assert ask(role, "sip:nobody@a.lab").status == 404
    assert ask(role, "sip:carol@a.lab").status == 480
    assert ask(role, "sip:bob@nowhere.lab").status == 604


def test_options_to_the_server_is_answered():
    role, _ = make_role()
    answer = ask(role, "sip:127.0.0.1:5060", method="OPTIONS")
    assert answer.status == 200 and "INVITE" in answer.headers.get("Allow")


def test_max_forwards_zero_is_483():
    role, _ = make_role()
    req = invite("sip:bob@a.lab")
    req.headers.set("Max-Forwards", "0")
    tx = FakeServerTx(req)
    role.request_received(req, tx, Address("UDP", "10.0.0.1", 5070))
    assert tx.statuses == [483]
