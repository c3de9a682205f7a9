"""What a purge costs the requests of a `SQLiteStore` on a large file.

    .venv/bin/python bench/sqlite_purge.py                   # 1M rows, half expired (~2 min)
    .venv/bin/python bench/sqlite_purge.py --rows 200000     # quicker
    .venv/bin/python bench/sqlite_purge.py --async           # AsyncSQLiteStore on a loop
    .venv/bin/python bench/sqlite_purge.py --rate 2000       # 2 000 saves a second
    PYTHONPATH=/path/to/other/src .venv/bin/python bench/sqlite_purge.py   # another version

**The file.** `--rows` sessions of 306 random bytes under random 43-character keys, one in
five with a user, `--expired` of them (half by default) expired; built once with plain
`sqlite3` into `--cache` (the table as `SQLiteStore` creates it), then copied afresh for
each run, so every run starts from the same backlog.

**The run.** The store gets an injected clock. First `--saves` saves with no purge due (the
baseline); then the clock moves past `purge_interval`, so the next save is the one that
starts a purge, and saves go on until the purge has finished (a store with a purge thread:
until it is idle; one that purges inside `save`: that save returned) and at least
`--saves` saves were timed, or `--seconds` passed. Saves alternate between creating a new
session and updating one created earlier in the run, back to back or `--rate` a second.
Each save is timed on its own.

**Reported.** Per phase: saves, median, p99, p99.9 and worst save. For the purge: rows
deleted, how long the purging phase took, and, for a store with them, how many purge
windows (`_purge_window`: the write lock is held) and background checkpoints (`_checkpoint`:
no lock held) ran, and their median, p99, p99.9 and worst times.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from coatcheck.stores import AsyncSQLiteStore, SQLiteStore

T0 = 1_800_000_000.0  # the clock when the file was built
TABLE = "coatcheck_sessions"


class Clock:
    """The injected clock: starts at T0 and moves a microsecond per read."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        self.now += 1e-6
        return self.now


def build(path: Path, rows: int, expired: float) -> None:
    SQLiteStore(path, clock=lambda: T0).close()  # the table, as the store makes it
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous = OFF")
    cut = int(rows * expired)
    batch = 50_000
    for start in range(0, rows, batch):
        db.execute("BEGIN")
        db.executemany(
            f"INSERT INTO {TABLE} (key, data, version, expires_at, user) VALUES (?, ?, 1, ?, ?)",  # noqa: S608
            (
                (
                    secrets.token_urlsafe(32),
                    os.urandom(306),
                    T0 - 10 if i < cut else T0 + 1e6,
                    f"user-{i}" if i % 5 == 0 else None,
                )
                for i in range(start, min(start + batch, rows))
            ),
        )
        db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def pristine(cache: Path, rows: int, expired: float) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"sessions-{rows}-{expired:g}.db"
    if not path.exists():
        started = time.perf_counter()
        building = path.with_suffix(".building")
        for leftover in cache.glob(building.name + "*"):
            leftover.unlink()
        build(building, rows, expired)
        building.rename(path)
        print(f"(built {path} in {time.perf_counter() - started:.0f} s)", file=sys.stderr)
    return path


def quantiles(times: list[float]) -> str:
    ordered = sorted(times)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return (
        f"{statistics.median(ordered) * 1e3:.3f} | {at(0.99) * 1e3:.3f} "
        f"| {at(0.999) * 1e3:.3f} | {ordered[-1] * 1e3:.1f}"
    )


class Run:
    """One run against a fresh copy of the file; `save(key, version)` does one save."""

    def __init__(self, args: argparse.Namespace, path: Path) -> None:
        self.args = args
        self.clock = Clock()
        self.windows: list[float] = []
        self.checkpoints: list[float] = []
        self.created: list[str] = []
        self.versions: dict[str, int] = {}
        self.data = os.urandom(306)
        self.step = 0
        if args.asynchronous:
            self.astore = AsyncSQLiteStore(path, clock=self.clock)
            self.store = self.astore.sync
        else:
            self.store = SQLiteStore(path, clock=self.clock)
        # Time every purge window and checkpoint (an instance attribute shadows the method).
        for name, times in (("_purge_window", self.windows), ("_checkpoint", self.checkpoints)):
            method = getattr(self.store, name, None)
            if method is not None:
                setattr(self.store, name, self.timed(method, times))

    @staticmethod
    def timed(method: Callable[..., Any], times: list[float]) -> Callable[..., Any]:
        def timed_method(*args: Any) -> Any:
            started = time.perf_counter()
            try:
                return method(*args)
            finally:
                times.append(time.perf_counter() - started)

        return timed_method

    def next_save(self) -> tuple[str, int]:
        """Alternately a new key (version 0) and an update of one created earlier."""
        self.step += 1
        if self.step % 2 or not self.created:
            key = secrets.token_urlsafe(32)
            self.created.append(key)
            return key, 0
        key = self.created[self.step // 2 % len(self.created)]
        return key, self.versions[key]

    def done(self, key: str, version: int, saved: bool) -> None:
        if saved:
            self.versions[key] = version + 1

    def delay(self, started: float, done: int) -> float:
        """How long to wait before the next save, at `--rate` saves per second."""
        rate: float = self.args.rate
        if not rate:
            return 0.0
        return max(0.0, started + done / rate - time.perf_counter())

    def purge_finished(self) -> bool:
        purger = getattr(self.store, "_purger", None)
        return purger is None or bool(purger.idle(0))

    def phase(self, save: Callable[[str, int], bool], purging: bool) -> tuple[list[float], float]:
        times: list[float] = []
        started = time.perf_counter()
        deadline = started + self.args.seconds
        while time.perf_counter() < deadline:
            time.sleep(self.delay(started, len(times)))
            key, version = self.next_save()
            t = time.perf_counter()
            saved = save(key, version)
            times.append(time.perf_counter() - t)
            self.done(key, version, saved)
            if len(times) >= self.args.saves and (not purging or self.purge_finished()):
                break
        return times, time.perf_counter() - started


def sync_run(run: Run) -> tuple[list[float], list[float], float]:
    store = run.store

    def save(key: str, version: int) -> bool:
        return store.save(key, run.data, version=version, ttl=3600, user=None)

    baseline, _ = run.phase(save, purging=False)
    run.clock.now += store.purge_interval + 1
    purging, took = run.phase(save, purging=True)
    return baseline, purging, took


def async_run(run: Run) -> tuple[list[float], list[float], float]:
    async def main() -> tuple[list[float], list[float], float]:
        # One save at a time on the loop: what one request waits for.
        baseline, _ = await aphase(run, purging=False)
        run.clock.now += run.store.purge_interval + 1
        purging, took = await aphase(run, purging=True)
        await run.astore.aclose()
        return baseline, purging, took

    return asyncio.run(main())


async def aphase(run: Run, purging: bool) -> tuple[list[float], float]:
    times: list[float] = []
    started = time.perf_counter()
    deadline = started + run.args.seconds
    while time.perf_counter() < deadline:
        await asyncio.sleep(run.delay(started, len(times)))
        key, version = run.next_save()
        t = time.perf_counter()
        saved = await run.astore.save(key, run.data, version=version, ttl=3600, user=None)
        times.append(time.perf_counter() - t)
        run.done(key, version, saved)
        if len(times) >= run.args.saves and (not purging or run.purge_finished()):
            break
    return times, time.perf_counter() - started


def count(path: Path) -> tuple[int, int]:
    db = sqlite3.connect(path)
    try:
        total, expired = db.execute(
            f"SELECT count(*), count(*) FILTER (WHERE expires_at <= ?) FROM {TABLE}",  # noqa: S608
            (T0,),
        ).fetchone()
        return int(total), int(expired)
    finally:
        db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--expired", type=float, default=0.5, help="share of rows expired")
    parser.add_argument("--saves", type=int, default=20_000, help="saves per phase, at least")
    parser.add_argument("--seconds", type=float, default=120, help="cap per phase")
    parser.add_argument("--rate", type=float, default=0, help="saves per second (0: no pause)")
    parser.add_argument("--async", dest="asynchronous", action="store_true")
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "coatcheck-bench"
    )
    args = parser.parse_args()

    source = pristine(args.cache, args.rows, args.expired)
    with tempfile.TemporaryDirectory(dir=args.cache) as tmp:
        path = Path(tmp) / "sessions.db"
        shutil.copyfile(source, path)
        before_total, before_expired = count(path)
        run = Run(args, path)
        if args.asynchronous:
            baseline, purging, took = async_run(run)
        else:
            baseline, purging, took = sync_run(run)
            run.store.close()
        after_total, after_expired = count(path)

    import coatcheck

    kind = "AsyncSQLiteStore" if args.asynchronous else "SQLiteStore"
    print(f"`{' '.join([os.path.relpath(sys.executable), *sys.argv])}`")
    print(f"coatcheck from {os.path.dirname(coatcheck.__file__)}; {kind}")
    print(
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}\n"
    )
    print(f"{before_total:,} rows, {before_expired:,} expired, 306-byte records.\n")
    print("| phase | saves | median ms | p99 ms | p99.9 ms | worst ms |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| no purge due | {len(baseline):,} | {quantiles(baseline)} |")
    print(f"| purge due, then running | {len(purging):,} | {quantiles(purging)} |")
    print(
        f"\nPurge: {before_expired - after_expired:,} expired rows deleted "
        f"({after_expired:,} left), {after_total:,} rows after; "
        f"the purging phase took {took:.1f} s."
    )
    for what, times in (("Windows", run.windows), ("Checkpoints", run.checkpoints)):
        if times:
            print(
                f"{what}: {len(times):,}; median, p99, p99.9, worst ms: "
                f"{quantiles(times).replace(' |', ',')}."
            )


if __name__ == "__main__":
    main()
