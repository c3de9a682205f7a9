"""Redis Sentinel: the `redis+sentinel://` URL, the store and revocation contracts against a
Sentinel-managed master, and failover: a real master, a replica and three sentinels
(`tests/servers.py` `RedisSentinel`), the master SIGKILLed mid-load.

What the failover test proves, through real HTTP (the ASGI middleware): while the master is
gone and the sentinels elect its replica, every request is answered 200 or 503 (never a
500: an exception in the app would fail the httpx client); service comes back without a
restart of the app, within `RECOVERY_BOUND` seconds of the kill (measured: 2-4 s with
`down-after-milliseconds` 1000); and every write that was acknowledged and replicated
before the kill (here: confirmed by `WAIT` on a fence write, issued after them) is still
there after the failover. Writes acknowledged in the replication lag just before the kill
may be lost: Redis replication is asynchronous (docs/sentinel.md states the bound).
"""

from __future__ import annotations

import contextlib
import gc
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import pytest
import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from coatcheck.adapters.asgi import SessionMiddleware
from coatcheck.exceptions import ConfigurationError, StoreUnavailable
from coatcheck.revocation import Revocation, RevocationList
from coatcheck.stores import (
    AsyncStore,
    Store,
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
from coatcheck.stores.sentinel import SentinelAddress, parse
from helpers import COOKIE, FakeClock, answered, client, manager_for, session_of
from servers import RedisSentinel, running_redis_sentinel

from .contract import AsyncStoreContract, StoreContract
from .test_redis import RedisRevocations

SERVICE = pytest.mark.service
CLIENTS = 4  # browsers keeping their cookies
KEPT = 5  # writes per client acknowledged and replicated before the kill
KILL_AFTER = 40  # requests of the load before the master is killed
AFTER = 20  # requests each client makes once served again after the failover
RECOVERY_BOUND = 30.0  # seconds from the kill to every client served again
WAIT = 20.0  # seconds: the bound on every wait for a listener or a push


def fresh_prefix() -> str:
    return f"sentinel-{secrets.token_hex(6)}:"


def wait_for(condition: Any, what: str, bound: float = WAIT) -> float:
    """Poll `condition` until it holds; the seconds it took; fail after `bound`."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > bound:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - start


def fence(group: RedisSentinel) -> None:
    """Return once the replicas hold every write the master acknowledged so far: a write on
    one connection, then `WAIT` on it (replication is in order, so the replicas that
    acknowledge the fence hold everything written before it)."""
    master = redis.Redis(port=group.master_port(), single_connection_client=True)
    try:
        master.set("fence", secrets.token_hex(4))
        acked = master.execute_command(  # type: ignore[no-untyped-call]
            "WAIT", len(group.replicas), 10_000
        )
        assert acked == len(group.replicas)
    finally:
        master.close()


# -- the URL, without servers ---------------------------------------------------------------


def test_sentinel_url_names_the_sentinels_service_db_and_credentials() -> None:
    address = parse("redis+sentinel://app:s%40cret@10.0.0.1:26380,[::1],sentinel-c/main/3")
    assert address == SentinelAddress(
        (("10.0.0.1", 26380), ("::1", 26379), ("sentinel-c", 26379)), "main", 3, "app", "s@cret"
    )
    assert "s@cret" not in repr(address) and "cret" not in repr(address)
    assert parse("redis+sentinel://:pw@h:1/svc") == SentinelAddress(
        (("h", 1),), "svc", 0, None, "pw"
    )


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://h:26379",  # no service
        "redis+sentinel:///svc",  # no sentinel
        "redis+sentinel://h:port/svc",
        "redis+sentinel://h:70000/svc",
        "redis+sentinel://h/svc/db",
        "redis+sentinel://h/svc/0/extra",
        "redis+sentinel://h/svc?ssl=true",
        "redis+sentinel://user@h/svc",  # a user without a password
    ],
)
def test_a_bad_sentinel_url_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        RedisStore(url)
    assert "pw" not in str(caught.value)


def test_a_sentinel_url_is_not_a_cluster() -> None:
    with pytest.raises(ConfigurationError, match="not a cluster"):
        RedisStore("redis+sentinel://h/svc", cluster=True)


def test_from_url_builds_sentinel_stores_without_connecting() -> None:
    url = "redis+sentinel://:pw@127.0.0.1:1,127.0.0.1:2/svc/0?max_connections=7&pool_timeout=2"
    store = from_url(url)
    assert isinstance(store, RedisStore) and not store.cluster
    assert (store.max_connections, store.pool_timeout) == (7, 2.0)
    assert store._lane is None  # the RESP lane serves plain redis:// URLs only
    assert "pw" not in repr(store)
    twin = to_async(store)
    assert isinstance(twin, AsyncRedisStore) and twin.max_connections == 7
    assert isinstance(from_url(url, asynchronous=True), AsyncRedisStore)
    revocations = revocations_for(url)
    assert isinstance(revocations, RedisRevocationStore)
    assert isinstance(revocations_to_async(revocations), AsyncRedisRevocationStore)
    store.close()
    revocations.close()


def test_no_sentinel_answering_is_store_unavailable() -> None:
    from servers import free_port

    store = RedisStore(f"redis+sentinel://127.0.0.1:{free_port()}/svc", timeout=0.2)
    with pytest.raises(StoreUnavailable) as caught:
        store.load("k" * 43)
    assert "k" * 43 not in str(caught.value)
    store.close()


# -- contracts against the Sentinel-managed master -----------------------------------------


@pytest.fixture(scope="module")
def sentinel_group() -> Iterator[RedisSentinel]:
    """A master, a replica and three sentinels that no test here kills."""
    with running_redis_sentinel() as group:
        yield group


@SERVICE
class TestSentinelStore(StoreContract):
    purge_counts_expired = False

    @pytest.fixture
    def store(self, sentinel_group: RedisSentinel) -> Iterator[Store]:
        store = RedisStore(sentinel_group.url, prefix=fresh_prefix())
        yield store
        store.close()


@SERVICE
class TestAsyncSentinelStore(AsyncStoreContract):
    purge_counts_expired = False

    @pytest.fixture
    async def astore(self, sentinel_group: RedisSentinel) -> AsyncIterator[AsyncStore]:
        store = AsyncRedisStore(sentinel_group.url, prefix=fresh_prefix())
        yield store
        await store.aclose()


@SERVICE
class TestSentinelRevocationStore(RedisRevocations):
    @pytest.fixture
    def url(self, sentinel_group: RedisSentinel) -> str:
        return sentinel_group.url


# -- failover under load, through HTTP ------------------------------------------------------


async def set_value(request: Request) -> Response:
    session_of(request)[request.query_params["key"]] = request.query_params["value"]
    return PlainTextResponse("saved")


async def dump(request: Request) -> Response:
    return JSONResponse(dict(session_of(request)))


def app_for(store: AsyncStore) -> Any:
    app = Starlette(routes=[Route("/set", set_value, methods=["POST"]), Route("/dump", dump)])
    return SessionMiddleware(app, manager_for(store, FakeClock()))


#: redis-py's asyncio Sentinel drops a few connections to the sentinels during a failover
#: without closing them (closed by the garbage collector, with a ResourceWarning); the
#: async failover tests collect them before they end, with that warning ignored.
LEAKS_SENTINEL_SOCKETS = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning", "ignore::ResourceWarning"
)


@SERVICE
@LEAKS_SENTINEL_SOCKETS
@pytest.mark.anyio
@pytest.mark.parametrize("wait_replicas", [0, 1])
async def test_sessions_continue_through_a_failover_under_load(wait_replicas: int) -> None:
    """Without `wait_replicas`, the writes replicated before the kill (a `WAIT` fence)
    survive it; with `wait_replicas=1` (two replicas, so that the promoted master still has
    one), every write answered 200, before or after the kill, survives it, with no fence."""
    with running_redis_sentinel(replicas=1 + wait_replicas) as group:
        store = AsyncRedisStore(
            group.url,
            prefix=fresh_prefix(),
            timeout=2.0 if wait_replicas else 0.3,  # WAIT takes up to half of it
            wait_replicas=wait_replicas,
        )
        app = app_for(store)
        browsers = [client(app) for _ in range(CLIENTS)]
        statuses: list[int] = []
        try:
            # Each browser gets a session and writes KEPT values, all acknowledged.
            await anyio.to_thread.run_sync(fence, group)  # the replicas are streaming
            for n, http in enumerate(browsers):
                for i in range(KEPT):
                    for _ in range(10):  # with wait_replicas a loaded replica may be late: 503
                        response = await http.post("/set", params={"key": f"kept{i}", "value": n})
                        if answered(response) == 200:
                            break
                    assert response.status_code == 200
            cookies = [http.cookies.get(COOKIE) for http in browsers]
            assert all(cookies) and len(set(cookies)) == CLIENTS
            if not wait_replicas:
                await anyio.to_thread.run_sync(fence, group)

            killed_at: float | None = None
            served_again: dict[int, float] = {}  # browser -> seconds from kill to its 200
            requests = 0
            acknowledged: list[set[str]] = [set() for _ in browsers]  # keys answered 200

            async def load(n: int, http: httpx.AsyncClient) -> None:
                nonlocal requests
                i = 0
                while n not in served_again:
                    i += 1
                    if i % 2:
                        response = await http.post("/set", params={"key": f"load{i}", "value": i})
                    else:
                        response = await http.get("/dump")
                    status = answered(response)
                    statuses.append(status)
                    requests += 1
                    if status == 200 and response.request.method == "POST":
                        acknowledged[n].add(f"load{i}")
                    if (
                        killed_at is not None
                        and status == 200
                        and response.request.method == "POST"
                    ):
                        served_again.setdefault(n, time.monotonic() - killed_at)
                    if status == 503:
                        await anyio.sleep(0.02)  # as a client backs off
                    else:
                        await anyio.sleep(0)

            async def killer() -> None:
                nonlocal killed_at
                while requests < KILL_AFTER:
                    await anyio.sleep(0.005)
                await anyio.to_thread.run_sync(group.kill_master)
                killed_at = time.monotonic()

            with anyio.fail_after(RECOVERY_BOUND + 30):
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(killer)
                    for n, http in enumerate(browsers):
                        tasks.start_soon(load, n, http)

            recovery = max(served_again.values())
            print(f"\nfailover: every client served again {recovery:.2f}s after the kill")
            assert recovery < RECOVERY_BOUND
            assert 503 in statuses or recovery < 0.5  # the outage was seen (or very short)

            # After the failover: the same sessions, all replicated writes present.
            for n, http in enumerate(browsers):
                for i in range(AFTER):
                    for _ in range(10):  # as above: a late replica is a 503, retried
                        response = await http.post("/set", params={"key": f"after{i}", "value": n})
                        if answered(response) == 200:
                            break
                    assert response.status_code == 200
                data = (await http.get("/dump")).json()
                assert http.cookies.get(COOKIE) == cookies[n]
                assert all(data[f"kept{i}"] == str(n) for i in range(KEPT)), data
                assert data[f"after{AFTER - 1}"] == str(n)
                if wait_replicas:
                    lost = acknowledged[n] - set(data)
                    assert not lost, f"writes answered 200 but lost in the failover: {lost}"
        finally:
            for http in browsers:
                await http.aclose()
            await store.aclose()
            gc.collect()


@SERVICE
def test_a_sync_store_follows_the_failover() -> None:
    """The sync store: StoreUnavailable while no master answers, the same data after."""
    with running_redis_sentinel() as group:
        store = RedisStore(group.url, prefix=fresh_prefix(), timeout=0.3)
        key = secrets.token_urlsafe(32)
        assert store.save(key, b"before", version=0, ttl=60, user="ann")
        fence(group)
        group.kill_master()
        with pytest.raises(StoreUnavailable):
            store.load(key)

        def served() -> bool:
            try:
                return store.save(key, b"after", version=1, ttl=60, user="ann")
            except StoreUnavailable:
                return False

        took = wait_for(served, "the promoted replica to serve", RECOVERY_BOUND)
        print(f"\nsync store served again {took:.2f}s after the kill")
        record = store.load(key)
        assert record is not None and (record.data, record.version) == (b"after", 2)
        assert [k for k, _ in store.list_user("ann")] == [key]
        store.close()


@SERVICE
def test_with_wait_replicas_no_acknowledged_write_is_lost() -> None:
    """`wait_replicas=1`: a save, rotation or delete returns once a replica has it, so the
    master can be killed right after, with no fence, and the promoted replica has every one
    that returned. (One that a loaded machine's replica did not acknowledge in time raises
    StoreUnavailable and proves nothing either way: it is left out.)"""
    with running_redis_sentinel(replicas=2) as group:
        store = RedisStore(group.url, prefix=fresh_prefix(), timeout=2.0, wait_replicas=1)
        assert store._lane is None
        fence(group)  # the replicas are streaming: not part of what is tested
        saved: dict[str, bytes] = {}
        for i in range(20):
            key, data = secrets.token_urlsafe(32), b"%d" % i
            with contextlib.suppress(StoreUnavailable):
                if store.save(key, data, version=0, ttl=60, user="ann"):
                    saved[key] = data
        assert len(saved) >= 10, "most writes should be acknowledged in time"
        first, second, *_ = saved
        gone = [first]
        with contextlib.suppress(StoreUnavailable):
            if store.rotate(second, second + "x", b"rotated", version=1, ttl=60, user="ann"):
                del saved[second]
                saved[second + "x"] = b"rotated"
                gone.append(second)
        with contextlib.suppress(StoreUnavailable):
            store.delete(first)
            del saved[first]
        group.kill_master()

        def served() -> bool:
            try:
                store.load(first)
            except StoreUnavailable:
                return False
            return True

        wait_for(served, "the promoted replica to serve", RECOVERY_BOUND)
        for key, data in saved.items():
            record = store.load(key)
            assert record is not None and record.data == data, key
        if first not in saved:
            assert store.load(first) is None
        listed = {key for key, _ in store.list_user("ann")}
        assert set(saved) <= listed
        store.close()


def test_wait_replicas_is_checked() -> None:
    with pytest.raises(ConfigurationError):
        RedisStore("redis://h/0", wait_replicas=-1)
    # On a cluster too: tests/stores/test_cluster_faults.py
    on_cluster = RedisStore("redis+cluster://h:1", wait_replicas=1)
    assert on_cluster.wait_replicas == 1 and on_cluster._lane is None
    with pytest.raises(TypeError):
        RedisStore("redis://h/0", wait_replicas=True)
    store = RedisStore("redis://h/0", wait_replicas=2)
    assert store._lane is None and store.wait_replicas == 2
    twin = to_async(store)
    assert isinstance(twin, AsyncRedisStore) and twin.wait_replicas == 2
    store.close()


@SERVICE
def test_a_write_no_replica_acknowledged_is_a_503() -> None:
    """With every replica stopped, a write is not confirmed: StoreUnavailable, whatever
    the master did with it."""
    with running_redis_sentinel() as group:
        store = RedisStore(group.url, prefix=fresh_prefix(), timeout=2.0, wait_replicas=1)
        fence(group)
        assert store.save("k" * 43, b"one", version=0, ttl=60, user=None)
        group.replicas[0].stop()
        wait_for(
            lambda: "connected_slaves:0" in group.master.cli("info", "replication"),
            "the master to see its replica gone",
        )
        with pytest.raises(StoreUnavailable, match="0 of 1 replicas"):
            store.save("k" * 43, b"two", version=1, ttl=60, user=None)
        store.close()


# -- the revocation feed through a failover ------------------------------------------------


T0 = 1_800_000_000.0


def sid_entry(subject: str) -> Revocation:
    return Revocation("sid", subject, T0, T0 + 100)


@SERVICE
def test_revocations_and_their_feed_survive_a_failover() -> None:
    """An entry revoked (and replicated) before the failover is still listed after it; the
    listener notices the master is gone, subscribes again on the promoted replica, and a
    revoke published after the failover reaches it by push, without a poll."""
    with running_redis_sentinel() as group:
        prefix = fresh_prefix()
        store = RedisRevocationStore(group.url, prefix=prefix, timeout=0.3)
        lst = RevocationList()
        store.listen(lst.apply_one)
        wait_for(lambda: store.listening.is_set(), "the listener to subscribe")
        store.revoke(sid_entry("before"))
        wait_for(lambda: lst.is_revoked("before", None, T0, T0), "the push before the failover")
        fence(group)
        group.kill_master()
        wait_for(lambda: not store.listening.is_set(), "the listener to notice")

        def revoked() -> bool:
            try:
                store.revoke(sid_entry("after"))
            except StoreUnavailable:
                return False
            return True

        wait_for(revoked, "a revoke to succeed on the promoted replica", RECOVERY_BOUND)
        assert [e.subject for e in store.changes(0)[0]] == ["before", "after"]
        wait_for(lambda: store.listening.is_set(), "the listener to subscribe again")
        cursor = lst.cursor
        store.revoke(sid_entry("pushed"))
        wait_for(lambda: lst.is_revoked("pushed", None, T0, T0), "the push after the failover")
        assert lst.cursor == cursor  # pushed, not polled
        store.close()


@SERVICE
@LEAKS_SENTINEL_SOCKETS
@pytest.mark.anyio
async def test_async_revocation_feed_survives_a_failover() -> None:
    with running_redis_sentinel() as group:
        store = AsyncRedisRevocationStore(group.url, prefix=fresh_prefix(), timeout=0.3)
        lst = RevocationList()
        store.listen(lst.apply_one)
        await await_for(store.listening.is_set, "the listener to subscribe")
        await store.revoke(sid_entry("before"))
        await anyio.to_thread.run_sync(fence, group)
        await anyio.to_thread.run_sync(group.kill_master)
        await await_for(lambda: not store.listening.is_set(), "the listener to notice")
        deadline = time.monotonic() + RECOVERY_BOUND
        while True:
            try:
                await store.revoke(sid_entry("after"))
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline, "no master within the bound"
                await anyio.sleep(0.05)
        assert [e.subject for e in (await store.changes(0))[0]] == ["before", "after"]
        await await_for(store.listening.is_set, "the listener to subscribe again")
        await store.revoke(sid_entry("pushed"))
        await await_for(lambda: lst.is_revoked("pushed", None, T0, T0), "the push after")
        await store.aclose()
        gc.collect()


async def await_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await anyio.sleep(0.02)
