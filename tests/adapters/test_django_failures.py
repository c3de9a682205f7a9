"""A session store that fails while Django serves a request: coatcheck's middleware
answers 503 with a short plain-text body, no cookie, nothing cached, and one log line per
interval with the count, never a traceback; whether the view met the failure (loading the
session, or `login()` saving it) or the save at the end did. With fault-injecting stores
(`faults.SwitchStore`: a `MemoryStore` that raises `StoreUnavailable` on command) and with
a real `DjangoStore` whose database cannot be opened."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import django
import pytest
from django.conf import settings

from . import django_settings

if not settings.configured:
    settings.configure(**django_settings.SETTINGS)
    django.setup()

from django.db import connections  # noqa: E402
from django.test import Client, override_settings  # noqa: E402

from coatcheck import SessionManager  # noqa: E402
from faults import SwitchStore  # noqa: E402
from helpers import FakeClock, manager_for  # noqa: E402

from .django_databases import COATCHECK_MIDDLEWARE, migrate_default, sqlite_options  # noqa: E402

COOKIE = "sessionid"


@pytest.fixture(scope="module", autouse=True)
def database() -> None:
    migrate_default("ada")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> SwitchStore:
    return SwitchStore(clock=clock)


@pytest.fixture
def manager(store: SwitchStore, clock: FakeClock) -> Iterator[SessionManager]:
    manager = manager_for(store, clock)
    with override_settings(COATCHECK={"manager": manager}, MIDDLEWARE=COATCHECK_MIDDLEWARE):
        yield manager


def assert_unavailable(response: object, start: bytes) -> None:
    assert getattr(response, "status_code", None) == 503
    content: bytes = getattr(response, "content", b"")
    assert content.startswith(start) and len(content) < 200
    assert response["Content-Type"].startswith("text/plain")  # type: ignore[index]
    assert response["Cache-Control"] == "no-store"  # type: ignore[index]
    assert not getattr(response, "cookies", None)


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info]


def events(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == event]


def test_a_store_down_at_load_is_503_logged_once_per_interval(
    manager: SessionManager,
    store: SwitchStore,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    browser = Client()
    assert browser.get("/act/set?key=a&value=1").status_code == 200
    store.down = True
    for _ in range(20):
        assert_unavailable(browser.get("/act/read"), b"Service Unavailable: session store")
    [line] = events(caplog, "store.load_failed")
    assert line.levelno == logging.ERROR and "503" in line.getMessage()
    clock.advance(10)
    browser.get("/act/read")
    assert [r.count for r in events(caplog, "store.load_failed")] == [1, 20]  # type: ignore[attr-defined]
    assert tracebacks(caplog) == []
    store.down = False
    assert json.loads(browser.get("/act/read").content) == {"a": "1"}  # the cookie was kept


def test_a_store_down_at_the_save_is_503_and_nothing_half_saved(
    manager: SessionManager, store: SwitchStore, caplog: pytest.LogCaptureFixture
) -> None:
    browser = Client()
    browser.get("/act/set?key=a&value=1")
    store.writes_down = True
    assert_unavailable(browser.get("/act/set?key=b&value=2"), b"Service Unavailable: session not")
    assert len(events(caplog, "store.commit_failed")) == 1
    assert tracebacks(caplog) == []
    store.writes_down = False
    assert json.loads(browser.get("/act/read").content) == {"a": "1"}


def test_a_store_down_when_login_cycles_the_key_in_the_view_is_503(
    manager: SessionManager, store: SwitchStore, caplog: pytest.LogCaptureFixture
) -> None:
    browser = Client()
    browser.get("/act/set?key=a&value=1")
    store.writes_down = True
    assert_unavailable(browser.get("/login/ada"), b"Service Unavailable")
    assert tracebacks(caplog) == []
    store.writes_down = False
    assert browser.get("/whoami").json() == {"user": None}  # not logged in half-way


def test_a_django_database_that_cannot_be_opened_is_503_without_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The real `DjangoStore`: its database's directory does not exist."""
    options = sqlite_options(str(tmp_path / "no-such-directory" / "db.sqlite3"))
    connections.settings["gone"] = connections.configure_settings({"default": {}, "gone": options})[
        "gone"
    ]
    try:
        with override_settings(
            COATCHECK={"store": "django://gone"}, MIDDLEWARE=COATCHECK_MIDDLEWARE
        ):
            response = Client().get("/act/set?key=a&value=1")
    finally:
        del connections.settings["gone"]
    assert_unavailable(response, b"Service Unavailable")
    [line] = events(caplog, "store.commit_failed")
    assert "'gone'" in line.getMessage()
    assert tracebacks(caplog) == []
