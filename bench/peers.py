"""The apps `bench/table.py` measures, and the browser-like client that drives them.

Every implementation serves the same views, one per path, in its own framework:

  /seed      sets the 5 keys of `SEED` (a session is seeded with one such request)
  /write     sets one key to a new value
  /read      reads the 5 keys, changes nothing
  /new       sets one key (requested without a session cookie: a new visitor)
  /none      never touches the session
  /probe     copies the session's keys into `state.probed` (for the checks only)

ASGI implementations are one Starlette app (routes as in `asgi_overhead.py`) wrapped in the
session middleware under test; Flask and Django ones are WSGI apps as in `frameworks.py`.
A bare app of each framework serves the same views from a plain dict, so that subtracting
its time leaves the session layer's cost.

A `Target` runs one request without sockets (only Redis stores open connections):
`await app(scope, receive, send)` on a private event loop (`run_until_complete`, one task
per request), or `app(environ, start_response)`; `make` builds the request, `call` runs it,
`set_cookies` reads the response's `Set-Cookie` values. A `Visitor` is one browser for
one scenario: its `CookieJar` keeps what responses set and sends it back.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import importlib
import io
import sys
import time
import types
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SEED: dict[str, Any] = {
    "user_id": 4217,
    "theme": "dark",
    "lang": "en-GB",
    "cart": [3, 14, 15],
    "flash": "Welcome back!",
}
SECRET_KEY = "benchmark-only-not-a-secret"
GA_COOKIE = "_ga=GA1.1.123456789.1700000000"  # an unrelated cookie every browser request has
HOST = "app.example"
HEADERS = [  # as bench/asgi_instructions.py's HEADERS
    (b"host", HOST.encode()),
    (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
    (b"accept", b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    (b"accept-language", b"en-GB,en;q=0.5"),
    (b"accept-encoding", b"gzip, deflate, br, zstd"),
    (b"sec-fetch-dest", b"document"),
    (b"sec-fetch-mode", b"navigate"),
    (b"sec-fetch-site", b"same-origin"),
]
WSGI_HEADERS = {
    "HTTP_" + name.decode().upper().replace("-", "_"): value.decode() for name, value in HEADERS
}
SCENARIOS = ("write", "read", "new", "no-touch")
PATHS = {
    "seed": "/seed",
    "write": "/write",
    "read": "/read",
    "new": "/new",
    "no-touch": "/none",
    "probe": "/probe",
}


# -- the views: the same actions in every framework ----------------------------------------------


class State:
    """What the views saw, for the checks (module-level, shared by every app)."""

    written = 0  # the value /write set last
    last_read: tuple[Any, ...] = ()
    probed: dict[str, Any] = {}


state = State()
fallback: dict[str, Any] = dict(SEED)  # the bare apps' "session"


def do_seed(session: MutableMapping[str, Any]) -> None:
    session.update(SEED)


def do_write(session: MutableMapping[str, Any]) -> None:
    state.written += 1
    session["counter"] = state.written


def do_read(session: MutableMapping[str, Any]) -> None:
    state.last_read = tuple(session[key] for key in SEED)


def do_new(session: MutableMapping[str, Any]) -> None:
    session["visits"] = 1


def do_probe(session: MutableMapping[str, Any]) -> None:
    state.probed = {key: session.get(key) for key in (*SEED, "counter", "visits")}


#: path -> what the view does with the session (None: it never touches it)
ACTIONS: dict[str, Callable[[MutableMapping[str, Any]], None] | None] = {
    PATHS["seed"]: do_seed,
    PATHS["write"]: do_write,
    PATHS["read"]: do_read,
    PATHS["new"]: do_new,
    PATHS["no-touch"]: None,
    PATHS["probe"]: do_probe,
}


# -- the implementations -------------------------------------------------------------------------


@dataclass(frozen=True)
class Impl:
    framework: str  # "asgi", "flask" or "django"
    label: str
    redis: bool = False  # needs the throw-away Redis


IMPLS: dict[str, Impl] = {
    "bare-asgi": Impl("asgi", "bare Starlette app"),
    "starsessions-memory": Impl("asgi", "starsessions 2 + `InMemoryStore`"),
    "starsessions-redis": Impl("asgi", "starsessions 2 + `RedisStore`", redis=True),
    "starlette-cookie": Impl("asgi", "Starlette `SessionMiddleware` (signed cookie)"),
    "coatcheck-asgi-memory": Impl("asgi", "coatcheck `ServerSide(MemoryStore())`"),
    "coatcheck-asgi-sqlite": Impl("asgi", "coatcheck `ServerSide(SQLiteStore(file))`"),
    "coatcheck-asgi-redis": Impl("asgi", 'coatcheck `ServerSide("redis://...")`', redis=True),
    "coatcheck-asgi-client": Impl("asgi", "coatcheck `ClientSide(keys, store=None)` (JWS)"),
    "coatcheck-asgi-client-reg": Impl(
        "asgi", 'coatcheck `ClientSide(keys, store="memory://")` (JWS + registry)'
    ),
    "bare-flask": Impl("flask", "bare Flask app"),
    "flask-session-redis": Impl("flask", 'Flask-Session `SESSION_TYPE="redis"`', redis=True),
    "coatcheck-flask-redis": Impl(
        "flask", 'coatcheck Flask `SessionInterface`, `ServerSide("redis://...")`', redis=True
    ),
    "bare-django": Impl("django", "bare Django app"),
    "django-cache-locmem": Impl("django", "Django `SESSION_ENGINE` cache, `LocMemCache`"),
    "django-signed-cookies": Impl("django", "Django `SESSION_ENGINE` signed_cookies"),
    "coatcheck-django-sqlite": Impl(
        "django", 'coatcheck Django engine, `COATCHECK = {"store": "sqlite:///file"}`'
    ),
}
BARE = {"asgi": "bare-asgi", "flask": "bare-flask", "django": "bare-django"}
#: Redis database of each implementation on the shared server (they never see each other).
REDIS_DB = {
    "starsessions-redis": 1,
    "coatcheck-asgi-redis": 2,
    "flask-session-redis": 3,
    "coatcheck-flask-redis": 4,
}


def cpu_model() -> str:
    """The CPU's model name, as the reports print it ("unknown" off Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def coatcheck_build() -> str:
    """Whether the measured core is compiled (an older tree has no `coatcheck.compiled`)."""
    import coatcheck

    compiled = getattr(coatcheck, "compiled", None)
    return "build unknown" if compiled is None else "compiled core" if compiled else "pure Python"


def http_scope(
    path: str, headers: list[tuple[bytes, bytes]], scheme: str = "http"
) -> dict[str, Any]:
    """The ASGI scope of a plain GET of `path` with `headers`, as a server on loopback
    hands it to the app."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": scheme,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


def keyring() -> Any:
    from coatcheck import KeyRing

    return KeyRing([hashlib.sha256(SECRET_KEY.encode()).digest()])


# -- ASGI ----------------------------------------------------------------------------------------


def starlette_app(impl: str, redis_port: int | None, tmp: Path) -> tuple[Any, Any, list[Any]]:
    """The Starlette app of `impl`, coatcheck's manager (or None), things to close."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    def endpoint(action: Callable[[MutableMapping[str, Any]], None] | None) -> Any:
        async def view(request: Request) -> PlainTextResponse:
            if action is not None:
                session = request.scope.get("session")
                action(fallback if session is None else session)
            return PlainTextResponse("ok")

        return view

    routes = [Route(path, endpoint(action)) for path, action in ACTIONS.items()]
    middleware: list[Middleware] = []
    manager = None
    closing: list[Any] = []
    if impl == "starsessions-memory":
        from starsessions import InMemoryStore, SessionAutoloadMiddleware, SessionMiddleware

        middleware = [
            Middleware(SessionMiddleware, store=InMemoryStore()),
            Middleware(SessionAutoloadMiddleware),
        ]
    elif impl == "starsessions-redis":
        import redis.asyncio
        from starsessions import SessionAutoloadMiddleware, SessionMiddleware
        from starsessions.stores.redis import RedisStore

        client = redis.asyncio.Redis.from_url(redis_url(impl, redis_port))
        closing.append(client)
        middleware = [
            Middleware(SessionMiddleware, store=RedisStore(connection=client)),
            Middleware(SessionAutoloadMiddleware),
        ]
    elif impl == "starlette-cookie":
        from starlette.middleware.sessions import SessionMiddleware

        middleware = [Middleware(SessionMiddleware, secret_key=SECRET_KEY, https_only=True)]
    elif impl.startswith("coatcheck-asgi-"):
        from coatcheck import ClientSide, ServerSide, SessionManager
        from coatcheck.adapters.asgi import SessionMiddleware
        from coatcheck.stores import MemoryStore, SQLiteStore

        mode: Any
        if impl == "coatcheck-asgi-memory":
            mode = ServerSide(MemoryStore())
        elif impl == "coatcheck-asgi-sqlite":
            mode = ServerSide(SQLiteStore(tmp / "asgi.db"))
        elif impl == "coatcheck-asgi-redis":
            mode = ServerSide(redis_url(impl, redis_port))
        elif impl == "coatcheck-asgi-client":
            mode = ClientSide(keyring(), store=None)
        else:
            mode = ClientSide(keyring(), store="memory://")
        manager = SessionManager(mode)
        middleware = [Middleware(SessionMiddleware, manager=manager)]
        closing.append(mode)
    return Starlette(routes=routes, middleware=middleware), manager, closing


def redis_url(impl: str, port: int | None) -> str:
    if port is None:
        raise SystemExit(f"{impl} needs Redis")
    return f"redis://127.0.0.1:{port}/{REDIS_DB[impl]}"


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


class Target:
    """One implementation, built and ready to serve requests."""

    impl: str
    manager: Any  # coatcheck's SessionManager, None for peers and bare apps

    def make(self, path: str, cookie: str) -> Any:
        """The request (scope or environ) for `path` with this Cookie header."""
        raise NotImplementedError

    def call(self, request: Any) -> None:
        """Serve `request`; `ok`, `status_text` and `set_cookies` then read its response."""
        raise NotImplementedError

    def set_cookies(self) -> list[str]:
        """The Set-Cookie values of the last response."""
        raise NotImplementedError

    def ok(self) -> bool:
        """Whether the last response was a 200."""
        raise NotImplementedError

    def status_text(self) -> str:
        raise NotImplementedError

    def store(self) -> Any:
        """The store object coatcheck's driver calls for this app (None: none)."""
        return None

    def close(self) -> None:
        pass


class AsgiTarget(Target):
    def __init__(self, impl: str, loop: asyncio.AbstractEventLoop, port: int | None, tmp: Path):
        self.impl = impl
        self.loop = loop
        self.app, self.manager, self.closing = starlette_app(impl, port, tmp)
        self.start: MutableMapping[str, Any] = {}
        self.base = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "https",
            "root_path": "",
            "query_string": b"",
            "client": ("203.0.113.7", 52814),
            "server": (HOST, 443),
        }

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.start = message

        self.send = send

    def make(self, path: str, cookie: str) -> Any:
        scope = dict(self.base)
        scope["path"] = path
        scope["raw_path"] = path.encode()
        scope["headers"] = [*HEADERS, (b"cookie", cookie.encode("latin-1"))]
        scope["state"] = {}
        return scope

    def call(self, request: Any) -> None:
        self.loop.run_until_complete(self.app(request, _receive, self.send))

    def set_cookies(self) -> list[str]:
        return [
            value.decode("latin-1")
            for name, value in self.start.get("headers", ())
            if name.lower() == b"set-cookie"
        ]

    def ok(self) -> bool:
        return self.start.get("status") == 200

    def status_text(self) -> str:
        return str(self.start.get("status"))

    def store(self) -> Any:
        return None if self.manager is None else self.manager.mode.async_store

    def close(self) -> None:
        for thing in self.closing:
            if hasattr(thing, "aclose"):
                self.loop.run_until_complete(thing.aclose())


# -- WSGI: Flask and Django ----------------------------------------------------------------------


def flask_app(impl: str, redis_port: int | None) -> tuple[Any, Any]:
    from flask import Flask, session

    app = Flask(f"bench_{impl.replace('-', '_')}")
    app.config.update(SECRET_KEY=SECRET_KEY, SESSION_COOKIE_SECURE=True)
    bare = impl == "bare-flask"
    for path, action in ACTIONS.items():

        def view(action: Callable[[MutableMapping[str, Any]], None] | None = action) -> str:
            if action is not None:
                action(fallback if bare else session)
            return "ok"

        app.add_url_rule(path, path.strip("/"), view)
    manager = None
    if impl == "flask-session-redis":
        import redis
        from flask_session import Session

        client = redis.Redis.from_url(redis_url(impl, redis_port))
        app.config.update(SESSION_TYPE="redis", SESSION_REDIS=client)
        Session(app)
    elif impl == "coatcheck-flask-redis":
        from coatcheck import ServerSide, SessionManager
        from coatcheck.adapters.flask import SessionInterface

        manager = SessionManager(ServerSide(redis_url(impl, redis_port)))
        SessionInterface(manager).init_app(app)
    return app.wsgi_app, manager


_django_ready = False


def django_setup(tmp: Path) -> None:
    """Configure Django once per process: the views' URLconf, a LocMemCache, coatcheck's
    store (a SQLite file in `tmp`). Each app picks its engine and middleware when built."""
    global _django_ready
    if _django_ready:
        return
    import django
    from django.conf import settings
    from django.http import HttpRequest, HttpResponse
    from django.urls import path as route

    urls = types.ModuleType("bench_table_urls")
    sys.modules[urls.__name__] = urls
    settings.configure(
        SECRET_KEY=SECRET_KEY,
        DEBUG=False,
        ALLOWED_HOSTS=[HOST],
        USE_TZ=True,
        INSTALLED_APPS=[],
        ROOT_URLCONF=urls.__name__,
        MIDDLEWARE=[],
        CACHES={
            "default": {
                "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                "OPTIONS": {"MAX_ENTRIES": 10_000_000},
            }
        },
        COATCHECK={"store": f"sqlite:///{tmp.resolve() / 'django.db'}"},
        LOGGING_CONFIG=None,
    )
    django.setup()

    def endpoint(action: Callable[[MutableMapping[str, Any]], None] | None) -> Any:
        def view(request: HttpRequest) -> HttpResponse:
            if action is not None:
                action(getattr(request, "session", fallback))
            return HttpResponse("ok")

        return view

    urls.urlpatterns = [  # type: ignore[attr-defined]  # a module built at run time
        route(path.strip("/"), endpoint(action)) for path, action in ACTIONS.items()
    ]
    _django_ready = True


def django_app(impl: str, tmp: Path) -> tuple[Any, Any]:
    django_setup(tmp)
    from django.core.handlers.wsgi import WSGIHandler
    from django.test import override_settings

    engine = {
        "django-cache-locmem": "django.contrib.sessions.backends.cache",
        "django-signed-cookies": "django.contrib.sessions.backends.signed_cookies",
        "coatcheck-django-sqlite": "coatcheck.adapters.django",
    }.get(impl)
    middleware = []
    if engine is not None:
        middleware = [
            "coatcheck.adapters.django.SessionMiddleware"
            if impl.startswith("coatcheck")
            else "django.contrib.sessions.middleware.SessionMiddleware"
        ]
    # The session middleware reads both settings when the handler is built, never after.
    with override_settings(MIDDLEWARE=middleware, SESSION_ENGINE=engine or "unused"):
        handler = WSGIHandler()
    manager = None
    if engine == "coatcheck.adapters.django":
        from coatcheck.adapters.django.config import get_manager

        manager = get_manager()
    return handler, manager


class WsgiTarget(Target):
    def __init__(self, impl: str, port: int | None, tmp: Path) -> None:
        self.impl = impl
        if IMPLS[impl].framework == "flask":
            self.app, self.manager = flask_app(impl, port)
        else:
            self.app, self.manager = django_app(impl, tmp)
        self.status, self.raw_headers = "", []
        self.base = {
            "REQUEST_METHOD": "GET",
            "SCRIPT_NAME": "",
            "QUERY_STRING": "",
            "SERVER_NAME": HOST,
            "SERVER_PORT": "443",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "203.0.113.7",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "https",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            **WSGI_HEADERS,
        }

        def start_response(status: str, headers: list[tuple[str, str]], exc: Any = None) -> Any:
            self.status, self.raw_headers = status, headers
            return _ignore

        self.start_response = start_response

    def make(self, path: str, cookie: str) -> Any:
        environ = dict(self.base)
        environ["PATH_INFO"] = path
        environ["HTTP_COOKIE"] = cookie
        environ["wsgi.input"] = io.BytesIO(b"")
        return environ

    def call(self, request: Any) -> None:
        body: Iterable[bytes] = self.app(request, self.start_response)
        try:
            for _ in body:
                pass
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()

    def set_cookies(self) -> list[str]:
        return [value for name, value in self.raw_headers if name.lower() == "set-cookie"]

    def ok(self) -> bool:
        return str(self.status).startswith("200")

    def status_text(self) -> str:
        return str(self.status)

    def store(self) -> Any:
        return None if self.manager is None else self.manager.mode.store


def _ignore(data: bytes) -> None:
    return None


#: What each framework's apps import: `preload` imports it before `table.py` forks.
MODULES = {
    "asgi": (
        "redis.asyncio",
        "starlette.applications",
        "starlette.middleware.sessions",
        "starlette.responses",
        "starlette.routing",
        "starsessions",
        "starsessions.stores.redis",
        "coatcheck.adapters.asgi",
        "coatcheck.stores.memory",
        "coatcheck.stores.redis",
        "coatcheck.stores.sqlite",
    ),
    "flask": ("redis", "flask", "flask_session", "coatcheck.adapters.flask"),
    "django": (
        "django.contrib.sessions.backends.cache",
        "django.contrib.sessions.backends.signed_cookies",
        "django.contrib.sessions.middleware",
        "django.core.handlers.wsgi",
        "django.http",
        "django.test",
        "django.urls",
        "coatcheck.adapters.django.middleware",
        "coatcheck.adapters.django.store",
        "coatcheck.stores.sqlite",
    ),
}


def preload(frameworks: Iterable[str]) -> None:
    """Import the modules of `frameworks`' apps (nothing is configured or started)."""
    for framework in frameworks:
        for module in MODULES[framework]:
            importlib.import_module(module)


def build(
    impl: str, *, loop: asyncio.AbstractEventLoop, redis_port: int | None, tmp: Path
) -> Target:
    if IMPLS[impl].framework == "asgi":
        return AsgiTarget(impl, loop, redis_port, tmp)
    return WsgiTarget(impl, redis_port, tmp)


# -- the browser ---------------------------------------------------------------------------------


class CookieJar:
    """A browser's cookies for one site, as far as sessions need them.

    `receive` takes one `Set-Cookie` value: it keeps the latest value of each cookie, and
    drops the cookie when the response expires it (`Max-Age` of 0 or less, or else an
    `Expires` date in the past; `Max-Age` wins, as in RFC 6265). Parsing is plain string
    work (no `http.cookies`, which is slow and rejects values browsers accept); other
    attributes (`Path`, `Secure`, ...) are ignored, as every request goes to `/` over HTTPS.
    `header` is the request's `Cookie` header: `_ga` (an unrelated cookie a browser also
    sends) and then every cookie kept.
    """

    def __init__(self) -> None:
        self.cookies: dict[str, str] = {}
        self._header: str | None = GA_COOKIE

    def copy(self) -> CookieJar:
        jar = CookieJar()
        jar.cookies = dict(self.cookies)
        jar._header = None
        return jar

    def receive(self, set_cookie: str) -> None:
        pair, _, attributes = set_cookie.partition(";")
        name, equals, value = pair.partition("=")
        name, value = name.strip(), value.strip()
        if not equals or not name:
            return  # not a cookie: browsers ignore it
        max_age = expires = None
        for attribute in attributes.split(";"):
            key, _, argument = attribute.partition("=")
            key = key.strip().lower()
            if key == "max-age":
                max_age = argument.strip()
            elif key == "expires":
                expires = argument.strip()
        if max_age is not None and max_age.lstrip("-").isdigit():
            gone = int(max_age) <= 0
        else:
            gone = expires is not None and _in_the_past(expires)
        if gone:
            self.cookies.pop(name, None)
        else:
            self.cookies[name] = value
        self._header = None

    def header(self) -> str:
        if self._header is None:
            pairs = [f"{name}={value}" for name, value in self.cookies.items()]
            self._header = "; ".join([GA_COOKIE, *pairs])
        return self._header


def _in_the_past(date: str) -> bool:
    try:
        when = email.utils.parsedate_tz(date.replace("-", " "))
    except (TypeError, ValueError):
        return False
    if when is None:
        return False  # a date that cannot be read is ignored (RFC 6265 5.2.1)
    return email.utils.mktime_tz(when) < time.time()


class Visitor:
    """One browser doing one scenario: `cookie()` before each request, `receive(...)` after.
    With `fresh`, each request starts from an empty jar (a new visitor every time)."""

    def __init__(self, jar: CookieJar | None) -> None:
        self.fresh = jar is None
        self.jar = CookieJar() if jar is None else jar

    def cookie(self) -> str:
        if self.fresh:
            self.jar = CookieJar()
        return self.jar.header()

    def receive(self, set_cookies: list[str]) -> None:
        for value in set_cookies:
            self.jar.receive(value)


def request(target: Target, path: str, visitor: Visitor) -> list[str]:
    """One request with `visitor`'s cookies; returns the response's Set-Cookie values."""
    target.call(target.make(path, visitor.cookie()))
    if not target.ok():
        raise AssertionError(f"{target.impl} {path}: status {target.status_text()}")
    cookies = target.set_cookies()
    visitor.receive(cookies)
    return cookies
