"""Per-route opt-out through real HTTP in the ASGI adapters: coatcheck's `SessionMiddleware`
around Starlette, FastAPI and a bare ASGI app, and the Starlette drop-in. An excluded
route (by exact path, prefix, pattern, callable or `@no_session`) gets no session, no
store access (a recording store), no token verification (a forged cookie logs nothing),
no `Set-Cookie` / `Vary` / `Cache-Control` from coatcheck, and a session cookie sent to it
is left alone; every other route behaves as before, which the same checks show."""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route

from coatcheck.adapters import starlette as dropin
from coatcheck.adapters.asgi import SessionMiddleware, no_session, require_session
from coatcheck.adapters.fastapi import SessionDep
from coatcheck.exceptions import ConfigurationError, SessionExcluded
from coatcheck.manager import ServerSide, SessionManager
from coatcheck.routes import NO_SESSION
from coatcheck.session import Session
from helpers import COOKIE, DownStore, FakeClock, client, sent_secret

from .optout_support import (
    COATCHECK_HEADERS,
    MODES,
    forged,
    manager_in,
    security_events,
    watch_security,
)

pytestmark = pytest.mark.anyio

EXCLUDE: list[Any] = [
    "/healthz",
    "/static/",
    re.compile(r"^/assets/.*\.js$"),
    lambda path: path == "/by-callable",
]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def plain(request: Request) -> Response:
    return PlainTextResponse("plain")


async def dump(request: Request) -> Response:
    session = request.scope["session"]
    if session is NO_SESSION:
        return PlainTextResponse("no session")
    assert isinstance(session, Session)
    return JSONResponse({"data": dict(session), "new": session.is_new})


async def set_value(request: Request) -> Response:
    session = request.scope["session"]
    assert isinstance(session, Session)
    session["x"] = request.query_params.get("value", "1")
    return PlainTextResponse("ok")


@no_session
async def marked(request: Request) -> Response:
    assert request.scope["session"] is NO_SESSION
    return PlainTextResponse("marked")


async def uses_session(request: Request) -> Response:
    request.session["x"] = 1
    return PlainTextResponse("unreachable")


async def requires(request: Request) -> Response:
    require_session(request)
    return PlainTextResponse("unreachable")


def routes() -> list[Any]:
    return [
        Route("/", dump),
        Route("/set", set_value, methods=["GET", "POST"]),
        Route("/healthz", plain),
        Route("/healthz/", dump),  # exact: not excluded
        Route("/healthz/deep", dump),
        Route("/static/{path:path}", plain),
        Route("/static", dump),  # the prefix is "/static/": not excluded
        Route("/assets/{name}", dump),  # excluded by the pattern for .js only
        Route("/by-callable", plain),
        Route("/marked", marked),
        Route("/marked-post", marked, methods=["POST"]),
        Route("/items/{item}", dump),  # shadows the marked route below
        Route("/items/special", marked),
        Route("/static-uses", uses_session),
        Mount("/sub", routes=[Route("/ping", marked), Route("/pong", dump)]),
        Mount("/mounted", app=no_session(Starlette(routes=[Route("/x", plain)]))),
        Route("/healthz-uses", uses_session),
        Route("/requires", requires),
    ]


def starlette_app(manager: SessionManager, **options: Any) -> Starlette:
    exclude = options.pop("exclude", EXCLUDE)
    return Starlette(
        routes=routes(),
        middleware=[Middleware(SessionMiddleware, manager=manager, exclude=exclude, **options)],
    )


def untouched(response: httpx.Response) -> None:
    """No header of coatcheck's on `response`."""
    for name in COATCHECK_HEADERS:
        assert name not in response.headers, (name, response.headers)


EXCLUDED = [
    "/healthz",
    "/static/app.css",
    "/static/deep/x/y.png",
    "/assets/app.js",
    "/by-callable",
    "/marked",
    "/sub/ping",
    "/mounted/x",
]
NOT_EXCLUDED = ["/", "/healthz/", "/healthz/deep", "/static", "/assets/app.css", "/sub/pong"]


@pytest.mark.parametrize("mode", MODES)
async def test_excluded_routes_touch_nothing_and_send_no_session_headers(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    manager, store = manager_in(mode, tmp_path, clock, asynchronous=True)
    watch_security(caplog)
    async with client(starlette_app(manager)) as http:
        set_response = await http.get("/set")
        secret = sent_secret(set_response)
        assert secret  # the control: a route that writes gets its cookie
        calls_before = list(store.calls) if store is not None else []
        assert not mode.startswith("server") or "save" in calls_before

        # A valid session cookie, then a forged one, on every excluded route.
        for cookie in (secret, forged(secret)):
            for path in EXCLUDED:
                response = await http.get(path, headers={"cookie": f"{COOKIE}={cookie}"})
                assert response.status_code == 200, path
                untouched(response)
        assert (await http.post("/marked-post")).status_code == 200
        assert security_events(caplog) == []
        if store is not None:
            assert store.calls == calls_before

        # Every other route loads the session as before: the valid cookie is read back
        # (the excluded routes left it alone), the forged one is logged.
        for path in NOT_EXCLUDED:
            response = await http.get(path, headers={"cookie": f"{COOKIE}={secret}"})
            assert response.status_code == 200, path
            assert response.json()["data"] == {"x": "1"}, path
            assert "vary" in response.headers
        response = await http.get("/", headers={"cookie": f"{COOKIE}={forged(secret)}"})
        assert response.json()["new"] is True
        assert security_events(caplog)
        if store is not None:
            assert store.calls != calls_before


@pytest.mark.parametrize("mode", MODES)
async def test_a_shadowed_marked_route_is_not_excluded(
    tmp_path: Path, clock: FakeClock, mode: str
) -> None:
    """`/items/special` is marked, but `/items/{item}` comes first and Starlette routes to
    it: that request has its session."""
    manager, _ = manager_in(mode, tmp_path, clock, asynchronous=True)
    async with client(starlette_app(manager)) as http:
        await http.get("/set", params={"value": "kept"})
        response = await http.get("/items/special")
        assert response.json()["data"] == {"x": "kept"}


async def test_using_the_session_in_an_excluded_route_is_a_clear_error(
    tmp_path: Path, clock: FakeClock
) -> None:
    manager, _ = manager_in("server-memory", tmp_path, clock)
    app = starlette_app(manager, exclude=["/static-uses", "/healthz-uses", "/requires"])
    async with client(app) as http:
        for path in ("/static-uses", "/requires"):
            with pytest.raises(SessionExcluded, match="excluded from sessions"):
                await http.get(path)
    with pytest.raises(SessionExcluded):
        NO_SESSION.get("x")
    with pytest.raises(AttributeError):  # what probing code catches
        _ = NO_SESSION.accessed
    assert "NoSession" in repr(NO_SESSION)


async def test_nothing_to_exclude_costs_one_test_after_the_first_request(
    tmp_path: Path, clock: FakeClock
) -> None:
    manager, _ = manager_in("server-memory", tmp_path, clock)
    app = Starlette(routes=[Route("/", dump)])
    middleware = SessionMiddleware(app, manager)
    async with client(middleware) as http:
        assert (await http.get("/")).status_code == 200
    assert middleware._exclude.active is False


async def test_bare_asgi_app(tmp_path: Path, clock: FakeClock) -> None:
    """An ASGI app with no router: the paths apply, nothing else is looked for."""
    manager, store = manager_in("server-memory", tmp_path, clock)
    seen: list[Any] = []

    async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope["session"])
        session = scope["session"]
        if isinstance(session, Session):
            session["x"] = 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    middleware = SessionMiddleware(app, manager, exclude=["/healthz", "/static/"])
    async with client(middleware) as http:
        untouched(await http.get("/healthz"))
        untouched(await http.get("/static/x.css"))
        assert store.calls == []
        assert sent_secret(await http.get("/other"))
    assert seen[:2] == [NO_SESSION, NO_SESSION] and isinstance(seen[2], Session)


async def test_root_path_is_not_part_of_the_matched_path(tmp_path: Path, clock: FakeClock) -> None:
    manager, store = manager_in("server-memory", tmp_path, clock)
    app = starlette_app(manager)
    transport = httpx.ASGITransport(app=app, root_path="/prefix")
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as http:
        untouched(await http.get("/prefix/healthz"))
        assert store.calls == []


# -- FastAPI -----------------------------------------------------------------------------


def fastapi_app(manager: SessionManager) -> FastAPI:
    app = FastAPI()
    app.add_middleware(SessionMiddleware, manager=manager, exclude=["/healthz", "/static/"])

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/static/{path:path}")
    async def static(path: str) -> dict[str, str]:
        return {"file": path}

    @no_session  # above the route decorator: the same function is registered
    @app.get("/marked")
    async def marked_above() -> dict[str, str]:
        return {"marked": "above"}

    @app.get("/marked-below")
    @no_session
    async def marked_below(session: SessionDep) -> dict[str, str]:
        return {"unreachable": str(session)}

    @app.get("/set")
    async def set_value(session: SessionDep) -> dict[str, str]:
        session["x"] = "1"
        return {"ok": "yes"}

    @app.get("/")
    async def dump(session: SessionDep) -> dict[str, Any]:
        return {"data": dict(session)}

    router = APIRouter()

    @router.get("/ping")
    @no_session
    async def ping() -> dict[str, str]:
        return {"pong": "yes"}

    app.include_router(router, prefix="/api")
    return app


@pytest.mark.parametrize("mode", MODES)
async def test_fastapi(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    manager, store = manager_in(mode, tmp_path, clock, asynchronous=True)
    watch_security(caplog)
    async with client(fastapi_app(manager)) as http:
        secret = sent_secret(await http.get("/set"))
        assert secret
        calls = list(store.calls) if store is not None else []
        for cookie in (secret, forged(secret)):
            for path in ("/healthz", "/static/x.js", "/marked", "/api/ping"):
                response = await http.get(path, headers={"cookie": f"{COOKIE}={cookie}"})
                assert response.status_code == 200, path
                untouched(response)
        assert security_events(caplog) == []
        if store is not None:
            assert store.calls == calls
        with pytest.raises(SessionExcluded):
            await http.get("/marked-below")
        response = await http.get("/", headers={"cookie": f"{COOKIE}={secret}"})
        assert response.json() == {"data": {"x": "1"}}


# -- the Starlette drop-in ----------------------------------------------------------------


async def dropin_set(request: Request) -> Response:
    request.session["x"] = "1"
    return PlainTextResponse("ok")


async def dropin_dump(request: Request) -> Response:
    return JSONResponse(dict(request.session))


async def test_starlette_dropin(caplog: pytest.LogCaptureFixture) -> None:
    watch_security(caplog)
    app = Starlette(
        routes=[
            Route("/set", dropin_set),
            Route("/", dropin_dump),
            Route("/healthz", plain),
            Route("/marked", marked),
        ],
        middleware=[
            Middleware(dropin.SessionMiddleware, secret_key="k" * 32, exclude=["/healthz"])
        ],
    )
    async with client(app) as http:
        cookie = (await http.get("/set")).headers["set-cookie"].split(";")[0]
        value = cookie.split("=", 1)[1]
        for sent in (value, forged(value), "garbage"):
            for path in ("/healthz", "/marked"):
                response = await http.get(path, headers={"cookie": f"session={sent}"})
                assert response.status_code == 200
                untouched(response)
        assert security_events(caplog) == []
        response = await http.get("/", headers={"cookie": f"session={value}"})
        assert response.json() == {"x": "1"} and response.headers["vary"] == "Cookie"
        await http.get("/", headers={"cookie": f"session={forged(value)}"})
        assert security_events(caplog)


# -- bad specs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exclude", "message"),
    [
        ("/healthz", "a list"),
        (re.compile("/x"), "a list"),
        (["healthz"], "must start with '/'"),
        ([""], "must start with '/'"),
        (["/"], "every route"),
        (["/static/*"], "re.compile"),
        (["/search?q=1"], "query string"),
        ([re.compile(b"/x")], "bytes"),
        ([42], "not int"),
        ([b"/x"], "not bytes"),
    ],
)
def test_bad_exclude_specs_are_configuration_errors(
    tmp_path: Path, clock: FakeClock, exclude: Any, message: str
) -> None:
    manager, _ = manager_in("server-memory", tmp_path, clock)
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        SessionMiddleware(Starlette(), manager, exclude=exclude)
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        dropin.SessionMiddleware(Starlette(), secret_key="k" * 32, exclude=exclude)


async def test_a_store_that_is_down_does_not_reach_excluded_routes(clock: FakeClock) -> None:
    manager = SessionManager(ServerSide(store=DownStore()), clock=clock, log_salt=b"test-salt")
    async with client(starlette_app(manager)) as http:
        for path in ("/healthz", "/marked", "/static/x.css"):
            response = await http.get(path, headers={"cookie": f"{COOKIE}={'x' * 65}"})
            assert response.status_code == 200, path
            untouched(response)
        assert (await http.get("/set")).status_code == 503  # the control: a write
