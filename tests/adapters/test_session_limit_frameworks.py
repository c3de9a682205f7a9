"""The concurrent-session limit through Flask's and Django's own test clients (server-side
and client-side for Flask; Django with `django.contrib.auth.login`): the login beyond the
limit ends the oldest session, or is answered 403 with nothing stored."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import django
import pytest
from django.conf import settings

from . import django_settings

if not settings.configured:
    settings.configure(**django_settings.SETTINGS)
    django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client, override_settings  # noqa: E402
from flask import Flask, jsonify  # noqa: E402
from flask.testing import FlaskClient  # noqa: E402

from coatcheck import (  # noqa: E402
    ClientSide,
    KeyRing,
    Lifetimes,
    ServerSide,
    SessionAdmin,
    SessionLimit,
    SessionManager,
)
from coatcheck.adapters.django.config import build  # noqa: E402
from coatcheck.adapters.flask import FlaskSession, SessionInterface  # noqa: E402
from coatcheck.stores import MemoryRevocationStore, MemoryStore, SQLiteStore  # noqa: E402
from coatcheck.stores.django import DjangoStore  # noqa: E402
from helpers import FakeClock  # noqa: E402

BASE = "https://localhost"


def flask_app(manager: SessionManager) -> Flask:
    from flask import session

    app = Flask(__name__)
    app.config["TESTING"] = True
    SessionInterface(manager).init_app(app)

    @app.post("/login/<user>")
    def login(user: str) -> Any:
        current = session._get_current_object()  # type: ignore[attr-defined]  # a LocalProxy
        assert isinstance(current, FlaskSession)
        current.coatcheck.login(user)
        return jsonify(ok=True)

    @app.get("/whoami")
    def whoami() -> Any:
        current = session._get_current_object()  # type: ignore[attr-defined]
        assert isinstance(current, FlaskSession)
        return jsonify(user=current.coatcheck.user)

    return app


def flask_user(browser: FlaskClient) -> str | None:
    user = browser.get("/whoami", base_url=BASE).get_json()["user"]
    assert user is None or isinstance(user, str)
    return user


@pytest.mark.parametrize("mode", ["server", "client"])
@pytest.mark.parametrize("policy", ["revoke-oldest", "refuse"])
def test_flask(mode: str, policy: str, tmp_path: Path) -> None:
    clock = FakeClock()
    store = SQLiteStore(tmp_path / "s.db", clock=clock)
    chosen: Any = (
        ServerSide(store=store)
        if mode == "server"
        else ClientSide(KeyRing([b"K" * 32]), store=store, revocations=MemoryRevocationStore())
    )
    manager = SessionManager(
        chosen,
        lifetimes=Lifetimes(renewal=None),
        clock=clock,
        session_limit=SessionLimit(2, on_exceed=policy),  # type: ignore[arg-type]
    )
    app = flask_app(manager)
    browsers = [app.test_client() for _ in range(3)]
    for browser in browsers[:2]:
        assert browser.post("/login/ada", base_url=BASE).status_code == 200
        clock.advance(1)
    response = browsers[2].post("/login/ada", base_url=BASE)
    if policy == "refuse":
        assert response.status_code == 403
        assert response.headers["X-Coatcheck-Refused"] == "session-limit"
        assert "Set-Cookie" not in response.headers
        assert [flask_user(b) for b in browsers] == ["ada", "ada", None]
    else:
        assert response.status_code == 200
        assert [flask_user(b) for b in browsers] == [None, "ada", "ada"]
    assert len(SessionAdmin(manager).sessions("ada")) == 2


@pytest.fixture(scope="module")
def users() -> None:
    call_command("migrate", run_syncdb=True, verbosity=0)
    User.objects.get_or_create(username="ada")


def django_user(browser: Client) -> str | None:
    user = browser.get("/whoami").json()["user"]
    assert user is None or isinstance(user, str)
    return user


@pytest.mark.parametrize("store", ["memory", "django"])
@pytest.mark.parametrize("policy", ["revoke-oldest", "refuse"])
def test_django(policy: str, store: str, users: None) -> None:
    """`auth.login` through Django's test client; on a MemoryStore, and on the project's
    own database (`COATCHECK = {"store": "django", "session_limit": ...}`)."""
    clock = FakeClock()
    clock.now = time.time()  # Django's own expiry maths reads the real time
    limit = SessionLimit(2, on_exceed=policy)  # type: ignore[arg-type]
    if store == "memory":
        manager = SessionManager(
            ServerSide(store=MemoryStore(clock=clock)),
            lifetimes=Lifetimes(renewal=None),
            clock=clock,
            session_limit=limit,
        )
    else:
        manager = build({"store": DjangoStore(clock=clock), "clock": clock, "session_limit": limit})
    pk = str(User.objects.get(username="ada").pk)
    SessionAdmin(manager).revoke_user(pk)  # (the project's database outlives one test)
    with override_settings(COATCHECK={"manager": manager}):
        browsers = [Client() for _ in range(3)]
        for browser in browsers[:2]:
            assert browser.get("/login/ada").status_code == 200
            clock.advance(1)
        response = browsers[2].get("/login/ada")
        if policy == "refuse":
            assert response.status_code == 403
            assert response["X-Coatcheck-Refused"] == "session-limit"
            assert "sessionid" not in response.cookies
            assert [django_user(b) for b in browsers] == ["ada", "ada", None]
        else:
            assert response.status_code == 200
            assert [django_user(b) for b in browsers] == [None, "ada", "ada"]
        assert len(SessionAdmin(manager).sessions(pk)) == 2
