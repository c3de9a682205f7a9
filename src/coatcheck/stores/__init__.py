"""Session stores: where server-side sessions (and client-side registries) live.

`MemoryStore` (one process), `SQLiteStore` (one machine, the embedded default),
`RedisStore` and `PostgresStore` (many machines); each with an `Async` twin. `from_url`
builds one from a URL such as `sqlite:///sessions.db`. The Redis and PostgreSQL stores are
imported on first access, so `import coatcheck.stores` imports neither redis nor psycopg.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any, Literal, overload
from urllib.parse import unquote, urlsplit

from ..exceptions import ConfigurationError
from .base import AsyncStore, Record, Store
from .memory import AsyncMemoryStore, MemoryStore
from .sqlite import AsyncSQLiteStore, SQLiteStore
from .threaded import ThreadedStore

if TYPE_CHECKING:
    from .postgres import AsyncPostgresStore, PostgresStore
    from .redis import AsyncRedisStore, RedisStore

__all__ = [
    "AsyncMemoryStore",
    "AsyncPostgresStore",
    "AsyncRedisStore",
    "AsyncSQLiteStore",
    "AsyncStore",
    "MemoryStore",
    "PostgresStore",
    "Record",
    "RedisStore",
    "SQLiteStore",
    "Store",
    "ThreadedStore",
    "from_url",
    "to_async",
]

#: Stores whose driver is an optional dependency: name -> (module, extra to install).
_LAZY = {
    "RedisStore": ("redis", "redis"),
    "AsyncRedisStore": ("redis", "redis"),
    "PostgresStore": ("postgres", "postgres"),
    "AsyncPostgresStore": ("postgres", "postgres"),
}
_REDIS_SCHEMES = ("redis", "rediss", "redis+cluster", "rediss+cluster")
_POSTGRES_SCHEMES = ("postgresql", "postgres")


def __getattr__(name: str) -> Any:
    """Import `RedisStore` / `PostgresStore` (and twins) on first access."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, extra = _LAZY[name]
    try:
        loaded = importlib.import_module(f"{__name__}.{module}")
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            f"{name} needs the {exc.name!r} package: pip install 'coatcheck[{extra}]'"
        ) from None
    return getattr(loaded, name)


@overload
def from_url(url: str, *, asynchronous: Literal[False] = False) -> Store: ...
@overload
def from_url(url: str, *, asynchronous: Literal[True]) -> AsyncStore: ...


def from_url(url: str, *, asynchronous: bool = False) -> Store | AsyncStore:
    """A store for `url` (the `Async` twin with `asynchronous=True`).

    - `memory://`
    - `sqlite:///relative/path.db`, `sqlite:////absolute/path.db`, `sqlite:///:memory:`
    - `redis://[[user]:password@]host:6379/0`, `rediss://...` (TLS); a Redis Cluster:
      `redis+cluster://host:port` or `rediss+cluster://...` (any node)
    - `postgresql://user:password@host:5432/db` (or `postgres://`)
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ConfigurationError("store URL is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme == "memory":
        return AsyncMemoryStore() if asynchronous else MemoryStore()
    if scheme == "sqlite":
        if parts.netloc:
            raise ConfigurationError(
                "a sqlite URL has three slashes before a relative path (sqlite:///sessions.db) "
                "and four before an absolute one (sqlite:////var/lib/app/sessions.db)"
            )
        path = unquote(parts.path[1:]) or "sessions.db"
        return AsyncSQLiteStore(path) if asynchronous else SQLiteStore(path)
    if scheme in _REDIS_SCHEMES:
        store: Store | AsyncStore = (
            __getattr__("AsyncRedisStore")(url) if asynchronous else __getattr__("RedisStore")(url)
        )
        return store
    if scheme in _POSTGRES_SCHEMES:
        name = "AsyncPostgresStore" if asynchronous else "PostgresStore"
        postgres: Store | AsyncStore = __getattr__(name)(url)
        return postgres
    raise ConfigurationError(
        f"unknown store URL scheme {scheme + '://' if scheme else url!r}; "
        "use memory://, sqlite:///path, redis://host, redis+cluster://host, postgresql://host"
    )


def to_async(store: Store) -> AsyncStore:
    """The async twin of a sync store, sharing its data."""
    if isinstance(store, MemoryStore):
        return AsyncMemoryStore(store)
    if isinstance(store, SQLiteStore):
        return AsyncSQLiteStore.wrapping(store)
    for module, sync, twin in (
        ("redis", "RedisStore", "AsyncRedisStore"),
        ("postgres", "PostgresStore", "AsyncPostgresStore"),
    ):
        # Not imported yet means `store` cannot be one of its classes: never import here.
        loaded = sys.modules.get(f"{__name__}.{module}")
        if loaded is not None and isinstance(store, getattr(loaded, sync)):
            wrapped: AsyncStore | None = getattr(loaded, twin).wrapping(store)
            if wrapped is not None:
                return wrapped
    return ThreadedStore(store)
