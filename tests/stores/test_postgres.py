"""PostgresStore and AsyncPostgresStore against a real PostgreSQL cluster started by
`tests/servers.py` (`initdb` / `pg_ctl`); then PostgresRevocationStore (with twin) against
the revocation contract. The LISTEN/NOTIFY push feed is tested in
`tests/test_revocation_feeds.py`."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest

from coatcheck.exceptions import ConfigurationError, StoreUnavailable
from coatcheck.revocation import Revocation
from coatcheck.stores import AsyncStore, Record, Store, from_url, revocations_to_async, to_async
from coatcheck.stores.postgres import (
    PURGE_BATCH,
    RECONNECT_TIMEOUT,
    AsyncPostgresRevocationStore,
    AsyncPostgresStore,
    PostgresRevocationStore,
    PostgresStore,
)
from servers import PostgresServer, free_port, postgres_server_fixture  # noqa: F401

from .contract import (
    AsyncConnect,
    AsyncStoreContract,
    Connect,
    ManualClock,
    Plant,
    RevocationStoreContract,
    StoreContract,
)

pytestmark = pytest.mark.service


def fresh_table() -> str:
    """A table no other test uses: each test starts from an empty, not yet created table."""
    return f"test_{secrets.token_hex(6)}"


def drop(server: PostgresServer, table: str) -> None:
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")


class TestPostgresStore(StoreContract):
    @pytest.fixture
    def clock(self) -> ManualClock:
        return ManualClock()

    @pytest.fixture
    def store(self, postgres_server: PostgresServer, clock: ManualClock) -> Iterator[Store]:
        table = fresh_table()
        store = PostgresStore(postgres_server.url, table=table, clock=clock)
        yield store
        store.close()
        drop(postgres_server, table)


class TestAsyncPostgresStore(AsyncStoreContract):
    @pytest.fixture
    def clock(self) -> ManualClock:
        return ManualClock()

    @pytest.fixture
    async def astore(
        self, postgres_server: PostgresServer, clock: ManualClock
    ) -> AsyncIterator[AsyncStore]:
        table = fresh_table()
        store = AsyncPostgresStore(postgres_server.url, table=table, clock=clock)
        yield store
        await store.aclose()
        drop(postgres_server, table)


class TestPostgresStoreRealTime(StoreContract):
    """The contract once more on the real clock, as a deployment runs it."""

    @pytest.fixture
    def store(self, postgres_server: PostgresServer) -> Iterator[Store]:
        table = fresh_table()
        store = PostgresStore(postgres_server.url, table=table)
        yield store
        store.close()
        drop(postgres_server, table)


def test_schema_is_created_on_first_use_and_by_create_schema(
    postgres_server: PostgresServer,
) -> None:
    table = fresh_table()
    store = PostgresStore(postgres_server.url, table=table)
    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        exists = f"SELECT to_regclass('{table}') IS NOT NULL"
        assert conn.execute(exists).fetchone() == (False,)
        assert store.load("k") is None
        assert conn.execute(exists).fetchone() == (True,)
        indexes = conn.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = %s ORDER BY 1", (table,)
        ).fetchall()
        assert [name for (name,) in indexes] == [
            f"{table}_expires",
            f"{table}_pkey",
            f"{table}_user",
        ]
    store.create_schema()  # again: a no-op
    store.close()
    drop(postgres_server, table)


def test_purge_runs_in_batches_and_removes_only_expired_rows(
    postgres_server: PostgresServer,
) -> None:
    clock = ManualClock()
    table = fresh_table()
    store = PostgresStore(postgres_server.url, table=table, clock=clock)
    store.create_schema()
    expired = PURGE_BATCH * 2 + 7
    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        conn.execute(
            f"INSERT INTO {table} (key, data, version, expires_at, user_id) "  # noqa: S608
            "SELECT 'k' || i, 'x', 1, %s, 'u' FROM generate_series(1, %s) AS i",
            (clock() - 1, expired),
        )
    store.save("live", b"live", version=0, ttl=60, user="u")
    assert store.purge_expired() == expired
    assert store.purge_expired() == 0
    assert store.list_user("u") == [("live", Record(b"live", 1))]
    store.close()
    drop(postgres_server, table)


def test_concurrent_first_uses_create_the_schema_once(postgres_server: PostgresServer) -> None:
    from concurrent.futures import ThreadPoolExecutor

    table = fresh_table()
    stores = [PostgresStore(postgres_server.url, table=table) for _ in range(6)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda s: s.save("k", b"d", version=0, ttl=60, user=None), stores))
    assert results.count(True) == 1
    for store in stores:
        store.close()
    drop(postgres_server, table)


def test_from_url_and_to_async(postgres_server: PostgresServer) -> None:
    for url in (postgres_server.url, postgres_server.url.replace("postgresql", "postgres", 1)):
        store = from_url(url)
        assert isinstance(store, PostgresStore) and store.table == "coatcheck_sessions"
        twin = to_async(store)
        assert isinstance(twin, AsyncPostgresStore) and twin.table == store.table
        store.close()
        assert isinstance(from_url(url, asynchronous=True), AsyncPostgresStore)


@pytest.mark.anyio
async def test_sync_and_async_twins_share_rows(postgres_server: PostgresServer) -> None:
    table = fresh_table()
    store = PostgresStore(postgres_server.url, table=table)
    twin = to_async(store)
    store.save("k", b"shared", version=0, ttl=60, user="frank")
    assert await twin.load("k") == Record(b"shared", 1)
    assert await twin.save("k", b"again", version=1, ttl=60, user="frank")
    assert store.list_user("frank") == [("k", Record(b"again", 2))]
    await twin.aclose()
    store.close()
    drop(postgres_server, table)


def test_table_name_must_be_an_identifier() -> None:
    with pytest.raises(ConfigurationError, match="identifier"):
        PostgresStore("postgresql://localhost/db", table="sessions; DROP TABLE users")


def test_unreachable_server_is_store_unavailable_without_secrets() -> None:
    store = PostgresStore(f"postgresql://app:hunter2@127.0.0.1:{free_port()}/db", timeout=0.3)
    for operation in (
        lambda: store.load("k"),
        lambda: store.save("k", b"d", version=0, ttl=60, user="u"),
        lambda: store.delete_user("u"),
    ):
        with pytest.raises(StoreUnavailable) as caught:
            operation()
        assert "hunter2" not in str(caught.value)
    store.close()


@pytest.mark.anyio
async def test_async_unreachable_server_is_store_unavailable() -> None:
    store = AsyncPostgresStore(f"postgresql://app:hunter2@127.0.0.1:{free_port()}/db", timeout=0.3)
    with pytest.raises(StoreUnavailable) as caught:
        await store.load("k")
    assert "hunter2" not in str(caught.value)
    await store.aclose()


# -- pool: a busy pool is a queue, not a 503; a dead server is a quick 503 -----------------


async def pause(store: AsyncPostgresStore, seconds: float) -> None:
    """An operation holding its connection for at least `seconds` (server side)."""
    await store._rowcount("SELECT pg_sleep(%s)", (seconds,))


async def queue_behind(store: AsyncPostgresStore, count: int, seconds: float) -> list[Any]:
    """`count` pauses queued on the pool, then a load: the load waits for all of them."""
    ahead = [asyncio.ensure_future(pause(store, seconds)) for _ in range(count)]
    await asyncio.sleep(0)  # each takes its place in the pool's queue, first come first served
    return ahead


@pytest.mark.anyio
async def test_300_concurrent_slow_operations_with_default_settings_all_succeed(
    postgres_server: PostgresServer,
) -> None:
    """300 operations of >= 40 ms each: at least 1.2 s of queueing on the old pool (10
    connections, giving up after 1 s: 503s with a healthy server); the default pool
    waits."""
    table = fresh_table()
    store = AsyncPostgresStore(postgres_server.url, table=table)
    await store.create_schema()
    results = await asyncio.gather(
        *(pause(store, 0.04) for _ in range(300)), return_exceptions=True
    )
    await store.aclose()
    drop(postgres_server, table)
    assert [r for r in results if isinstance(r, BaseException)] == []


@pytest.mark.anyio
async def test_a_busy_pool_makes_an_operation_wait_longer_than_timeout(
    postgres_server: PostgresServer,
) -> None:
    """`timeout` bounds each statement, not the wait for a connection: an operation queued
    behind >= 0.5 s of work on one connection waits for it, then completes."""
    table = fresh_table()
    store = AsyncPostgresStore(
        postgres_server.url, table=table, timeout=0.3, max_connections=1, pool_timeout=60
    )
    await store.create_schema()
    ahead = await queue_behind(store, 100, 0.005)
    started = time.monotonic()
    assert await store.load("k") is None
    assert time.monotonic() - started >= 0.5
    await asyncio.gather(*ahead)
    await store.aclose()
    drop(postgres_server, table)


@pytest.mark.anyio
async def test_a_busy_pool_fails_only_once_pool_timeout_has_passed(
    postgres_server: PostgresServer,
) -> None:
    table = fresh_table()
    store = AsyncPostgresStore(
        postgres_server.url, table=table, timeout=0.3, max_connections=1, pool_timeout=0.5
    )
    await store.create_schema()
    ahead = await queue_behind(store, 200, 0.005)  # >= 1 s of work
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="pool_timeout=0.5") as caught:
        await store.load("k")
    assert time.monotonic() - started >= 0.49
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    await asyncio.gather(*ahead, return_exceptions=True)  # the last ones gave up as well
    assert await store.load("k") is None  # the server answered all along: no quick 503s
    await store.aclose()
    drop(postgres_server, table)


def test_a_busy_sync_pool_makes_operations_wait_longer_than_timeout(
    postgres_server: PostgresServer,
) -> None:
    """30 threads, one connection, >= 20 ms each: >= 0.6 s of queue, twice `timeout`."""
    from concurrent.futures import ThreadPoolExecutor

    table = fresh_table()
    store = PostgresStore(
        postgres_server.url, table=table, timeout=0.3, max_connections=1, pool_timeout=60
    )
    store.create_schema()

    def pause(_: int) -> None:
        store._run(lambda conn: conn.execute("SELECT pg_sleep(0.02)"))

    with ThreadPoolExecutor(max_workers=30) as pool:
        list(pool.map(pause, range(30)))  # raises the first error, if any
    store.close()
    drop(postgres_server, table)


@pytest.mark.anyio
async def test_concurrent_first_operations_create_the_schema_once(
    postgres_server: PostgresServer,
) -> None:
    """The first burst of requests waits for one schema creation, rather than each taking
    a connection to queue on the same advisory lock (which alone kept the old 10
    connections busy past their 1 s wait at a cold start)."""
    table = fresh_table()
    store = AsyncPostgresStore(postgres_server.url, table=table)
    created = 0
    create = store.create_schema

    async def counted() -> None:
        nonlocal created
        created += 1
        await create()

    store.create_schema = counted  # type: ignore[method-assign]
    results = await asyncio.gather(*(store.load(f"k{i}") for i in range(50)))
    assert results == [None] * 50
    assert created == 1
    await store.aclose()
    drop(postgres_server, table)


def test_the_pool_gives_up_a_lost_connection_within_a_second() -> None:
    """psycopg_pool retries a lost connection with back-off for 5 minutes by default, so a
    server back after a 20 s outage served again only after 11.6 s (measured); given up
    after RECONNECT_TIMEOUT, the next operation tries afresh at once."""
    store = PostgresStore("postgresql://u@127.0.0.1:1/db")
    assert store.pool.reconnect_timeout == RECONNECT_TIMEOUT == 1.0


def test_an_unreachable_server_fails_after_timeout_not_pool_timeout() -> None:
    store = PostgresStore(
        f"postgresql://app@127.0.0.1:{free_port()}/db", timeout=0.3, pool_timeout=60
    )
    started = time.monotonic()
    for _ in range(3):
        with pytest.raises(StoreUnavailable, match="could not reach"):
            store.load("k")
    assert time.monotonic() - started < 30  # 3 x 0.3 s; 60 s each if it waited pool_timeout
    store.close()


@pytest.mark.anyio
async def test_async_unreachable_server_fails_after_timeout_not_pool_timeout() -> None:
    store = AsyncPostgresStore(
        f"postgresql://app@127.0.0.1:{free_port()}/db", timeout=0.3, pool_timeout=60
    )
    started = time.monotonic()
    results = await asyncio.gather(*(store.load("k") for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, StoreUnavailable) for r in results), results
    assert time.monotonic() - started < 30
    await store.aclose()


# -- revocations ---------------------------------------------------------------------------


class TestPostgresRevocationStore(RevocationStoreContract):
    """Clients of one fresh table, each with its own pool."""

    @pytest.fixture
    def table(self, postgres_server: PostgresServer) -> Iterator[str]:
        table = fresh_table()
        yield table
        drop(postgres_server, table)

    @pytest.fixture
    def connect(self, postgres_server: PostgresServer, table: str, clock: ManualClock) -> Connect:
        return lambda: PostgresRevocationStore(postgres_server.url, table=table, clock=clock)

    @pytest.fixture
    def aconnect(
        self, postgres_server: PostgresServer, table: str, clock: ManualClock
    ) -> AsyncConnect:
        return lambda: AsyncPostgresRevocationStore(postgres_server.url, table=table, clock=clock)

    @pytest.fixture
    def plant(self, postgres_server: PostgresServer, table: str) -> Plant:
        def plant(doc: str, expires_at: float) -> None:
            with psycopg.connect(postgres_server.url, autocommit=True) as conn:
                conn.execute(
                    f"INSERT INTO {table} (entry, expires_at) VALUES (%s, %s)",  # noqa: S608
                    (doc, expires_at),
                )

        return plant


def test_revocation_schema_is_created_on_first_use(postgres_server: PostgresServer) -> None:
    table = fresh_table()
    store = PostgresRevocationStore(postgres_server.url, table=table)
    assert store.changes(0) == ([], 0)
    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        indexes = conn.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = %s ORDER BY 1", (table,)
        ).fetchall()
        assert [name for (name,) in indexes] == [f"{table}_expires", f"{table}_pkey"]
    store.create_schema()  # again: a no-op
    store.close()
    drop(postgres_server, table)


@pytest.mark.anyio
async def test_revocation_twin_is_on_the_same_table(postgres_server: PostgresServer) -> None:
    table = fresh_table()
    store = PostgresRevocationStore(postgres_server.url, table=table)
    twin = revocations_to_async(store)
    assert isinstance(twin, AsyncPostgresRevocationStore) and twin.table == table
    entry = Revocation("sid", "s", 1.0, 2.0**40)
    await twin.revoke(entry)
    assert store.changes(0)[0] == [entry]
    await twin.aclose()
    store.close()
    drop(postgres_server, table)


def test_revocation_table_name_must_be_an_identifier() -> None:
    with pytest.raises(ConfigurationError, match="identifier"):
        PostgresRevocationStore("postgresql://localhost/db", table="r; DROP TABLE users")


def test_unreachable_revocation_server_is_store_unavailable_without_secrets() -> None:
    url = f"postgresql://app:hunter2@127.0.0.1:{free_port()}/db"
    store = PostgresRevocationStore(url, timeout=0.3)
    for operation in (lambda: store.revoke(Revocation("sid", "s", 1, 2)), lambda: store.changes(0)):
        with pytest.raises(StoreUnavailable) as caught:
            operation()
        assert "hunter2" not in str(caught.value)
    store.close()
