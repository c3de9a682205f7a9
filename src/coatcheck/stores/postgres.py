"""`PostgresStore` and `PostgresRevocationStore`: sessions and revocations shared by many
machines through PostgreSQL (psycopg 3), with a LISTEN/NOTIFY push feed.

Sessions live in one table, created on first use (once per store, however many requests
arrive first), or by `create_schema()`, for deployments where the app's database role may
not create tables:

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

Connections. A store made from a connection string keeps at most `max_connections`
connections (default `DEFAULT_MAX_CONNECTIONS` for sessions, 4 for revocations; per store
and process) and an operation that finds them all busy waits for one, first come first
served, up to `pool_timeout` seconds (default `DEFAULT_POOL_TIMEOUT`), which is separate
from `timeout` (connecting, each statement): a busy pool is a queue, not a 503. So that an
outage stays a quick 503, the bound is `timeout` until an operation has reached the
server, and again once it stopped answering (an operation's connection broke, or a wait
ended with no connection while no other came back), until one reaches it again. Both
settings come from the constructor or a URL's query
(`postgresql://host/db?max_connections=20&pool_timeout=5`, removed before the URL reaches
libpq); measured with `bench/pool_load.py`. A pool given to the store is used as it is,
with its own `timeout`.

Purging. Nothing runs a purge on a request's path: expired rows are invisible to every
statement at once, and removed only by `purge_expired()` (or `coatcheck sessions purge`),
in batches of `PURGE_BATCH` rows each one short statement, so a scheduled purge neither
holds many row locks nor delays the requests running beside it.
"""

from __future__ import annotations

import asyncio
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
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from ..exceptions import ConfigurationError, StoreError, StoreUnavailable
from ..limits import oldest_first
from ..revocation import CHANGES_PAGE, Revocation, decode_entry, decode_rows, encode_entry
from . import _pool_settings
from .base import CONFLICTED, Admission, Record
from .feed import POLL_INTERVAL, RECONNECT_DELAY, SUBSCRIBED, AsyncListener, Listener

__all__ = [
    "AsyncPostgresRevocationStore",
    "AsyncPostgresStore",
    "PostgresRevocationStore",
    "PostgresStore",
]

T = TypeVar("T")
PURGE_BATCH = 1000
#: Connections one session store keeps at most; more operations in flight wait
#: (bench/pool_load.py).
DEFAULT_MAX_CONNECTIONS = 20
#: Connections one revocation store keeps at most (revocations and polls are rare).
REVOCATION_MAX_CONNECTIONS = 4
#: Seconds an operation waits for a busy pool's connection before `StoreUnavailable`.
DEFAULT_POOL_TIMEOUT = 5.0
#: Seconds the pool retries one lost connection before it gives up, so that the next
#: operation tries afresh at once. psycopg_pool's default (5 minutes) backs off to attempts
#: minutes apart: measured, a server back after a 20 s outage served again only after 11.6 s.
RECONNECT_TIMEOUT = 1.0
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
        # `admit`: one transaction per login under a session limit, serialised per user by
        # a transaction-level advisory lock (`limit_lock` + the user).
        self.limit_lock = f"coatcheck:{table}:limit:"
        self.lock = "SELECT pg_advisory_xact_lock(hashtext(%s))"
        self.others = (
            f"SELECT key, data FROM {t} WHERE user_id = %s AND expires_at > %s AND key <> %s"  # noqa: S608
        )
        self.delete_keys = f"DELETE FROM {t} WHERE key = ANY(%s)"  # noqa: S608
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

    def write(
        self,
        key: str,
        data: bytes,
        version: int,
        ttl: float,
        user: str,
        replaces: str | None,
        now: float,
    ) -> tuple[str, Any]:
        """The statement of `admit`'s write: `save`'s, or with `replaces`, `rotate`'s."""
        if replaces is None:
            return self.save(key, data, version, now + ttl, user, now)
        return self.rotate, self.rotate_args(replaces, key, data, version, ttl, user, now)

    @staticmethod
    def rotate_args(
        old_key: str,
        new_key: str,
        data: bytes,
        version: int,
        ttl: float,
        user: str | None,
        now: float,
    ) -> dict[str, Any]:
        return {
            "old": old_key,
            "new": new_key,
            "data": data,
            "version": version,
            "expires": now + ttl,
            "user": user,
            "now": now,
        }


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
#: A pool class, sync or async.
P = TypeVar("P", ConnectionPool[Any], AsyncConnectionPool[Any])


class _PoolSettings:
    """What both pool twins settle the same way: the settings (from the arguments, the
    URL's query or the defaults; a given pool's own) and what a failed wait means."""

    table: str
    timeout: float
    max_connections: int
    pool_timeout: float
    _conninfo: str | None
    _owned: bool
    #: Operations whose connection came back unbroken: the server answered, if only with
    #: an error (approximate across threads: only compared for change).
    _served: int
    #: Whether the last operations reached the server (see `_wait`); not yet, at first.
    _answering: bool
    _clock: Callable[[], float]
    #: Whether the schema was created (by this store, or `create_schema`).
    _ready: bool

    def _settle(
        self,
        kind: type[P],
        conninfo: str | P,
        *,
        table: str,
        timeout: float,
        min_connections: int,
        max_connections: int | None,
        pool_timeout: float | None,
        default_max: int,
        clock: Callable[[], float],
    ) -> P:
        """The store's settings, and its pool: made from `conninfo` (then owned by the store)
        or `conninfo` itself, a pool taken as it is. Nothing is opened: the pool opens, and
        the schema is created, on first use (`_ready`)."""
        self.table, self.timeout, self._clock = table, timeout, clock
        self._ready = False
        if isinstance(conninfo, str):
            return self._own_pool(
                kind,
                conninfo,
                timeout=timeout,
                min_connections=min_connections,
                max_connections=max_connections,
                pool_timeout=pool_timeout,
                default_max=default_max,
            )
        self._given_pool(conninfo, max_connections, pool_timeout)
        return conninfo

    def _own_pool(
        self,
        kind: type[P],
        conninfo: str,
        *,
        timeout: float,
        min_connections: int,
        max_connections: int | None,
        pool_timeout: float | None,
        default_max: int,
    ) -> P:
        """A pool made from `conninfo` (its pool options taken out), owned by the store."""
        self._owned, self._served, self._answering = True, 0, False
        self._conninfo, self.max_connections, self.pool_timeout = _pool_settings(
            conninfo,
            max_connections=max_connections,
            pool_timeout=pool_timeout,
            defaults=(default_max, DEFAULT_POOL_TIMEOUT),
        )
        return kind(
            self._conninfo,
            kwargs=_connection_options(self._conninfo, timeout),
            min_size=min(min_connections, self.max_connections),
            max_size=self.max_connections,
            timeout=self.pool_timeout,
            check=kind.check_connection,
            reconnect_timeout=RECONNECT_TIMEOUT,
            open=False,
            name=f"coatcheck-{self.table}",
        )

    def _given_pool(
        self,
        pool: ConnectionPool[Any] | AsyncConnectionPool[Any],
        max_connections: int | None,
        pool_timeout: float | None,
    ) -> None:
        """Take a pool given to the store as it is."""
        if max_connections is not None or pool_timeout is not None:
            raise ConfigurationError(
                "max_connections and pool_timeout size the pool the store makes from a "
                "connection string; configure the pool you pass instead"
            )
        self._owned, self._served, self._answering = False, 0, False
        self._conninfo = pool.conninfo if isinstance(pool.conninfo, str) else None
        self.max_connections, self.pool_timeout = pool.max_size, pool.timeout

    def _wait(self) -> float:
        """How long the next operation may wait for a connection: `pool_timeout` while the
        server answers, `timeout` until it first did and once it stopped."""
        return self.pool_timeout if self._answering else min(self.timeout, self.pool_timeout)

    def _returned(self, conn: psycopg.BaseConnection[Any]) -> None:
        """Note how an operation's connection came back: unbroken (the server answered, if
        only with an error) or broken (the server went away)."""
        self._answering = not conn.broken
        if self._answering:
            self._served += 1

    def _no_connection(self, waited: float, served: int) -> StoreUnavailable:
        """The error for a wait that gave no connection; if no other operation's connection
        came back meanwhile either, the server is taken for gone until one does."""
        if self._served == served:
            self._answering = False
        if waited < self.pool_timeout:
            return StoreUnavailable(
                f"PostgreSQL store unavailable (no connection within {waited:g} s, and the "
                "last operations could not reach the server)"
            )
        return StoreUnavailable(
            f"PostgreSQL store unavailable (no connection came free within pool_timeout="
            f"{self.pool_timeout:g} s: all {self.max_connections} were busy, or the server "
            "stopped answering; raise max_connections or pool_timeout if it is healthy)"
        )


class _Pooled(_PoolSettings, Generic[S]):
    """A sync store's pool (made from a connection string, which the store then owns and
    closes, or given), its schema, created on first use, and its errors mapped."""

    _sql: S

    def _set_pool(self, conninfo: str | ConnectionPool[Any], **settings: Any) -> None:
        """Settle the pool (`_settle`), not opened yet, and the locks of its first use."""
        self.pool: ConnectionPool[Any] = self._settle(ConnectionPool, conninfo, **settings)
        self._lock, self._once = threading.Lock(), threading.Lock()

    def _getconn(self) -> psycopg.Connection[Any]:
        """A connection, waited for as the module docstring says (in the pool's queue, first
        come first served)."""
        conn: psycopg.Connection[Any]
        if not self._owned:  # a given pool: its own timeout
            conn = self.pool.getconn()
            return conn
        served, wait = self._served, self._wait()
        try:
            conn = self.pool.getconn(wait)
        except PoolTimeout:
            raise self._no_connection(wait, served) from None
        return conn

    def _run(self, operation: Callable[[psycopg.Connection[Any]], T]) -> T:
        with _translated():
            if not self._ready:
                self._first_use()
            conn = self._getconn()
            try:
                with conn:  # as pool.connection(): a pooled connection is not closed here
                    return operation(conn)
            finally:
                self._returned(conn)
                self.pool.putconn(conn)

    def create_schema(self) -> None:
        """Create the table and its indexes if they do not exist (safe to run concurrently)."""
        with _translated(), self._lock:
            if self._owned and self.pool.closed:
                self.pool.open(wait=False)
            conn = self._getconn()
            try:
                with conn, conn.transaction():
                    conn.execute(self._sql.schema[0], (self._sql.schema_lock,))
                    for statement in self._sql.schema[1:]:
                        conn.execute(statement)
            finally:
                self._returned(conn)
                self.pool.putconn(conn)
            self._ready = True

    def _first_use(self) -> None:
        """Create the schema once, however many threads arrive first."""
        with self._once:
            if not self._ready:
                self.create_schema()

    def close(self) -> None:
        """Close the pool if the store made it."""
        if self._owned:
            self.pool.close()


class _AsyncPooled(_PoolSettings, Generic[S]):
    """`_Pooled` for an async store: the pool opens on first use, inside the event loop."""

    _sql: S

    def _set_pool(self, conninfo: str | AsyncConnectionPool[Any], **settings: Any) -> None:
        """Settle the pool (`_settle`), not opened yet, and the locks of its first use."""
        self.pool: AsyncConnectionPool[Any]
        self.pool = self._settle(AsyncConnectionPool, conninfo, **settings)
        self._once = asyncio.Lock()

    async def _getconn(self) -> psycopg.AsyncConnection[Any]:
        conn: psycopg.AsyncConnection[Any]
        if not self._owned:  # a given pool: its own timeout
            conn = await self.pool.getconn()
            return conn
        served, wait = self._served, self._wait()
        try:
            conn = await self.pool.getconn(wait)
        except PoolTimeout:
            raise self._no_connection(wait, served) from None
        return conn

    async def _run(self, operation: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
        with _translated():
            if not self._ready:
                await self._first_use()
            conn = await self._getconn()
            try:
                async with conn:  # as pool.connection(): a pooled connection is not closed
                    return await operation(conn)
            finally:
                self._returned(conn)
                await self.pool.putconn(conn)

    async def _rowcount(self, statement: str, args: Any) -> int:
        async def run(conn: psycopg.AsyncConnection[Any]) -> int:
            return (await conn.execute(statement, args)).rowcount

        return await self._run(run)

    async def create_schema(self) -> None:
        """Create the table and its indexes if they do not exist (safe to run concurrently)."""
        with _translated():
            if self._owned and self.pool.closed:
                await self.pool.open(wait=False)
            conn = await self._getconn()
            try:
                async with conn, conn.transaction():
                    await conn.execute(self._sql.schema[0], (self._sql.schema_lock,))
                    for statement in self._sql.schema[1:]:
                        await conn.execute(statement)
            finally:
                self._returned(conn)
                await self.pool.putconn(conn)
            self._ready = True

    async def _first_use(self) -> None:
        """Create the schema once, however many tasks arrive first (each would otherwise
        take a connection to wait on the same advisory lock)."""
        async with self._once:
            if not self._ready:
                await self.create_schema()

    async def aclose(self) -> None:
        """Close the pool if the store made it."""
        if self._owned:
            await self.pool.close()


class PostgresStore(_Pooled[_Sql]):
    """Sessions in PostgreSQL table `table`.

    `conninfo` is a URL (`postgresql://user:password@host:5432/db`) or a libpq connection
    string, or an existing `psycopg_pool.ConnectionPool`, which the store then neither
    configures nor closes. `timeout` bounds connecting and each statement, in seconds. A
    store made from a connection string keeps `min_connections` to `max_connections`
    connections, and an operation finding them all busy waits up to `pool_timeout`
    seconds for one (see the module docstring); a URL may give both in its query,
    `postgresql://host/db?max_connections=20&pool_timeout=5`.
    """

    def __init__(
        self,
        conninfo: str | ConnectionPool[Any],
        *,
        table: str = "coatcheck_sessions",
        timeout: float = 1.0,  # seconds, connecting and per statement
        min_connections: int = 1,
        max_connections: int | None = None,  # None: the URL's, else DEFAULT_MAX_CONNECTIONS
        pool_timeout: float | None = None,  # seconds; None: the URL's, else DEFAULT_POOL_TIMEOUT
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sql = _Sql(table)
        self._set_pool(
            conninfo,
            table=table,
            timeout=timeout,
            min_connections=min_connections,
            max_connections=max_connections,
            pool_timeout=pool_timeout,
            default_max=DEFAULT_MAX_CONNECTIONS,
            clock=clock,
        )

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
        self, old_key: str, new_key: str, data: bytes, *, version: int, ttl: float, user: str | None
    ) -> bool:
        sql, params = (
            self._sql.rotate,
            self._sql.rotate_args(old_key, new_key, data, version, ttl, user, self._clock()),
        )
        return self._run(lambda conn: conn.execute(sql, params).rowcount) == 1

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
        transaction that first takes an advisory lock on the user: the admissions of one
        user run one at a time, on every replica; a refused write is rolled back."""
        q, now = self._sql, self._clock()
        statement, args = q.write(key, data, version, ttl, user, replaces, now)

        def operation(conn: psycopg.Connection[Any]) -> Admission:
            answer = CONFLICTED
            with conn.transaction():
                conn.execute(q.lock, (q.limit_lock + user,))
                if conn.execute(statement, args).rowcount != 1:
                    raise psycopg.Rollback
                rows = conn.execute(q.others, (user, now, key)).fetchall()
                doomed = oldest_first([(k, bytes(d)) for k, d in rows], limit)
                if doomed and not evict:
                    answer = Admission(False, True)
                    raise psycopg.Rollback
                if doomed:
                    conn.execute(q.delete_keys, (doomed,))
                answer = Admission(True, False, tuple(doomed))
            return answer

        return self._run(operation)

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
        timeout: float = 1.0,  # seconds, connecting and per statement
        min_connections: int = 1,
        max_connections: int | None = None,  # None: the URL's, else DEFAULT_MAX_CONNECTIONS
        pool_timeout: float | None = None,  # seconds; None: the URL's, else DEFAULT_POOL_TIMEOUT
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sql = _Sql(table)
        self._set_pool(
            conninfo,
            table=table,
            timeout=timeout,
            min_connections=min_connections,
            max_connections=max_connections,
            pool_timeout=pool_timeout,
            default_max=DEFAULT_MAX_CONNECTIONS,
            clock=clock,
        )

    @classmethod
    def wrapping(cls, store: PostgresStore) -> AsyncPostgresStore | None:
        """An async store on the same database and table as `store`, with its own pool;
        None if `store` was given a pool rather than a connection string."""
        if not store._owned or store._conninfo is None:
            return None
        return cls(
            store._conninfo,
            table=store.table,
            timeout=store.timeout,
            clock=store._clock,
            max_connections=store.max_connections,
            pool_timeout=store.pool_timeout,
        )

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
        self, old_key: str, new_key: str, data: bytes, *, version: int, ttl: float, user: str | None
    ) -> bool:
        params = self._sql.rotate_args(old_key, new_key, data, version, ttl, user, self._clock())
        return await self._rowcount(self._sql.rotate, params) == 1

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
        q, now = self._sql, self._clock()
        statement, args = q.write(key, data, version, ttl, user, replaces, now)

        async def operation(conn: psycopg.AsyncConnection[Any]) -> Admission:
            answer = CONFLICTED
            async with conn.transaction():
                await conn.execute(q.lock, (q.limit_lock + user,))
                if (await conn.execute(statement, args)).rowcount != 1:
                    raise psycopg.Rollback
                rows = await (await conn.execute(q.others, (user, now, key))).fetchall()
                doomed = oldest_first([(k, bytes(d)) for k, d in rows], limit)
                if doomed and not evict:
                    answer = Admission(False, True)
                    raise psycopg.Rollback
                if doomed:
                    await conn.execute(q.delete_keys, (doomed,))
                answer = Admission(True, False, tuple(doomed))
            return answer

        return await self._run(operation)

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
        self.changes = (
            f"SELECT seq, entry FROM {t} WHERE seq > %s ORDER BY seq LIMIT {CHANGES_PAGE}"  # noqa: S608
        )
        self.purge = (
            f"DELETE FROM {t} WHERE seq IN (SELECT seq FROM {t} WHERE expires_at <= %s "  # noqa: S608
            f"LIMIT {PURGE_BATCH} FOR UPDATE SKIP LOCKED)"
        )
        self.listen = sql.SQL("LISTEN {}").format(sql.Identifier(table))

    def revoke_args(self, entry: Revocation) -> dict[str, Any]:
        doc = encode_entry(entry)
        payload = doc if len(doc) <= MAX_PAYLOAD else ""
        return {
            "lock": self.lock_name,
            "entry": doc,
            "expires": entry.expires_at,
            "channel": self.table,
            "payload": payload,
        }


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
    configures nor closes. `timeout` bounds connecting and each statement, in seconds;
    `max_connections` and `pool_timeout` size the pool as for `PostgresStore`. `clock`
    decides which entries have expired.
    """

    def __init__(
        self,
        conninfo: str | ConnectionPool[Any],
        *,
        table: str = "coatcheck_revocations",
        timeout: float = 1.0,  # seconds, connecting and per statement
        max_connections: int | None = None,  # None: the URL's, else REVOCATION_MAX_CONNECTIONS
        pool_timeout: float | None = None,  # seconds; None: the URL's, else DEFAULT_POOL_TIMEOUT
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sql = _RevocationSql(table)
        self._set_pool(
            conninfo,
            table=table,
            timeout=timeout,
            min_connections=1,
            max_connections=max_connections,
            pool_timeout=pool_timeout,
            default_max=REVOCATION_MAX_CONNECTIONS,
            clock=clock,
        )
        self._listener = Listener(
            self._notifications,
            decode=_notified,
            errors=(psycopg.Error,),
            join_timeout=5 * (POLL_INTERVAL + timeout + RECONNECT_DELAY) + 10,
        )
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
        timeout: float = 1.0,  # seconds, connecting and per statement
        max_connections: int | None = None,  # None: the URL's, else REVOCATION_MAX_CONNECTIONS
        pool_timeout: float | None = None,  # seconds; None: the URL's, else DEFAULT_POOL_TIMEOUT
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sql = _RevocationSql(table)
        self._set_pool(
            conninfo,
            table=table,
            timeout=timeout,
            min_connections=1,
            max_connections=max_connections,
            pool_timeout=pool_timeout,
            default_max=REVOCATION_MAX_CONNECTIONS,
            clock=clock,
        )
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
        return cls(
            store._conninfo,
            table=store.table,
            timeout=store.timeout,
            clock=store._clock,
            max_connections=store.max_connections,
            pool_timeout=store.pool_timeout,
        )

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
