"""``sqlite:PATH`` — the embedded, persistent location store.

sqlite3 calls block, so all of them run on one dedicated worker thread that owns
the connection; operations go through one FIFO queue that the thread drains in call
order, which gives read-your-writes without extra locking.

Writes (``update``/``put``/``remove``/``remove_all``/``purge_expired``) that queue up
while the thread is busy are grouped: up to ``_MAX_BATCH`` consecutive writes share
one ``BEGIN IMMEDIATE`` … ``COMMIT`` (issue 9), each inside its own SAVEPOINT so a
StaleCSeq (or any error) undoes only that caller's changes. Every caller still gets
its own result or error, and no Deferred of a batch fires before the batch has
committed, so durability is what it was with one transaction per write. If BEGIN or
COMMIT fails (another process holds the lock, disk full) every caller of that batch
gets the LocationError. Concurrent writers in other processes sharing the file still
serialise on the write lock, and the CSeq check sees committed state.

Expiry is stored as the absolute ``expires_at`` of the injected clock (epoch
seconds with the reactor), so a reopened store reports the right remaining time.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.python.failure import Failure
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
#: Most writes committed in one transaction. Bounds how long one batch holds the
#: write lock against other processes sharing the file, and how many callers one
#: failed COMMIT takes down with it; 256 is already far past the point where the
#: per-transaction cost stops mattering.
_MAX_BATCH = 256
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
        # Operations waiting for the worker thread, in call order. The reactor thread
        # appends, the worker pops; _draining says a drain job is queued or running,
        # so exactly one is, and a burst of calls costs one thread hand-off.
        self._queue: deque[_Op] = deque()
        self._lock = threading.Lock()
        self._draining = False
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
            live = conn.execute(
                "SELECT count(*) FROM bindings WHERE aor = ? AND contact = ? AND expires_at > ?",
                (aor, contact, now),
            ).fetchone()[0]
            conn.execute("DELETE FROM bindings WHERE aor = ? AND contact = ?", (aor, contact))
            return live > 0

        return self._run(work, write=True)

    @deferred_errors
    def remove_all(self, aor: str) -> defer.Deferred[int]:
        aor = normalise_aor(aor)
        now = self.clock.seconds()

        def work(conn: sqlite3.Connection) -> int:
            live = conn.execute(
                "SELECT count(*) FROM bindings WHERE aor = ? AND expires_at > ?", (aor, now)
            ).fetchone()[0]
            conn.execute("DELETE FROM bindings WHERE aor = ?", (aor,))
            return int(live)

        return self._run(work, write=True)

    def purge_expired(self) -> defer.Deferred[int]:
        now = self.clock.seconds()

        def work(conn: sqlite3.Connection) -> int:
            return conn.execute("DELETE FROM bindings WHERE expires_at <= ?", (now,)).rowcount

        return self._run(work, write=True)

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
        d: defer.Deferred[Any] = self._run(lambda conn: conn.close())
        self._closed = True

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

        return self._run(work, write=True)

    def _run(
        self, work: Callable[[sqlite3.Connection], T], write: bool = False
    ) -> defer.Deferred[T]:
        """Queue ``work`` for the worker thread; ``write`` ones run in a transaction."""
        if self._closed:
            return defer.fail(LocationError(f"sqlite location store {self.path!r} is closed"))
        d: defer.Deferred[T] = defer.Deferred()
        with self._lock:
            self._queue.append(_Op(work, write, d))
            start = not self._draining
            self._draining = True
        if start:
            self._pool.callInThread(self._drain)
        return d

    def _drain(self) -> None:
        """Worker thread: run queued operations until the queue is empty.

        Takes a run of consecutive writes (one transaction) or of reads at a time;
        a read ends a write run so it sees the committed result of every write
        queued before it, and each run's Deferreds fire together after it.
        """
        while True:
            with self._lock:
                if not self._queue:
                    self._draining = False
                    return
                write = self._queue[0].write
                batch = [self._queue.popleft()]
                while self._queue and self._queue[0].write == write and len(batch) < _MAX_BATCH:
                    batch.append(self._queue.popleft())
            outcomes = self._write_batch(batch) if write else self._read_batch(batch)
            self._reactor.callFromThread(_fire, outcomes)

    def _error(self, exc: sqlite3.Error) -> LocationError:
        # One line naming the store, not a chained sqlite traceback per call.
        return LocationError(f"sqlite location store {self.path!r}: {_one_line(exc)}")

    def _read_batch(self, batch: list[_Op]) -> list[_Outcome]:
        outcomes: list[_Outcome] = []
        for op in batch:
            try:
                outcomes.append((op.d, True, op.work(self._conn)))
            except sqlite3.Error as exc:
                outcomes.append((op.d, False, Failure(self._error(exc))))
            except Exception:
                outcomes.append((op.d, False, Failure()))
        return outcomes

    def _write_batch(self, batch: list[_Op]) -> list[_Outcome]:
        """One BEGIN IMMEDIATE … COMMIT for the batch, one SAVEPOINT per caller.

        IMMEDIATE takes the write lock up front so the reads the CSeq checks rely on
        cannot be invalidated by another process before our writes. An item that
        raises is rolled back to its savepoint and fails alone; a failure of the
        transaction itself (BEGIN, COMMIT, or sqlite having rolled it back after
        an I/O error) fails every caller of the batch, since none of it was stored.
        """
        conn = self._conn
        outcomes: list[_Outcome] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op in batch:
                conn.execute("SAVEPOINT item")
                try:
                    value = op.work(conn)
                except Exception as exc:
                    # Raises "no such savepoint" if sqlite already rolled the whole
                    # transaction back (disk full, I/O error): handled below.
                    conn.execute("ROLLBACK TO item")
                    conn.execute("RELEASE item")
                    fail = self._error(exc) if isinstance(exc, sqlite3.Error) else exc
                    outcomes.append((op.d, False, Failure(fail)))
                else:
                    conn.execute("RELEASE item")
                    outcomes.append((op.d, True, value))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            # A failed COMMIT (disk full, I/O error) leaves the transaction open;
            # end it so the next batch can BEGIN, then report to every caller.
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # already the error being reported
            error = self._error(exc)
            return [(op.d, False, Failure(error)) for op in batch]
        return outcomes

    def _stop_pool(self) -> None:
        if self._pool.started:
            self._pool.stop()


class _Op:
    __slots__ = ("d", "work", "write")

    def __init__(
        self, work: Callable[[sqlite3.Connection], Any], write: bool, d: defer.Deferred[Any]
    ) -> None:
        self.work = work
        self.write = write
        self.d = d


#: (caller's Deferred, succeeded, result or Failure)
_Outcome = tuple[defer.Deferred[Any], bool, Any]


def _fire(outcomes: list[_Outcome]) -> None:
    """Reactor thread: fire a finished run's Deferreds in call order."""
    for d, ok, value in outcomes:
        if ok:
            d.callback(value)
        else:
            d.errback(value)


__all__ = ["SqliteLocationService"]
