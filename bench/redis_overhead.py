"""Per-request overhead and round trips of Redis-backed sessions, coatcheck against peers.

Every implementation runs in its own framework against the same throw-away `redis-server`
(started here, on a loopback port, no persistence), and is driven in-process: ASGI apps by
`await app(scope, receive, send)`, WSGI apps by `app(environ, start_response)`. No HTTP
client and no sockets besides Redis's, so what is measured is the session layer's work and
its Redis round trips.

Implementations (each against a bare app of the same framework, timed in the same round):
  coatcheck-asgi     Starlette + coatcheck.adapters.asgi.SessionMiddleware, AsyncRedisStore
  starsessions       Starlette + starsessions 2 (SessionMiddleware + autoload), RedisStore
  coatcheck-flask    Flask + coatcheck.adapters.flask.SessionInterface, RedisStore
  flask-session      Flask + Flask-Session (SESSION_TYPE="redis", its defaults)
  django-cache       Django + SessionMiddleware, SESSION_ENGINE=cache, RedisCache

Scenarios (GET, cookie present, session seeded with 5 small keys):
  read    the view reads the 5 keys, changes nothing
  write   the view sets one key (a new value every request)

Round trips are counted by the Redis connections themselves (a `Connection` subclass that
counts `send_packed_command` calls: redis-py sends a command, or a whole pipeline, in one
call and then waits for the reply). A `PING` is timed in the same rounds, sync and async,
as the cost of one round trip; the target is that coatcheck's overhead stays within its
round trips times that cost plus 30 µs.

Then the store is filled to `--sessions` sessions (coatcheck's own record layout, the seeded
session's size) and coatcheck's requests are timed again, to compare 1k with 1M stored
sessions; Redis's `used_memory` growth gives the memory per stored session.

    .venv/bin/python bench/redis_overhead.py                      # ~1-2 min on 2 cores
    .venv/bin/python bench/redis_overhead.py --sessions 100000    # quicker fill
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import os
import platform
import random
import statistics
import sys
import time
import types
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from importlib.metadata import version
from itertools import count
from pathlib import Path
from typing import Any

import redis
import redis.asyncio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from servers import running_redis  # noqa: E402

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]

SCENARIOS = ("read", "write")
IMPLS = ("coatcheck-asgi", "starsessions", "coatcheck-flask", "flask-session", "django-cache")
INFO = ("coatcheck-asgi-memory",)  # no Redis: the cost of coatcheck's own work
BARE = {
    "coatcheck-asgi-memory": "bare-starlette",
    "coatcheck-asgi": "bare-starlette",
    "starsessions": "bare-starlette",
    "coatcheck-flask": "bare-flask",
    "flask-session": "bare-flask",
    "django-cache": "bare-django",
}
PEERS = ("starsessions", "flask-session", "django-cache")
LABELS = {
    "coatcheck-asgi": "coatcheck, ASGI (Starlette), `AsyncRedisStore`",
    "coatcheck-asgi-memory": "(info) coatcheck, ASGI, `AsyncMemoryStore`: no Redis",
    "starsessions": "starsessions 2, `RedisStore` (Starlette)",
    "coatcheck-flask": "coatcheck, Flask `SessionInterface`, `RedisStore`",
    "flask-session": "Flask-Session, Redis interface (defaults)",
    "django-cache": "Django sessions, cache engine on `RedisCache`",
    "bare-starlette": "bare Starlette app (absolute)",
    "bare-flask": "bare Flask app (absolute)",
    "bare-django": "bare Django app (absolute)",
}
SEED: dict[str, Any] = {
    "user_id": 4217,
    "theme": "dark",
    "lang": "en-GB",
    "cart": [3, 14, 15],
    "flash": "Welcome back!",
}
SECRET_KEY = "benchmark-only-not-a-secret"  # noqa: S105
HOST = "app.example"
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


# -- counting round trips --------------------------------------------------------------------


class Counter:
    sends = 0


class CountingConnection(redis.Connection):
    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        Counter.sends += 1
        super().send_packed_command(command, check_health)


class CountingAsyncConnection(redis.asyncio.Connection):
    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        Counter.sends += 1
        await super().send_packed_command(command, check_health)


def sync_client(port: int) -> redis.Redis:
    pool = redis.ConnectionPool(host="127.0.0.1", port=port, connection_class=CountingConnection)
    return redis.Redis(connection_pool=pool)


def async_client(port: int) -> redis.asyncio.Redis:
    pool = redis.asyncio.ConnectionPool(
        host="127.0.0.1", port=port, connection_class=CountingAsyncConnection
    )
    return redis.asyncio.Redis(connection_pool=pool)


# -- the views, once per framework -----------------------------------------------------------

_counter = count()
last_read: tuple[Any, ...] = ()


def read_view(session: MutableMapping[str, Any]) -> None:
    global last_read
    last_read = tuple(session[k] for k in SEED)


def write_view(session: MutableMapping[str, Any]) -> None:
    session["counter"] = next(_counter)


def seed_view(session: MutableMapping[str, Any]) -> None:
    session.update(SEED)


VIEWS = {"read": read_view, "write": write_view, "seed": seed_view}
_bare: dict[str, Any] = dict(SEED)  # the bare apps' "session"


# -- ASGI --------------------------------------------------------------------------------------


def starlette_app(impl: str, port: int) -> tuple[Any, Callable[[], Awaitable[None]]]:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    def endpoint(name: str) -> Callable[[Request], Awaitable[PlainTextResponse]]:
        view = VIEWS[name]

        async def handle(request: Request) -> PlainTextResponse:
            view(request.scope["session"] if "session" in request.scope else _bare)
            return PlainTextResponse("ok")

        return handle

    routes = [Route(f"/{name}", endpoint(name)) for name in VIEWS]
    client = async_client(port)
    middleware: list[Middleware] = []
    if impl.startswith("coatcheck-asgi"):
        from coatcheck import ServerSide, SessionManager
        from coatcheck.adapters.asgi import SessionMiddleware
        from coatcheck.stores import AsyncMemoryStore, AsyncRedisStore

        store: Any = (
            AsyncMemoryStore()
            if impl.endswith("memory")
            else AsyncRedisStore(client, prefix="bench:")
        )
        manager = SessionManager(ServerSide(store))
        middleware = [Middleware(SessionMiddleware, manager=manager)]
    elif impl == "starsessions":
        from starsessions import SessionAutoloadMiddleware, SessionMiddleware
        from starsessions.stores.redis import RedisStore as StarRedisStore

        store_ = StarRedisStore(connection=client, prefix="starsessions.")
        middleware = [
            Middleware(SessionMiddleware, store=store_, cookie_https_only=True),
            Middleware(SessionAutoloadMiddleware),
        ]

    async def close() -> None:
        await client.aclose()

    return Starlette(routes=routes, middleware=middleware), close


def asgi_scope(path: str, cookie: bytes | None) -> dict[str, Any]:
    headers = [
        (b"host", HOST.encode()),
        (b"user-agent", USER_AGENT.encode()),
        (b"accept", b"text/html,application/xhtml+xml,*/*;q=0.8"),
        (b"sec-fetch-site", b"same-origin"),
    ]
    if cookie is not None:
        headers.append((b"cookie", cookie))
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
        "server": (HOST, 443),
        "state": {},
    }


async def asgi_receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


class AsgiCase:
    def __init__(self, impl: str, port: int) -> None:
        self.impl = impl
        self.app, self.close = starlette_app(impl, port)
        self.scopes: dict[str, dict[str, Any]] = {}

    async def call(self, scope: dict[str, Any]) -> tuple[int, list[tuple[bytes, bytes]]]:
        start: dict[str, Any] = {}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)

        await self.app(dict(scope), asgi_receive, send)
        return start["status"], list(start.get("headers", []))

    async def setup(self) -> None:
        cookie = None
        if not self.impl.startswith("bare"):
            status, headers = await self.call(asgi_scope("/seed", None))
            assert status == 200, (self.impl, status)
            cookie = next(v.split(b";")[0] for k, v in headers if k == b"set-cookie")
        self.scopes = {s: asgi_scope(f"/{s}", cookie) for s in SCENARIOS}

    async def batch(self, scenario: str, n: int) -> tuple[float, float]:
        app, scope = self.app, self.scopes[scenario]

        async def drop(message: Message) -> None:
            return None

        sends = Counter.sends
        start = time.perf_counter()
        for _ in range(n):
            await app(scope.copy(), asgi_receive, drop)
        return (time.perf_counter() - start) / n, (Counter.sends - sends) / n


# -- WSGI: Flask and Django -------------------------------------------------------------------


def flask_app(impl: str, port: int) -> tuple[Any, Callable[[], None]]:
    from flask import Flask, session

    app = Flask(f"bench_{impl.replace('-', '_')}")
    app.config.update(SECRET_KEY=SECRET_KEY, SESSION_COOKIE_SECURE=True)
    for name, view in VIEWS.items():

        def handle(view: Callable[[MutableMapping[str, Any]], None] = view) -> str:
            view(_bare if impl == "bare-flask" else session)
            return "ok"

        app.add_url_rule(f"/{name}", name, handle)
    client = sync_client(port)
    if impl == "coatcheck-flask":
        from coatcheck import ServerSide, SessionManager
        from coatcheck.adapters.flask import SessionInterface
        from coatcheck.stores import RedisStore

        store = RedisStore(client, prefix="bench:")
        SessionInterface(SessionManager(ServerSide(store))).init_app(app)
    elif impl == "flask-session":
        from flask_session import Session

        app.config.update(SESSION_TYPE="redis", SESSION_REDIS=client)
        Session(app)
    return app.wsgi_app, client.close


def django_app(impl: str, port: int) -> tuple[Any, Callable[[], None]]:
    import django
    from django.conf import settings

    if not settings.configured:
        urls = types.ModuleType("bench_django_urls")
        sys.modules[urls.__name__] = urls
        settings.configure(
            DEBUG=False,
            SECRET_KEY=SECRET_KEY,
            ALLOWED_HOSTS=[HOST],
            ROOT_URLCONF=urls.__name__,
            MIDDLEWARE=[],
            INSTALLED_APPS=["django.contrib.sessions"],
            SESSION_ENGINE="django.contrib.sessions.backends.cache",
            SESSION_COOKIE_SECURE=True,
            CACHES={
                "default": {
                    "BACKEND": "django.core.cache.backends.redis.RedisCache",
                    "LOCATION": f"redis://127.0.0.1:{port}/0",
                    "OPTIONS": {"connection_class": CountingConnection},
                }
            },
            USE_TZ=True,
            LOGGING_CONFIG=None,
        )
        django.setup()
        from django.http import HttpRequest, HttpResponse
        from django.urls import path

        def endpoint(name: str) -> Callable[[HttpRequest], HttpResponse]:
            view = VIEWS[name]

            def handle(request: HttpRequest) -> HttpResponse:
                session = getattr(request, "session", None)
                view(_bare if session is None else session)
                return HttpResponse("ok")

            return handle

        urls.urlpatterns = [path(name, endpoint(name)) for name in VIEWS]  # type: ignore[attr-defined]
    from django.core.handlers.wsgi import WSGIHandler

    settings.MIDDLEWARE = (
        [] if impl == "bare-django" else ["django.contrib.sessions.middleware.SessionMiddleware"]
    )
    return WSGIHandler(), lambda: None


def wsgi_environ(path: str, cookie: str | None) -> dict[str, Any]:
    import io

    environ = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": HOST,
        "SERVER_PORT": "443",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "203.0.113.7",
        "HTTP_HOST": HOST,
        "HTTP_USER_AGENT": USER_AGENT,
        "HTTP_ACCEPT": "text/html,application/xhtml+xml,*/*;q=0.8",
        "HTTP_SEC_FETCH_SITE": "same-origin",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "https",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if cookie is not None:
        environ["HTTP_COOKIE"] = cookie
    return environ


class WsgiCase:
    def __init__(self, impl: str, port: int) -> None:
        self.impl = impl
        build = django_app if "django" in impl else flask_app
        self.app, self.close_client = build(impl, port)
        self.environs: dict[str, dict[str, Any]] = {}

    def call(self, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]]]:
        started: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc: Any = None) -> Any:
            started[:] = [status, headers]
            return lambda data: None

        body = self.app(dict(environ), start_response)
        for _ in body:
            pass
        if hasattr(body, "close"):
            body.close()
        return started[0], started[1]

    async def setup(self) -> None:
        cookie = None
        if not self.impl.startswith("bare"):
            status, headers = self.call(wsgi_environ("/seed", None))
            assert status.startswith("200"), (self.impl, status)
            cookie = next(v.split(";")[0] for k, v in headers if k.lower() == "set-cookie")
        self.environs = {s: wsgi_environ(f"/{s}", cookie) for s in SCENARIOS}

    async def close(self) -> None:
        self.close_client()

    async def batch(self, scenario: str, n: int) -> tuple[float, float]:
        app, environ = self.app, self.environs[scenario]

        def start_response(status: str, headers: Any, exc: Any = None) -> Any:
            return None

        sends = Counter.sends
        start = time.perf_counter()
        for _ in range(n):
            body = app(environ.copy(), start_response)
            for _chunk in body:
                pass
            if hasattr(body, "close"):
                body.close()
        return (time.perf_counter() - start) / n, (Counter.sends - sends) / n


# -- PING: the cost of one round trip ----------------------------------------------------------


class PingCase:
    def __init__(self, impl: str, port: int) -> None:
        self.impl = impl
        self.sync = sync_client(port) if impl == "ping-sync" else None
        self.aio = async_client(port) if impl == "ping-async" else None

    async def setup(self) -> None:
        await self.batch("read", 10)

    async def batch(self, scenario: str, n: int) -> tuple[float, float]:
        sends = Counter.sends
        start = time.perf_counter()
        if self.sync is not None:
            ping = self.sync.ping
            for _ in range(n):
                ping()
        else:
            assert self.aio is not None
            aping = self.aio.ping
            for _ in range(n):
                await aping()
        return (time.perf_counter() - start) / n, (Counter.sends - sends) / n

    async def close(self) -> None:
        if self.sync is not None:
            self.sync.close()
        if self.aio is not None:
            await self.aio.aclose()


Case = AsgiCase | WsgiCase | PingCase


def make_case(impl: str, port: int) -> Case:
    if impl.startswith("ping"):
        return PingCase(impl, port)
    if impl in ("coatcheck-asgi", "coatcheck-asgi-memory", "starsessions", "bare-starlette"):
        return AsgiCase(impl, port)
    return WsgiCase(impl, port)


# -- running ---------------------------------------------------------------------------------

Times = dict[str, dict[str, list[float]]]  # impl -> scenario -> µs per request, per round


async def check(cases: dict[str, Case]) -> None:
    """Fail loudly if a scenario does not do what it claims."""
    for impl, case in cases.items():
        if impl.startswith(("ping", "bare")):
            continue
        await case.batch("read", 1)
        assert last_read == tuple(SEED.values()), (impl, last_read)


async def measure(
    cases: dict[str, Case], rounds: int, requests: int, seed: int
) -> tuple[Times, dict[str, dict[str, float]]]:
    jobs = [(impl, s) for impl in cases for s in SCENARIOS]
    times: Times = {impl: {s: [] for s in SCENARIOS} for impl in cases}
    trips: dict[str, dict[str, float]] = {impl: {} for impl in cases}
    shuffle = random.Random(seed).shuffle
    for _ in range(rounds):
        shuffle(jobs)
        for impl, scenario in jobs:
            wall, sends = await cases[impl].batch(scenario, requests)
            times[impl][scenario].append(wall * 1e6)
            trips[impl][scenario] = sends
    return times, trips


def fill(port: int, sessions: int, value_size: int) -> tuple[int, float]:
    """Add `sessions` anonymous records of `value_size` bytes in coatcheck's layout; returns
    the growth of Redis's used memory and the seconds it took."""
    from coatcheck.stores.redis import _encode

    client = redis.Redis(host="127.0.0.1", port=port)
    before = int(client.info("memory")["used_memory"])
    started = time.perf_counter()
    data = os.urandom(max(0, value_size - 5))
    pipe = client.pipeline(transaction=False)
    for i in range(sessions):
        key = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
        pipe.set(f"fill:s:{{{key}}}", _encode(1, None, data), px=3_600_000)
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    grown = int(client.info("memory")["used_memory"]) - before
    client.close()
    return grown, time.perf_counter() - started


def indexed_memory(port: int, sessions: int, value_size: int) -> tuple[float, float]:
    """Bytes per anonymous and per logged-in session (record plus its entry in its user's
    index, one user each), saved through `RedisStore` itself into an emptied server (so
    the growth of a big keyspace's hash tables does not count against them)."""
    from coatcheck.stores import RedisStore

    client = redis.Redis(host="127.0.0.1", port=port)
    client.flushall()
    store = RedisStore(client, prefix="mem:")
    data = os.urandom(max(0, value_size - 20))
    per_session = []
    for user in (False, True):
        before = int(client.info("memory")["used_memory"])
        for i in range(sessions):
            key = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
            store.save(key, data, version=0, ttl=3600, user=f"user-{i}" if user else None)
        per_session.append((int(client.info("memory")["used_memory"]) - before) / sessions)
    client.close()
    return per_session[0], per_session[1]


def median(values: list[float]) -> float:
    return statistics.median(values)


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def overhead(times: Times, impl: str, scenario: str) -> list[float]:
    bare = times[BARE[impl]][scenario]
    return [t - b for t, b in zip(times[impl][scenario], bare, strict=True)]


def machine(port: int) -> list[str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    client = redis.Redis(host="127.0.0.1", port=port)
    server = client.info("server")["redis_version"]
    client.close()
    try:
        import hiredis  # noqa: F401

        parser = "hiredis"
    except ImportError:
        parser = "pure-Python parser (hiredis not installed)"
    return [
        f"Python {platform.python_version()}, {platform.system()} {platform.machine()}, "
        f"CPU: {cpu}, {os.cpu_count()} logical CPUs",
        f"Redis {server} on loopback TCP; redis-py {version('redis')} with {parser}",
        f"starlette {version('starlette')}, starsessions {version('starsessions')}, "
        f"Flask {version('flask')}, Flask-Session {version('flask-session')}, "
        f"Django {version('django')}, coatcheck {version('coatcheck')}",
    ]


def report(
    args: argparse.Namespace,
    port: int,
    times: Times,
    trips: dict[str, dict[str, float]],
    large: tuple[Times, int, float, float, tuple[float, float]],
    elapsed: float,
) -> str:
    ping = {
        "async": median(times["ping-async"]["read"]),
        "sync": median(times["ping-sync"]["read"]),
    }
    lines = [
        f"Command: `.venv/bin/python bench/redis_overhead.py --rounds {args.rounds} "
        f"--requests {args.requests} --sessions {args.sessions} --indexed {args.indexed}` "
        f"({elapsed:.0f} s)",
        "",
        *[f"- {m}" for m in machine(port)],
        f"- one round trip (`PING`, same rounds): {ping['sync']:.1f} µs sync, "
        f"{ping['async']:.1f} µs async (redis.asyncio)",
        "",
        "Median wall-clock µs per request over the bare app of the same framework "
        "(inter-quartile range over rounds in brackets), and Redis round trips per request.",
        "",
        "| implementation | read: µs | read: trips | write: µs | write: trips |",
        "|---|---:|---:|---:|---:|",
    ]
    for impl in (*IMPLS, *INFO, "bare-starlette", "bare-flask", "bare-django"):
        cells = []
        for s in SCENARIOS:
            values = times[impl][s] if impl.startswith("bare") else overhead(times, impl, s)
            q1, q2, q3 = quartiles(values)
            sign = "" if impl.startswith("bare") else "+"
            cells += [f"{sign}{q2:.1f} [{q1:.1f}–{q3:.1f}]", f"{trips[impl][s]:g}"]
        lines.append(f"| {LABELS[impl]} | " + " | ".join(cells) + " |")

    lines += [
        "",
        "Targets. Budget: coatcheck's round trips × one `PING` (async for ASGI, sync for "
        "Flask) + 30 µs. Peer ratio: the best (lowest-overhead) peer's overhead divided by "
        "coatcheck's; targets ≥ 1.7 for writes, ≥ 3 for reads.",
        "",
        "| check | read | write | target |",
        "|---|---:|---:|---|",
    ]
    for impl, kind in (("coatcheck-asgi", "async"), ("coatcheck-flask", "sync")):
        want = {"read": 1, "write": 2}
        cells = [
            f"{trips[impl][s]:g} {'✓' if trips[impl][s] <= want[s] else '✗'}" for s in SCENARIOS
        ]
        lines.append(f"| {impl}: round trips | " + " | ".join(cells) + " | 1 read, 2 write |")
        cells = []
        for s in SCENARIOS:
            over = median(overhead(times, impl, s))
            budget = trips[impl][s] * ping[kind] + 30
            cells.append(f"{over:.1f} / {budget:.1f} {'✓' if over <= budget else '✗'}")
        lines.append(f"| {impl}: overhead / budget (µs) | " + " | ".join(cells) + " | ≤ budget |")
        cells = []
        for s, limit in (("read", 3.0), ("write", 1.7)):
            peer_over = {p: median(overhead(times, p, s)) for p in PEERS}
            best = min(peer_over, key=lambda p: peer_over[p])
            ratio = peer_over[best] / median(overhead(times, impl, s))
            cells.append(f"{ratio:.2f} vs {best} {'✓' if ratio >= limit else '✗'}")
        lines.append(f"| {impl}: best peer / coatcheck | " + " | ".join(cells) + " | ≥ 3, ≥ 1.7 |")

    times_large, filled, grown, fill_seconds, indexed = large
    small_over = {s: median(overhead(times, "coatcheck-asgi", s)) for s in SCENARIOS}
    large_over = {s: median(overhead(times_large, "coatcheck-asgi", s)) for s in SCENARIOS}
    large_ping = median(times_large["ping-async"]["read"])
    lines += [
        "",
        f"Stored sessions: coatcheck-asgi overhead (µs, median) with ~1k sessions in Redis "
        f"and after adding {filled:,} more ({fill_seconds:.0f} s to fill).",
        "",
        "| sessions in Redis | read | write | async `PING` |",
        "|---|---:|---:|---:|",
        f"| ~1k | +{small_over['read']:.1f} | +{small_over['write']:.1f} | {ping['async']:.1f} |",
        f"| {filled:,} | +{large_over['read']:.1f} | +{large_over['write']:.1f} "
        f"| {large_ping:.1f} |",
        "",
        f"Redis memory per stored session (`used_memory` growth / sessions): "
        f"{grown / filled:.0f} B for an anonymous session of {args.value_size} B at "
        f"{filled:,} sessions. Saved through `RedisStore` into an emptied server, "
        f"{args.indexed:,} of each: {indexed[0]:.0f} B per anonymous session, "
        f"{indexed[1]:.0f} B per logged-in one (record plus its user-index entry, one user "
        "each).",
    ]
    return "\n".join(lines)


async def main_async(args: argparse.Namespace, port: int) -> str:
    started = time.perf_counter()
    impls = (
        "bare-starlette",
        "bare-flask",
        "bare-django",
        *IMPLS,
        *INFO,
        "ping-sync",
        "ping-async",
    )
    cases = {impl: make_case(impl, port) for impl in impls}
    for case in cases.values():
        await case.setup()
    await check(cases)
    # ~1k stored sessions: one per seeded client plus filler.
    fill(port, 1000, args.value_size)
    for case in cases.values():
        for scenario in SCENARIOS:
            await case.batch(scenario, args.warmup)
    times, trips = await measure(cases, args.rounds, args.requests, args.seed)

    grown, fill_seconds = fill(port, args.sessions, args.value_size)
    small = {i: cases[i] for i in ("bare-starlette", "coatcheck-asgi", "ping-async")}
    for case in small.values():
        for scenario in SCENARIOS:
            await case.batch(scenario, args.warmup)
    times_large, _ = await measure(small, args.rounds, args.requests, args.seed + 1)
    indexed = indexed_memory(port, args.indexed, args.value_size)
    for case in cases.values():
        await case.close()
    elapsed = time.perf_counter() - started
    large = (times_large, args.sessions, grown, fill_seconds, indexed)
    return report(args, port, times, trips, large, elapsed)


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=200, help="requests per batch")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--sessions", type=int, default=1_000_000, help="sessions to fill")
    parser.add_argument("--indexed", type=int, default=50_000, help="logged-in sessions")
    parser.add_argument("--value-size", type=int, default=0, help="0: the seeded session's")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(list(argv) if argv is not None else None)
    with running_redis() as server:
        if args.value_size == 0:
            args.value_size = seeded_size(server.port)
        gc.collect()
        print(asyncio.run(main_async(args, server.port)))


def seeded_size(port: int) -> int:
    """The size of the value coatcheck stores for the benchmark's seeded session."""

    async def run() -> int:
        case = AsgiCase("coatcheck-asgi", port)
        await case.setup()
        await case.close()
        client = redis.Redis(host="127.0.0.1", port=port)
        sizes = [client.strlen(key) for key in client.scan_iter("bench:s:*")]
        client.flushall()
        client.close()
        return max(sizes)

    return asyncio.run(run())


if __name__ == "__main__":
    main()
