"""PostgresStore and AsyncPostgresStore against a real PostgreSQL cluster started by
`tests/servers.py` (`initdb` / `pg_ctl`); then PostgresRevocationStore (with twin) against
the revocation contract. The LISTEN/NOTIFY push feed is tested in
`tests/test_revocation_feeds.py`."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest

from coatcheck.exceptions import ConfigurationError, StoreUnavailable
from coatcheck.revocation import Revocation
from coatcheck.stores import AsyncStore, Record, Store, from_url, revocations_to_async, to_async
from coatcheck.stores.postgres import (
    PURGE_BATCH,
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
            f"{table}_expires", f"{table}_pkey", f"{table}_user"
        ]  # fmt: skip
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
