"""Flask: `@recent_login_required(max_age=..., assurance=...)` answers a stale or weak
login with a step-up 401 (JSON body, RFC 9470 challenge, the session's `Vary`), in both
modes, on MemoryStore and SQLite, through Flask's test client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask, jsonify, request, session

from coatcheck import ClientSide, KeyRing, Lifetimes, ServerSide, SessionAdmin, SessionManager
from coatcheck.adapters.flask import FlaskSession, SessionInterface, recent_login_required
from coatcheck.stores import MemoryStore, SQLiteStore
from helpers import FakeClock

BASE = "https://localhost"


def make_app(manager: SessionManager) -> Flask:
    app = Flask(__name__)
    SessionInterface(manager).init_app(app)

    def current() -> FlaskSession:
        assert isinstance(session, FlaskSession)
        return session

    @app.post("/login/<user>")
    def login(user: str) -> Any:
        current().login(user, assurance=request.args.get("level", "aal1"))
        return "ok"

    @app.post("/reauth")
    def reauth() -> Any:
        current().reauthenticate(assurance=request.args.get("level", "aal1"))
        return "ok"

    @app.get("/strong")
    @recent_login_required(max_age=300, assurance="aal2")
    def strong() -> Any:
        return jsonify(user=current().user, assurance=current().assurance)

    @app.get("/recent")
    @recent_login_required(max_age=300)
    async def recent() -> Any:  # async views too
        return jsonify(user=current().user)

    return app


MODES = ["server-memory", "server-sqlite", "client-memory", "client-sqlite"]


@pytest.mark.parametrize("kind", MODES)
def test_step_up_through_a_flask_decorator(kind: str, tmp_path: Path) -> None:
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
    http = make_app(manager).test_client()

    refused = http.get("/recent", base_url=BASE)
    assert refused.status_code == 401 and refused.get_json()["reason"] == "login_required"
    http.post("/login/alice", base_url=BASE)
    assert http.get("/recent", base_url=BASE).get_json() == {"user": "alice"}
    weak = http.get("/strong", base_url=BASE)
    assert weak.status_code == 401
    assert weak.mimetype == "application/json"
    assert weak.get_json() == {
        "error": "insufficient_user_authentication",
        "reason": "assurance_too_low",
        "max_age": 300,
        "acr_values": "aal2 aal3",
    }
    assert weak.headers["WWW-Authenticate"] == (
        'Session error="insufficient_user_authentication", '
        'error_description="assurance_too_low", max_age="300", acr_values="aal2 aal3"'
    )
    assert weak.headers["Vary"] == "Cookie"
    assert weak.headers["Cache-Control"] == "no-store"
    http.post("/reauth?level=aal2", base_url=BASE)
    assert http.get("/strong", base_url=BASE).get_json() == {"user": "alice", "assurance": "aal2"}
    assert [i.assurance for i in SessionAdmin(manager).sessions("alice")] == ["aal2"]
    clock.advance(301)
    stale = http.get("/strong", base_url=BASE)
    assert stale.status_code == 401 and stale.get_json()["reason"] == "login_too_old"
    assert http.get("/recent", base_url=BASE).get_json()["reason"] == "login_too_old"
