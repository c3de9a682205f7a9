"""The header transport through `SessionMiddleware`: tokens in `Authorization`, new ones in
`Session-Token`, the 401 helpers (`require_session`, the FastAPI dependencies), and the
JavaScript client served by the middleware. Driven by httpx over `ASGITransport`."""

from __future__ import annotations

import hashlib
import re
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from coatcheck import Cookie, Header, ServerSide, SessionManager
from coatcheck.adapters.asgi import SessionMiddleware, client_script, require_session
from coatcheck.adapters.fastapi import AuthenticatedSessionDep, RequiredSessionDep
from coatcheck.session import Session
from coatcheck.stores import MemoryStore
from helpers import COOKIE, DownStore, FakeClock, client, manager_for, sent_secret

pytestmark = pytest.mark.anyio

TOKEN = re.compile(r"[A-Za-z0-9_-]{65}")
ASK = {"session-transport": "header"}
INVALID = 'Bearer error="invalid_token"'
SCRIPT = Path(__file__).parents[2] / "src" / "coatcheck" / "static" / "coatcheck.js"


def sess(request: Request | WebSocket) -> Session:
    session = request.scope["session"]
    assert isinstance(session, Session)
    return session


async def whoami(request: Request) -> Response:
    session = sess(request)
    return JSONResponse({"user": session.user, "new": session.is_new, "n": session.get("n")})


async def count(request: Request) -> Response:
    session = sess(request)
    session["n"] = session.get("n", 0) + 1
    return JSONResponse({"n": session["n"]})


async def action(request: Request) -> Response:
    session = sess(request)
    name = request.path_params["action"]
    if name == "login":
        session.login("alice")
    elif name == "logout":
        session.logout()
    elif name == "regenerate":
        session.regenerate()
    return PlainTextResponse(name)


async def private(request: Request) -> Response:
    session = require_session(request)
    return JSONResponse({"user": session.user})


async def account(request: Request) -> Response:
    session = require_session(request, authenticated=True)
    return JSONResponse({"user": session.user})


async def private_ws(websocket: WebSocket) -> None:
    require_session(websocket)
    await websocket.accept()
    await websocket.send_text("welcome")
    await websocket.close()


ROUTES = [
    Route("/", whoami),
    Route("/count", count, methods=["POST"]),
    Route("/private", private),
    Route("/account", account),
    Route("/{action}", action, methods=["POST"]),
    WebSocketRoute("/ws", private_ws),
]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def manager(clock: FakeClock) -> SessionManager:
    return manager_for(MemoryStore(clock=clock), clock, transport=(Cookie(), Header()))


def app_for(manager: SessionManager, client_script_path: str | None = None) -> Starlette:
    """The test routes with the middleware inside Starlette's error handling, as the docs
    recommend (so `require_session` reaches the middleware, not a 500 page)."""
    middleware = [
        Middleware(SessionMiddleware, manager=manager, client_script_path=client_script_path)
    ]
    return Starlette(routes=ROUTES, middleware=middleware)


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def header_login(http: httpx.AsyncClient) -> str:
    response = await http.post("/login", headers=ASK)
    token = response.headers["session-token"]
    assert TOKEN.fullmatch(token)
    return token


# -- the header transport through the middleware --------------------------------------


async def test_header_session_round_trip(manager: SessionManager) -> None:
    async with client(app_for(manager)) as http:
        login = await http.post("/login", headers=ASK)
        token = login.headers["session-token"]
        assert TOKEN.fullmatch(token)
        assert login.headers["access-control-expose-headers"] == "Session-Token"
        assert login.headers["cache-control"] == "no-store"
        assert "set-cookie" not in login.headers
        assert http.cookies == {}

        me = await http.get("/", headers=bearer(token))
        assert me.json() == {"user": "alice", "new": False, "n": None}
        assert "session-token" not in me.headers  # nothing changed: nothing handed out
        assert "authorization" in me.headers["vary"].lower()


async def test_request_answered_in_the_transport_it_used(manager: SessionManager) -> None:
    async with client(app_for(manager)) as http:
        by_cookie = await http.post("/login")
        assert sent_secret(by_cookie)
        assert "session-token" not in by_cookie.headers
    async with client(app_for(manager)) as http:
        by_header = await http.post("/login", headers=ASK)
        assert by_header.headers["session-token"]
        assert "set-cookie" not in by_header.headers


async def test_header_session_needs_no_csrf_check(manager: SessionManager) -> None:
    cross_site = {"sec-fetch-site": "cross-site", "origin": "https://elsewhere.example"}
    async with client(app_for(manager)) as http:
        token = await header_login(http)
        carried = await http.post("/count", headers={**bearer(token), **cross_site})
        assert carried.status_code == 200
        assert carried.json() == {"n": 1}
    async with client(app_for(manager)) as http:
        await http.post("/login")
        assert http.cookies.get(COOKIE)
        ambient = await http.post("/count", headers=cross_site)
        assert ambient.status_code == 403


async def test_rotation_hands_out_a_new_token_and_the_old_one_lingers(
    manager: SessionManager,
) -> None:
    async with client(app_for(manager)) as http:
        old = await header_login(http)
        await http.post("/count", headers=bearer(old))
        rotated = await http.post("/regenerate", headers=bearer(old))
        new = rotated.headers["session-token"]
        assert TOKEN.fullmatch(new) and new != old
        # A request that was in flight with the old token still finds the session (grace
        # window) and is not handed a token of its own, so it cannot undo the rotation.
        late = await http.post("/count", headers=bearer(old))
        assert late.json() == {"n": 2}
        assert "session-token" not in late.headers
        assert (await http.get("/", headers=bearer(new))).json()["n"] == 2


async def test_logout_answers_an_empty_token_and_the_token_is_dead(
    manager: SessionManager,
) -> None:
    async with client(app_for(manager)) as http:
        token = await header_login(http)
        logout = await http.post("/logout", headers=bearer(token))
        assert logout.headers["session-token"] == ""
        assert (await http.get("/", headers=bearer(token))).json()["user"] is None


async def test_token_is_never_read_from_the_url(manager: SessionManager) -> None:
    async with client(app_for(manager)) as http:
        token = await header_login(http)
        for query in ("access_token", "token", "session", "session_token"):
            response = await http.get("/", params={query: token})
            assert response.json()["user"] is None, query


async def test_custom_header_without_scheme(clock: FakeClock) -> None:
    transport = Header(name="X-Session-Token", scheme=None, response_header="X-New-Token")
    manager = manager_for(MemoryStore(clock=clock), clock, transport=transport)
    async with client(app_for(manager)) as http:
        login = await http.post("/login")
        token = login.headers["x-new-token"]
        assert login.headers["access-control-expose-headers"] == "X-New-Token"
        me = await http.get("/", headers={"x-session-token": token})
        assert me.json()["user"] == "alice"
        assert (await http.get("/", headers=bearer(token))).json()["user"] is None


async def test_transport_per_route_prefix(clock: FakeClock) -> None:
    transports = (Header(paths=("/api/",)), Cookie())
    manager = manager_for(MemoryStore(clock=clock), clock, transport=transports)
    app = Starlette(
        routes=[
            Route("/api/login", action_login, methods=["POST"]),
            Route("/web/login", action_login, methods=["POST"]),
        ],
        middleware=[Middleware(SessionMiddleware, manager=manager)],
    )
    async with client(app) as http:
        api = await http.post("/api/login")  # no Session-Transport needed under /api/
        assert TOKEN.fullmatch(api.headers["session-token"])
        assert "set-cookie" not in api.headers
        web = await http.post("/web/login")
        assert sent_secret(web)
        assert "session-token" not in web.headers


async def action_login(request: Request) -> Response:
    sess(request).login("alice")
    return PlainTextResponse("ok")


# -- 401 for routes that need a session ----------------------------------------------


async def test_required_route_with_a_live_token(manager: SessionManager) -> None:
    async with client(app_for(manager)) as http:
        token = await header_login(http)
        response = await http.get("/private", headers=bearer(token))
        assert response.status_code == 200
        assert response.json() == {"user": "alice"}


async def test_revoked_token_gets_invalid_token_challenge(manager: SessionManager) -> None:
    async with client(app_for(manager)) as http:
        token = await header_login(http)
        await http.post("/logout", headers=bearer(token))
        response = await http.get("/private", headers=bearer(token))
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == INVALID
        assert response.headers["session-token"] == ""  # the client forgets it
        assert response.headers["cache-control"] == "no-store"


async def test_expired_token_gets_invalid_token_challenge(
    manager: SessionManager, clock: FakeClock
) -> None:
    async with client(app_for(manager)) as http:
        token = await header_login(http)
        clock.advance(manager.lifetimes.idle + 1)
        response = await http.get("/private", headers=bearer(token))
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == INVALID


@pytest.mark.parametrize("token", ["x" * 65, "not a token", "a" * 500])
async def test_unknown_or_malformed_token_gets_invalid_token(
    manager: SessionManager, token: str
) -> None:
    async with client(app_for(manager)) as http:
        response = await http.get("/private", headers=bearer(token))
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == INVALID


async def test_no_token_gets_a_bare_challenge(manager: SessionManager) -> None:
    async with client(app_for(manager)) as http:
        response = await http.get("/private", headers=ASK)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"  # RFC 6750 3.1: no error


async def test_cookie_request_gets_401_without_bearer_challenge(
    manager: SessionManager,
) -> None:
    async with client(app_for(manager)) as http:
        response = await http.get("/private", headers={"cookie": f"{COOKIE}={'y' * 65}"})
        assert response.status_code == 401
        assert "www-authenticate" not in response.headers
        assert sent_secret(response) == ""  # the dead cookie is cleared


async def test_authenticated_requires_a_user(manager: SessionManager) -> None:
    async with client(app_for(manager)) as http:
        anonymous = await http.post("/count", headers=ASK)
        token = anonymous.headers["session-token"]
        response = await http.get("/account", headers=bearer(token))
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert (await http.get("/private", headers=bearer(token))).status_code == 200


async def test_required_websocket_is_closed_with_policy_violation(
    manager: SessionManager,
) -> None:
    scope = {
        "type": "websocket",
        "path": "/ws",
        "headers": [(b"authorization", b"Bearer " + b"z" * 65)],
        "scheme": "wss",
        "query_string": b"",
        "subprotocols": [],
    }
    sent: list[MutableMapping[str, Any]] = []
    messages: list[MutableMapping[str, Any]] = [{"type": "websocket.connect"}]

    async def receive() -> MutableMapping[str, Any]:
        return messages.pop(0) if messages else {"type": "websocket.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await SessionMiddleware(Starlette(routes=ROUTES), manager=manager)(scope, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008}]


fastapi_app = FastAPI()


@fastapi_app.get("/me")
async def fastapi_me(session: RequiredSessionDep) -> dict[str, str | None]:
    return {"user": session.user}


@fastapi_app.get("/account")
async def fastapi_account(session: AuthenticatedSessionDep) -> dict[str, str | None]:
    return {"user": session.user}


@fastapi_app.post("/login")
async def fastapi_login(request: Request) -> dict[str, str]:
    sess(request).login("alice")
    return {"ok": "yes"}


async def test_fastapi_dependency_answers_401_wherever_the_middleware_sits(
    manager: SessionManager,
) -> None:
    # Wrapped from outside: FastAPI's own HTTPException handler renders the 401.
    app = SessionMiddleware(fastapi_app, manager=manager)
    async with client(app) as http:
        token = (await http.post("/login", headers=ASK)).headers["session-token"]
        assert (await http.get("/me", headers=bearer(token))).json() == {"user": "alice"}
        assert (await http.get("/account", headers=bearer(token))).status_code == 200
        dead = await http.get("/me", headers=bearer("q" * 65))
        assert dead.status_code == 401
        assert dead.headers["www-authenticate"] == INVALID
        assert dead.headers["session-token"] == ""


# -- the JavaScript client -----------------------------------------------------------


async def test_client_script_is_served(manager: SessionManager) -> None:
    async with client(app_for(manager, client_script_path="/coatcheck.js")) as http:
        response = await http.get("/coatcheck.js")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-cache"
    assert response.content == SCRIPT.read_bytes() == client_script()
    assert response.headers["etag"] == f'"{hashlib.sha256(response.content).hexdigest()[:32]}"'
    assert int(response.headers["content-length"]) == len(response.content)
    assert b"export function createClient" in response.content
    assert "set-cookie" not in response.headers and "session-token" not in response.headers


async def test_client_script_revalidates_with_etag(manager: SessionManager) -> None:
    async with client(app_for(manager, client_script_path="/static/cc.js")) as http:
        etag = (await http.get("/static/cc.js")).headers["etag"]
        for if_none_match in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            again = await http.get("/static/cc.js", headers={"if-none-match": if_none_match})
            assert again.status_code == 304, if_none_match
            assert again.content == b""
            assert again.headers["etag"] == etag
        changed = await http.get("/static/cc.js", headers={"if-none-match": '"other"'})
        assert changed.status_code == 200
        head = await http.head("/static/cc.js")
        assert head.status_code == 200 and head.content == b""
        assert int(head.headers["content-length"]) == len(client_script())
        post = await http.post("/static/cc.js")
        assert post.status_code == 405
        assert post.headers["allow"] == "GET, HEAD"


async def test_client_script_needs_no_session_store() -> None:
    manager = SessionManager(ServerSide(store=DownStore()), transport=Header())
    app = SessionMiddleware(Starlette(routes=ROUTES), manager, client_script_path="/cc.js")
    async with client(app) as http:
        assert (await http.get("/cc.js")).status_code == 200
        down = await http.get("/", headers=bearer("x" * 65))
        assert down.status_code == 503  # the store really is down


async def test_client_script_is_not_served_unless_asked(manager: SessionManager) -> None:
    async with client(app_for(manager)) as http:
        assert (await http.get("/static/coatcheck.js")).status_code == 404
