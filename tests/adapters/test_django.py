"""`SESSION_ENGINE = "coatcheck.adapters.django"` against Django's documented session
behaviour, directly and through Django's test client, on every store available (memory,
SQLite), with `django.contrib.auth` on top. Time comes from an injected clock."""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from io import StringIO
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
from django.contrib.sessions.backends.base import CreateError, UpdateError  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import AsyncClient, Client, override_settings  # noqa: E402
from django.utils import timezone  # noqa: E402

from coatcheck import ClientSide, KeyRing, ServerSide, SessionAdmin, SessionManager  # noqa: E402
from coatcheck.adapters.django import SessionStore  # noqa: E402
from coatcheck.adapters.django.config import build  # noqa: E402
from coatcheck.exceptions import ConfigurationError  # noqa: E402
from coatcheck.ids import handle_of, is_wellformed  # noqa: E402
from coatcheck.stores import MemoryStore, PostgresStore, RedisStore, SQLiteStore  # noqa: E402
from coatcheck.stores.base import Store  # noqa: E402
from helpers import FakeClock, manager_for  # noqa: E402
from servers import postgres_server_fixture, redis_server_fixture  # noqa: E402, F401

from . import django_app  # noqa: E402

COOKIE = "sessionid"  # Django's SESSION_COOKIE_NAME: Django sets the cookie
AGE = 14 * 24 * 60 * 60  # Django's default SESSION_COOKIE_AGE, seconds


@pytest.fixture(scope="module", autouse=True)
def database() -> None:
    call_command("migrate", run_syncdb=True, verbosity=0)
    for name in ("ada", "grace"):
        User.objects.get_or_create(username=name)


@pytest.fixture
def clock() -> FakeClock:
    clock = FakeClock()
    clock.now = timezone.now().timestamp()  # Django's own expiry maths reads the real time
    return clock


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
def manager(store: Store, clock: FakeClock) -> Iterator[SessionManager]:
    manager = manager_for(store, clock)
    with override_settings(COATCHECK={"manager": manager}):
        yield manager


@pytest.fixture
async def amanager(manager: SessionManager) -> AsyncIterator[SessionManager]:
    """`manager`, whose async store's connections (opened on the test's event loop) are
    closed before that loop ends."""
    yield manager
    assert isinstance(manager.mode, ServerSide)
    await manager.mode.async_store.aclose()


@pytest.fixture
def session(manager: SessionManager) -> SessionStore:
    return SessionStore()


def client() -> Client:
    return Client(HTTP_USER_AGENT="pytest-browser")


def cookie(response: Any) -> str | None:
    """The session key a response sets ("" when it deletes the cookie), or None."""
    morsel = response.cookies.get(COOKIE)
    return None if morsel is None else str(morsel.value)


def dump(browser: Client) -> Any:
    return browser.get("/dump").json()


# -- the mapping and its flags, as Django documents them ---------------------------------------


def test_new_session_is_neither_accessed_nor_modified(session: SessionStore) -> None:
    assert session.modified is False and session.accessed is False
    assert session.get("cat") is None and session.session_key is None


def test_mapping_operations_set_the_flags_as_django_does(session: SessionStore) -> None:
    session["cat"] = "dog"
    assert session.modified is True
    assert session.pop("cat") == "dog"
    assert session.pop("cat", "gone") == "gone"
    with pytest.raises(KeyError):
        session.pop("cat")
    assert session.setdefault("foo", "bar") == "bar"
    assert session.setdefault("foo", "baz") == "bar"
    session.update({"n": 1})
    session.modified = False
    session.accessed = False
    assert "n" in session and session.has_key("foo")
    assert sorted(session.keys()) == ["foo", "n"]
    assert sorted(session.values(), key=str) == [1, "bar"]
    assert sorted(session.items()) == [("foo", "bar"), ("n", 1)]
    assert session.accessed is True and session.modified is False
    session.clear()
    assert list(session.items()) == [] and session.modified is True


def test_save_exists_delete(session: SessionStore, store: Store) -> None:
    session["a"] = "b"
    session.save()
    key = session.session_key
    assert key is not None and is_wellformed(key)
    assert session.exists(key) is True and session["a"] == "b"
    assert store.load(handle_of(key)) is not None  # stored under the hash, never the key
    assert store.load(key) is None
    session.delete(key)
    assert session.exists(key) is False


def test_save_of_an_empty_session_creates_a_record(session: SessionStore) -> None:
    session.save()
    assert session.session_key is not None and session.exists(session.session_key)


def test_flush_deletes_and_forgets_the_key(session: SessionStore) -> None:
    session["foo"] = "bar"
    session.save()
    key = session.session_key
    assert key is not None
    session.flush()
    assert session.exists(key) is False and session.session_key is None
    assert session.modified is True and session.accessed is True
    assert dict(session.items()) == {}


def test_cycle_key_keeps_data_and_kills_the_old_key(session: SessionStore) -> None:
    session["a"], session["b"] = "c", "d"
    session.save()
    key = session.session_key
    assert key is not None
    session.cycle_key()
    assert session.exists(key) is False
    assert session.session_key not in (None, key)
    assert sorted(session.items()) == [("a", "c"), ("b", "d")]
    session["e"] = "f"  # a change after the cycle is saved under the new key
    session.save()
    assert SessionStore(session.session_key)["e"] == "f"


def test_cycle_key_without_a_loaded_session(session: SessionStore) -> None:
    session["a"] = "c"
    session.save()
    fresh = SessionStore(session.session_key)
    assert not hasattr(fresh, "_session_cache")
    fresh.cycle_key()
    assert fresh.session_key != session.session_key and dict(fresh.items()) == {"a": "c"}


def test_cycle_key_of_an_unsaved_session_saves_it(session: SessionStore) -> None:
    session["a"] = 1
    session.cycle_key()
    assert session.session_key is not None and SessionStore(session.session_key)["a"] == 1


def test_a_login_after_cycle_key_restarts_the_absolute_timeout(
    session: SessionStore, clock: FakeClock
) -> None:
    session["a"] = 1
    session.save()
    clock.advance(100)
    anonymous_since = session.coatcheck.created_at
    session.cycle_key()  # as auth.login: cycle, then store the user
    session["_auth_user_id"] = "1"
    session.save()
    logged_in = SessionStore(session.session_key).coatcheck
    assert logged_in.user == "1" and logged_in.created_at == clock.now > anonymous_since


def test_cycle_key_of_a_key_a_renewal_replaced_leaks_no_login(
    store: Store, clock: FakeClock
) -> None:
    from coatcheck import Lifetimes

    manager = manager_for(store, clock, lifetimes=Lifetimes(renewal=60, grace=30))
    with override_settings(COATCHECK={"manager": manager}):
        first = SessionStore()
        first["a"] = 1
        first.save()
        old = first.session_key
        clock.advance(61)
        renewing = SessionStore(old)  # e.g. a fixing attacker's request renews the key
        renewing.load()
        renewing.save()
        current = renewing.session_key
        assert current is not None and current != old
        victim = SessionStore(old)  # still opens within the grace window
        victim.cycle_key()
        victim["_auth_user_id"] = "1"
        victim.save()
        assert victim.session_key is not None
        assert handle_of(victim.session_key) != handle_of(current)
        assert SessionStore(current).get("_auth_user_id") is None


@pytest.mark.parametrize("key", ["1", "12345678", "x" * 64, "x" * 65 + "!", "é" * 65])
def test_keys_coatcheck_never_issues_are_refused(manager: SessionManager, key: str) -> None:
    session = SessionStore(key)
    assert session.session_key is None
    session["cat"] = "dog"
    session.save()
    assert session.session_key != key and is_wellformed(session.session_key or "")
    assert session.exists(key) is False


def test_session_key_is_read_only(session: SessionStore) -> None:
    with pytest.raises(AttributeError):
        session.session_key = "x" * 65  # type: ignore[misc]  # read-only: what is tested


def test_load_of_an_unknown_key_creates_nothing(manager: SessionManager, store: Store) -> None:
    unknown = "A" * 65
    session = SessionStore(unknown)
    assert session.load() == {}
    assert session.session_key is None
    assert store.load(handle_of(unknown)) is None and session.exists(unknown) is False


def test_save_of_an_unknown_key_raises_update_error(manager: SessionManager) -> None:
    with pytest.raises(UpdateError):
        SessionStore("A" * 65).save()


def test_a_deleted_session_is_never_resurrected(session: SessionStore) -> None:
    session["test_data"] = "value1"
    session.save(must_create=True)
    SessionStore(session.session_key).delete()  # logout in another request
    session["test_data"] = "value2"
    with pytest.raises(UpdateError):
        session.save()
    assert session.load() == {}


def test_must_create_refuses_a_key_in_use(session: SessionStore) -> None:
    session["a"] = 1
    session.save()
    other = SessionStore()
    other._session_key = session.session_key
    other["b"] = 2
    with pytest.raises(CreateError):
        other.save(must_create=True)
    assert dict(SessionStore(session.session_key).items()) == {"a": 1}


def test_parallel_saves_of_distinct_keys_both_survive(session: SessionStore) -> None:
    session["start"] = 0
    session.save()
    first, second = SessionStore(session.session_key), SessionStore(session.session_key)
    first["a"], second["b"] = 1, 2  # both loaded the same version
    first.save()
    second.save()
    assert dict(SessionStore(session.session_key).items()) == {"start": 0, "a": 1, "b": 2}


def test_in_place_mutation_is_saved_when_modified_is_set(session: SessionStore) -> None:
    session["cart"] = ["apple"]
    session.save()
    again = SessionStore(session.session_key)
    again["cart"].append("pear")
    again.modified = True  # what Django asks for nested changes
    again.save()
    assert SessionStore(session.session_key)["cart"] == ["apple", "pear"]


# -- expiry -------------------------------------------------------------------------------------


def test_default_and_custom_expiry_ages(session: SessionStore) -> None:
    assert session.get_expiry_age() == AGE
    session.set_expiry(0)
    assert session.get_expiry_age() == AGE and session.get_expire_at_browser_close() is True
    now = timezone.now()
    session.set_expiry(10)
    assert session.get_expiry_age(modification=now) == 10
    assert session.get_expiry_date(modification=now) == now + timedelta(seconds=10)
    session.set_expiry(now + timedelta(seconds=20))
    assert session.get_expiry_age(modification=now) == 20
    session.set_expiry(None)
    assert session.get_expiry_age() == AGE and session.get_expire_at_browser_close() is False


def test_expiry_in_the_past_ends_the_session_at_once(session: SessionStore) -> None:
    session["foo"] = "bar"
    session.set_expiry(-timedelta(seconds=10))
    session.save()
    again = SessionStore(session.session_key)
    assert "foo" not in again and again.session_key is None


def test_set_expiry_seconds_is_an_inactivity_timeout(
    session: SessionStore, clock: FakeClock
) -> None:
    session["foo"] = "bar"
    session.set_expiry(300)
    session.save()
    clock.advance(299)
    assert SessionStore(session.session_key)["foo"] == "bar"
    clock.advance(2)
    assert "foo" not in SessionStore(session.session_key)


def test_idle_timeout_of_the_manager(session: SessionStore, clock: FakeClock) -> None:
    session["foo"] = "bar"
    session.save()
    clock.advance(30 * 60 + 1)  # manager_for: coatcheck's default 30 minute idle timeout
    assert SessionStore(session.session_key).load() == {}


def test_clearsessions_purges_expired_records(
    session: SessionStore, store: Store, clock: FakeClock
) -> None:
    session["foo"] = "bar"
    session.set_expiry(3600)
    session.save()
    expired = SessionStore()
    expired["foo"] = "bar"
    expired.set_expiry(60)
    expired.save()
    clock.advance(120)
    assert expired.session_key is not None and session.session_key is not None
    call_command("clearsessions")
    assert store.purge_expired() == 0  # the command already removed it
    assert SessionStore(session.session_key)["foo"] == "bar"
    assert SessionStore(expired.session_key).load() == {}


def test_tampered_record_is_logged_as_suspicious(
    session: SessionStore, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    session["a"] = 1
    session.save()
    key = session.session_key
    assert key is not None
    record = store.load(handle_of(key))
    assert record is not None
    assert store.save(handle_of(key), b'{"d": "tampered', version=record.version, ttl=60, user=None)
    with caplog.at_level(logging.WARNING, "django.security.SuspiciousSession"):
        again = SessionStore(key)
        assert again.load() == {}
    assert [
        r.getMessage() for r in caplog.records if r.name == "django.security.SuspiciousSession"
    ] == ["Session data corrupted"]
    again["b"] = 2
    again.save()
    assert again.session_key != key and store.load(handle_of(key)) is None  # dead record gone


# -- async twins --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_twins(amanager: SessionManager) -> None:
    session = SessionStore()
    assert await session.aget("cat") is None
    await session.aset("cat", "dog")
    assert session.modified is True
    await session.aupdate({"a": 1})
    assert await session.asetdefault("a", 2) == 1
    await session.asave()
    key = session.session_key
    assert key is not None and await session.aexists(key)
    again = SessionStore(key)
    assert await again.aget("cat") == "dog" and await again.ahas_key("a")
    assert sorted(await again.akeys()) == ["a", "cat"]
    await again.acycle_key()
    assert not await again.aexists(key) and again.session_key not in (None, key)
    assert await again.apop("cat") == "dog"
    await again.asave()
    assert await SessionStore(again.session_key).aload() == {"a": 1}
    await again.aset_expiry(10)
    assert await again.aget_expiry_age(modification=timezone.now()) == 10
    cycled = again.session_key
    assert cycled is not None
    await again.aflush()
    assert again.session_key is None and not await again.aexists(cycled)
    await SessionStore.aclear_expired()


@pytest.mark.anyio
async def test_async_load_of_unknown_key_and_no_resurrection(amanager: SessionManager) -> None:
    unknown = SessionStore("B" * 65)
    assert await unknown.aload() == {} and unknown.session_key is None
    session = SessionStore()
    await session.aset("x", 1)
    await session.asave(must_create=True)
    await SessionStore(session.session_key).adelete()
    await session.aset("x", 2)
    with pytest.raises(UpdateError):
        await session.asave()


@pytest.mark.anyio
async def test_async_view_through_the_async_client(amanager: SessionManager) -> None:
    browser = AsyncClient()
    response = await browser.get("/aset?key=a&value=1")
    key = cookie(response)
    assert key and is_wellformed(key)
    assert (await browser.get("/dump")).json()["data"] == {"a": "1"}


# -- through the test client: the middleware, auth, listing, revocation ------------------------


def test_cookie_carries_a_coatcheck_id(manager: SessionManager, store: Store) -> None:
    browser = client()
    response = browser.get("/set?key=a&value=1")
    key = cookie(response)
    assert key and is_wellformed(key) and store.load(handle_of(key)) is not None
    assert response.cookies[COOKIE]["max-age"] == AGE and "Cookie" in response["Vary"]
    assert dump(browser) == {"data": {"a": "1"}, "user": None}
    assert cookie(browser.get("/dump")) is None  # reading writes nothing


def test_login_rotates_the_key_and_logout_ends_the_session(
    manager: SessionManager, store: Store
) -> None:
    browser = client()
    anonymous = cookie(browser.get("/set?key=cart&value=1"))
    assert anonymous
    logged_in = cookie(browser.get("/login/ada"))
    assert logged_in and logged_in != anonymous
    assert store.load(handle_of(anonymous)) is None  # the pre-login key is dead at once
    assert browser.get("/whoami").json() == {"user": "ada"}
    data = dump(browser)
    pk = str(User.objects.get(username="ada").pk)
    assert data["user"] == pk and data["data"]["cart"] == "1"
    assert data["data"]["_auth_user_id"] == pk
    response = browser.get("/logout")
    assert cookie(response) == ""  # Django deletes the cookie of an emptied session
    assert store.load(handle_of(logged_in)) is None
    assert browser.get("/whoami").json() == {"user": None}


def test_client_login_and_session_hash_verification(manager: SessionManager) -> None:
    user = User.objects.get(username="grace")
    user.set_password("old password")
    user.save()
    browser = client()
    assert browser.login(username="grace", password="old password")
    assert browser.get("/whoami").json() == {"user": "grace"}
    user.set_password("new password")  # changes the session auth hash
    user.save()
    assert browser.get("/whoami").json() == {"user": None}


def test_password_change_keeps_this_session_and_ends_the_others(
    manager: SessionManager,
) -> None:
    user = User.objects.get(username="grace")
    user.set_password("first")
    user.save()
    here, elsewhere = client(), client()
    assert here.login(username="grace", password="first")
    assert elsewhere.login(username="grace", password="first")
    before = here.cookies[COOKIE].value
    response = here.get("/password?password=second")
    assert cookie(response) not in (None, "", before)  # update_session_auth_hash cycles
    assert here.get("/whoami").json() == {"user": "grace"}
    assert elsewhere.get("/whoami").json() == {"user": None}


def test_save_every_request(manager: SessionManager, store: Store) -> None:
    browser = client()
    key = cookie(browser.get("/set?key=a&value=1"))
    assert key
    record = store.load(handle_of(key))
    assert record is not None
    with override_settings(SESSION_SAVE_EVERY_REQUEST=True):
        response = browser.get("/dump")  # reads only, but Django saves every request
    assert cookie(response) == key
    saved = store.load(handle_of(key))
    assert saved is not None and saved.version == record.version + 1


def test_binding_a_user_without_cycle_key_still_rotates(manager: SessionManager) -> None:
    browser = client()
    first = cookie(browser.get("/set?key=a"))
    rotated = cookie(browser.get("/bind?pk=77"))
    assert first and rotated and rotated != first
    assert [i.user for i in SessionAdmin(manager).sessions("77")] == ["77"]


def test_listing_revocation_and_the_management_command(manager: SessionManager) -> None:
    laptop, phone = client(), client()
    laptop.get("/login/ada")
    phone.get("/login/ada")
    pk = str(User.objects.get(username="ada").pk)
    admin = SessionAdmin(manager)
    listed = admin.sessions(pk)
    assert len(listed) == 2
    assert {(i.ip, i.user_agent) for i in listed} == {("127.0.0.1", "pytest-browser")}

    out = StringIO()
    call_command("coatcheck_sessions", "list", "ada", "--username", stdout=out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and {line.split("\t")[0] for line in lines[1:]} == {i.id for i in listed}
    phone_key = phone.cookies[COOKIE].value
    out = StringIO()
    call_command("coatcheck_sessions", "revoke", "--session", handle_of(phone_key), stdout=out)
    assert out.getvalue().strip() == "revoked 1 session"
    assert phone.get("/whoami").json() == {"user": None}
    assert laptop.get("/whoami").json() == {"user": "ada"}
    out = StringIO()
    call_command("coatcheck_sessions", "revoke", pk, stdout=out)
    assert out.getvalue().strip() == "revoked 1 session"
    assert laptop.get("/whoami").json() == {"user": None}


def test_renewal_rotates_the_cookie(store: Store, clock: FakeClock) -> None:
    from coatcheck import Lifetimes

    manager = manager_for(store, clock, lifetimes=Lifetimes(renewal=60))
    with override_settings(COATCHECK={"manager": manager}):
        browser = client()
        first = cookie(browser.get("/login/ada"))
        clock.advance(61)
        renewed = cookie(browser.get("/whoami"))
        assert renewed and renewed != first
        assert browser.get("/whoami").json() == {"user": "ada"}


def test_concurrent_requests_lose_nothing(tmp_path: Path, clock: FakeClock) -> None:
    """Test clients sharing one cookie, whose requests all load the session before any of
    them saves (Django's own engines keep only the last request's dict)."""
    store = SQLiteStore(tmp_path / "sessions.db", clock=clock)
    with override_settings(COATCHECK={"manager": manager_for(store, clock)}):
        key = cookie(client().get("/set?key=start&value=0"))
        assert key
        workers = 6
        django_app.BARRIER.append(threading.Barrier(workers))
        statuses: list[int] = []

        def run(i: int) -> None:
            browser = client()
            browser.cookies[COOKIE] = key
            statuses.append(browser.get(f"/set?key=k{i}&value={i}").status_code)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=30)
        finally:
            django_app.BARRIER.clear()
        assert statuses == [200] * workers
        expected = {"start": "0", **{f"k{i}": str(i) for i in range(workers)}}
        assert dict(SessionStore(key).items()) == expected
    store.close()


# -- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"stroe": "memory://"}, "unknown COATCHECK settings"),
        ({"manager": "x", "store": "memory://"}, "excludes"),
        ({"lifetimes": 5}, "lifetimes"),
        ({"store": "nosuch://"}, "unknown store URL scheme"),
    ],
)
def test_configuration_errors_say_what_to_fix(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        build(config)


def test_client_side_mode_is_refused() -> None:
    mode = ClientSide(KeyRing.generate(), store=None)
    with pytest.raises(ConfigurationError, match="server-side"):
        build({"manager": SessionManager(mode)})


def test_settings_build_a_manager_with_djangos_lifetimes(tmp_path: Path) -> None:
    manager = build({"store": f"sqlite:///{tmp_path}/s.db"})
    assert manager.lifetimes.idle == AGE and manager.lifetimes.absolute == 30 * 24 * 60 * 60
    with override_settings(COATCHECK={"store": "memory://", "lifetimes": {"idle": 120}}):
        from coatcheck.adapters.django import get_manager

        assert get_manager().lifetimes.idle == 120


def test_management_command_takes_ids_that_begin_with_a_dash() -> None:
    # Public IDs are base64url: some begin with "-", which argparse reads as an option.
    from coatcheck.adapters.django import get_manager

    dash_id = "-" + "Q" * 21
    store = get_manager().mode.store
    assert store is not None
    store.save(dash_id, b"{}", version=0, ttl=60, user="9")
    out = StringIO()
    call_command("coatcheck_sessions", "revoke", "--session", dash_id, stdout=out)
    assert "revoked 1 session" in out.getvalue()
    assert store.load(dash_id) is None


def test_a_migrated_token_is_revoked_on_every_replica(store: Store, clock: FakeClock) -> None:
    """`ServerSide(migrate_from=ClientSide(...))`: a client-side token in the cookie becomes
    a server-side session, and the revocation entry of the token reaches another replica,
    which refuses it (Django's engine once ran a copy of the drivers' commit without it)."""
    from coatcheck import Lifetimes, RequestInfo
    from coatcheck.drivers import commit_session, open_session
    from coatcheck.stores.memory import MemoryRevocationStore
    from helpers import cookie_value

    keys, revocations = KeyRing.generate(), MemoryRevocationStore(clock=clock)

    def manager(mode: Any) -> SessionManager:
        return SessionManager(mode, lifetimes=Lifetimes(renewal=None), clock=clock)

    issuer = manager(ClientSide(keys, store=None, revocations=revocations))
    minted = open_session(issuer, RequestInfo())
    minted["cart"] = "tea"
    token = cookie_value(commit_session(issuer, minted))
    assert token and token.count(".") >= 2

    def replica() -> SessionManager:
        client_mode = ClientSide(keys, store=None, revocations=revocations)
        return manager(ServerSide(store, migrate_from=client_mode))

    with override_settings(COATCHECK={"manager": replica()}):
        browser = client()
        browser.cookies[COOKIE] = token
        response = browser.get("/dump")
        assert response.json()["data"] == {"cart": "tea"}
        key = cookie(response)
        assert key and is_wellformed(key) and dump(browser)["data"] == {"cart": "tea"}
    with override_settings(COATCHECK={"manager": replica()}):
        other = client()
        other.cookies[COOKIE] = token
        assert other.get("/dump").json()["data"] == {}


# -- the middleware's shortcuts give what Django's own code gives ------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "",
        "sessionid=abc",
        "_ga=GA1.1.1.2; sessionid=abc",
        " a = 1 ;b=2;",
        "a=1; a=2",
        "novalue; =x; a=b=c",
        "a=1;;b",
        "\ta=1\t;\x1fb=2",
        'a="quoted"; b=2',
        '"q"=1',
        "a=caf\u00e9",  # not ASCII: Django's own parse
    ],
)
def test_cookies_are_parsed_as_django_parses_them(header: str) -> None:
    from django.test import RequestFactory

    from coatcheck.adapters.django.middleware import _cookies

    request = RequestFactory().get("/", HTTP_COOKIE=header)
    parsed = _cookies(request)
    assert parsed == RequestFactory().get("/", HTTP_COOKIE=header).COOKIES
    assert request.COOKIES is parsed  # kept for what reads it next


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"SESSION_COOKIE_SECURE": True, "SESSION_COOKIE_SAMESITE": "Strict"},
        {"SESSION_COOKIE_SAMESITE": None, "SESSION_COOKIE_HTTPONLY": False},
        {"SESSION_COOKIE_DOMAIN": "example.com", "SESSION_COOKIE_PATH": "/app"},
        {"SESSION_EXPIRE_AT_BROWSER_CLOSE": True},
        {"SESSION_COOKIE_NAME": "sid", "SESSION_COOKIE_AGE": 60},
    ],
)
def test_the_session_cookie_is_the_one_django_sets(
    manager: SessionManager, overrides: dict[str, Any]
) -> None:
    from http.cookies import Morsel

    from django.http import HttpResponse

    from coatcheck.adapters.django.middleware import _cookie_template

    with override_settings(**overrides):
        response = client().get("/set?key=k&value=v")
        name = settings.SESSION_COOKIE_NAME
        morsel = response.cookies[name]
        assert _cookie_template() is not None  # the template was used, and checked
        reference = HttpResponse()
        reference.set_cookie(
            name,
            morsel.value,
            max_age=morsel["max-age"] if morsel["max-age"] != "" else None,
            expires=morsel["expires"] or None,
            domain=settings.SESSION_COOKIE_DOMAIN,
            path=settings.SESSION_COOKIE_PATH,
            secure=settings.SESSION_COOKIE_SECURE or None,  # type: ignore[arg-type]
            httponly=settings.SESSION_COOKIE_HTTPONLY or None,  # type: ignore[arg-type]
            samesite=settings.SESSION_COOKIE_SAMESITE,
        )
        made = reference.cookies[name]
        assert type(morsel) is Morsel
        assert (morsel.key, morsel.value, morsel.coded_value) == (made.key, made.value, made.value)
        assert dict(morsel) == dict(made) and morsel.output() == made.output()
        assert is_wellformed(morsel.value)
        if settings.SESSION_EXPIRE_AT_BROWSER_CLOSE:
            assert morsel["max-age"] == "" and morsel["expires"] == ""
        else:
            assert morsel["max-age"] == settings.SESSION_COOKIE_AGE
