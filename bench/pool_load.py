"""Many concurrent operations on async stores, as ASGI workers see them: errors and latency
with the stores' default pool settings, against throw-away servers.

`--processes` processes (like uvicorn workers) each run `--concurrency` tasks on one
`AsyncRedisStore` or `AsyncPostgresStore` of their own, in one event loop, sharing the one
server. Each task runs "requests" back to back until the process has started its share of
`--requests`: a request is a `load` of one of `--sessions` sessions and a `save` of it at
the version it read (a writing request: the store's two round trips). A save that loses a
compare-and-set to a parallel request is counted as a conflict, not an error (with `--cold`
the sessions are not written beforehand, and on PostgreSQL each row's table does not exist
yet: the first requests of every process meet a store that creates it). `--app-ms`
adds that much CPU work to each request, half after the load and half after the save,
standing for the HTTP server, framework and view around the store: it keeps the event loop
busy, so a task reads its reply later and holds its connection longer, as in a real worker.

Latency is one request's (load + save), wall clock, including any wait for a pooled
connection; errors are counted by exception class and message (`StoreUnavailable` is a
503). The servers are started here from the machine's binaries (`tests/servers.py`), on
loopback ports, and removed at the end. Each row is bounded: it stops after `--requests`
requests or `--seconds` seconds, whichever comes first.

    .venv/bin/python bench/pool_load.py                              # both backends, defaults
    .venv/bin/python bench/pool_load.py --concurrency 300
    .venv/bin/python bench/pool_load.py --backend postgres --processes 3 --concurrency 200 \\
        --query max_connections=10 --query max_connections=50

Each `--query` is a URL query string appended to the server's URL (`from_url` and the stores
read pool settings from it); one table row per query, after one for the defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import secrets
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from coatcheck.stores import AsyncStore, from_url  # noqa: E402
from servers import running_postgres, running_redis  # noqa: E402


def busy(ms: float) -> None:
    """CPU work for `ms` milliseconds, holding the event loop (as Python code does)."""
    end = time.perf_counter() + ms / 1000
    while time.perf_counter() < end:
        pass


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def describe_pool(store: object) -> str:
    """The pool settings a store ended up with (whatever its version calls them)."""
    if hasattr(store, "max_connections"):
        wait = getattr(store, "pool_timeout", None)
        return f"max_connections={store.max_connections}, pool_timeout={wait:g} s"
    pool = getattr(store, "pool", None)  # PostgreSQL before: one timeout for all
    if pool is not None:
        return f"max_size={pool.max_size}, wait {pool.timeout:g} s"
    inner = getattr(getattr(store, "client", None), "connection_pool", None)
    if inner is not None:  # Redis before: redis-py's default pool, which never waits
        return f"{type(inner).__name__}(max_connections={inner.max_connections}), no wait"
    return "?"


async def run(url: str, args: argparse.Namespace, requests: int) -> dict[str, Any]:
    store: AsyncStore = from_url(url, asynchronous=True)
    keys = [secrets.token_urlsafe(32) for _ in range(args.sessions)]
    payload = b"x" * args.size
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    conflicts = started = 0
    try:
        for key in [] if args.cold else keys:  # seed, one at a time (and make the table)
            await store.save(key, payload, version=0, ttl=3600, user=None)
        deadline = time.monotonic() + args.seconds

        async def worker(n: int) -> None:
            nonlocal started, conflicts
            i = n
            while started < requests and time.monotonic() < deadline:
                started += 1
                key = keys[i % len(keys)]
                i += args.concurrency
                t0 = time.perf_counter()
                try:
                    record = await store.load(key)
                    busy(args.app_ms / 2)
                    version = 0 if record is None else record.version
                    if not await store.save(key, payload, version=version, ttl=3600, user=None):
                        conflicts += 1
                    busy(args.app_ms / 2)
                except Exception as exc:  # noqa: BLE001 - counted by class and cause
                    errors[f"{type(exc).__name__}: {str(exc)[:90]}"] += 1
                    continue
                latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in range(args.concurrency)))
        elapsed = time.perf_counter() - t0
    finally:
        await store.aclose()
    return {
        "requests": started,
        "latencies": latencies,
        "errors": errors,
        "conflicts": conflicts,
        "elapsed": elapsed,
        "pool": describe_pool(store),
    }


def child(url: str, args: argparse.Namespace, requests: int) -> dict[str, Any]:
    return asyncio.run(run(url, args, requests))


def row(url: str, args: argparse.Namespace) -> dict[str, Any]:
    share = args.requests // args.processes
    if args.processes == 1:
        parts = [child(url, args, share)]
    else:
        context = multiprocessing.get_context("spawn")
        with context.Pool(args.processes) as pool:
            parts = pool.starmap(child, [(url, args, share)] * args.processes)
    latencies = [x for part in parts for x in part["latencies"]]
    errors: Counter[str] = sum((part["errors"] for part in parts), Counter())
    return {
        "requests": sum(part["requests"] for part in parts),
        "errors": sum(errors.values()),
        "by_class": "; ".join(f"{v} x {k}" for k, v in errors.most_common()),
        "conflicts": sum(part["conflicts"] for part in parts),
        "p50": percentile(latencies, 0.50) * 1000,
        "p99": percentile(latencies, 0.99) * 1000,
        "max": max(latencies, default=float("nan")) * 1000,
        "rate": sum(part["requests"] for part in parts) / max(p["elapsed"] for p in parts),
        "pool": parts[0]["pool"],
    }


def servers(names: list[str], stack: ExitStack) -> Iterator[tuple[str, str]]:
    for name in names:
        if name == "redis":
            yield name, stack.enter_context(running_redis()).url
        else:
            yield name, stack.enter_context(running_postgres()).url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["redis", "postgres", "both"], default="both")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=200, help="tasks per process")
    parser.add_argument("--requests", type=int, default=20_000, help="per row, in all")
    parser.add_argument("--seconds", type=float, default=20.0, help="hard bound per row")
    parser.add_argument("--sessions", type=int, default=1000, help="per process")
    parser.add_argument("--size", type=int, default=300, help="bytes per session")
    parser.add_argument("--app-ms", type=float, default=0.0, help="CPU work per request")
    parser.add_argument("--query", action="append", default=[], help="URL query, per row")
    parser.add_argument(
        "--cold",
        action="store_true",
        help="no seeding: the first requests find a new store (PostgreSQL: no table yet)",
    )
    args = parser.parse_args()

    names = ["redis", "postgres"] if args.backend == "both" else [args.backend]
    print("```")
    print(".venv/bin/python bench/pool_load.py " + " ".join(sys.argv[1:]))
    print("```")
    print(
        f"\n{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start; "
        f"redis-py {version('redis')}, psycopg {version('psycopg')}, "
        f"psycopg-pool {version('psycopg-pool')}. {args.processes} process(es) x "
        f"{args.concurrency} concurrent tasks, {args.requests} requests (load + save) per "
        f"row, {args.sessions} sessions of {args.size} bytes per process, {args.app_ms:g} ms "
        "of CPU work per request besides the store.\n"
    )
    print(
        "| backend | URL query | pool | requests | errors | conflicts | p50 ms | p99 ms "
        "| max ms | requests/s |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    notes = []
    with ExitStack() as stack:
        for name, url in servers(names, stack):
            for query in ["", *args.query]:
                target = f"{url}{'&' if '?' in url else '?'}{query}" if query else url
                result = row(target, args)
                print(
                    f"| {name} | `{query or '(defaults)'}` | {result['pool']} "
                    f"| {result['requests']} | {result['errors']} | {result['conflicts']} "
                    f"| {result['p50']:.1f} | {result['p99']:.1f} | {result['max']:.1f} "
                    f"| {result['rate']:.0f} |",
                    flush=True,
                )
                if result["errors"]:
                    notes.append(f"- {name} `{query or '(defaults)'}`: {result['by_class']}")
    if notes:
        print("\nErrors:\n" + "\n".join(notes))


if __name__ == "__main__":
    main()
