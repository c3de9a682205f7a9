"""RedisStore and AsyncRedisStore against real servers: one `redis-server` and a
three-master Redis Cluster, both started by `tests/servers.py`; then RedisRevocationStore
(with twin) against the revocation contract, and its layout. The pub/sub push feed is
tested in `tests/test_revocation_feeds.py`."""

from __future__ import annotations

import asyncio
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator
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
    TRIM_BATCH,
    AsyncRedisRevocationStore,
    AsyncRedisStore,
    RedisRevocationStore,
    RedisStore,
)
from helpers import await_until, blocked_clients, wait_until
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


def plant_expired(client: Any, index: str, count: int) -> list[bytes]:
    """`count` index members whose sessions expired long ago (scores in 1970, in ms): what
    an index holds after its sessions' TTLs ran out, without waiting for one to."""
    members = [f"gone-{i:05d}".encode() for i in range(count)]
    client.zadd(index, {member: 1_000 + i for i, member in enumerate(members)})
    client.pexpire(index, 3_600_000)  # an hour: longer than what the test saves next
    return members


def test_user_index_drops_expired_members_and_expires_itself(redis_server: RedisServer) -> None:
    """Expired members are planted with past scores, not made by real 50 ms TTLs (which a
    loaded machine outran before the last one was written)."""
    prefix = fresh_prefix()
    store = RedisStore(redis_server.url, prefix=prefix)
    index = f"{prefix}u:{{bob}}"
    plant_expired(store.client, index, 20)
    last = secrets.token_urlsafe(32)
    store.save(last, b"long", version=0, ttl=60, user="bob")
    assert store.client.zrange(index, 0, -1) == [last.encode()]
    assert 0 < store.client.pttl(index) <= 60_000  # now expires with its last member
    assert 0 < store.client.pttl(f"{prefix}s:{{{last}}}") <= 60_000
    store.close()


def test_a_write_drops_at_most_a_batch_of_expired_index_members(
    redis_server: RedisServer,
) -> None:
    """However many of a user's sessions expired since their last write, the write removes
    at most TRIM_BATCH of them, oldest first: no unbounded purge on a request's path."""
    prefix = fresh_prefix()
    store = RedisStore(redis_server.url, prefix=prefix)
    index = f"{prefix}u:{{bob}}"
    members = plant_expired(store.client, index, 3 * TRIM_BATCH + 5)
    key = secrets.token_urlsafe(32)
    store.save(key, b"d", version=0, ttl=60, user="bob")
    assert store.client.zcard(index) == 2 * TRIM_BATCH + 5 + 1
    assert store.client.zrange(index, 0, 0) == [members[TRIM_BATCH]]
    for version in (1, 2):  # each later write takes the next batch
        store.save(key, b"d", version=version, ttl=60, user="bob")
    assert store.client.zrange(index, 0, -1) == [*members[3 * TRIM_BATCH :], key.encode()]
    store.save(key, b"d", version=3, ttl=60, user="bob")
    assert store.client.zrange(index, 0, -1) == [key.encode()]
    assert store.list_user("bob") == [(key, Record(b"d", 4))]
    store.close()


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


# -- pool: a busy pool is a queue, not a 503 -----------------------------------------------


async def load_and_save(store: AsyncStore, key: str) -> bool:
    """A writing request's two round trips."""
    record = await store.load(key)
    version = 0 if record is None else record.version
    return await store.save(key, b"x" * 300, version=version, ttl=60, user=None)


@pytest.mark.anyio
@pytest.mark.parametrize("where", ["server", "cluster"])
async def test_300_concurrent_requests_with_default_settings_all_succeed(
    where: str, request: pytest.FixtureRequest
) -> None:
    """More requests in flight than redis-py's default pool (100 connections, per cluster
    node) used to let through before answering MaxConnectionsError, a 503."""
    url = request.getfixturevalue(f"redis_{where}").url
    # One hash tag: on the cluster every key is on the same node.
    store = AsyncRedisStore(url, prefix=f"test:{{{secrets.token_hex(6)}}}:")
    assert await store.load("warm-up") is None  # a cluster's nodes are found: no stagger
    results = await asyncio.gather(
        *(load_and_save(store, f"k{i}") for i in range(300)), return_exceptions=True
    )
    await store.aclose()
    assert [r for r in results if isinstance(r, BaseException)] == []
    assert results == [True] * 300


@pytest.mark.anyio
async def test_a_busy_pool_makes_a_command_wait_until_a_connection_frees(
    redis_server: RedisServer,
) -> None:
    prefix = fresh_prefix()
    # `timeout` long enough for the holders' blocking reads; `max_connections` as a user
    # would have set it before, in the URL.
    store = AsyncRedisStore(f"{redis_server.url}?max_connections=2", prefix=prefix, timeout=30)
    hold = f"{prefix}hold"
    holders = [asyncio.ensure_future(store.client.blpop([hold], timeout=0)) for _ in range(2)]
    await await_until(lambda: blocked_clients(redis_server.url) == 2, "both connections held")
    waiter = asyncio.ensure_future(load_and_save(store, "k" * 43))
    for _ in range(50):
        await asyncio.sleep(0)
    assert not waiter.done()  # queued for a connection, not failed
    raw = redis.asyncio.Redis.from_url(redis_server.url)
    await raw.lpush(hold, b"one")  # frees one connection
    assert await asyncio.wait_for(waiter, 30) is True
    await raw.lpush(hold, b"two")
    assert sorted(r[1] for r in await asyncio.gather(*holders)) == [b"one", b"two"]
    await raw.aclose()
    await store.aclose()


def test_a_busy_sync_pool_makes_a_command_wait_until_a_connection_frees(
    redis_server: RedisServer,
) -> None:
    prefix = fresh_prefix()
    store = RedisStore(f"{redis_server.url}?max_connections=2", prefix=prefix, timeout=30)
    hold = f"{prefix}hold"
    results: dict[str, Any] = {}

    def run(name: str, operation: Callable[[], Any]) -> threading.Thread:
        def target() -> None:
            try:
                results[name] = operation()
            except Exception as exc:  # the assertion below says which
                results[name] = exc

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        return thread

    holders = [run(f"holder{i}", lambda: store.client.blpop([hold], timeout=0)) for i in (1, 2)]
    wait_until(lambda: blocked_clients(redis_server.url) == 2, "both connections held")
    waiter = run("waiter", lambda: store.save("k" * 43, b"d", version=0, ttl=60, user=None))
    raw = redis.Redis.from_url(redis_server.url)
    raw.lpush(hold, b"one")
    waiter.join(30)
    assert results["waiter"] is True
    raw.lpush(hold, b"two")
    for thread in holders:
        thread.join(30)
    assert sorted(results[f"holder{i}"][1] for i in (1, 2)) == [b"one", b"two"]
    raw.close()
    store.close()


@pytest.mark.anyio
@pytest.mark.parametrize("where", ["server", "cluster"])
async def test_a_command_fails_only_once_pool_timeout_has_passed(
    where: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue(f"redis_{where}").url
    prefix = f"test:{{{secrets.token_hex(6)}}}:"
    store = AsyncRedisStore(url, prefix=prefix, timeout=30, max_connections=1, pool_timeout=0.2)
    holder = asyncio.ensure_future(store.client.blpop([f"{prefix}hold"], timeout=0))
    await await_until(lambda: store.client.gate.free == 0, "the connection held")
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="pool_timeout") as caught:
        await store.load("k" * 43)
    assert time.monotonic() - started >= 0.19  # the timer's resolution
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    holder.cancel()
    await store.aclose()


def test_a_sync_command_fails_only_once_pool_timeout_has_passed(redis_server: RedisServer) -> None:
    prefix = fresh_prefix()
    store = RedisStore(
        redis_server.url, prefix=prefix, timeout=30, max_connections=1, pool_timeout=0.2
    )
    holder = threading.Thread(
        target=lambda: store.client.blpop([f"{prefix}hold"], timeout=0), daemon=True
    )
    holder.start()
    wait_until(lambda: blocked_clients(redis_server.url) == 1, "the connection held")
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="pool_timeout"):
        store.load("k" * 43)
    assert time.monotonic() - started >= 0.19
    raw = redis.Redis.from_url(redis_server.url)
    raw.lpush(f"{prefix}hold", b"x")
    holder.join(30)
    raw.close()
    store.close()


def test_a_sync_cluster_store_gives_each_node_a_pool_that_waits(
    redis_cluster: RedisCluster,
) -> None:
    store = RedisStore(f"{redis_cluster.url}?max_connections=7&pool_timeout=2.5")
    store.save("k" * 43, b"d", version=0, ttl=60, user="u")
    pools = [node.redis_connection.connection_pool for node in store.client.get_nodes()]
    assert len(pools) == 3
    for pool in pools:
        assert isinstance(pool, redis.BlockingConnectionPool)
        assert (pool.max_connections, pool.timeout) == (7, 2.5)
    store.close()


def test_a_sync_cluster_command_fails_once_pool_timeout_has_passed_without_retries(
    redis_cluster: RedisCluster,
) -> None:
    """A node whose pool stayed busy is not a failed node: no slot map reload, no retries
    (three more waits of pool_timeout, with back-off, before the 503)."""
    prefix = f"test:{{{secrets.token_hex(6)}}}:"  # the held key and the session: one node
    store = RedisStore(
        redis_cluster.url, prefix=prefix, timeout=30, max_connections=1, pool_timeout=0.2
    )
    node = store.client.get_node_from_key(f"{prefix}hold")
    raw = redis.Redis(host=node.host, port=node.port)
    holder = threading.Thread(
        target=lambda: store.client.blpop([f"{prefix}hold"], timeout=0), daemon=True
    )
    holder.start()
    wait_until(lambda: int(raw.info("clients")["blocked_clients"]) == 1, "the connection held")
    reloads: list[object] = []
    reload = store.client.nodes_manager.initialize

    def counted_reload(*args: Any, **kwargs: Any) -> Any:
        reloads.append(args)
        return reload(*args, **kwargs)

    store.client.nodes_manager.initialize = counted_reload
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="pool_timeout"):
        store.load("k" * 43)
    assert time.monotonic() - started >= 0.19
    assert reloads == []
    raw.lpush(f"{prefix}hold", b"x")
    holder.join(30)
    raw.close()
    store.close()


@pytest.mark.anyio
async def test_the_async_gate_serves_waiters_first_come_first_served() -> None:
    """A freed place goes to the longest waiter, never to a newcomer (redis-py's async
    blocking pool lets newcomers take it: under steady load, waiters starved past a 5 s
    bound); a waiter that gives up or is cancelled leaves the queue."""
    from coatcheck.stores.redis import _Gate

    gate = _Gate(1, timeout=30)
    order: list[str] = []
    release = asyncio.Event()

    async def use(name: str, hold: asyncio.Event | None = None) -> None:
        async with gate:
            order.append(name)
            if hold is not None:
                await hold.wait()

    first = asyncio.ensure_future(use("first", release))
    await asyncio.sleep(0)
    second = asyncio.ensure_future(use("second"))
    cancelled = asyncio.ensure_future(use("cancelled"))
    await asyncio.sleep(0)
    cancelled.cancel()
    release.set()
    await first  # frees the place: it is handed to `second` before anyone else runs
    newcomer = asyncio.ensure_future(use("newcomer"))
    await asyncio.gather(second, newcomer)
    assert order == ["first", "second", "newcomer"]
    assert cancelled.cancelled() and gate.free == 1

    await gate.__aenter__()  # the test holds the place
    handed = asyncio.ensure_future(use("handed"))
    last = asyncio.ensure_future(use("last"))
    await asyncio.sleep(0)
    await gate.__aexit__(None, None, None)  # hands the place to `handed`...
    handed.cancel()  # ...cancelled before it could run: it passes the place on
    await last
    assert handed.cancelled() and order[-1] == "last" and gate.free == 1

    impatient = _Gate(1, timeout=0.01)
    async with impatient:
        with pytest.raises(redis.exceptions.MaxConnectionsError):
            async with impatient:
                pass  # pragma: no cover - never entered
    assert impatient.free == 1


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


def idle_connections(store: AsyncRedisStore) -> list[Any]:
    """The redis-py connections `store`'s client keeps idle in its pool(s)."""
    client = store.client
    if store.cluster:
        return [c for node in client.get_nodes() for c in node._free]
    return list(client.connection_pool._available_connections)


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["server", "cluster"])
async def test_a_command_on_a_connection_closed_under_it_is_resent(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """redis-py closes a pooled connection (as its cluster client does to the idle ones
    in a failover) while a command takes it from the pool: the command fails as a
    connection error before it writes, and redis-py's retry sends it on a new connection.
    redis-py 8.1 alone writes into the closed transport, which on CPython 3.12 and
    3.13.0-3.13.9 raises a `TypeError` or `AttributeError` from asyncio, a 500 (see
    `_WriteGuard`). The state is the one redis-py's `disconnect()` leaves while it waits
    for the close: the transport gone, the connection still holding its writer."""
    server: Any = request.getfixturevalue(f"redis_{kind}")
    store = AsyncRedisStore(server.url, prefix=fresh_prefix())
    try:
        await store.save("k" * 43, b"d", version=0, ttl=60, user="u")
        assert [key for key, _ in await store.list_user("u")] == ["k" * 43]
        pooled = idle_connections(store)
        assert pooled, "the commands left no connection in the pool"
        for connection in pooled:
            connection._writer.close()
            await connection._writer.wait_closed()
        assert [key for key, _ in await store.list_user("u")] == ["k" * 43]
    finally:
        await store.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["server", "cluster"])
async def test_a_connection_the_server_closed_while_idle_is_replaced(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """The server closes the pooled connections (`CLIENT KILL`, as a restart does): the
    next command, its end-of-file read, is not written to them but sent once on a new
    connection (`_NotSent`), so no request is answered 503 for a server that is up."""
    server: Any = request.getfixturevalue(f"redis_{kind}")
    name = f"probe-{secrets.token_hex(4)}"
    store = AsyncRedisStore(f"{server.url}?client_name={name}", prefix=fresh_prefix())
    try:
        await store.save("k" * 43, b"d", version=0, ttl=60, user="u")
        assert [key for key, _ in await store.list_user("u")] == ["k" * 43]
        pooled = idle_connections(store)
        assert pooled, "the commands left no connection in the pool"
        assert kill_clients_named(server, name) >= len(pooled)
        await await_until(
            lambda: all(c._reader is None or c._reader.at_eof() for c in pooled),
            "the client to read the end of its connections",
        )
        assert [key for key, _ in await store.list_user("u")] == ["k" * 43]
        assert (await store.load("k" * 43)) is not None
    finally:
        await store.aclose()


def kill_clients_named(server: Any, name: str) -> int:
    """Close, from the server's side, every connection of client `name` (on every node of
    a cluster); how many were closed."""
    closed = 0
    for url in node_urls(server):
        with redis.Redis.from_url(url) as admin:
            for entry in admin.client_list():
                if entry["name"] == name:
                    closed += admin.client_kill_filter(_id=entry["id"])
    return closed


def clients_named(urls: list[str], name: str) -> int:
    """How many connections of client `name` the servers at `urls` hold."""
    count = 0
    for url in urls:
        with redis.Redis.from_url(url) as admin:
            count += sum(entry["name"] == name for entry in admin.client_list())
    return count


def node_urls(server: Any) -> list[str]:
    """The `redis://` URL of each node of `server` (a `RedisServer` or `RedisCluster`)."""
    return [node.url for node in server.nodes] if isinstance(server, RedisCluster) else [server.url]


#: A script that keeps the server's one thread busy for ARGV[1] microseconds.
BUSY = (
    "local t0 = redis.call('TIME') "
    "repeat local t = redis.call('TIME') "
    "until (t[1] - t0[1]) * 1000000 + (t[2] - t0[2]) >= tonumber(ARGV[1])"
)


def keep_busy(url: str, seconds: float) -> socket.socket:
    """Send `BUSY` to the server at `url` on a raw connection (its reply is not read): the
    server runs nothing else for `seconds`, then what its clients sent meanwhile."""
    address = urllib.parse.urlsplit(url)
    conn = socket.create_connection((address.hostname, address.port or 6379), timeout=30)
    micros = str(int(seconds * 1_000_000))
    parts = [b"EVAL", BUSY.encode(), b"0", micros.encode()]
    conn.sendall(b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts))
    return conn


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["server", "cluster", "sync", "sync-cluster"])
async def test_a_write_whose_reply_is_late_is_never_sent_twice(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """The server is busy (a long script) for longer than the store's timeout: the save
    times out and is not sent again, since the server still runs it once it is free.
    Sent again (redis-py's default retry), both would run: the second would find the
    version the first wrote and report a conflict for the request's own write (or, in the
    rebase, apply `Session.increment` twice). So the save is a 503, and it lands once.
    (A store with a lane, from a plain `redis://` URL, keeps the same rule; the query
    option here takes the store through redis-py.)"""
    server: Any = request.getfixturevalue(
        "redis_cluster" if kind.endswith("cluster") else "redis_server"
    )
    name = f"late-{secrets.token_hex(4)}"
    url = f"{server.url}?client_name={name}"
    timeout, busy = 0.4, 0.6  # seconds: a retry sent at the timeout would be answered in time
    key, prefix = "k" * 43, fresh_prefix()
    sync_store = (
        RedisStore(url, prefix=prefix, timeout=timeout) if kind.startswith("sync") else None
    )
    store = AsyncRedisStore(url, prefix=prefix, timeout=timeout)
    try:
        # Connected (a cluster: its nodes found), the save script loaded on the key's node.
        assert await store.save(key, b"first", version=0, ttl=60, user=None)
        if sync_store is not None:
            assert await asyncio.to_thread(sync_store.load, key) is not None
        # Each node holds writes (reads still answered) until the script is first in line
        # and the save second, then lets them run in that order: the save waits out the
        # script however loaded the machine is, and its reply comes after the timeout.
        nodes = node_urls(server)
        controls = [redis.Redis.from_url(node) for node in nodes]
        for control in controls:
            control.client_pause(30_000, all=False)
        busy_connections = [keep_busy(node, busy) for node in nodes]

        def held() -> int:
            return sum(blocked_clients(node) for node in nodes)

        await await_until(lambda: held() == len(nodes), "each node's script held")
        if sync_store is not None:
            save = asyncio.ensure_future(
                asyncio.to_thread(sync_store.save, key, b"d", version=1, ttl=60, user=None)
            )
        else:
            save = asyncio.ensure_future(store.save(key, b"d", version=1, ttl=60, user=None))
        try:
            await await_until(lambda: held() == len(nodes) + 1, "the save held")
            for control in controls:
                control.client_unpause()
            with pytest.raises(StoreUnavailable):
                await save
            for conn in busy_connections:  # each script's reply: the save ran right after it
                assert await asyncio.to_thread(conn.recv, 64)
        finally:
            for conn in busy_connections:
                conn.close()
            for control in controls:
                control.client_unpause()
                control.close()
        # Closed right after the timeout, the store leaves no connection open.
        await store.aclose()
        await await_until(lambda: not clients_named(nodes, name), "the store's connections closed")
        checker = AsyncRedisStore(server.url, prefix=prefix)
        try:
            record = await checker.load(key)
        finally:
            await checker.aclose()
        assert record is not None and (record.version, record.data) == (2, b"d")
    finally:
        await store.aclose()
        if sync_store is not None:
            sync_store.close()
