"""Session stores: where server-side sessions (and client-side registries) live.

`MemoryStore` (one process), `SQLiteStore` (one machine, the embedded default); each with
an `Async` twin. `from_url` builds one from a URL such as `sqlite:///sessions.db`.
"""

from __future__ import annotations

from typing import Literal, overload
from urllib.parse import unquote, urlsplit

from ..exceptions import ConfigurationError
from .base import AsyncStore, Record, Store
from .memory import AsyncMemoryStore, MemoryStore
from .sqlite import AsyncSQLiteStore, SQLiteStore
from .threaded import ThreadedStore

__all__ = [
    "AsyncMemoryStore",
    "AsyncSQLiteStore",
    "AsyncStore",
    "MemoryStore",
    "Record",
    "SQLiteStore",
    "Store",
    "ThreadedStore",
    "from_url",
    "to_async",
]


@overload
def from_url(url: str, *, asynchronous: Literal[False] = False) -> Store: ...
@overload
def from_url(url: str, *, asynchronous: Literal[True]) -> AsyncStore: ...


def from_url(url: str, *, asynchronous: bool = False) -> Store | AsyncStore:
    """A store for `url` (the `Async` twin with `asynchronous=True`).

    - `memory://`
    - `sqlite:///relative/path.db`, `sqlite:////absolute/path.db`, `sqlite:///:memory:`
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
    raise ConfigurationError(
        f"unknown store URL scheme {scheme + '://' if scheme else url!r}; "
        "use memory://, sqlite:///path"
    )


def to_async(store: Store) -> AsyncStore:
    """The async twin of a sync store, sharing its data."""
    if isinstance(store, MemoryStore):
        return AsyncMemoryStore(store)
    if isinstance(store, SQLiteStore):
        return AsyncSQLiteStore.wrapping(store)
    return ThreadedStore(store)
