"""FastAPI with `SessionMiddleware` and the typed `SessionDep` dependency, over httpx."""

from __future__ import annotations

import pytest
from fastapi import FastAPI

from coatcheck import ConfigurationError, Session
from coatcheck.adapters.asgi import SessionMiddleware
from coatcheck.adapters.fastapi import SessionDep
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
