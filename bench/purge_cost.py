"""What removing expired records costs on Redis and PostgreSQL, and where it runs.

- Redis, a user's index: `--expired` members whose sessions expired long ago are planted in
  one user's index (scores in the past, so no TTL has to run out), then that user's next
  `save` is timed: the index write inside its script removes expired members on the way
  (all of them before coatcheck 0.1's batch limit, at most `TRIM_BATCH` after). Redis runs
  one script at a time, so this is also how long every other client of the server waits.
- PostgreSQL: `--expired` expired rows are planted beside `--live` live ones, and
  `purge_expired()` is timed: the whole purge and each statement (one batch of
  `PURGE_BATCH` rows), while a loop of `load`s on live sessions runs beside it, timed too.

Servers are started here from the machine's binaries (`tests/servers.py`), on loopback
ports, and removed at the end.

    .venv/bin/python bench/purge_cost.py                  # 100,000 expired, ~20 s on 2 cores
    .venv/bin/python bench/purge_cost.py --expired 20000
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import statistics
import sys
import threading
import time
from importlib.metadata import version
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from coatcheck.stores.postgres import PURGE_BATCH, PostgresStore  # noqa: E402
from coatcheck.stores.redis import RedisStore  # noqa: E402
from servers import running_postgres, running_redis  # noqa: E402


def redis_index(expired: int) -> list[str]:
    rows = []
    with running_redis() as server:
        store = RedisStore(server.url, prefix="bench:")
        for user, planted in (("small", 10), ("big", expired)):
            index = store._index(user)
            pipe = store.client.pipeline(transaction=False)
            for start in range(0, planted, 10_000):
                chunk = range(start, min(planted, start + 10_000))
                pipe.zadd(index, {f"gone-{i}": 1_000 + i for i in chunk})  # ms in 1970
            pipe.execute()
            store.save(f"warm-{user}", b"warm", version=0, ttl=60, user=None)  # scripts loaded
            key = secrets.token_urlsafe(32)
            times = []
            for n in range(3):
                t0 = time.perf_counter()
                store.save(key, b"x" * 300, version=n, ttl=60, user=user)
                times.append((time.perf_counter() - t0) * 1000)
            left = store.client.zcard(index)
            rows.append(
                f"| Redis: `save` for a user whose index holds {planted:,} expired members "
                f"| first: {times[0]:.2f} ms; next two: {times[1]:.2f}, {times[2]:.2f} ms "
                f"| {left - 1:,} expired members left after 3 saves |"
            )
        store.close()
    return rows


def postgres_purge(expired: int, live: int) -> list[str]:
    rows = []
    with running_postgres() as server:
        table = f"bench_{secrets.token_hex(4)}"
        store = PostgresStore(server.url, table=table)
        store.create_schema()
        now = time.time()
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute(
                f"INSERT INTO {table} (key, data, version, expires_at, user_id) "  # noqa: S608
                "SELECT 'e' || i, %s, 1, %s, NULL FROM generate_series(1, %s) AS i",
                (b"x" * 300, now - 60, expired),
            )
            conn.execute(
                f"INSERT INTO {table} (key, data, version, expires_at, user_id) "  # noqa: S608
                "SELECT 'l' || i, %s, 1, %s, NULL FROM generate_series(1, %s) AS i",
                (b"x" * 300, now + 3600, live),
            )
            conn.execute(f"VACUUM ANALYZE {table}")
        statements: list[float] = []
        original = store._run

        def timed(operation):  # type: ignore[no-untyped-def]
            t0 = time.perf_counter()
            try:
                return original(operation)
            finally:
                statements.append((time.perf_counter() - t0) * 1000)

        loads: list[float] = []
        stop = threading.Event()

        def reader() -> None:  # requests running beside the purge, on their own store
            other = PostgresStore(server.url, table=table)
            i = 0
            while not stop.is_set():
                i += 1
                t0 = time.perf_counter()
                other.load(f"l{i % live + 1}")
                loads.append((time.perf_counter() - t0) * 1000)
            other.close()

        thread = threading.Thread(target=reader)
        thread.start()
        time.sleep(0.5)
        baseline = list(loads)
        loads.clear()
        store._run = timed  # type: ignore[method-assign]
        t0 = time.perf_counter()
        removed = store.purge_expired()
        total = time.perf_counter() - t0
        stop.set()
        thread.join()
        store._run = original  # type: ignore[method-assign]
        rows.append(
            f"| PostgreSQL: `purge_expired()`, {expired:,} expired rows among {live:,} live "
            f"| {total * 1000:.0f} ms in all, {len(statements)} statements of <= "
            f"{PURGE_BATCH} rows: median {statistics.median(statements):.1f} ms, max "
            f"{max(statements):.1f} ms | removed {removed:,}; a `load` beside it: median "
            f"{statistics.median(loads):.2f} ms, max {max(loads):.1f} ms (before it: median "
            f"{statistics.median(baseline):.2f} ms, max {max(baseline):.1f} ms) |"
        )
        store.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--expired", type=int, default=100_000)
    parser.add_argument("--live", type=int, default=10_000)
    args = parser.parse_args()
    print("```")
    print(".venv/bin/python bench/purge_cost.py " + " ".join(sys.argv[1:]))
    print("```")
    print(
        f"\n{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start; "
        f"redis-py {version('redis')}, psycopg {version('psycopg')}.\n"
    )
    print("| what | time | notes |")
    print("|---|---|---|")
    for row in [*redis_index(args.expired), *postgres_purge(args.expired, args.live)]:
        print(row, flush=True)


if __name__ == "__main__":
    main()
