"""`DjangoStore`: sessions in a Django project's own database, through
`django.db.connections` (`COATCHECK = {"store": "django"}`, or `"django://<alias>"` for
another entry of `DATABASES`).

The table is created by the coatcheck Django app's migration (`manage.py migrate`, with
`"coatcheck.adapters.django"` in `INSTALLED_APPS`), not on first use as the other stores
do: a Django project's schema belongs to its migrations.

```sql
CREATE TABLE coatcheck_session (
    key VARCHAR(255) PRIMARY KEY,   -- the session's handle (never the secret)
    data BLOB NOT NULL,             -- BYTEA on PostgreSQL
    version BIGINT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,   -- Unix time, seconds; indexed (purges)
    user_id VARCHAR(255) NULL);             -- indexed (listing and revoking a user's sessions)
```

Every operation is one statement on the alias's connection of the calling thread (Django's
connection handling, `CONN_MAX_AGE` and all), so the compare-and-set guarantees are those of
`SQLiteStore` and `PostgresStore`, whose statements these mirror: `save` is an
`INSERT ... ON CONFLICT (key) DO UPDATE ... WHERE` the old row has expired (create, or take
over an expired row) or an `UPDATE ... WHERE version = %s`; `rotate` deletes the old row at
the expected version and writes the new one inside `transaction.atomic`, so both happen or
neither. Expired rows are invisible at once and removed by `purge_expired` (Django's
`clearsessions` calls it) in batches of `PURGE_BATCH` rows.

Statements run inside whatever transaction the caller has open: with `ATOMIC_REQUESTS`, a
`cycle_key` in a view (Django's `login`) commits or rolls back with the view's own writes,
as Django's `db` engine does, and holds the session row's lock until then. The engine saves
the session in the middleware, outside that transaction.

Supported databases: SQLite and PostgreSQL (the `ON CONFLICT` upsert; both pass the store
contract suite). Any other vendor is refused on first use with a `ConfigurationError`.

Failures: `OperationalError` / `InterfaceError` (server down, database locked for longer
than its timeout) become `StoreUnavailable`; any other database error `StoreError`; a
missing table says to run `manage.py migrate`. Messages name the alias, never parameters.

`AsyncDjangoStore` runs each call through `asgiref.sync.sync_to_async(thread_sensitive=
True)`, where Django's own async ORM runs its queries, so that connections are opened and
closed by Django's request signals as for every other query of the project.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, InterfaceError, OperationalError, connections, transaction
from django.utils.connection import ConnectionDoesNotExist

from ..exceptions import ConfigurationError, StoreError, StoreUnavailable
from ..limits import oldest_first
from .base import CONFLICTED, Admission, Record

__all__ = ["TABLE", "AsyncDjangoStore", "DjangoStore"]

T = TypeVar("T")
#: The table the coatcheck Django app's migration creates.
TABLE = "coatcheck_session"
PURGE_BATCH = 1000  # rows per purge statement
#: The vendors whose SQL (`INSERT ... ON CONFLICT`) this store speaks and is tested on.
VENDORS = frozenset({"sqlite", "postgresql"})
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_MISSING_TABLE = ("no such table", "does not exist")


class _Sql:
    """The statements for one table, in Django's `%s` placeholder style (its SQLite cursor
    turns them into `?`), quoted for one connection's vendor."""

    def __init__(self, table: str, quote: Callable[[str], str]) -> None:
        t = quote(table)
        self.load = f"SELECT data, version FROM {t} WHERE key = %s AND expires_at > %s"  # noqa: S608
        self.create = (
            f"INSERT INTO {t} (key, data, version, expires_at, user_id) "  # noqa: S608
            "VALUES (%s, %s, 1, %s, %s) ON CONFLICT (key) DO UPDATE SET data = excluded.data, "
            "version = 1, expires_at = excluded.expires_at, user_id = excluded.user_id "
            f"WHERE {t}.expires_at <= %s"
        )
        self.update = (
            f"UPDATE {t} SET data = %s, version = version + 1, expires_at = %s, "  # noqa: S608
            "user_id = %s WHERE key = %s AND version = %s AND expires_at > %s"
        )
        self.delete_if = f"DELETE FROM {t} WHERE key = %s AND version = %s AND expires_at > %s"  # noqa: S608
        self.put = (
            f"INSERT INTO {t} (key, data, version, expires_at, user_id) "  # noqa: S608
            "VALUES (%s, %s, 1, %s, %s) ON CONFLICT (key) DO UPDATE SET data = excluded.data, "
            "version = 1, expires_at = excluded.expires_at, user_id = excluded.user_id"
        )
        self.delete = f"DELETE FROM {t} WHERE key = %s"  # noqa: S608
        self.others = (
            f"SELECT key, data FROM {t} WHERE user_id = %s AND expires_at > %s AND key <> %s"  # noqa: S608
        )
        self.list_user = (
            f"SELECT key, data, version FROM {t} WHERE user_id = %s AND expires_at > %s"  # noqa: S608
        )
        # Expired rows stay for `purge_expired`: they are invisible, and not counted.
        self.delete_user = f"DELETE FROM {t} WHERE user_id = %s AND expires_at > %s"  # noqa: S608
        self.delete_user_keep = (
            f"DELETE FROM {t} WHERE user_id = %s AND key <> %s AND expires_at > %s"  # noqa: S608
        )
        self.purge = (
            f"DELETE FROM {t} WHERE key IN (SELECT key FROM {t} "  # noqa: S608
            f"WHERE expires_at <= %s LIMIT {PURGE_BATCH})"
        )


class DjangoStore:
    """Sessions in table `table` of the Django database `alias` (an entry of `DATABASES`).

    Constructing the store touches no database; the alias is checked, and the connection
    opened (by Django), on first use or by `open()`. `clock` gives the time records expire
    by (the app server's clock, as for `SQLiteStore` and `PostgresStore`)."""

    def __init__(
        self,
        alias: str = "default",
        *,
        table: str = TABLE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not _IDENTIFIER.fullmatch(table):
            raise ConfigurationError(f"table name {table!r} is not a plain identifier")
        if not alias:
            raise ConfigurationError("the Django database alias is empty; use 'default'")
        self.alias = alias
        self.table = table
        self._clock = clock
        #: The statements, per vendor (built on first use, when the vendor is known).
        self._statements: dict[str, _Sql] = {}

    def __repr__(self) -> str:
        return f"DjangoStore({self.alias!r}, table={self.table!r})"

    def open(self) -> None:
        """Check now that the alias exists, its vendor is supported and the table is there
        (migrated), rather than at the first request."""
        with self._cursor() as (cursor, sql):
            cursor.execute(sql.load, ("", self._clock()))

    @contextmanager
    def _cursor(self) -> Iterator[tuple[Any, _Sql]]:
        """A cursor of this thread's connection to the alias, and the statements for its
        vendor; database errors raised in the block become coatcheck's."""
        try:
            connection = connections[self.alias]
        except ConnectionDoesNotExist:
            raise ConfigurationError(
                f"the Django database alias {self.alias!r} is not in settings.DATABASES"
            ) from None
        except ImproperlyConfigured:
            raise ConfigurationError(
                "the django store works inside a Django project (settings configured, "
                "DJANGO_SETTINGS_MODULE set): from a shell, use `manage.py "
                "coatcheck_sessions` rather than the `coatcheck` command"
            ) from None
        vendor = connection.vendor
        sql = self._statements.get(vendor)
        if sql is None:
            if vendor not in VENDORS:
                raise ConfigurationError(
                    f"the django store supports SQLite and PostgreSQL databases; "
                    f"{self.alias!r} is {vendor}: use another coatcheck store (redis://...)"
                )
            sql = self._statements[vendor] = _Sql(self.table, connection.ops.quote_name)
        try:
            with connection.cursor() as cursor:
                yield cursor, sql
        except (OperationalError, InterfaceError) as exc:
            raise StoreUnavailable(self._describe(exc)) from None
        except DatabaseError as exc:
            raise StoreError(self._describe(exc)) from None

    def _describe(self, exc: Exception) -> str:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        text = f"Django database {self.alias!r} failed ({type(exc).__name__}: {first})"
        if any(words in first for words in _MISSING_TABLE) and self.table in first:
            text += (
                f"; table {self.table!r} is missing: add 'coatcheck.adapters.django' to "
                "INSTALLED_APPS and run `manage.py migrate`"
            )
        return text

    def load(self, key: str) -> Record | None:
        with self._cursor() as (cursor, sql):
            cursor.execute(sql.load, (key, self._clock()))
            row = cursor.fetchone()
        return None if row is None else Record(bytes(row[0]), int(row[1]))

    def save(self, key: str, data: bytes, *, version: int, ttl: float, user: str | None) -> bool:
        now = self._clock()
        with self._cursor() as (cursor, sql):
            if version == 0:
                cursor.execute(sql.create, (key, data, now + ttl, user, now))
            else:
                cursor.execute(sql.update, (data, now + ttl, user, key, version, now))
            return bool(cursor.rowcount == 1)

    def rotate(
        self, old_key: str, new_key: str, data: bytes, *, version: int, ttl: float, user: str | None
    ) -> bool:
        now = self._clock()
        with self._cursor() as (cursor, sql), transaction.atomic(using=self.alias):
            # The delete comes first: on SQLite the transaction's first statement is a
            # write, so it waits for the lock (busy timeout) rather than failing at once.
            cursor.execute(sql.delete_if, (old_key, version, now))
            if cursor.rowcount != 1:
                return False
            cursor.execute(sql.put, (new_key, data, now + ttl, user))
        return True

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
        `transaction.atomic`: on PostgreSQL it first takes a transaction-level advisory lock
        on the user (the user's admissions run one at a time, on every replica); on SQLite
        its first statement is the write, which takes the database's write lock. A refused
        write is rolled back."""
        now = self._clock()
        answer = CONFLICTED
        with self._cursor() as (cursor, sql), transaction.atomic(using=self.alias):
            if connections[self.alias].vendor == "postgresql":
                lock = f"coatcheck:{self.table}:limit:{user}"
                cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (lock,))
            if replaces is not None:
                cursor.execute(sql.delete_if, (replaces, version, now))
                if cursor.rowcount == 1:
                    cursor.execute(sql.put, (key, data, now + ttl, user))
            elif version == 0:
                cursor.execute(sql.create, (key, data, now + ttl, user, now))
            else:
                cursor.execute(sql.update, (data, now + ttl, user, key, version, now))
            if cursor.rowcount != 1:
                return CONFLICTED
            cursor.execute(sql.others, (user, now, key))
            doomed = oldest_first([(k, bytes(d)) for k, d in cursor.fetchall()], limit)
            if doomed and not evict:
                transaction.set_rollback(True, using=self.alias)
                answer = Admission(False, True)
            else:
                for other in doomed:
                    cursor.execute(sql.delete, (other,))
                answer = Admission(True, False, tuple(doomed))
        return answer

    def delete(self, key: str) -> None:
        with self._cursor() as (cursor, sql):
            cursor.execute(sql.delete, (key,))

    def list_user(self, user: str) -> list[tuple[str, Record]]:
        with self._cursor() as (cursor, sql):
            cursor.execute(sql.list_user, (user, self._clock()))
            rows = cursor.fetchall()
        return [(key, Record(bytes(data), int(version))) for key, data, version in rows]

    def delete_user(self, user: str, *, keep: str | None = None) -> int:
        now = self._clock()
        with self._cursor() as (cursor, sql):
            if keep is None:
                cursor.execute(sql.delete_user, (user, now))
            else:
                cursor.execute(sql.delete_user_keep, (user, keep, now))
            return int(cursor.rowcount)

    def purge_expired(self) -> int:
        args = (self._clock(),)
        total = 0
        while True:
            with self._cursor() as (cursor, sql):
                cursor.execute(sql.purge, args)
                removed = int(cursor.rowcount)
            total += removed
            if removed < PURGE_BATCH:
                return total

    def close(self) -> None:
        """Nothing to release: the connections are Django's (closed by its request
        signals, `CONN_MAX_AGE`, or `connections.close_all()`)."""


class AsyncDjangoStore:
    """The async twin of `DjangoStore`: each call runs the sync store's in Django's
    thread-sensitive executor (`sync_to_async(thread_sensitive=True)`), as Django's own
    async ORM queries do."""

    def __init__(
        self,
        alias: str = "default",
        *,
        table: str = TABLE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sync = DjangoStore(alias, table=table, clock=clock)

    @classmethod
    def wrapping(cls, store: DjangoStore) -> AsyncDjangoStore:
        """The async twin of `store`: the same alias, table and clock."""
        twin = cls.__new__(cls)
        twin.sync = store
        return twin

    def __repr__(self) -> str:
        return f"AsyncDjangoStore({self.sync.alias!r}, table={self.sync.table!r})"

    async def _call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        result: T = await sync_to_async(partial(function, *args, **kwargs), thread_sensitive=True)()
        return result

    async def open(self) -> None:
        await self._call(self.sync.open)

    async def load(self, key: str) -> Record | None:
        return await self._call(self.sync.load, key)

    async def save(
        self, key: str, data: bytes, *, version: int, ttl: float, user: str | None
    ) -> bool:
        return await self._call(self.sync.save, key, data, version=version, ttl=ttl, user=user)

    async def rotate(
        self, old_key: str, new_key: str, data: bytes, *, version: int, ttl: float, user: str | None
    ) -> bool:
        return await self._call(
            self.sync.rotate, old_key, new_key, data, version=version, ttl=ttl, user=user
        )

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
        return await self._call(
            self.sync.admit,
            key,
            data,
            version=version,
            ttl=ttl,
            user=user,
            replaces=replaces,
            limit=limit,
            evict=evict,
        )

    async def delete(self, key: str) -> None:
        await self._call(self.sync.delete, key)

    async def list_user(self, user: str) -> list[tuple[str, Record]]:
        return await self._call(self.sync.list_user, user)

    async def delete_user(self, user: str, *, keep: str | None = None) -> int:
        return await self._call(self.sync.delete_user, user, keep=keep)

    async def purge_expired(self) -> int:
        return await self._call(self.sync.purge_expired)

    async def aclose(self) -> None:
        """Nothing to release (see `DjangoStore.close`)."""
