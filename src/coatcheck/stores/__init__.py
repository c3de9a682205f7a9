"""Stores: where server-side sessions, client-side registries and revocation lists live.

`MemoryStore` (one process), `SQLiteStore` (one machine, the embedded default),
`RedisStore` and `PostgresStore` (many machines); each with an `Async` twin. Beside each
session store, in the same module and on the same connection code, is its backend's
revocation store (`MemoryRevocationStore`, `SQLiteRevocationStore`, `RedisRevocationStore`,
`PostgresRevocationStore`, and twins). `DjangoStore` keeps sessions in a Django project's
own database (no revocation store). `from_url` builds a session store from a URL such as
`sqlite:///sessions.db`, and `revocations_for` the revocation store of the same URL;
`to_async` and `revocations_to_async` give a sync store's async twin. All four read one
table, `_BACKENDS`.

Nothing here runs at import: each backend's module is imported when one of its classes is
first named or built (PEP 562 `__getattr__`), so `import coatcheck.stores` imports neither
sqlite3 nor asyncio, let alone redis or psycopg; and no store opens a file, connection or
thread before its first operation (or its `open()`).
"""

from __future__ import annotations

import importlib
import math
import sys
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, overload
from urllib.parse import SplitResult, unquote, urlsplit

from ..exceptions import ConfigurationError
from .base import AsyncStore, Record, Store

if TYPE_CHECKING:
    from ..revocation import AsyncRevocationStore, RevocationStore
    from .django import AsyncDjangoStore, DjangoStore
    from .memory import (
        AsyncMemoryRevocationStore,
        AsyncMemoryStore,
        MemoryRevocationStore,
        MemoryStore,
    )
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
    from .sqlite import (
        AsyncSQLiteRevocationStore,
        AsyncSQLiteStore,
        SQLiteRevocationStore,
        SQLiteStore,
    )
    from .threaded import ThreadedRevocationStore, ThreadedStore

__all__ = [
    "AsyncDjangoStore",
    "AsyncMemoryRevocationStore",
    "AsyncMemoryStore",
    "AsyncPostgresRevocationStore",
    "AsyncPostgresStore",
    "AsyncRedisRevocationStore",
    "AsyncRedisStore",
    "AsyncSQLiteRevocationStore",
    "AsyncSQLiteStore",
    "AsyncStore",
    "DjangoStore",
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


class _Backend(NamedTuple):
    """One backend: its module, its four classes (by name, so that naming them imports
    nothing), and the pip extra its driver comes with (None: the standard library)."""

    module: str
    store: str
    async_store: str
    revocations: str | None  # None: sessions only
    async_revocations: str | None
    extra: str | None


_BACKENDS = {
    "memory": _Backend(
        "memory",
        "MemoryStore",
        "AsyncMemoryStore",
        "MemoryRevocationStore",
        "AsyncMemoryRevocationStore",
        None,
    ),
    "sqlite": _Backend(
        "sqlite",
        "SQLiteStore",
        "AsyncSQLiteStore",
        "SQLiteRevocationStore",
        "AsyncSQLiteRevocationStore",
        None,
    ),
    "redis": _Backend(
        "redis",
        "RedisStore",
        "AsyncRedisStore",
        "RedisRevocationStore",
        "AsyncRedisRevocationStore",
        "redis",
    ),
    "postgres": _Backend(
        "postgres",
        "PostgresStore",
        "AsyncPostgresStore",
        "PostgresRevocationStore",
        "AsyncPostgresRevocationStore",
        "postgres",
    ),
    "django": _Backend("django", "DjangoStore", "AsyncDjangoStore", None, None, "django"),
}
#: URL scheme -> backend.
_SCHEMES = {
    "memory": "memory",
    "sqlite": "sqlite",
    "redis": "redis",
    "rediss": "redis",
    "redis+cluster": "redis",
    "rediss+cluster": "redis",
    "redis+sentinel": "redis",
    "postgresql": "postgres",
    "postgres": "postgres",
    "django": "django",
}
#: Every class this package names -> (its module, the pip extra of its driver).
_CLASSES = {
    name: (backend.module, backend.extra)
    for backend in _BACKENDS.values()
    for name in backend[1:5]
    if name is not None
}
_CLASSES.update(ThreadedStore=("threaded", None), ThreadedRevocationStore=("threaded", None))
#: URL query parameters that size a Redis or PostgreSQL store's pool: the store reads
#: them and removes them before the URL reaches the driver.
_POOL_OPTIONS = ("max_connections", "pool_timeout")


def __getattr__(name: str) -> Any:
    """Import a store class's module on first access to the class."""
    if name not in _CLASSES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, extra = _CLASSES[name]
    try:
        loaded = importlib.import_module(f"{__name__}.{module}")
    except ModuleNotFoundError as exc:
        if extra is None or (exc.name or "").startswith(__name__):
            raise
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


def _no_arguments(url: str, parts: SplitResult) -> tuple[str, ...]:
    return ()


def _path_argument(url: str, parts: SplitResult) -> tuple[str, ...]:
    return (_sqlite_path(parts),)


def _url_argument(url: str, parts: SplitResult) -> tuple[str, ...]:
    return (url,)


def _alias_argument(url: str, parts: SplitResult) -> tuple[str, ...]:
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigurationError(
            "a django store URL names only a database alias: django:// (the default "
            "database) or django://<alias>, an entry of settings.DATABASES"
        )
    return (unquote(parts.netloc) or "default",)


#: What a backend's classes are built with, from a URL: nothing, the file's path, the URL.
_ARGUMENTS = {
    "memory": _no_arguments,
    "sqlite": _path_argument,
    "redis": _url_argument,
    "postgres": _url_argument,
    "django": _alias_argument,
}


def _backend(url: str) -> tuple[_Backend | None, str, tuple[str, ...]]:
    """The backend of `url` (None for an unknown scheme), its scheme, and the arguments its
    classes are built with."""
    scheme, parts = _split(url)
    name = _SCHEMES.get(scheme)
    if name is None:
        return None, scheme, ()
    return _BACKENDS[name], scheme, _ARGUMENTS[name](url, parts)


@overload
def from_url(url: str, *, asynchronous: Literal[False] = False) -> Store: ...
@overload
def from_url(url: str, *, asynchronous: Literal[True]) -> AsyncStore: ...


def from_url(url: str, *, asynchronous: bool = False) -> Store | AsyncStore:
    """A store for `url` (the `Async` twin with `asynchronous=True`), not yet connected: it
    opens its file or connections on first use (or `open()`).

    - `memory://`
    - `sqlite:///relative/path.db`, `sqlite:////absolute/path.db`, `sqlite:///:memory:`
    - `redis://[[user]:password@]host:6379/0`, `rediss://...` (TLS); a Redis Cluster:
      `redis+cluster://host:port` or `rediss+cluster://...` (any node)
    - a Sentinel-managed Redis:
      `redis+sentinel://[[user]:password@]host:26379[,host:26379...]/service_name[/db]`
      (the sentinels; see `stores.sentinel`)
    - `postgresql://user:password@host:5432/db` (or `postgres://`)
    - `django://` or `django://<alias>`: a Django project's own database (`DjangoStore`)

    Redis and PostgreSQL URLs may size the store's connection pool in their query:
    `?max_connections=50&pool_timeout=5` (see the store classes; other query parameters
    go to the driver).
    """
    backend, scheme, arguments = _backend(url)
    if backend is None:
        raise ConfigurationError(
            f"unknown store URL scheme {scheme + '://' if scheme else url!r}; "
            "use memory://, sqlite:///path, redis://host, redis+cluster://host, "
            "redis+sentinel://host/service, "
            "postgresql://host, django://"
        )
    store: Store | AsyncStore = __getattr__(backend.async_store if asynchronous else backend.store)(
        *arguments
    )
    return store


def revocations_for(url: str) -> RevocationStore:
    """The revocation store that goes with the session store `from_url(url)` builds: the
    same backend, the same file or server (in a table or keys of its own)."""
    backend, scheme, arguments = _backend(url)
    if backend is None or backend.revocations is None:
        raise ConfigurationError(
            f"no revocation store for {scheme}:// URLs yet; pass revocations=... explicitly"
        )
    store: RevocationStore = __getattr__(backend.revocations)(*arguments)
    return store


def to_async(store: Store) -> AsyncStore:
    """The async twin of a sync store, sharing its data; for any other store (or a Redis or
    PostgreSQL store built on a client object rather than a URL), the store itself, each
    call run in a worker thread."""
    twin = _twin(store, "store", "async_store")[1]
    if twin is None:
        from .threaded import ThreadedStore

        return ThreadedStore(store)
    found: AsyncStore = twin
    return found


def revocations_to_async(store: RevocationStore) -> AsyncRevocationStore:
    """The async twin of a built-in sync revocation store, sharing its entries; for a Redis
    or PostgreSQL store built on a client object rather than a URL, the store itself, each
    call run in a worker thread. ConfigurationError for any other store."""
    known, twin = _twin(store, "revocations", "async_revocations")
    if twin is not None:
        found: AsyncRevocationStore = twin
        return found
    if known:  # built on a client object: no URL to copy
        from .threaded import ThreadedRevocationStore

        return ThreadedRevocationStore(store)
    raise ConfigurationError(f"no async twin known for {type(store).__name__}")


def _twin(store: object, sync: str, twin: str) -> tuple[bool, Any]:
    """Whether `store` is an instance of a backend's class named in field `sync` of
    `_BACKENDS`, and its async twin on the same data (the class in field `twin`, through
    its `wrapping`; None if it has none: built on a client object)."""
    for backend in _BACKENDS.values():
        # Not imported yet means `store` cannot be one of its classes: never import here.
        loaded = sys.modules.get(f"{__name__}.{backend.module}")
        name = getattr(backend, sync)
        if loaded is not None and name is not None and isinstance(store, getattr(loaded, name)):
            return True, getattr(loaded, getattr(backend, twin)).wrapping(store)
    return False, None
