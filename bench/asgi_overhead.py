"""Per-request overhead of session middlewares over a bare Starlette app, in one process.

Every implementation wraps the same Starlette app (three routes, one per scenario) and is
driven directly through ASGI: `await app(scope, receive, send)` with a prebuilt scope and a
`send` that drops the messages. No HTTP client, no sockets, so what is measured is the
middleware's work (plus what its session object costs the endpoint), not the client's.

Implementations:
  bare                  the Starlette app alone (the endpoint uses a plain dict)
  starlette-cookie      starlette.middleware.sessions.SessionMiddleware (signed cookie)
  starsessions-memory   starsessions 2 SessionMiddleware + SessionAutoloadMiddleware, InMemoryStore
  coatcheck-memory      coatcheck.adapters.asgi.SessionMiddleware, ServerSide(MemoryStore())
  coatcheck-sqlite      the same on SQLiteStore(<temp file>) (WAL, synchronous=NORMAL)
  coatcheck-client      coatcheck client-side: ClientSide(KeyRing, store=None), signed JWS cookie
  coatcheck-client-reg  the same with a registry and revocation list (store="memory://")
  minimal-memory        a reference written here: the least a server-side session middleware
                        does in Python (cookie, SHA-256 key, dict, JSON, Vary, write only when
                        changed), without lifetimes, CSRF, rotation, versions or metadata

Scenarios (all GET, browser-like headers):
  read   cookie present, the endpoint reads the session's 5 small keys, changes nothing
  write  cookie present, the endpoint sets one key (a new value every request)
  new    no cookie, the endpoint sets one key: a new visitor's session is created

SQLite floors, timed in the same rounds with plain `sqlite3` on a WAL file of their own
(same pragmas as `SQLiteStore`), on the record bytes coatcheck stores for that scenario:
  read   one SELECT by key
  write  one SELECT plus one UPSERT of the same bytes
  new    one UPSERT under a fresh key
"floor" uses a minimal table (key TEXT PRIMARY KEY, data BLOB, WITHOUT ROWID);
"coatcheck SQL" runs the statements `SQLiteStore` runs (version compare-and-set, expiry
column, user index) without coatcheck's Python. Each write stores bytes that differ from
the row's current ones (two same-length variants, alternating): SQLite skips the page write
when an UPDATE leaves a row byte-identical, which would make the floor a no-op.

Method: warm up, then `--rounds` rounds; in each round every (implementation, scenario)
batch of `--requests` requests and every floor batch runs once, in a shuffled order, so
drifting load on a shared machine spreads over all of them. Overhead per round is the
batch's mean time per request minus bare's in the same round; the table shows the median
over rounds (and the inter-quartile range). The garbage collector stays enabled, as in a
server.

    .venv/bin/python bench/asgi_overhead.py                 # the table (~30 s on 2 cores)
    .venv/bin/python bench/asgi_overhead.py --profile        # cProfile of coatcheck's hot path
    .venv/bin/python bench/asgi_overhead.py --compare ../other/src/coatcheck
        # also time a second coatcheck source tree (a branch, an optimisation) in the same run
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import hashlib
import importlib
import importlib.util
import json
import os
import platform
import pstats
import random
import secrets
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from importlib.metadata import version
from itertools import count
from pathlib import Path
from types import ModuleType
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import Session as TrackedDict
from starlette.middleware.sessions import SessionMiddleware as StarletteSessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starsessions import InMemoryStore as StarInMemoryStore
from starsessions import SessionAutoloadMiddleware as StarAutoloadMiddleware
from starsessions import SessionMiddleware as StarSessionMiddleware

import coatcheck
from coatcheck.ids import new_handle

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Any], Awaitable[None]]

SCENARIOS = ("read", "write", "new")
IMPLS = (
    "bare",
    "starlette-cookie",
    "starsessions-memory",
    "minimal-memory",
    "coatcheck-memory",
    "coatcheck-sqlite",
    "coatcheck-client",
    "coatcheck-client-reg",
)
VARIANTS = ("variant-memory", "variant-sqlite")  # with --compare
FLOORS = ("floor", "coatcheck-sql")
LABELS = {
    "bare": "bare Starlette app (absolute time)",
    "starlette-cookie": "Starlette `SessionMiddleware` (signed cookie)",
    "starsessions-memory": "starsessions + `InMemoryStore`",
    "minimal-memory": "reference: minimal server-side middleware, dict store",
    "coatcheck-memory": "coatcheck server-side, `MemoryStore`",
    "coatcheck-sqlite": "coatcheck server-side, `SQLiteStore`",
    "coatcheck-client": "coatcheck client-side, JWS cookie, stateless",
    "coatcheck-client-reg": "coatcheck client-side, JWS cookie, registry + revocations",
    "variant-memory": "variant (--compare) server-side, `MemoryStore`",
    "variant-sqlite": "variant (--compare) server-side, `SQLiteStore`",
    "floor": "SQLite floor: plain `sqlite3`, minimal table",
    "coatcheck-sql": "SQLite: `SQLiteStore`'s own statements, plain `sqlite3`",
}
SEED: dict[str, Any] = {
    "user_id": 4217,
    "theme": "dark",
    "lang": "en-GB",
    "cart": [3, 14, 15],
    "flash": "Welcome back!",
}
SECRET_KEY = "benchmark-only-not-a-secret"  # noqa: S105
HEADERS = [
    (b"host", b"app.example"),
    (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
    (b"accept", b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    (b"accept-language", b"en-GB,en;q=0.5"),
    (b"accept-encoding", b"gzip, deflate, br, zstd"),
    (b"sec-fetch-dest", b"document"),
    (b"sec-fetch-mode", b"navigate"),
    (b"sec-fetch-site", b"same-origin"),
]


# -- the application ------------------------------------------------------------------------

_counter = count()
_fallback: dict[str, Any] = {}  # bare's "session": a plain dict with the same keys
last_read: tuple[Any, ...] = ()


def _session(request: Request) -> MutableMapping[str, Any]:
    session: MutableMapping[str, Any] | None = request.scope.get("session")
    return _fallback if session is None else session


async def read(request: Request) -> PlainTextResponse:
    global last_read
    s = _session(request)
    last_read = (s["user_id"], s["theme"], s["lang"], s["cart"], s["flash"])
    return PlainTextResponse("ok")


async def write(request: Request) -> PlainTextResponse:
    _session(request)["counter"] = next(_counter)
    return PlainTextResponse("ok")


async def new(request: Request) -> PlainTextResponse:
    _session(request)["visits"] = 1
    return PlainTextResponse("ok")


async def seed(request: Request) -> PlainTextResponse:
    _session(request).update(SEED)
    return PlainTextResponse("ok")


ROUTES = [Route(f"/{f.__name__}", f) for f in (read, write, new, seed)]


async def _nothing() -> None:
    return None


class MinimalServerSide:
    """The least a server-side session middleware does, as a yardstick for coatcheck's core.

    Cookie `sid` -> SHA-256 -> dict -> JSON -> a dict that tracks changes; on the response,
    `Vary: Cookie`, and the record and (for a new session) the cookie only if it changed.
    No lifetimes, CSRF, ID rotation, versions, client metadata or error handling.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.store: dict[bytes, bytes] = {}

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        secret = key = raw = None
        for name, value in scope["headers"]:
            if name == b"cookie":
                for pair in value.split(b";"):
                    cookie, _, cookie_value = pair.strip().partition(b"=")
                    if cookie == b"sid":
                        secret = cookie_value
        if secret is not None and len(secret) == 43:
            key = hashlib.sha256(secret).digest()
            raw = self.store.get(key)
        session = TrackedDict(json.loads(raw) if raw is not None else {})
        scope["session"] = session

        async def send_wrapper(message: Message) -> None:
            nonlocal key
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                if session.modified:
                    if raw is None:
                        new = secrets.token_urlsafe(32).encode()
                        key = hashlib.sha256(new).digest()
                        cookie = b"sid=" + new + b"; Path=/; HttpOnly; Secure; SameSite=Lax"
                        headers.append((b"set-cookie", cookie))
                    assert key is not None
                    self.store[key] = json.dumps(session, separators=(",", ":")).encode()
                headers.append((b"vary", b"Cookie"))
            await send(message)

        await self.app(scope, receive, send_wrapper)


packages: dict[str, ModuleType] = {"coatcheck": coatcheck}


def load_variant(path: Path) -> ModuleType:
    """Import the coatcheck package at `path` (a `src/coatcheck` directory) as a second,
    independent package, `coatcheck_variant`. Its modules import each other relatively."""
    spec = importlib.util.spec_from_file_location(
        "coatcheck_variant", path / "__init__.py", submodule_search_locations=[str(path)]
    )
    if spec is None or spec.loader is None:
        raise SystemExit(f"--compare: no Python package at {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["coatcheck_variant"] = module
    spec.loader.exec_module(module)
    return module


def build(impl: str, tmp: Path) -> tuple[Starlette, Callable[[], Awaitable[None]]]:
    """The app for `impl` and a function releasing its resources."""
    middleware: list[Middleware] = []
    close = _nothing
    if impl.startswith(("coatcheck-", "variant-")):
        package = packages[impl.partition("-")[0]]
        name = package.__name__
        ServerSide, SessionManager = package.ServerSide, package.SessionManager  # noqa: N806
        stores = importlib.import_module(f"{name}.stores")
        asgi_middleware = importlib.import_module(f"{name}.adapters.asgi").SessionMiddleware
    if impl == "minimal-memory":
        middleware = [Middleware(MinimalServerSide)]
    elif impl == "starlette-cookie":
        middleware = [
            Middleware(StarletteSessionMiddleware, secret_key=SECRET_KEY, https_only=True)
        ]
    elif impl == "starsessions-memory":
        middleware = [
            Middleware(StarSessionMiddleware, store=StarInMemoryStore()),
            Middleware(StarAutoloadMiddleware),
        ]
    elif impl in ("coatcheck-client", "coatcheck-client-reg"):
        keys = package.KeyRing([hashlib.sha256(SECRET_KEY.encode()).digest()])
        store = None if impl == "coatcheck-client" else "memory://"
        manager = SessionManager(package.ClientSide(keys, store=store))
        middleware = [Middleware(asgi_middleware, manager=manager)]
    elif impl.endswith("-memory"):
        manager = SessionManager(ServerSide(stores.MemoryStore()))
        middleware = [Middleware(asgi_middleware, manager=manager)]
    elif impl.endswith("-sqlite"):
        store = stores.SQLiteStore(tmp / f"{impl}.db")
        mode = ServerSide(store)
        middleware = [Middleware(asgi_middleware, manager=SessionManager(mode))]

        async def close() -> None:
            store.close()
            await mode.async_store.aclose()

    return Starlette(routes=ROUTES, middleware=middleware), close


def make_scope(path: str, cookie: bytes | None) -> dict[str, Any]:
    headers = list(HEADERS)
    if cookie is not None:
        headers.append((b"cookie", b"_ga=GA1.1.123456789.1700000000; " + cookie))
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("203.0.113.7", 52814),
        "server": ("app.example", 443),
        "state": {},
    }


async def receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def drop(message: Message) -> None:
    return None


async def request(app: ASGIApp, scope: Scope) -> tuple[int, list[tuple[bytes, bytes]]]:
    """Run one request, returning status and response headers (for set-up and checks)."""
    start: dict[str, Any] = {}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            start.update(message)

    await app(dict(scope), receive, send)
    return start["status"], list(start.get("headers", []))


def set_cookie(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The `name=value` part of the response's Set-Cookie, if any."""
    for name, value in headers:
        if name.lower() == b"set-cookie":
            return value.split(b";", 1)[0]
    return None


class Case:
    """One implementation's app and the scope of each scenario."""

    def __init__(self, impl: str, tmp: Path) -> None:
        self.impl = impl
        self.app, self.close = build(impl, tmp)
        self.scopes: dict[str, dict[str, Any]] = {}

    async def setup(self) -> None:
        cookies: dict[str, bytes | None] = {}
        for scenario in ("read", "write"):
            status, headers = await request(self.app, make_scope("/seed", None))
            assert status == 200, (self.impl, status)
            cookies[scenario] = set_cookie(headers)
            assert (cookies[scenario] is None) == (self.impl == "bare"), self.impl
        for scenario in SCENARIOS:
            path = f"/{scenario}"
            self.scopes[scenario] = make_scope(path, cookies.get(scenario))
        if self.impl == "bare":
            _fallback.update(SEED)

    async def check(self) -> None:
        """Fail loudly if a scenario does not do what it claims for this implementation."""
        status, headers = await request(self.app, self.scopes["read"])
        assert status == 200 and last_read == tuple(SEED.values()), (self.impl, last_read)
        if self.impl.startswith(("coatcheck", "variant", "minimal", "starlette")):
            assert set_cookie(headers) is None, f"{self.impl} wrote on a read-only request"
        status, headers = await request(self.app, self.scopes["write"])
        assert status == 200, self.impl
        if self.impl == "starlette-cookie":
            assert set_cookie(headers) is not None, "the cookie session must be re-sent"
        status, headers = await request(self.app, self.scopes["new"])
        assert status == 200, self.impl
        assert (set_cookie(headers) is None) == (self.impl == "bare"), self.impl

    async def batch(self, scenario: str, n: int) -> tuple[float, float]:
        """Mean wall-clock and CPU seconds per request over `n` requests."""
        app, scope, rcv, snd = self.app, self.scopes[scenario], receive, drop
        start, start_cpu = time.perf_counter(), time.thread_time()
        for _ in range(n):
            await app(scope.copy(), rcv, snd)
        return (time.perf_counter() - start) / n, (time.thread_time() - start_cpu) / n


# -- the SQLite floor ---------------------------------------------------------------------------


class Floor:
    """What a SQLite session store cannot avoid per request, with plain `sqlite3`.

    `schema="minimal"` is the floor of the issue (a key and a blob); `schema="coatcheck"`
    runs the statements `SQLiteStore` runs (version compare-and-set, expiry column and its
    index) to separate the cost of those SQL choices from coatcheck's Python.
    """

    def __init__(self, path: Path, schema: str, records: dict[str, bytes]) -> None:
        self.schema = schema
        self.records = records
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = NORMAL")
        self.fresh = count()
        if schema == "minimal":
            self.db.execute(
                "CREATE TABLE t (key TEXT PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID"
            )
            self.sql_select = "SELECT data FROM t WHERE key = ?"
            self.sql_upsert = (
                "INSERT INTO t (key, data) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET data = excluded.data"
            )
        else:
            self.db.execute(
                "CREATE TABLE t (key TEXT PRIMARY KEY, data BLOB NOT NULL, version INTEGER "
                "NOT NULL, expires_at REAL NOT NULL, user TEXT) WITHOUT ROWID"
            )
            self.db.execute("CREATE INDEX t_user ON t (user) WHERE user IS NOT NULL")
            self.sql_select = "SELECT data, version FROM t WHERE key = ? AND expires_at > ?"
            self.sql_update = (
                "UPDATE t SET data = ?, version = version + 1, expires_at = ?, user = ? "
                "WHERE key = ? AND version = ? AND expires_at > ?"
            )
            self.sql_create = (
                "INSERT INTO t (key, data, version, expires_at, user) VALUES (?, ?, 1, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET data = excluded.data, version = 1, "
                "expires_at = excluded.expires_at, user = excluded.user "
                "WHERE t.expires_at <= ?"
            )
        self.key = new_handle()
        self.version = 1
        self.upsert(self.key, records["write"])

    def upsert(self, key: str, data: bytes) -> None:
        if self.schema == "minimal":
            self.db.execute(self.sql_upsert, (key, data))
        else:
            now = time.time()
            self.db.execute(self.sql_create, (key, data, now + 1800, None, now))

    def batch(self, scenario: str, n: int) -> tuple[float, float]:
        """Mean wall-clock and CPU seconds per request over `n` requests."""
        db, key, data = self.db, self.key, self.records[scenario]
        variants = (data, _variant(data))
        # New sessions land at random places in the key index, as handles are random.
        count_new = n if scenario == "new" else 0
        fresh = [new_handle() for _ in range(count_new)]
        start, start_cpu = time.perf_counter(), time.thread_time()
        if self.schema == "minimal":
            select, upsert = self.sql_select, self.sql_upsert
            for i in range(n):
                if scenario == "read":
                    db.execute(select, (key,)).fetchone()
                elif scenario == "write":
                    db.execute(select, (key,)).fetchone()
                    db.execute(upsert, (key, variants[next(self.fresh) & 1]))
                else:
                    db.execute(upsert, (fresh[i], data))
        else:
            for i in range(n):
                now = time.time()
                if scenario == "read":
                    db.execute(self.sql_select, (key, now)).fetchone()
                elif scenario == "write":
                    version = db.execute(self.sql_select, (key, now)).fetchone()[1]
                    args = (variants[next(self.fresh) & 1], now + 1800, None, key, version, now)
                    assert db.execute(self.sql_update, args).rowcount == 1
                else:
                    args2 = (fresh[i], data, now + 1800, None, now)
                    db.execute(self.sql_create, args2)
        return (time.perf_counter() - start) / n, (time.thread_time() - start_cpu) / n

    def close(self) -> None:
        self.db.close()


def _variant(data: bytes) -> bytes:
    """`data` with one byte changed: same length, different content."""
    middle = len(data) // 2
    changed = b"1" if data[middle : middle + 1] == b"0" else b"0"
    return data[:middle] + changed + data[middle + 1 :]


def coatcheck_records(tmp: Path) -> dict[str, bytes]:
    """The bytes coatcheck's SQLite store holds for a read/write session and a new one."""
    db = sqlite3.connect(tmp / "coatcheck-sqlite.db")
    try:
        rows = db.execute("SELECT data FROM coatcheck_sessions ORDER BY length(data)").fetchall()
    finally:
        db.close()
    small, large = bytes(rows[0][0]), bytes(rows[-1][0])
    return {"read": large, "write": large, "new": small}


# -- running and reporting ----------------------------------------------------------------------


Times = dict[str, dict[str, dict[str, list[float]]]]  # clock -> name -> scenario -> µs


async def run(args: argparse.Namespace, tmp: Path, impls: tuple[str, ...]) -> Times:
    cases = {impl: Case(impl, tmp) for impl in impls}
    for case in cases.values():
        await case.setup()
    for case in cases.values():
        for scenario in SCENARIOS:
            await case.batch(scenario, args.warmup)
        await case.check()
    records = coatcheck_records(tmp)
    floors = {
        "floor": Floor(tmp / "floor.db", "minimal", records),
        "coatcheck-sql": Floor(tmp / "floor-coatcheck.db", "coatcheck", records),
    }
    for floor in floors.values():
        for scenario in SCENARIOS:
            floor.batch(scenario, args.warmup)
    jobs: list[tuple[str, str]] = [(i, s) for i in (*impls, *FLOORS) for s in SCENARIOS]
    times: Times = {
        clock: {name: {s: [] for s in SCENARIOS} for name in (*impls, *FLOORS)}
        for clock in ("wall", "cpu")
    }
    shuffle = random.Random(args.seed).shuffle
    for _ in range(args.rounds):
        shuffle(jobs)
        for name, scenario in jobs:
            if name in floors:
                wall, cpu = floors[name].batch(scenario, args.requests)
            else:
                wall, cpu = await cases[name].batch(scenario, args.requests)
            times["wall"][name][scenario].append(wall * 1e6)
            times["cpu"][name][scenario].append(cpu * 1e6)
    for case in cases.values():
        await case.close()
    for floor in floors.values():
        floor.close()
    return times


def machine() -> list[str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "?"
    return [
        f"Python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.system()} {platform.machine()}",
        f"CPU: {cpu}, {os.cpu_count()} logical CPUs; SQLite {sqlite3.sqlite_version}",
        f"starlette {version('starlette')}, starsessions {version('starsessions')}, "
        f"coatcheck {version('coatcheck')} (git {commit or '?'})",
    ]


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def overheads(
    times: dict[str, dict[str, list[float]]], impls: tuple[str, ...]
) -> dict[str, dict[str, list[float]]]:
    """Per-round overhead over bare for each implementation; floors are kept absolute."""
    over: dict[str, dict[str, list[float]]] = {"bare": times["bare"]}
    for impl in impls[1:]:
        over[impl] = {
            s: [t - b for t, b in zip(times[impl][s], times["bare"][s], strict=True)]
            for s in SCENARIOS
        }
    for name in FLOORS:
        over[name] = times[name]
    return over


RATIOS = [
    # label, numerator, denominator, target (None: for information), target's text
    (
        "coatcheck-memory / starsessions-memory",
        "coatcheck-memory",
        "starsessions-memory",
        0.5,
        "≤ 0.5",
    ),
    ("coatcheck-sqlite / SQLite floor", "coatcheck-sqlite", "floor", 2.0, "≤ 2"),
    (
        "coatcheck-sqlite / starsessions-memory",
        "coatcheck-sqlite",
        "starsessions-memory",
        1.0,
        "< 1",
    ),
    (
        "coatcheck-sqlite / `SQLiteStore`'s statements",
        "coatcheck-sqlite",
        "coatcheck-sql",
        None,
        "(info)",
    ),
    ("coatcheck-memory / Starlette cookie", "coatcheck-memory", "starlette-cookie", None, "(info)"),
    ("coatcheck-memory / minimal reference", "coatcheck-memory", "minimal-memory", None, "(info)"),
    (
        "coatcheck-client / Starlette cookie (read target)",
        "coatcheck-client",
        "starlette-cookie",
        0.25,
        "≤ 0.25 read",
    ),
    (
        "coatcheck-client / Starlette cookie (write target)",
        "coatcheck-client",
        "starlette-cookie",
        0.4,
        "≤ 0.4 write",
    ),
    (
        "coatcheck-client-reg / Starlette cookie",
        "coatcheck-client-reg",
        "starlette-cookie",
        None,
        "(info)",
    ),
]


def report(
    times: Times,
    args: argparse.Namespace,
    impls: tuple[str, ...],
    elapsed: float,
    load: tuple[tuple[float, ...], tuple[float, ...]],
) -> str:
    over = {clock: overheads(t, impls) for clock, t in times.items()}
    med = {
        clock: {name: {s: statistics.median(v) for s, v in d.items()} for name, d in o.items()}
        for clock, o in over.items()
    }
    wall_total = sum(sum(v) for d in times["wall"].values() for v in d.values())
    cpu_total = sum(sum(v) for d in times["cpu"].values() for v in d.values())
    lines = [
        f"Command: `.venv/bin/python bench/asgi_overhead.py --rounds {args.rounds} "
        f"--requests {args.requests}` ({elapsed:.0f} s)",
        "",
        *[f"- {m}" for m in machine()],
        f"- load average (1, 5, 15 min) before / after: "
        f"{' '.join(f'{x:.2f}' for x in load[0])} / {' '.join(f'{x:.2f}' for x in load[1])}; "
        f"this process got {100 * cpu_total / wall_total:.0f}% of a CPU while timing "
        "(100%: a core to itself)",
        "",
        "Median wall-clock µs per request over the bare app (inter-quartile range over rounds "
        "in brackets). The bare row is its absolute time; the SQLite rows are the absolute "
        "time of the database work alone.",
        "",
        "| implementation | read (5 keys) | write (1 key) | new visitor |",
        "|---|---:|---:|---:|",
    ]
    for name in (*impls, *FLOORS):
        cells = []
        for s in SCENARIOS:
            q1, q2, q3 = quartiles(over["wall"][name][s])
            sign = "+" if name in impls[1:] else ""
            cells.append(f"{sign}{q2:.1f} [{q1:.1f}–{q3:.1f}]")
        lines.append(f"| {LABELS[name]} | " + " | ".join(cells) + " |")

    lines += [
        "",
        "Ratios of the median overheads, wall-clock (and CPU time of this thread, which "
        "other processes on a shared machine disturb less). ✓: both meet the target, "
        "✗: neither, ~: they disagree.",
        "",
        "| ratio | read | write | new visitor | target |",
        "|---|---:|---:|---:|---|",
    ]
    ratios = RATIOS
    if "variant-memory" in impls:
        ratios = [
            *RATIOS,
            (
                "variant-memory / coatcheck-memory",
                "variant-memory",
                "coatcheck-memory",
                None,
                "(info)",
            ),
            (
                "variant-sqlite / coatcheck-sqlite",
                "variant-sqlite",
                "coatcheck-sqlite",
                None,
                "(info)",
            ),
            (
                "variant-memory / starsessions-memory",
                "variant-memory",
                "starsessions-memory",
                0.5,
                "≤ 0.5",
            ),
            ("variant-sqlite / SQLite floor", "variant-sqlite", "floor", 2.0, "≤ 2"),
        ]
    for label, a, b, limit, target in ratios:
        cells = []
        for s in SCENARIOS:
            r = {
                c: med[c][a][s] / med[c][b][s] if med[c][b][s] > 0 else float("inf")
                for c in ("wall", "cpu")
            }
            mark = ""
            if limit is not None:
                met = [(v < limit if target.startswith("<") else v <= limit) for v in r.values()]
                mark = " ✓" if all(met) else " ✗" if not any(met) else " ~"
            cells.append(f"{r['wall']:.2f} ({r['cpu']:.2f}){mark}")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {target} |")

    lines += [
        "",
        "CPU time (median µs per request over bare; floors absolute):",
        "",
        "| implementation | read | write | new visitor |",
        "|---|---:|---:|---:|",
    ]
    for name in (*impls, *FLOORS):
        sign = "+" if name in impls[1:] else ""
        cells = [f"{sign}{med['cpu'][name][s]:.1f}" for s in SCENARIOS]
        lines.append(f"| {LABELS[name]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- profiling ----------------------------------------------------------------------------------


async def profile(args: argparse.Namespace, tmp: Path) -> None:
    """cProfile coatcheck's middleware on `--profile-requests` requests per scenario."""
    for impl in ("coatcheck-memory", "coatcheck-sqlite"):
        case = Case(impl, tmp)
        await case.setup()
        for scenario in SCENARIOS:
            await case.batch(scenario, args.warmup)
            profiler = cProfile.Profile()
            profiler.enable()
            await case.batch(scenario, args.profile_requests)
            profiler.disable()
            print(f"\n## {impl} / {scenario}: {args.profile_requests} requests\n")
            stats = pstats.Stats(profiler).strip_dirs().sort_stats("tottime")
            stats.print_stats(args.profile_top)
        await case.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="interleaved rounds")
    parser.add_argument("--requests", type=int, default=500, help="requests per batch")
    parser.add_argument("--warmup", type=int, default=300, help="warm-up requests per batch")
    parser.add_argument("--seed", type=int, default=1, help="seed of the batch order")
    parser.add_argument("--profile", action="store_true", help="cProfile coatcheck instead")
    parser.add_argument("--profile-requests", type=int, default=5000)
    parser.add_argument("--profile-top", type=int, default=25)
    parser.add_argument(
        "--compare",
        type=Path,
        metavar="SRC/coatcheck",
        help="also time the coatcheck package in this directory, as variant-*",
    )
    args = parser.parse_args()
    if args.rounds < 4 or args.requests < 1:
        parser.error("need --rounds >= 4 and --requests >= 1")
    with tempfile.TemporaryDirectory(prefix="coatcheck-bench-") as tmpdir:
        tmp = Path(tmpdir)
        if args.profile:
            asyncio.run(profile(args, tmp))
            return
        load_before = os.getloadavg()
        start = time.perf_counter()
        impls: tuple[str, ...] = IMPLS
        if args.compare is not None:
            packages["variant"] = load_variant(args.compare.resolve())
            impls = (*IMPLS, *VARIANTS)
        times = asyncio.run(run(args, tmp, impls))
        elapsed = time.perf_counter() - start
        gc.collect()
        print(report(times, args, impls, elapsed, (load_before, os.getloadavg())))


if __name__ == "__main__":
    main()
