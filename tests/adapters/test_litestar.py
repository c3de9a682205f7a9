"""Litestar through the ASGI `SessionMiddleware` (docs/asgi.md): `request.session` is the
coatcheck session, saved, rotated at login, ended at logout, and CSRF-checked."""

from __future__ import annotations

from typing import Any, cast

import pytest
from litestar import Litestar, Request, get, post
from litestar.exceptions import NotAuthorizedException

from coatcheck import Session
from coatcheck.adapters.asgi import SessionMiddleware
from coatcheck.stores import MemoryStore
from helpers import COOKIE, FakeClock, client, manager_for, sent_secret, session_set_cookie

pytestmark = pytest.mark.anyio


def session_of(request: Request[Any, Any, Any]) -> Session:
    return cast(Session, request.session)


@post("/cart")
async def add(request: Request[Any, Any, Any]) -> dict[str, Any]:
    session = session_of(request)
    assert isinstance(session, Session)
    session.append("cart", (await request.json())["item"])
    return {"cart": session["cart"]}


@get("/cart")
async def show(request: Request[Any, Any, Any]) -> dict[str, Any]:
    session = session_of(request)
    return {"cart": session.get("cart", []), "user": session.user}


@post("/login")
async def login(request: Request[Any, Any, Any]) -> dict[str, str]:
    user = str((await request.json())["user"])
    session_of(request).login(user)
    return {"user": user}


@post("/logout")
async def logout(request: Request[Any, Any, Any]) -> None:
    session_of(request).logout()


@get("/me")
async def me(request: Request[Any, Any, Any]) -> dict[str, str]:
    user = session_of(request).user
    if user is None:
        raise NotAuthorizedException("log in first")
    return {"user": user}


def make_app() -> SessionMiddleware:
    clock = FakeClock()
    # logging_config=None: Litestar would otherwise configure the root logger.
    litestar = Litestar([add, show, login, logout, me], logging_config=None)
    manager = manager_for(MemoryStore(clock=clock), clock)
    # Litestar types the scope and messages as TypedDicts, the middleware as mappings.
    return SessionMiddleware(litestar, manager=manager)  # type: ignore[arg-type]


async def test_litestar_request_session_is_coatchecks_and_is_saved() -> None:
    async with client(make_app()) as http:
        first = await http.get("/cart")
        assert first.json() == {"cart": [], "user": None}
        assert session_set_cookie(first) is None  # nothing written, no cookie
        response = await http.post("/cart", json={"item": "apple"})
        assert response.status_code == 201
        secret = sent_secret(response)
        assert secret
        response = await http.post("/cart", json={"item": "pear"})
        assert response.json() == {"cart": ["apple", "pear"]}
        assert session_set_cookie(response) is None  # same session, nothing to send
        assert http.cookies[COOKIE] == secret


async def test_litestar_login_rotates_and_logout_ends_the_session() -> None:
    async with client(make_app()) as http:
        await http.post("/cart", json={"item": "apple"})
        before = http.cookies[COOKIE]
        assert (await http.get("/me")).status_code == 401
        response = await http.post("/login", json={"user": "alice"})
        assert sent_secret(response) not in (None, "", before)
        assert (await http.get("/cart")).json() == {"cart": ["apple"], "user": "alice"}
        assert (await http.get("/me")).json() == {"user": "alice"}
        await http.post("/logout")
        assert (await http.get("/me")).status_code == 401
        assert (await http.get("/cart")).json() == {"cart": [], "user": None}


async def test_litestar_cross_site_post_is_refused_before_the_handler() -> None:
    async with client(make_app()) as http:
        await http.post("/cart", json={"item": "fig"})
        cross = await http.post(
            "/cart", json={"item": "evil"}, headers={"origin": "https://evil.example"}
        )
        assert cross.status_code == 403
        assert (await http.get("/cart")).json()["cart"] == ["fig"]
