"""Stores: where server-side sessions, client-side registries and revocation lists live.

`MemoryStore` (one process), `SQLiteStore` (one machine, the embedded default),
`RedisStore` and `PostgresStore` (many machines); each with an `Async` twin. Beside each
session store, in the same module and on the same connection code, is its backend's
revocation store (`MemoryRevocationStore`, `SQLiteRevocationStore`, `RedisRevocationStore`,
`PostgresRevocationStore`, and twins). `from_url` builds a session store from a URL such as
`sqlite:///sessions.db`, and `revocations_for` the revocation store of the same URL;
`to_async` and `revocations_to_async` give a sync store's async twin. The Redis and
PostgreSQL modules are imported on first access, so `import coatcheck.stores` imports
neither redis nor psycopg.
"""

from __future__ import annotations

import importlib
import math
import sys
from typing import TYPE_CHECKING, Any, Literal, overload
from urllib.parse import SplitResult, unquote, urlsplit

from ..exceptions import ConfigurationError
from ..revocation import AsyncRevocationStore, RevocationStore
from .base import AsyncStore, Record, Store
from .memory import (
    AsyncMemoryRevocationStore,
    AsyncMemoryStore,
    MemoryRevocationStore,
    MemoryStore,
)
from .sqlite import (
    AsyncSQLiteRevocationStore,
    AsyncSQLiteStore,
    SQLiteRevocationStore,
    SQLiteStore,
)
from .threaded import ThreadedRevocationStore, ThreadedStore

if TYPE_CHECKING:
    from .postgres import (
        AsyncPostgresRevocationStore,
        AsyncPostgresStore,
        PostgresRevocationStore,
        PostgresStore,
    )
    from .redis import (
        AsyncRedisRevocationStore,
        AsyncRedisStore,
        RedisRevocationStore,
        RedisStore,
    )

__all__ = [
    "AsyncMemoryRevocationStore",
    "AsyncMemoryStore",
    "AsyncPostgresRevocationStore",
    "AsyncPostgresStore",
    "AsyncRedisRevocationStore",
    "AsyncRedisStore",
    "AsyncSQLiteRevocationStore",
    "AsyncSQLiteStore",
    "AsyncStore",
    "MemoryRevocationStore",
    "MemoryStore",
    "PostgresRevocationStore",
    "PostgresStore",
    "Record",
    "RedisRevocationStore",
    "RedisStore",
    "SQLiteRevocationStore",
    "SQLiteStore",
    "Store",
    "ThreadedRevocationStore",
    "ThreadedStore",
    "from_url",
    "revocations_for",
    "revocations_to_async",
    "to_async",
]

#: Stores whose driver is an optional dependency: name -> (module, extra to install).
_LAZY = {
    "RedisStore": ("redis", "redis"),
    "AsyncRedisStore": ("redis", "redis"),
    "RedisRevocationStore": ("redis", "redis"),
    "AsyncRedisRevocationStore": ("redis", "redis"),
    "PostgresStore": ("postgres", "postgres"),
    "AsyncPostgresStore": ("postgres", "postgres"),
    "PostgresRevocationStore": ("postgres", "postgres"),
    "AsyncPostgresRevocationStore": ("postgres", "postgres"),
}
#: The modules in `_LAZY`, with their sync classes and async twins, for `to_async` and
#: `revocations_to_async`.
_TWINS = {
    "store": (("redis", "RedisStore", "AsyncRedisStore"),
              ("postgres", "PostgresStore", "AsyncPostgresStore")),
    "revocations": (("redis", "RedisRevocationStore", "AsyncRedisRevocationStore"),
                    ("postgres", "PostgresRevocationStore", "AsyncPostgresRevocationStore")),
}  # fmt: skip
_REDIS_SCHEMES = ("redis", "rediss", "redis+cluster", "rediss+cluster")
_POSTGRES_SCHEMES = ("postgresql", "postgres")
#: URL query parameters that size a Redis or PostgreSQL store's pool: the store reads
#: them and removes them before the URL reaches the driver.
_POOL_OPTIONS = ("max_connections", "pool_timeout")


def __getattr__(name: str) -> Any:
    """Import the Redis and PostgreSQL stores (and twins) on first access."""
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


def _split(url: str) -> tuple[str, SplitResult]:
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ConfigurationError("store URL is not a valid URL") from None
    return parts.scheme.lower(), parts


def _sqlite_path(parts: SplitResult) -> str:
    if parts.netloc:
        raise ConfigurationError(
            "a sqlite URL has three slashes before a relative path (sqlite:///sessions.db) "
            "and four before an absolute one (sqlite:////var/lib/app/sessions.db)"
        )
    return unquote(parts.path[1:]) or "sessions.db"


def _pool_settings(
    url: str,
    *,
    max_connections: int | None,
    pool_timeout: float | None,
    defaults: tuple[int, float],
) -> tuple[str, int, float]:
    """A Redis or PostgreSQL store's pool settings: (`url` without its pool options,
    max_connections, pool_timeout). Each comes from the argument, else the URL's query
    (`?max_connections=50&pool_timeout=5`), else `defaults`; both at once must agree.

    The options are cut out of the query as written, so the rest of the URL (other
    options, percent-escapes) reaches the driver unchanged. A string that is not a URL (a
    libpq `key=value` string) is left as it is: only the arguments apply.
    """
    head, sep, query = url.partition("?") if "://" in url else (url, "", "")
    fragment = ""
    if "#" in query:
        query, _, fragment = query.partition("#")
        fragment = "#" + fragment
    found: dict[str, str] = {}
    kept = []
    for item in query.split("&") if sep else []:
        name, _, value = item.partition("=")
        if name in _POOL_OPTIONS:
            if name in found:
                raise ConfigurationError(f"the store URL sets {name} twice")
            found[name] = unquote(value)
        elif item:
            kept.append(item)
    rest = head + ("?" + "&".join(kept) if kept else "") + fragment
    size = _setting("max_connections", max_connections, found, int, defaults[0])
    wait = _setting("pool_timeout", pool_timeout, found, float, defaults[1])
    if size < 1:
        raise ConfigurationError(f"max_connections must be 1 or more, not {size}")
    if not (math.isfinite(wait) and wait > 0):
        raise ConfigurationError(
            f"pool_timeout is the most seconds to wait for a free connection: a number "
            f"above 0, not {wait}"
        )
    return rest, size, wait


def _setting(name: str, given: Any, found: dict[str, str], kind: type, default: Any) -> Any:
    if name not in found:
        return default if given is None else given
    try:
        value = kind(found[name])
    except ValueError:
        what = "a whole number" if kind is int else "a number of seconds"
        raise ConfigurationError(f"{name}={found[name]!r} in the store URL is not {what}") from None
    if given is not None and given != value:
        raise ConfigurationError(
            f"{name} is set both in the store URL ({value}) and as an argument ({given}); "
            "set it in one place"
        )
    return value


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

    Redis and PostgreSQL URLs may size the store's connection pool in their query:
    `?max_connections=50&pool_timeout=5` (see the store classes; other query parameters
    go to the driver).
    """
    scheme, parts = _split(url)
    if scheme == "memory":
        return AsyncMemoryStore() if asynchronous else MemoryStore()
    if scheme == "sqlite":
        path = _sqlite_path(parts)
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


def revocations_for(url: str) -> RevocationStore:
    """The revocation store that goes with the session store `from_url(url)` builds: the
    same backend, the same file or server (in a table or keys of its own)."""
    scheme, parts = _split(url)
    if scheme == "memory":
        return MemoryRevocationStore()
    if scheme == "sqlite":
        return SQLiteRevocationStore(_sqlite_path(parts))
    if scheme in _REDIS_SCHEMES:
        redis_store: RevocationStore = __getattr__("RedisRevocationStore")(url)
        return redis_store
    if scheme in _POSTGRES_SCHEMES:
        postgres: RevocationStore = __getattr__("PostgresRevocationStore")(url)
        return postgres
    raise ConfigurationError(
        f"no revocation store for {parts.scheme}:// URLs yet; pass revocations=... explicitly"
    )


def to_async(store: Store) -> AsyncStore:
    """The async twin of a sync store, sharing its data."""
    if isinstance(store, MemoryStore):
        return AsyncMemoryStore(store)
    if isinstance(store, SQLiteStore):
        return AsyncSQLiteStore.wrapping(store)
    _, wrapped = _wrapping("store", store)
    return ThreadedStore(store) if wrapped is None else wrapped


def revocations_to_async(store: RevocationStore) -> AsyncRevocationStore:
    """The async twin of a built-in sync revocation store, sharing its entries; for a Redis
    or PostgreSQL store built on a client object rather than a URL, the store itself, each
    call run in a worker thread. ConfigurationError for any other store."""
    if isinstance(store, MemoryRevocationStore):
        return AsyncMemoryRevocationStore(store)
    if isinstance(store, SQLiteRevocationStore):
        return AsyncSQLiteRevocationStore(store)
    found, wrapped = _wrapping("revocations", store)
    if wrapped is not None:
        twin: AsyncRevocationStore = wrapped
        return twin
    if found:  # built on a client object: no URL to copy
        return ThreadedRevocationStore(store)
    raise ConfigurationError(f"no async twin known for {type(store).__name__}")


def _wrapping(kind: str, store: object) -> tuple[bool, Any]:
    """Whether `store` is one of the Redis or PostgreSQL classes of `kind`, and its async
    twin on the same data (None if it has none: built on a client object)."""
    for module, sync, twin in _TWINS[kind]:
        # Not imported yet means `store` cannot be one of its classes: never import here.
        loaded = sys.modules.get(f"{__name__}.{module}")
        if loaded is not None and isinstance(store, getattr(loaded, sync)):
            return True, getattr(loaded, twin).wrapping(store)
    return False, None
