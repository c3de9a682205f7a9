"""Session events through the Flask and Django adapters (their test clients), on memory
and SQLite: the same `Event`s as through ASGI (tests/test_events.py), from the one place
events flow (`Audit`), with no ID or secret in any of them."""

from __future__ import annotations

from collections.abc import Iterator
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

from coatcheck import SessionManager  # noqa: E402
from coatcheck.events import Event  # noqa: E402
from coatcheck.stores import MemoryStore, SQLiteStore  # noqa: E402
from coatcheck.stores.base import Store  # noqa: E402
from helpers import FakeClock, manager_for  # noqa: E402

from .test_flask import BASE  # noqa: E402
from .test_flask import make_app as make_flask_app  # noqa: E402


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    backend: Store = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "s.db")
    yield backend
    backend.close()


def received(manager: SessionManager) -> list[Event]:
    got: list[Event] = []
    manager.events.subscribe(got.append)
    return got


def assert_no_secret(events: list[Event], secrets: set[str]) -> None:
    for event in events:
        for secret in secrets:
            assert secret not in repr(event)


def test_flask(store: Store) -> None:
    manager = manager_for(store, FakeClock())
    got = received(manager)
    secrets: set[str] = set()
    with make_flask_app(manager).test_client() as browser:
        for path in ("/set?key=a&value=1", "/login/7", "/end"):
            response = browser.get(path, base_url=BASE)
            assert response.status_code == 200
            secrets.update(
                h.split(";", 1)[0].split("=", 1)[1] for h in response.headers.getlist("Set-Cookie")
            )
    assert manager.events.flush(10)
    manager.events.close()
    assert [e.kind for e in got] == ["created", "login", "logout"]
    assert {e.mode for e in got} == {"server"}
    assert_no_secret(got, secrets - {""})


@pytest.fixture(scope="module")
def database() -> None:
    call_command("migrate", run_syncdb=True, verbosity=0)
    User.objects.get_or_create(username="ada")


def test_django(store: Store, database: Any) -> None:
    manager = manager_for(store, FakeClock())
    got = received(manager)
    with override_settings(COATCHECK={"manager": manager}):
        browser = Client(HTTP_USER_AGENT="pytest-browser")
        for path in ("/set?key=a&value=1", "/login/ada", "/logout"):
            assert browser.get(path, secure=True).status_code == 200
        secrets = {m.value for m in browser.cookies.values() if m.value}
    assert manager.events.flush(10)
    manager.events.close()
    assert [e.kind for e in got] == ["created", "login", "logout"]
    assert_no_secret(got, secrets)
