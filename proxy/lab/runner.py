"""``sipcalling-lab``: run the four lab experiments and write a report.

    sipcalling-lab [--out DIR] [--base-port N | --free-ports] [--quick]
                   [--only 1,3] [--host 127.0.0.1]

Ports: by default the lab's own (a.lab 5060, b.lab 5070, redirect 5080, DNS 5353, as
deploy/lab/lab.sh; plus 5090 for the a.lab proxy that uses the redirect server);
``--base-port N`` shifts them to N, N+10, N+20, N+30 and N+293 (DNS); ``--free-ports``
takes any free ports, for CI next to other tests. Phones always take free ports.

Exit status: 0 when every experiment passed, 1 when one failed, 2 when the lab could
not start (bad options, ports taken, a server that does not come up), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

from proxy.lab.experiments import (
    EXPERIMENTS,
    ExperimentResult,
    Lab,
    LabConfig,
    run_experiment,
)
from proxy.lab.procs import ProcessGroup, free_port, port_is_free
from proxy.lab.report import apply_traces, write_report

__all__ = ["main"]

LAB_PORTS = {"a": 5060, "b": 5070, "redirect": 5080, "a_redirect": 5090, "dns": 5353}
OFFSETS = {"a": 0, "b": 10, "redirect": 20, "a_redirect": 30, "dns": 293}
SERVER_NAMES = {"a": "proxy a.lab", "b": "proxy b.lab", "redirect": "redirect server",
                "a_redirect": "proxy a.lab via redirect", "dns": "DNS (twisted.names)"}


# ------------------------------------------------------------------------ progress


def _live_reason(result: ExperimentResult) -> str:
    # The trace checks run once the lab is down (the trace files are complete only
    # then), so a live verdict is provisional when some are still to come.
    if result.passed and result.trace_checks:
        return f"{result.reason}; {len(result.trace_checks)} trace checks at the end"
    return result.reason


class PlainProgress:
    """One line per event, for logs and pipes (no TTY)."""

    def __init__(self, out: Any = None) -> None:
        self.out = out or sys.stdout

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def experiment_started(self, number: int, title: str) -> None:
        self._say(f"[{number}] {title}")

    def step(self, number: int, text: str) -> None:
        self._say(f"[{number}]   {text}")

    def experiment_finished(self, result: ExperimentResult) -> None:
        self._say(f"[{result.number}] {'PASS' if result.passed else 'FAIL'}: "
                  f"{_live_reason(result)}")

    def message(self, text: str) -> None:
        self._say(f"lab: {text}")

    def close(self) -> None:
        pass


class RichProgress:
    """A live table (rich) of the experiments with the current step of the running one."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console()
        self.state: dict[int, tuple[str, str]] = {
            spec.number: ("pending", "") for spec in EXPERIMENTS
        }
        self.titles = {spec.number: spec.title for spec in EXPERIMENTS}
        self.last_message = ""
        self.started = time.monotonic()
        self.live = Live(self._render(), console=self.console, refresh_per_second=8,
                         transient=False)
        self.live.start()

    def _render(self) -> Any:
        from rich.table import Table

        table = Table(title="sipcalling lab", expand=False)
        table.add_column("#")
        table.add_column("experiment")
        table.add_column("state")
        table.add_column("now / why", overflow="fold", max_width=80)
        styles = {"pending": "dim", "running": "yellow", "PASS": "green", "FAIL": "red"}
        for number, (state, text) in self.state.items():
            style = styles.get(state, "")
            table.add_row(str(number), self.titles[number], f"[{style}]{state}[/]", text)
        table.caption = f"{time.monotonic() - self.started:.0f} s · {self.last_message}"
        return table

    def _update(self) -> None:
        self.live.update(self._render())

    def experiment_started(self, number: int, title: str) -> None:
        self.state[number] = ("running", "starting phones")
        self._update()

    def step(self, number: int, text: str) -> None:
        self.state[number] = ("running", text)
        self._update()

    def experiment_finished(self, result: ExperimentResult) -> None:
        state = "PASS" if result.passed else "FAIL"
        self.state[result.number] = (state, _live_reason(result))
        self._update()

    def message(self, text: str) -> None:
        self.last_message = text
        self._update()

    def close(self) -> None:
        self.live.stop()


def make_progress(plain: bool) -> PlainProgress | RichProgress:
    if not plain and sys.stdout.isatty():
        try:
            return RichProgress()
        except ImportError:
            pass  # rich is optional at run time: fall back to plain lines
    return PlainProgress()


# ------------------------------------------------------------------------ options


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sipcalling-lab",
        description="Bring up the two-domain lab, run the four experiments with scripted "
        "sipclients, write a report (index.html, ladders, pcaps, RTP statistics).",
    )
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="report folder (default var/lab-report/<timestamp>/)")
    ports = p.add_mutually_exclusive_group()
    ports.add_argument("--base-port", type=int, metavar="N",
                       help="a.lab on N, b.lab N+10, redirect N+20, a.lab-via-redirect N+30, "
                       "DNS N+293 (default: the lab's 5060/5070/5080/5090/5353)")
    ports.add_argument("--free-ports", action="store_true",
                       help="pick free ports (for CI next to other tests)")
    p.add_argument("--host", default="127.0.0.1", help="loopback address (default 127.0.0.1)")
    p.add_argument("--quick", action="store_true",
                   help="the test-sized run: shorter talk and ring times")
    p.add_argument("--only", metavar="N[,N...]", help="run only these experiments")
    p.add_argument("--plain", action="store_true", help="plain progress lines even on a TTY")
    return p


def choose_ports(args: argparse.Namespace) -> dict[str, int]:
    if args.free_ports:
        chosen: dict[str, int] = {}
        for key in LAB_PORTS:
            port = free_port(args.host)
            while port in chosen.values():
                port = free_port(args.host)
            chosen[key] = port
        return chosen
    if args.base_port is not None:
        if not 1024 <= args.base_port <= 65535 - max(OFFSETS.values()):
            raise ValueError(f"--base-port {args.base_port} out of range")
        return {k: args.base_port + off for k, off in OFFSETS.items()}
    return dict(LAB_PORTS)


def _only(text: str | None) -> list[int]:
    if not text:
        return [spec.number for spec in EXPERIMENTS]
    numbers = []
    for part in text.split(","):
        if not part.strip().isdigit() or int(part) not in {s.number for s in EXPERIMENTS}:
            raise ValueError(f"--only: no experiment {part!r} (1-4)")
        numbers.append(int(part))
    return numbers


class _Stop(BaseException):
    """SIGTERM: unwind like Ctrl-C so that the finally blocks stop the children (a
    BaseException, so that an experiment's catch-all does not swallow it)."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Stop()


# ------------------------------------------------------------------------ main


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        ports = choose_ports(args)
        only = _only(args.only)
    except ValueError as err:
        parser.exit(2, f"sipcalling-lab: error: {err}\n")
    taken = [f"{SERVER_NAMES[k]} {p}" for k, p in ports.items() if not port_is_free(p, args.host)]
    if taken:
        print(f"sipcalling-lab: error: ports in use on {args.host}: {', '.join(taken)} "
              "(deploy/lab/lab.sh down? or use --free-ports / --base-port N)", file=sys.stderr)
        return 2
    out = args.out or Path("var/lab-report") / datetime.now().strftime("%Y%m%d-%H%M%S")
    out = out.resolve()
    work = out / "run"
    try:
        work.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        print(f"sipcalling-lab: error: cannot create {out}: {err.strerror}", file=sys.stderr)
        return 2
    config = LabConfig(work=work, ports=ports, host=args.host,
                       talk=1.5 if args.quick else 6.0,
                       ring_timeout=2.0 if args.quick else 6.0)
    progress = make_progress(args.plain)
    group = ProcessGroup()
    lab = Lab(config, group, progress)
    results: list[ExperimentResult] = []
    started = time.monotonic()
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    status = 0
    try:
        try:
            lab.start()
        except (RuntimeError, OSError) as err:
            progress.close()
            print(f"sipcalling-lab: error: the lab did not start: {err}", file=sys.stderr)
            return 2
        progress.message("lab up; " + ", ".join(
            f"{SERVER_NAMES[k]} {args.host}:{p}" for k, p in ports.items()))
        for spec in EXPERIMENTS:
            if spec.number not in only:
                continue
            result = run_experiment(lab, spec)
            results.append(result)
            progress.experiment_finished(result)
    except (KeyboardInterrupt, _Stop):
        status = 130
    finally:
        progress.message("stopping the lab")
        group.stop_all()
        signal.signal(signal.SIGTERM, previous)
        progress.close()
    if status:
        print(f"sipcalling-lab: interrupted; stopped {len(group.pids())} processes",
              file=sys.stderr)
        return status
    warnings: list[str] = []
    apply_traces(results, lab.traces, out, warnings)
    meta = {
        "mode": "quick" if args.quick else "full",
        "seconds": time.monotonic() - started,
        "host": args.host,
        "ports": ports,
        "servers": {SERVER_NAMES[k]: f"{args.host}:{p}" for k, p in ports.items()},
        "trace_warnings": warnings[:20],
    }
    index = write_report(out, results, meta)
    for result in results:
        verdict = "PASS" if result.passed else "FAIL"
        print(f"{verdict} {result.number}. {result.title}: {result.reason}")
    print(f"report: {index}")
    return 0 if results and all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
