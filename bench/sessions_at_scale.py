"""Sessions at scale: Redis, a 3-master Redis Cluster and PostgreSQL holding 1M sessions.

    .venv/bin/python bench/sessions_at_scale.py                         # 1M per store, ~9 min
    .venv/bin/python bench/sessions_at_scale.py --quick                 # 20,000, ~1 minute
    .venv/bin/python bench/sessions_at_scale.py --stores redis,postgres --sessions 200000
    .venv/bin/python bench/sessions_at_scale.py --output bench/RESULTS-sessions-at-scale.md

Each store runs on a throw-away server from `tests/servers.py` (loopback, no persistence for
Redis; PostgreSQL with fsync off and shared_buffers=16MB, as the tests run it).

**Population.** `--sessions` N records, each under a fresh 22-character handle
(`coatcheck.ids.new_handle`, as the manager keys records), with a `--size`-byte record
(300 by default: orjson of a verifier hash, the three timestamps and some data, as the
manager writes one). `--user-fraction` of them (half by default) belong to a user, two
sessions per user; a day's TTL.

**Fill.** The first 1,000 sessions go through the store's own `save`, one call each; the
load and save cost is measured there ("1k stored"). The rest is written in bulk, in the
store's own layout, then a sample of 1,000 bulk-written sessions is read back through the
store (`load`, and `list_user` for their users) and must match:

- Redis: the store's own `save` Lua script (EVALSHA, same keys and arguments as
  `RedisStore.save`), pipelined by 2,000.
- Redis Cluster: what the store's cluster path writes (its `index` script: `ZADD` of the
  key scored by its expiry into the user's index and `PEXPIREAT` of the index; its
  `replace` script: `SET ... PX`), on one plain pipeline per master, each key sent to
  the master of its slot: redis-py's cluster pipeline refuses EVALSHA, and one script
  call at a time would take the fill past the time bound.
- PostgreSQL: `COPY` into the table `create_schema()` made, indexes in place (so they grow
  as under inserts), then `VACUUM ANALYZE`.

**Measured.**

- Memory per session: Redis `used_memory` after the fill minus before, over N (each master
  separately on the cluster); PostgreSQL `pg_total_relation_size` of the table (heap,
  TOAST and its three indexes) over N, and each part.
- `load` and `save` (a logged-in session's next write, version compared, index updated)
  through the store's sync API, one call at a time from one thread, then through its
  async twin (`wrapping` it), one awaited call at a time: latency p50/p99 and the
  client's CPU per call (`time.process_time`), at 1k stored and again at N.
- `list_user` and `delete_user` (what `SessionAdmin.sessions` and `revoke_user` call) for
  users holding 1, 10, 100 and 1,000 live sessions, among the N.
- Purge with 10% of the sessions expired. Redis: every one of those keys is given the same
  expiry instant (`PEXPIREAT`, pipelined), then the server's own expiry is watched for up
  to 30 s (5 s with `--quick`): how many it removed, how it spread (`expired_keys`,
  `expired_time_cap_reached_count`, `expired_stale_perc`), and `load` latency on live
  sessions meanwhile; then ~38% more expire at one instant (about half of all) and it
  is watched again. `RedisStore.purge_expired` is a no-op.
  PostgreSQL: the 10% are written already expired; `purge_expired()` is timed (its
  statements are `PURGE_BATCH` rows each) while a second thread `load`s live sessions,
  and the table's size is read after it and after a plain `VACUUM`.

The extrapolation to 10M and 100M is linear in the per-session figures measured here;
its assumptions are printed with it.

The machine is shared with other benchmarks (2 cores): the load average is printed at the
start and the end, and latencies are those of a loaded machine.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import secrets
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from coatcheck.ids import new_handle  # noqa: E402
from coatcheck.jsonio import dumps  # noqa: E402
from coatcheck.stores.postgres import (  # noqa: E402
    PURGE_BATCH,
    AsyncPostgresStore,
    PostgresStore,
)
from coatcheck.stores.redis import AsyncRedisStore, RedisStore, _encode  # noqa: E402
from servers import (  # noqa: E402
    RedisCluster,
    running_postgres,
    running_redis,
    running_redis_cluster,
)

TTL = 24 * 60 * 60  # seconds
SMALL = 1_000  # sessions stored for the "1k" measurement, written through `save`
OPS = 2_000  # calls per load / save measurement
CHUNK = 2_000  # commands per pipeline / rows per COPY flush
USER_COUNTS = (1, 10, 100, 1000)
EXPIRED_FRACTION = 0.10


STARTED = time.perf_counter()


def log(message: str) -> None:
    """Progress, on stderr (the report goes to stdout)."""
    print(f"[{time.perf_counter() - STARTED:6.1f} s] {message}", file=sys.stderr, flush=True)


@dataclass
class Population:
    """The sessions to store: keys, users (or None) and records, by index."""

    keys: list[str]
    users: list[str | None]
    size: int

    def record(self, i: int) -> bytes:
        return make_record(self.keys[i], self.size)

    def live_sample(self, count: int, *, with_user: bool) -> list[int]:
        """Indexes of bulk-written sessions that stay live, spread over the population."""
        end = int(len(self.keys) * (1 - EXPIRED_FRACTION))
        pool = range(SMALL, end)
        picked: list[int] = []
        step = max(1, len(pool) // (count * 3))
        for i in pool[::step]:
            if (self.users[i] is not None) == with_user:
                picked.append(i)
                if len(picked) == count:
                    break
        return picked


def make_record(key: str, size: int) -> bytes:
    """`size` bytes of orjson, shaped like a manager's record (a verifier hash, the created,
    seen and renewed times, the app's data), unique per session."""
    doc: dict[str, Any] = {
        "v": secrets.token_hex(32),
        "c": 1.7e9,
        "s": 1.7e9,
        "r": 1.7e9,
        "d": {"cart": [1, 2, 3], "theme": "dark", "csrf": key},
    }
    base = len(dumps({**doc, "p": ""}))
    return dumps({**doc, "p": "p" * max(0, size - base)})


def populate(n: int, size: int, user_fraction: float) -> Population:
    users: list[str | None] = []
    every = round(1 / user_fraction) if user_fraction > 0 else 0
    for i in range(n):
        if every and i % every == 0:
            users.append(f"user-{(i // every) // 2:08d}")  # two sessions per user
        else:
            users.append(None)
    return Population([new_handle() for _ in range(n)], users, size)


@dataclass
class OpCost:
    p50: float  # ms
    p99: float  # ms
    cpu: float  # µs of client CPU per call

    def cells(self) -> str:
        return f"{self.p50:.3f} ms | {self.p99:.3f} ms | {self.cpu:.0f} µs"


def timed_calls(calls: Sequence[Callable[[], object]]) -> OpCost:
    latencies = []
    cpu0 = time.process_time()
    for call in calls:
        t0 = time.perf_counter()
        answer = call()
        latencies.append((time.perf_counter() - t0) * 1000)
        assert answer is not None and answer is not False  # a live record; a write made
    return cost(latencies, cpu0, len(calls))


def cost(latencies: list[float], cpu0: float, calls: int) -> OpCost:
    cpu = (time.process_time() - cpu0) / calls * 1e6
    latencies.sort()
    return OpCost(
        statistics.median(latencies),
        latencies[min(len(latencies) - 1, len(latencies) * 99 // 100)],
        cpu,
    )


@dataclass
class Result:
    store: str
    sessions: int
    fill: str = ""
    fill_seconds: float = 0.0
    memory_rows: list[str] = field(default_factory=list)
    per_session: float = 0.0  # bytes per session, all of it
    parts: dict[str, float] = field(default_factory=dict)  # PostgreSQL: bytes per session
    ops: dict[str, OpCost] = field(default_factory=dict)
    user_rows: list[str] = field(default_factory=list)
    purge_rows: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def measure_ops(
    store: Any, pop: Population, indexes: list[int], label: str, result: Result
) -> None:
    """`load` of live sessions, then `save` of logged-in ones (their next version)."""
    loads = [partial(store.load, pop.keys[i]) for i in indexes]
    result.ops[f"load, {label}"] = timed_calls(loads[:OPS])
    with_user = [i for i in indexes if pop.users[i] is not None][:OPS]
    result.ops[f"save (logged in), {label}"] = timed_calls(next_saves(store, pop, with_user))
    measure_async(store, pop, indexes[:OPS], with_user, label, result)


def measure_async(
    store: Any,
    pop: Population,
    loads: list[int],
    saves: list[int],
    label: str,
    result: Result,
) -> None:
    """The same through the async twin (`wrapping` the sync store: same server, its own
    connections), one awaited call at a time; each session's next write is version 2."""

    async def run() -> tuple[OpCost, OpCost]:
        if isinstance(store, RedisStore):
            twin: Any = AsyncRedisStore.wrapping(store)
        else:
            twin = AsyncPostgresStore.wrapping(store)
        assert twin is not None
        try:
            await twin.load(pop.keys[loads[0]])  # connects
            costs = []
            for calls in (
                [partial(twin.load, pop.keys[i]) for i in loads],
                [
                    partial(
                        twin.save, pop.keys[i], pop.record(i), version=2, ttl=TTL, user=pop.users[i]
                    )
                    for i in saves
                ],
            ):
                latencies = []
                cpu0 = time.process_time()
                for call in calls:
                    t0 = time.perf_counter()
                    answer = await call()
                    latencies.append((time.perf_counter() - t0) * 1000)
                    assert answer is not None and answer is not False
                costs.append(cost(latencies, cpu0, len(calls)))
            return costs[0], costs[1]
        finally:
            await twin.aclose()

    result.ops[f"load (async), {label}"], result.ops[f"save (logged in, async), {label}"] = (
        asyncio.run(run())
    )


def next_saves(store: Any, pop: Population, indexes: list[int]) -> list[Callable[[], object]]:
    """A logged-in session's next write (stored at version 1), one call per index."""
    return [
        partial(store.save, pop.keys[i], pop.record(i), version=1, ttl=TTL, user=pop.users[i])
        for i in indexes
    ]


def sample_indexes(pop: Population, count: int) -> list[int]:
    """Live sessions (half with a user) for the load/save measurement at N."""
    return pop.live_sample(count, with_user=True) + pop.live_sample(count, with_user=False)


def fill_small(store: Any, pop: Population) -> None:
    for i in range(min(SMALL, len(pop.keys))):
        assert store.save(pop.keys[i], pop.record(i), version=0, ttl=TTL, user=pop.users[i])


def small_indexes(pop: Population) -> list[int]:
    users = [i for i in range(SMALL) if pop.users[i] is not None]
    others = [i for i in range(SMALL) if pop.users[i] is None]
    return (users * (OPS // max(1, len(users)) + 1))[:OPS] + others[:OPS]


def fresh_small_saves(store: Any, pop: Population, result: Result) -> None:
    """At 1k stored: each logged-in session is saved once at version 1 (as written)."""
    indexes = [i for i in range(SMALL) if pop.users[i] is not None]
    loads = [partial(store.load, pop.keys[i]) for i in small_indexes(pop)]
    result.ops["load, 1k stored"] = timed_calls(loads[:OPS])
    result.ops["save (logged in), 1k stored"] = timed_calls(next_saves(store, pop, indexes))
    measure_async(store, pop, small_indexes(pop)[:OPS], indexes, "1k stored", result)


def check_sample(store: Any, pop: Population, result: Result) -> None:
    """A sample of bulk-written sessions reads back through the store's own API."""
    sample = pop.live_sample(500, with_user=True) + pop.live_sample(500, with_user=False)
    for i in sample:
        record = store.load(pop.keys[i])
        assert record is not None and record.version == 1, (i, record)
        assert len(record.data) == len(pop.record(i))
    for i in sample[:100]:
        user = pop.users[i]
        if user is not None:
            assert pop.keys[i] in {key for key, _ in store.list_user(user)}
    result.notes.append(
        f"{len(sample):,} bulk-written sessions read back through `load` (and 100 users "
        "through `list_user`) as the store wrote them."
    )


def user_costs(store: Any, pop: Population, result: Result, prefix: str) -> None:
    """Users with 1, 10, 100, 1000 sessions, written through `save`, among the N."""
    data = pop.record(0)
    rows = []
    for count in USER_COUNTS:
        users = [f"{prefix}-{count}-{j}" for j in range(2 if count >= 1000 else 5)]
        for user in users:
            for _ in range(count):
                assert store.save(new_handle(), data, version=0, ttl=TTL, user=user)
        listed = []
        for _ in range(3):
            for user in users:
                t0 = time.perf_counter()
                found = store.list_user(user)
                listed.append((time.perf_counter() - t0) * 1000)
                assert len(found) == count
        deleted = []
        for user in users:
            t0 = time.perf_counter()
            removed = store.delete_user(user)
            deleted.append((time.perf_counter() - t0) * 1000)
            assert removed == count
        rows.append(
            f"| {count:,} | {statistics.median(listed):.2f} ms | {max(listed):.2f} ms "
            f"| {statistics.median(deleted):.2f} ms | {max(deleted):.2f} ms |"
        )
    result.user_rows = rows


class Prober:
    """`load`s of live sessions in a loop on a thread, each timed."""

    def __init__(self, store: Any, keys: list[str]) -> None:
        self.store, self.keys = store, keys
        self.latencies: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            key = self.keys[i % len(self.keys)]
            i += 1
            t0 = time.perf_counter()
            self.store.load(key)
            self.latencies.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.0005)  # ~1,000-2,000 probes a second, not a load test

    def take(self) -> list[float]:
        taken, self.latencies = self.latencies, []
        return sorted(taken)

    def __enter__(self) -> Prober:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def describe(latencies: list[float]) -> str:
    if not latencies:
        return "no probe"
    p99 = latencies[min(len(latencies) - 1, len(latencies) * 99 // 100)]
    return (
        f"p50 {statistics.median(latencies):.2f} ms, p99 {p99:.2f} ms, "
        f"max {latencies[-1]:.1f} ms ({len(latencies):,} loads)"
    )


# Redis ------------------------------------------------------------------------------


def info(client: Any, section: str) -> dict[str, Any]:
    return dict(client.info(section))


def redis_fill(store: RedisStore, pop: Population, clients: list[Any], cluster: bool) -> None:
    """Sessions SMALL.. in the store's layout, pipelined (see the module docstring)."""
    ms = TTL * 1000
    now_ms = int(time.time() * 1000)
    scripts = store._scripts
    if cluster:  # one plain pipeline per master, each key sent to the master of its slot
        by_port = {c.connection_pool.connection_kwargs["port"]: c for c in clients}
        pipes = {port: c.pipeline(transaction=False) for port, c in by_port.items()}
        cluster_client = store.client

        def pipe_for(key: str) -> Any:
            return pipes[cluster_client.get_node_from_key(key).port]

    else:
        single = store.client.pipeline(transaction=False)
    for i in range(SMALL, len(pop.keys)):
        key, user = pop.keys[i], pop.users[i]
        value = _encode(1, user, pop.record(i))
        if cluster:  # what the `index` and `replace` scripts write
            if user is not None:
                index = store._index(user)
                pipe_for(index).zadd(index, {key: now_ms + ms}).pexpireat(index, now_ms + ms)
            pipe_for(store._key(key)).set(store._key(key), value, px=ms)
        else:
            keys = [store._key(key)] if user is None else [store._key(key), store._index(user)]
            scripts["save"](keys=keys, args=[0, value, ms, key], client=single)
        if i % CHUNK == 0:
            for pipe in pipes.values() if cluster else [single]:
                assert all(pipe.execute())
    for pipe in pipes.values() if cluster else [single]:
        assert all(pipe.execute())


def run_redis(pop: Population, *, cluster: bool, window: float) -> Result:
    import redis

    name = "Redis Cluster (3 masters)" if cluster else "Redis (one server)"
    result = Result(name, len(pop.keys))
    context = running_redis_cluster() if cluster else running_redis()
    with context as server:
        nodes = server.nodes if isinstance(server, RedisCluster) else [server]
        clients = [redis.Redis(host="127.0.0.1", port=node.port) for node in nodes]
        store = RedisStore(server.url)
        before = [info(c, "memory")["used_memory"] for c in clients]
        t0 = time.perf_counter()
        log("fill_small")
        fill_small(store, pop)
        fresh_small_saves(store, pop, result)
        log("redis_fill")
        redis_fill(store, pop, clients, cluster)
        result.fill_seconds = time.perf_counter() - t0
        result.fill = (
            "the first 1,000 through `save`; the rest through the store's own scripts "
            + (
                "(what its `index` and `replace` scripts write: `SET PX`, `ZADD`, `PEXPIREAT`, "
                "on a pipeline per master, as redis-py's cluster pipeline refuses EVALSHA) "
                if cluster
                else "(`save`) as EVALSHA "
            )
            + f"pipelined by {CHUNK:,}"
        )
        log("check_sample")
        check_sample(store, pop, result)
        memories = [info(c, "memory") for c in clients]
        keyspace = [c.dbsize() for c in clients]
        total = 0
        for node, b, m, keys in zip(nodes, before, memories, keyspace, strict=True):
            delta = m["used_memory"] - b
            total += delta
            result.memory_rows.append(
                f"| {name.split(' (')[0]} :{node.port} | {keys:,} | {delta / 2**20:,.0f} MiB "
                f"| {m['used_memory_rss'] / 2**20:,.0f} MiB "
                f"| {m.get('mem_fragmentation_ratio', 0):.2f} | {delta / len(pop.keys):,.0f} B |"
            )
        result.per_session = total / len(pop.keys)
        log("measure_ops")
        measure_ops(store, pop, sample_indexes(pop, OPS), f"{len(pop.keys):,} stored", result)
        log("user_costs")
        user_costs(store, pop, result, "big")
        log("redis_purge")
        redis_purge(store, pop, clients, result, window)
        store.close()
        for c in clients:
            c.close()
    return result


def redis_purge(
    store: RedisStore, pop: Population, clients: list[Any], result: Result, window: float
) -> None:
    """Give 10% of the sessions one expiry instant and watch Redis remove them for
    `window` seconds; then 40% more (half of all expired) and watch again."""
    n = len(pop.keys)
    start = int(n * (1 - EXPIRED_FRACTION))
    probed = pop.live_sample(500, with_user=False)
    spared = set(probed)
    phases = [
        [store._key(k) for k in pop.keys[start:]],
        [store._key(pop.keys[i]) for i in range(SMALL, start) if i % 9 < 4 and i not in spared],
    ]
    columns: list[list[str]] = []
    with Prober(store, [pop.keys[i] for i in probed]) as prober:
        time.sleep(1.0)
        baseline = prober.take()
        held = 0  # expired keys not yet removed, carried into the next phase
        for doomed in phases:
            column, held = expire_and_watch(store, clients, doomed, held, prober, window)
            columns.append(column)
    labels = [
        "sessions given one expiry instant",
        "watched for",
        "removed by Redis meanwhile (`expired_keys`)",
        "removal rate",
        "expired keys still held at the end",
        "`used_memory` freed",
        "`expired_time_cap_reached_count` (expiry cycles cut short at their time limit)",
        "`expired_stale_perc` at the end (per master)",
        "`load` of live sessions meanwhile",
    ]
    first, then = (f"{len(p):,} ({len(p) / n:.0%} of {n:,})" for p in phases)
    result.purge_rows = [
        "| | first: 10% expire | then: more expire |",
        "|---|---|---|",
        f"| {labels[0]} | {first} | {then} more |",
    ]
    for i, label in enumerate(labels[1:]):
        result.purge_rows.append(f"| {label} | {columns[0][i]} | {columns[1][i]} |")
    result.purge_rows.append(f"| `load` of live sessions before | {describe(baseline)} | |")
    result.purge_rows.append(
        "| `RedisStore.purge_expired()` | returns 0 at once: nothing to purge | |"
    )


def expire_and_watch(
    store: RedisStore,
    clients: list[Any],
    doomed: list[str],
    held: int,
    prober: Prober,
    window: float,
) -> tuple[list[str], int]:
    """PEXPIREAT every key of `doomed` to one instant, then watch the server's counters
    until they and the `held` expired keys left before are gone, or `window` seconds."""
    pending = len(doomed) + held
    at = int(time.time() * 1000) + 2000 + len(doomed) // 50  # after the pipeline is sent
    pipe = store.client.pipeline(transaction=False)
    for n, key in enumerate(doomed, 1):
        pipe.pexpireat(key, at)
        if n % CHUNK == 0:
            pipe.execute()
    pipe.execute()
    time.sleep(max(0.0, at / 1000 - time.time()))
    stats0 = [info(c, "stats") for c in clients]
    memory0 = sum(info(c, "memory")["used_memory"] for c in clients)
    prober.take()
    t0 = time.perf_counter()
    gone = 0
    while time.perf_counter() < t0 + window:
        stats = [info(c, "stats") for c in clients]
        gone = sum(
            b["expired_keys"] - a["expired_keys"] for a, b in zip(stats0, stats, strict=True)
        )
        if gone >= pending:
            break
        time.sleep(0.05)
    took = time.perf_counter() - t0
    during = prober.take()
    stats1 = [info(c, "stats") for c in clients]
    memory1 = sum(info(c, "memory")["used_memory"] for c in clients)
    gone = sum(b["expired_keys"] - a["expired_keys"] for a, b in zip(stats0, stats1, strict=True))
    capped = sum(
        int(b.get("expired_time_cap_reached_count", 0))
        - int(a.get("expired_time_cap_reached_count", 0))
        for a, b in zip(stats0, stats1, strict=True)
    )
    stale = ", ".join(f"{float(s.get('expired_stale_perc', 0)):.1f}%" for s in stats1)
    return [
        f"{took:.1f} s" + (" (all gone)" if gone >= pending else " (window ended)"),
        f"{gone:,}",
        f"{gone / took:,.0f} keys/s",
        f"{max(0, pending - gone):,}",
        f"{(memory0 - memory1) / 2**20:,.1f} MiB",
        f"{capped:,}",
        stale,
        describe(during),
    ], max(0, pending - gone)


# PostgreSQL -------------------------------------------------------------------------


def pg_fill(url: str, table: str, pop: Population) -> None:
    now = time.time()
    start_expired = int(len(pop.keys) * (1 - EXPIRED_FRACTION))
    with psycopg.connect(url, autocommit=True) as conn:
        with (
            conn.cursor() as cur,
            cur.copy(
                f"COPY {table} (key, data, version, expires_at, user_id) FROM STDIN"  # noqa: S608
            ) as copy,
        ):
            for i in range(SMALL, len(pop.keys)):
                expires = now - 60 if i >= start_expired else now + TTL
                copy.write_row((pop.keys[i], pop.record(i), 1, expires, pop.users[i]))
        conn.execute(f"VACUUM ANALYZE {table}")


def pg_sizes(conn: psycopg.Connection[Any], table: str) -> dict[str, int]:
    row = conn.execute(
        "SELECT pg_total_relation_size(%(t)s), pg_relation_size(%(t)s), "
        "pg_relation_size(%(p)s), pg_relation_size(%(u)s), pg_relation_size(%(e)s), "
        "coalesce(pg_total_relation_size(reltoastrelid), 0) "
        "FROM pg_class WHERE oid = %(t)s::regclass",
        {"t": table, "p": f"{table}_pkey", "u": f"{table}_user", "e": f"{table}_expires"},
    ).fetchone()
    assert row is not None
    return dict(zip(("total", "heap", "pkey", "user", "expires", "toast"), row, strict=True))


def run_postgres(pop: Population) -> Result:
    result = Result("PostgreSQL", len(pop.keys))
    table = "coatcheck_sessions"
    with running_postgres() as server:
        store = PostgresStore(server.url, table=table, max_connections=4)
        store.create_schema()
        t0 = time.perf_counter()
        log("fill_small")
        fill_small(store, pop)
        fresh_small_saves(store, pop, result)
        log("pg_fill")
        pg_fill(server.url, table, pop)
        result.fill_seconds = time.perf_counter() - t0
        result.fill = (
            "the first 1,000 through `save`; the rest by `COPY` into the store's table, "
            f"indexes in place; the last {EXPIRED_FRACTION:.0%} written already expired"
        )
        log("check_sample")
        check_sample(store, pop, result)
        with psycopg.connect(server.url, autocommit=True) as conn:
            sizes = pg_sizes(conn, table)
            n = len(pop.keys)
            result.per_session = sizes["total"] / n
            for part in ("heap", "toast", "pkey", "user", "expires", "total"):
                result.parts[part] = sizes[part] / n
                result.memory_rows.append(
                    f"| {part} | {sizes[part] / 2**20:,.0f} MiB | {sizes[part] / n:,.0f} B |"
                )
            settings = conn.execute(
                "SELECT current_setting('shared_buffers'), version()"
            ).fetchone()
            assert settings is not None
            result.notes.append(f"shared_buffers {settings[0]}; {settings[1].split(',')[0]}.")
        log("measure_ops")
        measure_ops(store, pop, sample_indexes(pop, OPS), f"{len(pop.keys):,} stored", result)
        log("user_costs")
        user_costs(store, pop, result, "big")
        log("pg_purge")
        pg_purge(store, server.url, table, pop, result)
        store.close()
    return result


def pg_purge(store: PostgresStore, url: str, table: str, pop: Population, result: Result) -> None:
    expired = len(pop.keys) - int(len(pop.keys) * (1 - EXPIRED_FRACTION))
    live = [pop.keys[i] for i in pop.live_sample(500, with_user=False)]
    other = PostgresStore(url, table=table, max_connections=2)
    with Prober(other, live) as prober:
        time.sleep(1.0)
        baseline = prober.take()
        t0 = time.perf_counter()
        removed = store.purge_expired()
        took = time.perf_counter() - t0
        during = prober.take()
    other.close()
    batches = math.ceil((removed + 1) / PURGE_BATCH)
    with psycopg.connect(url, autocommit=True) as conn:
        after = pg_sizes(conn, table)["total"]
        t1 = time.perf_counter()
        conn.execute(f"VACUUM {table}")
        vacuum = time.perf_counter() - t1
        vacuumed = pg_sizes(conn, table)["total"]
    result.purge_rows = [
        "| what | measured |",
        "|---|---|",
        f"| expired rows among all | {expired:,} of {len(pop.keys):,} |",
        f"| `purge_expired()` | {took:.2f} s, removed {removed:,} ({removed / took:,.0f} rows/s) |",
        f"| statements (each <= {PURGE_BATCH:,} rows, its own short transaction) | {batches:,}, "
        f"{took / batches * 1000:.1f} ms each on average |",
        f"| `load` of live sessions before | {describe(baseline)} |",
        f"| `load` of live sessions during the purge | {describe(during)} |",
        f"| table + indexes after the purge / after a plain `VACUUM` ({vacuum:.1f} s) "
        f"| {after / 2**20:,.0f} MiB / {vacuumed / 2**20:,.0f} MiB (space is reused, "
        "not returned) |",
    ]


# Report -----------------------------------------------------------------------------


def extrapolation(results: list[Result]) -> list[str]:
    lines = [
        "| store | per session (measured) | 10M sessions | 100M sessions | at 10M | at 100M |",
        "|---|---:|---:|---:|---|---|",
    ]
    for r in results:
        sizes = [r.per_session * count for count in (10_000_000, 100_000_000)]
        if r.store.startswith("Redis Cluster"):
            usable = REDIS_NODE_GB * REDIS_USABLE * 2**30
            nodes = [math.ceil(s * REDIS_STALE / usable) for s in sizes]
            cells = [
                f"{max(3, n)} masters of {REDIS_NODE_GB} GiB (+{max(3, n)} replicas)"
                + (f" (a cluster's minimum; by size: {n})" if n < 3 else "")
                for n in nodes
            ]
        elif r.store.startswith("Redis"):
            cells = [
                f"one server with >= {math.ceil(s * REDIS_STALE / REDIS_USABLE / 2**30)} GiB RAM"
                for s in sizes
            ]
        else:
            pkey = r.parts.get("pkey", 0.0)
            cells = [
                ("1 primary (+1 standby)" if s < PG_ONE_NODE_GB * 2**30 else "partition")
                + f"; primary-key index {pkey * count / 2**30:,.1f} GiB to keep in RAM"
                for s, count in zip(sizes, (10_000_000, 100_000_000), strict=True)
            ]
        lines.append(
            f"| {r.store} | {r.per_session:,.0f} B | {sizes[0] / 2**30:,.1f} GiB "
            f"| {sizes[1] / 2**30:,.1f} GiB | {cells[0]} | {cells[1]} |"
        )
    return lines


REDIS_NODE_GB = 32  # GiB of RAM of one Redis node in the node count
REDIS_USABLE = 0.5  # share of it for data: fork copy-on-write (RDB/AOF rewrite), fragmentation
#: Expired keys Redis may keep: its active expiry slows to ~20 keys/s per server once under
#: ~10% of sampled keys are expired (measured in the purge section).
REDIS_STALE = 1.1
PG_ONE_NODE_GB = 500  # what one PostgreSQL primary comfortably holds for this table


def report(results: list[Result], args: argparse.Namespace, load0: tuple[float, ...]) -> str:
    out: list[str] = []
    command = " ".join(["bench/sessions_at_scale.py", *sys.argv[1:]])
    out.append("# Sessions at scale: Redis, Redis Cluster and PostgreSQL\n")
    out.append(f"`.venv/bin/python {command}`\n")
    load1 = os.getloadavg()
    out.append(
        f"{platform.python_implementation()} {platform.python_version()}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs; redis-py {version('redis')}, psycopg {version('psycopg')}. "
        "The machine was shared with other benchmarks: load average "
        f"{load0[0]:.2f} / {load0[1]:.2f} / {load0[2]:.2f} at the start, "
        f"{load1[0]:.2f} / {load1[1]:.2f} / {load1[2]:.2f} at the end. "
        f"Records of {args.size} bytes, {args.user_fraction:.0%} of sessions with a user "
        f"(two sessions per user), TTL {TTL // 3600} h.\n"
    )
    out.append("## Fill\n")
    out.append("| store | sessions | how | time |")
    out.append("|---|---:|---|---:|")
    for r in results:
        out.append(f"| {r.store} | {r.sessions:,} | {r.fill} | {r.fill_seconds:.0f} s |")
    for r in results:
        for note in r.notes:
            out.append(f"\n{r.store}: {note}")
    out.append("\n## Memory and disk per session\n")
    redis_rows = [row for r in results if r.store.startswith("Redis") for row in r.memory_rows]
    if redis_rows:
        out.append(
            "| Redis node | keys | `used_memory` growth | RSS | fragmentation | per session |"
        )
        out.append("|---|---:|---:|---:|---:|---:|")
        out.extend(redis_rows)
        for r in results:
            if r.store.startswith("Redis"):
                out.append(f"\n{r.store}: {r.per_session:,.0f} B per session in all.")
    for r in results:
        if r.store == "PostgreSQL":
            out.append(f"\n| PostgreSQL relation ({r.sessions:,} rows) | size | per session |")
            out.append("|---|---:|---:|")
            out.extend(r.memory_rows)
    out.append("\n## `load` and `save` through the store (one call at a time)\n")
    out.append("| store | operation | p50 | p99 | client CPU per call |")
    out.append("|---|---|---:|---:|---:|")
    for r in results:
        for label, cost in r.ops.items():
            out.append(f"| {r.store} | {label} | {cost.cells()} |")
    out.append("\n## `list_user` and `delete_user` against the user's session count\n")
    out.append(
        "Among the N sessions; `list_user` three times per user (5 users of each size, 2 of "
        "1,000), `delete_user` once per user (what `SessionAdmin.sessions` and `revoke_user` "
        "call in the store).\n"
    )
    for r in results:
        out.append(f"**{r.store}**\n")
        out.append("| user's sessions | `list_user` median | max | `delete_user` median | max |")
        out.append("|---:|---:|---:|---:|---:|")
        out.extend(r.user_rows)
        out.append("")
    out.append(f"## Purge with {EXPIRED_FRACTION:.0%} expired\n")
    for r in results:
        out.append(f"**{r.store}**\n")
        out.extend(r.purge_rows)
        out.append("")
    out.append("## Extrapolation to 10M and 100M sessions\n")
    out.extend(extrapolation(results))
    out.append(
        "\nAssumptions: memory and disk grow linearly with the count, at the measured bytes "
        f"per session (same record size, {args.user_fraction:.0%} with a user). Redis: "
        f"{REDIS_NODE_GB} GiB nodes of which {REDIS_USABLE:.0%} holds data (the rest for the "
        "fork of an RDB or AOF rewrite, copy-on-write under writes, and fragmentation), "
        f"{REDIS_STALE - 1:.0%} more for expired keys not yet reclaimed (see the purge "
        "section), one replica per master; a cluster spreads keys evenly over masters (measured "
        "above), and the per-session figure of a cluster node includes its share of "
        "per-user indexes. PostgreSQL: one primary holds the table up to "
        f"{PG_ONE_NODE_GB} GiB of disk; what matters first is whether the primary-key index "
        "(the lookup of every `load`) and the hot rows stay in memory, so RAM for them is "
        "the figure to size: the `pkey` row above times the count. Throughput, not size, "
        "decides the node count when requests per second per node are the limit: see "
        "the per-call costs above."
    )
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", default="redis,cluster,postgres")
    parser.add_argument("--sessions", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="20,000 sessions: a smoke run")
    parser.add_argument("--size", type=int, default=300, help="record bytes per session")
    parser.add_argument("--user-fraction", type=float, default=0.5)
    parser.add_argument("--output", type=Path, help="also write the report to this file")
    args = parser.parse_args()
    if args.quick:
        args.sessions = 20_000
    if args.sessions < 10 * SMALL:
        parser.error(f"--sessions must be at least {10 * SMALL:,}")
    load0 = os.getloadavg()
    window = 5.0 if args.quick else 30.0  # seconds Redis's expiry is watched per phase
    runners: dict[str, Callable[[Population], Result]] = {
        "redis": lambda p: run_redis(p, cluster=False, window=window),
        "cluster": lambda p: run_redis(p, cluster=True, window=window),
        "postgres": run_postgres,
    }
    results = []
    pop = populate(args.sessions, args.size, args.user_fraction)
    for name in args.stores.split(","):
        t0 = time.perf_counter()
        results.append(runners[name](pop))
        print(f"{name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    text = report(results, args, load0)
    print(text)
    if args.output:
        args.output.write_text(text)


if __name__ == "__main__":
    main()
