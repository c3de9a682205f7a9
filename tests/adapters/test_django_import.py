"""`COATCHECK["import_from"]`: a Django project whose users are logged in under one of
Django's own session engines switches `SESSION_ENGINE` to coatcheck, and each user is still
logged in on the next request (`request.user.is_authenticated`, through Django's test
client and `AuthenticationMiddleware`); the old session is deleted, the import logged;
a session its own engine refuses (tampered, expired) is not imported."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import django
import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.core import signing

from . import django_settings

if not settings.configured:
    settings.configure(**django_settings.SETTINGS)
    django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.contrib.sessions.models import Session as DjangoSession  # noqa: E402
from django.core.cache import cache  # noqa: E402
from django.test import Client, override_settings  # noqa: E402
from django.utils import timezone  # noqa: E402

from coatcheck import SessionAdmin  # noqa: E402
from coatcheck.adapters.django import SessionStore, get_manager  # noqa: E402
from coatcheck.ids import handle_of, is_wellformed  # noqa: E402

from .django_databases import COATCHECK_MIDDLEWARE, migrate_default  # noqa: E402

COOKIE = "sessionid"
ENGINES = {
    "db": "django.contrib.sessions.backends.db",
    "cached_db": "django.contrib.sessions.backends.cached_db",
    "cache": "django.contrib.sessions.backends.cache",
    "file": "django.contrib.sessions.backends.file",
    "signed_cookies": "django.contrib.sessions.backends.signed_cookies",
}
DJANGO_MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]


@pytest.fixture(scope="module", autouse=True)
def database() -> None:
    migrate_default("ada")


@pytest.fixture
def file_path(tmp_path: Path) -> Iterator[str]:
    with override_settings(SESSION_FILE_PATH=str(tmp_path)):
        yield str(tmp_path)


def logged_in_before(engine: str, username: str = "ada") -> str:
    """Log `username` in under Django's `engine`; the session cookie it set."""
    with override_settings(SESSION_ENGINE=engine, MIDDLEWARE=DJANGO_MIDDLEWARE):
        browser = Client()
        assert browser.get(f"/login/{username}").status_code == 200
        assert browser.get("/whoami").json() == {"user": username}  # on the old engine
        return str(browser.cookies[COOKIE].value)


def after_switch(engine: str, **coatcheck: Any) -> Any:
    """The settings of the project once switched to coatcheck, importing from `engine`."""
    config = {"store": "django", "import_from": engine, **coatcheck}
    return override_settings(
        SESSION_ENGINE="coatcheck.adapters.django",
        MIDDLEWARE=COATCHECK_MIDDLEWARE,
        COATCHECK=config,
    )


def browser_with(cookie: str) -> Client:
    browser = Client()
    browser.cookies[COOKIE] = cookie
    return browser


def old_session_exists(engine: str, key: str, directory: str) -> bool:
    """Whether `engine` still keeps the session `key` (for signed cookies: there is
    nothing to delete, the cookie is replaced)."""
    name = engine.rsplit(".", 1)[1]
    if name in ("db", "cached_db"):
        in_db: bool = DjangoSession.objects.filter(session_key=key).exists()
        if name == "db":
            return in_db
        return in_db or cache.get(f"django.contrib.sessions.cached_db{key}") is not None
    if name == "cache":
        return cache.get(f"django.contrib.sessions.cache{key}") is not None
    if name == "file":
        return (Path(directory) / f"{settings.SESSION_COOKIE_NAME}{key}").exists()
    return False


@pytest.mark.parametrize("engine", list(ENGINES.values()), ids=list(ENGINES))
def test_a_logged_in_user_stays_logged_in_after_the_switch(
    engine: str, file_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    old = logged_in_before(engine)
    if not engine.endswith("signed_cookies"):
        assert old_session_exists(engine, old, file_path)
    caplog.set_level(logging.INFO, logger="coatcheck.session")
    with after_switch(engine):
        browser = browser_with(old)
        response = browser.get("/whoami")
        assert response.json() == {"user": "ada"}  # the first request after the switch
        new = str(response.cookies[COOKIE].value)
        assert is_wellformed(new) and new != old  # a coatcheck session, under a new key
        assert not old_session_exists(engine, old, file_path)
        assert browser.get("/whoami").json() == {"user": "ada"}  # and the next
        assert response.cookies[COOKIE].value == new
        # The user is bound: listed (and revocable) as coatcheck's own logins are.
        pk = str(User.objects.get(username="ada").pk)
        listed = [info.id for info in SessionAdmin(get_manager()).sessions(pk)]
        assert handle_of(new) in listed
        data = browser.get("/dump").json()["data"]
        assert {"_auth_user_id", "_auth_user_backend", "_auth_user_hash"} <= set(data)
    [line] = [r for r in caplog.records if getattr(r, "event", None) == "session.imported"]
    assert line.name == "coatcheck.session"
    assert f"from={engine}" in line.getMessage()
    assert getattr(line, "session_hash", "-") != "-"
    assert old not in line.getMessage() and new not in line.getMessage()
    assert handle_of(new) not in line.getMessage()


def test_a_session_of_a_user_whose_password_changed_since_is_not_logged_in() -> None:
    """The auth hash is carried over as it was: Django's own check still applies."""
    user = User.objects.create(username="changes-password")
    old = logged_in_before(ENGINES["db"], "changes-password")
    user.set_password("a new one")
    user.save()
    with after_switch(ENGINES["db"]):
        assert browser_with(old).get("/whoami").json() == {"user": None}


def test_a_tampered_db_session_key_is_not_imported() -> None:
    old = logged_in_before(ENGINES["db"])
    tampered = old[:-1] + ("a" if old[-1] != "a" else "b")
    with after_switch(ENGINES["db"]):
        response = browser_with(tampered).get("/whoami")
        assert response.json() == {"user": None}
        assert response.cookies[COOKIE].value == ""  # the stale cookie is deleted
    assert DjangoSession.objects.filter(session_key=old).exists()  # and nothing else


def test_a_db_session_whose_stored_data_was_tampered_with_is_not_imported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    old = logged_in_before(ENGINES["db"])
    row = DjangoSession.objects.get(session_key=old)
    encoded = row.session_data
    payload = encoded.replace(encoded[2], "A" if encoded[2] != "A" else "B", 1)
    DjangoSession.objects.filter(session_key=old).update(session_data=payload)
    with after_switch(ENGINES["db"]):
        assert browser_with(old).get("/whoami").json() == {"user": None}
    # Django's own engine refused it, and said so on its own logger.
    assert any(r.name == "django.security.SuspiciousSession" for r in caplog.records)


def test_an_expired_db_session_is_not_imported() -> None:
    old = logged_in_before(ENGINES["db"])
    past = timezone.now() - timedelta(seconds=1)
    DjangoSession.objects.filter(session_key=old).update(expire_date=past)
    with after_switch(ENGINES["db"]):
        response = browser_with(old).get("/whoami")
        assert response.json() == {"user": None}
        assert response.cookies[COOKIE].value == ""


def test_a_tampered_signed_cookie_is_not_imported() -> None:
    old = logged_in_before(ENGINES["signed_cookies"])
    value, _, signature = old.rpartition(":")
    forged = f"{value}:{signature[::-1]}"
    with after_switch(ENGINES["signed_cookies"]):
        assert browser_with(forged).get("/whoami").json() == {"user": None}


def test_an_expired_signed_cookie_is_not_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    """Signed an hour ago, read with a 60 s `SESSION_COOKIE_AGE`: its engine refuses it."""
    an_hour_ago = signing.b62_encode(int(time.time()) - 3600)
    with monkeypatch.context() as patch:
        patch.setattr(signing.TimestampSigner, "timestamp", lambda self: an_hour_ago)
        old = logged_in_before(ENGINES["signed_cookies"])
    with after_switch(ENGINES["signed_cookies"]), override_settings(SESSION_COOKIE_AGE=60):
        assert browser_with(old).get("/whoami").json() == {"user": None}
    with after_switch(ENGINES["signed_cookies"]):  # (the same cookie, within the default age)
        assert browser_with(old).get("/whoami").json() == {"user": "ada"}


def test_a_cache_session_gone_from_the_cache_is_not_imported() -> None:
    old = logged_in_before(ENGINES["cache"])
    cache.delete(f"django.contrib.sessions.cache{old}")
    with after_switch(ENGINES["cache"]):
        assert browser_with(old).get("/whoami").json() == {"user": None}


def test_without_import_from_the_old_session_is_ignored_and_kept() -> None:
    old = logged_in_before(ENGINES["db"])
    with override_settings(
        SESSION_ENGINE="coatcheck.adapters.django",
        MIDDLEWARE=COATCHECK_MIDDLEWARE,
        COATCHECK={"store": "django"},
    ):
        assert browser_with(old).get("/whoami").json() == {"user": None}
    assert DjangoSession.objects.filter(session_key=old).exists()


def test_a_view_that_never_reads_the_session_still_imports_it() -> None:
    """Django's middleware deletes the cookie of an empty session: an old session is read
    before that decision, so the first request after the switch may be any page."""
    old = logged_in_before(ENGINES["db"])
    with after_switch(ENGINES["db"]):
        browser = browser_with(old)
        response = browser.get("/cycle-free")
        assert response.status_code == 404  # no such page, and no session read by a view
        assert is_wellformed(str(response.cookies[COOKIE].value))
        assert browser.get("/whoami").json() == {"user": "ada"}


@pytest.mark.parametrize("engine", [ENGINES["db"], ENGINES["cache"]], ids=["db", "cache"])
def test_a_logout_on_the_first_request_after_the_switch_deletes_the_old_session(
    engine: str, caplog: pytest.LogCaptureFixture
) -> None:
    old = logged_in_before(engine)
    caplog.set_level(logging.INFO, logger="coatcheck.session")
    with after_switch(engine):
        assert browser_with(old).get("/logout").status_code == 200
        assert not old_session_exists(engine, old, "")
        assert browser_with(old).get("/whoami").json() == {"user": None}  # a replay
    [line] = [r for r in caplog.records if getattr(r, "event", None) == "session.import_discarded"]
    assert old not in line.getMessage()


def test_a_flush_before_anything_was_read_deletes_the_old_session_too() -> None:
    old = logged_in_before(ENGINES["db"])
    with after_switch(ENGINES["db"]):
        session = SessionStore(old)
        session.flush()
        assert not DjangoSession.objects.filter(session_key=old).exists()
        assert session.session_key is None and not session.get("_auth_user_id")


def test_a_coatcheck_session_key_is_never_read_by_the_old_engine() -> None:
    with after_switch(ENGINES["db"]):
        browser = Client()
        browser.get("/set?key=a&value=1")
        key = str(browser.cookies[COOKIE].value)
        assert is_wellformed(key)
        store = SessionStore(key)
        assert store._legacy is None  # a coatcheck key: not a candidate for import
        assert browser.get("/dump").json()["data"] == {"a": "1"}


def test_the_async_api_imports_too(caplog: pytest.LogCaptureFixture) -> None:
    """`aget` / `asave` (Django's async session API) import through the old engine in
    Django's thread-sensitive executor, and log the import once saved."""
    old = logged_in_before(ENGINES["db"])
    caplog.set_level(logging.INFO, logger="coatcheck.session")

    async def first_request() -> str | None:
        session = SessionStore(old)
        user = await session.aget("_auth_user_id")
        await session.aset("seen", "yes")
        await session.asave()
        assert session.session_key is not None and is_wellformed(session.session_key)
        again = SessionStore(session.session_key)
        assert await again.aget("seen") == "yes"
        assert again.coatcheck.user == str(user)
        return user

    with after_switch(ENGINES["db"]):
        user = async_to_sync(first_request)()
    assert user == str(User.objects.get(username="ada").pk)
    assert not DjangoSession.objects.filter(session_key=old).exists()
    assert [r for r in caplog.records if getattr(r, "event", None) == "session.imported"]


def test_load_and_aload_import_as_a_read_does() -> None:
    """Django's `load()` / `aload()`, called directly, see the imported data too."""
    first, second = logged_in_before(ENGINES["db"]), logged_in_before(ENGINES["db"])
    with after_switch(ENGINES["db"]):
        session = SessionStore(first)
        assert "_auth_user_id" in session.load()
        session.save()
        assert is_wellformed(session.session_key or "")
        assert not DjangoSession.objects.filter(session_key=first).exists()
        later = SessionStore(second)
        assert "_auth_user_id" in async_to_sync(later.aload)()


def test_aflush_deletes_the_old_session_too() -> None:
    old = logged_in_before(ENGINES["db"])

    async def log_out() -> None:
        session = SessionStore(old)
        assert await session.aget("_auth_user_id") is not None  # imported, not saved yet
        await session.aflush()

    with after_switch(ENGINES["db"]):
        async_to_sync(log_out)()
    assert not DjangoSession.objects.filter(session_key=old).exists()
