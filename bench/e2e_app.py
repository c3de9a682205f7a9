"""The app `bench/end_to_end.py` serves with uvicorn, wrapped by one session middleware.

One Starlette app, the same for every implementation; the environment says which session
middleware wraps it (a uvicorn `--factory` takes no arguments):

  E2E_IMPL     bare | starlette-cookie | starsessions-memory | starsessions-redis |
               coatcheck-memory | coatcheck-sqlite | coatcheck-redis | coatcheck-client |
               floor-server | floor-client | minimal-server | minimal-client
  E2E_SQLITE   the SQLite file (coatcheck-sqlite)
  E2E_REDIS    the Redis URL (the -redis implementations)

Routes (all GET):
  /seed   sets the session's 5 small keys (one a list): a connection's first request
  /read   reads the 5 keys, changes nothing; 409 if they are not the seeded values
          (the client lost its session)
  /write  sets one key to a new value: `counter` + 1, returned in the body, so the client
          checks that it sent its latest cookie (a stale token would repeat a number)
  /new    sets one key in a session that has none yet (a new visitor)

The two `floor-` implementations are the bare app plus the response headers coatcheck's
server-side (`floor-server`) or client-side (`floor-client`) layer sends on each route,
replayed as fixed bytes by a middleware that does nothing else: recorded at start from the
real layer, the same names, values and sizes (`Set-Cookie` included, which the client sends
back, so the request's `Cookie` header is as long too). What a layer that sends those
headers cannot go below in this server: uvicorn and h11 parse and validate every header,
in Python, per request.

The two `minimal-` implementations (`bench/minimal.py`) are hand-written layers that do
only what coatcheck's security defaults require per request (256-bit IDs hashed at rest or
an HS256 token of the same claims, both deadlines checked, `Vary` and `Cache-Control`) and
none of a library's other work: the floor for any layer with those defaults.

Cookies are alike everywhere: Secure, HttpOnly, SameSite=Lax, Path=/. coatcheck keeps its
default `__Host-session` name; the peers call theirs `session`.

    E2E_IMPL=coatcheck-memory .venv/bin/uvicorn --app-dir bench e2e_app:create_app --factory
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import MutableMapping
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from peers import SECRET_KEY, SEED, http_scope, keyring

IMPLS = (
    "bare",
    "starlette-cookie",
    "starsessions-memory",
    "starsessions-redis",
    "coatcheck-memory",
    "coatcheck-sqlite",
    "coatcheck-redis",
    "coatcheck-client",
    "floor-server",
    "floor-client",
    "minimal-server",
    "minimal-client",
)
FLOORS = {"floor-server": "coatcheck-memory", "floor-client": "coatcheck-client"}
SEEDED = tuple(SEED.values())

_bare: dict[str, Any] = dict(SEED)  # bare's "session": one plain dict for every client


def _session(request: Request) -> MutableMapping[str, Any]:
    session: MutableMapping[str, Any] | None = request.scope.get("session")
    return _bare if session is None else session


async def seed(request: Request) -> PlainTextResponse:
    _session(request).update(SEED)
    return PlainTextResponse("ok")


async def read(request: Request) -> PlainTextResponse:
    s = _session(request)
    if (s.get("user_id"), s.get("theme"), s.get("lang"), s.get("cart"), s.get("flash")) != SEEDED:
        return PlainTextResponse("session lost", status_code=409)
    return PlainTextResponse("ok")


async def write(request: Request) -> PlainTextResponse:
    s = _session(request)
    value = s.get("counter", 0) + 1
    s["counter"] = value
    return PlainTextResponse(str(value))


async def new(request: Request) -> PlainTextResponse:
    _session(request)["visits"] = 1
    return PlainTextResponse("ok")


ROUTES = [Route(f"/{f.__name__}", f) for f in (seed, read, write, new)]


def middleware(impl: str) -> list[Middleware]:
    """The session middleware for `impl`, built as `bench/asgi_overhead.py` and
    `bench/redis_overhead.py` build them."""
    if impl == "bare":
        return []
    if impl == "starlette-cookie":
        from starlette.middleware.sessions import SessionMiddleware

        return [Middleware(SessionMiddleware, secret_key=SECRET_KEY, https_only=True)]
    if impl.startswith("starsessions-"):
        from starsessions import InMemoryStore, SessionAutoloadMiddleware, SessionMiddleware

        store: Any
        if impl == "starsessions-redis":
            import redis.asyncio
            from starsessions.stores.redis import RedisStore

            client = redis.asyncio.Redis.from_url(os.environ["E2E_REDIS"])
            store = RedisStore(connection=client, prefix="starsessions.")
        else:
            store = InMemoryStore()
        return [
            Middleware(SessionMiddleware, store=store, cookie_https_only=True),
            Middleware(SessionAutoloadMiddleware),
        ]
    if impl.startswith("minimal-"):
        from minimal import MinimalClient, MinimalServer

        if impl == "minimal-server":
            return [Middleware(MinimalServer)]
        from coatcheck.keys import JWS_HS256

        current = keyring().current(JWS_HS256)
        return [Middleware(MinimalClient, key=current.secret, kid=current.kid)]
    from coatcheck import ClientSide, ServerSide, SessionManager
    from coatcheck.adapters.asgi import SessionMiddleware as CoatcheckMiddleware
    from coatcheck.stores import MemoryStore, SQLiteStore

    mode: Any
    if impl == "coatcheck-memory":
        mode = ServerSide(MemoryStore())
    elif impl == "coatcheck-sqlite":
        mode = ServerSide(SQLiteStore(os.environ["E2E_SQLITE"]))
    elif impl == "coatcheck-redis":
        mode = ServerSide(os.environ["E2E_REDIS"])
    elif impl == "coatcheck-client":
        mode = ClientSide(keyring(), store=None)
    else:
        raise SystemExit(f"E2E_IMPL={impl!r}: not one of {', '.join(IMPLS)}")
    return [Middleware(CoatcheckMiddleware, manager=SessionManager(mode))]


Headers = list[tuple[bytes, bytes]]


class FixedHeaders:
    """Pure ASGI middleware that appends the same headers to every response of a path."""

    def __init__(self, app: Any, by_path: dict[str, Headers]) -> None:
        self.app = app
        self.by_path = by_path

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        added = self.by_path.get(scope.get("path", ""))
        if not added:
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message["headers"], *added]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def recorded_headers(impl: str) -> dict[str, Headers]:
    """The headers `impl`'s session layer adds to each route's response, as a client that
    keeps its cookie sees them (/seed, /read, /write in one session; /new without one).
    Run on a thread of its own: uvicorn calls the app factory inside its event loop."""
    app = Starlette(routes=ROUTES, middleware=middleware(impl))
    own = {b"content-length", b"content-type"}  # the view's, in the bare app too
    recorded: dict[str, Headers] = {}

    async def get(path: str, cookie: bytes | None) -> Headers:
        headers = [(b"host", b"127.0.0.1"), (b"sec-fetch-site", b"same-origin")]
        if cookie is not None:
            headers.append((b"cookie", cookie))
        scope = http_scope(path, headers)
        sent: list[Any] = []

        async def receive() -> Any:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Any) -> None:
            sent.append(message)

        await app(scope, receive, send)
        assert sent[0]["status"] == 200, (impl, path, sent[0])
        return [(n, v) for n, v in sent[0]["headers"] if n.lower() not in own]

    async def session() -> None:
        cookie = None
        for path in ("/seed", "/read", "/write", "/new"):
            added = await get(path, None if path == "/new" else cookie)
            recorded[path] = added
            for name, value in added:
                if name.lower() == b"set-cookie" and path != "/new":
                    cookie = value.split(b";", 1)[0]

    thread = threading.Thread(target=asyncio.run, args=(session(),))
    thread.start()
    thread.join()
    if set(recorded) != {"/seed", "/read", "/write", "/new"}:
        raise SystemExit(f"recording {impl}'s headers failed")
    return recorded


def create_app() -> Starlette:
    impl = os.environ.get("E2E_IMPL", "bare")
    if impl in FLOORS:
        added = recorded_headers(FLOORS[impl])
        return Starlette(routes=ROUTES, middleware=[Middleware(FixedHeaders, by_path=added)])
    return Starlette(routes=ROUTES, middleware=middleware(impl))
