"""RedisStore and AsyncRedisStore against real servers: one `redis-server` and a
three-master Redis Cluster, both started by `tests/servers.py`; then RedisRevocationStore
(with twin) against the revocation contract, and its layout. The pub/sub push feed is
tested in `tests/test_revocation_feeds.py`."""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.cluster
from redis.crc import key_slot

from coatcheck.exceptions import ConfigurationError, StoreUnavailable
from coatcheck.revocation import Revocation, RevocationList
from coatcheck.stores import (
    AsyncStore,
    Record,
    Store,
    ThreadedRevocationStore,
    from_url,
    revocations_for,
    revocations_to_async,
    to_async,
)
from coatcheck.stores.redis import (
    AsyncRedisRevocationStore,
    AsyncRedisStore,
    RedisRevocationStore,
    RedisStore,
)
from servers import (  # noqa: F401 - fixtures
    RedisCluster,
    RedisServer,
    free_port,
    redis_cluster_fixture,
    redis_server_fixture,
)

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


def fresh_prefix() -> str:
    """A prefix no other test uses: each test sees an empty store on the shared server."""
    return f"test-{secrets.token_hex(6)}:"


class TestRedisStore(StoreContract):
    purge_counts_expired = False

    @pytest.fixture
    def store(self, redis_server: RedisServer) -> Iterator[Store]:
        store = RedisStore(redis_server.url, prefix=fresh_prefix())
        yield store
        store.close()


class TestAsyncRedisStore(AsyncStoreContract):
    purge_counts_expired = False

    @pytest.fixture
    async def astore(self, redis_server: RedisServer) -> AsyncIterator[AsyncStore]:
        store = AsyncRedisStore(redis_server.url, prefix=fresh_prefix())
        yield store
        await store.aclose()


class TestRedisClusterStore(StoreContract):
    """Keys spread over three masters: session, index and rotation touch different slots."""

    purge_counts_expired = False

    @pytest.fixture
    def store(self, redis_cluster: RedisCluster) -> Iterator[Store]:
        store = RedisStore(redis_cluster.url, prefix=fresh_prefix())
        assert store.cluster and not store.one_slot
        yield store
        store.close()


class TestAsyncRedisClusterStore(AsyncStoreContract):
    purge_counts_expired = False

    @pytest.fixture
    async def astore(self, redis_cluster: RedisCluster) -> AsyncIterator[AsyncStore]:
        store = AsyncRedisStore(redis_cluster.url, prefix=fresh_prefix())
        assert store.cluster and not store.one_slot
        yield store
        await store.aclose()


class TestRedisClusterOneSlotStore(StoreContract):
    """A hash tag in the prefix puts every key in one slot: the single-server scripts run
    on the cluster."""

    purge_counts_expired = False

    @pytest.fixture
    def store(self, redis_cluster: RedisCluster) -> Iterator[Store]:
        store = RedisStore(redis_cluster.url, prefix=f"test:{{{secrets.token_hex(6)}}}:")
        assert store.cluster and store.one_slot
        yield store
        store.close()


# -- round trips ---------------------------------------------------------------------------


class CountingConnection(redis.Connection):
    """A real connection that counts what it sends: one send is one round trip, since
    redis-py writes a command (or a whole pipeline) in one call and then reads."""

    sends = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sends += 1
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]


def counted(store: RedisStore, operation: Any) -> tuple[Any, int]:
    before = CountingConnection.sends
    result = operation(store)
    return result, CountingConnection.sends - before


def test_read_is_one_round_trip_and_write_is_one(redis_server: RedisServer) -> None:
    pool = redis.ConnectionPool(
        host="127.0.0.1", port=redis_server.port, connection_class=CountingConnection
    )
    client = redis.Redis(connection_pool=pool)
    store = RedisStore(client, prefix=fresh_prefix())
    key, other, user = "k" * 43, "o" * 43, "alice"
    store.save(other, b"warm-up: loads the scripts", version=0, ttl=60, user=user)
    store.rotate(other, "n" * 43, b"x", version=1, ttl=60, user=user)

    assert counted(store, lambda s: s.load(key)) == (None, 1)
    assert counted(store, lambda s: s.save(key, b"d", version=0, ttl=60, user=user)) == (True, 1)
    assert counted(store, lambda s: s.load(key)) == (Record(b"d", 1), 1)
    saved = counted(store, lambda s: s.save(key, b"e", version=1, ttl=60, user=None))
    assert saved == (True, 1)
    rotated = counted(store, lambda s: s.rotate(key, "m" * 43, b"f", version=2, ttl=60, user=user))
    assert rotated == (True, 1)
    assert counted(store, lambda s: s.load(key)) == (None, 1)  # the old key is gone
    client.close()


# -- layout: bounded index, TTLs -----------------------------------------------------------


def test_user_index_drops_expired_members_and_expires_itself(redis_server: RedisServer) -> None:
    prefix = fresh_prefix()
    store = RedisStore(redis_server.url, prefix=prefix)
    raw = redis.Redis.from_url(redis_server.url)
    index = f"{prefix}u:{{bob}}"
    short = [secrets.token_urlsafe(32) for _ in range(20)]
    for key in short:
        store.save(key, b"short", version=0, ttl=0.05, user="bob")
    assert raw.zcard(index) == 20
    for _ in range(100):  # bounded wait for Redis to expire them
        if not raw.exists(*(store._key(k) for k in short)):
            break
        time.sleep(0.05)
    last = secrets.token_urlsafe(32)
    store.save(last, b"long", version=0, ttl=60, user="bob")
    assert raw.zrange(index, 0, -1) == [last.encode()]
    assert 0 < raw.pttl(index) <= 60_000
    assert 0 < raw.pttl(f"{prefix}s:{{{last}}}") <= 60_000
    store.close()
    raw.close()


def test_stale_index_entries_are_pruned_when_listed(redis_server: RedisServer) -> None:
    prefix = fresh_prefix()
    store = RedisStore(redis_server.url, prefix=prefix)
    raw = redis.Redis.from_url(redis_server.url)
    key = secrets.token_urlsafe(32)
    store.save(key, b"a", version=0, ttl=60, user="carol")
    store.save(key, b"b", version=1, ttl=60, user="dave")  # changes hands
    assert raw.zcard(f"{prefix}u:{{carol}}") == 1  # a hint, checked on use
    assert store.list_user("carol") == []
    assert raw.zcard(f"{prefix}u:{{carol}}") == 0
    assert store.list_user("dave") == [(key, Record(b"b", 2))]
    store.close()
    raw.close()


def test_cluster_keys_of_one_store_spread_over_masters(redis_cluster: RedisCluster) -> None:
    store = RedisStore(redis_cluster.url, prefix=fresh_prefix())
    keys = [secrets.token_urlsafe(32) for _ in range(30)]
    for key in keys:
        store.save(key, b"x", version=0, ttl=60, user="eve")
    slots = {key_slot(store._key(k).encode()) for k in keys}
    assert len(slots) > 1
    assert {k for k, _ in store.list_user("eve")} == set(keys)
    assert store.delete_user("eve", keep=keys[0]) == len(keys) - 1
    assert [k for k, _ in store.list_user("eve")] == [keys[0]]
    store.close()


# -- configuration, URLs, twins ------------------------------------------------------------


def test_from_url_builds_redis_stores(
    redis_server: RedisServer, redis_cluster: RedisCluster
) -> None:
    store = from_url(redis_server.url)
    assert isinstance(store, RedisStore) and not store.cluster
    twin = to_async(store)
    assert isinstance(twin, AsyncRedisStore) and twin.prefix == store.prefix
    store.close()
    cluster = from_url(redis_cluster.url)
    assert isinstance(cluster, RedisStore) and cluster.cluster
    cluster.close()
    assert isinstance(from_url(redis_server.url, asynchronous=True), AsyncRedisStore)


@pytest.mark.anyio
async def test_sync_and_async_twins_share_records(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, prefix=fresh_prefix())
    twin = to_async(store)
    store.save("k" * 43, b"shared", version=0, ttl=60, user="frank")
    assert await twin.load("k" * 43) == Record(b"shared", 1)
    assert await twin.save("k" * 43, b"again", version=1, ttl=60, user="frank")
    assert store.list_user("frank") == [("k" * 43, Record(b"again", 2))]
    await twin.aclose()
    store.close()


def test_unbalanced_braces_in_prefix_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="braces"):
        RedisStore(redis.Redis(), prefix="app:{sessions:")


def test_unreachable_server_is_store_unavailable_without_secrets() -> None:
    port = free_port()
    store = RedisStore(f"redis://user:hunter2@127.0.0.1:{port}/0", timeout=0.2)
    for operation in (
        lambda: store.load("k" * 43),
        lambda: store.save("k" * 43, b"d", version=0, ttl=60, user="u"),
        lambda: store.list_user("u"),
    ):
        with pytest.raises(StoreUnavailable) as caught:
            operation()
        assert "hunter2" not in str(caught.value)
        assert caught.value.__cause__ is None and caught.value.__suppress_context__
    store.close()


@pytest.mark.anyio
async def test_async_unreachable_server_is_store_unavailable() -> None:
    store = AsyncRedisStore(f"redis://:hunter2@127.0.0.1:{free_port()}/0", timeout=0.2)
    with pytest.raises(StoreUnavailable) as caught:
        await store.load("k" * 43)
    assert "hunter2" not in str(caught.value)
    await store.aclose()


def test_a_non_coatcheck_value_is_reported_corrupted(redis_server: RedisServer) -> None:
    from coatcheck.exceptions import StoreCorrupted

    prefix = fresh_prefix()
    store = RedisStore(redis_server.url, prefix=prefix)
    raw = redis.Redis.from_url(redis_server.url)
    raw.set(f"{prefix}s:{{{'k' * 43}}}", b"not a record")
    with pytest.raises(StoreCorrupted):
        store.load("k" * 43)
    assert store.save("k" * 43, b"d", version=0, ttl=60, user=None) is False
    store.close()
    raw.close()


def test_importing_coatcheck_imports_neither_redis_nor_psycopg() -> None:
    code = (
        "import sys, coatcheck, coatcheck.stores, coatcheck.drivers, coatcheck.adapters.asgi\n"
        "from coatcheck.stores import from_url, to_async, revocations_for, revocations_to_async\n"
        "loaded = sorted(m for m in ('redis', 'psycopg', 'psycopg_pool') if m in sys.modules)\n"
        "print(','.join(loaded))\n"
        "from coatcheck.stores import RedisStore, PostgresStore\n"
        "print(RedisStore.__module__, PostgresStore.__module__)\n"
        "from coatcheck.stores import RedisRevocationStore, AsyncPostgresRevocationStore\n"
        "print(RedisRevocationStore.__module__, AsyncPostgresRevocationStore.__module__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, check=True, timeout=60
    )
    lines = result.stdout.decode().splitlines()
    assert lines == ["", *["coatcheck.stores.redis coatcheck.stores.postgres"] * 2]


def test_a_client_that_decodes_responses_is_refused() -> None:
    """Type checkers refuse it too; this is for code they do not see."""
    decoding: Any = redis.Redis(decode_responses=True)
    with pytest.raises(ConfigurationError, match="decode_responses"):
        RedisStore(decoding)
    async_decoding: Any = redis.asyncio.Redis(decode_responses=True)
    with pytest.raises(ConfigurationError, match="decode_responses"):
        AsyncRedisStore(async_decoding)


# -- revocations ---------------------------------------------------------------------------

T0 = 1_800_000_000.0


class RedisRevocations(RevocationStoreContract):
    """Clients of one fresh prefix on the server at `url` (a fixture of each subclass)."""

    @pytest.fixture
    def prefix(self) -> str:
        return fresh_prefix()

    @pytest.fixture
    def connect(self, url: str, prefix: str, clock: ManualClock) -> Connect:
        return lambda: RedisRevocationStore(url, prefix=prefix, clock=clock)

    @pytest.fixture
    def aconnect(self, url: str, prefix: str, clock: ManualClock) -> AsyncConnect:
        return lambda: AsyncRedisRevocationStore(url, prefix=prefix, clock=clock)

    @pytest.fixture
    def plant(self, url: str, prefix: str) -> Plant:
        def plant(doc: str, expires_at: float) -> None:
            store = RedisRevocationStore(url, prefix=prefix)
            try:  # what `revoke` writes, minus the entry and the message
                member = f"{int(store.client.incr(store.keys[0]))} {doc}"
                store.client.zadd(store.keys[1], {member: int(member.split()[0])})
                store.client.zadd(store.keys[2], {member: expires_at})
            finally:
                store.close()

        return plant


class TestRedisRevocationStore(RedisRevocations):
    @pytest.fixture
    def url(self, redis_server: RedisServer) -> str:
        return redis_server.url


class TestRedisClusterRevocationStore(RedisRevocations):
    """On a cluster: every revocation key carries one hash tag, so one slot."""

    @pytest.fixture
    def url(self, redis_cluster: RedisCluster) -> str:
        return redis_cluster.url


def sid_entry(subject: str, *, at: float = T0, ttl: float = 100.0) -> Revocation:
    return Revocation("sid", subject, at, at + ttl)


def test_revocation_sets_hold_only_live_revocations(redis_server: RedisServer) -> None:
    clock = ManualClock(T0)
    store = RedisRevocationStore(redis_server.url, prefix=fresh_prefix(), clock=clock)
    for i in range(300):
        store.revoke(sid_entry(f"old-{i}", ttl=10))
    assert store.client.zcard(store.keys[1]) == 300
    clock.advance(10)
    for i in range(2):  # each revoke also drops up to TRIM_BATCH (100) expired entries
        store.revoke(sid_entry(f"live-{i}", at=clock.now))
    assert store.client.zcard(store.keys[1]) == store.client.zcard(store.keys[2]) == 102
    assert store.purge_expired() == 100
    assert store.client.zcard(store.keys[1]) == store.client.zcard(store.keys[2]) == 2
    assert [e.subject for e in store.changes(0)[0]] == ["live-0", "live-1"]
    store.close()


def test_revoke_and_poll_are_one_round_trip_each(redis_server: RedisServer) -> None:
    pool = redis.ConnectionPool(
        host="127.0.0.1", port=redis_server.port, connection_class=CountingConnection
    )
    client = redis.Redis(connection_pool=pool)
    store = RedisRevocationStore(client, prefix=fresh_prefix())
    store.revoke(sid_entry("warm-up: loads the script"))
    _, cursor = store.changes(0)
    before = CountingConnection.sends
    store.revoke(sid_entry("counted"))
    assert CountingConnection.sends - before == 1
    before = CountingConnection.sends
    assert store.changes(cursor)[0] == [sid_entry("counted")]
    assert CountingConnection.sends - before == 1
    store.close()
    client.close()


def test_revocation_keys_share_one_cluster_slot(redis_cluster: RedisCluster) -> None:
    store = RedisRevocationStore(redis_cluster.url, prefix=fresh_prefix())
    assert len({key_slot(k.encode()) for k in store.keys}) == 1
    tagged = RedisRevocationStore(redis_cluster.url, prefix="app:{sessions}:")
    assert {key_slot(k.encode()) for k in tagged.keys} == {key_slot(b"sessions")}
    store.close()
    tagged.close()


def test_revocation_numbers_after_a_data_loss_stay_above_old_cursors(
    redis_server: RedisServer,
) -> None:
    """A server that lost its data starts numbering from its clock, above every cursor
    handed out before, so processes whose cursor is ahead still get new entries."""
    store = RedisRevocationStore(redis_server.url, prefix=fresh_prefix())
    lst = RevocationList()
    store.revoke(sid_entry("before"))
    entries, cursor = store.changes(0)
    lst.apply(entries, cursor, T0)
    store.client.delete(*store.keys)  # what a restart without persistence leaves
    store.revoke(sid_entry("after"))
    entries, cursor = store.changes(lst.cursor)
    assert entries == [sid_entry("after")]
    store.close()


def test_unreachable_revocation_server_is_store_unavailable_without_secrets() -> None:
    store = RedisRevocationStore(f"redis://:hunter2@127.0.0.1:{free_port()}/0", timeout=0.2)
    for operation in (lambda: store.revoke(sid_entry("x")), lambda: store.changes(0)):
        with pytest.raises(StoreUnavailable) as caught:
            operation()
        assert "hunter2" not in str(caught.value)
    store.close()


def test_revocations_for_a_cluster_url_is_a_cluster_client(redis_cluster: RedisCluster) -> None:
    store = revocations_for(redis_cluster.url)
    assert isinstance(store, RedisRevocationStore)
    assert isinstance(store.client, redis.cluster.RedisCluster)
    twin = revocations_to_async(store)
    assert isinstance(twin, AsyncRedisRevocationStore) and twin.cluster
    store.close()


def test_a_revocation_store_on_a_client_object_gets_a_threaded_async_face() -> None:
    store = RedisRevocationStore(redis.Redis(port=1))
    twin = revocations_to_async(store)
    assert isinstance(twin, ThreadedRevocationStore) and twin.sync is store
    store.close()


def test_unbalanced_braces_in_a_revocation_prefix_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="braces"):
        RedisRevocationStore(redis.Redis(), prefix="app:{sessions:")
