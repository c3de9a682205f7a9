"""Redis Cluster faults: a master SIGKILLed under load, through real HTTP (the ASGI
middleware over a `redis+cluster://` URL), on three masters with one replica each
(`tests/servers.py` `RedisCluster(replicas=1)`, `cluster-node-timeout` 500 ms).

What it proves:

- While the master is gone and its replica takes over, every request is answered 200 or
  a clean 503 (never a 500), and none of the requests that ended before the kill is a 503.
- With `wait_replicas=1`, every write answered 200 survives the failover: each browser
  bumps a counter in its own session, and what a read returns after the failover is at
  least the last value it saw acknowledged (more if a write answered 503 was kept).
  A shard whose only replica was promoted has no replica left, so it refuses writes until
  the killed node rejoins as its replica (restarted here once the promotion is seen:
  a master without persistence restarted before it would serve its slots empty).
- Without `wait_replicas`, an acknowledged write can be lost: replication is
  asynchronous. To make that deterministic rather than a race with the kill, the replica
  is stopped (SIGSTOP) while the master takes 32 MB of other writes, more than the
  loopback socket buffers hold, so that the master acknowledges the next session writes
  while they sit in its own output buffer to the replica; the master is killed, the
  replica resumed and promoted, and those writes are gone. The same steps with
  `wait_replicas=1` answer those writes 503 instead: nothing acknowledged is lost.

The recovery time (from the kill to the first 200 on a slot of the killed master) is
printed, not asserted; `bench/cluster_failover.py` measures it over many kills.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest
import redis
from redis.crc import key_slot
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from coatcheck.adapters.asgi import SessionMiddleware
from coatcheck.exceptions import StoreUnavailable
from coatcheck.stores.redis import AsyncRedisStore, RedisStore
from helpers import COOKIE, FakeClock, answered, client, manager_for, session_of
from servers import RedisCluster, RedisServer, running_redis_cluster

pytestmark = [pytest.mark.service, pytest.mark.anyio]

NODE_TIMEOUT = 500  # milliseconds: cluster-node-timeout, how soon a dead master is noticed
CLIENTS = 8  # browsers, each with its own session and cookie jar
KILL_AFTER = 60  # requests of the load before the master is killed
AFTER = 5  # writes each browser makes once the cluster is whole again
BOUND = 40.0  # seconds: the bound on the whole scenario
PADDING = 32  # megabytes written while the replica is stopped (socket buffers hold less)


async def bump(request: Request) -> Response:
    session = session_of(request)
    session["n"] = int(session.get("n", 0)) + 1
    return PlainTextResponse(str(session["n"]))


async def read(request: Request) -> Response:
    return PlainTextResponse(str(session_of(request).get("n", 0)))


def app_for(store: AsyncRedisStore) -> Any:
    app = Starlette(routes=[Route("/bump", bump, methods=["POST"]), Route("/read", read)])
    return SessionMiddleware(app, manager_for(store, FakeClock()))


def store_for(cluster: RedisCluster, wait_replicas: int) -> AsyncRedisStore:
    return AsyncRedisStore(
        cluster.url,
        prefix=f"faults-{secrets.token_hex(4)}:",
        timeout=2.0 if wait_replicas else 0.5,  # WAIT takes up to half of it
        wait_replicas=wait_replicas,
    )


def busiest(homes: list[int]) -> int:
    """The master port most browsers' sessions are on."""
    return max(set(homes), key=homes.count)


async def start_sessions(
    cluster: RedisCluster, store: AsyncRedisStore, browsers: list[httpx.AsyncClient]
) -> list[int]:
    """One acknowledged bump per browser (a 503 from a loaded replica is retried), one
    browser at a time; the master port each browser's session landed on (its new key)."""
    masters = list(cluster.topology())
    seen: set[Any] = set()
    homes = []
    for http in browsers:
        for _ in range(20):
            if answered(await http.post("/bump")) == 200:
                break
            await anyio.sleep(0.05)
        else:
            pytest.fail("a browser could not start its session")
        for port in masters:
            node = redis.Redis(port=port, single_connection_client=True)
            try:
                new = set(node.keys(f"{store.prefix}*")) - seen
            finally:
                node.close()
            if new:
                seen |= new
                homes.append(port)
    assert len({http.cookies.get(COOKIE) for http in browsers}) == len(browsers)
    assert len(homes) == len(browsers)
    return homes


async def counters(browsers: list[httpx.AsyncClient]) -> list[int]:
    values = []
    for http in browsers:
        response = await http.get("/read")
        assert response.status_code == 200, response.text
        values.append(int(response.text))
    return values


@dataclass
class Outcome:
    """What one kill under load showed (times in seconds from the kill)."""

    statuses: dict[int, int] = field(default_factory=dict)
    early_503: int = 0  # 503s on requests that ended before the kill
    elsewhere_503: int = 0  # 503s for sessions on the masters that were not killed
    recovery: float | None = None  # the first 200 on a slot of the killed master
    promoted: float | None = None  # the replica serving the slots (CLUSTER NODES)
    whole: float | None = None  # the killed node back as a replica, in sync
    lost: list[tuple[int, int]] = field(default_factory=list)  # (acknowledged, read)


async def kill_under_load(
    cluster: RedisCluster,
    store: AsyncRedisStore,
    *,
    clients: int = CLIENTS,
    kill_after: int = KILL_AFTER,
) -> Outcome:
    """Browsers bump their counters; after `kill_after` requests the busiest master is
    SIGKILLed; once its replica is promoted the killed node is started again. Each browser
    keeps going until it was answered 200 after the cluster was whole again; then every
    counter is read back. A write acknowledged and lost shows as a bump that read less than
    the value acknowledged before it, or as a final read below the last acknowledged."""
    app = app_for(store)
    browsers = [client(app) for _ in range(clients)]
    outcome = Outcome()
    try:
        homes = await start_sessions(cluster, store, browsers)
        acked = [1] * len(browsers)
        target = busiest(homes)
        shard = {n for n, port in enumerate(homes) if port == target}
        requests = 0
        killing = False  # set just before the SIGKILL
        killed_at: float | None = None
        whole_at: float | None = None

        async def load(n: int, http: httpx.AsyncClient) -> None:
            nonlocal requests
            while True:
                began = time.monotonic()
                response = await http.post("/bump")
                status = answered(response)
                outcome.statuses[status] = outcome.statuses.get(status, 0) + 1
                requests += 1
                if status == 503 and not killing:
                    outcome.early_503 += 1
                if status == 503 and n not in shard:
                    outcome.elsewhere_503 += 1
                if status == 200:
                    value = int(response.text)  # what the bump read, plus one
                    if value <= acked[n]:  # it read less than a write acknowledged before
                        outcome.lost.append((acked[n], value - 1))
                    acked[n] = value
                    if killed_at is not None and n in shard and outcome.recovery is None:
                        outcome.recovery = time.monotonic() - killed_at
                    if whole_at is not None and began > whole_at:
                        return
                    await anyio.sleep(0)
                else:
                    await anyio.sleep(0.02)  # as a client backs off

        async def killer() -> None:
            nonlocal killing, killed_at, whole_at
            while requests < kill_after:
                await anyio.sleep(0.005)
            killing = True
            killed: RedisServer = await anyio.to_thread.run_sync(cluster.kill_master, target)
            killed_at = time.monotonic()
            await anyio.to_thread.run_sync(cluster.wait_promoted, target)
            outcome.promoted = time.monotonic() - killed_at
            await anyio.to_thread.run_sync(cluster.restart, killed)
            await anyio.to_thread.run_sync(cluster.wait_healthy)
            whole_at = time.monotonic()
            outcome.whole = whole_at - killed_at

        with anyio.fail_after(BOUND):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(killer)
                for n, http in enumerate(browsers):
                    tasks.start_soon(load, n, http)

        cookies = [http.cookies.get(COOKIE) for http in browsers]
        for http in browsers:  # sessions keep working after the recovery
            for _ in range(AFTER):
                assert answered(await http.post("/bump")) == 200
        assert [http.cookies.get(COOKIE) for http in browsers] == cookies
        after = await counters(browsers)
        outcome.lost += [(a, r - AFTER) for a, r in zip(acked, after, strict=True) if r - AFTER < a]
        return outcome
    finally:
        for http in browsers:
            await http.aclose()


async def test_a_master_killed_under_load_loses_no_acknowledged_write() -> None:
    with running_redis_cluster(replicas=1, node_timeout=NODE_TIMEOUT) as cluster:
        store = store_for(cluster, wait_replicas=1)
        try:
            outcome = await kill_under_load(cluster, store)
        finally:
            await store.aclose()
    print(
        f"\nkill under load (wait_replicas=1): {outcome.statuses}, first 200 on the killed "
        f"shard {outcome.recovery}s after the kill, promoted {outcome.promoted}s, "
        f"whole {outcome.whole}s, 503s on the other masters {outcome.elsewhere_503}"
    )
    assert set(outcome.statuses) <= {200, 503}
    assert outcome.early_503 == 0, "503s before the kill"
    assert outcome.statuses.get(503, 0) > 0, "the outage was not seen"
    assert outcome.recovery is not None, "the killed master's slots never answered 200"
    assert not outcome.lost, f"acknowledged writes lost (acknowledged, read): {outcome.lost}"


def tag_on(cluster: RedisCluster, port: int) -> str:
    """A hash tag whose slot the master on `port` serves."""
    node = redis.Redis(port=port, single_connection_client=True)
    try:
        for i in range(10_000):
            try:
                node.set(f"{{probe{i}}}", b"")
            except redis.ResponseError:  # MOVED: another master's slot
                continue
            return f"{{probe{i}}}"
    finally:
        node.close()
    raise AssertionError(f"no key found for port {port}")


def pad(port: int, tag: str) -> None:
    """`PADDING` megabytes written to the master on `port`, acknowledged by it."""
    node = redis.Redis(port=port, single_connection_client=True, socket_timeout=30)
    try:
        for i in range(PADDING):
            node.set(f"{tag}:pad{i}", os.urandom(1 << 20))
    finally:
        node.close()


@contextlib.contextmanager
def stopped(server: RedisServer) -> Iterator[None]:
    """The server's process stopped (SIGSTOP) for the block: alive, but reading nothing."""
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


async def acknowledged_then_killed(
    cluster: RedisCluster, store: AsyncRedisStore
) -> tuple[dict[str, dict[int, int]], list[tuple[int, int]]]:
    """Each browser's session written once; then, the busiest master's replica stopped and
    the master loaded with `PADDING` MB, each browser bumps once more; the master is
    killed, the replica resumed and promoted. The statuses of those last bumps (counted
    for the sessions on the "killed" master and on the "others"), and the
    (acknowledged, read) counters of the browsers that lost an acknowledged write."""
    app = app_for(store)
    browsers = [client(app) for _ in range(CLIENTS)]
    try:
        homes = await start_sessions(cluster, store, browsers)
        acked = [1] * len(browsers)
        target = busiest(homes)
        replica = cluster.node(cluster.topology()[target][0])
        tag = await anyio.to_thread.run_sync(tag_on, cluster, target)
        statuses: dict[str, dict[int, int]] = {"killed": {}, "others": {}}
        with stopped(replica):
            await anyio.to_thread.run_sync(pad, target, tag)
            for n, http in enumerate(browsers):
                response = await http.post("/bump")
                status = answered(response)
                where = statuses["killed" if homes[n] == target else "others"]
                where[status] = where.get(status, 0) + 1
                if status == 200:
                    acked[n] = int(response.text)
            await anyio.to_thread.run_sync(cluster.kill_master, target)
        await anyio.to_thread.run_sync(cluster.wait_promoted, target)
        after = []
        for http in browsers:
            for _ in range(100):  # the client finds the promoted master on a failure
                response = await http.get("/read")
                if answered(response) == 200:
                    break
                await anyio.sleep(0.05)
            assert response.status_code == 200
            after.append(int(response.text))
        return statuses, [(a, r) for a, r in zip(acked, after, strict=True) if r < a]
    finally:
        for http in browsers:
            await http.aclose()


@pytest.mark.parametrize("wait_replicas", [0, 1])
async def test_what_asynchronous_replication_loses_and_wait_replicas_keeps(
    wait_replicas: int,
) -> None:
    with running_redis_cluster(replicas=1, node_timeout=NODE_TIMEOUT) as cluster:
        store = store_for(cluster, wait_replicas)
        try:
            with anyio.fail_after(BOUND):
                statuses, lost = await acknowledged_then_killed(cluster, store)
        finally:
            await store.aclose()
    print(f"\nwait_replicas={wait_replicas}: last bumps {statuses}, lost {lost}")
    killed, others = statuses["killed"], statuses["others"]
    assert set(others) == {200}, "a write to a master whose replica ran was refused"
    if wait_replicas:
        # Refused where the replica was stopped, and only there: WAIT went to the master
        # that took the write (redis-py's routing would ask every master and sum).
        assert set(killed) == {503}, "a write no replica took was acknowledged"
        assert not lost, f"acknowledged writes lost (acknowledged, read): {lost}"
    else:
        assert set(killed) == {200}
        assert len(lost) == killed[200], "an acknowledged write survived: not reproduced"
        assert all(read == acknowledged - 1 for acknowledged, read in lost), lost


def test_the_sync_store_waits_on_the_master_that_took_the_write() -> None:
    """`RedisStore` (sync) with `wait_replicas=1` on a cluster: every kind of write
    returns once the written key's replica has it, scripts flushed from the nodes are
    loaded again, and with one master's replica stopped, only the writes to that master's
    slots are refused (a write elsewhere is confirmed by its own master's replica)."""
    with running_redis_cluster(replicas=1, node_timeout=NODE_TIMEOUT) as cluster:
        store = RedisStore(cluster.url, prefix="sync:", timeout=1.0, wait_replicas=1)
        try:
            keys = [secrets.token_urlsafe(32) for _ in range(12)]
            for key in keys:
                assert store.save(key, b"one", version=0, ttl=60, user="ann")
            assert store.save(keys[0], b"two", version=1, ttl=60, user="ann")
            assert not store.save(keys[0], b"two", version=1, ttl=60, user="ann")  # conflict
            assert store.rotate(keys[1], keys[1] + "x", b"moved", version=1, ttl=60, user="ann")
            store.delete(keys[2])
            for node in cluster.nodes:
                node.cli("script", "flush")
            assert store.save(keys[3], b"two", version=1, ttl=60, user="ann")  # reloaded
            assert store.delete_user("ann", keep=keys[4]) == len(keys) - 2
            assert [key for key, _ in store.list_user("ann")] == [keys[4]]

            master, replicas = next(iter(cluster.topology().items()))
            answers: dict[bool, set[str]] = {True: set(), False: set()}
            with stopped(cluster.node(replicas[0])):
                for key in keys:
                    try:
                        store.save(key + "y", b"new", version=0, ttl=60, user=None)
                        outcome = "saved"
                    except StoreUnavailable as exc:
                        assert "0 of 1 replicas" in str(exc)
                        outcome = "refused"
                    slot = key_slot(store._key(key + "y").encode())
                    answers[cluster.serves(master, slot)].add(outcome)
            assert answers == {True: {"refused"}, False: {"saved"}}, answers
        finally:
            store.close()
