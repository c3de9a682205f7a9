"""Constructing a store does nothing: no file, no connection, no thread.

Every store, and everything `from_url`, `revocations_for`, `to_async` and
`revocations_to_async` build, opens its file or connections on first use (or `open()`),
so that building a `SessionManager` at import time, in a test or in a CLI call that never
reaches the store, costs nothing and cannot fail on a server that is down. Closing a store
that was never used is a no-op. Then the first operation works, also when many threads or
tasks make it at once.

A store built here points at a port where a socket listens but nobody answers: a
connection attempt would show as a pending connection on it.
"""

from __future__ import annotations

import os
import secrets
import select
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from coatcheck.stores import (
    AsyncMemoryRevocationStore,
    AsyncMemoryStore,
    AsyncSQLiteRevocationStore,
    AsyncSQLiteStore,
    AsyncStore,
    MemoryRevocationStore,
    MemoryStore,
    Record,
    SQLiteRevocationStore,
    SQLiteStore,
    Store,
    ThreadedRevocationStore,
    ThreadedStore,
    from_url,
    revocations_for,
    revocations_to_async,
    to_async,
)
from servers import (  # noqa: F401 - fixtures
    PostgresServer,
    RedisCluster,
    RedisServer,
    postgres_server_fixture,
    redis_cluster_fixture,
    redis_server_fixture,
)


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the test with an empty `tmp_path` as the working directory."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def silent_port() -> Iterator[tuple[socket.socket, int]]:
    """A listening socket that never accepts: a connection to it stays pending."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield server, server.getsockname()[1]


def urls(port: int) -> list[str]:
    """A URL of every scheme, the network ones pointing at `port`."""
    return [
        "memory://",
        "sqlite:///sessions.db",
        "sqlite:///no-such-dir/sessions.db",
        f"redis://127.0.0.1:{port}/0",
        f"rediss://127.0.0.1:{port}/0",
        f"redis+cluster://127.0.0.1:{port}",
        f"postgresql://u@127.0.0.1:{port}/db",
    ]


def built(port: int) -> list[Any]:
    """Every kind of store, built every way, not used."""
    from coatcheck.stores.postgres import (
        AsyncPostgresRevocationStore,
        AsyncPostgresStore,
        PostgresRevocationStore,
        PostgresStore,
    )
    from coatcheck.stores.redis import (
        AsyncRedisRevocationStore,
        AsyncRedisStore,
        RedisRevocationStore,
        RedisStore,
    )

    redis_url, postgres_url = f"redis://127.0.0.1:{port}/0", f"postgresql://u@127.0.0.1:{port}/db"
    stores: list[Any] = [
        MemoryStore(),
        AsyncMemoryStore(),
        MemoryRevocationStore(),
        AsyncMemoryRevocationStore(),
        SQLiteStore(),
        SQLiteStore(":memory:"),
        AsyncSQLiteStore(),
        SQLiteRevocationStore(),
        AsyncSQLiteRevocationStore(SQLiteRevocationStore()),
        ThreadedStore(SQLiteStore()),
        ThreadedRevocationStore(SQLiteRevocationStore()),
        RedisStore(redis_url),
        AsyncRedisStore(redis_url),
        RedisStore(f"redis+cluster://127.0.0.1:{port}"),
        RedisStore(redis_url, cluster=True),
        RedisRevocationStore(redis_url),
        AsyncRedisRevocationStore(redis_url),
        PostgresStore(postgres_url),
        AsyncPostgresStore(postgres_url),
        PostgresRevocationStore(postgres_url),
        AsyncPostgresRevocationStore(postgres_url),
    ]
    for url in urls(port):
        sync = from_url(url)
        stores += [sync, from_url(url, asynchronous=True), to_async(sync)]
        revocations = revocations_for(url)
        stores += [revocations, revocations_to_async(revocations)]
    return stores


def close(store: Any) -> None:
    if hasattr(store, "aclose"):
        anyio.run(store.aclose)
    else:
        store.close()


def test_building_and_closing_unused_stores_opens_no_file_connection_or_thread(
    in_tmp: Path, silent_port: tuple[socket.socket, int]
) -> None:
    server, port = silent_port
    threads = set(threading.enumerate())
    stores = built(port)
    assert os.listdir(in_tmp) == []
    assert set(threading.enumerate()) == threads
    assert select.select([server], [], [], 0.2)[0] == []  # no connection is pending
    for store in stores:
        close(store)  # a store never used has nothing to close
    assert os.listdir(in_tmp) == []
    assert set(threading.enumerate()) <= threads
    assert select.select([server], [], [], 0.2)[0] == []


def test_a_default_sqlite_store_creates_its_file_on_first_use(in_tmp: Path) -> None:
    store = from_url("sqlite:///sessions.db")
    assert os.listdir(in_tmp) == []
    assert store.save("k", b"v", version=0, ttl=60, user=None)
    assert (in_tmp / "sessions.db").is_file()
    assert store.load("k") == Record(b"v", 1)
    store.close()


# -- the first operation, on real servers, from many threads and tasks at once ----------------

FIRST_USERS = 8


def first_use_together(store: Store) -> None:
    """`FIRST_USERS` threads make the store's first operations at the same moment."""
    start = threading.Barrier(FIRST_USERS)
    failures: list[BaseException] = []
    tag = secrets.token_hex(6)

    def use(n: int) -> None:
        try:
            start.wait(timeout=30)
            assert store.save(f"{tag}{n}", b"v", version=0, ttl=60, user=f"u{tag}")
            assert store.load(f"{tag}{n}") == Record(b"v", 1)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    workers = [threading.Thread(target=use, args=(n,)) for n in range(FIRST_USERS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert failures == []


async def afirst_use_together(store: AsyncStore) -> None:
    """`FIRST_USERS` tasks make the store's first operations at once; then it closes."""

    tag = secrets.token_hex(6)

    async def use(n: int) -> None:
        assert await store.save(f"{tag}{n}", b"v", version=0, ttl=60, user=f"u{tag}")
        assert await store.load(f"{tag}{n}") == Record(b"v", 1)

    async with anyio.create_task_group() as group:
        for n in range(FIRST_USERS):
            group.start_soon(use, n)
    await store.aclose()  # in the loop its connections belong to


def check_first_use(url: str) -> None:
    threads = set(threading.enumerate())
    sync, twin = from_url(url), from_url(url, asynchronous=True)
    assert set(threading.enumerate()) == threads
    first_use_together(sync)
    anyio.run(afirst_use_together, twin)
    sync.close()


def test_first_use_of_a_lazy_sqlite_store(tmp_path: Path) -> None:
    check_first_use(f"sqlite:///{tmp_path / 'first.db'}")


@pytest.mark.service
def test_first_use_of_a_lazy_redis_store(redis_server: RedisServer) -> None:
    check_first_use(redis_server.url)


@pytest.mark.service
def test_first_use_of_a_lazy_redis_cluster_store(redis_cluster: RedisCluster) -> None:
    check_first_use(redis_cluster.url)


@pytest.mark.service
def test_first_use_of_a_lazy_postgres_store(postgres_server: PostgresServer) -> None:
    tables = iter(f"first_{secrets.token_hex(4)}" for _ in range(2))
    check_first_use(postgres_server.url)
    # and on fresh tables: the schema is created once, however many arrive first
    from coatcheck.stores.postgres import AsyncPostgresStore, PostgresStore

    threads = set(threading.enumerate())
    sync = PostgresStore(postgres_server.url, table=next(tables))
    twin = AsyncPostgresStore(postgres_server.url, table=next(tables))
    assert set(threading.enumerate()) == threads
    first_use_together(sync)
    anyio.run(afirst_use_together, twin)
    sync.close()
