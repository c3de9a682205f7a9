"""The performance table: coatcheck's per-request overhead against each peer, in instructions
(valgrind) and in CPU time, for every workload, coatcheck configuration and scenario.

Rows (`--rows`; each compares coatcheck with the peer it replaces, in one framework):

  asgi-memory      ASGI    ServerSide(MemoryStore())               starsessions 2 InMemoryStore
  asgi-sqlite      ASGI    ServerSide(SQLiteStore(<temp file>))    starsessions 2 InMemoryStore
  asgi-redis       ASGI    ServerSide("redis://...")               starsessions 2 RedisStore
  asgi-client      ASGI    ClientSide(keys, store=None), JWS       Starlette SessionMiddleware
  asgi-client-reg  ASGI    ClientSide(keys, store="memory://")     Starlette SessionMiddleware
  flask-redis      Flask   SessionInterface, ServerSide("redis://...")  Flask-Session, redis
  django-locmem    Django  engine on COATCHECK store sqlite:///file     cache engine, LocMemCache
  django-signed    Django  engine on COATCHECK store sqlite:///file     signed_cookies engine

The apps are built in `bench/peers.py`: ASGI ones are one Starlette app (routes as in
`asgi_overhead.py`) behind the middleware under test, run by `await app(scope, receive,
send)` on a private event loop (`loop.run_until_complete`, one task per request); Flask
and Django apps run by `app(environ, start_response)`. No sockets but Redis's, which is a
throw-away `redis-server` on a loopback port (`tests/servers.py`).

Scenarios (`--scenarios`; all GET with the browser-like headers of `asgi_instructions.py`):

  write     cookie present, the view sets one key to a new value ("read+write")
  read      cookie present, the view reads the 5 seeded keys, changes nothing
  new       no cookie, the view sets one key: a new visitor
  no-touch  cookie present, the view never touches the session (what lazy loading saves)

Every implementation is driven as a browser drives it: a `CookieJar` keeps the latest value
of each cookie that responses set (and drops those they expire) and sends them back with
the next request, with an unrelated `_ga` cookie. A session is seeded first (one request
that sets 5 keys); `new` starts every request from an empty jar. Before measuring, each
scenario is checked (one request each, then a request that reads the session back): `read`
and `no-touch` must write nothing to coatcheck's store and set no cookie, the jar's cookie
must still open the seeded session, `write` must land, and `new` must get a Set-Cookie from
every implementation whose cookie then opens the new session. Any failure stops the run.

Overhead = implementation - the bare app of the same framework, same scenario (the bare
app's views use a plain dict). The browser's own work (building the request, parsing
Set-Cookie, the jar) is never counted: only the app call is timed or counted.

1. Instructions per request, `valgrind --tool=callgrind`, deterministic: one valgrind
   process (PYTHONHASHSEED=0) imports the frameworks, then forks a process per
   implementation (`--jobs` at a time), which builds the app, seeds a session, warms each
   scenario up (`--valgrind-warmup` requests), then serves `--valgrind-requests` requests
   of each scenario. Each scenario's app calls go through its own C function of
   `itertools` (`next(filterfalse(call, (request,)))`, `dropwhile`, `takewhile`,
   `starmap`: called by `next()` once per request and by nothing else, which the call
   counts check), so the inclusive cost callgrind records for those calls is exactly the
   scenario's app calls. Only this process is counted: Redis's server-side work is not
   (its client's is).
2. CPU time per request, in this process: `--rounds` interleaved rounds; each runs a
   batch of `--requests` requests of every (implementation, scenario) in a shuffled order.
   A request's CPU time is this thread's (`time.thread_time()`) around the app call, plus
   the CPU time other threads of the process used during the batch (`process_time()` minus
   `thread_time()`, spread over its requests: no built-in store hands work to a thread on
   these paths, see `coatcheck.stores.sqlite.AsyncSQLiteStore`, and the table shows that
   share stays ~0). Overhead per round = the batch mean minus the bare app's batch mean in
   the same round; tables show the median over rounds. Waiting for Redis is not CPU time.

In both, the garbage collector stays on, but the objects built during set-up are frozen
(`gc.freeze()`) and each batch starts after a collection, so that no full collection of
the frameworks' objects lands in one batch.

    .venv/bin/python bench/table.py                     # everything (~11 min on 2 cores)
    .venv/bin/python bench/table.py --quick             # smoke run of every row (~2 min)
    .venv/bin/python bench/table.py --quick --no-instructions --rows asgi-memory  # seconds
    .venv/bin/python bench/table.py --rows asgi-memory asgi-sqlite --scenarios read write
    .venv/bin/python bench/table.py --json results.json
    PYTHONPATH=/other/src .venv/bin/python bench/table.py   # measure another source tree

Needs `valgrind` (unless `--no-instructions`) and `redis-server` (for the Redis rows), and a
Python whose binary has symbols (callgrind must name `itertools`' C functions).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import hashlib
import importlib.util
import inspect
import itertools
import json
import os
import platform
import random
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import peers
from peers import BARE, IMPLS, PATHS, SCENARIOS, SEED, CookieJar, Target, Visitor

HERE = Path(__file__).resolve().parent
TARGET_RATIO = 0.80  # the target: coatcheck's overhead at most 0.8 of the peer's


@dataclass(frozen=True)
class Row:
    id: str
    workload: str
    coatcheck: str  # implementation ids (peers.IMPLS)
    peer: str
    coatcheck_text: str
    peer_text: str


ROWS = (
    Row(
        "asgi-memory",
        "ASGI",
        "coatcheck-asgi-memory",
        "starsessions-memory",
        "`ServerSide(MemoryStore())`",
        "starsessions `InMemoryStore`",
    ),
    Row(
        "asgi-sqlite",
        "ASGI",
        "coatcheck-asgi-sqlite",
        "starsessions-memory",
        "`ServerSide(SQLiteStore(file))`",
        "starsessions `InMemoryStore`",
    ),
    Row(
        "asgi-redis",
        "ASGI",
        "coatcheck-asgi-redis",
        "starsessions-redis",
        '`ServerSide("redis://...")`',
        "starsessions `RedisStore`",
    ),
    Row(
        "asgi-client",
        "ASGI",
        "coatcheck-asgi-client",
        "starlette-cookie",
        "`ClientSide(keys, store=None)` (JWS)",
        "Starlette `SessionMiddleware`",
    ),
    Row(
        "asgi-client-reg",
        "ASGI",
        "coatcheck-asgi-client-reg",
        "starlette-cookie",
        '`ClientSide(keys, store="memory://")`',
        "Starlette `SessionMiddleware`",
    ),
    Row(
        "flask-redis",
        "Flask",
        "coatcheck-flask-redis",
        "flask-session-redis",
        "`SessionInterface`, Redis",
        'Flask-Session `SESSION_TYPE="redis"`',
    ),
    Row(
        "django-locmem",
        "Django",
        "coatcheck-django-sqlite",
        "django-cache-locmem",
        "engine on SQLite",
        "cache engine, `LocMemCache`",
    ),
    Row(
        "django-signed",
        "Django",
        "coatcheck-django-sqlite",
        "django-signed-cookies",
        "engine on SQLite",
        "`signed_cookies` engine",
    ),
)
ROW_IDS = tuple(row.id for row in ROWS)

#: Per scenario: the `itertools` C function each app call of the instruction count goes
#: through, and how to call `call(request)` through it exactly once.
TRAMPOLINES: dict[str, tuple[str, Callable[[Callable[[Any], None], Any], Any]]] = {
    "write": ("filterfalse_next", lambda f, r: next(itertools.filterfalse(f, (r,)), None)),
    "read": ("dropwhile_next", lambda f, r: next(itertools.dropwhile(f, (r,)), None)),
    "new": ("takewhile_next", lambda f, r: next(itertools.takewhile(f, (r,)), None)),
    "no-touch": ("starmap_next", lambda f, r: next(itertools.starmap(f, ((r,),)), None)),
}


def impls_of(rows: list[Row]) -> list[str]:
    """The implementations `rows` need, their frameworks' bare apps included, in
    `peers.IMPLS` order."""
    wanted = {BARE[IMPLS[name].framework] for row in rows for name in (row.coatcheck, row.peer)}
    wanted |= {name for row in rows for name in (row.coatcheck, row.peer)}
    return [name for name in IMPLS if name in wanted]


# -- set-up and checks ---------------------------------------------------------------------------


class CheckFailed(Exception):
    """A scenario does not do what it claims (or a request failed): the run stops."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def seed(target: Target) -> CookieJar:
    """Seed a session (one request that sets the 5 keys); returns the browser's jar."""
    visitor = Visitor(CookieJar())
    peers.request(target, PATHS["seed"], visitor)
    if not target.impl.startswith("bare") and not visitor.jar.cookies:
        raise CheckFailed(f"{target.impl}: seeding the session set no cookie")
    return visitor.jar


def visitors(jar: CookieJar, scenarios: tuple[str, ...]) -> dict[str, Visitor]:
    return {s: Visitor(None if s == "new" else jar.copy()) for s in scenarios}


@dataclass
class StoreCalls:
    loads: int = 0
    writes: int = 0  # save, rotate, delete, delete_user


COUNTED = ("load", "save", "rotate", "delete", "delete_user")
#: Where a mode keeps its stores (`ServerSide`, `ClientSide`), for `counting`'s stand-in.
MODE_STORE_ATTRIBUTES = ("_async", "_sync", "_async_store", "_store")


@contextmanager
def counting(store: Any, mode: Any = None) -> Iterator[StoreCalls]:
    """Count the calls coatcheck's driver makes to `store` (None: count nothing), the
    store of `mode`. A store of a compiled class takes no instance attributes: the mode
    then holds a counting stand-in for it instead, for the duration."""
    calls = StoreCalls()
    if store is None:
        yield calls
        return
    try:
        for name in COUNTED:
            setattr(store, name, _counted(getattr(store, name), name, calls))
    except AttributeError:  # a compiled store (mypyc: no instance __dict__)
        swapped = [a for a in MODE_STORE_ATTRIBUTES if getattr(mode, a, None) is store]
        if not swapped:
            raise
        for attribute in swapped:
            setattr(mode, attribute, _CountingStore(store, calls))
        try:
            yield calls
        finally:
            for attribute in swapped:
                setattr(mode, attribute, store)
        return
    try:
        yield calls
    finally:
        for name in COUNTED:
            delattr(store, name)  # the class's method again


class _CountingStore:
    """`store`, its calls in `COUNTED` counted."""

    def __init__(self, store: Any, calls: StoreCalls) -> None:
        self._store, self._calls = store, calls

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        return _counted(attribute, name, self._calls) if name in COUNTED else attribute


def _counted(method: Callable[..., Any], name: str, calls: StoreCalls) -> Callable[..., Any]:
    def note() -> None:
        if name == "load":
            calls.loads += 1
        else:
            calls.writes += 1

    if inspect.iscoroutinefunction(method):

        async def counted_async(*args: Any, **kwargs: Any) -> Any:
            note()
            return await method(*args, **kwargs)

        return counted_async

    def counted(*args: Any, **kwargs: Any) -> Any:
        note()
        return method(*args, **kwargs)

    return counted


@dataclass
class Facts:
    """What one request of a scenario did, seen in the checks."""

    set_cookie: bool
    calls: StoreCalls | None  # coatcheck's store calls (None: not coatcheck)


def check(target: Target, scenarios: tuple[str, ...]) -> dict[str, Facts]:
    """Fail loudly unless each scenario does what it claims for `target`."""
    impl = target.impl
    bare = impl.startswith("bare")
    ours = target.manager is not None
    server_side = ours and target.manager.mode.name == "server"
    jar = seed(target)
    facts: dict[str, Facts] = {}
    for scenario, visitor in visitors(jar, scenarios).items():
        peers.state.last_read = ()
        mode = target.manager.mode if ours else None
        with counting(target.store() if ours else None, mode) as calls:
            cookies = peers.request(target, PATHS[scenario], visitor)
        facts[scenario] = Facts(bool(cookies), calls if ours else None)
        where = f"{impl}, {scenario}"
        if bare:
            require(not cookies, f"{where}: the bare app set a cookie")
            continue
        peers.state.probed = {}
        peers.request(target, PATHS["probe"], Visitor(visitor.jar.copy()))
        seen = peers.state.probed
        seeded = all(seen.get(key) == value for key, value in SEED.items())
        if scenario == "read":
            require(peers.state.last_read == tuple(SEED.values()), f"{where}: read {seen}")
        if scenario in ("read", "no-touch"):
            require(seeded, f"{where}: the jar's cookie no longer opens the session: {seen}")
            if ours:
                require(calls.writes == 0, f"{where}: coatcheck wrote {calls.writes}x")
                require(not cookies, f"{where}: coatcheck set a cookie: {cookies}")
        elif scenario == "write":
            landed = seeded and seen.get("counter") == peers.state.written
            require(landed, f"{where}: the write did not land: {seen}")
            if server_side:
                require(calls.writes >= 1, f"{where}: coatcheck wrote nothing to its store")
        elif scenario == "new":
            require(bool(cookies), f"{where}: no Set-Cookie for a new visitor")
            opened = seen.get("visits") == 1 and seen.get("user_id") is None
            require(opened, f"{where}: the new visitor's cookie does not open its session: {seen}")
            if server_side:
                require(calls.writes >= 1, f"{where}: coatcheck stored no new session")
    return facts


# -- CPU time ------------------------------------------------------------------------------------


@dataclass
class CpuTimes:
    """µs per request per round, per implementation and scenario."""

    total: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    other: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # other threads


def cpu_batch(target: Target, path: str, visitor: Visitor, n: int) -> tuple[float, float]:
    """Mean CPU seconds per request over `n` requests: this thread's time in the app
    calls plus other threads' time during the batch; and that other threads' share."""
    make, call, ok, clock = target.make, target.call, target.ok, time.thread_time
    spent = 0.0
    process0, thread0 = time.process_time(), time.thread_time()
    for _ in range(n):
        request = make(path, visitor.cookie())
        start = clock()
        call(request)
        spent += clock() - start
        if not ok():
            raise CheckFailed(f"{target.impl} {path}: status {target.status_text()}")
        visitor.receive(target.set_cookies())
    other = max(0.0, (time.process_time() - process0) - (time.thread_time() - thread0))
    return (spent + other) / n, other / n


def measure_cpu(
    targets: dict[str, Target], scenarios: tuple[str, ...], args: argparse.Namespace
) -> CpuTimes:
    drivers = {name: visitors(seed(t), scenarios) for name, t in targets.items()}
    for name, target in targets.items():
        for scenario in scenarios:
            cpu_batch(target, PATHS[scenario], drivers[name][scenario], args.warmup)
    times = CpuTimes(
        {name: {s: [] for s in scenarios} for name in targets},
        {name: {s: [] for s in scenarios} for name in targets},
    )
    jobs = [(name, s) for name in targets for s in scenarios]
    shuffle = random.Random(args.seed).shuffle
    gc.collect()
    gc.freeze()  # set-up's objects: no full collection of them lands in one batch
    for done in range(args.rounds):
        shuffle(jobs)
        for name, scenario in jobs:
            visitor = drivers[name][scenario]
            gc.collect()  # each batch starts with empty young generations
            mean, other = cpu_batch(targets[name], PATHS[scenario], visitor, args.requests)
            times.total[name][scenario].append(mean * 1e6)
            times.other[name][scenario].append(other * 1e6)
        progress(f"CPU time: round {done + 1}/{args.rounds}")
    return times


# -- instructions --------------------------------------------------------------------------------


def child(args: argparse.Namespace) -> None:
    """Inside valgrind: import every framework once, then fork one process per
    implementation (`--jobs` at a time), each writing its own callgrind file. Prints
    `<implementation> <pid>` when it forks one and `done <implementation>` when it ends."""
    peers.preload({IMPLS[name].framework for name in args.child})
    running: dict[int, str] = {}
    failed = []

    def reap() -> None:
        pid, status = os.wait()
        name = running.pop(pid)
        if status != 0:
            failed.append(name)
        print(f"done {name}", flush=True)

    for name in args.child:
        while len(running) >= args.jobs:
            reap()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                serve_through_trampolines(name, args)
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        running[pid] = name
        print(f"{name} {pid}", flush=True)
    while running:
        reap()
    if failed:
        raise SystemExit(f"failed under valgrind: {', '.join(failed)}")


def serve_through_trampolines(impl: str, args: argparse.Namespace) -> None:
    """Seed, warm up, then serve each scenario's requests through its trampoline."""
    scenarios = tuple(args.scenarios)
    loop = asyncio.new_event_loop()
    with tempfile.TemporaryDirectory(prefix="coatcheck-table-") as tmp:
        target = peers.build(impl, loop=loop, redis_port=args.redis_port, tmp=Path(tmp))
        drivers = visitors(seed(target), scenarios)
        for scenario in scenarios:
            for _ in range(args.valgrind_warmup):
                peers.request(target, PATHS[scenario], drivers[scenario])
        make, call, ok = target.make, target.call, target.ok
        gc.collect()
        gc.freeze()  # set-up's objects: no full collection of them lands in one batch
        for scenario in scenarios:
            path, visitor = PATHS[scenario], drivers[scenario]
            through = TRAMPOLINES[scenario][1]
            gc.collect()  # each batch starts with empty young generations
            for _ in range(args.valgrind_requests):
                request = make(path, visitor.cookie())
                through(call, request)
                if not ok():
                    raise CheckFailed(f"{impl} {path}: status {target.status_text()}")
                visitor.receive(target.set_cookies())
        target.close()
    loop.close()


def callgrind_calls(path: Path, functions: set[str]) -> dict[str, tuple[int, int]]:
    """(calls, inclusive instructions) of the calls that `next()` (C: `builtin_next`) made
    to each of `functions`, from a callgrind file written with uncompressed names and
    positions. (Libraries may iterate these `itertools` objects too, but not by `next()`.)"""
    found = {name: (0, 0) for name in functions}
    caller = callee = arc = None
    calls = 0
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if arc is not None:  # the cost line after `calls=`: "<line> <Ir>"
                count, cost = found[arc]
                found[arc] = (count + calls, cost + int(line.split()[1]))
                arc = None
            elif line.startswith("cfn="):
                callee = line[4:].strip()
            elif line.startswith("fn="):
                caller, callee = line[3:].strip(), None
            elif line.startswith("calls=") and callee in functions and caller == "builtin_next":
                calls, arc = int(line[6:].split()[0]), callee
    return found


def measure_instructions(
    impls: list[str], args: argparse.Namespace, redis_port: int | None
) -> dict[str, dict[str, float]]:
    """Instructions per app call of each (implementation, scenario): one valgrind process
    forks a process per implementation (see `child`); each one's callgrind file gives the
    inclusive cost of its trampolines' calls."""
    scenarios = tuple(args.scenarios)
    # The slowest first (Django, then Flask), so that the lanes end together.
    order = sorted(impls, key=lambda name: ("django", "flask", "asgi").index(IMPLS[name].framework))
    with tempfile.TemporaryDirectory(prefix="coatcheck-callgrind-") as tmpdir:
        tmp = Path(tmpdir)
        command = [
            "valgrind",
            "--tool=callgrind",
            "--compress-strings=no",
            "--compress-pos=no",
            f"--callgrind-out-file={tmp / 'callgrind.%p'}",
            sys.executable,
            str(Path(__file__).resolve()),
            "--jobs",
            str(args.jobs),
            "--scenarios",
            *scenarios,
            "--valgrind-requests",
            str(args.valgrind_requests),
            "--valgrind-warmup",
            str(args.valgrind_warmup),
        ]
        if redis_port is not None:
            command += ["--redis-port", str(redis_port)]
        command += ["--child", *order]
        env = dict(os.environ, PYTHONHASHSEED="0")
        pids: dict[str, int] = {}
        with (tmp / "valgrind.log").open("w+") as log:
            process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=log, text=True, env=env
            )
            assert process.stdout is not None
            done = 0
            for line in process.stdout:
                first, _, second = line.strip().partition(" ")
                if first == "done":
                    done += 1
                    progress(f"instructions: {second} done ({done}/{len(impls)})")
                elif first in IMPLS and second.isdigit():
                    pids[first] = int(second)
            if process.wait() != 0:
                log.seek(0)
                raise SystemExit(f"the valgrind run failed:\n{log.read()[-4000:]}")
        names = {TRAMPOLINES[s][0]: s for s in scenarios}
        results: dict[str, dict[str, float]] = {}
        for impl in impls:
            found = callgrind_calls(tmp / f"callgrind.{pids[impl]}", set(names))
            results[impl] = {}
            for name, (calls, cost) in found.items():
                if calls != args.valgrind_requests:
                    raise SystemExit(
                        f"{impl}: callgrind saw {calls} calls of {name} by next(), expected "
                        f"{args.valgrind_requests}: something else calls it that way (or "
                        "Python has no symbols); the per-scenario counts would be wrong"
                    )
                results[impl][names[name]] = cost / calls
    return results


# -- the report ----------------------------------------------------------------------------------


@dataclass
class Results:
    rows: list[Row]
    impls: list[str]
    scenarios: tuple[str, ...]
    facts: dict[str, dict[str, Facts]]
    instructions: dict[str, dict[str, float]] | None  # absolute, per app call
    cpu: CpuTimes | None
    sources: list[tuple[str, str]]  # (moment, coatcheck's source fingerprint)

    def instr_overhead(self, impl: str, scenario: str) -> float | None:
        if self.instructions is None:
            return None
        bare = BARE[IMPLS[impl].framework]
        return self.instructions[impl][scenario] - self.instructions[bare][scenario]

    def cpu_overheads(self, impl: str, scenario: str) -> list[float] | None:
        if self.cpu is None:
            return None
        bare = self.cpu.total[BARE[IMPLS[impl].framework]][scenario]
        return [t - b for t, b in zip(self.cpu.total[impl][scenario], bare, strict=True)]

    def cpu_overhead(self, impl: str, scenario: str) -> float | None:
        values = self.cpu_overheads(impl, scenario)
        return None if values is None else statistics.median(values)

    def ratio(self, row: Row, scenario: str, measure: str) -> float | None:
        get = self.instr_overhead if measure == "instructions" else self.cpu_overhead
        ours, theirs = get(row.coatcheck, scenario), get(row.peer, scenario)
        if ours is None or theirs is None or theirs <= 0:
            return None
        return ours / theirs


def _fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def ratio_table(results: Results) -> list[str]:
    measures = [
        m
        for m, have in (("instructions", results.instructions), ("cpu", results.cpu))
        if have is not None
    ]
    what = " / ".join(
        {"instructions": "instructions ratio", "cpu": "CPU-time ratio"}[m] for m in measures
    )
    lines = [
        f"Cells: coatcheck's overhead / the peer's overhead, {what}; below 1 coatcheck is "
        f"cheaper. **Bold** (and ✓): every measure ≤ {TARGET_RATIO:.2f}, the target. Overhead "
        "= implementation - the bare app of the same framework, same scenario.",
        "",
        "| workload | coatcheck | peer | " + " | ".join(results.scenarios) + " |",
        "|---|---|---|" + "---:|" * len(results.scenarios),
    ]
    for row in results.rows:
        cells = []
        for scenario in results.scenarios:
            values = [results.ratio(row, scenario, m) for m in measures]
            text = " / ".join(_fmt_ratio(v) for v in values)
            met = all(v is not None and v <= TARGET_RATIO for v in values)
            cells.append(f"**{text}** ✓" if met else text)
        lines.append(
            f"| {row.workload} | {row.coatcheck_text} | {row.peer_text} | "
            + " | ".join(cells)
            + " |"
        )
    return lines


def instruction_table(results: Results) -> list[str]:
    assert results.instructions is not None
    lines = [
        "Instructions per request (thousands; callgrind, this process only): the bare apps' "
        "absolute count, then each implementation's overhead over its framework's bare app.",
        "",
        "| implementation | " + " | ".join(results.scenarios) + " |",
        "|---|" + "---:|" * len(results.scenarios),
    ]
    for impl in results.impls:
        if impl.startswith("bare"):
            cells = [f"{results.instructions[impl][s] / 1000:.1f}" for s in results.scenarios]
        else:
            cells = []
            for s in results.scenarios:
                over = results.instr_overhead(impl, s)
                assert over is not None
                cells.append(f"{over / 1000:+.1f}")
        lines.append(f"| {IMPLS[impl].label} | " + " | ".join(cells) + " |")
    return lines


def cpu_table(results: Results) -> list[str]:
    cpu = results.cpu
    assert cpu is not None
    others = [v for impl in results.impls for s in results.scenarios for v in cpu.other[impl][s]]
    lines = [
        "CPU time per request (µs): the bare apps' absolute time, then each implementation's "
        "overhead over its framework's bare app; median over rounds [inter-quartile range].",
        "",
        "| implementation | " + " | ".join(results.scenarios) + " |",
        "|---|" + "---:|" * len(results.scenarios),
    ]
    for impl in results.impls:
        cells = []
        for s in results.scenarios:
            if impl.startswith("bare"):
                values = cpu.total[impl][s]
                sign = ""
            else:
                values = results.cpu_overheads(impl, s) or []
                sign = "+"
            q1, q2, q3 = _quartiles(values)
            cells.append(f"{sign}{q2:.1f} [{q1:.1f}–{q3:.1f}]")
        lines.append(f"| {IMPLS[impl].label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"CPU time of other threads of the process, included above: median "
        f"{statistics.median(others):.2f} µs/request, at most {max(others):.2f} µs/request "
        "in a batch (thread CPU time of the app calls is the whole cost here).",
    ]
    return lines


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def facts_table(results: Results) -> list[str]:
    lines = [
        "What one request did, seen in the checks: `cookie` if the response set a cookie; "
        "for coatcheck, its store calls (`load`s, `write`s: save, rotate, delete). A store "
        "call on `no-touch` is work that lazy loading would save.",
        "",
        "| implementation | " + " | ".join(results.scenarios) + " |",
        "|---|" + "---|" * len(results.scenarios),
    ]
    for impl in results.impls:
        if impl.startswith("bare"):
            continue
        cells = []
        for s in results.scenarios:
            fact = results.facts[impl][s]
            parts = ["cookie" if fact.set_cookie else "no cookie"]
            if fact.calls is not None:
                parts.append(f"{fact.calls.loads} load, {fact.calls.writes} write")
            cells.append(", ".join(parts))
        lines.append(f"| {IMPLS[impl].label} | " + " | ".join(cells) + " |")
    return lines


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _git(directory: Path, *command: str) -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(directory), *command],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def coatcheck_package() -> Path:
    spec = importlib.util.find_spec("coatcheck")
    assert spec is not None and spec.origin is not None, "coatcheck is not importable"
    return Path(spec.origin).resolve().parent


def coatcheck_revision() -> str:
    package = coatcheck_package()
    rev = _git(package, "rev-parse", "--short", "HEAD") or "?"
    dirty = _git(package, "status", "--porcelain", "--", ".").splitlines()
    changed = ", ".join(line[3:].rsplit("/", 1)[-1] for line in dirty[:6])
    more = f" and {len(dirty) - 6} more" if len(dirty) > 6 else ""
    return f"{package} at git {rev}, {peers.coatcheck_build()}" + (
        f" + uncommitted changes ({changed}{more})" if dirty else ""
    )


def source_fingerprint() -> str:
    """A hash of coatcheck's Python files as they are now (others may be editing them)."""
    package = coatcheck_package()
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def source_line(fingerprints: list[tuple[str, str]]) -> str:
    first = fingerprints[0][1]
    if all(value == first for _, value in fingerprints):
        return f"- coatcheck's source (sha256 of its .py files): {first}, unchanged during the run"
    steps = ", ".join(f"{value} {moment}" for moment, value in fingerprints)
    return (
        f"- **coatcheck's source changed during the run** ({steps}): the measures may "
        "have seen different versions (CPU time imports it at the start, valgrind before "
        "counting)"
    )


def machine_lines(load: tuple[tuple[float, ...], tuple[float, ...]]) -> list[str]:
    cpu = peers.cpu_model()
    valgrind = "not used"
    if shutil.which("valgrind"):
        valgrind = subprocess.run(
            ["valgrind", "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    redis_server = "not used"
    if shutil.which("redis-server"):
        redis_server = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, check=False
        ).stdout.split(" sha=")[0]
    try:
        import hiredis  # noqa: F401

        parser = "hiredis"
    except ImportError:
        parser = "pure-Python parser"
    return [
        f"- machine: {cpu}, {os.cpu_count()} logical CPUs, {platform.system()} "
        f"{platform.machine()}; load average (1, 5, 15 min) before / after: "
        f"{' '.join(f'{x:.2f}' for x in load[0])} / {' '.join(f'{x:.2f}' for x in load[1])}",
        f"- Python {platform.python_version()} ({sys.executable}), SQLite "
        f"{sqlite3.sqlite_version}, {valgrind}, {redis_server}",
        f"- coatcheck: {coatcheck_revision()}",
        f"- starsessions {_version('starsessions')}, starlette {_version('starlette')}, "
        f"Flask {_version('flask')}, Flask-Session {_version('flask-session')}, "
        f"Django {_version('django')}, redis-py {_version('redis')} ({parser})",
    ]


def report(results: Results, args: argparse.Namespace, elapsed: float, load: Any) -> str:
    lines = ["## coatcheck against its peers: overhead ratios", "", *ratio_table(results)]
    if results.instructions is not None:
        lines += ["", *instruction_table(results)]
    if results.cpu is not None:
        lines += ["", *cpu_table(results)]
    lines += ["", *facts_table(results), ""]
    measured = []
    if results.instructions is not None:
        measured.append(
            f"instructions: callgrind, {args.valgrind_requests} requests per scenario after "
            f"{args.valgrind_warmup} warm-up ones, {args.jobs} valgrind processes at a time, "
            "PYTHONHASHSEED=0; Redis's server-side work is not counted (client process only), "
            "nor is any kernel work (system calls: SQLite's file writes, socket I/O), which "
            "CPU time includes"
        )
    if results.cpu is not None:
        measured.append(
            f"CPU time: {args.rounds} rounds of {args.requests} requests per (implementation, "
            f"scenario) in shuffled order, after {args.warmup} warm-up ones; this thread's CPU "
            "time (`time.thread_time()`) around each app call, plus other threads' "
            "(`process_time() - thread_time()` over the batch); waiting for Redis is not CPU time"
        )
    command = shlex.join(["python", "bench/table.py", *sys.argv[1:]])
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines += [
        f"Command: `{command}` ({when}, {elapsed / 60:.1f} min)",
        "",
        *[f"- {m}" for m in measured],
        "- ASGI apps: one Starlette app (routes) behind the middleware, `await app(scope, "
        "receive, send)` via `loop.run_until_complete`; WSGI: `app(environ, start_response)`; "
        "every request with a browser's cookie jar (latest Set-Cookie values, plus `_ga`)",
        *machine_lines(load),
        source_line(results.sources),
    ]
    return "\n".join(lines)


def to_json(results: Results, args: argparse.Namespace, elapsed: float) -> dict[str, Any]:
    out: dict[str, Any] = {
        "command": sys.argv,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "elapsed_s": round(elapsed, 1),
        "settings": {
            k: getattr(args, k)
            for k in ("requests", "rounds", "warmup", "valgrind_requests", "valgrind_warmup")
        },
        "coatcheck": coatcheck_revision(),
        "coatcheck_source_sha256": dict(results.sources),
        "scenarios": list(results.scenarios),
        "rows": [],
        "implementations": {},
    }
    for row in results.rows:
        out["rows"].append(
            {
                "id": row.id,
                "workload": row.workload,
                "coatcheck": row.coatcheck,
                "peer": row.peer,
                "ratios": {
                    s: {
                        "instructions": results.ratio(row, s, "instructions"),
                        "cpu": results.ratio(row, s, "cpu"),
                    }
                    for s in results.scenarios
                },
            }
        )
    for impl in results.impls:
        entry: dict[str, Any] = {"label": IMPLS[impl].label, "framework": IMPLS[impl].framework}
        for s in results.scenarios:
            fact = results.facts[impl][s]
            entry[s] = {
                "set_cookie": fact.set_cookie,
                "store_calls": None if fact.calls is None else vars(fact.calls),
                "instructions": None
                if results.instructions is None
                else results.instructions[impl][s],
                "instructions_overhead": None
                if impl.startswith("bare")
                else results.instr_overhead(impl, s),
                "cpu_us": None if results.cpu is None else results.cpu.total[impl][s],
                "cpu_other_threads_us": None if results.cpu is None else results.cpu.other[impl][s],
                "cpu_overhead_us_median": None
                if impl.startswith("bare")
                else results.cpu_overhead(impl, s),
            }
        out["implementations"][impl] = entry
    return out


# -- main ----------------------------------------------------------------------------------------


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", nargs="+", choices=ROW_IDS, default=list(ROW_IDS))
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--requests", type=int, help="CPU time: requests per batch (500)")
    parser.add_argument("--rounds", type=int, help="CPU time: interleaved rounds (25)")
    parser.add_argument("--warmup", type=int, help="CPU time: warm-up requests per batch (200)")
    parser.add_argument(
        "--valgrind-requests", type=int, help="instructions: requests per scenario (300)"
    )
    parser.add_argument(
        "--valgrind-warmup", type=int, help="instructions: warm-up requests per scenario (50)"
    )
    parser.add_argument("--jobs", type=int, default=2, help="valgrind processes at a time")
    parser.add_argument("--no-instructions", action="store_true", help="skip valgrind")
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU-time rounds")
    parser.add_argument("--quick", action="store_true", help="a smoke run: few, small batches")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    parser.add_argument("--seed", type=int, default=1, help="seed of the batch order")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)  # inside valgrind
    parser.add_argument("--redis-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    defaults = {
        "requests": (500, 40),
        "rounds": (25, 5),
        "warmup": (200, 20),
        "valgrind_requests": (300, 20),
        "valgrind_warmup": (50, 10),
    }
    for name, (full, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if min(args.requests, args.rounds, args.valgrind_requests, args.jobs) < 1:
        parser.error("--requests, --rounds, --valgrind-requests and --jobs must be >= 1")
    args.scenarios = tuple(s for s in SCENARIOS if s in args.scenarios)
    return args


def main() -> None:
    args = parse_args()
    if args.child:
        child(args)
        return
    rows = [row for row in ROWS if row.id in args.rows]
    impls = impls_of(rows)
    instructions = not args.no_instructions
    if instructions and shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (or use --no-instructions)")
    started = time.perf_counter()
    load_before = os.getloadavg()
    fingerprints = [("at the start", source_fingerprint())]
    with ExitStack() as stack:
        redis_port = None
        if any(IMPLS[name].redis for name in impls):
            redis_port = stack.enter_context(redis_server())
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="coatcheck-table-")))
        loop = asyncio.new_event_loop()
        stack.callback(loop.close)
        targets = {
            name: peers.build(name, loop=loop, redis_port=redis_port, tmp=tmp) for name in impls
        }
        facts = {}
        for name, target in targets.items():
            try:
                facts[name] = check(target, args.scenarios)
            except (CheckFailed, AssertionError) as failure:
                raise SystemExit(f"check failed, nothing measured: {failure}") from failure
        progress(f"checks passed: {', '.join(impls)}")
        cpu = None if args.no_cpu else measure_cpu(targets, args.scenarios, args)
        for target in targets.values():
            target.close()
        counts = None
        if instructions:
            fingerprints.append(("before valgrind", source_fingerprint()))
            counts = measure_instructions(impls, args, redis_port)
    elapsed = time.perf_counter() - started
    fingerprints.append(("at the end", source_fingerprint()))
    results = Results(rows, impls, args.scenarios, facts, counts, cpu, fingerprints)
    print(report(results, args, elapsed, (load_before, os.getloadavg())))
    if args.json is not None:
        args.json.write_text(json.dumps(to_json(results, args, elapsed), indent=2) + "\n")


@contextmanager
def redis_server() -> Iterator[int]:
    """The throw-away Redis of `tests/servers.py`; yields its port."""
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed: drop the Redis rows with --rows")
    sys.path.insert(0, str(HERE.parent / "tests"))
    from servers import running_redis

    with running_redis() as server:
        yield server.port


if __name__ == "__main__":
    main()
