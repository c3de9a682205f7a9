"""`PostgresStore`: sessions shared by many machines through PostgreSQL (psycopg 3).

One table, created on first use (or by `create_schema()`, for deployments where the app's
database role may not create tables):

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
data-modifying CTE that updates (alias) or deletes the old one only at the expected
version, so both happen or neither. Expired rows are invisible at once and removed by
`purge_expired` in batches of `PURGE_BATCH` rows (`FOR UPDATE SKIP LOCKED`), so purging
never holds many row locks or waits on a busy session.

Expiry times come from `clock` (the app server's clock, like `SQLiteStore`), so replicas
need synchronised clocks, as they do for the cookie's lifetimes anyway.

A server that is down, refuses connections or does not answer within `timeout` raises
`StoreUnavailable`; the pool checks each connection before handing it out and replaces
broken ones, so service resumes by itself when the server is back.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from ..exceptions import ConfigurationError, StoreError, StoreUnavailable
from .base import Record

__all__ = ["AsyncPostgresStore", "PostgresStore"]

T = TypeVar("T")
PURGE_BATCH = 1000
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


class _Sql:
    """The statements for one table, built once."""

    def __init__(self, table: str) -> None:
        if not _IDENTIFIER.fullmatch(table):
            raise ConfigurationError(f"PostgreSQL table name {table!r} is not a plain identifier")
        t = table
        self.table = table
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
        self.rotate_alias = (
            f"WITH old AS (UPDATE {t} SET data = %(alias)s, version = version + 1, "  # noqa: S608
            "expires_at = %(alias_expires)s, user_id = NULL WHERE key = %(old)s "
            "AND version = %(version)s AND expires_at > %(now)s RETURNING 1) " + put_new
        )
        self.rotate_delete = (
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

    def rotate(
        self,
        old_key: str,
        new_key: str,
        data: bytes,
        version: int,
        ttl: float,
        user: str | None,
        alias: bytes | None,
        alias_ttl: float,
        now: float,
    ) -> tuple[str, dict[str, Any]]:
        params: dict[str, Any] = {
            "old": old_key, "new": new_key, "data": data, "version": version,
            "expires": now + ttl, "user": user, "now": now,
        }  # fmt: skip
        if alias is None:
            return self.rotate_delete, params
        params.update(alias=alias, alias_expires=now + alias_ttl)
        return self.rotate_alias, params


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


class PostgresStore:
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
        self.table = table
        self.timeout = timeout
        self._clock = clock
        self._owned = isinstance(conninfo, str)
        self._conninfo = conninfo if isinstance(conninfo, str) else None
        if isinstance(conninfo, str):
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
        self._lock = threading.Lock()
        self._ready = False

    def __repr__(self) -> str:
        return f"<PostgresStore table={self.table!r}>"

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
                conn.execute(self._sql.schema[0], (f"coatcheck:{self.table}",))
                for statement in self._sql.schema[1:]:
                    conn.execute(statement)
            self._ready = True

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
        alias: bytes | None,
        alias_ttl: float,
    ) -> bool:
        sql, params = self._sql.rotate(
            old_key, new_key, data, version, ttl, user, alias, alias_ttl, self._clock()
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

    def close(self) -> None:
        if self._owned:
            self.pool.close()


class AsyncPostgresStore:
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
        self.table = table
        self.timeout = timeout
        self._clock = clock
        self._owned = isinstance(conninfo, str)
        if isinstance(conninfo, str):
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
        self._ready = False

    @classmethod
    def wrapping(cls, store: PostgresStore) -> AsyncPostgresStore | None:
        """An async store on the same database and table as `store`, with its own pool;
        None if `store` was given a pool rather than a connection string."""
        if store._conninfo is None:
            return None
        return cls(store._conninfo, table=store.table, timeout=store.timeout, clock=store._clock)

    def __repr__(self) -> str:
        return f"<AsyncPostgresStore table={self.table!r}>"

    async def _run(self, operation: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
        with _translated():
            if not self._ready:
                await self.create_schema()
            async with self.pool.connection() as conn:
                return await operation(conn)

    async def create_schema(self) -> None:
        """Create the table and its indexes if they do not exist (safe to run concurrently)."""
        with _translated():
            if self._owned and self.pool.closed:
                await self.pool.open(wait=False)
            async with self.pool.connection() as conn, conn.transaction():
                await conn.execute(self._sql.schema[0], (f"coatcheck:{self.table}",))
                for statement in self._sql.schema[1:]:
                    await conn.execute(statement)
            self._ready = True

    async def load(self, key: str) -> Record | None:
        sql, now = self._sql.load, self._clock()

        async def run(conn: psycopg.AsyncConnection[Any]) -> Any:
            return await (await conn.execute(sql, (key, now))).fetchone()

        row = await self._run(run)
        return None if row is None else Record(bytes(row[0]), row[1])

    async def _rowcount(self, sql: str, args: Any) -> int:
        async def run(conn: psycopg.AsyncConnection[Any]) -> int:
            return (await conn.execute(sql, args)).rowcount

        return await self._run(run)

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
        alias: bytes | None,
        alias_ttl: float,
    ) -> bool:
        sql, params = self._sql.rotate(
            old_key, new_key, data, version, ttl, user, alias, alias_ttl, self._clock()
        )
        return await self._rowcount(sql, params) == 1

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

    async def aclose(self) -> None:
        if self._owned:
            await self.pool.close()
