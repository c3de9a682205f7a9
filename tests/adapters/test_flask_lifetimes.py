"""Remember me in Flask: `session.permanent = True` is `set_persistent()`, so a permanent
session lives by `Lifetimes.persistent_absolute` / `persistent_idle`, and its cookie's
Max-Age follows; the time left is on `session.coatcheck`. Through Flask's test client."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask, jsonify, session

from coatcheck import ClientSide, KeyRing, Lifetimes, ServerSide, SessionManager
from coatcheck.adapters.flask import FlaskSession, SessionInterface
from coatcheck.stores import MemoryRevocationStore, MemoryStore
from helpers import COOKIE, FakeClock

DAY = 86400
LIFETIMES = Lifetimes(persistent_absolute=30 * DAY, persistent_idle=7 * DAY)


def make_app(mode: str, clock: FakeClock) -> Flask:
    store = MemoryStore(clock=clock)
    manager = SessionManager(
        ServerSide(store=store)
        if mode == "server"
        else ClientSide(
            KeyRing([b"F" * 32]), store=store, revocations=MemoryRevocationStore(clock=clock)
        ),
        lifetimes=LIFETIMES,
        clock=clock,
        log_salt=b"salt",
    )
    app = Flask(__name__)
    app.config["TESTING"] = True
    SessionInterface(manager).init_app(app)

    def current() -> FlaskSession:
        proxied = session._get_current_object()  # type: ignore[attr-defined]
        assert isinstance(proxied, FlaskSession)
        return proxied

    @app.get("/login")
    def login() -> Any:
        current().login("alice")
        session.permanent = True
        return "ok"

    @app.get("/me")
    def me() -> Any:
        coatcheck = current().coatcheck
        session["n"] = session.get("n", 0) + 1
        return jsonify(user=coatcheck.user, remaining=coatcheck.remaining())

    return app


@pytest.mark.parametrize("mode", ["server", "client"])
def test_a_permanent_flask_session_lives_by_the_persistent_limits(mode: str) -> None:
    clock = FakeClock()
    client = make_app(mode, clock).test_client()
    response = client.get("/login", base_url="https://localhost")
    (cookie,) = [c for c in response.headers.getlist("Set-Cookie") if c.startswith(COOKIE)]
    assert re.search(r"Max-Age=(\d+)", cookie)[1] == str(30 * DAY)  # type: ignore[index]
    for day in (6, 12, 18, 24):  # past the default 12 hours, a request every 6 days
        clock.advance(6 * DAY)
        body = client.get("/me", base_url="https://localhost").get_json()
        assert body["user"] == "alice"
        assert body["remaining"] == min(7 * DAY, (30 - day) * DAY)
    clock.advance(6 * DAY + 5)  # day 30 (plus client-side leeway): over
    assert client.get("/me", base_url="https://localhost").get_json()["user"] is None
