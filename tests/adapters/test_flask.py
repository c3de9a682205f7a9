"""`coatcheck.adapters.flask.SessionInterface` through Flask's own test client, on every
store available (memory, SQLite; Redis and PostgreSQL when their stores exist), with
Flask-Login on top. Requests go to `https://localhost` as a browser would send them."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import flask_login  # type: ignore[import-untyped]  # ships no type hints
import pytest
from flask import Flask, flash, get_flashed_messages, jsonify, request, session
from flask.testing import FlaskClient
from werkzeug.exceptions import Forbidden
from werkzeug.test import TestResponse

from coatcheck import ClientSide, KeyRing, Lifetimes, SessionAdmin, SessionManager
from coatcheck.adapters.flask import FlaskSession, SessionInterface
from coatcheck.exceptions import StoreUnavailable
from coatcheck.ids import handle_of
from coatcheck.stores import MemoryStore, PostgresStore, RedisStore, SQLiteStore
from coatcheck.stores.base import Record, Store
from helpers import COOKIE, CountingStore, FakeClock, manager_for
from servers import postgres_server_fixture, redis_server_fixture  # noqa: F401 - fixtures

BASE = "https://localhost"
COOKIE_ATTRS = "Path=/; HttpOnly; Secure; SameSite=Lax"


class User(flask_login.UserMixin):  # type: ignore[misc]  # an untyped base class
    def __init__(self, user_id: str) -> None:
        self.id = user_id


def sess() -> FlaskSession:
    current = session._get_current_object()  # type: ignore[attr-defined]  # a LocalProxy
    assert isinstance(current, FlaskSession)
    return current


def make_app(manager: SessionManager, **options: Any) -> Flask:
    app = Flask(__name__)
    app.config["TESTING"] = True
    SessionInterface(manager, **options).init_app(app)
    login = flask_login.LoginManager(app)
    login.user_loader(User)

    @app.get("/dump")
    def dump() -> Any:
        current = sess()
        return jsonify(
            data=dict(current), user=current.user, new=current.new, permanent=current.permanent
        )

    @app.get("/plain")
    def plain() -> str:
        return "static"

    @app.route("/set", methods=["GET", "POST"])
    def set_value() -> str:
        barrier: threading.Barrier | None = app.config.get("BARRIER")
        session.get("x")  # load before waiting, so that racing requests share a version
        if barrier is not None:
            barrier.wait(timeout=10)
        session[request.args["key"]] = request.args.get("value", "")
        return "ok"

    @app.get("/append")
    def append() -> str:
        session["cart"].append(request.args["item"])
        return "ok"

    @app.get("/flags")
    def flags() -> Any:
        before = (session.modified, session.new)
        session["k"] = "v"
        return jsonify(before=before, after=(session.modified, session.new))

    @app.get("/permanent")
    def permanent() -> str:
        session.permanent = True
        return "ok"

    @app.get("/flash")
    def flash_view() -> str:
        flash(request.args["message"], "info")
        return "ok"

    @app.get("/flashes")
    def flashes() -> Any:
        return jsonify(get_flashed_messages(with_categories=True))

    @app.get("/login/<user_id>")
    def login_view(user_id: str) -> str:
        flask_login.login_user(User(user_id))
        return "ok"

    @app.get("/logout")
    def logout_view() -> str:
        flask_login.logout_user()
        return "ok"

    @app.get("/end")
    def end() -> str:
        sess().logout()
        return "ok"

    @app.get("/whoami")
    def whoami() -> Any:
        user = flask_login.current_user
        return jsonify(
            user=user.get_id() if user.is_authenticated else None, session_user=sess().user
        )

    @app.get("/me")
    @flask_login.login_required  # type: ignore[untyped-decorator]  # Flask-Login is untyped
    def me() -> str:
        return str(flask_login.current_user.get_id())

    @app.post("/form")
    def form() -> Any:
        return jsonify(dict(request.form))

    @app.get("/token")
    def token() -> str:
        return sess().csrf_token

    @app.errorhandler(Forbidden)
    def forbidden(error: Forbidden) -> tuple[str, int]:
        return "custom 403", 403

    return app


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


STORES = [
    "memory",
    "sqlite",
    pytest.param("redis", marks=pytest.mark.service),
    pytest.param("postgres", marks=pytest.mark.service),
]


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, clock: FakeClock, tmp_path: Path) -> Iterator[Store]:
    """Each store available; Redis and PostgreSQL on the throw-away servers of
    `tests/servers.py`, each test under its own key prefix or table."""
    backend: Store
    if request.param == "memory":
        backend = MemoryStore(clock=clock)
    elif request.param == "sqlite":
        backend = SQLiteStore(tmp_path / "sessions.db", clock=clock)
    elif request.param == "redis":
        server = request.getfixturevalue("redis_server")
        # A generous timeout: a loaded test machine must not turn a slow reply into a 503.
        backend = RedisStore(server.url, prefix=f"test-{secrets.token_hex(6)}:", timeout=10)
    else:
        server = request.getfixturevalue("postgres_server")
        table = f"test_{secrets.token_hex(6)}"
        backend = PostgresStore(server.url, table=table, clock=clock, timeout=10)
    yield backend
    backend.close()


@pytest.fixture
def manager(store: Store, clock: FakeClock) -> SessionManager:
    return manager_for(store, clock)


@pytest.fixture
def app(manager: SessionManager) -> Flask:
    return make_app(manager)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def get(client: FlaskClient, path: str, **kwargs: Any) -> TestResponse:
    return client.get(path, base_url=BASE, **kwargs)


def session_cookie(response: TestResponse) -> str | None:
    """The session cookie's `Set-Cookie` header in `response`, or None."""
    found = [c for c in response.headers.getlist("Set-Cookie") if c.startswith(f"{COOKIE}=")]
    assert len(found) <= 1, found
    return found[0] if found else None


def sent_secret(response: TestResponse) -> str | None:
    header = session_cookie(response)
    return None if header is None else header.split(";", 1)[0].split("=", 1)[1]


def dump(client: FlaskClient) -> Any:
    return get(client, "/dump").get_json()


# -- the mapping, flags and headers --------------------------------------------------------


def test_round_trip_with_the_managers_cookie(client: FlaskClient, store: Store) -> None:
    response = get(client, "/set?key=a&value=1")
    header = session_cookie(response)
    assert header is not None
    secret = sent_secret(response)
    assert header == f"{COOKIE}={secret}; {COOKIE_ATTRS}"
    assert secret is not None and store.load(handle_of(secret)) is not None
    assert len(response.headers.getlist("Set-Cookie")) == 1  # not Flask's own `session`
    assert dump(client) == {"data": {"a": "1"}, "user": None, "new": False, "permanent": False}


def test_no_cookie_no_write_no_vary_when_unused(manager: SessionManager) -> None:
    app = Flask(__name__)  # without Flask-Login, which reads the session on every request
    app.session_interface = SessionInterface(manager)

    @app.get("/plain")
    def plain() -> str:
        return "plain"

    response = app.test_client().get("/plain", base_url=BASE)
    assert session_cookie(response) is None
    assert "Cookie" not in response.vary


def test_vary_when_read_and_no_store_only_when_cookie_set(client: FlaskClient) -> None:
    first = get(client, "/set?key=a")
    assert "Cookie" in first.vary and first.headers["Cache-Control"] == "no-store"
    read = get(client, "/dump")
    assert "Cookie" in read.vary
    assert session_cookie(read) is None and "Cache-Control" not in read.headers


def test_reading_writes_nothing(clock: FakeClock) -> None:
    counting = CountingStore(clock=clock)
    client = make_app(manager_for(counting, clock)).test_client()
    get(client, "/set?key=a")
    assert counting.saves == 1
    get(client, "/dump")
    get(client, "/dump")
    assert counting.saves == 1


def test_modified_and_new_follow_flask_semantics(client: FlaskClient) -> None:
    assert get(client, "/flags").get_json() == {"before": [False, True], "after": [True, True]}
    assert get(client, "/flags").get_json() == {"before": [False, False], "after": [True, False]}


def test_in_place_mutation_is_saved(client: FlaskClient) -> None:
    with client.session_transaction(base_url=BASE) as flask_session:
        flask_session["cart"] = ["apple"]
    get(client, "/append?item=pear")
    assert dump(client)["data"] == {"cart": ["apple", "pear"]}


def test_permanent_gives_max_age_until_absolute_timeout(client: FlaskClient) -> None:
    get(client, "/set?key=a")
    header = session_cookie(get(client, "/permanent"))
    assert header is not None and f"Max-Age={12 * 60 * 60}" in header
    assert dump(client)["permanent"] is True


def test_flash_messages_survive_one_redirect(client: FlaskClient) -> None:
    get(client, "/flash?message=saved")
    get(client, "/flash?message=again")
    assert get(client, "/flashes").get_json() == [["info", "saved"], ["info", "again"]]
    assert get(client, "/flashes").get_json() == []


def test_session_transaction_reads_and_writes(client: FlaskClient) -> None:
    get(client, "/set?key=a&value=1")
    with client.session_transaction(base_url=BASE) as flask_session:
        assert flask_session["a"] == "1"
        flask_session["b"] = "2"
    assert dump(client)["data"] == {"a": "1", "b": "2"}


def test_coatcheck_logout_clears_cookie_and_record(client: FlaskClient, store: Store) -> None:
    secret = sent_secret(get(client, "/set?key=a"))
    assert secret
    response = get(client, "/end")
    assert sent_secret(response) == ""
    assert store.load(handle_of(secret)) is None
    assert dump(client)["data"] == {}


def test_hostile_cookie_gives_fresh_session(client: FlaskClient) -> None:
    client.set_cookie(COOKIE, "x" * 43, domain="localhost")
    assert dump(client) == {"data": {}, "user": None, "new": True, "permanent": False}
    client.set_cookie(COOKIE, "not-an-id", domain="localhost")
    assert dump(client)["new"] is True


# -- Flask-Login, listing and revocation -------------------------------------------------------


def test_flask_login_rotates_id_and_keeps_user(client: FlaskClient, store: Store) -> None:
    anonymous = sent_secret(get(client, "/set?key=cart&value=1"))
    assert anonymous
    response = get(client, "/login/42")
    secret = sent_secret(response)
    assert secret and secret != anonymous
    assert store.load(handle_of(anonymous)) is None  # the pre-login ID is dead at once
    assert get(client, "/whoami").get_json() == {"user": "42", "session_user": "42"}
    assert get(client, "/me").get_data(as_text=True) == "42"
    assert dump(client)["data"]["cart"] == "1"


def test_flask_login_logout_rotates_and_unbinds(client: FlaskClient, store: Store) -> None:
    get(client, "/login/42")
    logged_in = client.get_cookie(COOKIE, domain="localhost")
    assert logged_in is not None
    response = get(client, "/logout")
    secret = sent_secret(response)
    assert secret and secret != logged_in.value
    assert get(client, "/whoami").get_json() == {"user": None, "session_user": None}
    assert get(client, "/me").status_code == 401


def test_listing_and_revocation(app: Flask, manager: SessionManager) -> None:
    laptop, phone = app.test_client(), app.test_client()
    get(laptop, "/login/7")
    get(phone, "/login/7")
    admin = SessionAdmin(manager)
    listed = admin.sessions("7")
    assert len(listed) == 2 and all(info.user == "7" for info in listed)
    cookie = phone.get_cookie(COOKIE, domain="localhost")
    assert cookie is not None
    admin.revoke(handle_of(cookie.value))
    assert get(phone, "/whoami").get_json()["user"] is None
    assert get(laptop, "/whoami").get_json()["user"] == "7"
    assert [info.id for info in admin.sessions("7")] != [handle_of(cookie.value)]
    assert admin.revoke_user("7") == 1
    assert get(laptop, "/whoami").get_json()["user"] is None


def test_idle_timeout_with_injected_clock(client: FlaskClient, clock: FakeClock) -> None:
    get(client, "/login/1")
    clock.advance(29 * 60)
    assert get(client, "/whoami").get_json()["user"] == "1"
    clock.advance(30 * 60)
    assert get(client, "/whoami").get_json()["user"] is None


def test_renewal_rotates_the_cookie(store: Store, clock: FakeClock) -> None:
    manager = manager_for(store, clock, lifetimes=Lifetimes(renewal=60))
    client = make_app(manager).test_client()
    first = sent_secret(get(client, "/login/1"))
    clock.advance(61)
    renewed = sent_secret(get(client, "/whoami"))
    assert renewed and renewed != first
    assert get(client, "/whoami").get_json()["user"] == "1"


# -- CSRF and failures ---------------------------------------------------------------------


def test_cross_origin_post_is_refused_through_the_apps_handler(client: FlaskClient) -> None:
    get(client, "/set?key=a&value=1")
    response = client.post(
        "/set?key=a&value=evil", base_url=BASE, headers={"Origin": "https://evil.example"}
    )
    assert response.status_code == 403 and response.get_data(as_text=True) == "custom 403"
    assert dump(client)["data"] == {"a": "1"}


def test_same_origin_post_passes(client: FlaskClient) -> None:
    response = client.post(
        "/set?key=a&value=2",
        base_url=BASE,
        headers={"Origin": BASE, "Sec-Fetch-Site": "same-origin"},
    )
    assert response.status_code == 200
    assert dump(client)["data"] == {"a": "2"}


def test_csrf_token_in_header_or_form_passes(client: FlaskClient) -> None:
    token = get(client, "/token").get_data(as_text=True)
    cross = {"Origin": "https://partner.example"}
    ok = client.post("/set?key=a&value=h", base_url=BASE, headers={**cross, "X-CSRF-Token": token})
    assert ok.status_code == 200
    form = client.post(
        "/form", base_url=BASE, headers=cross, data={"csrf_token": token, "name": "ada"}
    )
    assert form.status_code == 200
    assert form.get_json() == {"csrf_token": token, "name": "ada"}
    bad = client.post("/form", base_url=BASE, headers=cross, data={"csrf_token": "wrong"})
    assert bad.status_code == 403


MANY_FIELDS = "&".join(f"f{i}=1" for i in range(1500))


@pytest.mark.parametrize(
    "body",
    [MANY_FIELDS, MANY_FIELDS + "&csrf_token={token}", "csrf_token={token}&" + MANY_FIELDS],
    ids=["no-token", "token-last", "token-first"],
)
def test_cross_origin_form_with_too_many_fields_is_403_not_500(
    client: FlaskClient, body: str
) -> None:
    # More fields than coatcheck.csrf.form_token searches: 403, as on ASGI, never a 500.
    token = get(client, "/token").get_data(as_text=True)
    response = client.post(
        "/form",
        base_url=BASE,
        headers={"Origin": "https://evil.example"},
        data=body.format(token=token),
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 403 and response.get_data(as_text=True) == "custom 403"


class FlakyStore(MemoryStore):
    """A real `MemoryStore` that fails like an unreachable backend when told to."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.down_reads = False
        self.down_writes = False

    def load(self, key: str) -> Record | None:
        if self.down_reads:
            raise StoreUnavailable("store unreachable (test)")
        return super().load(key)

    def save(self, key: str, data: bytes, *, version: int, ttl: float, user: str | None) -> bool:
        if self.down_writes:
            raise StoreUnavailable("store unreachable (test)")
        return super().save(key, data, version=version, ttl=ttl, user=user)


def test_store_down_gives_503(clock: FakeClock) -> None:
    flaky = FlakyStore(clock=clock)
    client = make_app(manager_for(flaky, clock)).test_client()
    get(client, "/set?key=a")
    flaky.down_reads = True
    response = get(client, "/dump")
    assert response.status_code == 503 and session_cookie(response) is None


def test_store_down_fail_open_serves_an_unsaved_session(clock: FakeClock) -> None:
    flaky = FlakyStore(clock=clock)
    client = make_app(manager_for(flaky, clock), fail_open=True).test_client()
    get(client, "/set?key=a&value=1")
    flaky.down_reads = flaky.down_writes = True
    response = get(client, "/dump")
    assert response.status_code == 200 and session_cookie(response) is None
    assert response.get_json()["data"] == {}
    assert get(client, "/set?key=b").status_code == 200  # not saved, so no 503 either


def test_store_failing_on_write_gives_503(clock: FakeClock) -> None:
    flaky = FlakyStore(clock=clock)
    flaky.down_writes = True
    client = make_app(manager_for(flaky, clock)).test_client()
    response = get(client, "/set?key=a")
    assert response.status_code == 503 and session_cookie(response) is None
    assert b"session not saved" in response.data


# -- configuration -------------------------------------------------------------------------


def test_from_flask_config_takes_the_apps_cookie_settings(tmp_path: Path) -> None:
    app = Flask(__name__)
    app.config.update(
        SESSION_COOKIE_NAME="sid",
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_PATH="/app",
    )
    interface = SessionInterface.from_flask_config(app, store=f"sqlite:///{tmp_path}/s.db")
    app.session_interface = interface

    @app.get("/app/set")
    def set_value() -> str:
        session["a"] = 1
        return "ok"

    response = app.test_client().get("/app/set", base_url=BASE)
    header = response.headers["Set-Cookie"]
    assert header.startswith("sid=") and header.endswith(
        "; Path=/app; HttpOnly; Secure; SameSite=Strict"
    )


# -- concurrency ---------------------------------------------------------------------------


def test_concurrent_requests_lose_nothing(tmp_path: Path, clock: FakeClock) -> None:
    """Requests of one session (separate clients sharing one cookie) all load the same
    version before any of them commits; every write survives the version conflicts."""
    store = SQLiteStore(tmp_path / "sessions.db", clock=clock)
    counting = _Counting(store)
    app = make_app(manager_for(counting, clock))
    first = app.test_client()
    secret = sent_secret(get(first, "/set?key=start&value=0"))
    assert secret
    workers = 6
    app.config["BARRIER"] = threading.Barrier(workers)
    clients = [app.test_client() for _ in range(workers)]
    for c in clients:
        c.set_cookie(COOKIE, secret, domain="localhost")
    statuses: list[int] = []

    def run(i: int) -> None:
        statuses.append(get(clients[i], f"/set?key=k{i}&value={i}").status_code)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    del app.config["BARRIER"]
    assert statuses == [200] * workers
    expected = {"start": "0", **{f"k{i}": str(i) for i in range(workers)}}
    assert dump(first)["data"] == expected
    assert counting.conflicts >= 1  # the race really happened
    store.close()


class _Counting:
    """Delegates to a real store and counts refused (version-conflict) saves.

    Every method of the `Store` protocol is spelled out: from Python 3.12, `isinstance`
    against a runtime-checkable protocol looks attributes up statically, so methods that
    only `__getattr__` provides do not make a `Store`."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.conflicts = 0
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def load(self, key: str) -> Record | None:
        return self.store.load(key)

    def save(self, key: str, data: bytes, *, version: int, ttl: float, user: str | None) -> bool:
        ok = self.store.save(key, data, version=version, ttl=ttl, user=user)
        with self._lock:
            self.conflicts += not ok
        return ok

    def rotate(
        self, old_key: str, new_key: str, data: bytes, *, version: int, ttl: float, user: str | None
    ) -> bool:
        return self.store.rotate(old_key, new_key, data, version=version, ttl=ttl, user=user)

    def delete(self, key: str) -> None:
        self.store.delete(key)

    def list_user(self, user: str) -> list[tuple[str, Record]]:
        return self.store.list_user(user)

    def delete_user(self, user: str, *, keep: str | None = None) -> int:
        return self.store.delete_user(user, keep=keep)

    def purge_expired(self) -> int:
        return self.store.purge_expired()

    def close(self) -> None:
        self.store.close()


# -- client-side mode: the same interface, the session in a signed token ------------------------


@pytest.fixture
def token_client(clock: FakeClock) -> FlaskClient:
    mode = ClientSide(KeyRing.generate(), store="memory://", staleness=0)
    manager = SessionManager(mode, clock=clock, lifetimes=Lifetimes(renewal=None))
    app = make_app(manager)
    app.config["MANAGER"] = manager
    return app.test_client()


def test_client_side_round_trip_and_flash(token_client: FlaskClient) -> None:
    token = sent_secret(get(token_client, "/set?key=a&value=1"))
    assert token is not None and token.count(".") == 2  # a compact JWS, not an opaque ID
    get(token_client, "/flash?message=saved")
    assert get(token_client, "/flashes").get_json() == [["info", "saved"]]
    assert dump(token_client)["data"] == {"a": "1"}


def test_client_side_flask_login_listing_and_revocation(token_client: FlaskClient) -> None:
    app = token_client.application
    manager: SessionManager = app.config["MANAGER"]
    before = sent_secret(get(token_client, "/set?key=a"))
    after = sent_secret(get(token_client, "/login/9"))
    assert before and after and after != before
    assert get(token_client, "/whoami").get_json() == {"user": "9", "session_user": "9"}
    [info] = SessionAdmin(manager).sessions("9")
    SessionAdmin(manager).revoke(info.id)
    assert get(token_client, "/whoami").get_json()["user"] is None


def test_client_side_idle_timeout(token_client: FlaskClient, clock: FakeClock) -> None:
    get(token_client, "/login/9")
    clock.advance(31 * 60)
    assert get(token_client, "/whoami").get_json()["user"] is None
