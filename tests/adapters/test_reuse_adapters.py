"""Theft detection on reuse through Flask's and Django's own test clients (the ASGI path,
both modes and the races are in tests/test_reuse.py): a secret that a renewal replaced,
presented after the grace window, is logged as `session.reuse` and, with the default
`on_reuse="revoke"`, ends the session, so the owner's current cookie stops working too."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import django
import pytest
from django.conf import settings

from . import django_settings

if not settings.configured:
    settings.configure(**django_settings.SETTINGS)
    django.setup()

from django.core.management import call_command  # noqa: E402
from django.test import Client, override_settings  # noqa: E402
from django.utils import timezone  # noqa: E402
from flask import Flask, jsonify, request, session  # noqa: E402

from coatcheck import Lifetimes  # noqa: E402
from coatcheck.adapters.flask import SessionInterface  # noqa: E402
from coatcheck.stores import MemoryStore, SQLiteStore  # noqa: E402
from coatcheck.stores.base import Store  # noqa: E402
from helpers import COOKIE, FakeClock, cookie_value, manager_for  # noqa: E402

LIFETIMES = Lifetimes(renewal=60, grace=10)


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, clock: FakeClock, tmp_path: Path) -> Any:
    backend: Store = (
        MemoryStore(clock=clock)
        if request.param == "memory"
        else SQLiteStore(tmp_path / "sessions.db", clock=clock)
    )
    yield backend
    backend.close()


@pytest.fixture
def clock() -> FakeClock:
    clock = FakeClock()
    clock.now = timezone.now().timestamp()  # Django's own expiry maths reads the real time
    return clock


def reuse_events(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == "session.reuse"]


def test_flask_a_renewed_away_cookie_after_grace_revokes_the_session(
    store: Store, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="coatcheck.security")
    app = Flask(__name__)
    app.config["TESTING"] = True
    SessionInterface(manager_for(store, clock, lifetimes=LIFETIMES)).init_app(app)

    @app.get("/set")
    def set_value() -> str:
        session[request.args["key"]] = request.args["value"]
        return "ok"

    @app.get("/dump")
    def dump() -> Any:
        return jsonify(dict(session))

    http = app.test_client(use_cookies=False)

    def get(path: str, secret: str | None) -> Any:
        headers = {"Cookie": f"{COOKIE}={secret}"} if secret else {}
        return http.get(path, base_url="https://localhost", headers=headers)

    old = cookie_value(get("/set?key=cart&value=full", None).headers.items())
    clock.advance(61)  # due for renewal
    current = cookie_value(get("/dump", old).headers.items())
    assert old and current and current != old
    clock.advance(5)
    assert get("/dump", old).get_json() == {"cart": "full"}  # in flight: inside the window
    assert reuse_events(caplog) == []
    clock.advance(5)
    response = get("/dump", old)
    assert response.status_code == 200 and response.get_json() == {}
    assert cookie_value(response.headers.items()) == ""  # cleared
    [event] = reuse_events(caplog)
    assert old not in event.getMessage() and current not in event.getMessage()
    assert get("/dump", current).get_json() == {}  # the owner's cookie is dead too


def test_django_a_renewed_away_key_after_grace_revokes_the_session(
    store: Store, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    call_command("migrate", run_syncdb=True, verbosity=0)
    caplog.set_level(logging.WARNING, logger="coatcheck.security")
    manager = manager_for(store, clock, lifetimes=LIFETIMES)
    with override_settings(COATCHECK={"manager": manager}):

        def get(path: str, key: str | None) -> Any:
            browser = Client()
            if key:
                browser.cookies["sessionid"] = key
            return browser.get(path)

        def sent(response: Any) -> str | None:
            morsel = response.cookies.get("sessionid")
            return None if morsel is None else str(morsel.value)

        old = sent(get("/set?key=cart&value=full", None))
        clock.advance(61)  # due for renewal
        current = sent(get("/dump", old))
        assert old and current and current != old
        clock.advance(10)  # the grace window is over
        response = get("/dump", old)
        assert response.status_code == 200 and response.json()["data"] == {}
        [event] = reuse_events(caplog)
        assert old not in event.getMessage() and current not in event.getMessage()
        assert get("/dump", current).json()["data"] == {}  # the owner's key is dead too
