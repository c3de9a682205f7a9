"""Revocations in PostgreSQL (psycopg 3), with a LISTEN/NOTIFY push feed.

One table, created on first use (or by `create_schema()`):

```sql
CREATE TABLE coatcheck_revocations (
    seq BIGSERIAL PRIMARY KEY,                 -- the change feed's cursor
    entry TEXT NOT NULL,                       -- JSON [kind, subject, at, expires_at]
    expires_at DOUBLE PRECISION NOT NULL);     -- Unix time, seconds; indexed
```

`revoke` is one statement: it takes a transaction-level advisory lock, inserts the row and
calls `pg_notify(<table>, '<seq> <entry>')`. The lock makes sequence numbers commit in
order: without it, a poll could see row 11 committed while row 10's transaction is still
open, move its cursor past 10 and never see it. Revocations are rare; the lock serialises
only them. `changes(cursor)` is one indexed `SELECT ... WHERE seq > cursor`.
`purge_expired` deletes in batches of `PURGE_BATCH` rows (`FOR UPDATE SKIP LOCKED`), so it
never holds many locks.

`listen(callback)` keeps one dedicated connection in `LISTEN` (a daemon thread; a task for
the async twin) and hands each notified entry to `callback` at once, typically
`RevocationList.apply_one`. A notification sent while that connection is down is lost; the
drivers' poll every `staleness` seconds is the resync that corrects it, so correctness never
depends on the listener. Notifications are dropped for entries too long for a NOTIFY
payload (8000 bytes); the poll delivers those.

Errors: a server that is down or slow raises `StoreUnavailable`, as `PostgresStore` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from .exceptions import ConfigurationError
from .revocation import Revocation, decode_entry, encode_entry
from .stores.postgres import _IDENTIFIER, _connection_options, _translated

__all__ = ["AsyncPostgresRevocationStore", "PostgresRevocationStore"]

T = TypeVar("T")
logger = logging.getLogger("coatcheck.revocation")

PURGE_BATCH = 1000
#: Longest entry sent in a NOTIFY payload (PostgreSQL's limit is 8000 bytes).
MAX_PAYLOAD = 7900
#: Seconds between a listener's reconnection attempts while the server is away.
RECONNECT_DELAY = 0.5
#: Seconds a listener waits for a notification before checking whether it should stop.
POLL_INTERVAL = 0.2

Callback = Callable[[Revocation], None]


def _deliver(callbacks: list[Callback], payload: str) -> None:
    """Hand one notified entry to every callback; a malformed payload or a failing
    callback is logged and skipped, never fatal to the listener."""
    _, _, doc = payload.partition(" ")
    try:
        entry = decode_entry(doc)
    except (ValueError, TypeError):
        if doc:  # an empty payload is an entry too long to notify: the poll brings it
            logger.warning("ignored a notification on the revocation channel: not an entry")
        return
    for callback in callbacks:
        try:
            callback(entry)
        except Exception:
            logger.exception("revocation listener callback failed")


class _Sql:
    def __init__(self, table: str) -> None:
        if not _IDENTIFIER.fullmatch(table):
            raise ConfigurationError(f"PostgreSQL table name {table!r} is not a plain identifier")
        t = table
        self.table = table
        # Two advisory locks: one orders revocations, one guards creating the schema. One
        # for both deadlocks: an INSERT holds its table lock while it waits for the
        # advisory lock, and CREATE INDEX IF NOT EXISTS waits for that table lock.
        self.lock_name = f"coatcheck:revocations:{table}"
        self.schema_lock_name = f"coatcheck:revocations-schema:{table}"
        self.schema = [
            "SELECT pg_advisory_xact_lock(hashtext(%s))",
            f"CREATE TABLE IF NOT EXISTS {t} (seq BIGSERIAL PRIMARY KEY, entry TEXT NOT NULL, "
            "expires_at DOUBLE PRECISION NOT NULL)",
            f"CREATE INDEX IF NOT EXISTS {t}_expires ON {t} (expires_at)",
        ]
        self.revoke = (
            "WITH l AS (SELECT pg_advisory_xact_lock(hashtext(%(lock)s))), "  # noqa: S608
            f"r AS (INSERT INTO {t} (entry, expires_at) SELECT %(entry)s, %(expires)s "
            "FROM l RETURNING seq) "
            "SELECT pg_notify(%(channel)s, r.seq::text || ' ' || %(payload)s) FROM r"
        )
        self.changes = f"SELECT seq, entry FROM {t} WHERE seq > %s ORDER BY seq"  # noqa: S608
        self.purge = (
            f"DELETE FROM {t} WHERE seq IN (SELECT seq FROM {t} WHERE expires_at <= %s "  # noqa: S608
            f"LIMIT {PURGE_BATCH} FOR UPDATE SKIP LOCKED)"
        )
        self.listen = sql.SQL("LISTEN {}").format(sql.Identifier(table))

    def revoke_args(self, entry: Revocation) -> dict[str, Any]:
        doc = encode_entry(entry)
        payload = doc if len(doc) <= MAX_PAYLOAD else ""
        return {"lock": self.lock_name, "entry": doc, "expires": entry.expires_at,
                "channel": self.table, "payload": payload}  # fmt: skip

    @staticmethod
    def parse(rows: list[tuple[int, str]], cursor: int) -> tuple[list[Revocation], int]:
        return [decode_entry(doc) for _, doc in rows], rows[-1][0] if rows else cursor


def _listen_options(conninfo: str, timeout: float) -> dict[str, Any]:
    """The dedicated LISTEN connection: autocommit, and TCP keepalives so that a server
    that vanished without closing the connection is noticed."""
    options = _connection_options(conninfo, timeout)
    options.update(keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=2)
    return options


class _Base:
    _conninfo: str | None
    timeout: float
    _callbacks: list[Callback]

    def _setup(self, table: str, timeout: float, clock: Callable[[], float]) -> None:
        self._sql = _Sql(table)
        self.table = table
        self.timeout = timeout
        self._clock = clock
        self._ready = False
        self._callbacks = []
        #: Set while the listener's connection is in LISTEN (cleared while it reconnects).
        self.listening = threading.Event()

    def _listen_conninfo(self) -> str:
        if self._conninfo is None:
            raise ConfigurationError(
                "listen() needs the store built from a connection string, or a pool whose "
                "conninfo is a string"
            )
        return self._conninfo


class PostgresRevocationStore(_Base):
    """Revocations in PostgreSQL table `table`.

    `conninfo` is a URL (`postgresql://user:password@host:5432/db`) or a libpq connection
    string, or an existing `psycopg_pool.ConnectionPool`, which the store then neither
    configures nor closes. `timeout` bounds waiting for a connection and each statement, in
    seconds. `clock` decides which entries have expired.
    """

    def __init__(
        self,
        conninfo: str | ConnectionPool[Any],
        *,
        table: str = "coatcheck_revocations",
        timeout: float = 1.0,  # seconds, waiting for a connection and per statement
        max_size: int = 4,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._setup(table, timeout, clock)
        self._owned = isinstance(conninfo, str)
        if isinstance(conninfo, str):
            self._conninfo: str | None = conninfo
            self.pool: ConnectionPool[Any] = ConnectionPool(
                conninfo, kwargs=_connection_options(conninfo, timeout), min_size=1,
                max_size=max_size, timeout=timeout, check=ConnectionPool.check_connection,
                open=False, name=f"coatcheck-{table}",
            )  # fmt: skip
        else:
            self.pool = conninfo
            self._conninfo = conninfo.conninfo if isinstance(conninfo.conninfo, str) else None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"<PostgresRevocationStore table={self.table!r}>"

    def create_schema(self) -> None:
        """Create the table and its index if they do not exist (safe to run concurrently)."""
        with _translated(), self._lock:
            if self._owned and self.pool.closed:
                self.pool.open(wait=False)
            with self.pool.connection() as conn, conn.transaction():
                conn.execute(self._sql.schema[0], (self._sql.schema_lock_name,))
                for statement in self._sql.schema[1:]:
                    conn.execute(statement)
            self._ready = True

    def _run(self, operation: Callable[[psycopg.Connection[Any]], T]) -> T:
        with _translated():
            if not self._ready:
                self.create_schema()
            with self.pool.connection() as conn:
                return operation(conn)

    def revoke(self, entry: Revocation) -> None:
        statement, args = self._sql.revoke, self._sql.revoke_args(entry)
        self._run(lambda conn: conn.execute(statement, args))

    def changes(self, cursor: int) -> tuple[list[Revocation], int]:
        statement = self._sql.changes
        rows = self._run(lambda conn: conn.execute(statement, (cursor,)).fetchall())
        return self._sql.parse(rows, cursor)

    def purge_expired(self) -> int:
        statement, args = self._sql.purge, (self._clock(),)
        total = 0
        while True:
            removed = self._run(lambda conn: conn.execute(statement, args).rowcount)
            total += removed
            if removed < PURGE_BATCH:
                return total

    # -- push feed -------------------------------------------------------------------------

    def listen(self, callback: Callback) -> None:
        """Hand every entry notified from now on to `callback` (called on the listener's
        thread). The first call starts the listener; `close()` stops it."""
        conninfo = self._listen_conninfo()
        with self._lock:
            self._callbacks.append(callback)
            if self._thread is None:
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._run_listener, args=(conninfo,), name="coatcheck-revocations",
                    daemon=True,
                )  # fmt: skip
                self._thread.start()

    def _run_listener(self, conninfo: str) -> None:
        options = _listen_options(conninfo, self.timeout)
        while not self._stop.is_set():
            try:
                with psycopg.connect(conninfo, **options) as conn:
                    conn.execute(self._sql.listen)
                    self.listening.set()
                    while not self._stop.is_set():
                        for notify in conn.notifies(timeout=POLL_INTERVAL):
                            _deliver(self._callbacks, notify.payload)
            except psycopg.Error:
                self.listening.clear()
                self._stop.wait(RECONNECT_DELAY)
            except Exception:  # a listener that dies silently would go unnoticed: go on
                logger.exception("revocation listener failed; reconnecting")
                self._stop.wait(RECONNECT_DELAY)
            finally:
                self.listening.clear()

    def close(self) -> None:
        """Stop the listener and, if the store made its pool, close it."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._callbacks.clear()
        if thread is not None:
            self._stop.set()
            thread.join(timeout=5 * (POLL_INTERVAL + self.timeout + RECONNECT_DELAY) + 10)
        if self._owned:
            self.pool.close()


class AsyncPostgresRevocationStore(_Base):
    """Async twin of `PostgresRevocationStore` (on `psycopg_pool.AsyncConnectionPool`); the
    pool opens on first use and the listener is a task in the loop that calls `listen`."""

    def __init__(
        self,
        conninfo: str | AsyncConnectionPool[Any],
        *,
        table: str = "coatcheck_revocations",
        timeout: float = 1.0,  # seconds, waiting for a connection and per statement
        max_size: int = 4,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._setup(table, timeout, clock)
        self._owned = isinstance(conninfo, str)
        if isinstance(conninfo, str):
            self._conninfo: str | None = conninfo
            self.pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
                conninfo, kwargs=_connection_options(conninfo, timeout), min_size=1,
                max_size=max_size, timeout=timeout, check=AsyncConnectionPool.check_connection,
                open=False, name=f"coatcheck-{table}",
            )  # fmt: skip
        else:
            self.pool = conninfo
            self._conninfo = conninfo.conninfo if isinstance(conninfo.conninfo, str) else None
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def wrapping(cls, store: PostgresRevocationStore) -> AsyncPostgresRevocationStore | None:
        """An async store on the same database, table and clock as `store`, with its own
        pool; None if `store` was given a pool rather than a connection string."""
        if not store._owned or store._conninfo is None:
            return None
        return cls(store._conninfo, table=store.table, timeout=store.timeout,
                   clock=store._clock)  # fmt: skip

    def __repr__(self) -> str:
        return f"<AsyncPostgresRevocationStore table={self.table!r}>"

    async def create_schema(self) -> None:
        """Create the table and its index if they do not exist (safe to run concurrently)."""
        with _translated():
            if self._owned and self.pool.closed:
                await self.pool.open(wait=False)
            async with self.pool.connection() as conn, conn.transaction():
                await conn.execute(self._sql.schema[0], (self._sql.schema_lock_name,))
                for statement in self._sql.schema[1:]:
                    await conn.execute(statement)
            self._ready = True

    async def _run(self, operation: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
        with _translated():
            if not self._ready:
                await self.create_schema()
            async with self.pool.connection() as conn:
                return await operation(conn)

    async def revoke(self, entry: Revocation) -> None:
        statement, args = self._sql.revoke, self._sql.revoke_args(entry)

        async def run(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(statement, args)

        await self._run(run)

    async def changes(self, cursor: int) -> tuple[list[Revocation], int]:
        statement = self._sql.changes

        async def run(conn: psycopg.AsyncConnection[Any]) -> list[tuple[int, str]]:
            return await (await conn.execute(statement, (cursor,))).fetchall()

        return self._sql.parse(await self._run(run), cursor)

    async def purge_expired(self) -> int:
        statement, args = self._sql.purge, (self._clock(),)

        async def run(conn: psycopg.AsyncConnection[Any]) -> int:
            return (await conn.execute(statement, args)).rowcount

        total = 0
        while True:
            removed = await self._run(run)
            total += removed
            if removed < PURGE_BATCH:
                return total

    def listen(self, callback: Callback) -> None:
        """Hand every entry notified from now on to `callback`, from a task in the running
        event loop (call it from inside that loop). `aclose()` stops it."""
        conninfo = self._listen_conninfo()
        self._callbacks.append(callback)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run_listener(conninfo))

    async def _run_listener(self, conninfo: str) -> None:
        options = _listen_options(conninfo, self.timeout)
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(conninfo, **options)
                async with conn:
                    await conn.execute(self._sql.listen)
                    self.listening.set()
                    async for notify in conn.notifies():
                        _deliver(self._callbacks, notify.payload)
            except psycopg.Error:
                self.listening.clear()
                await asyncio.sleep(RECONNECT_DELAY)
            except Exception:  # a listener that dies silently would go unnoticed: go on
                logger.exception("revocation listener failed; reconnecting")
                await asyncio.sleep(RECONNECT_DELAY)
            finally:
                self.listening.clear()

    async def aclose(self) -> None:
        """Stop the listener and, if the store made its pool, close it."""
        task, self._task = self._task, None
        self._callbacks.clear()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._owned:
            await self.pool.close()
