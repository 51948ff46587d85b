"""The four experiments of the lab handbook, as scripts over real sipclient processes.

Each experiment starts its own phones (so a failure cannot leak into the next one and
each recording belongs to one experiment), types commands into them, waits (bounded)
for the state lines the handbook describes and records every observation as a `Step`.
Checks that need the SIP trace (Record-Route, SDP directions, the 302 recursion) are
queued as `TraceCheck`s and run by the report once the processes have flushed their
trace files.
"""

from __future__ import annotations

import re
import shutil
import socket
import time
import wave
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from proxy.lab.audio import TONES, ToneCheck, check_tones, write_tone
from proxy.lab.procs import Client, ExpectFailed, Line, ProcessGroup, Server, dns_answers, sip_ping
from sipcore.trace.reader import Arrow, Call, Trace

__all__ = [
    "EXPERIMENTS",
    "CheckFailed",
    "ExperimentResult",
    "Lab",
    "LabConfig",
    "Progress",
    "Step",
]

DOMAINS = {"alice": "a.lab", "bob": "a.lab", "carol": "b.lab"}
PASSWORDS = {"alice": "alice-secret", "bob": "bob-secret", "carol": "carol-secret"}


class CheckFailed(Exception):
    """An observation that contradicts what the experiment expects."""


class Progress(Protocol):
    def experiment_started(self, number: int, title: str) -> None: ...
    def step(self, number: int, text: str) -> None: ...
    def experiment_finished(self, result: ExperimentResult) -> None: ...
    def message(self, text: str) -> None: ...


@dataclass(slots=True)
class Step:
    """One observation: what was checked, whether it held, and what was seen."""

    title: str
    ok: bool
    detail: str = ""


@dataclass(slots=True)
class MediaRow:
    """One ``status media`` line: a phone's RTP counters for one call."""

    who: str
    call: int
    when: str  # e.g. "before hang-up"
    fields: dict[str, str]


TraceCheck = tuple[str, Callable[[Trace, list[Call]], str]]


@dataclass
class ExperimentResult:
    number: int
    key: str
    title: str
    what: str
    steps: list[Step] = field(default_factory=list)
    transcript: list[Line] = field(default_factory=list)
    media: list[MediaRow] = field(default_factory=list)
    audio: list[ToneCheck] = field(default_factory=list)
    exchanges: list[tuple[str, str]] = field(default_factory=list)  # raw request, answer
    trace_checks: list[TraceCheck] = field(default_factory=list)
    start_us: int = 0
    end_us: int = 0
    ladder: str = ""  # file names in the report folder
    pcap: str = ""
    sip_messages: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.steps) and all(s.ok for s in self.steps)

    @property
    def reason(self) -> str:
        failed = [s for s in self.steps if not s.ok]
        if not self.steps:
            return "no steps ran"
        if not failed:
            return f"{len(self.steps)} checks passed"
        first = failed[0]
        more = f" (+{len(failed) - 1} more)" if len(failed) > 1 else ""
        return f"{first.title}: {first.detail}{more}"


# ---------------------------------------------------------------------------- the lab


@dataclass
class LabConfig:
    """Where the lab listens and how long things take."""

    work: Path  # traces, logs, recordings, generated configs
    ports: dict[str, int]  # a, b, redirect, a_redirect, dns
    host: str = "127.0.0.1"
    talk: float = 3.0  # seconds of audio per talking phase
    ring_timeout: float = 4.0  # bob's --ring-timeout (the 480 case)


class Lab:
    """The servers of the two-domain lab, configured like deploy/lab/lab.sh.

    As in lab.sh, a.lab and b.lab find each other through DNS SRV (a twisted.names
    server with a generated zone, since the ports may not be the lab's fixed ones) and
    the redirect server shares a.lab's location store and routes b.lab. lab.sh's a.lab
    proxy does not consult the redirect server (DNS comes first in its configuration),
    so for the redirect variant of experiment 1 a second a.lab proxy ("a.lab via
    redirect") is started with ``--redirect-server`` and the same store and users.
    The users files are generated for the handbook's cast: alice and bob in a.lab,
    carol in b.lab.
    """

    def __init__(self, config: LabConfig, group: ProcessGroup, progress: Progress) -> None:
        self.config = config
        self.group = group
        self.progress = progress
        self.traces: list[Path] = []
        self.servers: dict[str, Server] = {}
        self.tones: dict[str, Path] = {}
        self.labels: dict[str, str] = {}

    def lane(self, key: str) -> str:
        return f"{self.config.host}:{self.config.ports[key]}"

    def _write_configs(self) -> tuple[Path, Path, Path]:
        work, ports, host = self.config.work, self.config.ports, self.config.host
        a_users = work / "a.lab.users"
        a_users.write_text("# generated by sipcalling-lab (lab passwords only)\n"
                           f"alice@a.lab plain:{PASSWORDS['alice']}\n"
                           f"bob@a.lab plain:{PASSWORDS['bob']}\n")
        b_users = work / "b.lab.users"
        b_users.write_text("# generated by sipcalling-lab (lab passwords only)\n"
                           f"carol@b.lab plain:{PASSWORDS['carol']}\n")
        zone = work / "lab.zone.py"
        # Same records as deploy/lab/lab.zone.py, with this run's ports.
        zone.write_text(
            "# generated by sipcalling-lab from deploy/lab/lab.zone.py\n"
            "zone = [\n"
            "    SOA('lab', mname='ns.lab', rname='root.lab', serial=1,\n"
            "        refresh=3600, retry=600, expire=86400, minimum=60),\n"
            f"    SRV('_sip._udp.a.lab', 0, 0, {ports['a']}, 'sip.a.lab'),\n"
            f"    SRV('_sip._tcp.a.lab', 0, 0, {ports['a']}, 'sip.a.lab'),\n"
            f"    SRV('_sip._udp.b.lab', 0, 0, {ports['b']}, 'sip.b.lab'),\n"
            f"    SRV('_sip._tcp.b.lab', 0, 0, {ports['b']}, 'sip.b.lab'),\n"
            f"    A('sip.a.lab', '{host}'),\n"
            f"    A('sip.b.lab', '{host}'),\n"
            "]\n"
        )
        for name, frequency in TONES.items():
            path = work / f"tone-{name}-{frequency}Hz.wav"
            write_tone(path, frequency)
            self.tones[name] = path
        return a_users, b_users, zone

    def _server(self, key: str, label: str, args: list[str], ready: Callable[[], bool]) -> None:
        self.progress.message(f"starting {label} on {self.lane(key)}")
        trace = self.config.work / f"trace-{key}.jsonl"
        self.traces.append(trace)
        self.labels[self.lane(key)] = label
        server = Server(label, [*args, "--trace", str(trace), "--trace-label", label],
                        self.config.work / f"{key}.log", self.config.work, ready)
        self.group.add(server)
        self.servers[key] = server

    def start(self) -> None:
        self.config.work.mkdir(parents=True, exist_ok=True)
        a_users, b_users, zone = self._write_configs()
        host, ports, work = self.config.host, self.config.ports, self.config.work
        dns = f"{host}:{ports['dns']}"
        # twistd dns has no --trace: it is not SIP. Its own log is kept.
        self.progress.message(f"starting DNS (twisted.names) on {dns}")
        server = Server("dns", ["dns", "--pyzone", str(zone), "-i", host, "-p",
                                str(ports["dns"])], work / "dns.log", work,
                        lambda: dns_answers(ports["dns"], "_sip._udp.b.lab", host))
        self.group.add(server)
        self.servers["dns"] = server

        def sip_ready(key: str) -> Callable[[], bool]:
            return lambda: sip_ping(ports[key], host) is not None

        a_store = f"sqlite:{work / 'a.lab.sqlite'}"
        common = ["--interface", host, "--dns", dns]
        self._server("a", "proxy a.lab", [
            "sipproxy", "--domain", "a.lab", "--port", str(ports["a"]),
            "--location", a_store, "--users", str(a_users), *common], sip_ready("a"))
        self._server("b", "proxy b.lab", [
            "sipproxy", "--domain", "b.lab", "--port", str(ports["b"]),
            "--location", f"sqlite:{work / 'b.lab.sqlite'}", "--users", str(b_users),
            *common], sip_ready("b"))
        self._server("redirect", "redirect a.lab", [
            "sipredirect", "--domain", "a.lab", "--interface", host,
            "--port", str(ports["redirect"]), "--location", a_store,
            "--route", f"b.lab={host}:{ports['b']}"], sip_ready("redirect"))
        self._server("a_redirect", "proxy a.lab via redirect", [
            "sipproxy", "--domain", "a.lab", "--port", str(ports["a_redirect"]),
            "--location", a_store, "--users", str(a_users), "--interface", host,
            "--redirect-server", f"{host}:{ports['redirect']}"], sip_ready("a_redirect"))


# ---------------------------------------------------------------------- one experiment


_FIELD_RE = re.compile(r"(\w+)=(.*?)(?=\s\w+=|$)")


def parse_fields(text: str) -> dict[str, str]:
    """``k=v k=v`` (a value may hold spaces, e.g. the jitter buffer's dict)."""
    return {k: v for k, v in _FIELD_RE.findall(text)}


class Run:
    """The running state of one experiment: its phones, steps and transcript."""

    def __init__(self, lab: Lab, result: ExperimentResult) -> None:
        self.lab = lab
        self.result = result
        self.phones: list[Client] = []
        self.dir = lab.config.work / f"exp{result.number}"
        self.dir.mkdir(parents=True, exist_ok=True)

    # -- phones ---------------------------------------------------------------------
    def _record_line(self, line: Line) -> None:
        self.result.transcript.append(line)  # list.append is atomic: reader threads

    def phones_up(self, *specs: tuple[str, str, list[str]]) -> list[Client]:
        """Start phones (name, proxy key, extra options) in parallel and wait until each
        is ready and, unless ``--no-register``, registered."""
        from proxy.lab.procs import free_port

        cfg = self.lab.config
        started: list[Client] = []
        for name, proxy_key, extra in specs:
            user = name.split("-")[0]
            port = free_port(cfg.host)
            args = ["--domain", DOMAINS[user], "--user", user,
                    "--password", PASSWORDS[user],
                    "--proxy", f"{cfg.host}:{cfg.ports[proxy_key]}",
                    "--interface", cfg.host, "--port", str(port),
                    "--play", str(self.lab.tones[user]),
                    "--record", str(self.dir / f"{name}.rec.wav"), *extra]
            trace = self.dir / f"trace-{name}.jsonl"
            self.lab.traces.append(trace)
            client = Client(name, args, trace, self.dir / f"{name}.log", self.dir,
                            self._record_line)
            self.lab.group.add(client)
            started.append(client)
        for client in started:
            client.started()
            self.lab.labels[f"{cfg.host}:{client.sip_port}"] = client.name
            if "--no-register" not in client.command:
                user = client.name.split("-")[0]
                self.expect(client, rf"registered sip:{user}@{DOMAINS[user]}",
                            f"{client.name} registers with {DOMAINS[user]}")
        self.phones.extend(started)
        return started

    def lane(self, client: Client) -> str:
        return f"{self.lab.config.host}:{client.sip_port}"

    # -- observations -----------------------------------------------------------------
    def ok(self, title: str, detail: str = "") -> None:
        self.result.steps.append(Step(title, True, detail))

    def fail(self, title: str, detail: str) -> None:
        self.result.steps.append(Step(title, False, detail))

    def send(self, client: Client, command: str) -> None:
        self.lab.progress.step(self.result.number, f"{client.name} < {command}")
        client.send(command)

    def expect(self, client: Client, pattern: str, title: str, timeout: float = 10.0) -> str:
        try:
            line = client.expect(pattern, timeout)
        except ExpectFailed as err:
            raise CheckFailed(f"{title} — {err}") from None
        self.ok(title, f"{client.name}: {line}")
        return line

    def new_call(self, client: Client, command: str, title: str) -> int:
        """Send ``call URI``; the number the phone gave the call."""
        self.send(client, command)
        line = self.expect(client, r"call \d+ outgoing ", title)
        return int(line.split()[1])

    def incoming(self, client: Client, caller: str, title: str, timeout: float = 10.0) -> int:
        line = self.expect(client, rf"call \d+ incoming sip:{re.escape(caller)}", title,
                           timeout)
        return int(line.split()[1])

    def status(self, client: Client, when: str) -> dict[int, dict[str, str]]:
        """Ask ``status``; keep the media lines (RTP statistics) in the result."""
        self.send(client, "status")
        lines = client.collect(r"status ")
        found: dict[int, dict[str, str]] = {}
        for line in lines:
            words = line.split(maxsplit=3)
            if len(words) >= 3 and words[1] == "media" and words[2].isdigit():
                fields = parse_fields(words[3] if len(words) > 3 else "")
                number = int(words[2])
                found[number] = fields
                self.result.media.append(MediaRow(client.name, number, when, fields))
        return found

    def talk(self, seconds: float | None = None) -> None:
        seconds = self.lab.config.talk if seconds is None else seconds
        self.lab.progress.step(self.result.number, f"talking for {seconds:g} s")
        time.sleep(seconds)

    def check_rtp(self, a: Client, a_stats: dict[str, str], b: Client,
                  b_stats: dict[str, str]) -> None:
        """Both ends received RTP, each sending straight to the other's RTP port
        (no relay: the proxies only carry SIP)."""
        for who, stats in ((a, a_stats), (b, b_stats)):
            received = int(stats.get("packets_received", "0") or 0)
            if received <= 0:
                raise CheckFailed(f"{who.name} received no RTP (status: {stats or 'none'})")
        for me, mine, peer, theirs in ((a, a_stats, b, b_stats), (b, b_stats, a, a_stats)):
            want = f"{self.lab.config.host}:{theirs.get('local_port')}"
            if mine.get("remote") != want:
                raise CheckFailed(f"{me.name} sends RTP to {mine.get('remote')}, "
                                  f"not to {peer.name}'s RTP port {want}")
        self.ok(f"RTP flows point to point between {a.name} and {b.name}",
                f"{a.name} {a_stats.get('local_port')} ⇄ {b.name} {b_stats.get('local_port')}; "
                f"received {a_stats.get('packets_received')} / "
                f"{b_stats.get('packets_received')} packets, codec {a_stats.get('codec')}")

    def snapshot(self, client: Client, name: str) -> Path:
        """Copy the phone's recording once its session closed it (the header's sizes
        are only right after close), so a later call cannot overwrite it."""
        source = self.dir / f"{client.name}.rec.wav"
        target = self.dir / f"{name}.wav"
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            try:
                with wave.open(str(source), "rb") as w:
                    if w.getnframes() > 0:
                        break
            except (OSError, EOFError, wave.Error):
                pass
            time.sleep(0.1)
        if source.exists():
            shutil.copyfile(source, target)
        return target

    def hears(self, recording: Path, expected: list[str], title: str) -> None:
        check = check_tones(recording, expected)
        # Relative to the report folder (the work folder is its run/), for links.
        check.recording = str(recording.relative_to(self.lab.config.work.parent))
        self.result.audio.append(check)
        if check.ok:
            self.ok(title, check.describe())
        else:
            self.fail(title, check.describe())

    def trace_check(self, title: str, check: Callable[[Trace, list[Call]], str]) -> None:
        self.result.trace_checks.append((title, check))

    @contextmanager
    def scenario(self, title: str) -> Iterator[None]:
        """A part of the experiment; a failed check ends this part only, after which
        every phone hangs up whatever it still has."""
        self.lab.progress.step(self.result.number, title)
        self.ok(f"— {title}")
        try:
            yield
        except (CheckFailed, ExpectFailed) as err:
            self.fail(title, str(err))
            self.cleanup()

    def cleanup(self) -> None:
        for client in self.phones:
            if not client.alive():
                continue
            try:
                client.send("status")
                for line in client.collect(r"status call ", settle=0.3, timeout=2):
                    number = line.split()[2]
                    client.send(f"hangup {number}")
            except ExpectFailed:
                continue
        time.sleep(0.5)

    def stop_phones(self) -> None:
        for client in self.phones:
            client.quit(timeout=5)


# ------------------------------------------------------------------------ trace helpers


def _method(a: Arrow) -> str:
    cseq = a.cseq
    return cseq[1] if cseq else ""


def _calls_between(calls: list[Call], caller: str, callee: str) -> list[Call]:
    out = []
    for call in calls:
        first = call.first_request
        if first is None or _method(first) != "INVITE":
            continue
        msg = first.message
        if getattr(msg.from_.uri, "user", None) == caller and \
                getattr(msg.to.uri, "user", None) == callee:
            out.append(call)
    return out


def _one_call(calls: list[Call], caller: str, callee: str, nth: int = 0) -> Call:
    found = _calls_between(calls, caller, callee)
    if len(found) <= nth:
        raise CheckFailed(f"no INVITE dialog {caller} → {callee} in the trace")
    return found[nth]


def _hop(call: Call, method: str, src: str, dst: str, requests: bool = True) -> Arrow:
    for a in call.arrows:
        if a.is_request == requests and _method(a) == method and a.src == src and a.dst == dst:
            return a
    raise CheckFailed(f"no {method} from {src} to {dst} in the trace")


# ---------------------------------------------------------------------- the experiments


def experiment_1(run: Run) -> None:
    lab = run.lab
    alice, bob, carol = run.phones_up(
        ("alice", "a", []), ("bob", "a", ["--auto-answer"]), ("carol", "b", ["--auto-answer"]))
    a_lane, a_redirect_lane = lab.lane("a"), lab.lane("a_redirect")

    def talk_and_hang_up(caller: Client, callee: Client, n_caller: int, n_callee: int,
                         tag: str) -> None:
        run.talk()
        mine = run.status(caller, "before hang-up").get(n_caller, {})
        theirs = run.status(callee, "before hang-up").get(n_callee, {})
        run.check_rtp(caller, mine, callee, theirs)
        run.send(caller, f"hangup {n_caller}")
        run.expect(caller, rf"call {n_caller} ended hangup", f"{caller.name} hangs up")
        run.expect(callee, rf"call {n_callee} ended bye", f"{callee.name} sees the BYE")
        for me, peer in ((caller, callee), (callee, caller)):
            wav = run.snapshot(me, f"{tag}-{me.name}")
            run.hears(wav, [peer.name.split("-")[0]],
                      f"{me.name}'s recording holds {peer.name.split('-')[0]}'s tone")

    with run.scenario("alice calls bob in the same domain, through the a.lab proxy"):
        n = run.new_call(alice, "call bob", "alice calls sip:bob@a.lab")
        m = run.incoming(bob, "alice@a.lab", "bob's phone rings (auto-answer)")
        run.expect(bob, rf"call {m} connected", "bob answers")
        run.expect(alice, rf"call {n} connected", "alice is connected")
        talk_and_hang_up(alice, bob, n, m, "alice-bob")
        bob_lane, alice_lane = run.lane(bob), run.lane(alice)

        def record_route(trace: Trace, calls: list[Call]) -> str:
            call = _one_call(calls, "alice", "bob")
            for method in ("ACK", "BYE"):
                _hop(call, method, alice_lane, a_lane)
                _hop(call, method, a_lane, bob_lane)
            if not any(a.message.headers.get("Record-Route") for a in call.arrows):
                raise CheckFailed("no Record-Route header in the dialog")
            return "Record-Route: ACK and BYE went alice → proxy a.lab → bob"

        run.trace_check("ACK and BYE pass the a.lab proxy (Record-Route)", record_route)

    with run.scenario("alice calls carol@b.lab: a.lab finds b.lab by DNS SRV"):
        n = run.new_call(alice, "call carol@b.lab", "alice calls sip:carol@b.lab")
        m = run.incoming(carol, "alice@a.lab", "carol's phone rings in b.lab")
        run.expect(carol, rf"call {m} connected", "carol answers")
        run.expect(alice, rf"call {n} connected", "alice is connected across domains")
        talk_and_hang_up(alice, carol, n, m, "alice-carol-dns")
        b_lane = lab.lane("b")

        def via_dns(trace: Trace, calls: list[Call]) -> str:
            call = _one_call(calls, "alice", "carol", 0)
            _hop(call, "INVITE", a_lane, b_lane)
            for method in ("ACK", "BYE"):
                _hop(call, method, a_lane, b_lane)
            if any(lab.lane("redirect") in (a.src, a.dst) for a in call.arrows):
                raise CheckFailed("the redirect server took part, expected DNS SRV")
            return "INVITE, ACK and BYE went proxy a.lab → proxy b.lab (found by SRV)"

        run.trace_check("a.lab reached b.lab by DNS SRV (no redirect server)", via_dns)

    with run.scenario("alice calls carol@b.lab through the redirect server (302, recursion)"):
        (alice_r,) = run.phones_up(("alice-via-redirect", "a_redirect", ["--no-register"]))
        n = run.new_call(alice_r, "call carol@b.lab",
                         "alice (phone set to the redirect-using proxy) calls carol@b.lab")
        m = run.incoming(carol, "alice@a.lab", "carol's phone rings in b.lab")
        run.expect(carol, rf"call {m} connected", "carol answers")
        line = run.expect(alice_r, rf"call {n} (connected|redirected)", "alice is connected")
        if "redirected" in line:
            raise CheckFailed("the 302 reached alice: the proxy should recurse itself")
        talk_and_hang_up(alice_r, carol, n, m, "alice-carol-redirect")
        redirect_lane, b_lane = lab.lane("redirect"), lab.lane("b")
        ar_lane = run.lane(alice_r)

        def via_redirect(trace: Trace, calls: list[Call]) -> str:
            call = _one_call(calls, "alice", "carol", 1)
            _hop(call, "INVITE", a_redirect_lane, redirect_lane)
            moved = _hop(call, "INVITE", redirect_lane, a_redirect_lane, requests=False)
            status = moved.message.status  # type: ignore[union-attr]
            if status != 302:
                raise CheckFailed(f"the redirect server answered {status}, not 302")
            _hop(call, "INVITE", a_redirect_lane, b_lane)
            if any(not a.is_request and a.dst == ar_lane
                   and a.message.status == 302 for a in call.arrows):  # type: ignore[union-attr]
                raise CheckFailed("the 302 was passed on to alice")
            return "INVITE → redirect server, 302 back, the proxy recursed to proxy b.lab"

        run.trace_check("302 from the redirect server, followed by the proxy", via_redirect)


def _raw_bad_request(run: Run) -> None:
    """A request with a broken CSeq, sent from a raw UDP socket: the proxy must answer
    400 and keep running."""
    cfg = run.lab.config
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3.0)
        s.bind((cfg.host, 0))
        port = s.getsockname()[1]
        request = (
            "INVITE sip:bob@a.lab SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {cfg.host}:{port};branch=z9hG4bKlab400{time.monotonic_ns()}\r\n"
            "Max-Forwards: 70\r\n"
            "From: <sip:lab-runner@a.lab>;tag=lab400\r\n"
            "To: <sip:bob@a.lab>\r\n"
            f"Call-ID: lab-bad-request-{time.time_ns()}\r\n"
            "CSeq: one INVITE\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        s.sendto(request.encode(), (cfg.host, cfg.ports["a"]))
        try:
            answer = s.recv(65535).decode("utf-8", "replace")
        except TimeoutError:
            run.result.exchanges.append((request, "(no answer within 3 s)"))
            raise CheckFailed("the a.lab proxy did not answer the malformed request") from None
    run.result.exchanges.append((request, answer))
    first = answer.split("\r\n", 1)[0]
    if not first.startswith("SIP/2.0 400"):
        raise CheckFailed(f"expected 400, the proxy answered {first!r}")
    run.ok("the proxy answers 400 to a request with a malformed CSeq", first)
    if sip_ping(cfg.ports["a"], cfg.host, timeout=2.0) is None:
        raise CheckFailed("the a.lab proxy stopped answering after the malformed request")
    run.ok("the proxy still answers OPTIONS afterwards")


def experiment_2(run: Run) -> None:
    ring = run.lab.config.ring_timeout
    alice, bob, carol = run.phones_up(
        ("alice", "a", []),
        ("bob", "a", ["--busy-when-in-call", "--ring-timeout", f"{ring:g}"]),
        ("carol", "b", []))
    finals: list[str] = []

    with run.scenario("486 Busy Here: carol calls bob while bob talks to alice"):
        n = run.new_call(alice, "call bob", "alice calls bob")
        m = run.incoming(bob, "alice@a.lab", "bob's phone rings")
        run.send(bob, f"answer {m}")
        run.expect(alice, rf"call {n} connected", "alice and bob talk")
        k = run.new_call(carol, "call bob@a.lab", "carol calls bob@a.lab (--busy-when-in-call)")
        run.expect(carol, rf"call {k} ended 486 Busy Here", "carol gets 486 Busy Here")
        finals.append("486")
        run.send(alice, f"hangup {n}")
        run.expect(alice, rf"call {n} ended hangup", "alice hangs up")
        run.expect(bob, rf"call {m} ended bye", "bob sees the BYE")

    with run.scenario(f"480 no answer: bob lets it ring ({ring:g} s ring timeout)"):
        n = run.new_call(alice, "call bob", "alice calls bob")
        m = run.incoming(bob, "alice@a.lab", "bob's phone rings; nobody answers")
        run.expect(alice, rf"call {n} ringing", "alice hears ringing (180)")
        run.expect(alice, rf"call {n} ended 480 Temporarily Unavailable",
                   "alice gets 480 Temporarily Unavailable", timeout=ring + 8)
        run.expect(bob, rf"call {m} ended ", "bob's phone stops ringing")
        finals.append("480")

    with run.scenario("404 Not Found: alice calls a user a.lab does not know"):
        n = run.new_call(alice, "call nobody", "alice calls sip:nobody@a.lab")
        run.expect(alice, rf"call {n} ended 404 Not Found", "alice gets 404 Not Found")
        finals.append("404")

    with run.scenario("487 Request Terminated: alice hangs up while it rings (CANCEL)"):
        n = run.new_call(alice, "call bob", "alice calls bob")
        m = run.incoming(bob, "alice@a.lab", "bob's phone rings")
        run.expect(alice, rf"call {n} ringing", "alice hears ringing")
        run.send(alice, f"hangup {n}")
        run.expect(alice, rf"call {n} ended 487 Request Terminated",
                   "alice's INVITE ends with 487 Request Terminated")
        run.expect(bob, rf"call {m} ended cancelled", "bob's phone sees the CANCEL")
        finals.append("487")

    with run.scenario("603 Decline: bob rejects the call"):
        n = run.new_call(alice, "call bob", "alice calls bob")
        m = run.incoming(bob, "alice@a.lab", "bob's phone rings")
        run.send(bob, f"reject {m}")
        run.expect(alice, rf"call {n} ended 603 Decline", "alice gets 603 Decline")
        run.expect(bob, rf"call {m} ended ", "bob's call ends")
        finals.append("603")

    with run.scenario("400 Bad Request: a malformed request from a raw UDP socket"):
        _raw_bad_request(run)
        finals.append("400")

    expected = list(finals)

    def statuses(trace: Trace, calls: list[Call]) -> str:
        seen = {str(a.message.status) for c in calls for a in c.arrows  # type: ignore[union-attr]
                if not a.is_request}
        missing = [s for s in expected if s not in seen]
        if missing:
            raise CheckFailed(f"not in the trace: {', '.join(missing)}")
        return "final responses in the trace: " + ", ".join(expected)

    run.trace_check("every failure response is in the SIP trace", statuses)


def experiment_3(run: Run) -> None:
    alice, bob, carol = run.phones_up(("alice", "a", []), ("bob", "a", []), ("carol", "b", []))
    with run.scenario("A (alice) and B (bob) talk"):
        n = run.new_call(alice, "call bob", "alice calls bob")
        ab = run.incoming(bob, "alice@a.lab", "bob's phone rings")
        run.send(bob, f"answer {ab}")
        run.expect(alice, rf"call {n} connected", "alice is connected")
        run.expect(bob, rf"call {ab} connected", "bob is connected")
        run.talk()
    with run.scenario("C (carol) calls B; B holds A and answers C"):
        k = run.new_call(carol, "call bob@a.lab", "carol calls bob@a.lab")
        cb = run.incoming(bob, "carol@b.lab", "bob sees a second incoming call")
        run.send(bob, f"hold {ab}")
        run.expect(bob, rf"call {ab} held", "bob holds alice (re-INVITE a=sendonly)")
        run.expect(alice, rf"call {n} remote-held", "alice is held")
        run.send(bob, f"answer {cb}")
        run.expect(bob, rf"call {cb} connected", "bob answers carol")
        run.expect(carol, rf"call {k} connected", "carol is connected")
        run.talk()
        run.status(alice, "on hold")
        stats = run.status(bob, "talking to carol, alice held")
        run.status(carol, "before hang-up")
        held = stats.get(ab, {}).get("direction")
        if held not in (None, "sendonly", "inactive"):
            raise CheckFailed(f"bob's media for the held call is {held!r}, not sendonly")
        run.ok("bob's held call has media direction sendonly", f"direction={held}")
        run.send(bob, f"hangup {cb}")
        run.expect(bob, rf"call {cb} ended hangup", "bob hangs up with carol")
        run.expect(carol, rf"call {k} ended bye", "carol sees the BYE")
        run.hears(run.snapshot(carol, "carol"), ["bob"], "carol's recording holds bob's tone")
    with run.scenario("B resumes A; A hangs up"):
        run.send(bob, f"resume {ab}")
        run.expect(bob, rf"call {ab} resumed", "bob resumes alice (re-INVITE a=sendrecv)")
        run.expect(alice, rf"call {n} remote-resumed", "alice is taken off hold")
        run.talk()
        mine = run.status(alice, "before hang-up").get(n, {})
        theirs = run.status(bob, "before hang-up").get(ab, {})
        run.check_rtp(alice, mine, bob, theirs)
        run.send(alice, f"hangup {n}")
        run.expect(alice, rf"call {n} ended hangup", "alice hangs up")
        run.expect(bob, rf"call {ab} ended bye", "bob sees the BYE")
        run.hears(run.snapshot(alice, "alice"), ["bob"], "alice's recording holds bob's tone")
        run.result.notes.append(
            "bob's recording is not checked: sipclient --record writes every call of a "
            "process to the same file, so bob's two calls overwrite each other.")
    bob_lane = run.lane(bob)

    def hold_sdp(trace: Trace, calls: list[Call]) -> str:
        call = _one_call(calls, "alice", "bob")
        reinvites = [a for a in call.arrows if a.is_request and _method(a) == "INVITE"
                     and a.src == bob_lane and a.sdp is not None]
        directions = [a.sdp.direction for a in reinvites if a.sdp is not None]
        if "sendonly" not in directions:
            raise CheckFailed(f"no re-INVITE from bob with a=sendonly (saw {directions})")
        after = directions[directions.index("sendonly") + 1:]
        if "sendrecv" not in after:
            raise CheckFailed(f"no re-INVITE with a=sendrecv after the hold (saw {directions})")
        answers = [a.sdp.direction for a in call.arrows if not a.is_request
                   and a.sdp is not None and a.dst == bob_lane and _method(a) == "INVITE"]
        if "recvonly" not in answers and "inactive" not in answers:
            raise CheckFailed(f"alice never answered the hold with recvonly (saw {answers})")
        return f"bob's re-INVITEs: {' → '.join(directions)}; alice's answers include recvonly"

    run.trace_check("SDP directions of hold and resume in the trace", hold_sdp)


def experiment_4(run: Run) -> None:
    alice, bob, carol = run.phones_up(
        ("alice", "a", []), ("bob", "a", ["--auto-answer"]), ("carol", "b", ["--auto-answer"]))
    calls: dict[str, int] = {}
    with run.scenario("A calls B, holds B, calls C"):
        n1 = run.new_call(alice, "call bob", "alice calls bob")
        calls["bob"] = run.incoming(bob, "alice@a.lab", "bob answers at once")
        run.expect(alice, rf"call {n1} connected", "alice and bob talk")
        run.send(alice, f"hold {n1}")
        run.expect(alice, rf"call {n1} held", "alice holds bob")
        run.expect(bob, rf"call {calls['bob']} remote-held", "bob is held")
        n2 = run.new_call(alice, "call carol@b.lab", "alice calls carol@b.lab")
        calls["carol"] = run.incoming(carol, "alice@a.lab", "carol answers at once")
        run.expect(alice, rf"call {n2} connected", "alice and carol talk")
    conferenced = False
    with run.scenario("A joins both calls: conference"):
        run.send(alice, "conference")
        line = run.expect(alice, r"(conference on \d+,\d+|error: )",
                          "alice's phone answers the conference command")
        if line.startswith("error"):
            raise CheckFailed(f"the conference command was refused: {line!r}")
        conferenced = True
        run.expect(bob, rf"call {calls['bob']} remote-resumed",
                   "bob is taken off hold (the mixer resumes the held call)")
        run.talk(run.lab.config.talk * 1.5)
        a_stats = run.status(alice, "in the conference")
        for name in ("bob", "carol"):
            got = run.status(bob if name == "bob" else carol, "in the conference")
            received = int(got.get(calls[name], {}).get("packets_received", "0") or 0)
            if received <= 0:
                raise CheckFailed(f"{name} received no RTP in the conference")
        for number, stats in a_stats.items():
            if int(stats.get("packets_received", "0") or 0) <= 0:
                raise CheckFailed(f"alice received no RTP on call {number}")
        run.ok("everyone receives RTP", f"alice's calls: {sorted(a_stats)}")
    with run.scenario("A leaves: B and C see BYE"):
        run.send(alice, "quit")
        run.expect(bob, rf"call {calls['bob']} ended bye", "bob sees alice's BYE")
        run.expect(carol, rf"call {calls['carol']} ended bye", "carol sees alice's BYE")
    if conferenced:
        run.hears(run.snapshot(bob, "bob"), ["alice", "carol"],
                  "bob hears alice and carol (mixed by alice)")
        run.hears(run.snapshot(carol, "carol"), ["alice", "bob"],
                  "carol hears alice and bob (mixed by alice)")
        run.result.notes.append(
            "alice's own recording is not checked: with two calls sipclient --record "
            "writes both to the same file.")


@dataclass(frozen=True, slots=True)
class ExperimentSpec:
    number: int
    key: str
    title: str
    what: str
    body: Callable[[Run], None]


EXPERIMENTS: list[ExperimentSpec] = [
    ExperimentSpec(1, "establishment", "Call establishment",
                   "alice and bob register with a.lab, carol with b.lab. alice calls bob "
                   "(same domain, Record-Route keeps the proxy in the dialog), then carol "
                   "in b.lab, found by DNS SRV, then carol again through a proxy that "
                   "asks the redirect server (302, recursion). RTP goes point to point.",
                   experiment_1),
    ExperimentSpec(2, "failures", "Busy and failures",
                   "486 Busy Here, 480 no answer (ring timeout), 404 unknown user, "
                   "487 after CANCEL, 603 Decline, and 400 for a malformed request.",
                   experiment_2),
    ExperimentSpec(3, "hold", "Call hold",
                   "A and B talk; C calls B; B holds A (re-INVITE sendonly), answers C, "
                   "hangs up with C, resumes A; A hangs up.",
                   experiment_3),
    ExperimentSpec(4, "conference", "Conferencing",
                   "A talks with B and C (one call held), joins them with `conference`; "
                   "everyone hears everyone through A's N-1 mixer; A leaves and B and C "
                   "see BYE.",
                   experiment_4),
]


def run_experiment(lab: Lab, spec: ExperimentSpec) -> ExperimentResult:
    result = ExperimentResult(spec.number, spec.key, spec.title, spec.what)
    lab.progress.experiment_started(spec.number, spec.title)
    result.start_us = time.time_ns() // 1000
    run = Run(lab, result)
    try:
        spec.body(run)
    except (CheckFailed, ExpectFailed) as err:
        run.fail("setup", str(err))
    except Exception as err:  # noqa: BLE001 - one broken experiment must not stop the rest
        run.fail("runner error", f"{type(err).__name__}: {err}")
    finally:
        run.stop_phones()
        result.end_us = time.time_ns() // 1000
    return result
