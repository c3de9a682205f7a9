"""FastAPI with `SessionMiddleware` and the typed `SessionDep` dependency, over httpx."""

from __future__ import annotations

import pytest
from fastapi import Depends, FastAPI

from coatcheck import ConfigurationError, Cookie, Header, ServerSide, Session, SessionManager
from coatcheck.adapters.asgi import SessionMiddleware
from coatcheck.adapters.fastapi import (
    AuthenticatedSessionDep,
    RequiredSessionDep,
    SessionDep,
    dependencies,
)
from coatcheck.stores import MemoryStore
from helpers import COOKIE, FakeClock, client, manager_for, sent_secret, session_set_cookie

pytestmark = pytest.mark.anyio


def make_app() -> FastAPI:
    app = FastAPI()

    @app.post("/cart")
    async def add(item: str, session: SessionDep) -> dict[str, list[str]]:
        assert isinstance(session, Session)
        session["cart"] = [*session.get("cart", []), item]
        return {"cart": session["cart"]}

    @app.get("/cart")
    def show(session: SessionDep) -> dict[str, object]:  # sync endpoints work too
        return {"cart": session.get("cart", []), "user": session.user}

    @app.post("/login")
    async def login(user: str, session: SessionDep) -> dict[str, str]:
        session.login(user)
        return {"user": user}

    return app


async def test_session_dep_reads_and_writes() -> None:
    clock = FakeClock()
    manager = manager_for(MemoryStore(clock=clock), clock)
    app = SessionMiddleware(make_app(), manager=manager)
    async with client(app) as http:
        assert (await http.get("/cart")).json() == {"cart": [], "user": None}
        response = await http.post("/cart", params={"item": "apple"})
        assert response.json() == {"cart": ["apple"]}
        assert sent_secret(response)
        response = await http.post("/cart", params={"item": "pear"})
        assert response.json() == {"cart": ["apple", "pear"]}
        assert session_set_cookie(response) is None  # same ID, nothing to send
        before = http.cookies[COOKIE]
        response = await http.post("/login", params={"user": "alice"})
        assert sent_secret(response) not in (None, "", before)
        response = await http.get("/cart")
        assert response.json() == {"cart": ["apple", "pear"], "user": "alice"}
        assert response.headers["vary"] == "Cookie"


async def test_add_middleware_works() -> None:
    clock = FakeClock()
    app = make_app()
    app.add_middleware(SessionMiddleware, manager=manager_for(MemoryStore(clock=clock), clock))
    async with client(app) as http:
        await http.post("/cart", params={"item": "fig"})
        assert (await http.get("/cart")).json()["cart"] == ["fig"]
        cross = await http.post(
            "/cart", params={"item": "evil"}, headers={"origin": "https://evil.example"}
        )
        assert cross.status_code == 403
        assert (await http.get("/cart")).json()["cart"] == ["fig"]


async def test_session_dep_without_middleware_says_how_to_fix() -> None:
    async with client(make_app()) as http:
        with pytest.raises(ConfigurationError, match="SessionMiddleware"):
            await http.get("/cart")


# -- OpenAPI: the dependencies declare how a client authenticates ---------------------------


def test_openapi_declares_the_default_transports() -> None:
    """`/openapi.json` lists the session cookie and the bearer token as security schemes,
    and every route that takes a session dependency accepts either (one requirement each:
    alternatives, in OpenAPI's terms); a route without one declares nothing."""
    app = make_app()

    @app.get("/me")
    async def me(session: AuthenticatedSessionDep) -> dict[str, str | None]:
        return {"user": session.user}

    @app.get("/public")
    async def public() -> dict[str, str]:
        return {}

    spec = app.openapi()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["Session cookie __Host-session"] == {
        "type": "apiKey",
        "in": "cookie",
        "name": "__Host-session",
        "description": schemes["Session cookie __Host-session"]["description"],
    }
    assert schemes["Session token"]["type"] == "http"
    assert schemes["Session token"]["scheme"] == "bearer"
    both: list[dict[str, list[str]]] = [
        {"Session cookie __Host-session": []},
        {"Session token": []},
    ]
    assert spec["paths"]["/me"]["get"]["security"] == both
    assert spec["paths"]["/cart"]["post"]["security"] == both
    assert "security" not in spec["paths"]["/public"]["get"]
    # The scheme parameters are not request parameters of the route.
    assert [p["name"] for p in spec["paths"]["/cart"]["post"]["parameters"]] == ["item"]


def test_openapi_names_the_managers_transports() -> None:
    manager = SessionManager(
        ServerSide(MemoryStore()),
        transport=[Cookie(name="sid", secure=False), Header(name="x-session", scheme=None)],
    )
    deps = dependencies(manager)
    app = FastAPI()

    @app.get("/me")
    async def me(session: Session = Depends(deps.required)) -> dict[str, bool]:  # noqa: B008
        return {"new": session.is_new}

    spec = app.openapi()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["Session cookie sid"]["name"] == "sid"
    assert schemes["Session token x-session"] == {
        "type": "apiKey",
        "in": "header",
        "name": "x-session",
        "description": "The session token handed out in Session-Token.",
    }
    assert spec["paths"]["/me"]["get"]["security"] == [
        {"Session cookie sid": []},
        {"Session token x-session": []},
    ]


async def test_declared_schemes_never_refuse_a_request() -> None:
    """The schemes describe; they do not check: a request with no cookie and no token still
    reaches `SessionDep` (a new session), and the Required dependency answers the 401."""
    clock = FakeClock()
    manager = manager_for(MemoryStore(clock=clock), clock)
    inner = make_app()

    @inner.get("/me")
    async def me(session: RequiredSessionDep) -> dict[str, str | None]:
        return {"user": session.user}

    async with client(SessionMiddleware(inner, manager=manager)) as http:
        assert (await http.get("/cart")).status_code == 200
        assert (await http.get("/me")).status_code == 401
        await http.post("/login", params={"user": "ann"})
        assert (await http.get("/me")).json() == {"user": "ann"}
