"""The demo app in process (httpx over ASGI, at https:// so `__Host-` cookies flow): what
the page and the JSON state show, and what the actions may and may not do."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from coatcheck import ServerSide, SessionManager
from coatcheck.demo.app import build_app
from coatcheck.stores import MemoryStore

JSON = {"accept": "application/json"}


def client(manager: SessionManager, agent: str = "device-1") -> httpx.AsyncClient:
    app = build_app(manager, replica="r2", strategy="shared")
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://localhost",
                             headers={"user-agent": agent})  # fmt: skip


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
    async with client(manager, "laptop") as a, client(manager, "phone") as b, \
            client(manager, "bobs") as bob:  # fmt: skip
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
        assert 'served by <span class="replica" id="replica">r2</span>' in page


@pytest.mark.anyio
async def test_probe_does_not_create_a_session(manager: SessionManager) -> None:
    async with client(manager) as c:
        response = await c.get("/api/session")
        assert "set-cookie" not in response.headers
        assert json.loads(response.text)["session"]["user"] is None
