"""The app `bench/end_to_end.py` serves with uvicorn, wrapped by one session middleware.

One Starlette app, the same for every implementation; the environment says which session
middleware wraps it (a uvicorn `--factory` takes no arguments):

  E2E_IMPL     bare | starlette-cookie | starsessions-memory | starsessions-redis |
               coatcheck-memory | coatcheck-sqlite | coatcheck-redis | coatcheck-client
  E2E_SQLITE   the SQLite file (coatcheck-sqlite)
  E2E_REDIS    the Redis URL (the -redis implementations)

Routes (all GET):
  /seed   sets the session's 5 small keys (one a list): a connection's first request
  /read   reads the 5 keys, changes nothing; 409 if they are not the seeded values
          (the client lost its session)
  /write  sets one key to a new value: `counter` + 1, returned in the body, so the client
          checks that it sent its latest cookie (a stale token would repeat a number)
  /new    sets one key in a session that has none yet (a new visitor)

Cookies are alike everywhere: Secure, HttpOnly, SameSite=Lax, Path=/. coatcheck keeps its
default `__Host-session` name; the peers call theirs `session`.

    E2E_IMPL=coatcheck-memory .venv/bin/uvicorn --app-dir bench e2e_app:create_app --factory
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from peers import SECRET_KEY, SEED, keyring

IMPLS = (
    "bare",
    "starlette-cookie",
    "starsessions-memory",
    "starsessions-redis",
    "coatcheck-memory",
    "coatcheck-sqlite",
    "coatcheck-redis",
    "coatcheck-client",
)
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


def create_app() -> Starlette:
    return Starlette(routes=ROUTES, middleware=middleware(os.environ.get("E2E_IMPL", "bare")))
