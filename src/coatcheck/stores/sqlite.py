"""`SQLiteStore` and `SQLiteRevocationStore`: the embedded default, shared by every process
on one machine.

Constructing a store touches no file: each thread's connection opens on its first
operation (or `open()`, to fail at start-up rather than at the first request).

One table in a SQLite file, in WAL mode so readers never wait for writers and many worker
processes can serve one set of sessions. Every operation is a single statement or a short
`BEGIN IMMEDIATE` transaction, so the compare-and-set on `version` is atomic across
processes. Writers that find the database locked wait up to `timeout` seconds, then fail
with `StoreUnavailable`.

Expired rows are invisible at once and deleted in small batches, never on a request's path:
every `purge_interval` seconds (by the store's clock) a `save` wakes the store's purge
thread, a daemon thread started on first need and stopped by `close`, and returns without
waiting for it. A pass walks the table in windows (below), one short write transaction per
window, and after each rests twice as long as the window took (`PURGE_DUTY`), so writers of
every process waiting for the lock get it between windows; it checkpoints the log it wrote
during the rests (a passive checkpoint holds no lock). `purge_expired` runs the same windows
back to back in the calling thread, for an explicit purge (the CLI's `sessions purge`).
Measured by `bench/sqlite_purge.py` on a 1M-row file, half expired, saves back to back: a
window takes 0.5 ms (p99 2.1 ms, worst 4.9 ms), the worst save while a pass runs took 19 ms
(35 ms through `AsyncSQLiteStore`), and the save that ran the purge inline before took
6.4 s (6.7 s awaited in a worker thread by the async twin).

There is no index on the expiry time: every write moves a session's expiry, and keeping
such an index up to date made each write a third more expensive (6 µs of 19 µs in
`bench/asgi_overhead.py`), to speed up a purge that runs every few minutes. A purge instead
walks the table in primary-key order, `PURGE_BATCH` rows per statement, deleting the
expired ones among them: each statement reads a bounded range, and a whole purge reads the
table once. (A database created by an earlier version loses its expiry index when opened.)

`synchronous=NORMAL` is used: in WAL mode a power loss may forget the last transactions but
never corrupts the file, the usual trade for session data.

Revocations (`SQLiteRevocationStore`, usually in the same file) are an append-only table
whose row number is the change feed's cursor: each process polls `changes` (one indexed
query, usually returning nothing) at most once per staleness interval; that is the SQLite
change feed. That table keeps SQLite's default `synchronous=FULL`: a revocation is written
rarely, and must not be forgotten. Both stores share one way of using the file (`_Database`:
a connection per thread, WAL mode, the busy timeout, start-up retries, error mapping).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import re
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from ..exceptions import ConfigurationError, StoreError, StoreUnavailable
from ..limits import oldest_first
from ..revocation import CHANGES_PAGE, Revocation, decode_rows, encode_entry
from .base import CONFLICTED, Admission, Record, new_record
from .threaded import ThreadedRevocationStore

__all__ = ["AsyncSQLiteRevocationStore", "AsyncSQLiteStore", "SQLiteRevocationStore", "SQLiteStore"]

T = TypeVar("T")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
PURGE_BATCH = 250  # keys per purge window: ~1.5 ms, all expired, on a 1M-row file
PURGE_DUTY = 1 / 3  # the share of the time a background purge holds windows open, at most
SETUP_TIMEOUT = 10.0  # seconds a new connection may retry its set-up while others hold locks


class _Busy(StoreUnavailable):
    """The database was locked and the connection was not allowed to wait."""


def _locked(message: str) -> bool:
    """Whether an `OperationalError` says the database was locked by another connection."""
    return "locked" in message or "busy" in message


def _nothing(db: sqlite3.Connection) -> None:
    """An operation that only needs the connection open (see `open`)."""


class _Connection(sqlite3.Connection):
    """A connection that can be weakly referenced, so `close` can find every thread's.

    One that is collected unclosed (its thread ended, or its store was dropped without
    `close`) is closed then; CPython 3.13 warns (`ResourceWarning`) about a connection
    collected open. (`check_same_thread=False`: any thread may close it.)"""

    def __del__(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # never initialised, or already closed
            self.close()


class _Database:
    """One SQLite file as both stores use it: a connection per thread (for a private
    `:memory:` database, one connection its threads take turns on), WAL mode, a busy
    timeout, set-up retried at start-up, and SQLite errors turned into `StoreUnavailable`.
    A subclass creates its tables in `_prepare`."""

    #: How errors name the store.
    _what = "SQLite store"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        table: str,
        timeout: float,  # seconds a writer waits for the lock
        clock: Callable[[], float],
    ) -> None:
        if not _IDENTIFIER.fullmatch(table):
            raise ConfigurationError(f"SQLite table name {table!r} is not a plain identifier")
        if timeout < 0:
            raise ConfigurationError(f"{type(self).__name__} timeout must be >= 0 seconds")
        self.path = os.fspath(path)
        self.table = table
        self.timeout = timeout
        self._clock = clock
        self._local = threading.local()
        self._lock = threading.Lock()  # guards `_connections` and `_shared`
        self._turn = threading.Lock()  # taken around each use of the one private connection
        self._connections: weakref.WeakSet[_Connection] = weakref.WeakSet()
        # One database per connection: every thread must share the one connection.
        self._private = self.path in ("", ":memory:")
        self._shared: _Connection | None = None
        self._epoch = 0  # counts `close` calls

    def open(self) -> None:
        """Open this thread's connection now, creating the file and the table if need be, so
        that a file that cannot be opened fails at start-up rather than at the first request.
        Optional: the first operation of each thread does the same."""
        self._run(_nothing)

    def _connection(self) -> sqlite3.Connection:
        db: _Connection | None
        if self._private:
            db = self._shared  # None if `close` closed it
        else:
            # (epoch, connection): a connection opened before the last `close` is closed.
            # (An epoch number, not a look-up in `_connections`: a WeakSet look-up builds a
            # weak reference, on every store operation.)
            mine = getattr(self._local, "db", None)
            db = mine[1] if mine is not None and mine[0] == self._epoch else None
        if db is None:  # none yet, or closed by `close`
            epoch = self._epoch
            db = self._open()
            with self._lock:
                self._connections.add(db)
            if self._private:
                self._shared = db
            else:
                # (and a cursor kept for `_ready`'s callers: `db.execute` makes one a call)
                self._local.db = (epoch, db, db.cursor())
        return db

    def _open(self) -> _Connection:
        """A new connection, set up.

        Processes that start together race to create the file, switch it to WAL and create
        the table, and SQLite answers some of those steps "locked" at once, without waiting
        for the busy timeout: that is retried, once per thread and never again on that
        thread's connection, for up to `SETUP_TIMEOUT` seconds; not by a store that may not
        wait (`timeout=0`: its caller falls back to one that may).
        """
        deadline = time.monotonic() + max(self.timeout, SETUP_TIMEOUT)
        while True:
            db = _Connection(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            try:
                db.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
                if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    db.execute("PRAGMA journal_mode = WAL")
                self._prepare(db)
                return db
            except sqlite3.OperationalError as exc:
                db.close()
                if not (self.timeout and _locked(str(exc)) and time.monotonic() < deadline):
                    raise
            except BaseException:
                db.close()
                raise
            time.sleep(0.01 + random.random() * 0.04)  # noqa: S311 - jitter, not a secret

    def _prepare(self, db: sqlite3.Connection) -> None:
        """Set up a new connection: settings, and the tables if they do not exist."""
        raise NotImplementedError

    def _run(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        try:
            if self._private:
                with self._turn:
                    return operation(self._connection())
            return operation(self._connection())
        except sqlite3.Error as exc:
            raise self._failure(exc) from None

    def _ready(self) -> sqlite3.Cursor | None:
        """A cursor of this thread's connection if that is open and usable as it is (no
        lock to take), else None: then `_run` opens it (or takes turns on the private
        one). The common store calls run their statement on it directly: `_run` and its
        closure cost more than the statement's own Python work, and a new cursor per
        statement (`db.execute`) a tenth of a load."""
        if self._private:
            return None
        mine = getattr(self._local, "db", None)
        return mine[2] if mine is not None and mine[0] == self._epoch else None

    def _failure(self, exc: sqlite3.Error) -> StoreUnavailable:
        """The `StoreUnavailable` (`_Busy` while locked) that a SQLite error becomes."""
        if isinstance(exc, sqlite3.OperationalError):
            message = str(exc)
            if _locked(message):
                return _Busy(f"{self._what} {self.path!r} is locked: {message}")
            if "unable to open" in message:
                return StoreUnavailable(
                    f"{self._what} {self.path!r} cannot be opened: {message} "
                    "(does its directory exist, and may this process write there?)"
                )
            return StoreUnavailable(f"{self._what} {self.path!r} failed: {message}")
        return StoreUnavailable(f"{self._what} {self.path!r} failed: {exc}")

    def close(self) -> None:
        """Close every thread's connection. A later call opens a new one (for `:memory:`,
        a new, empty database)."""
        with self._lock:
            connections = list(self._connections)
            self._connections.clear()
            self._shared = None
            self._epoch += 1
        for db in connections:
            db.close()


class _Purger:
    """A store's purge thread: a daemon thread started by the first `wake`, which runs
    `purge(wait)` once per `wake` (wakes that come during a pass make one more pass), and
    stopped by `stop` after the window in progress. `wait(seconds)` is how a pass rests
    between windows: it returns True, at once, when the thread is being stopped.

    `purge` is held weakly and the thread stops when the store is collected, so a store
    that is dropped without `close` leaves no thread behind."""

    def __init__(
        self, purge: weakref.WeakMethod[Callable[[Callable[[float], bool]], None]]
    ) -> None:
        self._purge = purge
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a wake, a pass ended, a stop
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()  # the current thread's; each thread has its own
        self._pending = False  # a pass was asked for and has not started
        self._running = 0  # passes running (two only while a stopped thread finishes one)

    def wake(self) -> None:
        """Ask for a pass; never waits for it."""
        with self._lock:
            self._pending = True
            if self._thread is None or not self._thread.is_alive():  # first, or after fork
                self._stop = threading.Event()
                self._thread = threading.Thread(
                    target=self._run,
                    args=(self._stop,),
                    name="coatcheck-sqlite-purge",
                    daemon=True,
                )
                self._thread.start()
            else:
                self._changed.notify_all()

    def _run(self, stop: threading.Event) -> None:
        while True:
            with self._lock:
                while not self._pending and not stop.is_set():
                    self._changed.wait()
                if stop.is_set():
                    return
                self._pending = False
                self._running += 1
            purge = self._purge()
            try:
                if purge is None:  # the store is gone
                    return
                purge(stop.wait)
            finally:
                purge = None  # hold no reference to the store between passes
                with self._lock:
                    self._running -= 1
                    self._changed.notify_all()

    def idle(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds until no pass is asked for or running; whether so."""
        with self._lock:
            return self._changed.wait_for(lambda: not (self._pending or self._running), timeout)

    def stop(self) -> None:
        """Stop the thread after the window in progress; a later `wake` starts a new one."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._pending = False
            self._stop.set()
            self._changed.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join()


class SQLiteStore(_Database):
    """Sessions in the SQLite file at `path` (created with its table on first use, or by
    `open()`; constructing the store touches no file).

    Each thread uses its own connection. `:memory:` (or "") names a database private to one
    connection, so such a store keeps a single connection that its threads take turns on.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = "sessions.db",
        *,
        table: str = "coatcheck_sessions",
        timeout: float = 5.0,  # seconds a writer waits for the lock
        purge_interval: float = 300.0,  # seconds between background purges (inf: none)
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(path, table=table, timeout=timeout, clock=clock)
        self.purge_interval = purge_interval
        self._next_purge = clock() + purge_interval
        self._purger = _Purger(weakref.WeakMethod(self._purge_in_background))
        weakref.finalize(self, self._purger.stop).atexit = False
        t = table
        self._sql_load = f"SELECT data, version FROM {t} WHERE key = ? AND expires_at > ?"  # noqa: S608
        self._sql_create = (
            f"INSERT INTO {t} (key, data, version, expires_at, user) VALUES (?, ?, 1, ?, ?) "  # noqa: S608
            f"ON CONFLICT (key) DO UPDATE SET data = excluded.data, version = 1, "
            f"expires_at = excluded.expires_at, user = excluded.user "
            f"WHERE {t}.expires_at <= ?"
        )
        self._sql_update = (
            f"UPDATE {t} SET data = ?, version = version + 1, expires_at = ?, user = ? "  # noqa: S608
            f"WHERE key = ? AND version = ? AND expires_at > ?"
        )
        self._sql_delete_if = f"DELETE FROM {t} WHERE key = ? AND version = ? AND expires_at > ?"  # noqa: S608
        self._sql_put = (
            f"INSERT OR REPLACE INTO {t} (key, data, version, expires_at, user) "  # noqa: S608
            f"VALUES (?, ?, 1, ?, ?)"
        )
        self._sql_delete = f"DELETE FROM {t} WHERE key = ?"  # noqa: S608
        self._sql_list = f"SELECT key, data, version FROM {t} WHERE user = ? AND expires_at > ?"  # noqa: S608
        self._sql_others = (
            f"SELECT key, data FROM {t} WHERE user = ? AND expires_at > ? AND key != ?"  # noqa: S608
        )
        self._sql_delete_user = (
            f"DELETE FROM {t} WHERE user = ? AND key IS NOT ? AND expires_at > ?"  # noqa: S608
        )
        # A purge walks the keys in windows of PURGE_BATCH rows (see the module docstring).
        self._sql_first_window = (
            f"SELECT max(key) FROM (SELECT key FROM {t} ORDER BY key LIMIT {PURGE_BATCH})"  # noqa: S608
        )
        self._sql_next_window = (
            f"SELECT max(key) FROM (SELECT key FROM {t} WHERE key > ? "  # noqa: S608
            f"ORDER BY key LIMIT {PURGE_BATCH})"
        )
        self._sql_purge_first = f"DELETE FROM {t} WHERE key <= ? AND expires_at <= ?"  # noqa: S608
        self._sql_purge_next = f"DELETE FROM {t} WHERE key > ? AND key <= ? AND expires_at <= ?"  # noqa: S608

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r}, table={self.table!r})"

    def _prepare(self, db: sqlite3.Connection) -> None:
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute(
            f"CREATE TABLE IF NOT EXISTS {self.table} ("
            "key TEXT PRIMARY KEY, data BLOB NOT NULL, version INTEGER NOT NULL, "
            "expires_at REAL NOT NULL, user TEXT) WITHOUT ROWID"
        )
        db.execute(
            f"CREATE INDEX IF NOT EXISTS {self.table}_user ON {self.table} (user) "
            "WHERE user IS NOT NULL"
        )
        self._drop_expiry_index(db)

    def _drop_expiry_index(self, db: sqlite3.Connection) -> None:
        """Drop the expiry index that earlier versions created (see the module docstring).
        If the database is busy, a later connection drops it."""
        name = f"{self.table}_expires"
        found = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?", (name,)
        ).fetchone()
        if found is not None:
            try:
                db.execute(f"DROP INDEX IF EXISTS {name}")
            except sqlite3.OperationalError:
                pass

    def load(self, key: str) -> Record | None:
        cursor = self._ready()
        if cursor is None:
            row = self._run(lambda db: db.execute(self._sql_load, (key, self._clock())).fetchone())
        else:  # (`_run`, inline)
            try:
                row = cursor.execute(self._sql_load, (key, self._clock())).fetchone()
            except sqlite3.Error as exc:
                raise self._failure(exc) from None
        return None if row is None else new_record((row[0], row[1]))

    def save(self, key: str, data: bytes, *, version: int, ttl: float, user: str | None) -> bool:
        now = self._clock()
        args: tuple[object, ...]
        if version == 0:
            sql, args = self._sql_create, (key, data, now + ttl, user, now)
        else:
            sql, args = self._sql_update, (data, now + ttl, user, key, version, now)
        cursor = self._ready()
        if cursor is None:
            saved = self._run(lambda db: db.execute(sql, args).rowcount) == 1
        else:  # (`_run`, inline)
            try:
                saved = cursor.execute(sql, args).rowcount == 1
            except sqlite3.Error as exc:
                raise self._failure(exc) from None
        if now >= self._next_purge:  # (`_wake_purger`, its test inline)
            self._wake_purger(now)
        return saved

    def _wake_purger(self, now: float) -> None:
        """If a background purge is due at `now`, schedule the next and wake the purge
        thread (which may start it); never waits for the purge."""
        if now >= self._next_purge:
            self._next_purge = now + self.purge_interval
            self._purger.wake()

    def _purge_in_background(self, wait: Callable[[float], bool]) -> None:
        """One background pass (on the purge thread): the windows of `purge_expired`, and
        after each a rest (see the module docstring); `wait(seconds)` says whether to stop."""

        def rest(took: float) -> bool:
            # The window held the write lock for `took` s: rest until it held it PURGE_DUTY
            # of the time, checkpointing the log it wrote meanwhile (which holds no lock).
            until = time.perf_counter() + took * (1 - PURGE_DUTY) / PURGE_DUTY
            self._checkpoint()
            return wait(max(0.0, until - time.perf_counter()))

        try:
            # This thread's connection checkpoints in the rests, not in a window's commit.
            pages = int(self._scalar("PRAGMA wal_autocheckpoint", ()))
            self._run(lambda db: db.execute("PRAGMA wal_autocheckpoint = 0"))
            try:
                self._purge(rest)
            finally:
                self._run(lambda db: db.execute(f"PRAGMA wal_autocheckpoint = {pages}"))
        except StoreError:
            pass  # busy for `timeout` seconds, or failing: the next interval tries again

    def _checkpoint(self) -> None:
        """Copy the write-ahead log into the database as far as no reader needs it, without
        waiting for (or blocking) readers and writers."""
        self._run(lambda db: db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall())

    def rotate(
        self, old_key: str, new_key: str, data: bytes, *, version: int, ttl: float, user: str | None
    ) -> bool:
        now = self._clock()

        def transaction(db: sqlite3.Connection) -> bool:
            db.execute("BEGIN IMMEDIATE")
            try:
                moved = db.execute(self._sql_delete_if, (old_key, version, now)).rowcount
                if moved == 1:
                    db.execute(self._sql_put, (new_key, data, now + ttl, user))
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:  # never leave this thread's connection mid-transaction
                    db.execute("ROLLBACK")
                raise
            return moved == 1

        return self._run(transaction)

    def admit(
        self,
        key: str,
        data: bytes,
        *,
        version: int,
        ttl: float,
        user: str,
        replaces: str | None,
        limit: int,
        evict: bool,
    ) -> Admission:
        """`save` or `rotate` under a per-user session limit (`LimitedStore.admit`), in one
        `BEGIN IMMEDIATE` transaction: it holds the database's write lock from the version
        check to the commit, so no other writer (thread or process) runs in between. A
        refused write is rolled back."""
        now = self._clock()

        def transaction(db: sqlite3.Connection) -> Admission:
            db.execute("BEGIN IMMEDIATE")
            try:
                if replaces is not None:
                    written = db.execute(self._sql_delete_if, (replaces, version, now)).rowcount
                    if written == 1:
                        db.execute(self._sql_put, (key, data, now + ttl, user))
                elif version == 0:
                    args: tuple[object, ...] = (key, data, now + ttl, user, now)
                    written = db.execute(self._sql_create, args).rowcount
                else:
                    args = (data, now + ttl, user, key, version, now)
                    written = db.execute(self._sql_update, args).rowcount
                if written != 1:
                    db.execute("ROLLBACK")
                    return CONFLICTED
                rows = db.execute(self._sql_others, (user, now, key)).fetchall()
                doomed = oldest_first([(k, bytes(d)) for k, d in rows], limit)
                if doomed and not evict:
                    db.execute("ROLLBACK")
                    return Admission(False, True)
                for other in doomed:
                    db.execute(self._sql_delete, (other,))
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:  # never leave this thread's connection mid-transaction
                    db.execute("ROLLBACK")
                raise
            return Admission(True, False, tuple(doomed))

        return self._run(transaction)

    def delete(self, key: str) -> None:
        self._run(lambda db: db.execute(self._sql_delete, (key,)))

    def list_user(self, user: str) -> list[tuple[str, Record]]:
        rows = self._run(lambda db: db.execute(self._sql_list, (user, self._clock())).fetchall())
        return [(key, Record(data, version)) for key, data, version in rows]

    def delete_user(self, user: str, *, keep: str | None = None) -> int:
        # Expired rows stay for `purge_expired`: they are invisible, and not counted.
        args = (user, keep, self._clock())
        return self._run(lambda db: db.execute(self._sql_delete_user, args).rowcount)

    def purge_expired(self) -> int:
        """Delete every expired row now, in windows run back to back in this thread."""
        return self._purge(None)

    def _purge(self, rest: Callable[[float], bool] | None) -> int:
        """Walk the table in windows of PURGE_BATCH keys, deleting the expired rows of each;
        with `rest`, call it after each window with the seconds the window took, and stop
        early if it returns True. Returns how many rows were deleted."""
        now = self._clock()
        total = 0
        last: str | None = None  # the last key of the previous window
        while True:
            started = time.perf_counter()
            last, removed = self._purge_window(last, now)
            total += removed
            if last is None:  # past the last key
                return total
            if rest is not None and rest(time.perf_counter() - started):
                return total

    def _purge_window(self, last: str | None, now: float) -> tuple[str | None, int]:
        """Delete the rows expired at `now` among the PURGE_BATCH keys after `last` (None:
        from the first); returns the window's last key (None past the end) and how many."""
        if last is None:
            end = self._scalar(self._sql_first_window, ())
            if end is None:
                return None, 0
            return end, self._rowcount(self._sql_purge_first, (end, now))
        end = self._scalar(self._sql_next_window, (last,))
        if end is None:
            return None, 0
        return end, self._rowcount(self._sql_purge_next, (last, end, now))

    def close(self) -> None:
        """Stop the purge thread (after its window in progress), then close every
        connection. A later call opens new ones, and a due purge starts a new thread."""
        self._purger.stop()
        super().close()

    def _scalar(self, sql: str, args: tuple[object, ...]) -> Any:
        return self._run(lambda db: db.execute(sql, args).fetchone()[0])

    def _rowcount(self, sql: str, args: tuple[object, ...]) -> int:
        return self._run(lambda db: db.execute(sql, args).rowcount)


class AsyncSQLiteStore:
    """The async twin of `SQLiteStore`.

    SQLite answers in microseconds when the database is not locked, far less than handing
    the call to a thread would cost, so each operation first runs on the event loop with a
    connection that does not wait for locks. Only if another process holds the write lock is
    the operation handed to a worker thread, which waits up to `timeout` seconds there
    without blocking the loop. Purges, whose length depends on the backlog, never run on the
    loop: background ones on the sync store's purge thread (a `save` wakes it and does not
    wait), `purge_expired` in a worker thread.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = "sessions.db",
        *,
        table: str = "coatcheck_sessions",
        timeout: float = 5.0,  # seconds a writer waits for the lock (in a worker thread)
        purge_interval: float = 300.0,  # seconds
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._attach(
            SQLiteStore(
                path, table=table, timeout=timeout, purge_interval=purge_interval, clock=clock
            )
        )

    def _attach(self, store: SQLiteStore) -> None:
        self.sync = store
        # A private (`:memory:`) database has one connection; it is never locked by another.
        # The loop's store never purges: `save` wakes the sync store's purge thread.
        self._nowait = (
            store
            if store._private
            else SQLiteStore(
                store.path,
                table=store.table,
                timeout=0,
                purge_interval=math.inf,
                clock=store._clock,
            )
        )

    @classmethod
    def wrapping(cls, store: SQLiteStore) -> AsyncSQLiteStore:
        """The async twin of an existing `SQLiteStore`: its database, table and settings."""
        twin = cls.__new__(cls)
        twin._attach(store)
        return twin

    def __repr__(self) -> str:
        return f"AsyncSQLiteStore({self.sync.path!r}, table={self.sync.table!r})"

    async def open(self) -> None:
        """Create the file and the table now, in a worker thread (see `SQLiteStore.open`);
        optional, as for the sync store."""
        await asyncio.to_thread(self.sync.open)

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self._nowait, name)(*args, **kwargs)
        except _Busy:
            return await asyncio.to_thread(getattr(self.sync, name), *args, **kwargs)

    # `load` and `save` run on every request: called directly, not through `_call`.

    async def load(self, key: str) -> Record | None:
        try:
            return self._nowait.load(key)
        except _Busy:
            return await asyncio.to_thread(self.sync.load, key)

    async def save(
        self, key: str, data: bytes, *, version: int, ttl: float, user: str | None
    ) -> bool:
        try:
            saved = self._nowait.save(key, data, version=version, ttl=ttl, user=user)
        except _Busy:
            saved = await asyncio.to_thread(
                self.sync.save, key, data, version=version, ttl=ttl, user=user
            )
        if self._nowait is not self.sync:  # (else `save` above woke it)
            self.sync._wake_purger(self.sync._clock())
        return saved

    async def rotate(
        self, old_key: str, new_key: str, data: bytes, *, version: int, ttl: float, user: str | None
    ) -> bool:
        rotated = await self._call(
            "rotate", old_key, new_key, data, version=version, ttl=ttl, user=user
        )
        return bool(rotated)

    async def admit(
        self,
        key: str,
        data: bytes,
        *,
        version: int,
        ttl: float,
        user: str,
        replaces: str | None,
        limit: int,
        evict: bool,
    ) -> Admission:
        admission: Admission = await self._call(
            "admit",
            key,
            data,
            version=version,
            ttl=ttl,
            user=user,
            replaces=replaces,
            limit=limit,
            evict=evict,
        )
        return admission

    async def delete(self, key: str) -> None:
        await self._call("delete", key)

    async def list_user(self, user: str) -> list[tuple[str, Record]]:
        result: list[tuple[str, Record]] = await self._call("list_user", user)
        return result

    async def delete_user(self, user: str, *, keep: str | None = None) -> int:
        return int(await self._call("delete_user", user, keep=keep))

    async def purge_expired(self) -> int:
        if self._nowait is self.sync:
            return self.sync.purge_expired()
        return await asyncio.to_thread(self.sync.purge_expired)

    async def aclose(self) -> None:
        self._nowait.close()
        # Stopping the purge thread waits for its window in progress: not on the loop.
        await asyncio.to_thread(self.sync.close)


class SQLiteRevocationStore(_Database):
    """Revocations in the SQLite file at `path`: an append-only table whose row number is
    the cursor (see the module docstring)."""

    _what = "SQLite revocations"

    def __init__(
        self,
        path: str | os.PathLike[str] = "sessions.db",
        *,
        table: str = "coatcheck_revocations",
        timeout: float = 5.0,  # seconds a writer waits for the lock
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(path, table=table, timeout=timeout, clock=clock)
        t = table
        self._sql_revoke = f"INSERT INTO {t} (entry, expires_at) VALUES (?, ?)"  # noqa: S608
        self._sql_changes = (
            f"SELECT seq, entry FROM {t} WHERE seq > ? ORDER BY seq LIMIT {CHANGES_PAGE}"  # noqa: S608
        )
        self._sql_purge = f"DELETE FROM {t} WHERE expires_at <= ?"  # noqa: S608

    def __repr__(self) -> str:
        return f"SQLiteRevocationStore({self.path!r}, table={self.table!r})"

    def _prepare(self, db: sqlite3.Connection) -> None:
        db.execute(
            f"CREATE TABLE IF NOT EXISTS {self.table} (seq INTEGER PRIMARY KEY "
            "AUTOINCREMENT, entry TEXT NOT NULL, expires_at REAL NOT NULL)"
        )

    def revoke(self, entry: Revocation) -> None:
        args = (encode_entry(entry), entry.expires_at)
        self._run(lambda db: db.execute(self._sql_revoke, args))

    def changes(self, cursor: int) -> tuple[list[Revocation], int]:
        rows = self._run(lambda db: db.execute(self._sql_changes, (cursor,)).fetchall())
        return decode_rows(rows, cursor)

    def purge_expired(self) -> int:
        now = self._clock()
        return self._run(lambda db: db.execute(self._sql_purge, (now,)).rowcount)


class AsyncSQLiteRevocationStore(ThreadedRevocationStore):
    """Async twin of `SQLiteRevocationStore`: writes run in a worker thread, as for any sync
    store, but polls run inline (a read in WAL mode never waits for a writer)."""

    sync: SQLiteRevocationStore

    def __init__(self, store: SQLiteRevocationStore) -> None:
        super().__init__(store)

    @classmethod
    def wrapping(cls, store: SQLiteRevocationStore) -> AsyncSQLiteRevocationStore:
        """The async twin of `store`, sharing its connections."""
        return cls(store)

    def __repr__(self) -> str:
        return f"AsyncSQLiteRevocationStore({self.sync.path!r}, table={self.sync.table!r})"

    async def changes(self, cursor: int) -> tuple[list[Revocation], int]:
        return self.sync.changes(cursor)

    async def aclose(self) -> None:
        self.sync.close()
