"""Which build of the hot path runs: mypyc-compiled extension modules or the sources.

`make compiled` (deploy/compile.py) compiles the modules in `MODULES` with mypyc into
extension modules next to their sources, and writes `MANIFEST`: the SHA-256 of every
source it compiled. Python's import system prefers an extension module to a `.py` of
the same name, so once built, the compiled hot path is what runs (about 2x faster
per message; docs/performance.md has the figures).

The sources stay the reference. They are imported instead of the extensions when

- `SIPCALLING_INTERPRETED=1` is set (the test suite runs part of itself this way), or
- any source differs from what was compiled (someone edited it and has not run
  `make compiled`): a stale extension must never run in place of the code one reads.

It is all or nothing: compiled modules call each other's native classes directly, so
one source module among compiled ones would not work. `sipcore/__init__.py` calls
`choose()` before any of these modules can be imported.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent

#: The proxy's and registrar's per-message path (bench/hotpath.py profile), in import
#: order. Package `__init__` modules stay interpreted (this module is one's caller).
MODULES = (
    "sipcore.status",
    "sipcore.ids",
    "sipcore.uri",
    "sipcore.headers",
    "sipcore.message",
    "sipcore.transaction.timers",
    "sipcore.transaction.keys",
    "sipcore.transaction.sent",
    "sipcore.transaction.due",
    "sipcore.transaction.base",
    "sipcore.transaction.client_invite",
    "sipcore.transaction.client_non_invite",
    "sipcore.transaction.server_invite",
    "sipcore.transaction.server_non_invite",
    "sipcore.transaction.table",
    "sipcore.twisted.protection",
    "sipcore.twisted.transport",
    "sipcore.twisted.stack",
    "registrar.location.binding",
    "registrar.location.memory",
    "registrar.location.replicated",
    "registrar.registrar",
    "proxy.validation",
    "proxy.routing",
    "proxy.forking",
    "proxy.core",
)

#: SIPCALLING_COMPILED_MANIFEST names another record (the tests make stale ones).
MANIFEST = Path(os.environ.get("SIPCALLING_COMPILED_MANIFEST")
                or ROOT / "build" / "compiled.json")


def source_path(module: str) -> Path:
    return ROOT.joinpath(*module.split(".")).with_suffix(".py")


def extension_paths(module: str) -> list[Path]:
    source = source_path(module)
    return [
        source.with_name(source.stem + suffix)
        for suffix in importlib.machinery.EXTENSION_SUFFIXES
        if source.with_name(source.stem + suffix).exists()
    ]


def source_digests(modules: Sequence[str] = MODULES) -> dict[str, str]:
    return {m: hashlib.sha256(source_path(m).read_bytes()).hexdigest() for m in modules}


def status(manifest: Path = MANIFEST, honour_env: bool = True) -> str:
    """"compiled", "none" (no extensions built), "stale" or "interpreted" (asked for)."""
    if not any(extension_paths(m) for m in MODULES):
        return "none"
    if honour_env and os.environ.get("SIPCALLING_INTERPRETED") == "1":
        return "interpreted"
    try:
        built = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return "stale"
    if not isinstance(built, dict) or built.get("digests") != source_digests():
        return "stale"
    if any(not extension_paths(m) for m in MODULES):
        return "stale"  # a partial build (say, an interrupted make compiled)
    return "compiled"


class _SourceFirst:
    """A meta path finder that imports `MODULES` from their `.py` files."""

    def __init__(self, modules: Sequence[str]) -> None:
        self.modules = frozenset(modules)

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name not in self.modules:
            return None
        source = str(source_path(name))
        loader = importlib.machinery.SourceFileLoader(name, source)
        return importlib.util.spec_from_file_location(name, source, loader=loader)


def choose() -> str:
    """Install the source-first finder unless the compiled build is current."""
    state = status()
    if state in ("stale", "interpreted") and not any(
        isinstance(f, _SourceFirst) for f in sys.meta_path
    ):
        sys.meta_path.insert(0, _SourceFirst(MODULES))
        if state == "stale" and os.environ.get("SIPCALLING_REQUIRE_COMPILED") != "1":
            print("sipcalling: compiled modules are older than their sources; running "
                  "the sources (make compiled rebuilds them)", file=sys.stderr)
    if state in ("stale", "none") and os.environ.get("SIPCALLING_REQUIRE_COMPILED") == "1":
        raise ImportError(f"SIPCALLING_REQUIRE_COMPILED=1 but the compiled build is "
                          f"{state}: run make compiled")
    return state


#: What this process runs: "compiled", "interpreted", "stale" or "none"; logged at start.
BUILD = choose()


def running_compiled() -> bool:
    """True if the hot-path modules imported so far are the extension modules."""
    module = sys.modules.get("sipcore.message")
    return module is not None and not str(module.__file__).endswith(".py")
