"""Per-route opt-out through real HTTP in the WSGI adapters: coatcheck's WSGI
`SessionMiddleware` (werkzeug's test client) and Flask's `SessionInterface` (Flask's test
client). Excluded paths, prefixes, patterns, callables and `@no_session` views get no
session, no store access, no token verification and no header from coatcheck; a session
cookie sent to them is left alone; every other route behaves as before."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, jsonify, session
from flask.testing import FlaskClient
from flask.views import MethodView
from werkzeug.test import Client, TestResponse

from coatcheck.adapters.flask import ExcludedSession, SessionInterface, no_session
from coatcheck.adapters.wsgi import ENVIRON_KEY, SessionMiddleware, StartResponse
from coatcheck.exceptions import ConfigurationError, SessionExcluded
from coatcheck.manager import SessionManager
from coatcheck.routes import NO_SESSION
from coatcheck.session import Session
from helpers import COOKIE, FakeClock

from .optout_support import (
    COATCHECK_HEADERS,
    MODES,
    forged,
    manager_in,
    security_events,
    watch_security,
)

BASE = "https://testserver"
EXCLUDE: list[Any] = [
    "/healthz",
    "/static/",
    re.compile(r"^/assets/.*\.js$"),
    lambda path: path == "/by-callable",
]
EXCLUDED = ["/healthz", "/static/app.css", "/static/a/b.png", "/assets/app.js", "/by-callable"]
NOT_EXCLUDED = ["/", "/healthz/", "/healthz/deep", "/static", "/assets/app.css"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def untouched(response: TestResponse) -> None:
    for name in COATCHECK_HEADERS:
        assert name not in response.headers, (name, response.headers)


def secret_of(response: TestResponse) -> str | None:
    for header in response.headers.getlist("Set-Cookie"):
        if header.startswith(f"{COOKIE}="):
            return header.split(";", 1)[0].split("=", 1)[1]
    return None


# -- WSGI --------------------------------------------------------------------------------


def wsgi_app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    current = environ[ENVIRON_KEY]
    if current is NO_SESSION:
        body = b"no session"
    else:
        assert isinstance(current, Session)
        if environ["PATH_INFO"] == "/set":
            current["x"] = "1"
        body = json.dumps({"data": dict(current)}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


@pytest.mark.parametrize("mode", MODES)
def test_wsgi(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    manager, store = manager_in(mode, tmp_path, clock)
    watch_security(caplog)
    http = Client(SessionMiddleware(wsgi_app, manager, exclude=EXCLUDE), use_cookies=False)
    secret = secret_of(http.get("/set", base_url=BASE))
    assert secret
    calls = list(store.calls) if store is not None else []
    for cookie in (secret, forged(secret)):
        for path in EXCLUDED:
            response = http.get(path, base_url=BASE, headers={"Cookie": f"{COOKIE}={cookie}"})
            assert response.status_code == 200 and response.data == b"no session", path
            untouched(response)
    assert security_events(caplog) == []
    if store is not None:
        assert store.calls == calls
    for path in NOT_EXCLUDED:
        response = http.get(path, base_url=BASE, headers={"Cookie": f"{COOKIE}={secret}"})
        assert response.json == {"data": {"x": "1"}}, path
        assert "Vary" in response.headers
    http.get("/", base_url=BASE, headers={"Cookie": f"{COOKIE}={forged(secret)}"})
    assert security_events(caplog)


def test_wsgi_path_is_path_info_decoded(tmp_path: Path, clock: FakeClock) -> None:
    manager, store = manager_in("server-memory", tmp_path, clock)
    http = Client(SessionMiddleware(wsgi_app, manager, exclude=["/static/é/"]))
    untouched(http.get("/static/%C3%A9/x.css", base_url=BASE))
    assert store.calls == []
    # Mounted under a SCRIPT_NAME: the path is what follows it.
    untouched(http.get("/static/%C3%A9/x.css", base_url=BASE + "/app"))


@pytest.mark.parametrize("exclude", ["/healthz", ["healthz"], ["/"], ["/x*"], [1]])
def test_wsgi_bad_specs(tmp_path: Path, clock: FakeClock, exclude: Any) -> None:
    manager, _ = manager_in("server-memory", tmp_path, clock)
    with pytest.raises(ConfigurationError):
        SessionMiddleware(wsgi_app, manager, exclude=exclude)


# -- Flask -------------------------------------------------------------------------------


class Marked(MethodView):
    def get(self) -> str:
        return "marked view class"


def flask_app(manager: SessionManager, **options: Any) -> Flask:
    app = Flask(__name__, static_folder=None)  # (Flask's own /static/ route: ours here)
    app.config["TESTING"] = True
    app.session_interface = SessionInterface(manager, exclude=EXCLUDE, **options)

    @app.get("/")
    @app.get("/healthz/")
    @app.get("/healthz/deep")
    @app.get("/static")
    @app.get("/assets/<name>")
    def dump(name: str = "") -> Any:
        if isinstance(session._get_current_object(), ExcludedSession):  # type: ignore[attr-defined]
            return "no session"  # /assets/*.js
        return jsonify(data=dict(session))

    @app.get("/healthz")
    @app.get("/static/<path:path>")
    @app.get("/by-callable")
    def plain(path: str = "") -> str:
        assert isinstance(session._get_current_object(), ExcludedSession)  # type: ignore[attr-defined]
        return "plain"

    @app.get("/set")
    def set_value() -> str:
        session["x"] = "1"
        return "ok"

    @app.get("/marked")
    @no_session
    def marked() -> str:
        return "marked"

    @no_session
    @app.post("/marked-above")
    def marked_above() -> str:
        return "marked above"

    @app.get("/marked-uses")
    @no_session
    def marked_uses() -> str:
        session["x"] = "lost"
        return "unreachable"

    app.add_url_rule("/marked-class", view_func=no_session(Marked).as_view("marked_class"))
    return app


FLASK_EXCLUDED = [*EXCLUDED, "/marked", "/marked-class"]


@pytest.mark.parametrize("mode", MODES)
def test_flask(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    manager, store = manager_in(mode, tmp_path, clock)
    watch_security(caplog)
    app = flask_app(manager)
    http: FlaskClient = app.test_client()
    secret = secret_of(http.get("/set", base_url=BASE))
    assert secret
    calls = list(store.calls) if store is not None else []
    for cookie in (secret, forged(secret)):
        http.set_cookie(COOKIE, cookie, domain="testserver")
        for path in FLASK_EXCLUDED:
            response = http.get(path, base_url=BASE)
            assert response.status_code == 200, (path, response.data)
            untouched(response)
        untouched(http.post("/marked-above", base_url=BASE))
    assert security_events(caplog) == []
    if store is not None:
        assert store.calls == calls
    http.set_cookie(COOKIE, secret, domain="testserver")
    for path in NOT_EXCLUDED:
        response = http.get(path, base_url=BASE)
        assert response.json == {"data": {"x": "1"}}, path
        assert "Vary" in response.headers
    # A forged cookie is verified (and logged) on every route not excluded, a 404 and a
    # 405 included: they are no marked view.
    for path, status in (("/", 200), ("/nowhere", 404), ("/marked-above", 405)):
        http.set_cookie(COOKIE, forged(secret), domain="testserver")
        before = len(security_events(caplog))
        assert http.get(path, base_url=BASE).status_code == status
        assert len(security_events(caplog)) == before + 1, path


def test_flask_session_in_an_excluded_view_is_a_clear_error(
    tmp_path: Path, clock: FakeClock
) -> None:
    manager, store = manager_in("server-memory", tmp_path, clock)
    app = flask_app(manager)
    app.config["TESTING"] = False
    response = app.test_client().get("/marked-uses", base_url=BASE)
    assert response.status_code == 500
    untouched(response)
    assert store.calls == []
    app.config["TESTING"] = True
    with pytest.raises(SessionExcluded, match="excluded from sessions"):
        app.test_client().get("/marked-uses", base_url=BASE)


def test_flask_without_marks_matches_no_url_twice(tmp_path: Path, clock: FakeClock) -> None:
    manager, _ = manager_in("server-memory", tmp_path, clock)
    app = Flask(__name__)
    interface = SessionInterface(manager)
    app.session_interface = interface

    @app.get("/")
    def index() -> str:
        return "ok"

    app.test_client().get("/", base_url=BASE)
    assert interface.exclude is None
    assert interface._marked == {id(app): frozenset()}


def test_flask_bad_specs(tmp_path: Path, clock: FakeClock) -> None:
    manager, _ = manager_in("server-memory", tmp_path, clock)
    with pytest.raises(ConfigurationError, match="must start with '/'"):
        SessionInterface(manager, exclude=["static/"])
