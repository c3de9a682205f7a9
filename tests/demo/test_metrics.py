"""The demo's live event counters (`GET /api/metrics`, the admin view): a login through
the app is counted, by the event API (`coatcheck.events`), in both modes."""

from __future__ import annotations

import pytest

from coatcheck import ClientSide, KeyRing, ServerSide, SessionManager
from coatcheck.stores import MemoryStore

from .test_app import JSON, client


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["server", "client"])
async def test_the_metrics_endpoint_counts_a_login(mode: str) -> None:
    if mode == "server":
        manager = SessionManager(ServerSide(MemoryStore()))
    else:
        manager = SessionManager(ClientSide(KeyRing([b"d" * 32]), store="memory://"))
    async with client(manager) as c:
        before = (await c.get("/api/metrics")).json()
        assert before["replica"] == "r2" and before["events"].get("login", 0) == 0
        await c.get("/api/state")  # (the demo's CSRF token comes with its state)
        token = (await c.get("/api/state")).json()["csrf_token"]
        response = await c.post(
            "/login", data={"user": "alice", "csrf_token": token or ""}, headers=JSON
        )
        assert response.status_code == 200
        assert manager.events.flush(10)
        after = (await c.get("/api/metrics")).json()
        assert after["events"]["login"] == 1
        assert after["dropped"] == 0
        page = (await c.get("/")).text
        assert 'id="metrics"' in page and "<td>login</td><td>1</td>" in page
    manager.events.close()
