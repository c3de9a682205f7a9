"""`PostgresStore` and `PostgresRevocationStore`: sessions and revocations shared by many
machines through PostgreSQL (psycopg 3), with a LISTEN/NOTIFY push feed.

Sessions live in one table, created on first use (or by `create_schema()`, for deployments
where the app's database role may not create tables):

```sql
CREATE TABLE coatcheck_sessions (
    key TEXT PRIMARY KEY, data BYTEA NOT NULL, version BIGINT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,  -- Unix time, seconds
    user_id TEXT);                          -- partial index where not null
```

Every operation is a single statement on an autocommit connection from a `psycopg_pool`
pool, so each is atomic and costs one round trip (plus the pool's connection check):
`save` is an `INSERT ... ON CONFLICT DO UPDATE ... WHERE` (create, or take over an expired
row) or an `UPDATE ... WHERE version = %s`; `rotate` writes the new row from a
data-modifying CTE that deletes the old one only at the expected version, so both happen
or neither. Expired rows are invisible at once and removed by
`purge_expired` in batches of `PURGE_BATCH` rows (`FOR UPDATE SKIP LOCKED`), so purging
never holds many row locks or waits on a busy session.

Expiry times come from `clock` (the app server's clock, like `SQLiteStore`), so replicas
need synchronised clocks, as they do for the cookie's lifetimes anyway.

Revocations live in a table of their own, also created on first use:

```sql
CREATE TABLE coatcheck_revocations (
    seq BIGSERIAL PRIMARY KEY,                 -- the change feed's cursor
    entry TEXT NOT NULL,                       -- the entry, as `encode_entry` writes it
    expires_at DOUBLE PRECISION NOT NULL);     -- Unix time, seconds; indexed
```

`revoke` is one statement: it takes a transaction-level advisory lock, inserts the row and
calls `pg_notify(<table>, '<seq> <entry>')`. The lock makes sequence numbers commit in
order: without it, a poll could see row 11 committed while row 10's transaction is still
open, move its cursor past 10 and never see it. Revocations are rare; the lock serialises
only them. `changes(cursor)` is one indexed `SELECT ... WHERE seq > cursor`.
`listen(callback)` keeps one dedicated connection in `LISTEN` (see `stores.feed`: a daemon
thread; a task for the async twin) and hands each notified entry to `callback` at once,
typically `RevocationList.apply_one`. Entries too long for a NOTIFY payload (8000 bytes)
are notified empty; the poll delivers those.

Both kinds of store share their pool, schema creation and error mapping (`_Pooled`,
`_AsyncPooled`). A server that is down, refuses connections or does not answer within
`timeout` raises `StoreUnavailable`; the pool checks each connection before handing it
out and replaces broken ones, so service resumes by itself when the server is back.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from ..exceptions import ConfigurationError, StoreError, StoreUnavailable
from ..revocation import Revocation, decode_entry, decode_rows, encode_entry
from .base import Record
from .feed import POLL_INTERVAL, RECONNECT_DELAY, SUBSCRIBED, AsyncListener, Listener

__all__ = [
    "AsyncPostgresRevocationStore",
    "AsyncPostgresStore",
    "PostgresRevocationStore",
    "PostgresStore",
]

T = TypeVar("T")
PURGE_BATCH = 1000
#: Longest entry sent in a NOTIFY payload (PostgreSQL's limit is 8000 bytes).
MAX_PAYLOAD = 7900
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,40}")


def _describe(exc: psycopg.Error) -> str:
    """The failure's first line; libpq messages name host, port and user, never passwords."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        # PoolTimeout, connection failures, QueryCanceled (statement_timeout) and closed
        # connections all land here.
        raise StoreUnavailable(f"PostgreSQL store unavailable ({_describe(exc)})") from None
    except psycopg.Error as exc:
        raise StoreError(f"PostgreSQL store failed ({_describe(exc)})") from None


def _check_table(table: str) -> None:
    if not _IDENTIFIER.fullmatch(table):
        raise ConfigurationError(f"PostgreSQL table name {table!r} is not a plain identifier")


class _Sql:
    """The statements for one table of sessions, built once."""

    def __init__(self, table: str) -> None:
        _check_table(table)
        t = table
        self.table = table
        self.schema_lock = f"coatcheck:{table}"
        self.schema = [
            "SELECT pg_advisory_xact_lock(hashtext(%s))",  # concurrent first uses: one creates
            f"CREATE TABLE IF NOT EXISTS {t} (key TEXT PRIMARY KEY, data BYTEA NOT NULL, "
            "version BIGINT NOT NULL, expires_at DOUBLE PRECISION NOT NULL, user_id TEXT)",
            f"CREATE INDEX IF NOT EXISTS {t}_user ON {t} (user_id) WHERE user_id IS NOT NULL",
            f"CREATE INDEX IF NOT EXISTS {t}_expires ON {t} (expires_at)",
        ]
        self.load = f"SELECT data, version FROM {t} WHERE key = %s AND expires_at > %s"  # noqa: S608
        self.create = (
            f"INSERT INTO {t} AS s (key, data, version, expires_at, user_id) "  # noqa: S608
            "VALUES (%s, %s, 1, %s, %s) ON CONFLICT (key) DO UPDATE SET data = EXCLUDED.data, "
            "version = 1, expires_at = EXCLUDED.expires_at, user_id = EXCLUDED.user_id "
            "WHERE s.expires_at <= %s"
        )
        self.update = (
            f"UPDATE {t} SET data = %s, version = version + 1, expires_at = %s, user_id = %s "  # noqa: S608
            "WHERE key = %s AND version = %s AND expires_at > %s"
        )
        put_new = (
            f"INSERT INTO {t} AS s (key, data, version, expires_at, user_id) "  # noqa: S608
            "SELECT %(new)s::text, %(data)s::bytea, 1, %(expires)s::float8, %(user)s::text "
            "FROM old ON CONFLICT (key) DO UPDATE SET data = EXCLUDED.data, version = 1, "
            "expires_at = EXCLUDED.expires_at, user_id = EXCLUDED.user_id"
        )
        self.rotate = (
            f"WITH old AS (DELETE FROM {t} WHERE key = %(old)s AND version = %(version)s "  # noqa: S608
            "AND expires_at > %(now)s RETURNING 1) " + put_new
        )
        self.delete = f"DELETE FROM {t} WHERE key = %s"  # noqa: S608
        self.list_user = (
            f"SELECT key, data, version FROM {t} WHERE user_id = %s AND expires_at > %s"  # noqa: S608
        )
        self.delete_user = (
            f"WITH gone AS (DELETE FROM {t} WHERE user_id = %s AND key IS DISTINCT FROM %s "  # noqa: S608
            "RETURNING expires_at) SELECT count(*) FROM gone WHERE expires_at > %s"
        )
        self.purge = (
            f"DELETE FROM {t} WHERE key IN (SELECT key FROM {t} WHERE expires_at <= %s "  # noqa: S608
            f"LIMIT {PURGE_BATCH} FOR UPDATE SKIP LOCKED)"
        )

    def save(
        self, key: str, data: bytes, version: int, expires: float, user: str | None, now: float
    ) -> tuple[str, tuple[Any, ...]]:
        if version == 0:
            return self.create, (key, data, expires, user, now)
        return self.update, (data, expires, user, key, version, now)

    @staticmethod
    def rotate_args(
        old_key: str, new_key: str, data: bytes, version: int, ttl: float, user: str | None,
        now: float,
    ) -> dict[str, Any]:  # fmt: skip
        return {
            "old": old_key, "new": new_key, "data": data, "version": version,
            "expires": now + ttl, "user": user, "now": now,
        }  # fmt: skip


def _connection_options(url: str, timeout: float) -> dict[str, Any]:
    """Connection settings that the URL does not set already: autocommit, a connect timeout
    (libpq's minimum is 2 s) and a statement timeout."""
    try:
        given = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        raise ConfigurationError("PostgreSQL URL is not a valid connection string") from None
    options: dict[str, Any] = {"autocommit": True}
    if "connect_timeout" not in given:
        options["connect_timeout"] = max(2, math.ceil(timeout))
    if "options" not in given:
        options["options"] = f"-c statement_timeout={max(1, round(timeout * 1000))}"
    return options


#: The statements of a table: sessions or revocations.
S = TypeVar("S", "_Sql", "_RevocationSql")


class _Pooled(Generic[S]):
    """A sync store's pool (made from a connection string, which the store then owns and
    closes, or given), its schema, created on first use, and its errors mapped."""

    _sql: S

    def _set_pool(
        self,
        conninfo: str | ConnectionPool[Any],
        *,
        table: str,
        timeout: float,
        min_size: int,
        max_size: int,
        clock: Callable[[], float],
    ) -> None:
        self.table = table
        self.timeout = timeout
        self._clock = clock
        self._owned = isinstance(conninfo, str)
        if isinstance(conninfo, str):
            self._conninfo: str | None = conninfo
            self.pool: ConnectionPool[Any] = ConnectionPool(
                conninfo,
                kwargs=_connection_options(conninfo, timeout),
                min_size=min_size,
                max_size=max_size,
                timeout=timeout,
                check=ConnectionPool.check_connection,
                open=False,
                name=f"coatcheck-{table}",
            )
        else:
            self.pool = conninfo
            self._conninfo = conninfo.conninfo if isinstance(conninfo.conninfo, str) else None
        self._lock = threading.Lock()
        self._ready = False

    def _run(self, operation: Callable[[psycopg.Connection[Any]], T]) -> T:
        with _translated():
            if not self._ready:
                self.create_schema()
            with self.pool.connection() as conn:
                return operation(conn)

    def create_schema(self) -> None:
        """Create the table and its indexes if they do not exist (safe to run concurrently)."""
        with _translated(), self._lock:
            if self._owned and self.pool.closed:
                self.pool.open(wait=False)
            with self.pool.connection() as conn, conn.transaction():
                conn.execute(self._sql.schema[0], (self._sql.schema_lock,))
                for statement in self._sql.schema[1:]:
                    conn.execute(statement)
            self._ready = True

    def close(self) -> None:
        """Close the pool if the store made it."""
        if self._owned:
            self.pool.close()


class _AsyncPooled(Generic[S]):
    """`_Pooled` for an async store: the pool opens on first use, inside the event loop."""

    _sql: S

    def _set_pool(
        self,
        conninfo: str | AsyncConnectionPool[Any],
        *,
        table: str,
        timeout: float,
        min_size: int,
        max_size: int,
        clock: Callable[[], float],
    ) -> None:
        self.table = table
        self.timeout = timeout
        self._clock = clock
        self._owned = isinstance(conninfo, str)
        if isinstance(conninfo, str):
            self._conninfo: str | None = conninfo
            self.pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
                conninfo,
                kwargs=_connection_options(conninfo, timeout),
                min_size=min_size,
                max_size=max_size,
                timeout=timeout,
                check=AsyncConnectionPool.check_connection,
                open=False,
                name=f"coatcheck-{table}",
            )
        else:
            self.pool = conninfo
            self._conninfo = conninfo.conninfo if isinstance(conninfo.conninfo, str) else None
        self._ready = False

    async def _run(self, operation: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
        with _translated():
            if not self._ready:
                await self.create_schema()
            async with self.pool.connection() as conn:
                return await operation(conn)

    async def _rowcount(self, statement: str, args: Any) -> int:
        async def run(conn: psycopg.AsyncConnection[Any]) -> int:
            return (await conn.execute(statement, args)).rowcount

        return await self._run(run)

    async def create_schema(self) -> None:
        """Create the table and its indexes if they do not exist (safe to run concurrently)."""
        with _translated():
            if self._owned and self.pool.closed:
                await self.pool.open(wait=False)
            async with self.pool.connection() as conn, conn.transaction():
                await conn.execute(self._sql.schema[0], (self._sql.schema_lock,))
                for statement in self._sql.schema[1:]:
                    await conn.execute(statement)
            self._ready = True

    async def aclose(self) -> None:
        """Close the pool if the store made it."""
        if self._owned:
            await self.pool.close()


class PostgresStore(_Pooled[_Sql]):
    """Sessions in PostgreSQL table `table`.

    `conninfo` is a URL (`postgresql://user:password@host:5432/db`) or a libpq connection
    string, or an existing `psycopg_pool.ConnectionPool`, which the store then neither
    configures nor closes. `timeout` bounds waiting for a pooled connection and each
    statement, in seconds.
    """

    def __init__(
        self,
        conninfo: str | ConnectionPool[Any],
        *,
        table: str = "coatcheck_sessions",
        timeout: float = 1.0,  # seconds, waiting for a connection and per statement
        min_size: int = 1,
        max_size: int = 10,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sql = _Sql(table)
        self._set_pool(conninfo, table=table, timeout=timeout, min_size=min_size,
                       max_size=max_size, clock=clock)  # fmt: skip

    def __repr__(self) -> str:
        return f"<PostgresStore table={self.table!r}>"

    def load(self, key: str) -> Record | None:
        sql, now = self._sql.load, self._clock()
        row = self._run(lambda conn: conn.execute(sql, (key, now)).fetchone())
        return None if row is None else Record(bytes(row[0]), row[1])

    def save(self, key: str, data: bytes, *, version: int, ttl: float, user: str | None) -> bool:
        now = self._clock()
        sql, args = self._sql.save(key, data, version, now + ttl, user, now)
        return self._run(lambda conn: conn.execute(sql, args).rowcount) == 1

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
        sql, params = (
            self._sql.rotate,
            self._sql.rotate_args(old_key, new_key, data, version, ttl, user, self._clock()),
        )
        return self._run(lambda conn: conn.execute(sql, params).rowcount) == 1

    def delete(self, key: str) -> None:
        sql = self._sql.delete
        self._run(lambda conn: conn.execute(sql, (key,)))

    def list_user(self, user: str) -> list[tuple[str, Record]]:
        sql, now = self._sql.list_user, self._clock()
        rows = self._run(lambda conn: conn.execute(sql, (user, now)).fetchall())
        return [(key, Record(bytes(data), version)) for key, data, version in rows]

    def delete_user(self, user: str, *, keep: str | None = None) -> int:
        sql, now = self._sql.delete_user, self._clock()
        row = self._run(lambda conn: conn.execute(sql, (user, keep, now)).fetchone())
        return 0 if row is None else int(row[0])

    def purge_expired(self) -> int:
        sql, args = self._sql.purge, (self._clock(),)
        total = 0
        while True:
            removed = self._run(lambda conn: conn.execute(sql, args).rowcount)
            total += removed
            if removed < PURGE_BATCH:
                return total


class AsyncPostgresStore(_AsyncPooled[_Sql]):
    """The async twin of `PostgresStore` (on `psycopg_pool.AsyncConnectionPool`), with the
    same table layout and options; the pool opens on first use, inside the event loop."""

    def __init__(
        self,
        conninfo: str | AsyncConnectionPool[Any],
        *,
        table: str = "coatcheck_sessions",
        timeout: float = 1.0,  # seconds, waiting for a connection and per statement
        min_size: int = 1,
        max_size: int = 10,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sql = _Sql(table)
        self._set_pool(conninfo, table=table, timeout=timeout, min_size=min_size,
                       max_size=max_size, clock=clock)  # fmt: skip

    @classmethod
    def wrapping(cls, store: PostgresStore) -> AsyncPostgresStore | None:
        """An async store on the same database and table as `store`, with its own pool;
        None if `store` was given a pool rather than a connection string."""
        if not store._owned or store._conninfo is None:
            return None
        return cls(store._conninfo, table=store.table, timeout=store.timeout, clock=store._clock)

    def __repr__(self) -> str:
        return f"<AsyncPostgresStore table={self.table!r}>"

    async def load(self, key: str) -> Record | None:
        sql, now = self._sql.load, self._clock()

        async def run(conn: psycopg.AsyncConnection[Any]) -> Any:
            return await (await conn.execute(sql, (key, now))).fetchone()

        row = await self._run(run)
        return None if row is None else Record(bytes(row[0]), row[1])

    async def save(
        self, key: str, data: bytes, *, version: int, ttl: float, user: str | None
    ) -> bool:
        now = self._clock()
        sql, args = self._sql.save(key, data, version, now + ttl, user, now)
        return await self._rowcount(sql, args) == 1

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
        params = self._sql.rotate_args(old_key, new_key, data, version, ttl, user, self._clock())
        return await self._rowcount(self._sql.rotate, params) == 1

    async def delete(self, key: str) -> None:
        await self._rowcount(self._sql.delete, (key,))

    async def list_user(self, user: str) -> list[tuple[str, Record]]:
        sql, now = self._sql.list_user, self._clock()

        async def run(conn: psycopg.AsyncConnection[Any]) -> list[Any]:
            return await (await conn.execute(sql, (user, now))).fetchall()

        rows = await self._run(run)
        return [(key, Record(bytes(data), version)) for key, data, version in rows]

    async def delete_user(self, user: str, *, keep: str | None = None) -> int:
        sql, now = self._sql.delete_user, self._clock()

        async def run(conn: psycopg.AsyncConnection[Any]) -> Any:
            return await (await conn.execute(sql, (user, keep, now))).fetchone()

        row = await self._run(run)
        return 0 if row is None else int(row[0])

    async def purge_expired(self) -> int:
        args = (self._clock(),)
        total = 0
        while True:
            removed = await self._rowcount(self._sql.purge, args)
            total += removed
            if removed < PURGE_BATCH:
                return total


# -- revocations ---------------------------------------------------------------------------


class _RevocationSql:
    """The statements for one table of revocations, built once."""

    def __init__(self, table: str) -> None:
        _check_table(table)
        t = table
        self.table = table
        # Two advisory locks: one orders revocations, one guards creating the schema. One
        # for both deadlocks: an INSERT holds its table lock while it waits for the
        # advisory lock, and CREATE INDEX IF NOT EXISTS waits for that table lock.
        self.lock_name = f"coatcheck:revocations:{table}"
        self.schema_lock = f"coatcheck:revocations-schema:{table}"
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


def _notified(payload: str) -> Revocation | None:
    """The entry a notification `<seq> <entry>` carries; None if it was too long to notify
    (the poll brings it); ValueError if it is not an entry."""
    doc = payload.partition(" ")[2]
    return decode_entry(doc) if doc else None


def _listen_options(conninfo: str, timeout: float) -> dict[str, Any]:
    """The dedicated LISTEN connection: autocommit, and TCP keepalives so that a server
    that vanished without closing the connection is noticed."""
    options = _connection_options(conninfo, timeout)
    options.update(keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=2)
    return options


class _ListenTarget:
    """The LISTEN connection's settings, which both revocation twins check the same way."""

    _conninfo: str | None
    timeout: float

    def _listen_target(self) -> tuple[str, dict[str, Any]]:
        if self._conninfo is None:
            raise ConfigurationError(
                "listen() needs the store built from a connection string, or a pool whose "
                "conninfo is a string"
            )
        return self._conninfo, _listen_options(self._conninfo, self.timeout)


class PostgresRevocationStore(_ListenTarget, _Pooled[_RevocationSql]):
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
        self._sql = _RevocationSql(table)
        self._set_pool(conninfo, table=table, timeout=timeout, min_size=1, max_size=max_size,
                       clock=clock)  # fmt: skip
        self._listener = Listener(
            self._notifications, decode=_notified, errors=(psycopg.Error,),
            join_timeout=5 * (POLL_INTERVAL + timeout + RECONNECT_DELAY) + 10,
        )  # fmt: skip
        #: Set while the listener's connection is in LISTEN (cleared while it reconnects).
        self.listening = self._listener.listening

    def __repr__(self) -> str:
        return f"<PostgresRevocationStore table={self.table!r}>"

    def revoke(self, entry: Revocation) -> None:
        statement, args = self._sql.revoke, self._sql.revoke_args(entry)
        self._run(lambda conn: conn.execute(statement, args))

    def changes(self, cursor: int) -> tuple[list[Revocation], int]:
        statement = self._sql.changes
        rows = self._run(lambda conn: conn.execute(statement, (cursor,)).fetchall())
        return decode_rows(rows, cursor)

    def purge_expired(self) -> int:
        statement, args = self._sql.purge, (self._clock(),)
        total = 0
        while True:
            removed = self._run(lambda conn: conn.execute(statement, args).rowcount)
            total += removed
            if removed < PURGE_BATCH:
                return total

    def listen(self, callback: Callable[[Revocation], None]) -> None:
        """Hand every entry notified from now on to `callback` (called on the listener's
        thread). The first call starts the listener; `close()` stops it."""
        self._listen_target()  # a store that cannot listen says so now, not in the listener
        self._listener.listen(callback)

    def _notifications(self) -> Generator[object, None, None]:
        conninfo, options = self._listen_target()
        with psycopg.connect(conninfo, **options) as conn:
            conn.execute(self._sql.listen)
            yield SUBSCRIBED
            while True:
                yield None
                for notify in conn.notifies(timeout=POLL_INTERVAL):
                    yield notify.payload

    def close(self) -> None:
        """Stop the listener and, if the store made its pool, close it."""
        self._listener.stop()
        super().close()


class AsyncPostgresRevocationStore(_ListenTarget, _AsyncPooled[_RevocationSql]):
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
        self._sql = _RevocationSql(table)
        self._set_pool(conninfo, table=table, timeout=timeout, min_size=1, max_size=max_size,
                       clock=clock)  # fmt: skip
        self._listener = AsyncListener(
            self._notifications, decode=_notified, errors=(psycopg.Error,)
        )
        #: Set while the listener's connection is in LISTEN (cleared while it reconnects).
        self.listening = self._listener.listening

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

    async def revoke(self, entry: Revocation) -> None:
        await self._rowcount(self._sql.revoke, self._sql.revoke_args(entry))

    async def changes(self, cursor: int) -> tuple[list[Revocation], int]:
        statement = self._sql.changes

        async def run(conn: psycopg.AsyncConnection[Any]) -> list[tuple[int, str]]:
            return await (await conn.execute(statement, (cursor,))).fetchall()

        return decode_rows(await self._run(run), cursor)

    async def purge_expired(self) -> int:
        args = (self._clock(),)
        total = 0
        while True:
            removed = await self._rowcount(self._sql.purge, args)
            total += removed
            if removed < PURGE_BATCH:
                return total

    def listen(self, callback: Callable[[Revocation], None]) -> None:
        """Hand every entry notified from now on to `callback`, from a task in the running
        event loop (call it from inside that loop). `aclose()` stops it."""
        self._listen_target()  # a store that cannot listen says so now, not in the listener
        self._listener.listen(callback)

    async def _notifications(self) -> AsyncGenerator[object, None]:
        conninfo, options = self._listen_target()
        conn = await psycopg.AsyncConnection.connect(conninfo, **options)
        async with conn:
            await conn.execute(self._sql.listen)
            yield SUBSCRIBED
            async for notify in conn.notifies():
                yield notify.payload

    async def aclose(self) -> None:
        """Stop the listener and, if the store made its pool, close it."""
        await self._listener.stop()
        await super().aclose()
