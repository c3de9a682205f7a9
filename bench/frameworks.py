"""Per-request overhead of Flask and Django session backends, in one process.

Each implementation serves the same views (one per scenario) and is driven directly
through WSGI: `app(environ, start_response)` with a prebuilt environ and a body that is
read and closed. No HTTP client, no sockets: what is measured is the session machinery
(interface or middleware, engine, store round trips), not a client.

Flask (`flask-*`, `coatcheck-flask-*`):
  flask-bare               the app with no session (the views use a plain dict)
  flask-cookie             Flask's default signed-cookie session
  flask-session-redis      Flask-Session 0.8, SESSION_TYPE="redis"
  coatcheck-flask-client   coatcheck `SessionInterface`, ClientSide (signed token, no store)
  coatcheck-flask-memory   ... ServerSide(MemoryStore())
  coatcheck-flask-sqlite   ... ServerSide(SQLiteStore(<temp file>))
  coatcheck-flask-redis    ... ServerSide(RedisStore(<the same redis-server>))
Django (`django-*`, `coatcheck-django-*`):
  django-bare              no session middleware (the views use a plain dict)
  django-signed-cookies    SESSION_ENGINE signed_cookies
  django-cache-locmem      SESSION_ENGINE cache, LocMemCache
  django-cache-redis       SESSION_ENGINE cache, django.core.cache.backends.redis.RedisCache
  coatcheck-django-memory  SESSION_ENGINE coatcheck.adapters.django, MemoryStore
  coatcheck-django-sqlite  ... SQLiteStore(<temp file>)
  coatcheck-django-redis   ... RedisStore(<the same redis-server>)
coatcheck's Django rows use its `SessionMiddleware` (IP and user agent for listings), the
others Django's.

Scenarios (GET, browser-like headers):
  read   cookie present, the view reads the session's 5 small keys, changes nothing
  write  cookie present, the view sets one key (a new value every request)
  new    no cookie, the view sets one key: a new visitor's session is created

Redis is a throw-away `redis-server` on a free loopback port (no persistence), started
and stopped by this script. Method, as `asgi_overhead.py`: warm up, then `--rounds`
rounds; in each, every (implementation, scenario) batch of `--requests` requests runs once,
in a shuffled order. Overhead per round is the batch's mean time per request minus its
framework's bare app in the same round; the tables show the median over rounds (and the
inter-quartile range), and each peer's overhead divided by coatcheck's on the same store;
once for wall-clock time and once for this thread's CPU time, which a busy machine
disturbs less (but which leaves out the time spent waiting for Redis).

    .venv/bin/python bench/frameworks.py                 # ~1 minute on 2 cores
    .venv/bin/python bench/frameworks.py --rounds 3 --requests 100   # quick look
"""

from __future__ import annotations

import argparse
import gc
import io
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from importlib.metadata import version
from itertools import count
from pathlib import Path
from typing import Any

SCENARIOS = ("read", "write", "new")
FLASK = (
    "flask-bare",
    "flask-cookie",
    "flask-session-redis",
    "coatcheck-flask-client",
    "coatcheck-flask-memory",
    "coatcheck-flask-sqlite",
    "coatcheck-flask-redis",
)
DJANGO = (
    "django-bare",
    "django-signed-cookies",
    "django-cache-locmem",
    "django-cache-redis",
    "coatcheck-django-memory",
    "coatcheck-django-sqlite",
    "coatcheck-django-redis",
)
#: (peer, coatcheck on the same store or the nearest one, note)
PAIRS = (
    ("flask-cookie", "coatcheck-flask-client", "both keep the session in a signed cookie"),
    ("flask-session-redis", "coatcheck-flask-redis", "Redis"),
    (
        "django-signed-cookies",
        "coatcheck-django-memory",
        "no store vs in-process store (the Django adapter is server-side only)",
    ),
    ("django-cache-locmem", "coatcheck-django-memory", "in-process memory"),
    ("django-cache-redis", "coatcheck-django-redis", "Redis"),
)
SEED: dict[str, Any] = {
    "user_id": 4217,
    "theme": "dark",
    "lang": "en-GB",
    "cart": [3, 14, 15],
    "flash": "Welcome back!",
}
SECRET_KEY = "benchmark-only-not-a-secret"  # noqa: S105
HEADERS = {
    "HTTP_HOST": "app.example",
    "HTTP_USER_AGENT": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "HTTP_ACCEPT": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "HTTP_ACCEPT_LANGUAGE": "en-GB,en;q=0.5",
    "HTTP_ACCEPT_ENCODING": "gzip, deflate, br, zstd",
    "HTTP_SEC_FETCH_DEST": "document",
    "HTTP_SEC_FETCH_MODE": "navigate",
    "HTTP_SEC_FETCH_SITE": "same-origin",
}
COOKIES = {"flask": "session", "django": "sessionid", "coatcheck-flask": "__Host-session"}

_counter = count()
_fallback: dict[str, Any] = {}  # the bare apps' "session": a plain dict with the same keys
last_read: tuple[Any, ...] = ()


def read_keys(session: Any) -> None:
    global last_read
    last_read = tuple(session[k] for k in SEED)


# -- Redis ------------------------------------------------------------------------------------


@contextmanager
def redis_server() -> Iterator[str]:
    """A throw-away redis-server on a free loopback port; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    directory = tempfile.mkdtemp(prefix="coatcheck-bench-redis-")
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            directory,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)


# -- Flask ------------------------------------------------------------------------------------


def flask_app(impl: str, redis_url: str, tmp: Path) -> Any:
    from flask import Flask, session

    app = Flask(f"bench_{impl}")
    bare = impl == "flask-bare"

    def current() -> Any:
        return _fallback if bare else session

    @app.get("/read")
    def read() -> str:
        read_keys(current())
        return "ok"

    @app.get("/write")
    def write() -> str:
        current()["counter"] = next(_counter)
        return "ok"

    @app.get("/new")
    def new() -> str:
        current()["visits"] = 1
        return "ok"

    @app.get("/seed")
    def seed() -> str:
        current().update(SEED)
        return "ok"

    if impl == "flask-cookie":
        app.secret_key = SECRET_KEY
    elif impl == "flask-session-redis":
        import redis
        from flask_session import Session

        app.config.update(SESSION_TYPE="redis", SESSION_REDIS=redis.Redis.from_url(redis_url))
        Session(app)
    elif impl.startswith("coatcheck-flask-"):
        from coatcheck import ClientSide, KeyRing, ServerSide, SessionManager
        from coatcheck.adapters.flask import SessionInterface
        from coatcheck.stores import MemoryStore, RedisStore, SQLiteStore

        store = impl.removeprefix("coatcheck-flask-")
        mode: Any
        if store == "client":
            mode = ClientSide(KeyRing.generate(), store=None)
        elif store == "memory":
            mode = ServerSide(MemoryStore())
        elif store == "sqlite":
            mode = ServerSide(SQLiteStore(tmp / "flask.db"))
        else:
            mode = ServerSide(RedisStore(f"{redis_url}/2", prefix="bench:"))
        app.session_interface = SessionInterface(SessionManager(mode))
    return app.wsgi_app


# -- Django -----------------------------------------------------------------------------------


def django_setup(redis_url: str, tmp: Path) -> None:
    import django
    from django.conf import settings
    from django.http import HttpRequest, HttpResponse
    from django.urls import path

    def current(request: HttpRequest) -> Any:
        return getattr(request, "session", _fallback)

    def read(request: HttpRequest) -> HttpResponse:
        read_keys(current(request))
        return HttpResponse("ok")

    def write(request: HttpRequest) -> HttpResponse:
        current(request)["counter"] = next(_counter)
        return HttpResponse("ok")

    def new(request: HttpRequest) -> HttpResponse:
        current(request)["visits"] = 1
        return HttpResponse("ok")

    def seed(request: HttpRequest) -> HttpResponse:
        current(request).update(SEED)
        return HttpResponse("ok")

    urls = types.ModuleType("bench_django_urls")
    urls.urlpatterns = [  # type: ignore[attr-defined]  # a module built at run time
        path(f.__name__, f) for f in (read, write, new, seed)
    ]
    sys.modules["bench_django_urls"] = urls
    settings.configure(
        SECRET_KEY=SECRET_KEY,
        DEBUG=False,
        ALLOWED_HOSTS=["app.example"],
        USE_TZ=True,
        INSTALLED_APPS=[],
        ROOT_URLCONF="bench_django_urls",
        MIDDLEWARE=[],
        CACHES={
            "default": {
                "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                "OPTIONS": {"MAX_ENTRIES": 10_000_000},
            },
            "redis": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": f"{redis_url}/1",
            },
        },
        COATCHECK={"store": "memory://"},
    )
    django.setup()
    engines = types.ModuleType("bench_django_engines")
    sys.modules["bench_django_engines"] = engines
    from django.contrib.sessions.backends import cache

    from coatcheck import ServerSide, SessionManager
    from coatcheck.adapters import django as coatcheck_django
    from coatcheck.stores import MemoryStore, RedisStore, SQLiteStore

    class RedisCacheStore(cache.SessionStore):
        def __init__(self, session_key: str | None = None) -> None:
            super().__init__(session_key)
            from django.core.cache import caches

            self._cache = caches["redis"]

    def coatcheck_engine(store: Any) -> type:
        manager = SessionManager(ServerSide(store))

        class Engine(coatcheck_django.SessionStore):
            def __init__(self, session_key: str | None = None, **kwargs: Any) -> None:
                super().__init__(session_key, **kwargs)
                self.manager = manager

        return Engine

    for name, cls in {
        "cache_redis": RedisCacheStore,
        "coatcheck_memory": coatcheck_engine(MemoryStore()),
        "coatcheck_sqlite": coatcheck_engine(SQLiteStore(tmp / "django.db")),
        "coatcheck_redis": coatcheck_engine(RedisStore(f"{redis_url}/3", prefix="bench:")),
    }.items():
        module = types.ModuleType(f"bench_django_engines.{name}")
        module.SessionStore = cls  # type: ignore[attr-defined]  # built at run time
        sys.modules[module.__name__] = module


def django_app(impl: str) -> Any:
    from django.core.handlers.wsgi import WSGIHandler
    from django.test import override_settings

    engine = {
        "django-signed-cookies": "django.contrib.sessions.backends.signed_cookies",
        "django-cache-locmem": "django.contrib.sessions.backends.cache",
        "django-cache-redis": "bench_django_engines.cache_redis",
        "coatcheck-django-memory": "bench_django_engines.coatcheck_memory",
        "coatcheck-django-sqlite": "bench_django_engines.coatcheck_sqlite",
        "coatcheck-django-redis": "bench_django_engines.coatcheck_redis",
    }.get(impl)
    middleware = []
    if engine is not None:
        middleware = [
            "coatcheck.adapters.django.SessionMiddleware"
            if impl.startswith("coatcheck")
            else "django.contrib.sessions.middleware.SessionMiddleware"
        ]
    # The middleware reads both settings when the handler is built; nothing after.
    with override_settings(MIDDLEWARE=middleware, SESSION_ENGINE=engine or "unused"):
        return WSGIHandler()


# -- driving WSGI -----------------------------------------------------------------------------


def make_environ(path: str, cookie: str | None) -> dict[str, Any]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "app.example",
        "SERVER_PORT": "443",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "203.0.113.7",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "https",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        **HEADERS,
    }
    if cookie is not None:
        environ["HTTP_COOKIE"] = f"_ga=GA1.1.123456789.1700000000; {cookie}"
    return environ


def call(app: Any, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]]]:
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started[:] = [status, headers]
        return lambda data: None

    body: Iterable[bytes] = app({**environ, "wsgi.input": io.BytesIO(b"")}, start_response)
    try:
        for _ in body:
            pass
    finally:
        close: Callable[[], None] | None = getattr(body, "close", None)
        if close is not None:
            close()
    return started[0], started[1]


def set_cookie(headers: list[tuple[str, str]]) -> str | None:
    for name, value in headers:
        if name.lower() == "set-cookie" and not value.split("=", 1)[1].startswith(";"):
            return value.split(";", 1)[0]
    return None


class Case:
    def __init__(self, impl: str, app: Any) -> None:
        self.impl = impl
        self.app = app
        self.bare = impl.endswith("-bare")
        self.environs: dict[str, dict[str, Any]] = {}

    def setup(self) -> None:
        cookies: dict[str, str | None] = {}
        for scenario in ("read", "write"):
            status, headers = call(self.app, make_environ("/seed", None))
            assert status.startswith("200"), (self.impl, status)
            cookies[scenario] = set_cookie(headers)
            assert (cookies[scenario] is None) == self.bare, (self.impl, headers)
        for scenario in SCENARIOS:
            self.environs[scenario] = make_environ(f"/{scenario}", cookies.get(scenario))
        if self.bare:
            _fallback.update(SEED)

    def check(self) -> None:
        """Fail loudly if a scenario does not do what it claims for this implementation."""
        status, headers = call(self.app, self.environs["read"])
        assert status.startswith("200") and last_read == tuple(SEED.values()), (
            self.impl,
            last_read,
        )
        if self.impl.startswith("coatcheck"):
            assert set_cookie(headers) is None, f"{self.impl} wrote on a read-only request"
        for scenario in ("write", "new"):
            status, headers = call(self.app, self.environs[scenario])
            assert status.startswith("200"), (self.impl, scenario, status)
        assert (set_cookie(headers) is None) == self.bare, self.impl

    def batch(self, scenario: str, n: int) -> tuple[float, float]:
        """Mean wall-clock and CPU seconds per request over `n` requests."""
        app, environ = self.app, self.environs[scenario]
        started, started_cpu = time.perf_counter(), time.thread_time()
        for _ in range(n):
            call(app, environ)
        return (time.perf_counter() - started) / n, (time.thread_time() - started_cpu) / n


# -- the run ----------------------------------------------------------------------------------

Times = dict[str, dict[str, list[float]]]  # impl -> scenario -> µs per round
CLOCKS = ("wall", "cpu")


def run(rounds: int, requests: int) -> dict[str, tuple[Times, Times]]:
    """Per clock: the absolute times and the overheads over the bare apps."""
    with ExitStack() as stack:
        redis_url = stack.enter_context(redis_server())
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="coatcheck-bench-")))
        django_setup(redis_url, tmp)
        cases = [Case(i, flask_app(i, redis_url, tmp)) for i in FLASK]
        cases += [Case(i, django_app(i)) for i in DJANGO]
        for case in cases:
            case.setup()
            case.check()
            for scenario in SCENARIOS:
                case.batch(scenario, max(20, requests // 5))  # warm up
        absolute: dict[str, Times] = {
            clock: {c.impl: {s: [] for s in SCENARIOS} for c in cases} for clock in CLOCKS
        }
        jobs = [(c, s) for c in cases for s in SCENARIOS]
        rng = random.Random(1)  # noqa: S311 - ordering, not security
        for done in range(rounds):
            rng.shuffle(jobs)
            gc.collect()
            for case, scenario in jobs:
                wall, cpu = case.batch(scenario, requests)
                absolute["wall"][case.impl][scenario].append(wall * 1e6)
                absolute["cpu"][case.impl][scenario].append(cpu * 1e6)
            print(f"round {done + 1}/{rounds}", file=sys.stderr)
    results: dict[str, tuple[Times, Times]] = {}
    for clock, times in absolute.items():
        overhead: Times = {}
        for impl, scenarios in times.items():
            if impl.endswith("-bare"):
                continue
            bare = "flask-bare" if "flask" in impl else "django-bare"
            overhead[impl] = {
                s: [t - b for t, b in zip(scenarios[s], times[bare][s], strict=True)]
                for s in SCENARIOS
            }
        results[clock] = (times, overhead)
    return results


def median_iqr(values: list[float]) -> tuple[float, float]:
    if len(values) < 4:
        return statistics.median(values), 0.0
    q1, _, q3 = statistics.quantiles(values, n=4)
    return statistics.median(values), q3 - q1


def report(
    results: dict[str, tuple[Times, Times]], args: argparse.Namespace, elapsed: float
) -> str:
    lines = [
        f"Command: `.venv/bin/python bench/frameworks.py --rounds {args.rounds} "
        f"--requests {args.requests}` ({elapsed:.0f} s)",
        f"Python {platform.python_version()}, Flask {version('flask')}, Django "
        f"{version('django')}, Flask-Session {version('flask-session')}, redis-py "
        f"{version('redis')}, {os.cpu_count()} CPUs, {platform.machine()}",
    ]
    for clock, (absolute, overhead) in results.items():
        what = {
            "wall": "wall-clock time (includes waiting for Redis)",
            "cpu": "CPU time of this process (steadier on a busy machine; excludes "
            "waiting for Redis)",
        }[clock]
        lines += ["", f"### {what}", *_tables(absolute, overhead)]
    return "\n".join(lines)


def _tables(absolute: Times, overhead: Times) -> list[str]:
    lines = [
        "",
        "Overhead per request over the framework's bare app, µs: median over rounds [IQR].",
        "",
        "| implementation | read | write | new |",
        "|---|---:|---:|---:|",
    ]
    for bare in ("flask-bare", "django-bare"):
        cells = [f"{statistics.median(absolute[bare][s]):.1f} (absolute)" for s in SCENARIOS]
        lines.append(f"| {bare} | " + " | ".join(cells) + " |")
    for impl, scenarios in overhead.items():
        cells = []
        for s in SCENARIOS:
            med, iqr = median_iqr(scenarios[s])
            cells.append(f"{med:.1f} [{iqr:.1f}]")
        lines.append(f"| {impl} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Peer overhead / coatcheck overhead (above 1: coatcheck costs less), medians:",
        "",
        "| peer | coatcheck | same store | read | write | new |",
        "|---|---|---|---:|---:|---:|",
    ]
    for peer, ours, note in PAIRS:
        cells = []
        for s in SCENARIOS:
            theirs, mine = (statistics.median(overhead[x][s]) for x in (peer, ours))
            cells.append(f"{theirs / mine:.2f}" if mine > 0 else "n/a")
        lines.append(f"| {peer} | {ours} | {note} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=300, help="requests per batch")
    args = parser.parse_args()
    started = time.monotonic()
    results = run(args.rounds, args.requests)
    print(report(results, args, time.monotonic() - started))


if __name__ == "__main__":
    main()
