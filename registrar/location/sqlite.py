"""``sqlite:PATH`` — the embedded, persistent location store.

sqlite3 calls block, so all of them run on one dedicated worker thread that owns
the connection; a single thread also serialises this process's operations in call
order, which gives read-your-writes without extra locking. Each ``update()`` is one
``BEGIN IMMEDIATE`` transaction, so concurrent writers — including other processes
sharing the file — serialise per write and the CSeq check sees committed state.

Expiry is stored as the absolute ``expires_at`` of the injected clock (epoch
seconds with the reactor), so a reopened store reports the right remaining time.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from registrar.location import Clock, LocationService, deferred_errors
from registrar.location.binding import (
    Binding,
    Change,
    LocationError,
    apply_changes,
    normalise_aor,
    sort_bindings,
)

T = TypeVar("T")

_SCHEMA_VERSION = 1
#: Seconds a write waits for another connection's lock (another worker process, a
#: backup tool) before the REGISTER is answered 500 + Retry-After. Our own writes
#: hold the lock for milliseconds; a UAC's Timer F (32 s) must never be the bound.
_BUSY_TIMEOUT = 2.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS bindings (
    aor TEXT NOT NULL,
    bkey TEXT NOT NULL,
    seq INTEGER NOT NULL,
    contact TEXT NOT NULL,
    expires_at REAL NOT NULL,
    q REAL NOT NULL,
    call_id TEXT NOT NULL,
    cseq INTEGER NOT NULL,
    path TEXT NOT NULL,
    instance_id TEXT,
    reg_id INTEGER,
    received TEXT,
    user_agent TEXT,
    PRIMARY KEY (aor, bkey)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS bindings_expires_at ON bindings (expires_at);
"""
_COLUMNS = (
    "seq, aor, contact, expires_at, q, call_id, cseq, path, instance_id, reg_id, "
    "received, user_agent"
)
_INSERT = (
    "INSERT OR REPLACE INTO bindings (bkey, " + _COLUMNS + ") "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _row_to_entry(row: tuple[Any, ...]) -> tuple[int, Binding]:
    seq, aor, contact, expires_at, q, call_id, cseq, path, instance_id, reg_id, rcv, ua = row
    return seq, Binding(
        aor=aor,
        contact=contact,
        expires_at=expires_at,
        q=q,
        call_id=call_id,
        cseq=cseq,
        path=tuple(json.loads(path)),
        instance_id=instance_id,
        reg_id=reg_id,
        received=rcv,
        user_agent=ua,
    )


def _entry_params(key: str, seq: int, b: Binding) -> tuple[Any, ...]:
    return (
        key, seq, b.aor, b.contact, b.expires_at, b.q, b.call_id, b.cseq,
        json.dumps(list(b.path)), b.instance_id, b.reg_id, b.received, b.user_agent,
    )  # fmt: skip


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _connect(path: str) -> sqlite3.Connection:
    """Open and prepare the database, or raise LocationError with one line."""
    where = f"sqlite location store {path!r}"
    if path != ":memory:":
        directory = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise LocationError(
                f"{where}: cannot create directory {directory!r}: {_one_line(exc)}"
            ) from None
        if os.path.isdir(path):
            raise LocationError(f"{where}: path is a directory")
    conn: sqlite3.Connection | None = None
    try:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves so one update() is
        # exactly one transaction. check_same_thread=False: the connection is made
        # here but used only by the worker thread afterwards.
        conn = sqlite3.connect(
            path, timeout=_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
        )
        # WAL lets readers in other processes proceed during a write; NORMAL sync in
        # WAL mode survives a process crash, and a power cut can cost at most the
        # last few registrations, which UAs redo on their next refresh.
        conn.execute("PRAGMA journal_mode=WAL").fetchone()
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA busy_timeout={int(_BUSY_TIMEOUT * 1000)}")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > _SCHEMA_VERSION:
            raise LocationError(
                f"{where}: schema version {version} is newer than supported {_SCHEMA_VERSION}"
            )
        conn.executescript("BEGIN IMMEDIATE;" + _SCHEMA + "COMMIT;")
        conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        # A cheap probe that reads actual pages, so a truncated or garbage file fails
        # here at start-up rather than on the first REGISTER.
        conn.execute("SELECT count(*) FROM bindings WHERE expires_at < 0").fetchone()
    except LocationError:
        if conn is not None:
            conn.close()
        raise
    except (sqlite3.Error, OSError) as exc:
        if conn is not None:
            conn.close()
        raise LocationError(f"{where}: {_one_line(exc)}") from None
    return conn


@implementer(LocationService)
class SqliteLocationService:
    def __init__(self, path: str, clock: Clock | None = None, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self.path = path
        self.clock: Clock = clock if clock is not None else reactor
        self._reactor = reactor
        self._conn = _connect(path)
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name=f"location-sqlite:{path}")
        self._pool.start()
        # Non-daemon worker threads would keep the process alive at exit if the
        # owner forgot close(); stop them with the reactor.
        self._trigger = reactor.addSystemEventTrigger("during", "shutdown", self._stop_pool)
        self._closed = False

    # -- LocationService -------------------------------------------------------

    @deferred_errors
    def get(self, aor: str) -> defer.Deferred[list[Binding]]:
        aor = normalise_aor(aor)
        now = self.clock.seconds()

        def work(conn: sqlite3.Connection) -> list[Binding]:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM bindings WHERE aor = ? AND expires_at > ?", (aor, now)
            ).fetchall()
            return sort_bindings(_row_to_entry(r) for r in rows)

        return self._run(work)

    @deferred_errors
    def put(self, binding: Binding) -> defer.Deferred[None]:
        d = self._apply(binding.aor, [binding], check_cseq=False)
        d.addCallback(lambda _: None)
        return d

    @deferred_errors
    def update(self, aor: str, changes: Sequence[Change]) -> defer.Deferred[list[Binding]]:
        return self._apply(normalise_aor(aor), list(changes), check_cseq=True)

    @deferred_errors
    def remove(self, aor: str, contact: str) -> defer.Deferred[bool]:
        aor = normalise_aor(aor)
        now = self.clock.seconds()

        def work(conn: sqlite3.Connection) -> bool:
            with _transaction(conn):
                live = conn.execute(
                    "SELECT count(*) FROM bindings WHERE aor = ? AND contact = ? "
                    "AND expires_at > ?",
                    (aor, contact, now),
                ).fetchone()[0]
                conn.execute("DELETE FROM bindings WHERE aor = ? AND contact = ?", (aor, contact))
            return live > 0

        return self._run(work)

    @deferred_errors
    def remove_all(self, aor: str) -> defer.Deferred[int]:
        aor = normalise_aor(aor)
        now = self.clock.seconds()

        def work(conn: sqlite3.Connection) -> int:
            with _transaction(conn):
                live = conn.execute(
                    "SELECT count(*) FROM bindings WHERE aor = ? AND expires_at > ?", (aor, now)
                ).fetchone()[0]
                conn.execute("DELETE FROM bindings WHERE aor = ?", (aor,))
            return int(live)

        return self._run(work)

    def purge_expired(self) -> defer.Deferred[int]:
        now = self.clock.seconds()

        def work(conn: sqlite3.Connection) -> int:
            with _transaction(conn):
                cur = conn.execute("DELETE FROM bindings WHERE expires_at <= ?", (now,))
            return cur.rowcount

        return self._run(work)

    def count(self) -> defer.Deferred[int]:
        now = self.clock.seconds()
        return self._run(
            lambda conn: int(
                conn.execute(
                    "SELECT count(*) FROM bindings WHERE expires_at > ?", (now,)
                ).fetchone()[0]
            )
        )

    def aors(self) -> defer.Deferred[list[str]]:
        now = self.clock.seconds()
        return self._run(
            lambda conn: [
                r[0]
                for r in conn.execute(
                    "SELECT DISTINCT aor FROM bindings WHERE expires_at > ? ORDER BY aor", (now,)
                )
            ]
        )

    def close(self) -> defer.Deferred[None]:
        if self._closed:
            return defer.succeed(None)
        self._closed = True
        d = deferToThreadPool(self._reactor, self._pool, self._conn.close)

        def stop(result: Any) -> Any:
            self._reactor.removeSystemEventTrigger(self._trigger)
            self._stop_pool()
            return result

        d.addBoth(stop)
        d.addCallback(lambda _: None)
        return d

    # -- internals ---------------------------------------------------------------

    def _apply(
        self, aor: str, changes: Sequence[Change], check_cseq: bool
    ) -> defer.Deferred[list[Binding]]:
        now = self.clock.seconds()

        def work(conn: sqlite3.Connection) -> list[Binding]:
            with _transaction(conn):
                rows = conn.execute(
                    f"SELECT {_COLUMNS}, bkey FROM bindings WHERE aor = ?", (aor,)
                ).fetchall()
                current = {r[-1]: _row_to_entry(r[:-1]) for r in rows}
                result = apply_changes(aor, current, changes, now, check_cseq=check_cseq)
                if result.removed:
                    conn.executemany(
                        "DELETE FROM bindings WHERE aor = ? AND bkey = ?",
                        [(aor, k) for k in result.removed],
                    )
                if result.written:
                    conn.executemany(
                        _INSERT, [_entry_params(k, s, b) for k, (s, b) in result.written.items()]
                    )
            return sort_bindings(result.state.values())

        return self._run(work)

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> defer.Deferred[T]:
        if self._closed:
            return defer.fail(LocationError(f"sqlite location store {self.path!r} is closed"))
        conn, path = self._conn, self.path

        def guarded() -> T:
            try:
                return work(conn)
            except sqlite3.Error as exc:
                # One line naming the store, not a chained sqlite traceback per call.
                raise LocationError(f"sqlite location store {path!r}: {_one_line(exc)}") from None

        return deferToThreadPool(self._reactor, self._pool, guarded)

    def _stop_pool(self) -> None:
        if self._pool.started:
            self._pool.stop()


class _transaction:
    """BEGIN IMMEDIATE … COMMIT, rolled back on any exception (StaleCSeq included).

    IMMEDIATE takes the write lock up front so the read that the CSeq check relies
    on cannot be invalidated by another process before our write.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            try:
                self._conn.execute("COMMIT")
                return
            except sqlite3.Error:
                # A failed COMMIT (disk full, I/O error) leaves the transaction
                # open; end it so the next operation can BEGIN, then report.
                self._rollback()
                raise
        self._rollback()

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")


__all__ = ["SqliteLocationService"]
