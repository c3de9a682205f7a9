"""`SQLiteStore` and `SQLiteRevocationStore`: the embedded default, shared by every process
on one machine.

One table in a SQLite file, in WAL mode so readers never wait for writers and many worker
processes can serve one set of sessions. Every operation is a single statement or a short
`BEGIN IMMEDIATE` transaction, so the compare-and-set on `version` is atomic across
processes. Writers that find the database locked wait up to `timeout` seconds, then fail
with `StoreUnavailable`. Expired rows are invisible at once and deleted in small batches
(`purge_expired`, also run every `purge_interval` seconds by a writing process), so purging
never holds the write lock for long.

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
from ..revocation import Revocation, decode_rows, encode_entry
from .base import Record

__all__ = ["AsyncSQLiteRevocationStore", "AsyncSQLiteStore", "SQLiteRevocationStore", "SQLiteStore"]

T = TypeVar("T")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
PURGE_BATCH = 500
SETUP_TIMEOUT = 10.0  # seconds a new connection may retry its set-up while others hold locks


class _Busy(StoreUnavailable):
    """The database was locked and the connection was not allowed to wait."""


class _Connection(sqlite3.Connection):
    """A connection that can be weakly referenced, so `close` can find every thread's."""


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

    def _create(self) -> None:
        """Create the file and the table now: fail at start-up, not at the first request.

        Processes that start together race to create the file, switch it to WAL and create
        the table, and SQLite answers some of those steps "locked" at once, without waiting
        for the busy timeout: at start-up (never on a request's path) that is retried.
        """
        deadline = time.monotonic() + max(self.timeout, SETUP_TIMEOUT)
        while True:
            try:
                self._run(lambda db: None)
                return
            except _Busy:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01 + random.random() * 0.04)  # noqa: S311 - jitter, not a secret

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
                self._local.db = (epoch, db)
        return db

    def _open(self) -> _Connection:
        db = _Connection(
            self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
        )
        try:
            db.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                db.execute("PRAGMA journal_mode = WAL")
            self._prepare(db)
        except BaseException:
            db.close()
            raise
        return db

    def _prepare(self, db: sqlite3.Connection) -> None:
        """Set up a new connection: settings, and the tables if they do not exist."""
        raise NotImplementedError

    def _run(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        try:
            if self._private:
                with self._turn:
                    return operation(self._connection())
            return operation(self._connection())
        except sqlite3.OperationalError as exc:
            message = str(exc)
            if "locked" in message or "busy" in message:
                raise _Busy(f"{self._what} {self.path!r} is locked: {message}") from None
            if "unable to open" in message:
                raise StoreUnavailable(
                    f"{self._what} {self.path!r} cannot be opened: {message} "
                    "(does its directory exist, and may this process write there?)"
                ) from None
            raise StoreUnavailable(f"{self._what} {self.path!r} failed: {message}") from None
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"{self._what} {self.path!r} failed: {exc}") from None

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


class SQLiteStore(_Database):
    """Sessions in the SQLite file at `path` (created with its table on first use).

    Each thread uses its own connection. `:memory:` (or "") names a database private to one
    connection, so such a store keeps a single connection that its threads take turns on.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = "sessions.db",
        *,
        table: str = "coatcheck_sessions",
        timeout: float = 5.0,  # seconds a writer waits for the lock
        purge_interval: float = 300.0,  # seconds between opportunistic purges
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(path, table=table, timeout=timeout, clock=clock)
        self.purge_interval = purge_interval
        self._next_purge = clock() + purge_interval
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
        self._create()

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
        row = self._run(lambda db: db.execute(self._sql_load, (key, self._clock())).fetchone())
        return None if row is None else Record(row[0], row[1])

    def save(self, key: str, data: bytes, *, version: int, ttl: float, user: str | None) -> bool:
        now = self._clock()
        args: tuple[object, ...]
        if version == 0:
            sql, args = self._sql_create, (key, data, now + ttl, user, now)
        else:
            sql, args = self._sql_update, (data, now + ttl, user, key, version, now)
        saved = self._run(lambda db: db.execute(sql, args).rowcount) == 1
        if self._purge_due(now):
            self._purge_quietly()
        return saved

    def _purge_due(self, now: float) -> bool:
        """Whether an opportunistic purge is due; if so, the next one is scheduled."""
        if now < self._next_purge:
            return False
        self._next_purge = now + self.purge_interval
        return True

    def _purge_quietly(self) -> None:
        try:
            self.purge_expired()
        except StoreError:
            pass  # the write before it is done; a purge that found the database busy can wait

    def rotate(
        self,
        old_key: str,
        new_key: str,
        data: bytes,
        *,
        version: int,
        ttl: float,
        user: str | None,
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
        now = self._clock()
        total = 0
        last: str | None = None  # the last key of the previous window
        while True:
            if last is None:
                end = self._scalar(self._sql_first_window, ())
            else:
                end = self._scalar(self._sql_next_window, (last,))
            if end is None:  # past the last key
                return total
            if last is None:
                total += self._rowcount(self._sql_purge_first, (end, now))
            else:
                total += self._rowcount(self._sql_purge_next, (last, end, now))
            last = end

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
    without blocking the loop. Purges, whose length depends on the backlog, always run in a
    worker thread.
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
        # The loop's connection never purges: `save` hands purges to a thread (see there).
        self._nowait = store if store._private else SQLiteStore(
            store.path, table=store.table, timeout=0,
            purge_interval=math.inf, clock=store._clock,
        )  # fmt: skip

    @classmethod
    def wrapping(cls, store: SQLiteStore) -> AsyncSQLiteStore:
        """The async twin of an existing `SQLiteStore`: its database, table and settings."""
        twin = cls.__new__(cls)
        twin._attach(store)
        return twin

    def __repr__(self) -> str:
        return f"AsyncSQLiteStore({self.sync.path!r}, table={self.sync.table!r})"

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
        if self._nowait is not self.sync and self.sync._purge_due(self.sync._clock()):
            # Purging a backlog takes as long as it takes: never on the event loop.
            await asyncio.to_thread(self.sync._purge_quietly)
        return saved

    async def rotate(
        self,
        old_key: str,
        new_key: str,
        data: bytes,
        *,
        version: int,
        ttl: float,
        user: str | None,
    ) -> bool:
        rotated = await self._call(
            "rotate", old_key, new_key, data, version=version, ttl=ttl, user=user
        )
        return bool(rotated)

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
        self.sync.close()


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
        self._sql_changes = f"SELECT seq, entry FROM {t} WHERE seq > ? ORDER BY seq"  # noqa: S608
        self._sql_purge = f"DELETE FROM {t} WHERE expires_at <= ?"  # noqa: S608
        self._create()

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


class AsyncSQLiteRevocationStore:
    """Async twin of `SQLiteRevocationStore`; writes run in a worker thread, polls inline
    (a read in WAL mode never waits for a writer)."""

    def __init__(self, store: SQLiteRevocationStore) -> None:
        self.sync = store

    def __repr__(self) -> str:
        return f"AsyncSQLiteRevocationStore({self.sync.path!r}, table={self.sync.table!r})"

    async def revoke(self, entry: Revocation) -> None:
        await asyncio.to_thread(self.sync.revoke, entry)

    async def changes(self, cursor: int) -> tuple[list[Revocation], int]:
        return self.sync.changes(cursor)

    async def purge_expired(self) -> int:
        return await asyncio.to_thread(self.sync.purge_expired)

    async def aclose(self) -> None:
        self.sync.close()
