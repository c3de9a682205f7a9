"""Revocation fan-out to many replicas: push (Redis pub/sub, PostgreSQL LISTEN) against poll.

    PYTHONPATH=src .venv/bin/python bench/revocation_fanout.py                # ~6 min, 2 cores
    PYTHONPATH=src .venv/bin/python bench/revocation_fanout.py --quick        # < 1 min
    PYTHONPATH=src .venv/bin/python bench/revocation_fanout.py --replicas 100 \\
        --bursts 1,100,10000 --backend redis,postgres --output bench/RESULTS-revocation-fanout.md

Method. A fresh Redis and a fresh PostgreSQL (`tests/servers.py`, loopback, PostgreSQL
restarted with `max_connections=500`: after its first poll a replica holds 3 connections,
its LISTEN and 2 in its revocation pool, so 100 replicas hold 300). `--replicas` replicas
(default 100), each a `ClientSide(keys, store=URL)` exactly as an app builds it, so each
has its own `RevocationList`, its own async revocation store and, with push on, its own
listener connection (`mode.listen(asynchronous=True)`: the task the async drivers start on
the first request). They are spread over `--workers` processes (default 4; asyncio tasks
inside each), all started, synced once (as a first request does) and, with push on,
subscribed before anything is measured.

For each burst size, a separate process issues the burst through the store's own `revoke`
(`revocations_for(URL)`, one connection, one revocation after the other) and takes the
acknowledgement time of each (`time.monotonic()` after `revoke` returned: CLOCK_MONOTONIC,
one clock for every process of the machine). Every worker checks each of its replicas'
lists every millisecond with `RevocationList.check` (the call `ClientSide.open` makes on a
token that verified), in issue order, and takes the time it first refuses each revoked
sid. Figures: refusal time minus acknowledgement time, over every (replica, revocation)
pair, and per revocation the slowest replica ("every replica refuses"). A negative figure
is a replica that refused before the issuer read its acknowledgement (the push left the
server first). The check's 1 ms period is the resolution.

Modes:

- push: listeners on, no poll during the measurement (as with a long `staleness`), so each
  refusal is the push's doing; a replica that missed a message would never refuse, and is
  counted as missed once no replica refused anything new for `--timeout` seconds.
- poll: listeners never started (push off: `listen` is never called, so nothing is
  subscribed and no message reaches the replica), and each replica polls as the drivers do
  for a busy replica: whenever `ClientSide.poll_due` says its copy is `--staleness` old,
  `changes(cursor)` then `ClientSide.polled`, checked every millisecond.

On the wire: TCP payload bytes of the replicas' connections to the server (`ss -ti`:
bytes_received and bytes_sent of each established socket of the worker processes, before
and after), entries delivered to the listeners (a second callback on each replica's
listener counts them), and on the server: Redis commandstats (calls of PUBLISH and
ZRANGEBYSCORE); PostgreSQL `pg_stat_database.xact_commit`. The poll's cost at rest is the
same counters over `--idle` seconds with no revocation written.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import multiprocessing.connection
import os
import platform
import random
import secrets
import subprocess
import sys
import time
from array import array
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "tests"))

KEY = b"K" * 32
TICK = 0.001  # seconds between two checks of every replica's list
PG_MAX_CONNECTIONS = 500


# -- worker processes: the replicas ---------------------------------------------------------


class Replicas:
    """One worker's replicas and what it counts."""

    def __init__(self, url: str, count: int, push: bool, staleness: float) -> None:
        from coatcheck import ClientSide, KeyRing

        self.push = push
        self.modes = [
            ClientSide(KeyRing([KEY]), store=url, staleness=staleness) for _ in range(count)
        ]
        self.delivered = 0
        self.polls = 0
        self.failed = 0  # polls that raised StoreError (timeouts, mostly)
        # Poll mode: each replica's first sync at a random moment of the first `staleness`
        # seconds, so that their polls are spread as real replicas' are, not in step.
        start = time.monotonic()
        self._not_before = [start + random.uniform(0, staleness) for _ in self.modes]
        self._inflight: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def _count(self, entry: object) -> None:
        self.delivered += 1

    async def start(self) -> None:
        deadline = time.monotonic() + 120
        if not self.push:
            while not all(m.revocation_list.synced_at > 0 for m in self.modes):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"replicas not synced within 120 s ({self.failed} failed)")
                await asyncio.sleep(0.01)  # `ticking` syncs each at its moment
            return
        for mode in self.modes:
            await self._poll(mode)  # the first request's sync
            mode.listen(asynchronous=True)
            store: Any = mode.async_revocations
            store.listen(self._count)
        while not all(self._listening(m) for m in self.modes):
            if time.monotonic() > deadline:
                raise RuntimeError("listeners did not subscribe within 120 s")
            await asyncio.sleep(0.01)

    @staticmethod
    def _listening(mode: Any) -> bool:
        return bool(mode.async_revocations.listening.is_set())

    async def _poll(self, mode: Any) -> None:
        """What the async drivers do before opening a session (`drivers._polling`)."""
        from coatcheck.exceptions import StoreError

        now = time.time()
        try:
            if not mode.poll_due(now):
                return  # fresh, or backing off after a failure (serving its copy)
        except StoreError:
            return  # backing off, and past max_staleness: a request would get 503
        cursor = mode.revocation_list.cursor
        try:
            result = await mode.async_revocations.changes(cursor)
        except StoreError as exc:
            result = exc
            self.failed += 1
        self.polls += 1
        try:
            mode.polled(now, result, force=False)
        except StoreError:
            pass  # past max_staleness: a request would get 503; the next tick retries

    def tick(self) -> None:
        """Poll every replica whose copy is due (poll mode), without waiting for it."""
        if self.push:
            return
        now, clock = time.time(), time.monotonic()
        for index, mode in enumerate(self.modes):
            if (
                index not in self._inflight
                and clock >= self._not_before[index]
                and mode.revocation_list.due(now, mode.staleness)
            ):
                self._inflight.add(index)
                task = asyncio.get_running_loop().create_task(self._polled(index))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _polled(self, index: int) -> None:
        try:
            await self._poll(self.modes[index])
        finally:
            self._inflight.discard(index)

    async def ticking(self) -> None:
        """A busy replica's requests: one every `TICK`, each polling when its copy is due."""
        while True:
            self.tick()
            await asyncio.sleep(TICK)

    async def idle(self, seconds: float) -> dict[str, Any]:
        before = self._counters()
        await asyncio.sleep(seconds)
        return self._since(before)

    async def watch(self, sids: Sequence[str], timeout: float) -> dict[str, Any]:
        """Check every list every `TICK` until each refuses every sid (in issue order)."""
        from coatcheck.revocation import REVOKED

        before = self._counters()
        n = len(sids)
        times = [array("d", [math.nan]) * n for _ in self.modes]
        nexts = [0] * len(self.modes)
        waiting = len(self.modes)
        deadline = time.monotonic() + timeout
        while waiting and time.monotonic() < deadline:
            now, seen = time.time(), time.monotonic()
            for r, mode in enumerate(self.modes):
                i = nexts[r]
                if i == n:
                    continue
                check, got = mode.revocation_list.check, times[r]
                while i < n and check(sids[i], None, now, 0, now) == REVOKED:
                    got[i] = seen
                    i += 1
                if i != nexts[r]:
                    deadline = time.monotonic() + timeout  # progress: wait on
                nexts[r] = i
                if i == n:
                    waiting -= 1
            await asyncio.sleep(TICK)
        result = self._since(before)
        result["times"] = [t.tobytes() for t in times]
        return result

    def _counters(self) -> tuple[float, int, int, int]:
        return time.monotonic(), self.delivered, self.polls, self.failed

    def _since(self, before: tuple[float, int, int, int]) -> dict[str, Any]:
        now = self._counters()
        return {
            "seconds": now[0] - before[0],
            "delivered": now[1] - before[1],
            "polls": now[2] - before[2],
            "failed": now[3] - before[3],
        }

    async def close(self) -> None:
        for mode in self.modes:
            await mode.aclose()


def worker(conn: multiprocessing.connection.Connection, url: str, count: int, push: bool,
           staleness: float) -> None:  # fmt: skip
    """A worker process: build its replicas, then obey the coordinator's commands."""

    async def serve() -> None:
        replicas = Replicas(url, count, push, staleness)
        loop = asyncio.get_running_loop()
        ticker = loop.create_task(replicas.ticking())
        await replicas.start()
        conn.send("ready")
        while True:
            command, argument = await loop.run_in_executor(None, conn.recv)
            if command == "watch":
                sids, timeout = argument
                conn.send("watching")
                conn.send(await replicas.watch(sids, timeout))
            elif command == "idle":
                conn.send(await replicas.idle(argument))
            else:
                ticker.cancel()
                await replicas.close()
                conn.send("closed")
                return

    asyncio.run(serve())


def issuer(conn: multiprocessing.connection.Connection, url: str) -> None:
    """The process that revokes: `revocations_for(url).revoke`, one after the other."""
    from coatcheck.exceptions import StoreError
    from coatcheck.revocation import Revocation
    from coatcheck.stores import revocations_for

    store = revocations_for(url)
    store.changes(2**62)  # connect (and create PostgreSQL's table) before measuring
    conn.send("ready")
    while True:
        sids = conn.recv()
        if sids is None:
            store.close()
            return
        calls, acks = array("d"), array("d")
        errors = 0
        started = time.monotonic()
        for sid in sids:
            now = time.time()
            entry = Revocation("sid", sid, now, now + 3600)
            calls.append(time.monotonic())
            for attempt in range(20):
                try:
                    store.revoke(entry)  # (a retry of one that did land is merged away)
                    break
                except StoreError:
                    errors += 1  # a reply slower than the store's timeout: retry, as an admin would
                    if attempt == 19:
                        raise
            acks.append(time.monotonic())
        conn.send(
            {
                "calls": calls.tobytes(),
                "acks": acks.tobytes(),
                "seconds": time.monotonic() - started,
                "errors": errors,
            }
        )


# -- the coordinator -------------------------------------------------------------------------


@dataclass
class Server:
    backend: str
    url: str
    port: int
    version: str
    stats: Any  # () -> dict of server-side counters
    reset: Any  # () -> None: drop every revocation


@dataclass
class Run:
    backend: str
    mode: str
    burst: int
    replicas: int
    issue_seconds: float
    issue_errors: int
    pair: list[float]  # ms, every (replica, revocation)
    every: list[float]  # ms, per revocation: its slowest replica
    every_call: list[float]  # ms, the same from the issuer's call of `revoke`
    missed: int
    delivered: int
    read: int
    written: int
    polls: int
    failed: int
    seconds: float
    server: dict[str, float]
    issuer_bytes: int


@dataclass
class Idle:
    backend: str
    replicas: int
    seconds: float
    polls: int
    read: int
    written: int
    server: dict[str, float]


@dataclass
class FirstSync:
    backend: str
    entries: int
    best: float  # ms
    median: float  # ms


@dataclass
class Results:
    runs: list[Run] = field(default_factory=list)
    idle: list[Idle] = field(default_factory=list)
    first: list[FirstSync] = field(default_factory=list)
    setup: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)


def wire(port: int, pids: Sequence[int]) -> tuple[int, int]:
    """TCP payload bytes received and sent, since they were opened, by the connections of
    processes `pids` to the server on `port` (`ss -ti`: bytes_received, bytes_sent)."""
    lines = subprocess.run(
        ["ss", "-tinpH", "state", "established", "dport", "=", f":{port}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    received = sent = 0
    wanted = {f"pid={pid}," for pid in pids}
    for head, info in zip(lines[::2], lines[1::2], strict=True):
        if any(pid in head for pid in wanted):
            counters = dict(f.split(":", 1) for f in info.split() if f.startswith("bytes_"))
            received += int(counters.get("bytes_received", 0))
            sent += int(counters.get("bytes_sent", 0))
    return received, sent


def redis_stats(url: str) -> Any:
    import redis

    client = redis.Redis.from_url(url)

    def stats() -> dict[str, float]:
        info = client.info("commandstats")
        return {
            "publish": info.get("cmdstat_publish", {}).get("calls", 0),
            "zrangebyscore": info.get("cmdstat_zrangebyscore", {}).get("calls", 0),
        }

    def reset() -> None:
        client.flushall()

    return stats, reset


def postgres_stats(url: str) -> Any:
    import psycopg

    conn = psycopg.connect(url, autocommit=True)

    def stats() -> dict[str, float]:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        assert row is not None
        return {"xact_commit": row[0]}

    def reset() -> None:
        conn.execute("DROP TABLE IF EXISTS coatcheck_revocations")

    return stats, reset


@contextmanager
def servers(backends: Sequence[str]) -> Iterator[list[Server]]:
    from contextlib import ExitStack

    from servers import running_postgres, running_redis

    with ExitStack() as stack:
        found = []
        for backend in backends:
            if backend == "redis":
                redis_server = stack.enter_context(running_redis())
                version = subprocess.run(
                    ["redis-server", "--version"], capture_output=True, text=True, check=True
                ).stdout.split()[2]
                hooks = redis_stats(redis_server.url)
                found.append(Server("redis", redis_server.url, redis_server.port, version, *hooks))
            else:
                pg = stack.enter_context(running_postgres())
                restart_postgres(pg)
                import psycopg

                with psycopg.connect(pg.url) as conn:
                    row = conn.execute("SHOW server_version").fetchone()
                version = f"PostgreSQL {row[0] if row else '?'}"
                hooks = postgres_stats(pg.url)
                found.append(Server("postgres", pg.url, pg.port, version, *hooks))
        yield found


def restart_postgres(pg: Any) -> None:
    """tests/servers.py starts PostgreSQL with max_connections=100: 100 replicas need 100
    LISTEN connections and 200 pooled ones, so restart it with more."""
    pg.stop()
    options = (
        f"-p {pg.port} -k {pg.directory} -c listen_addresses=127.0.0.1 "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
        f"-c max_connections={PG_MAX_CONNECTIONS} -c shared_buffers=32MB"
    )
    log = str(pg.directory / "postgres.log")
    pg._run(pg.pg_ctl, "-D", str(pg.data), "-o", options, "-l", log, "-w", "-t", "60", "start")
    pg.running = True


class Fleet(AbstractContextManager["Fleet"]):
    """The worker processes holding the replicas, and the issuer process."""

    def __init__(self, url: str, replicas: int, workers: int, push: bool, staleness: float) -> None:
        context = multiprocessing.get_context("spawn")
        self.conns: list[multiprocessing.connection.Connection] = []
        self.processes: list[Any] = []
        counts = [replicas // workers + (i < replicas % workers) for i in range(workers)]
        started = time.monotonic()
        for count in counts:
            ours, theirs = context.Pipe()
            process = context.Process(target=worker, args=(theirs, url, count, push, staleness))
            process.start()
            self.conns.append(ours)
            self.processes.append(process)
        ours, theirs = context.Pipe()
        self.issuer = context.Process(target=issuer, args=(theirs, url))
        self.issuer.start()
        self.to_issuer = ours
        for conn in [*self.conns, self.to_issuer]:
            if not conn.poll(120):
                raise RuntimeError("a worker did not start within 120 s")
            assert conn.recv() == "ready"
        self.setup_seconds = time.monotonic() - started
        self.pids = [p.pid for p in self.processes]

    def __exit__(self, *exc: object) -> None:
        for conn in self.conns:
            conn.send(("close", None))
        for conn in self.conns:
            if conn.poll(30):
                conn.recv()
        self.to_issuer.send(None)
        for process in [*self.processes, self.issuer]:
            process.join(30)
            if process.is_alive():
                process.kill()


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def burst(fleet: Fleet, server: Server, mode: str, size: int, timeout: float) -> Run:
    sids = [secrets.token_urlsafe(16) for _ in range(size)]
    before = server.stats()
    wire_before = wire(server.port, fleet.pids)
    issuer_before = wire(server.port, [fleet.issuer.pid])
    for conn in fleet.conns:
        conn.send(("watch", (sids, timeout)))
    for conn in fleet.conns:
        assert conn.recv() == "watching"
    fleet.to_issuer.send(sids)
    if not fleet.to_issuer.poll(timeout + size * 0.1):
        raise RuntimeError(f"the issuer did not finish a burst of {size}")
    issued = fleet.to_issuer.recv()
    results = [conn.recv() for conn in fleet.conns]
    after = server.stats()
    wire_after = wire(server.port, fleet.pids)
    issuer_after = wire(server.port, [fleet.issuer.pid])
    acks, calls = array("d"), array("d")
    acks.frombytes(issued["acks"])
    calls.frombytes(issued["calls"])
    pair: list[float] = []
    slowest = [-math.inf] * size
    last = [-math.inf] * size
    missed = 0
    replicas = 0
    for result in results:
        for raw in result["times"]:
            replicas += 1
            got = array("d")
            got.frombytes(raw)
            for i, seen in enumerate(got):
                if math.isnan(seen):
                    missed += 1
                    slowest[i] = math.inf
                    continue
                delay = (seen - acks[i]) * 1000
                pair.append(delay)
                slowest[i] = max(slowest[i], delay)
                last[i] = max(last[i], seen)
    return Run(
        backend=server.backend,
        mode=mode,
        burst=size,
        replicas=replicas,
        issue_seconds=issued["seconds"],
        issue_errors=issued["errors"],
        pair=pair,
        every=[s for s in slowest if math.isfinite(s)],
        every_call=[(t - c) * 1000 for t, c in zip(last, calls, strict=True) if math.isfinite(t)],
        missed=missed,
        delivered=sum(r["delivered"] for r in results),
        read=wire_after[0] - wire_before[0],
        written=wire_after[1] - wire_before[1],
        polls=sum(r["polls"] for r in results),
        failed=sum(r["failed"] for r in results),
        seconds=max(r["seconds"] for r in results),
        server={k: after[k] - before[k] for k in after},
        issuer_bytes=sum(issuer_after) - sum(issuer_before),
    )


def idle(fleet: Fleet, server: Server, seconds: float, replicas: int) -> Idle:
    before = server.stats()
    wire_before = wire(server.port, fleet.pids)
    for conn in fleet.conns:
        conn.send(("idle", seconds))
    results = [conn.recv() for conn in fleet.conns]
    after = server.stats()
    wire_after = wire(server.port, fleet.pids)
    return Idle(
        backend=server.backend,
        replicas=replicas,
        seconds=max(r["seconds"] for r in results),
        polls=sum(r["polls"] for r in results),
        read=wire_after[0] - wire_before[0],
        written=wire_after[1] - wire_before[1],
        server={k: after[k] - before[k] for k in after},
    )


def first_sync(server: Server) -> FirstSync:
    """A replica that starts now: its first poll reads the whole live log from cursor 0,
    page by page (`CHANGES_PAGE`), as the driver does."""
    from coatcheck.revocation import more_after
    from coatcheck.stores import revocations_for

    store = revocations_for(server.url)
    times, entries = [], 0
    try:
        for _ in range(5):
            started = time.perf_counter()
            entries, cursor, more = 0, 0, True
            while more:
                page, cursor = store.changes(cursor)
                entries, more = entries + len(page), more_after(page)
            times.append((time.perf_counter() - started) * 1000)
    finally:
        store.close()
    return FirstSync(server.backend, entries, min(times), percentile(times, 0.5))


def measure(args: argparse.Namespace, results: Results, loads: list[float]) -> None:
    with servers(args.backend) as found:
        for server in found:
            results.versions[server.backend] = server.version
            for mode in ("push", "poll"):
                push = mode == "push"
                staleness = 3600.0 if push else args.staleness
                label = f"{server.backend} {mode}"
                print(f"{label}: starting {args.replicas} replicas", file=sys.stderr)
                server.reset()  # each fleet starts on an empty log (see the report)
                with Fleet(server.url, args.replicas, args.workers, push, staleness) as fleet:
                    results.setup[label] = fleet.setup_seconds
                    if not push:
                        results.idle.append(idle(fleet, server, args.idle, args.replicas))
                    else:
                        results.first.append(first_sync(server))
                    for size in args.bursts:
                        run = burst(fleet, server, mode, size, args.timeout)
                        results.runs.append(run)
                        loads.append(os.getloadavg()[0])
                        print(
                            f"  burst {size}: every replica p50 {percentile(run.every, 0.5):.1f} "
                            f"ms, max {max(run.every, default=math.nan):.1f} ms, missed "
                            f"{run.missed}, load {loads[-1]:.2f}",
                            file=sys.stderr,
                        )
                    if push:
                        results.first.append(first_sync(server))


# -- the report ------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


def _size(value: float) -> str:
    return f"{value:,.0f}"


def report(args: argparse.Namespace, results: Results, loads: list[float], started: float) -> str:
    out = ["# Revocation fan-out: push against poll, at "
           f"{args.replicas} replicas\n"]  # fmt: skip
    out.append(
        "Time from a revocation's acknowledgement (the issuer's `revoke` returned) until a "
        "replica's list refuses it, in ms: over every (replica, revocation) pair, and per "
        "revocation until **every** replica refuses it. Checked every 1 ms (the "
        "resolution); negative: refused before the issuer read its reply. `every max "
        "(call)`: the same slowest replica, counted from the issuer's call of `revoke`. "
        "`missed`: (replica, revocation) pairs not refused when no replica had refused "
        "anything new for `--timeout` seconds.\n"
    )
    out.append(
        "| backend | mode | burst | issue time (s, retries) | pair p50 | pair p99 | pair max "
        "| every p50 | every p99 | every max | every max (call) | missed |"
    )
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for run in results.runs:
        out.append(
            f"| {run.backend} | {run.mode} | {run.burst:,} "
            f"| {run.issue_seconds:.2f} ({run.issue_errors}) "
            f"| {_ms(percentile(run.pair, 0.5))} | {_ms(percentile(run.pair, 0.99))} "
            f"| {_ms(max(run.pair, default=math.nan))} | {_ms(percentile(run.every, 0.5))} "
            f"| {_ms(percentile(run.every, 0.99))} | {_ms(max(run.every, default=math.nan))} "
            f"| {_ms(max(run.every_call, default=math.nan))} | {run.missed} |"
        )
    out.append("\n## On the wire, per revocation\n")
    out.append(
        "Over the burst's window (first call to last refusal), divided by the burst's "
        "revocations: entries the listeners delivered (all replicas; a second callback on "
        "each listener counts them), TCP payload bytes the replicas' connections to the "
        "server received and sent (`ss -ti` bytes_received / bytes_sent, all replicas; per "
        "replica in brackets), polls made, and the server's own counters (Redis "
        "commandstats: PUBLISH calls, ZRANGEBYSCORE calls, which count the polls and one "
        "expiry trim inside every `revoke`; PostgreSQL: committed transactions in "
        "pg_stat_database). In poll mode the window also holds the polls that found "
        "nothing, so a burst of 1 carries a whole poll period. Failed polls: polls that "
        "raised `StoreUnavailable` (a reply slower than the store's timeout), in all; the "
        "replica then backs off for `staleness` as the drivers do. Issuer bytes: the "
        "issuing connection's request and reply, sent + received. Each fleet (backend, "
        "mode) started on an empty log (Redis FLUSHALL, PostgreSQL table dropped).\n"
    )
    out.append(
        "| backend | mode | burst | delivered | replicas received (per replica) | replicas sent "
        "| polls | failed polls | server | issuer bytes |"
    )
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---|---:|")
    for run in results.runs:
        n, r = run.burst, max(run.replicas, 1)
        server = ", ".join(f"{k} {v / n:,.1f}" for k, v in run.server.items())
        out.append(
            f"| {run.backend} | {run.mode} | {n:,} | {run.delivered / n:,.1f} "
            f"| {_size(run.read / n)} ({_size(run.read / n / r)}) | {_size(run.written / n)} "
            f"| {run.polls / n:,.2f} | {run.failed} | {server} | {_size(run.issuer_bytes / n)} |"
        )
    out.append(f"\n## The poll at rest ({args.staleness:g} s staleness, no revocation written)\n")
    out.append("| backend | replicas | seconds | polls/s per replica | bytes/s per replica "
               "(received + sent) | server, per s |")  # fmt: skip
    out.append("|---|---:|---:|---:|---:|---|")
    for rest in results.idle:
        per = rest.seconds * rest.replicas
        server = ", ".join(f"{k} {v / rest.seconds:,.1f}" for k, v in rest.server.items())
        out.append(
            f"| {rest.backend} | {rest.replicas} | {rest.seconds:.1f} | {rest.polls / per:.2f} "
            f"| {_size((rest.read + rest.written) / per)} | {server} |"
        )
    out.append(
        "\n## A new replica's first sync\n\nThe `changes` calls from cursor 0 through the sync "
        "store, as a replica's first request makes them: every live entry, a page "
        "(`CHANGES_PAGE`) a call (5 tries, fleet running). Before the bursts, and after them.\n"
    )
    out.append("| backend | live entries | best (ms) | median (ms) |")
    out.append("|---|---:|---:|---:|")
    for first in results.first:
        out.append(
            f"| {first.backend} | {first.entries:,} | {first.best:.1f} | {first.median:.1f} |"
        )
    out.append("\n## Conditions\n")
    setup = ", ".join(f"{k} {v:.1f} s" for k, v in results.setup.items())
    out.append(
        f"- Command: `{' '.join(['bench/revocation_fanout.py', *sys.argv[1:]])}`; "
        f"{args.replicas} replicas in {args.workers} worker processes (asyncio), "
        f"bursts {', '.join(map(str, args.bursts))}, poll staleness {args.staleness:g} s, "
        f"timeout {args.timeout:g} s; {time.monotonic() - started:.0f} s in all. "
        f"Start-up (replicas built, synced, subscribed): {setup}."
    )
    out.append(
        f"- Machine: {platform.machine()}, {os.cpu_count()} cores, Linux "
        f"{platform.release()}, Python {platform.python_version()}; "
        + "; ".join(f"{k} {v}" for k, v in results.versions.items())
        + ". Servers, workers and issuer on the same machine, over loopback."
    )
    out.append(
        f"- Load average (1 min): {loads[0]:.2f} before, {loads[-1]:.2f} after, "
        f"{min(loads):.2f}-{max(loads):.2f} during. The machine was shared with other "
        "benchmarks running at the same time: latencies include their CPU contention."
    )
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=100)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--bursts", default="1,100,10000")
    parser.add_argument("--backend", default="redis,postgres")
    parser.add_argument("--staleness", type=float, default=1.0, help="poll mode, seconds")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of poll at rest")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds without a new refusal: missed"
    )
    parser.add_argument("--quick", action="store_true", help="20 replicas, bursts 1,100")
    parser.add_argument("--output", help="also write the report to this file")
    args = parser.parse_args()
    if args.quick:
        args.replicas, args.workers, args.bursts, args.idle, args.timeout = 20, 2, "1,100", 2, 20
    args.bursts = [int(b) for b in args.bursts.split(",")]
    args.backend = args.backend.split(",")
    started = time.monotonic()
    loads = [os.getloadavg()[0]]
    results = Results()
    measure(args, results, loads)
    loads.append(os.getloadavg()[0])
    text = report(args, results, loads, started)
    print(text)
    if args.output:
        Path(args.output).write_text(text)


if __name__ == "__main__":
    main()
