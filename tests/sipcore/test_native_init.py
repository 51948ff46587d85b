"""The hot path's dataclasses define `__init__` themselves, so mypyc compiles it.

For a compiled `@dataclass` without one, `dataclasses` generates `__init__` as Python
source and exec()s it: it runs interpreted (about 250 ns per object against 45-70 ns
native), and a REGISTER builds about 17 such objects. The explicit `__init__`s must
keep the generated ones' behaviour: same signature, defaults, `__post_init__`
validation, repr, eq and frozenness (checked here in both builds).
"""

from __future__ import annotations

import dataclasses
import inspect
import types

import pytest

import proxy.routing
import proxy.validation
import registrar.location.binding
import registrar.registrar
import sipcore.headers
import sipcore.uri
from proxy.routing import Decision, LocalIdentity, Target
from proxy.validation import Rejection
from registrar.location.binding import ApplyResult, Binding, Removal
from sipcore import accel
from sipcore.headers import Contact, CSeq, Via
from sipcore.uri import AbsoluteURI, NameAddr, SipURI, TelURI

# sipcore.transaction.timers.Timers is left out: built once and shared, not per message.
CLASSES: list[type] = [
    SipURI, TelURI, AbsoluteURI, NameAddr,
    Via, CSeq, Contact,
    Binding, Removal, ApplyResult,
    registrar.registrar._Plan,
    Rejection,
    LocalIdentity, Target, Decision,
]

MODULES = (sipcore.uri, sipcore.headers, registrar.location.binding, registrar.registrar,
           proxy.validation, proxy.routing)


def test_the_list_is_every_dataclass_of_these_modules() -> None:
    found = {obj for module in MODULES for obj in vars(module).values()
             if isinstance(obj, type) and dataclasses.is_dataclass(obj)
             and obj.__module__ == module.__name__}
    assert found == set(CLASSES)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_init_is_native_when_compiled(cls: type) -> None:
    if not (accel.BUILD == "compiled" and accel.running_compiled()):
        pytest.skip(f"the sources run (build: {accel.BUILD}); nothing is compiled natively")
    init = cls.__init__  # type: ignore[misc]
    assert type(init) is not types.FunctionType, (
        f"{cls.__name__}.__init__ is the interpreted one dataclasses generated "
        f"({init.__code__.co_filename})")
    assert not hasattr(init, "__code__")


def init_fields(cls: type) -> list[str]:
    # Compiled, NameAddr's `__hash__ = None` shows up as a field too (a mypyc quirk that
    # predates the explicit __init__s); it is no constructor argument.
    return [f.name for f in dataclasses.fields(cls) if f.init and f.name != "__hash__"]


def samples() -> list[object]:
    uri = SipURI("sips", "u", "pw", "h", 5061, {"lr": None}, {"subject": "x"})
    binding = Binding("sip:a@b", "sip:a@h", 1.0, 0.5, "c", 2, ("<sip:p>",), "i", 1, "r", "ua")
    return [
        uri, TelURI("+1555", "tel"), AbsoluteURI("urn", "x"), NameAddr("A", uri, {"tag": "t"}),
        Via("TCP", "h", 5, {"branch": "b"}, "SIP/2.0"), CSeq(7, "INVITE"),
        Contact(NameAddr(None, uri)),
        binding, Removal("*", "c", 3, "i", 2), ApplyResult({"k": (1, binding)}, {"x"}, {}),
        registrar.registrar._Plan("sip:a@b", [binding], False, ("p",)),
        Rejection(400, "Bad", (("Warning", "w"),)),
        LocalIdentity("h", 1, frozenset({"d"}), 2, frozenset({3}), b"k"),
        Target(uri, None, ("r",), 0.5, frozenset({486}), 2.0, "l", {"e": "f"}),
        Decision("lookup", ("sip:a@b",)),
    ]


def test_every_field_is_a_parameter() -> None:
    """Every init field is accepted by keyword (what dataclasses.replace relies on)."""
    assert [type(s) for s in samples()] == CLASSES
    for sample in samples():
        cls = type(sample)
        again = cls(**{name: getattr(sample, name) for name in init_fields(cls)})
        assert repr(again) == repr(sample)
        if cls is NameAddr and accel.running_compiled():
            continue  # replace() would pass that `__hash__` pseudo-field
        assert repr(dataclasses.replace(sample)) == repr(sample)


def test_signatures_match_the_fields() -> None:
    """Parameters in field order (checked on the sources: mypyc's text signatures are
    partial, without one at all for LocalIdentity)."""
    if accel.running_compiled():
        pytest.skip("native __init__s carry no reliable signature")
    for cls in CLASSES:
        assert list(inspect.signature(cls).parameters) == init_fields(cls), cls.__name__


def test_sip_uri() -> None:
    a = SipURI("sip", "alice", None, "atlanta.com", 5060, {"transport": "tcp"}, {})
    b = SipURI(scheme="sip", user="alice", host="atlanta.com", port=5060,
               params={"transport": "tcp"})
    assert a == b and str(a) == str(b) == "sip:alice@atlanta.com:5060;transport=tcp"
    assert a._orig is None
    d1, d2 = SipURI(), SipURI()
    assert (d1.scheme, d1.user, d1.password, d1.host, d1.port) == ("sip", None, None, "", None)
    assert d1.params == {} and d1.headers == {}
    assert d1.params is not d2.params and d1.headers is not d2.headers  # no shared default
    assert repr(b) == ("SipURI(scheme='sip', user='alice', password=None, host='atlanta.com',"
                       " port=5060, params={'transport': 'tcp'}, headers={})")
    with pytest.raises(TypeError):
        SipURI(_orig=None)  # type: ignore[call-arg]
    parsed = sipcore.uri.parse_uri("sip:bob@biloxi.com;lr")
    assert str(parsed) == "sip:bob@biloxi.com;lr" and parsed.copy() == parsed
    assert NameAddr(None, a).params == {}
    assert NameAddr("A", a, {"tag": "1"}) == NameAddr(display_name="A", uri=b, params={"tag": "1"})
    assert TelURI("+1555") == TelURI(value="+1555", scheme="tel")
    assert AbsoluteURI("urn", "x") == AbsoluteURI(scheme="urn", value="x")


def test_via() -> None:
    a = Via("UDP", "h", 5060, {"branch": "z9hG4bK1"}, "SIP/2.0")
    b = Via(transport="UDP", host="h", port=5060, params={"branch": "z9hG4bK1"})
    assert a == b and repr(a) == repr(b)
    assert repr(a) == ("Via(transport='UDP', host='h', port=5060, "
                       "params={'branch': 'z9hG4bK1'}, protocol='SIP/2.0')")
    assert a != Via("UDP", "h")
    d1, d2 = Via("UDP", "h"), Via("UDP", "h")
    assert d1.port is None and d1.params == {} and d1.protocol == "SIP/2.0"
    assert d1.params is not d2.params
    d1.port = 1  # not frozen
    assert d1 != d2
    assert CSeq(1, "REGISTER") == CSeq(number=1, method="REGISTER")
    assert Contact(None) == Contact(name_addr=None) == Contact.wildcard()


def test_binding() -> None:
    a = Binding("sip:Alice@Atlanta.COM", "sip:a@h", 10.0, 0.5, "c", 2, ("<sip:p>",), "i", 1,
                "r", "ua")
    b = Binding(aor="sip:Alice@atlanta.com", contact="sip:a@h", expires_at=10.0, q=0.5,
                call_id="c", cseq=2, path=("<sip:p>",), instance_id="i", reg_id=1,
                received="r", user_agent="ua")
    assert a == b and hash(a) == hash(b) and repr(a) == repr(b)
    assert a.aor == "sip:Alice@atlanta.com" and a.path == ("<sip:p>",)  # __post_init__
    d = Binding("sip:bob@biloxi.com", "sip:b@h", 5.0)
    assert (d.q, d.call_id, d.cseq, d.path, d.instance_id, d.reg_id, d.received,
            d.user_agent) == (1.0, "", 0, (), None, None, None, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.q = 0.1  # type: ignore[misc]
    with pytest.raises(ValueError, match="contact must not be empty"):
        Binding("sip:bob@biloxi.com", "", 5.0)
    with pytest.raises(ValueError, match="q must be within"):
        Binding("sip:bob@biloxi.com", "sip:b@h", 5.0, q=1.5)
    with pytest.raises(ValueError, match="no host"):
        Binding("sip:bob@", "sip:b@h", 5.0)
    if not accel.running_compiled():  # compiled, path is a native tuple: a list is refused
        listed = Binding("sip:a@b", "sip:a@h", 1.0, path=["<sip:p>"])  # type: ignore[arg-type]
        assert listed.path == ("<sip:p>",)  # __post_init__
    moved = dataclasses.replace(a, expires_at=20.0)
    assert moved.expires_at == 20.0 and moved.aor == a.aor and moved.path == a.path
    assert Removal("*") == Removal(contact="*", call_id=None, cseq=None)
    r1, r2 = ApplyResult({}), ApplyResult(state={})
    assert r1 == r2 and r1.removed == set() and r1.written == {}
    assert r1.removed is not r2.removed and r1.written is not r2.written


def test_decision_and_friends() -> None:
    assert Decision("route") == Decision(kind="route", aors=())
    assert Decision("lookup", ("sip:a@b",)) != Decision("lookup")
    assert repr(Decision("lookup", ("x",))) == "Decision(kind='lookup', aors=('x',))"
    assert hash(Decision("local")) == hash(Decision(kind="local"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        Decision("local").kind = "route"  # type: ignore[misc]
    assert Rejection(416) == Rejection(status=416, reason=None, headers=())
    me = LocalIdentity("127.0.0.1", 5060)
    assert me == LocalIdentity(host="127.0.0.1", port=5060, domains=frozenset(),
                               via_port=None, via_ports=frozenset(), rr_secret=b"")
    uri = SipURI(host="h")
    t1, t2 = Target(uri), Target(uri=uri)
    assert t1 == t2 and t1.extra == {} and t1.extra is not t2.extra
    assert Target(uri, extra={"a": "b"}) == t1  # extra: compare=False
    plan = registrar.registrar._Plan("sip:a@b", [], True)
    assert plan.path is None and plan == registrar.registrar._Plan(
        aor="sip:a@b", changes=[], query_only=True, path=None)
