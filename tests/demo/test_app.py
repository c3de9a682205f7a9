"""The demo app in process (httpx over ASGI, at https:// so `__Host-` cookies flow): what
the page and the JSON state show, and what the actions may and may not do."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest

from coatcheck import ClientSide, Header, KeyRing, ServerSide, SessionManager
from coatcheck.demo.app import MAX_CART, build_app
from coatcheck.stores import MemoryStore

JSON = {"accept": "application/json"}


def client(
    manager: SessionManager, agent: str = "device-1", strategy: str = "shared"
) -> httpx.AsyncClient:
    app = build_app(manager, replica="r2", strategy=strategy)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="https://localhost",
        headers={"user-agent": agent},
    )


@pytest.fixture
def manager() -> SessionManager:
    return SessionManager(ServerSide(MemoryStore()))


async def state(c: httpx.AsyncClient) -> dict[str, Any]:
    response = await c.get("/api/state")
    assert response.status_code == 200 and response.headers["x-served-by"] == "r2"
    result: dict[str, Any] = response.json()
    return result


@pytest.mark.anyio
async def test_login_cart_and_the_rotated_id(manager: SessionManager) -> None:
    async with client(manager) as c:
        before = await state(c)
        assert before["session"]["user"] is None and before["csrf_token"]
        login = (await c.post("/login", data={"user": "alice"}, headers=JSON)).json()
        assert login["session"]["user"] == "alice"
        # The body is rendered after the commit: it shows the ID the login rotated to.
        assert login["session"]["id"] != before["session"]["id"]
        assert login["session"]["id"] == (await state(c))["session"]["id"]
        for item in ("coat", "hat"):
            await c.post("/cart/add", data={"item": item}, headers=JSON)
        after = await state(c)
        assert after["session"]["data"] == {"cart": ["coat", "hat"]}
        assert [s["id"] for s in after["my_sessions"]] == [after["session"]["id"]]
        assert after["my_sessions"][0]["user_agent"] == "device-1"


@pytest.mark.anyio
async def test_forms_redirect_and_bad_input_is_rejected(manager: SessionManager) -> None:
    async with client(manager) as c:
        response = await c.post("/login", data={"user": "alice"})
        assert response.status_code == 303 and response.headers["location"] == "/"
        assert (await c.post("/login", data={"user": "mallory"})).status_code == 400
        assert (await c.post("/cart/add", data={"item": "  "})).status_code == 400
        assert (await c.get("/nope")).status_code == 404


@pytest.mark.anyio
async def test_my_sessions_revoke_only_my_own(manager: SessionManager) -> None:
    async with (
        client(manager, "laptop") as a,
        client(manager, "phone") as b,
        client(manager, "bobs") as bob,
    ):
        for c, user in ((a, "alice"), (b, "alice"), (bob, "bob")):
            await c.post("/login", data={"user": user}, headers=JSON)
        a_id = (await state(a))["session"]["id"]
        bob_id = (await state(bob))["session"]["id"]
        mine = (await state(b))["my_sessions"]
        assert {s["user_agent"] for s in mine} == {"laptop", "phone"}
        assert (await b.post("/sessions/revoke", data={"id": bob_id})).status_code == 404
        assert (await state(bob))["session"]["user"] == "bob"
        assert (await b.post("/sessions/revoke", data={"id": a_id})).status_code == 303
        assert (await state(a))["session"]["user"] is None


@pytest.mark.anyio
async def test_log_out_other_devices_and_admin_view(manager: SessionManager) -> None:
    async with client(manager, "laptop") as a, client(manager, "phone") as b:
        for c in (a, b):
            await c.post("/login", data={"user": "alice"}, headers=JSON)
        admin = (await state(a))["admin"]
        assert len(admin["alice"]) == 2 and admin["bob"] == []
        result = (await a.post("/sessions/logout-others", headers=JSON)).json()
        assert [s["user_agent"] for s in result["my_sessions"]] == ["laptop"]
        assert (await state(b))["session"]["user"] is None
        await a.post("/logout")
        assert (await state(a))["admin"]["alice"] == []


@pytest.mark.anyio
async def test_page_escapes_what_users_typed(manager: SessionManager) -> None:
    async with client(manager) as c:
        await c.post("/cart/add", data={"item": "<script>alert(1)</script>"})
        page = (await c.get("/")).text
        assert "<script>alert(1)</script>" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert re.search(r'served by\s+<span class="replica" id="replica" [^>]*>r2</span>', page)


@pytest.mark.anyio
async def test_probe_does_not_create_a_session(manager: SessionManager) -> None:
    async with client(manager) as c:
        response = await c.get("/api/session")
        assert "set-cookie" not in response.headers
        assert json.loads(response.text)["session"]["user"] is None


@pytest.mark.anyio
async def test_the_cart_keeps_the_newest_items(manager: SessionManager) -> None:
    async with client(manager) as c:
        for i in range(MAX_CART + 2):
            await c.post("/cart/add", data={"item": f"i{i}"}, headers=JSON)
        cart = (await state(c))["session"]["data"]["cart"]
        assert cart == [f"i{i}" for i in range(2, MAX_CART + 2)]


def client_side(*, encrypted: bool = False, header: bool = False) -> SessionManager:
    # One process: the memory registry and revocation list, checked on every request.
    mode = ClientSide(KeyRing.generate(), encrypted=encrypted, store="memory://", staleness=0)
    return SessionManager(mode, transport=Header()) if header else SessionManager(mode)


@pytest.mark.anyio
@pytest.mark.parametrize("encrypted", [False, True])
async def test_client_strategy_carries_a_token_in_the_cookie(encrypted: bool) -> None:
    manager = client_side(encrypted=encrypted)
    async with client(manager, "laptop", "client") as a, client(manager, "phone", "client") as b:
        for c in (a, b):
            await c.post("/login", data={"user": "alice"}, headers=JSON)
        await a.post("/cart/add", data={"item": "coat"}, headers=JSON)
        token = a.cookies["__Host-session"]
        assert token.count(".") == (4 if encrypted else 2)  # JWE or JWS compact
        seen = await state(a)
        assert seen["session"]["data"] == {"cart": ["coat"]}
        assert seen["tokens"] == {"format": "JWE" if encrypted else "JWS", "staleness_ms": 0}
        page = (await a.get("/")).text
        assert ("an encrypted token (JWE)" if encrypted else "a signed token (JWS)") in page
        # The registry lists both devices; revoking one from the other ends it.
        listed = {s["user_agent"]: s["id"] for s in (await state(b))["my_sessions"]}
        assert set(listed) == {"laptop", "phone"}
        assert (
            await b.post("/sessions/revoke", data={"id": listed["laptop"]}, headers=JSON)
        ).status_code == 200
        assert (await state(a))["session"]["user"] is None


def bearer(token: str | None) -> dict[str, str]:
    if token is None:
        return {**JSON, "session-transport": "header"}
    return {**JSON, "authorization": f"Bearer {token}"}


@pytest.mark.anyio
async def test_header_strategy_page_shell_script_and_bearer_api() -> None:
    manager = client_side(header=True)
    async with client(manager, strategy="header") as c:
        shell = await c.get("/")
        assert shell.status_code == 200 and "session-token" not in shell.headers
        assert 'import { createClient } from "/coatcheck.js"' in shell.text
        assert "<form" not in shell.text  # the session parts come from the script
        script = await c.get("/coatcheck.js")
        assert script.status_code == 200 and "export class SessionClient" in script.text
        assert script.headers["content-type"].startswith("text/javascript")

        anonymous = await c.get("/api/state?view=html", headers=bearer(None))
        assert "session-token" not in anonymous.headers  # reading creates no session
        assert anonymous.json()["csrf_token"] is None  # no cookie: no CSRF token needed
        assert "log in as alice" in anonymous.json()["html"]

        login = await c.post("/login?view=html", data={"user": "alice"}, headers=bearer(None))
        assert login.status_code == 200 and "set-cookie" not in login.headers
        token = login.headers["session-token"]
        assert token.count(".") == 2 and 'name="csrf_token"' not in login.json()["html"]
        assert login.json()["session"]["user"] == "alice"
        added = await c.post("/cart/add", data={"item": "hat"}, headers=bearer(token))
        token = added.headers.get("session-token", token)
        seen = (await c.get("/api/state", headers=bearer(token))).json()
        assert seen["session"]["data"] == {"cart": ["hat"]} and "html" not in seen
        assert len(c.cookies.jar) == 0

        logout = await c.post("/logout", headers=bearer(token))
        assert logout.headers["session-token"] == ""  # the client forgets its token
        after = (await c.get("/api/session", headers=bearer(token))).json()
        assert after["session"]["user"] is None


@pytest.mark.anyio
async def test_cookie_strategies_do_not_serve_the_script(manager: SessionManager) -> None:
    async with client(manager) as c:
        assert (await c.get("/coatcheck.js")).status_code == 404
