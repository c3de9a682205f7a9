"""`from_url` (a store from a URL, sync or async) and `to_async` (the async twin of a store);
`revocations_for` and `revocations_to_async`, their twins for revocation stores."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from coatcheck.exceptions import ConfigurationError
from coatcheck.revocation import Revocation
from coatcheck.stores import (
    AsyncMemoryRevocationStore,
    AsyncMemoryStore,
    AsyncPostgresRevocationStore,
    AsyncRedisRevocationStore,
    AsyncSQLiteRevocationStore,
    AsyncSQLiteStore,
    AsyncStore,
    MemoryRevocationStore,
    MemoryStore,
    PostgresRevocationStore,
    Record,
    RedisRevocationStore,
    SQLiteRevocationStore,
    SQLiteStore,
    Store,
    ThreadedStore,
    from_url,
    revocations_for,
    revocations_to_async,
    to_async,
)


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the test with `tmp_path` as the working directory."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("url", ["memory://", "MEMORY://", "memory:"])
def test_memory_url(url: str) -> None:
    store = from_url(url)
    assert type(store) is MemoryStore
    assert type(from_url(url, asynchronous=True)) is AsyncMemoryStore


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///sessions.db", "sessions.db"),
        ("sqlite:///data/app.db", "data/app.db"),
        ("sqlite:///my%20sessions.db", "my sessions.db"),
        ("sqlite:///", "sessions.db"),
        ("SQLite:///upper.db", "upper.db"),
    ],
)
def test_sqlite_url_with_three_slashes_is_relative(in_tmp: Path, url: str, path: str) -> None:
    (in_tmp / "data").mkdir()
    store = from_url(url)
    assert isinstance(store, SQLiteStore)
    assert store.path == path
    assert store.save("k", b"v", version=0, ttl=60, user=None)
    assert (in_tmp / path).is_file()
    store.close()


def test_sqlite_url_with_four_slashes_is_absolute(tmp_path: Path) -> None:
    target = tmp_path / "abs.db"
    assert target.is_absolute()
    store = from_url(f"sqlite:///{target}")
    assert isinstance(store, SQLiteStore)
    assert store.path == str(target)
    store.save("k", b"v", version=0, ttl=60, user=None)
    assert target.is_file()
    store.close()


def test_sqlite_urls_share_a_file_between_sync_and_async(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    sync = from_url(url)
    twin = from_url(url, asynchronous=True)
    assert isinstance(twin, AsyncSQLiteStore)
    assert sync.save("k", b"v", version=0, ttl=60, user=None)
    assert twin.sync.load("k") == Record(b"v", 1)
    sync.close()
    twin.sync.close()


def test_sqlite_memory_url_holds_its_data(in_tmp: Path) -> None:
    store = from_url("sqlite:///:memory:")
    assert isinstance(store, SQLiteStore)
    assert store.save("k", b"v", version=0, ttl=60, user=None)
    assert store.load("k") == Record(b"v", 1)
    assert list(in_tmp.iterdir()) == []  # no file was created
    store.close()


@pytest.mark.parametrize("url", ["sqlite://sessions.db", "sqlite://localhost/sessions.db"])
def test_sqlite_url_with_a_host_explains_the_slashes(url: str) -> None:
    with pytest.raises(ConfigurationError, match="three slashes") as info:
        from_url(url)
    assert "four" in str(info.value)
    assert "sqlite:////var/lib/app/sessions.db" in str(info.value)


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("mongodb://admin:hunter2@db.example/sessions", "'mongodb://'"),
        ("file:///tmp/sessions.db", "'file://'"),
        ("sessions.db", "'sessions.db'"),
        ("", "''"),
    ],
)
def test_unknown_scheme_names_it_and_lists_the_known_ones(url: str, named: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        from_url(url, asynchronous=True)
    message = str(info.value)
    assert f"unknown store URL scheme {named}" in message
    assert "memory://" in message
    assert "sqlite:///" in message
    assert "hunter2" not in message  # credentials never appear in errors


def test_malformed_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="not a valid URL"):
        from_url("sqlite://[::1/sessions.db")
    assert issubclass(ConfigurationError, ValueError)


@pytest.mark.parametrize("url", ["memory://", "sqlite:///:memory:", "sqlite:///async.db"])
def test_asynchronous_returns_the_async_twin(in_tmp: Path, url: str) -> None:
    sync, twin = from_url(url), from_url(url, asynchronous=True)
    assert isinstance(sync, Store) and not isinstance(sync, AsyncStore)
    assert isinstance(twin, AsyncStore) and not isinstance(twin, Store)
    assert type(twin).__name__ == f"Async{type(sync).__name__}"


class DictStore:
    """A third-party sync store: what `to_async` knows no twin for."""

    def __init__(self) -> None:
        self.inner = MemoryStore()

    def load(self, key: str) -> Record | None:
        return self.inner.load(key)

    def save(self, key: str, data: bytes, *, version: int, ttl: float, user: str | None) -> bool:
        return self.inner.save(key, data, version=version, ttl=ttl, user=user)

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
        return self.inner.rotate(old_key, new_key, data, version=version, ttl=ttl, user=user)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def list_user(self, user: str) -> list[tuple[str, Record]]:
        return self.inner.list_user(user)

    def delete_user(self, user: str, *, keep: str | None = None) -> int:
        return self.inner.delete_user(user, keep=keep)

    def purge_expired(self) -> int:
        return self.inner.purge_expired()

    def close(self) -> None:
        self.inner.close()


@pytest.mark.anyio
async def test_to_async_of_memory_store_shares_its_records() -> None:
    sync = MemoryStore()
    twin = to_async(sync)
    assert isinstance(twin, AsyncMemoryStore)
    assert twin.sync is sync
    assert await twin.save("k", b"v", version=0, ttl=60, user="u")
    assert sync.load("k") == Record(b"v", 1)


@pytest.mark.anyio
async def test_to_async_of_sqlite_store_shares_its_database_and_settings(tmp_path: Path) -> None:
    sync = SQLiteStore(tmp_path / "s.db", table="custom", timeout=1.5, purge_interval=7)
    twin = to_async(sync)
    assert isinstance(twin, AsyncSQLiteStore)
    assert (twin.sync.path, twin.sync.table, twin.sync.timeout, twin.sync.purge_interval) == (
        sync.path,
        "custom",
        1.5,
        7,
    )
    assert await twin.save("k", b"v", version=0, ttl=60, user="u")
    assert sync.load("k") == Record(b"v", 1)
    assert sync.save("k", b"v2", version=1, ttl=60, user="u")
    assert await twin.list_user("u") == [("k", Record(b"v2", 2))]
    await twin.aclose()
    sync.close()


@pytest.mark.anyio
async def test_to_async_of_any_other_store_runs_it_in_threads() -> None:
    sync = DictStore()
    assert isinstance(sync, Store)
    twin = to_async(sync)
    assert isinstance(twin, ThreadedStore)
    assert twin.sync is sync
    assert await twin.save("k", b"v", version=0, ttl=60, user="u")
    assert sync.load("k") == Record(b"v", 1)
    assert await twin.delete_user("u") == 1
    await twin.aclose()


def test_from_url_does_not_touch_the_working_directory_for_memory(in_tmp: Path) -> None:
    from_url("memory://").close()
    assert os.listdir(in_tmp) == []


# -- revocation stores ---------------------------------------------------------------------


def test_revocations_for_memory_and_sqlite_urls(in_tmp: Path) -> None:
    memory = revocations_for("memory://")
    assert type(memory) is MemoryRevocationStore
    assert type(revocations_to_async(memory)) is AsyncMemoryRevocationStore
    sqlite = revocations_for("sqlite:///data.db")
    assert type(sqlite) is SQLiteRevocationStore and sqlite.path == "data.db"
    assert type(revocations_to_async(sqlite)) is AsyncSQLiteRevocationStore
    assert sqlite.table == "coatcheck_revocations"  # beside the sessions, in the same file
    sqlite.close()


def test_revocations_for_redis_and_postgres_urls() -> None:
    for url, sync, twin in (
        ("redis://127.0.0.1:1/0", RedisRevocationStore, AsyncRedisRevocationStore),
        ("rediss://127.0.0.1:1/0", RedisRevocationStore, AsyncRedisRevocationStore),
        ("postgresql://u@127.0.0.1:1/db", PostgresRevocationStore, AsyncPostgresRevocationStore),
        ("postgres://u@127.0.0.1:1/db", PostgresRevocationStore, AsyncPostgresRevocationStore),
    ):
        store = revocations_for(url)
        assert type(store) is sync, url
        assert type(revocations_to_async(store)) is twin, url
        store.close()


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://host/x", "no revocation store for ftp:// URLs"),
        ("sqlite://host/sessions.db", "three slashes"),
        ("http://[", "not a valid URL"),
    ],
)
def test_revocations_for_other_urls_says_why(url: str, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        revocations_for(url)


class ListRevocations:
    """A third-party sync revocation store."""

    def revoke(self, entry: Revocation) -> None: ...

    def changes(self, cursor: int) -> tuple[list[Revocation], int]:
        return [], cursor

    def purge_expired(self) -> int:
        return 0

    def close(self) -> None: ...


def test_revocations_to_async_of_an_unknown_store_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="no async twin known for ListRevocations"):
        revocations_to_async(ListRevocations())


# -- pool settings in Redis and PostgreSQL URLs --------------------------------------------
# Building these stores opens no connection, so no server is needed.


def test_redis_url_sizes_the_pool_and_keeps_its_other_options() -> None:
    import redis

    from coatcheck.stores.redis import RedisStore

    store = from_url(
        "redis://:p%40ss@127.0.0.1:1/0?socket_keepalive=true&max_connections=7&pool_timeout=1.5"
    )
    assert isinstance(store, RedisStore)
    assert (store.max_connections, store.pool_timeout) == (7, 1.5)
    pool = store.client.connection_pool
    assert isinstance(pool, redis.BlockingConnectionPool)
    assert (pool.max_connections, pool.timeout) == (7, 1.5)
    assert pool.connection_kwargs["socket_keepalive"] is True
    assert pool.connection_kwargs["password"] == "p@ss"
    assert store._url == "redis://:p%40ss@127.0.0.1:1/0?socket_keepalive=true"
    twin = to_async(store)
    assert (twin.max_connections, twin.pool_timeout) == (7, 1.5)  # type: ignore[attr-defined]
    store.close()


@pytest.mark.anyio
async def test_async_redis_url_sizes_the_gate_and_leaves_its_pool_room() -> None:
    store = from_url("redis://127.0.0.1:1/0?max_connections=7&pool_timeout=1.5", asynchronous=True)
    client: Any = getattr(store, "client", None)
    assert (client.gate.free, client.gate.timeout) == (7, 1.5)
    assert client.connection_pool.max_connections == 14
    await store.aclose()


def test_redis_and_postgres_pool_defaults() -> None:
    from coatcheck.stores.postgres import PostgresRevocationStore, PostgresStore
    from coatcheck.stores.redis import AsyncRedisStore, RedisStore

    for store in (RedisStore("redis://127.0.0.1:1/0"), AsyncRedisStore("redis://127.0.0.1:1/0")):
        assert (store.max_connections, store.pool_timeout) == (50, 5.0)
    postgres = PostgresStore("postgresql://u@127.0.0.1:1/db")
    assert (postgres.max_connections, postgres.pool_timeout, postgres.timeout) == (20, 5.0, 1.0)
    assert (postgres.pool.max_size, postgres.pool.timeout) == (20, 5.0)
    revocations = PostgresRevocationStore("postgresql://u@127.0.0.1:1/db")
    assert (revocations.max_connections, revocations.pool_timeout) == (4, 5.0)


def test_postgres_url_sizes_the_pool_and_libpq_never_sees_the_options() -> None:
    from coatcheck.stores.postgres import AsyncPostgresStore, PostgresStore

    url = "postgresql://u@127.0.0.1:1/db?max_connections=33&sslmode=disable&pool_timeout=2.5"
    store = from_url(url)
    assert isinstance(store, PostgresStore)
    assert (store.max_connections, store.pool_timeout) == (33, 2.5)
    assert (store.pool.max_size, store.pool.timeout) == (33, 2.5)
    assert store._conninfo == store.pool.conninfo == "postgresql://u@127.0.0.1:1/db?sslmode=disable"
    twin = to_async(store)
    assert isinstance(twin, AsyncPostgresStore)
    assert (twin.max_connections, twin.pool_timeout, twin._conninfo) == (
        33,
        2.5,
        store._conninfo,
    )
    revocations = revocations_for(url)
    assert isinstance(revocations, PostgresRevocationStore)
    assert (revocations.max_connections, revocations.pool_timeout) == (33, 2.5)
    keywords = PostgresStore("host=127.0.0.1 port=1 dbname=db", max_connections=3)
    assert keywords._conninfo == "host=127.0.0.1 port=1 dbname=db" and keywords.max_connections == 3


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis://h/0?max_connections=0", "1 or more"),
        ("redis://h/0?max_connections=many", "not a whole number"),
        ("redis://h/0?pool_timeout=-1", "above 0"),
        ("redis://h/0?pool_timeout=nan", "above 0"),
        ("redis://h/0?pool_timeout=soon", "not a number of seconds"),
        ("redis://h/0?max_connections=2&max_connections=3", "twice"),
        ("redis://h/0?timeout=3", "pool_timeout="),
        ("postgresql://u@h/db?max_connections=1.5", "not a whole number"),
        ("postgres://u@h/db?pool_timeout=0", "above 0"),
    ],
)
def test_bad_pool_settings_in_a_url_say_how_to_fix_them(url: str, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        from_url(url)


def test_a_pool_setting_given_twice_must_agree() -> None:
    from coatcheck.stores.postgres import PostgresStore
    from coatcheck.stores.redis import RedisStore

    with pytest.raises(ConfigurationError, match="one place"):
        RedisStore("redis://h/0?max_connections=7", max_connections=8)
    with pytest.raises(ConfigurationError, match="one place"):
        PostgresStore("postgresql://u@h/db?pool_timeout=2", pool_timeout=3)
    assert RedisStore("redis://h/0?max_connections=7", max_connections=7).max_connections == 7


def test_pool_settings_are_refused_for_a_client_or_pool_the_store_does_not_make() -> None:
    import redis
    from psycopg_pool import ConnectionPool

    from coatcheck.stores.postgres import PostgresStore
    from coatcheck.stores.redis import RedisStore

    with pytest.raises(ConfigurationError, match="configure the pool"):
        RedisStore(redis.Redis(port=1), max_connections=5)
    pool: ConnectionPool[Any] = ConnectionPool("postgresql://u@h/db", open=False, timeout=9)
    with pytest.raises(ConfigurationError, match="configure the pool"):
        PostgresStore(pool, pool_timeout=1)
    given = PostgresStore(pool)
    assert (given.max_connections, given.pool_timeout) == (pool.max_size, 9)
