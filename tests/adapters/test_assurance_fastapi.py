"""FastAPI: `authenticated_session(max_age=..., assurance=...)` answers a stale or weak
login with a step-up 401 (the fields under FastAPI's `detail`, the RFC 9470 challenge, the
session's headers), in both modes, on MemoryStore and SQLite, wherever the middleware
sits."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI

from coatcheck import ClientSide, KeyRing, Lifetimes, ServerSide, Session, SessionManager
from coatcheck.adapters.asgi import SessionMiddleware
from coatcheck.adapters.fastapi import SessionDep, authenticated_session
from coatcheck.exceptions import ConfigurationError
from coatcheck.stores import MemoryStore, SQLiteStore
from helpers import FakeClock, client

pytestmark = pytest.mark.anyio

Strong = Annotated[Session, Depends(authenticated_session(max_age=300, assurance="aal2"))]


def make_app(manager: SessionManager, *, outside: bool = False) -> Any:
    """The app, with the middleware added to it, or (`outside`) wrapping it from outside
    FastAPI's own error middleware."""
    app = FastAPI()

    @app.post("/login")
    async def login(user: str, session: SessionDep, level: str = "aal1") -> dict[str, str]:
        session.login(user, assurance=level)
        return {"user": user}

    @app.post("/reauth")
    def reauth(session: SessionDep, level: str = "aal1") -> dict[str, bool]:
        session.reauthenticate(assurance=level)
        return {"ok": True}

    @app.get("/strong")
    async def strong(session: Strong) -> dict[str, Any]:
        return {"user": session.user, "assurance": session.assurance}

    if outside:
        return SessionMiddleware(app, manager=manager)
    app.add_middleware(SessionMiddleware, manager=manager)
    return app


MODES = ["server-memory", "server-sqlite", "client-memory", "client-sqlite"]


@pytest.mark.parametrize("outside", [False, True], ids=["added", "outside"])
@pytest.mark.parametrize("kind", MODES)
async def test_step_up_through_a_fastapi_dependency(
    kind: str, outside: bool, tmp_path: Path
) -> None:
    clock = FakeClock()
    mode_name, store_name = kind.split("-")
    mode: Any
    if mode_name == "server":
        mode = ServerSide(
            MemoryStore(clock=clock)
            if store_name == "memory"
            else SQLiteStore(tmp_path / "s.db", clock=clock)
        )
    else:
        url = "memory://" if store_name == "memory" else f"sqlite:///{tmp_path / 's.db'}"
        mode = ClientSide(KeyRing([b"K" * 32]), store=url)
    manager = SessionManager(mode, lifetimes=Lifetimes(renewal=None), clock=clock)
    async with client(make_app(manager, outside=outside)) as http:
        refused = await http.get("/strong")
        assert refused.status_code == 401
        assert refused.json()["detail"]["reason"] == "login_required"
        await http.post("/login", params={"user": "alice"})
        weak = await http.get("/strong")
        assert weak.status_code == 401
        assert weak.json() == {
            "detail": {
                "error": "insufficient_user_authentication",
                "reason": "assurance_too_low",
                "max_age": 300,
                "acr_values": "aal2 aal3",
            }
        }
        assert weak.headers["www-authenticate"].startswith(
            'Session error="insufficient_user_authentication"'
        )
        assert weak.headers["vary"] == "Cookie"
        await http.post("/reauth", params={"level": "aal2"})
        ok = await http.get("/strong")
        assert ok.json() == {"user": "alice", "assurance": "aal2"}
        clock.advance(301)
        stale = await http.get("/strong")
        assert stale.status_code == 401 and stale.json()["detail"]["reason"] == "login_too_old"
        assert 'max_age="300"' in stale.headers["www-authenticate"]


def test_a_bad_requirement_fails_where_the_route_is_declared() -> None:
    with pytest.raises(ConfigurationError):
        authenticated_session(assurance="aal9")
