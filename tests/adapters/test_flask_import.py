"""`SessionInterface(manager, import_from=...)`: switching a Flask app to coatcheck keeps
its users logged in.

Each test logs a user in under the session the app had before (Flask's own signed cookie,
or Flask-Session on a real Redis from `tests/servers.py`), through Flask-Login and that
interface's real code, then sends the cookie it set to the same app switched to coatcheck.
"""

from __future__ import annotations

import logging
import pickle
import secrets
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import flask_login  # type: ignore[import-untyped]  # ships no type hints
import pytest
import redis
from flask import Flask, flash, get_flashed_messages, jsonify, session
from flask.sessions import SecureCookieSessionInterface
from flask.testing import FlaskClient
from itsdangerous import TimestampSigner
from werkzeug.test import TestResponse

from coatcheck import ConfigurationError, Cookie, Header, SessionAdmin, SessionManager
from coatcheck.adapters.flask import FlaskSession, SessionInterface
from coatcheck.events import Event
from coatcheck.stores import MemoryStore
from faults import SwitchStore
from helpers import COOKIE, FakeClock, manager_for
from servers import RedisServer, redis_server_fixture  # noqa: F401 - fixtures

BASE = "https://localhost"
SECRET_KEY = "the app's old SECRET_KEY, the same before and after the switch"


class User(flask_login.UserMixin):  # type: ignore[misc]  # an untyped base class
    def __init__(self, user_id: str) -> None:
        self.id = user_id


def make_app(**config: Any) -> Flask:
    """The application: Flask-Login, a login route that also flashes and keeps a cart
    (a tuple: Flask's serializer tags it), and a route that shows who is logged in."""
    app = Flask(__name__)
    app.config.update({"TESTING": True, "SECRET_KEY": SECRET_KEY, **config})
    login = flask_login.LoginManager(app)
    login.user_loader(User)

    @app.post("/login/<user>")
    def log_in(user: str) -> str:
        flask_login.login_user(User(user))
        session["cart"] = ("coat", "hat")
        session.permanent = True
        flash("welcome")
        return "ok"

    @app.get("/me")
    def me() -> Any:
        user = flask_login.current_user
        return jsonify(
            authenticated=user.is_authenticated,
            id=user.get_id() if user.is_authenticated else None,
            cart=session.get("cart"),
        )

    @app.get("/flashes")
    def flashes() -> Any:
        return jsonify(get_flashed_messages())

    return app


def coatcheck_app(manager: SessionManager, import_from: Any = "flask", **config: Any) -> Flask:
    app = make_app(**config)
    SessionInterface(manager, import_from=import_from).init_app(app)
    return app


@pytest.fixture
def manager() -> SessionManager:
    clock = FakeClock(time.time())  # itsdangerous checks the old cookie's age on the real clock
    return manager_for(MemoryStore(clock=clock), clock)


def old_cookie(app: Flask, user: str = "alice") -> str:
    """Log `user` in on `app` as it runs before the switch; the session cookie it set."""
    client = app.test_client()
    assert client.post(f"/login/{user}", base_url=BASE).status_code == 200
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value


def with_cookie(app: Flask, value: str, name: str = "session") -> FlaskClient:
    client = app.test_client()
    client.set_cookie(name, value, domain="localhost")
    return client


def me(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/me", base_url=BASE)
    assert response.status_code == 200
    body: dict[str, Any] = response.json  # type: ignore[assignment]
    return body


def set_cookies(response: TestResponse, name: str) -> list[str]:
    return [c for c in response.headers.getlist("Set-Cookie") if c.startswith(f"{name}=")]


def events(
    caplog: pytest.LogCaptureFixture, logger: str, event: str | None = None
) -> list[logging.LogRecord]:
    """The records of `logger` that carry an event in their `extra` (only `event`, if given)."""
    found = [r for r in caplog.records if r.name == logger and "event" in r.__dict__]
    return [r for r in found if event is None or r.__dict__["event"] == event]


# -- Flask's default signed cookie ----------------------------------------------------------


def test_a_logged_in_user_stays_logged_in(
    manager: SessionManager, caplog: pytest.LogCaptureFixture
) -> None:
    value = old_cookie(make_app())
    app = coatcheck_app(manager)
    client = with_cookie(app, value)
    caplog.set_level(logging.INFO, logger="coatcheck")

    response = client.get("/me", base_url=BASE)
    assert response.json == {"authenticated": True, "id": "alice", "cart": ["coat", "hat"]}
    # A coatcheck session is issued in the same response (permanent, as the old one was),
    # and the old cookie is cleared.
    (issued,) = set_cookies(response, COOKIE)
    assert "Max-Age=" in issued
    (cleared,) = set_cookies(response, "session")
    assert "Expires=Thu, 01 Jan 1970" in cleared
    assert client.get_cookie("session") is None

    (imported,) = events(caplog, "coatcheck.session", "session.imported")
    assert "from=flask user=yes" in imported.getMessage()
    assert value not in imported.getMessage() and issued.split(";")[0] not in caplog.text
    assert not events(caplog, "coatcheck.security")

    # The next request is the coatcheck session's alone: still logged in, nothing imported.
    caplog.clear()
    assert me(client) == {"authenticated": True, "id": "alice", "cart": ["coat", "hat"]}
    assert not events(caplog, "coatcheck.session", "session.imported")
    assert client.get("/flashes", base_url=BASE).json == ["welcome"]  # flashed before the switch


def test_the_user_is_bound_as_flask_login_binds_it(manager: SessionManager) -> None:
    """The imported user is coatcheck's session user too (listed, revocable): the binding
    `connect_flask_login` makes at a login."""
    app = coatcheck_app(manager)
    users = []

    @app.get("/user")
    def user() -> str:
        current = session._get_current_object()  # type: ignore[attr-defined]  # a LocalProxy
        assert isinstance(current, FlaskSession)
        users.append(current.user)
        return "ok"

    client = with_cookie(app, old_cookie(make_app(), "bob"))
    client.get("/user", base_url=BASE)
    client.get("/user", base_url=BASE)
    assert users == ["bob", "bob"]
    (listed,) = SessionAdmin(manager).sessions("bob")  # listed under the user: revocable
    assert listed.user == "bob"


@pytest.mark.parametrize("how", ["signature", "data", "key"])
def test_a_tampered_cookie_reads_as_anonymous_and_is_logged(
    manager: SessionManager, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    value = old_cookie(make_app())
    if how == "signature":
        forged = value[:-2] + ("AA" if value[-2:] != "AA" else "BB")
    elif how == "data":  # another user's ID in the payload, the signature kept
        payload, _, rest = value.partition(".")
        forged = payload[:-3] + "xyz." + rest
    else:  # signed properly, with another key
        forged = old_cookie(make_app(SECRET_KEY="an attacker's guess at the key"))
    app = coatcheck_app(manager)
    client = with_cookie(app, forged)
    caplog.set_level(logging.INFO, logger="coatcheck")

    response = client.get("/me", base_url=BASE)
    assert response.json == {"authenticated": False, "id": None, "cart": None}
    assert not set_cookies(response, COOKIE)  # nothing imported, nothing saved
    (cleared,) = set_cookies(response, "session")
    assert "Expires=Thu, 01 Jan 1970" in cleared
    (rejected,) = events(caplog, "coatcheck.security")
    assert rejected.__dict__["event"] == "session.import_rejected"
    assert rejected.__dict__["session_hash"] not in ("", "-")
    assert "reason=signature" in rejected.getMessage() and forged not in caplog.text
    assert not events(caplog, "coatcheck.session", "session.imported")


def test_an_expired_cookie_is_not_imported(
    manager: SessionManager, caplog: pytest.LogCaptureFixture
) -> None:
    """Flask's own age check: a cookie signed longer ago than `PERMANENT_SESSION_LIFETIME`."""
    old = make_app()
    serializer = SecureCookieSessionInterface().get_signing_serializer(old)
    assert serializer is not None

    class HourAgo(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 3600

    serializer.signer = HourAgo
    value = serializer.dumps({"_user_id": "alice", "_fresh": True})
    app = coatcheck_app(manager, PERMANENT_SESSION_LIFETIME=timedelta(minutes=30))
    caplog.set_level(logging.INFO, logger="coatcheck")
    assert me(with_cookie(app, value))["authenticated"] is False
    (rejected,) = events(caplog, "coatcheck.security")
    assert "reason=expired" in rejected.getMessage()
    # Within the lifetime the same kind of cookie is imported.
    fresh = SecureCookieSessionInterface().get_signing_serializer(old)
    assert fresh is not None
    assert me(with_cookie(app, fresh.dumps({"_user_id": "alice"})))["id"] == "alice"


def test_secret_key_fallbacks_verify_as_flask_verifies(manager: SessionManager) -> None:
    """The old interface's own serializer: a cookie signed under a key the app has rotated
    out to `SECRET_KEY_FALLBACKS` still imports, as Flask would still read it."""
    value = old_cookie(make_app(SECRET_KEY="the key before the last rotation"))
    app = coatcheck_app(manager, SECRET_KEY_FALLBACKS=["the key before the last rotation"])
    assert me(with_cookie(app, value))["id"] == "alice"


def test_values_json_cannot_carry_are_left_behind(
    manager: SessionManager, caplog: pytest.LogCaptureFixture
) -> None:
    old = make_app()
    serializer = SecureCookieSessionInterface().get_signing_serializer(old)
    assert serializer is not None
    value = serializer.dumps({"_user_id": "alice", "blob": b"\x00\x01", "n": 3})
    app = coatcheck_app(manager)

    @app.get("/keys")
    def keys() -> Any:
        return jsonify(sorted(session.keys()))

    caplog.set_level(logging.INFO, logger="coatcheck")
    client = with_cookie(app, value)
    assert client.get("/keys", base_url=BASE).json == ["_user_id", "n"]
    (imported,) = events(caplog, "coatcheck.session", "session.imported")
    assert "dropped=blob" in imported.getMessage()


@pytest.mark.parametrize("fail_open", [False, True])
def test_an_import_that_cannot_be_saved_keeps_the_old_cookie(
    caplog: pytest.LogCaptureFixture, fail_open: bool
) -> None:
    """The old session is deleted only once the coatcheck one is saved: with the store down
    at commit (503, or with `fail_open` the write dropped) the old cookie stays and the next
    request imports it."""
    clock = FakeClock(time.time())
    store = SwitchStore(clock=clock)
    app = make_app()
    SessionInterface(manager_for(store, clock), import_from="flask", fail_open=fail_open).init_app(
        app
    )
    client = with_cookie(app, old_cookie(make_app()))
    caplog.set_level(logging.INFO, logger="coatcheck")
    store.writes_down = True
    response = client.get("/me", base_url=BASE)
    assert response.status_code == (200 if fail_open else 503)
    assert not set_cookies(response, "session") and not set_cookies(response, COOKIE)
    assert not events(caplog, "coatcheck.session", "session.imported")
    store.writes_down = False
    response = client.get("/me", base_url=BASE)
    assert response.json["id"] == "alice"  # type: ignore[index]
    assert set_cookies(response, COOKIE) and set_cookies(response, "session")
    assert len(events(caplog, "coatcheck.session", "session.imported")) == 1


def test_a_valid_coatcheck_session_wins_over_an_old_cookie(manager: SessionManager) -> None:
    app = coatcheck_app(manager)
    client = app.test_client()

    @app.post("/coatcheck-login/<user>")
    def coatcheck_login(user: str) -> str:
        flask_login.login_user(User(user))
        return "ok"

    client.post("/coatcheck-login/carol", base_url=BASE)
    client.set_cookie("session", old_cookie(make_app(), "mallory"), domain="localhost")
    assert me(client)["id"] == "carol"


def test_without_import_from_the_old_cookie_is_ignored(manager: SessionManager) -> None:
    app = make_app()
    SessionInterface(manager).init_app(app)
    client = with_cookie(app, old_cookie(make_app()))
    response = client.get("/me", base_url=BASE)
    assert response.json["authenticated"] is False  # type: ignore[index]
    assert not set_cookies(response, "session")


# -- one cookie name for both --------------------------------------------------------------


@pytest.fixture
def same_name() -> SessionManager:
    clock = FakeClock(time.time())
    return manager_for(
        MemoryStore(clock=clock), clock, transport=Cookie(name="session", secure=False)
    )


def test_same_cookie_name_imports_and_replaces_the_cookie(
    same_name: SessionManager, caplog: pytest.LogCaptureFixture
) -> None:
    """Flask's default cookie name is coatcheck's too: a value that is no coatcheck secret
    is tried as the old format, and coatcheck's `Set-Cookie` replaces it (no clearing
    header, which would erase the new cookie)."""
    value = old_cookie(make_app())
    app = coatcheck_app(same_name)
    client = with_cookie(app, value)
    caplog.set_level(logging.INFO, logger="coatcheck")
    response = client.get("/me", base_url=BASE)
    assert response.json["id"] == "alice"  # type: ignore[index]
    (issued,) = set_cookies(response, "session")
    assert "Expires=Thu, 01 Jan 1970" not in issued
    new_value = client.get_cookie("session")
    assert new_value is not None and new_value.value != value
    assert not events(caplog, "coatcheck.security")  # no false alarm for the old format
    assert me(client)["id"] == "alice"


def test_from_flask_config_imports_under_flasks_own_cookie_settings() -> None:
    """`from_flask_config` names coatcheck's cookie as Flask named its own: the import
    replaces the cookie in place."""
    app = make_app(SESSION_COOKIE_SECURE=True)
    SessionInterface.from_flask_config(app, store="memory://", import_from="flask").init_app(app)
    client = with_cookie(app, old_cookie(make_app()))
    response = client.get("/me", base_url=BASE)
    assert response.json["id"] == "alice"  # type: ignore[index]
    (issued,) = set_cookies(response, "session")
    assert "Secure" in issued and "Expires=Thu, 01 Jan 1970" not in issued
    assert me(client)["id"] == "alice"


def test_same_name_on_another_path_is_cleared_on_its_path() -> None:
    """Same name, another path: both cookies live side by side in the browser, so the old
    one is cleared on its own path once imported."""
    clock = FakeClock(time.time())
    manager = manager_for(
        MemoryStore(clock=clock), clock, transport=Cookie(name="session", secure=False)
    )
    value = old_cookie(make_app())
    app = coatcheck_app(manager, SESSION_COOKIE_PATH="/app")
    response = with_cookie(app, value).get("/me", base_url=BASE)
    assert response.json["id"] == "alice"  # type: ignore[index]
    issued, cleared = set_cookies(response, "session")
    assert "Path=/;" in issued and "Expires" not in issued
    assert "Path=/app" in cleared and "Expires=Thu, 01 Jan 1970" in cleared


def test_same_cookie_name_tampered_reads_as_anonymous(
    same_name: SessionManager, caplog: pytest.LogCaptureFixture
) -> None:
    value = old_cookie(make_app())
    app = coatcheck_app(same_name)
    client = with_cookie(app, value[:-2] + ("AA" if value[-2:] != "AA" else "BB"))
    caplog.set_level(logging.INFO, logger="coatcheck")
    response = client.get("/me", base_url=BASE)
    assert response.json["authenticated"] is False  # type: ignore[index]
    (cleared,) = set_cookies(response, "session")  # cleared by coatcheck's own checks
    assert "Max-Age=0" in cleared
    (rejected,) = events(caplog, "coatcheck.security")
    assert rejected.__dict__["event"] == "session.malformed"


# -- configuration -------------------------------------------------------------------------


def test_import_from_needs_a_cookie_transport() -> None:
    with pytest.raises(ConfigurationError, match="Cookie transport"):
        SessionInterface(SessionManager(transport=Header()), import_from="flask")


def test_unknown_import_from_says_what_is_accepted(manager: SessionManager) -> None:
    app = coatcheck_app(manager, import_from="django")
    client = with_cookie(app, "x")
    with pytest.raises(ConfigurationError, match="flask-session-redis"):
        client.get("/me", base_url=BASE)


def test_a_subclassed_cookie_interface_is_read_with_its_own_salt(manager: SessionManager) -> None:
    class Salted(SecureCookieSessionInterface):
        salt = "my-app-salt"

    old = make_app()
    old.session_interface = Salted()
    value = old_cookie(old)
    assert me(with_cookie(coatcheck_app(manager, import_from=Salted()), value))["id"] == "alice"
    # Flask's default salt does not verify it.
    assert me(with_cookie(coatcheck_app(manager), value))["authenticated"] is False


# -- Flask-Session on Redis ----------------------------------------------------------------


@pytest.fixture
def flask_session_config(redis_server: RedisServer) -> Iterator[dict[str, Any]]:
    client = redis.Redis.from_url(redis_server.url)
    prefix = f"fs-{secrets.token_hex(4)}:"
    yield {"SESSION_TYPE": "redis", "SESSION_REDIS": client, "SESSION_KEY_PREFIX": prefix}
    client.close()


def flask_session_app(config: dict[str, Any]) -> Flask:
    import flask_session

    app = make_app(**config)
    flask_session.Session(app)
    return app


@pytest.mark.service
def test_flask_session_redis_user_stays_logged_in(
    manager: SessionManager,
    flask_session_config: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    old = flask_session_app(flask_session_config)
    sid = old_cookie(old)
    client_redis = flask_session_config["SESSION_REDIS"]
    key = flask_session_config["SESSION_KEY_PREFIX"] + sid
    assert client_redis.exists(key)  # Flask-Session's own record

    app = coatcheck_app(manager, "flask-session-redis", **flask_session_config)
    client = with_cookie(app, sid)
    caplog.set_level(logging.INFO, logger="coatcheck")
    response = client.get("/me", base_url=BASE)
    assert response.json == {"authenticated": True, "id": "alice", "cart": ["coat", "hat"]}
    assert set_cookies(response, COOKIE)
    assert "Expires=Thu, 01 Jan 1970" in set_cookies(response, "session")[0]
    assert not client_redis.exists(key)  # deleted once the coatcheck session was saved
    (imported,) = events(caplog, "coatcheck.session", "session.imported")
    assert "from=flask-session-redis" in imported.getMessage() and sid not in caplog.text
    assert me(client)["id"] == "alice"


@pytest.mark.service
def test_flask_session_redis_interface_instance(
    manager: SessionManager, flask_session_config: dict[str, Any]
) -> None:
    old = flask_session_app(flask_session_config)
    sid = old_cookie(old, "dave")
    app = coatcheck_app(manager, import_from=old.session_interface)
    assert me(with_cookie(app, sid))["id"] == "dave"


@pytest.mark.service
@pytest.mark.parametrize("case", ["unknown", "malformed", "pickled"])
def test_flask_session_redis_rejects(
    manager: SessionManager,
    flask_session_config: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
    case: str,
) -> None:
    """An ID Redis does not hold (expired), one that is not an ID at all (never sent to
    Redis), and a record pickled by an older Flask-Session (never unpickled)."""
    client_redis = flask_session_config["SESSION_REDIS"]
    prefix = flask_session_config["SESSION_KEY_PREFIX"]
    sid = secrets.token_urlsafe(32)
    if case == "malformed":
        sid = "../" + sid
    elif case == "pickled":
        client_redis.set(prefix + sid, pickle.dumps({"_user_id": "alice"}))
    app = coatcheck_app(manager, "flask-session-redis", **flask_session_config)
    caplog.set_level(logging.INFO, logger="coatcheck")
    assert me(with_cookie(app, sid))["authenticated"] is False
    (rejected,) = events(caplog, "coatcheck.security")
    reason = {"unknown": "unknown", "malformed": "malformed", "pickled": "undecodable"}[case]
    assert f"reason={reason}" in rejected.getMessage()
    if case == "pickled":
        assert client_redis.exists(prefix + sid)  # not imported: left where it was


def test_flask_session_redis_needs_its_settings(manager: SessionManager) -> None:
    app = coatcheck_app(manager, "flask-session-redis")
    with pytest.raises(ConfigurationError, match="SESSION_REDIS"):
        with_cookie(app, "x").get("/me", base_url=BASE)


def test_an_import_is_an_imported_event(manager: SessionManager) -> None:
    """The hub's subscribers see the import as an `imported` event, hashed like the log
    line, with neither the old cookie nor the new secret in it."""
    value = old_cookie(make_app())
    got: list[Event] = []
    manager.events.subscribe(got.append)
    client = with_cookie(coatcheck_app(manager), value)
    response = client.get("/me", base_url=BASE)
    assert response.json == {"authenticated": True, "id": "alice", "cart": ["coat", "hat"]}
    assert manager.events.flush(5.0)
    (imported,) = [event for event in got if event.kind == "imported"]
    assert imported.outcome == "ok" and imported.session_hash
    (issued,) = set_cookies(response, COOKIE)
    secret = issued.split(";")[0].split("=", 1)[1]
    assert value not in repr(got) and secret not in repr(got)
